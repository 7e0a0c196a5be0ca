/* remote_free.c — producers allocate, consumers free: every free is remote.
 *
 * Producers allocate blocks of random sizes (8 B .. 64 KiB, one in 32 large:
 * 256 KiB .. 1-4 MiB) by ftm_malloc, ftm_calloc or ftm_aligned_alloc, fill
 * them with a pattern keyed by (seed, block id, size) and hand them to
 * consumers through a mutex/condvar queue (not under test).  Consumers check
 * alignment, usable size and contents, then free by ftm_free or
 * ftm_free_sized.  Producers also keep a few blocks and free them locally, so
 * pools see local and remote frees at once, and they exit while consumers
 * still drain the queue (remote frees into dead threads' pools).
 *
 * Checks: contents of every block; produced == consumed; after each round
 * and after ftm_collect(true), live_count and large_count back to baseline.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stress_util.h"

typedef struct item_s {
    void *p;
    size_t size;
    unsigned long long id;
} item_t;

/* Bounded FIFO; the producers' count tells consumers when to stop. */
typedef struct queue_s {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    item_t *items;
    size_t cap, head, len;
    int producers_left; /* protected by lock */
} queue_t;

static stress_opts_t opt = { .name = "remote_free" };
static queue_t q;
static int nproducers, nconsumers;
static unsigned long long blocks_per_producer;
static _Atomic unsigned long long consumed, consumed_bytes, produced;

static void queue_put(item_t it)
{
    pthread_mutex_lock(&q.lock);
    while (q.len == q.cap)
        pthread_cond_wait(&q.not_full, &q.lock);
    q.items[(q.head + q.len) % q.cap] = it;
    q.len++;
    pthread_cond_signal(&q.not_empty);
    pthread_mutex_unlock(&q.lock);
}

/* false once the queue is empty and every producer has finished. */
static bool queue_get(item_t *it)
{
    pthread_mutex_lock(&q.lock);
    while (q.len == 0 && q.producers_left > 0)
        pthread_cond_wait(&q.not_empty, &q.lock);
    bool got = q.len > 0;
    if (got) {
        *it = q.items[q.head];
        q.head = (q.head + 1) % q.cap;
        q.len--;
        pthread_cond_signal(&q.not_full);
    }
    pthread_mutex_unlock(&q.lock);
    return got;
}

static void producer_done(void)
{
    pthread_mutex_lock(&q.lock);
    q.producers_left--;
    pthread_cond_broadcast(&q.not_empty);
    pthread_mutex_unlock(&q.lock);
}

static uint64_t block_key(unsigned long long id, size_t size)
{
    return stress_key3(opt.seed, id, size);
}

/* Allocates a block for `id` the way the id's random choice says. */
static void *produce_block(stress_rng_t *r, unsigned long long id, size_t *size_out)
{
    size_t size = stress_one_in(r, 32) ? stress_size(r, STRESS_LARGE_MIN + 1, STRESS_LARGE_MAX)
                                       : stress_size(r, 8, 64 * STRESS_KIB);
    void *p;
    unsigned how = (unsigned)stress_below(r, 10);
    if (how == 0) {
        size_t n = 1 + (size_t)stress_below(r, 4); /* as n elements */
        size = (size + n - 1) / n * n;
        p = ftm_calloc(n, size / n);
        if (p == NULL)
            stress_fail("ftm_calloc(%zu, %zu) returned NULL", n, size / n);
        stress_check_block(p, size, 0, "ftm_calloc");
        size_t bad = stress_check_zero(p, size);
        if (bad != SIZE_MAX)
            stress_fail("ftm_calloc(%zu): byte %zu of %p is 0x%02x, not zero", size, bad, p,
                        ((unsigned char *)p)[bad]);
    } else if (how == 1) {
        size_t align = (size_t)16 << stress_below(r, 9); /* 16 .. 4096 */
        size = (size + align - 1) / align * align;         /* C11: a multiple */
        p = ftm_aligned_alloc(align, size);
        if (p == NULL)
            stress_fail("ftm_aligned_alloc(%zu, %zu) returned NULL", align, size);
        stress_check_block(p, size, align, "ftm_aligned_alloc");
    } else {
        p = ftm_malloc(size);
        if (p == NULL)
            stress_fail("ftm_malloc(%zu) returned NULL", size);
        stress_check_block(p, size, 0, "ftm_malloc");
    }
    stress_fill(p, 0, size, block_key(id, size));
    *size_out = size;
    return p;
}

static void consume_block(const item_t *it, const char *who)
{
    size_t u = ftm_usable_size(it->p);
    if (u < it->size)
        stress_fail("%s: ftm_usable_size(%p) = %zu < %zu for block %llu", who, it->p, u,
                    it->size, it->id);
    stress_verify(it->p, 0, it->size, block_key(it->id, it->size), who, it->id);
    if (it->id % 3 == 0)
        ftm_free_sized(it->p, it->size);
    else
        ftm_free(it->p);
}

#define STASH 16

static void *producer_main(void *arg)
{
    int me = (int)(intptr_t)arg;
    stress_rng_t r = stress_rng(opt.seed, 1000 + (uint64_t)me);
    item_t stash[STASH];
    int nstash = 0;
    for (unsigned long long i = 0; i < blocks_per_producer; i++) {
        item_t it;
        it.id = (unsigned long long)me + i * (unsigned long long)nproducers;
        it.p = produce_block(&r, it.id, &it.size);
        atomic_fetch_add_explicit(&produced, 1, memory_order_relaxed);
        if (stress_one_in(&r, 8)) {
            /* Kept and freed here: local frees into the same pools. */
            stash[nstash++] = it;
            if (nstash == STASH) {
                for (int k = 0; k < nstash; k++)
                    consume_block(&stash[k], "producer (local free)");
                atomic_fetch_add_explicit(&consumed, (unsigned long long)nstash,
                                          memory_order_relaxed);
                nstash = 0;
            }
        } else {
            queue_put(it);
        }
    }
    for (int k = 0; k < nstash; k++)
        consume_block(&stash[k], "producer (local free)");
    atomic_fetch_add_explicit(&consumed, (unsigned long long)nstash, memory_order_relaxed);
    producer_done();
    return NULL;
}

static void *consumer_main(void *arg)
{
    (void)arg;
    item_t it;
    unsigned long long n = 0, bytes = 0;
    while (queue_get(&it)) {
        consume_block(&it, "consumer (remote free)");
        n++;
        bytes += it.size;
    }
    atomic_fetch_add_explicit(&consumed, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&consumed_bytes, bytes, memory_order_relaxed);
    return NULL;
}

int main(int argc, char **argv)
{
    stress_parse(&opt, argc, argv, 8, NULL);
    if (opt.threads < 2)
        stress_fail("needs --threads >= 2 (producers and consumers)");
    nproducers = opt.threads / 2;
    nconsumers = opt.threads - nproducers;
    unsigned long long total = opt.smoke ? 10000 : 400000; /* blocks per round */
    int rounds = opt.smoke ? 2 : 4;
    blocks_per_producer = total / (unsigned long long)nproducers;

    pthread_mutex_init(&q.lock, NULL);
    pthread_cond_init(&q.not_empty, NULL);
    pthread_cond_init(&q.not_full, NULL);
    q.cap = 256;
    q.items = calloc(q.cap, sizeof *q.items);
    pthread_t *th = calloc((size_t)opt.threads, sizeof *th);
    if (q.items == NULL || th == NULL)
        stress_fail("out of memory for the harness");

    ftm_stats_t base;
    stress_stats(&base);
    double t0 = stress_now();
    for (int round = 0; round < rounds; round++) {
        atomic_store(&produced, 0);
        atomic_store(&consumed, 0);
        q.producers_left = nproducers;
        for (int i = 0; i < nconsumers; i++)
            stress_thread_start(&th[nproducers + i], consumer_main, NULL);
        for (int i = 0; i < nproducers; i++)
            stress_thread_start(&th[i], producer_main, (void *)(intptr_t)i);
        for (int i = 0; i < opt.threads; i++)
            stress_thread_join(th[i]);
        if (q.len != 0)
            stress_fail("round %d: %zu blocks left in the queue", round, q.len);
        unsigned long long p = atomic_load(&produced), c = atomic_load(&consumed);
        if (p != blocks_per_producer * (unsigned long long)nproducers || p != c)
            stress_fail("round %d: produced %llu, consumed %llu, expected %llu of each", round,
                        p, c, blocks_per_producer * (unsigned long long)nproducers);
        char when[64];
        snprintf(when, sizeof when, "after round %d", round);
        stress_expect_baseline(&base, when);
    }
    ftm_collect(true);
    stress_expect_baseline(&base, "after ftm_collect(true)");

    stress_note("OK: %d rounds x %llu blocks, %d producers, %d consumers, %.1f MiB through "
                "remote frees, %.2f s",
                rounds, blocks_per_producer * (unsigned long long)nproducers, nproducers,
                nconsumers, (double)atomic_load(&consumed_bytes) / (double)STRESS_MIB,
                stress_now() - t0);
    free(q.items);
    free(th);
    pthread_mutex_destroy(&q.lock);
    pthread_cond_destroy(&q.not_empty);
    pthread_cond_destroy(&q.not_full);
    return 0;
}
