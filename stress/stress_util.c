/* stress_util.c — the shared helpers of the stress programs (see
 * stress_util.h): option parsing, failure reporting, fill patterns, block
 * and statistics checks. */
#include "stress_util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *stress_name = "stress";
static uint64_t stress_seed = 1; /* --seed, for the keys of stress_hblock */

void stress_parse(stress_opts_t *o, int argc, char **argv, int default_threads,
                  const char *usage_extra)
{
    stress_name = o->name;
    o->seed = 1;
    o->threads = default_threads;
    o->smoke = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--smoke") == 0) {
            o->smoke = true;
        } else if ((strcmp(a, "--seed") == 0 || strcmp(a, "--threads") == 0) && i + 1 < argc) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(argv[i + 1], &end, 0);
            if (errno || *end || end == argv[i + 1])
                stress_fail("bad value '%s' for %s", argv[i + 1], a);
            if (a[2] == 's') {
                o->seed = v;
            } else {
                if (v < 1 || v > 1024)
                    stress_fail("--threads must be in 1..1024");
                o->threads = (int)v;
            }
            i++;
        } else {
            fprintf(stderr,
                    "usage: %s [--seed N] [--threads N] [--smoke]\n"
                    "  --seed N     seed of every random choice (default 1)\n"
                    "  --threads N  worker threads (default %d)\n"
                    "  --smoke      small size for CI\n%s",
                    o->name, default_threads, usage_extra ? usage_extra : "");
            exit(strcmp(a, "--help") == 0 ? 0 : 2);
        }
    }
    stress_seed = o->seed;
    printf("%s: seed=%" PRIu64 " threads=%d size=%s%s\n", o->name, o->seed, o->threads,
           o->smoke ? "smoke" : "full", STRESS_SANITIZED ? " (sanitizer build)" : "");
    fflush(stdout);
}

void stress_set_name(const char *name)
{
    stress_name = name;
}

void stress_fail(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "%s: FAIL: %s\n", stress_name, buf);
    fflush(stderr);
    _exit(1);
}

void stress_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s: ", stress_name);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

size_t stress_size(stress_rng_t *r, size_t lo, size_t hi)
{
    if (lo >= hi)
        return lo;
    unsigned blo = 63 - (unsigned)__builtin_clzll(lo);
    unsigned bhi = 63 - (unsigned)__builtin_clzll(hi);
    unsigned b = blo + (unsigned)stress_below(r, bhi - blo + 1);
    size_t base = (size_t)1 << b;
    size_t s = base + (size_t)stress_below(r, base);
    if (s < lo)
        s = lo;
    if (s > hi)
        s = hi;
    return s;
}

/* ---- Patterns ------------------------------------------------------------ */

#define DENSE_WORDS ((64 * 1024) / 8)
#define SPARSE_STEP 32 /* words */

static inline uint64_t pattern_word(uint64_t key, size_t w)
{
    return stress_mix(key ^ ((uint64_t)w * 0xd6e8feb86659fd93ull));
}

/* The first word at or after w that stress_fill writes. */
static inline size_t touched_from(size_t w)
{
    if (w < DENSE_WORDS)
        return w;
    return (w + SPARSE_STEP - 1) & ~(size_t)(SPARSE_STEP - 1);
}

uint8_t stress_pattern_byte(uint64_t key, size_t i)
{
    return (uint8_t)(pattern_word(key, i / 8) >> (8 * (i % 8)));
}

void stress_fill(void *p, size_t from, size_t to, uint64_t key)
{
    unsigned char *b = p;
    for (size_t w = touched_from(from / 8); w * 8 < to; w = touched_from(w + 1)) {
        uint64_t v = pattern_word(key, w);
        size_t lo = w * 8, hi = lo + 8;
        if (lo >= from && hi <= to) {
            memcpy(b + lo, &v, 8);
        } else {
            for (size_t i = lo < from ? from : lo; i < hi && i < to; i++)
                b[i] = (unsigned char)(v >> (8 * (i - lo)));
        }
    }
}

size_t stress_check(const void *p, size_t from, size_t to, uint64_t key)
{
    const unsigned char *b = p;
    for (size_t w = touched_from(from / 8); w * 8 < to; w = touched_from(w + 1)) {
        uint64_t v = pattern_word(key, w);
        size_t lo = w * 8, hi = lo + 8;
        if (lo >= from && hi <= to) {
            uint64_t got;
            memcpy(&got, b + lo, 8);
            if (got == v)
                continue;
        }
        for (size_t i = lo < from ? from : lo; i < hi && i < to; i++)
            if (b[i] != (unsigned char)(v >> (8 * (i - lo))))
                return i;
    }
    return SIZE_MAX;
}

size_t stress_check_zero(const void *p, size_t size)
{
    const unsigned char *b = p;
    for (size_t w = 0; w * 8 < size; w = touched_from(w + 1)) {
        for (size_t i = w * 8; i < w * 8 + 8 && i < size; i++)
            if (b[i] != 0)
                return i;
    }
    return SIZE_MAX;
}

void stress_verify(const void *p, size_t from, size_t to, uint64_t key, const char *what,
                   unsigned long long id)
{
    size_t bad = stress_check(p, from, to, key);
    if (bad == SIZE_MAX)
        return;
    const unsigned char *b = p;
    stress_fail("%s: block %llu at %p: byte %zu of [%zu, %zu) is 0x%02x, expected 0x%02x "
                "(corrupted, overlapping another block, or contents lost)",
                what, id, p, bad, from, to, b[bad], stress_pattern_byte(key, bad));
}

static uint64_t hblock_key(const stress_hdr_t *h)
{
    return stress_key3(stress_seed, h->id, h->size);
}

stress_hdr_t *stress_hblock_new(uint64_t id, size_t size)
{
    if (size < sizeof(stress_hdr_t))
        size = sizeof(stress_hdr_t);
    stress_hdr_t *h = ftm_malloc(size);
    if (h == NULL)
        stress_fail("ftm_malloc(%zu) returned NULL", size);
    stress_check_block(h, size, 0, "ftm_malloc");
    h->id = id;
    h->size = size;
    stress_fill(h, sizeof *h, size, hblock_key(h));
    return h;
}

void stress_hblock_free(stress_hdr_t *h, const char *who)
{
    if (h->size < sizeof *h || h->size > STRESS_LARGE_MAX)
        stress_fail("%s: block %p: header corrupted (size %llu, id %llu)", who, (void *)h,
                    (unsigned long long)h->size, (unsigned long long)h->id);
    size_t u = ftm_usable_size(h);
    if (u < h->size)
        stress_fail("%s: ftm_usable_size(%p) = %zu < %llu", who, (void *)h, u,
                    (unsigned long long)h->size);
    stress_verify(h, sizeof *h, h->size, hblock_key(h), who, (unsigned long long)h->id);
    if (h->id & 1)
        ftm_free_sized(h, h->size);
    else
        ftm_free(h);
}

void stress_check_block(const void *p, size_t size, size_t align, const char *what)
{
    if (align < FTM_MIN_ALIGN)
        align = FTM_MIN_ALIGN;
    if ((uintptr_t)p % align != 0)
        stress_fail("%s(%zu): %p is not aligned to %zu", what, size, p, align);
    size_t u = ftm_usable_size(p);
    if (u < size)
        stress_fail("%s(%zu): ftm_usable_size(%p) = %zu < requested size", what, size, p, u);
}

/* ---- Threads, time, memory ----------------------------------------------- */

void stress_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int e = pthread_create(t, NULL, fn, arg);
    if (e != 0)
        stress_fail("pthread_create: %s", strerror(e));
}

void stress_thread_join(pthread_t t)
{
    int e = pthread_join(t, NULL);
    if (e != 0)
        stress_fail("pthread_join: %s", strerror(e));
}

double stress_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

size_t stress_rss(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    unsigned long size = 0, rss = 0;
    if (fscanf(f, "%lu %lu", &size, &rss) != 2)
        rss = 0;
    fclose(f);
    return (size_t)rss * (size_t)sysconf(_SC_PAGESIZE);
}

/* ---- Statistics ------------------------------------------------------------ */

void stress_stats(ftm_stats_t *out)
{
    memset(out, 0, sizeof *out);
    ftm_stats_get(out);
}

void stress_expect_baseline(const ftm_stats_t *base, const char *when)
{
    ftm_stats_t s;
    stress_stats(&s);
    unsigned long long mallocs = s.malloc_count - base->malloc_count;
    unsigned long long frees = s.free_count - base->free_count;
    if (s.live_count != base->live_count)
        stress_fail("%s: ftm_stats live_count = %llu, expected the baseline %llu "
                    "(%llu blocks handed out and %llu freed since; a free lost or "
                    "miscounted)",
                    when, s.live_count, base->live_count, mallocs, frees);
    if (mallocs != frees)
        stress_fail("%s: %llu blocks handed out but %llu freed since the baseline "
                    "(malloc_count/free_count disagree with live_count)",
                    when, mallocs, frees);
    if (s.large_count != base->large_count)
        stress_fail("%s: ftm_stats large_count = %llu, expected the baseline %llu",
                    when, s.large_count, base->large_count);
}
