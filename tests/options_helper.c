/* options_helper.c — a tiny program for test_options.c: allocates a small
 * and a large block through the ftm_ API, frees them and exits normally, so
 * the parent can see what FTMEM_SHOW_STATS / FTMEM_VERBOSE print.  With the
 * argument "get NAME" it prints ftm_option_get of that option instead. */
#include <stdio.h>
#include <string.h>

#include <ftmem.h>

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "get") == 0) {
        static const char *names[] = {"show_stats", "verbose", "purge_delay", "purge_thread", "large_cache"};
        for (int i = 0; i < FTM_OPTION__COUNT && i < 5; i++)
            if (strcmp(argv[2], names[i]) == 0) {
                printf("%ld\n", ftm_option_get((ftm_option_t)i));
                return 0;
            }
        return 2;
    }
    void *p = ftm_malloc(100);
    void *q = ftm_malloc(64u << 20);
    if (!p || !q)
        return 1;
    memset(q, 1, 4096);
    ftm_free(p);
    ftm_free(q);
    ftm_collect(true);
    return 0;
}
