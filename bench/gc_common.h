/* gc_common.h — shared plumbing of the cycle-collector benchmarks
 * (gc_pause.c, gc_throughput.c, binarytrees.c, gcbench.c): a latency
 * histogram, CPU-time clocks, the graph shape shared with gc_py.py, and
 * the implementation switch of the programs built three times (ftmem,
 * Boehm GC, plain malloc).
 *
 * Implementation macros (set by bench/CMakeLists.txt, exactly one):
 *   GCB_FTM     ftmem objects (links ftmem-static)
 *   GCB_BOEHM   the Boehm-Demers-Weiser collector (GC_MALLOC, never frees)
 *   GCB_MALLOC  malloc/free (glibc unless LD_PRELOAD says otherwise)
 *
 * The graph of gc_pause / gc_throughput (and gc_py.py, which computes the
 * very same edges): N nodes of two references and an integer, all held
 * by one root array; node i references nodes gcb_edge_a(i, N) and
 * gcb_edge_b(i, N) — a scattered graph with many cycles, the shape of a
 * heap of small Python objects pointing at each other.
 */
#ifndef FTM_BENCH_GC_COMMON_H
#define FTM_BENCH_GC_COMMON_H

#include "common.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#if defined(GCB_FTM) + defined(GCB_BOEHM) + defined(GCB_MALLOC) > 1
#error "define at most one of GCB_FTM, GCB_BOEHM, GCB_MALLOC"
#endif

#if defined(GCB_FTM)
#define GCB_IMPL "ftmem"
#elif defined(GCB_BOEHM)
#define GCB_IMPL "boehm"
#else
#define GCB_IMPL "malloc"
#endif

/* ---- The graph shape (mirrored in gc_py.py) --------------------------------- */

static inline size_t gcb_edge_a(size_t i, size_t n) { return (size_t)(((uint64_t)i * 2654435761u + 12345u) % n); }
static inline size_t gcb_edge_b(size_t i, size_t n) { return (size_t)(((uint64_t)i * 40503u + 977u) % n); }

/* ---- Clocks ------------------------------------------------------------------ */

static inline uint64_t gcb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline double gcb_thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* user + system CPU seconds of the whole process (every thread) */
static inline double gcb_process_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec * 1e-6;
}

static inline long gcb_minor_faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

static inline int gcb_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* median of n values (sorts v) */
static inline double gcb_median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, gcb_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static inline double gcb_max(const double *v, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] > m)
            m = v[i];
    return m;
}

/* ---- Latency histogram ----------------------------------------------------------
 * Log-linear, 32 sub-buckets per power of two (about 3% resolution), exact
 * below 32 ns, up to 2^40 ns; the maximum is kept exactly. */

#define GCB_HSUB 32
#define GCB_HBUCKETS ((40 - 4) * GCB_HSUB + GCB_HSUB)

typedef struct gcb_hist {
    uint64_t count;
    uint64_t max;
    uint64_t total;         /* sum of all samples (ns) */
    uint64_t over_100us;    /* samples > 100 us */
    uint64_t over_1ms;      /* samples > 1 ms */
    uint64_t over_10ms;     /* samples > 10 ms */
    uint64_t time_over_100us; /* ns spent in samples > 100 us */
    uint64_t b[GCB_HBUCKETS];
} gcb_hist;

static inline unsigned gcb_hist_index(uint64_t v)
{
    if (v < GCB_HSUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 5 */
    if (e >= 40)
        return GCB_HBUCKETS - 1;
    unsigned sub = (unsigned)(v >> (e - 5)) & (GCB_HSUB - 1);
    return (e - 4) * GCB_HSUB + sub;
}

/* upper bound of bucket i (exclusive) */
static inline uint64_t gcb_hist_upper(unsigned i)
{
    if (i < GCB_HSUB)
        return i + 1;
    unsigned e = i / GCB_HSUB + 4, sub = i % GCB_HSUB;
    return ((uint64_t)(GCB_HSUB + sub) << (e - 5)) + ((uint64_t)1 << (e - 5));
}

static inline void gcb_hist_add(gcb_hist *h, uint64_t v)
{
    h->count++;
    h->total += v;
    if (v > h->max)
        h->max = v;
    if (bench_unlikely(v > 100000)) {
        h->over_100us++;
        h->time_over_100us += v;
        if (v > 1000000) {
            h->over_1ms++;
            if (v > 10000000)
                h->over_10ms++;
        }
    }
    h->b[gcb_hist_index(v)]++;
}

/* the q-quantile (0 < q < 1): the upper bound of the bucket holding it,
 * never above the exact maximum */
static inline double gcb_hist_quantile(const gcb_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)((double)h->count * q);
    if (rank >= h->count)
        rank = h->count - 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < GCB_HBUCKETS; i++) {
        seen += h->b[i];
        if (seen > rank) {
            uint64_t u = gcb_hist_upper(i);
            return (double)(u < h->max ? u : h->max);
        }
    }
    return (double)h->max;
}

/* the histogram's figures as extras of a result line, names prefixed */
static inline void gcb_hist_report(bench_result_t *r, const gcb_hist *h)
{
    bench_result_add(r, "samples", (double)h->count);
    bench_result_add(r, "mean_ns", h->count ? (double)h->total / (double)h->count : 0);
    bench_result_add(r, "p50_ns", gcb_hist_quantile(h, 0.50));
    bench_result_add(r, "p99_ns", gcb_hist_quantile(h, 0.99));
    bench_result_add(r, "p999_ns", gcb_hist_quantile(h, 0.999));
    bench_result_add(r, "p9999_ns", gcb_hist_quantile(h, 0.9999));
    bench_result_add(r, "max_ns", (double)h->max);
    bench_result_add(r, "over_100us", (double)h->over_100us);
    bench_result_add(r, "over_1ms", (double)h->over_1ms);
    bench_result_add(r, "over_10ms", (double)h->over_10ms);
    bench_result_add(r, "time_over_100us_ms", (double)h->time_over_100us / 1e6);
}

/* ---- Small option parser: "--name value" and "-x value" --------------------------- */

static inline const char *gcb_arg(int argc, char **argv, const char *name, const char *alt)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0 || (alt && strcmp(argv[i], alt) == 0))
            return argv[i + 1];
    return NULL;
}

static inline bool gcb_flag(int argc, char **argv, const char *name)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return true;
    return false;
}

static inline long gcb_arg_long(int argc, char **argv, const char *name, const char *alt, long def)
{
    const char *s = gcb_arg(argc, argv, name, alt);
    if (!s)
        return def;
    char *end;
    errno = 0;
    double v = strtod(s, &end); /* accepts 1e6 */
    if (errno || end == s || *end) {
        fprintf(stderr, "bad value for %s: '%s'\n", name, s);
        exit(2);
    }
    return (long)v;
}

#endif /* FTM_BENCH_GC_COMMON_H */
