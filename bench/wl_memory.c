/* wl_memory.c — workloads about memory held, not speed.
 *
 *   frag        fill a big heap with 16–128 B blocks, free 90% of them at
 *               random, then fill with 256–1024 B blocks: RSS per phase.
 *   rss-return  fill with 64 B blocks, free them all, then sleep and sample
 *               RSS at 0, 100, 250, 500 and 1000 ms: is memory given back?
 *
 * Blocks are chained through their first word, so the bench's own
 * bookkeeping adds nothing to RSS and never touches the allocator.
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>

/* A listed block: next, tag (low 16 bits: size), tail word tag ^ size for
 * blocks of 24 B and more. */
typedef struct lblock_s {
    struct lblock_s *next;
    uint64_t tag;
} lblock_t;

static lblock_t *lb_alloc(size_t size, uint64_t x, lblock_t *next)
{
    lblock_t *b = malloc(size);
    if (bench_unlikely(!b)) {
        fprintf(stderr, "ftm-bench: malloc(%zu) returned NULL\n", size);
        exit(2);
    }
    b->next = next;
    b->tag = (x & ~(uint64_t)0xffff) | (uint64_t)size;
    if (size >= 24) {
        uint64_t t = b->tag ^ size;
        memcpy((char *)b + size - 8, &t, sizeof t);
    }
    return b;
}

static int lb_bad(const lblock_t *b)
{
    size_t size = (size_t)(b->tag & 0xffff);
    if (size < 16)
        return 1;
    if (size >= 24) {
        uint64_t t;
        memcpy(&t, (const char *)b + size - 8, sizeof t);
        return t != (b->tag ^ size);
    }
    return 0;
}

static size_t lb_size(const lblock_t *b)
{
    return (size_t)(b->tag & 0xffff);
}

/* Frees a whole list; returns the number of bad blocks. */
static uint64_t lb_free_all(lblock_t *b, uint64_t *sum)
{
    uint64_t bad = 0;
    while (b) {
        lblock_t *next = b->next;
        bad += (uint64_t)lb_bad(b);
        *sum += b->tag;
        free(b);
        b = next;
    }
    return bad;
}

/* ---- frag -------------------------------------------------------------- */

int wl_frag(const bench_opts_t *o)
{
    size_t mib = o->mib ? o->mib : o->quick ? 75 : 300;
    size_t target_a = mib * MiB, target_b = target_a / 3;
    bench_rng_t r;
    bench_rng_init(&r, o->seed, 400);
    bench_result_t res;
    bench_result_init(&res, "frag", 1, "malloc or free");
    free(malloc(64)); /* the allocator's start-up belongs in the baseline */
    double rss0 = (double)bench_rss_bytes();

    double t0 = bench_now();
    lblock_t *a = NULL;
    size_t bytes_a = 0;
    uint64_t n_a = 0;
    while (bytes_a < target_a) {
        uint64_t x = bench_rng_next(&r);
        size_t size = 16 + (size_t)((x >> 32) % 113); /* 16..128 */
        a = lb_alloc(size, x, a);
        bytes_a += size;
        n_a++;
    }
    double t1 = bench_now();
    double rss_a = (double)bench_rss_bytes();

    /* Free 90%, chosen at random; the survivors pin most pages. */
    lblock_t *kept = NULL;
    size_t bytes_kept = 0;
    uint64_t n_freed = 0;
    for (lblock_t *b = a, *next; b; b = next) {
        next = b->next;
        if (bench_rng_next(&r) % 10 != 0) {
            res.errors += (uint64_t)lb_bad(b);
            res.checksum += b->tag;
            free(b);
            n_freed++;
        } else {
            b->next = kept;
            kept = b;
            bytes_kept += lb_size(b);
        }
    }
    double t2 = bench_now();
    double rss_freed = (double)bench_rss_bytes();

    /* A different size band: can the freed space serve it? */
    lblock_t *bl = NULL;
    size_t bytes_b = 0;
    uint64_t n_b = 0;
    while (bytes_b < target_b) {
        uint64_t x = bench_rng_next(&r);
        size_t size = 256 + (size_t)((x >> 32) % 769); /* 256..1024 */
        bl = lb_alloc(size, x, bl);
        bytes_b += size;
        n_b++;
    }
    double t3 = bench_now();
    double rss_b = (double)bench_rss_bytes();
    size_t peak_kib = bench_maxrss_kib();

    res.errors += lb_free_all(kept, &res.checksum);
    res.errors += lb_free_all(bl, &res.checksum);
    double rss_end = (double)bench_rss_bytes();

    res.ops = n_a + n_freed + n_b;
    res.seconds = t3 - t0;
    double live = (double)(bytes_kept + bytes_b);
    bench_result_add(&res, "heap_mib", (double)mib);
    bench_result_add(&res, "rss_start_mib", rss0 / MiB);
    bench_result_add(&res, "rss_after_alloc_mib", rss_a / MiB);
    bench_result_add(&res, "rss_after_free90_mib", rss_freed / MiB);
    bench_result_add(&res, "rss_final_mib", rss_b / MiB);
    bench_result_add(&res, "rss_after_free_all_mib", rss_end / MiB);
    bench_result_add(&res, "peak_rss_mib", (double)peak_kib / 1024.0);
    bench_result_add(&res, "live_final_mib", live / MiB);
    bench_result_add(&res, "final_rss_over_live", live > 0 ? (rss_b - rss0) / live : 0);
    bench_result_add(&res, "alloc_a_s", t1 - t0);
    bench_result_add(&res, "free90_s", t2 - t1);
    bench_result_add(&res, "alloc_b_s", t3 - t2);
    bench_result_print(&res);
    return res.errors ? 3 : 0;
}

/* ---- rss-return -------------------------------------------------------- */

typedef struct rr_shared_s {
    size_t blocks_per_thread;
    pthread_barrier_t allocated, freed, sampled;
    uint64_t errors, sum;
    pthread_mutex_t mu;
} rr_shared_t;

static void *rr_worker(void *arg)
{
    bench_worker_t *w = arg;
    rr_shared_t *sh = w->shared;
    bench_rng_t r;
    bench_rng_init(&r, w->o->seed, (uint64_t)w->id + 500);
    bench_worker_started(w);
    lblock_t *list = NULL;
    for (size_t i = 0; i < sh->blocks_per_thread; i++)
        list = lb_alloc(64, bench_rng_next(&r), list);
    pthread_barrier_wait(&sh->allocated);
    uint64_t sum = 0, bad = lb_free_all(list, &sum);
    w->t_end = bench_now();
    pthread_mutex_lock(&sh->mu);
    sh->errors += bad;
    sh->sum += sum;
    pthread_mutex_unlock(&sh->mu);
    pthread_barrier_wait(&sh->freed);
    /* Stay alive (and out of the allocator) while main samples RSS. */
    pthread_barrier_wait(&sh->sampled);
    return NULL;
}

int wl_rss_return(const bench_opts_t *o)
{
    size_t mib = o->mib ? o->mib : o->quick ? 64 : 256;
    int n = o->threads;
    rr_shared_t sh = {.blocks_per_thread = mib * MiB / 64 / (size_t)n};
    pthread_barrier_init(&sh.allocated, NULL, (unsigned)n + 1);
    pthread_barrier_init(&sh.freed, NULL, (unsigned)n + 1);
    pthread_barrier_init(&sh.sampled, NULL, (unsigned)n + 1);
    pthread_mutex_init(&sh.mu, NULL);

    free(malloc(64)); /* the allocator's start-up belongs in the baseline */
    bench_worker_t *w = calloc((size_t)n, sizeof *w);
    pthread_t *tid = calloc((size_t)n, sizeof *tid);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n + 1);
    for (int i = 0; i < n; i++) {
        w[i].id = i;
        w[i].nthreads = n;
        w[i].o = o;
        w[i].shared = &sh;
        w[i].start = &start;
        pthread_create(&tid[i], NULL, rr_worker, &w[i]);
    }
    double rss_start = (double)bench_rss_bytes();
    double t0 = bench_now();
    pthread_barrier_wait(&start);
    pthread_barrier_wait(&sh.allocated);
    double rss_live = (double)bench_rss_bytes();
    pthread_barrier_wait(&sh.freed);
    double t_freed = bench_now();

    static const int at_ms[] = {0, 100, 250, 500, 1000};
    static const char *key[] = {"rss_0ms_mib", "rss_100ms_mib", "rss_250ms_mib", "rss_500ms_mib",
                                "rss_1000ms_mib"};
    double rss_at[5];
    for (int i = 0; i < 5; i++) {
        bench_sleep_until(t_freed + at_ms[i] / 1000.0);
        rss_at[i] = (double)bench_rss_bytes();
    }
    double peak = (double)bench_maxrss_kib() * 1024.0;
    if (rss_live > peak)
        peak = rss_live;
    pthread_barrier_wait(&sh.sampled);
    for (int i = 0; i < n; i++)
        pthread_join(tid[i], NULL);

    bench_result_t res;
    bench_result_init(&res, "rss-return", n, "malloc or free");
    res.ops = 2 * sh.blocks_per_thread * (size_t)n;
    double t_end = t0;
    for (int i = 0; i < n; i++)
        if (w[i].t_end > t_end)
            t_end = w[i].t_end;
    res.seconds = t_end - t0;
    res.checksum = sh.sum;
    res.errors = sh.errors;
    bench_result_add(&res, "heap_mib", (double)mib);
    bench_result_add(&res, "rss_start_mib", rss_start / MiB);
    bench_result_add(&res, "rss_live_mib", rss_live / MiB);
    bench_result_add(&res, "rss_peak_mib", peak / MiB);
    for (int i = 0; i < 5; i++)
        bench_result_add(&res, key[i], rss_at[i] / MiB);
    bench_result_add(&res, "within_10pct_of_start_at_1s", rss_at[4] <= rss_start * 1.10 ? 1 : 0);
    double grown = peak - rss_start;
    bench_result_add(&res, "returned_pct_at_1s", grown > 0 ? 100.0 * (peak - rss_at[4]) / grown : 100.0);
    bench_result_print(&res);
    free(w);
    free(tid);
    return res.errors ? 3 : 0;
}
