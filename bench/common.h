/* common.h — shared plumbing of the ftm-bench workloads.
 *
 * Owns option parsing, the per-thread RNG, clocks, RSS probes, block tags
 * (corruption checks) and the one-line JSON result every workload prints.
 * Owns no workload: those live in wl_*.c and are dispatched from main.c.
 * The bench never links ftmem: it calls plain malloc/free, and the allocator
 * under test is chosen by LD_PRELOAD (see run.sh).
 */
#ifndef FTM_BENCH_COMMON_H
#define FTM_BENCH_COMMON_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define KiB ((size_t)1024)
#define MiB (KiB * 1024)

#if defined(__GNUC__)
#define bench_noinline __attribute__((noinline))
#define bench_likely(x) __builtin_expect(!!(x), 1)
#define bench_unlikely(x) __builtin_expect(!!(x), 0)
#else
#define bench_noinline
#define bench_likely(x) (x)
#define bench_unlikely(x) (x)
#endif

/* Keep `p` (and what it points to) observable so a malloc/free pair or a
 * store can never be elided; costs no instruction. */
#define bench_escape(p) __asm__ volatile("" : : "r"(p) : "memory")

/* ---- Options ------------------------------------------------------------ */

typedef struct bench_opts_s {
    int threads;          /* -t: worker threads */
    long duration_ms;     /* -d: time box for throughput workloads */
    uint64_t ops;         /* -n: fixed ops per thread instead of a time box (0: time box) */
    uint64_t seed;        /* -s */
    bool quick;           /* --quick: smoke-sized */
    size_t mib;           /* --mib: heap size for frag / rss-return */
    size_t live;          /* --live: live-set slots per thread (0: workload default) */
} bench_opts_t;

/* ---- Random numbers: splitmix64 seeding, xoshiro-like xorshift64* ------- */

typedef struct bench_rng_s {
    uint64_t s;
} bench_rng_t;

static inline uint64_t bench_mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline void bench_rng_init(bench_rng_t *r, uint64_t seed, uint64_t stream)
{
    r->s = bench_mix64(seed ^ bench_mix64(stream + 1));
    if (r->s == 0)
        r->s = 1;
}

static inline uint64_t bench_rng_next(bench_rng_t *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* Uniform in [lo, hi] (bias negligible for the ranges used here). */
static inline size_t bench_rng_range(bench_rng_t *r, size_t lo, size_t hi)
{
    return lo + (size_t)((bench_rng_next(r) >> 11) % (uint64_t)(hi - lo + 1));
}

/* Log-uniform in [lo, hi]: every doubling equally likely. */
size_t bench_rng_log_range(bench_rng_t *r, size_t lo, size_t hi);

/* ---- Block tags ------------------------------------------------------------
 * A tagged block carries `tag` in its first word and `tag ^ size` in its last
 * (blocks >= 16 B), so a block handed out twice, overlapped or not preserved
 * by realloc is caught at free time instead of skewing the figures. */

static inline void bench_tag_write(void *p, size_t size, uint64_t tag)
{
    memcpy(p, &tag, sizeof tag);
    if (size >= 16) {
        uint64_t t2 = tag ^ size;
        memcpy((char *)p + size - 8, &t2, sizeof t2);
    }
}

/* Returns 1 if the tags are wrong (and counts nothing itself). */
static inline int bench_tag_bad(const void *p, size_t size, uint64_t tag)
{
    uint64_t a, b;
    memcpy(&a, p, sizeof a);
    if (a != tag)
        return 1;
    if (size >= 16) {
        memcpy(&b, (const char *)p + size - 8, sizeof b);
        if (b != (tag ^ size))
            return 1;
    }
    return 0;
}

/* Write one word in every 4 KiB page of [p, p+size) so large blocks are
 * really committed (page faults are part of what a large-block allocator
 * costs). */
static inline void bench_touch_pages(void *p, size_t size, uint64_t v)
{
    for (size_t off = 0; off + 8 <= size; off += 4096)
        memcpy((char *)p + off, &v, sizeof v);
}

/* ---- Time, memory ----------------------------------------------------- */

double bench_now(void);               /* CLOCK_MONOTONIC seconds */
void bench_sleep_until(double t);     /* sleep until bench_now() >= t */
size_t bench_rss_bytes(void);         /* resident set now (/proc/self/statm) */
size_t bench_maxrss_kib(void);        /* getrusage ru_maxrss (KiB) */
/* Big bookkeeping arrays come from mmap so they never go through (or
 * distort) the allocator under test; their pages still count in RSS. */
void *bench_map(size_t bytes);
void bench_unmap(void *p, size_t bytes);

/* ---- Threads ---------------------------------------------------------- */

/* Stop flag of time-boxed runs: set by the main thread, polled (relaxed) by
 * the workers once per operation. */
extern atomic_bool bench_stop;

static inline bool bench_should_stop(uint64_t done, uint64_t limit)
{
    if (limit)
        return done >= limit;
    return atomic_load_explicit(&bench_stop, memory_order_relaxed);
}

/* Per-worker record; workers fill ops/sum/errors/t_end. */
typedef struct bench_worker_s {
    int id;
    int nthreads;
    const bench_opts_t *o;
    void *shared;          /* workload-specific shared state */
    uint64_t ops;          /* operations done in the timed region */
    uint64_t sum;          /* checksum over data read back */
    uint64_t errors;       /* tag mismatches seen */
    uint64_t extra;        /* workload-specific counter */
    double t_start;        /* when this worker passed the start barrier */
    double t_end;          /* when this worker left the timed loop */
    pthread_barrier_t *start;
    char pad[64];
} bench_worker_t;

/* Runs fn on o->threads workers that start together at a barrier; returns
 * the timed seconds (the first worker's t_start to the last one's t_end).  In
 * time-box mode the caller's thread sleeps duration_ms, then raises
 * bench_stop.  Workers call bench_worker_started() after their setup. */
double bench_run_workers(const bench_opts_t *o, void *(*fn)(void *), void *shared,
                         bench_worker_t *w);
void bench_worker_started(bench_worker_t *w);

/* ---- Results ---------------------------------------------------------- */

/* One JSON object on one stdout line: the workload, the throughput and
 * named extra figures.  errors > 0 makes main exit with status 3. */
typedef struct bench_result_s {
    const char *workload;
    int threads;
    uint64_t ops;
    double seconds;
    uint64_t checksum;
    uint64_t errors;
    const char *unit;          /* what an op is, e.g. "malloc+free" */
    int nextra;
    const char *extra_key[40];
    double extra_val[40];
} bench_result_t;

void bench_result_init(bench_result_t *r, const char *workload, int threads, const char *unit);
void bench_result_add(bench_result_t *r, const char *key, double val);
void bench_result_sum_workers(bench_result_t *r, const bench_worker_t *w, int n);
void bench_result_print(const bench_result_t *r);

/* ---- Workloads (wl_*.c) ------------------------------------------------ */

int wl_churn(const bench_opts_t *o);
int wl_sizemix(const bench_opts_t *o);
int wl_large(const bench_opts_t *o);
int wl_xthread(const bench_opts_t *o);
int wl_thread_churn(const bench_opts_t *o);
int wl_fs_active(const bench_opts_t *o);
int wl_fs_passive(const bench_opts_t *o);
int wl_frag(const bench_opts_t *o);
int wl_rss_return(const bench_opts_t *o);

#endif /* FTM_BENCH_COMMON_H */
