/* common.c — clocks, RSS probes, the worker launcher and the JSON result
 * line shared by every workload (declarations and contracts in common.h).
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

atomic_bool bench_stop;

size_t bench_rng_log_range(bench_rng_t *r, size_t lo, size_t hi)
{
    double u = (double)(bench_rng_next(r) >> 11) / 9007199254740992.0; /* [0,1) */
    double v = exp(log((double)lo) + u * (log((double)hi) - log((double)lo)));
    size_t s = (size_t)v;
    return s < lo ? lo : s > hi ? hi : s;
}

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void bench_sleep_until(double t)
{
    for (;;) {
        double left = t - bench_now();
        if (left <= 0)
            return;
        struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

size_t bench_rss_bytes(void)
{
    /* statm: size resident shared text lib data dt, in pages.  Read with
     * read(2) into a stack buffer: stdio would allocate. */
    char buf[256];
    size_t rss = 0;
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    unsigned long size_pages, rss_pages;
    if (sscanf(buf, "%lu %lu", &size_pages, &rss_pages) == 2)
        rss = (size_t)rss_pages * (size_t)sysconf(_SC_PAGESIZE);
    return rss;
}

size_t bench_maxrss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss;
}

void *bench_map(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "ftm-bench: mmap(%zu): %s\n", bytes, strerror(errno));
        exit(2);
    }
    return p;
}

void bench_unmap(void *p, size_t bytes)
{
    munmap(p, bytes);
}

/* ---- Workers ----------------------------------------------------------- */

void bench_worker_started(bench_worker_t *w)
{
    pthread_barrier_wait(w->start);
    w->t_start = bench_now();
}

double bench_run_workers(const bench_opts_t *o, void *(*fn)(void *), void *shared,
                         bench_worker_t *w)
{
    int n = o->threads;
    pthread_t *tid = calloc((size_t)n, sizeof *tid);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n + 1);
    atomic_store(&bench_stop, false);
    for (int i = 0; i < n; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].id = i;
        w[i].nthreads = n;
        w[i].o = o;
        w[i].shared = shared;
        w[i].start = &start;
        if (pthread_create(&tid[i], NULL, fn, &w[i]) != 0) {
            fprintf(stderr, "ftm-bench: pthread_create failed\n");
            exit(2);
        }
    }
    pthread_barrier_wait(&start);
    double t0 = bench_now();
    if (!o->ops) {
        bench_sleep_until(t0 + (double)o->duration_ms / 1000.0);
        atomic_store(&bench_stop, true);
    }
    for (int i = 0; i < n; i++)
        pthread_join(tid[i], NULL);
    /* Timed from the workers' own clocks: a fixed-work run may finish
     * before this thread is even scheduled after the barrier. */
    double t_first = w[0].t_start, t1 = w[0].t_end;
    for (int i = 1; i < n; i++) {
        if (w[i].t_start < t_first)
            t_first = w[i].t_start;
        if (w[i].t_end > t1)
            t1 = w[i].t_end;
    }
    t0 = t_first;
    pthread_barrier_destroy(&start);
    free(tid);
    return t1 - t0;
}

/* ---- Results ----------------------------------------------------------- */

void bench_result_init(bench_result_t *r, const char *workload, int threads, const char *unit)
{
    memset(r, 0, sizeof *r);
    r->workload = workload;
    r->threads = threads;
    r->unit = unit;
}

void bench_result_add(bench_result_t *r, const char *key, double val)
{
    if (r->nextra < (int)(sizeof r->extra_val / sizeof r->extra_val[0])) {
        r->extra_key[r->nextra] = key;
        r->extra_val[r->nextra] = val;
        r->nextra++;
    }
}

void bench_result_sum_workers(bench_result_t *r, const bench_worker_t *w, int n)
{
    for (int i = 0; i < n; i++) {
        r->ops += w[i].ops;
        r->checksum += w[i].sum;
        r->errors += w[i].errors;
    }
}

static void print_num(double v)
{
    if (isfinite(v) && v == floor(v) && fabs(v) < 9e15)
        printf("%.0f", v);
    else if (isfinite(v))
        printf("%.6g", v);
    else
        printf("null");
}

void bench_result_print(const bench_result_t *r)
{
    double ops_per_s = r->seconds > 0 ? (double)r->ops / r->seconds : 0.0;
    printf("{\"workload\":\"%s\",\"threads\":%d,\"unit\":\"%s\",\"ops\":%" PRIu64
           ",\"seconds\":%.6f,\"ops_per_s\":",
           r->workload, r->threads, r->unit, r->ops, r->seconds);
    print_num(ops_per_s);
    printf(",\"checksum\":\"0x%016" PRIx64 "\",\"errors\":%" PRIu64 ",\"maxrss_kib\":%zu",
           r->checksum, r->errors, bench_maxrss_kib());
    for (int i = 0; i < r->nextra; i++) {
        printf(",\"%s\":", r->extra_key[i]);
        print_num(r->extra_val[i]);
    }
    printf("}\n");
    fflush(stdout);
    if (r->errors)
        fprintf(stderr, "ftm-bench: %s: %" PRIu64 " CORRUPTED BLOCKS (tag mismatch)\n", r->workload,
                r->errors);
}
