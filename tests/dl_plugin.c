/* dl_plugin.c — a shared library linked against libftmem, loaded with
 * dlopen() by test_dlopen.c (which does not link ftmem itself): ftmem must
 * work when it arrives after start-up, in threads that existed before. */
#include <stdint.h>
#include <string.h>

#include <ftmem.h>

#define PLUGIN_API __attribute__((visibility("default")))

/* Allocate, verify and free `rounds` batches of mixed sizes; 0 on success,
 * otherwise a code saying what went wrong. */
PLUGIN_API int plugin_run(int rounds)
{
    enum { N = 500 };
    void *p[N];
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < N; i++) {
            size_t n = (i % 50 == 0) ? (size_t)2 << 20 : (size_t)(i % 300) * 8 + 1;
            p[i] = ftm_malloc(n);
            if (!p[i])
                return 1;
            if (ftm_usable_size(p[i]) < n)
                return 2;
            memset(p[i], (i + r) & 0xff, n < 256 ? n : 256);
        }
        for (int i = 0; i < N; i++) {
            size_t n = (i % 50 == 0) ? (size_t)2 << 20 : (size_t)(i % 300) * 8 + 1;
            const unsigned char *c = p[i];
            for (size_t k = 0; k < (n < 256 ? n : 256); k++)
                if (c[k] != ((i + r) & 0xff))
                    return 3;
            if (i % 3 == 0)
                p[i] = ftm_realloc(p[i], n * 2);
            if (!p[i])
                return 4;
            ftm_free(p[i]);
        }
    }
    void *z = ftm_calloc(100, 100);
    if (!z || ((unsigned char *)z)[9999] != 0)
        return 5;
    ftm_free(z);
    return 0;
}

/* Blocks handed across the plugin boundary, freed by another thread. */
PLUGIN_API void *plugin_alloc(size_t n)
{
    return ftm_malloc(n);
}

PLUGIN_API void plugin_free(void *p)
{
    ftm_free(p);
}

PLUGIN_API size_t plugin_usable(const void *p)
{
    return ftm_usable_size(p);
}

PLUGIN_API unsigned long long plugin_live(void)
{
    ftm_stats_t s;
    ftm_stats_get(&s);
    return s.live_count;
}
