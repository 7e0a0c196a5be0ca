/* test_threads.c — multithreaded behaviour through the API: blocks freed by
 * a thread other than their owner (remote frees), blocks that outlive the
 * thread that allocated them (abandoned pools, adopted later), many
 * short-lived threads.  Contents are verified at every hand-off; the stats
 * must come back to their baseline once everything is freed. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>

#include "ftm_test.h"
#include <ftmem.h>

TestSuite(threads, .timeout = 90);

/* A block that carries its own check: the first word is the size, the rest
 * a pattern seeded by the size and a tag. */
typedef struct item_s {
    void *p;
    size_t n;
    uint64_t seed;
} item_t;

static size_t pick_size(uint64_t *rng)
{
    uint64_t r = ftt_rand(rng);
    switch (r % 64) {
    case 0:
        return 1 * MiB + r % 65536;          /* large */
    case 1: case 2: case 3:
        return 16 * 1024 + r % (200 * 1024); /* medium */
    default:
        return 1 + r % 1024;                 /* small */
    }
}

static bool item_alloc(item_t *it, uint64_t *rng, uint64_t tag)
{
    it->n = pick_size(rng);
    it->seed = tag;
    it->p = ftm_malloc(it->n);
    if (!it->p)
        return false;
    ftt_fill(it->p, it->n, it->seed);
    return true;
}

static bool item_ok(const item_t *it)
{
    return ftt_check(it->p, it->n, it->seed) == SIZE_MAX && ftm_usable_size(it->p) >= it->n;
}

/* ---- A to B ------------------------------------------------------------- */

enum { HANDOFF_N = 20000 };
static item_t g_items[HANDOFF_N];

static void *producer(void *arg)
{
    uint64_t rng = 11;
    for (size_t i = 0; i < HANDOFF_N; i++)
        if (!item_alloc(&g_items[i], &rng, i))
            return (void *)1;
    return NULL;
}

typedef struct { size_t from, to, step; size_t bad; } consume_arg_t;

static void *consumer(void *arg)
{
    consume_arg_t *c = arg;
    c->bad = SIZE_MAX;
    for (size_t i = c->from; i < c->to; i += c->step) {
        if (!item_ok(&g_items[i]) && c->bad == SIZE_MAX)
            c->bad = i;
        ftm_free(g_items[i].p);
    }
    return NULL;
}

Test(threads, allocated_in_A_freed_in_B)
{
    ftm_stats_t base, end;
    ftm_stats_get(&base);
    pthread_t a, b1, b2;
    void *res;
    /* A stays alive while B frees: its pools get remote frees. */
    cr_assert_eq(pthread_create(&a, NULL, producer, NULL), 0);
    pthread_join(a, &res);
    cr_assert_null(res, "producer: allocation failed");
    consume_arg_t c1 = {0, HANDOFF_N, 2, 0}, c2 = {1, HANDOFF_N, 2, 0};
    cr_assert_eq(pthread_create(&b1, NULL, consumer, &c1), 0);
    cr_assert_eq(pthread_create(&b2, NULL, consumer, &c2), 0);
    pthread_join(b1, NULL);
    pthread_join(b2, NULL);
    cr_assert_eq(c1.bad, SIZE_MAX, "block #%zu (%zu B) corrupted when freed remotely", c1.bad,
                 c1.bad == SIZE_MAX ? 0 : g_items[c1.bad].n);
    cr_assert_eq(c2.bad, SIZE_MAX, "block #%zu corrupted when freed remotely", c2.bad);
    ftm_collect(true);
    ftm_stats_get(&end);
    cr_assert_eq(end.live_count, base.live_count, "live_count %llu -> %llu after all remote frees", base.live_count,
                 end.live_count);
    cr_assert_eq(end.malloc_count - base.malloc_count, (unsigned long long)HANDOFF_N);
    cr_assert_eq(end.free_count - base.free_count, (unsigned long long)HANDOFF_N);
}

/* Owner alive and allocating while the other thread frees into its pools. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    item_t *q;
    size_t cap, head, tail; /* ring buffer */
} chan_t;

static void chan_init(chan_t *c, size_t cap)
{
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->q = calloc(cap, sizeof *c->q); /* libc: the channel is not under test */
    c->cap = cap;
    c->head = c->tail = 0;
}

static bool chan_trypush(chan_t *c, item_t it)
{
    bool ok = false;
    pthread_mutex_lock(&c->mu);
    if (c->tail - c->head < c->cap) {
        c->q[c->tail++ % c->cap] = it;
        ok = true;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return ok;
}

static bool chan_trypop(chan_t *c, item_t *it)
{
    bool ok = false;
    pthread_mutex_lock(&c->mu);
    if (c->tail != c->head) {
        *it = c->q[c->head++ % c->cap];
        ok = true;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return ok;
}

static item_t chan_pop(chan_t *c)
{
    item_t it;
    pthread_mutex_lock(&c->mu);
    while (c->tail == c->head)
        pthread_cond_wait(&c->cv, &c->mu);
    it = c->q[c->head++ % c->cap];
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return it;
}

enum { RING_THREADS = 4, RING_PER_THREAD = 15000 };
static chan_t g_ring[RING_THREADS];

typedef struct { int id; int bad; size_t bad_n; } ring_arg_t;

static void *ring_worker(void *arg)
{
    ring_arg_t *a = arg;
    uint64_t rng = 1000 + (uint64_t)a->id;
    chan_t *out = &g_ring[(a->id + 1) % RING_THREADS], *in = &g_ring[a->id];
    size_t sent = 0, got = 0;
    item_t local[8];
    int nlocal = 0;
    while (sent < RING_PER_THREAD || got < RING_PER_THREAD) {
        if (sent < RING_PER_THREAD) {
            item_t it;
            if (!item_alloc(&it, &rng, ((uint64_t)a->id << 40) | sent))
                abort(); /* cannot cr_assert off the main thread */
            /* Interleave local alloc/free with the remote traffic. */
            if (nlocal == 8) {
                for (int k = 0; k < 8; k++) {
                    if (!item_ok(&local[k]))
                        a->bad = 3;
                    ftm_free(local[k].p);
                }
                nlocal = 0;
            }
            item_t l;
            if (item_alloc(&l, &rng, 7))
                local[nlocal++] = l;
            sent++;
            /* Never block on a full channel while ours fills up too. */
            item_t r;
            while (!chan_trypush(out, it)) {
                while (got < RING_PER_THREAD && chan_trypop(in, &r)) {
                    if (!item_ok(&r) && !a->bad) {
                        a->bad = 1;
                        a->bad_n = r.n;
                    }
                    ftm_free(r.p);
                    got++;
                }
                sched_yield();
            }
        }
        item_t r;
        while (got < RING_PER_THREAD && (sent == RING_PER_THREAD ? (r = chan_pop(in), true) : chan_trypop(in, &r))) {
            if (!item_ok(&r) && !a->bad) {
                a->bad = 1;
                a->bad_n = r.n;
            }
            ftm_free(r.p);
            got++;
        }
    }
    for (int k = 0; k < nlocal; k++)
        ftm_free(local[k].p);
    return NULL;
}

Test(threads, ring_of_remote_frees)
{
    ftm_stats_t base, end;
    ftm_stats_get(&base);
    pthread_t t[RING_THREADS];
    ring_arg_t args[RING_THREADS];
    for (int i = 0; i < RING_THREADS; i++)
        chan_init(&g_ring[i], 256);
    for (int i = 0; i < RING_THREADS; i++) {
        args[i] = (ring_arg_t){i, 0, 0};
        cr_assert_eq(pthread_create(&t[i], NULL, ring_worker, &args[i]), 0);
    }
    for (int i = 0; i < RING_THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < RING_THREADS; i++)
        cr_assert_eq(args[i].bad, 0, "thread %d: %s", i,
                     args[i].bad == 1 ? "a block received from another thread was corrupted"
                     : args[i].bad == 2 ? "allocation failed" : "a local block was corrupted");
    ftm_collect(true);
    ftm_stats_get(&end);
    cr_assert_eq(end.live_count, base.live_count, "live_count %llu -> %llu after the ring drained", base.live_count,
                 end.live_count);
    cr_assert_eq(end.malloc_count - end.free_count, end.live_count);
}

/* ---- Blocks outliving their owner ----------------------------------------- */

enum { ORPHAN_N = 12000 };
static item_t g_orphans[ORPHAN_N];

static void *orphan_maker(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg;
    for (size_t i = 0; i < ORPHAN_N; i++)
        if (!item_alloc(&g_orphans[i], &rng, i * 3 + 1))
            return (void *)1;
    /* Leave a mix of full, partly used and empty pools behind. */
    for (size_t i = 0; i < ORPHAN_N; i += 5) {
        ftm_free(g_orphans[i].p);
        g_orphans[i].p = NULL;
    }
    return NULL; /* exits with the rest still live */
}

typedef struct { size_t from, to; int bad; } range_t;

static void *free_range(void *arg)
{
    range_t *r = arg;
    for (size_t i = r->from; i < r->to; i++) {
        if (!g_orphans[i].p)
            continue;
        if (!item_ok(&g_orphans[i]))
            r->bad = 1;
        ftm_free(g_orphans[i].p);
        g_orphans[i].p = NULL;
    }
    return NULL;
}

enum { FRESH_N = 20000 };
typedef struct { int bad; uint64_t seed; } fresh_arg_t;

/* A newcomer allocates (possibly adopting the abandoned pools) while some
 * orphans are still live: nothing it gets may overlap them. */
static void *fresh_allocator(void *arg)
{
    fresh_arg_t *f = arg;
    item_t *mine = calloc(FRESH_N, sizeof *mine); /* libc: not under test */
    uint64_t rng = f->seed;
    if (!mine)
        abort();
    for (size_t i = 0; i < FRESH_N; i++)
        if (!item_alloc(&mine[i], &rng, f->seed * 1000003 + i))
            f->bad = 2;
    for (size_t i = 0; i < FRESH_N; i++) {
        if (!item_ok(&mine[i]))
            f->bad = 1;
        ftm_free(mine[i].p);
    }
    free(mine);
    return NULL;
}

Test(threads, free_after_owner_exit_and_adoption)
{
    ftm_stats_t base, mid, end;
    ftm_collect(true);
    ftm_stats_get(&base);

    pthread_t t;
    void *res;
    cr_assert_eq(pthread_create(&t, NULL, orphan_maker, (void *)(uintptr_t)77), 0);
    pthread_join(t, &res);
    cr_assert_null(res, "orphan maker: allocation failed");

    ftm_stats_get(&mid);
    cr_assert_eq(mid.threads, base.threads, "thread heaps in use %llu -> %llu after the owner exited", base.threads,
                 mid.threads);
    cr_assert_gt(mid.live_count, base.live_count, "the orphans are not counted live after their owner exited");

    /* The orphans survived their owner's exit intact. */
    for (size_t i = 0; i < ORPHAN_N; i++)
        if (g_orphans[i].p)
            cr_assert(item_ok(&g_orphans[i]), "orphan #%zu (%zu B) corrupted after its owner exited", i,
                      g_orphans[i].n);

    /* Free the first third from another thread and the second third here. */
    range_t r1 = {0, ORPHAN_N / 3, 0}, r2 = {ORPHAN_N / 3, 2 * ORPHAN_N / 3, 0};
    cr_assert_eq(pthread_create(&t, NULL, free_range, &r1), 0);
    pthread_join(t, NULL);
    free_range(&r2);
    cr_assert_eq(r1.bad + r2.bad, 0, "orphans corrupted before being freed");

    /* Newcomers allocate while the last third is still live. */
    pthread_t f[2];
    fresh_arg_t fa[2] = {{0, 5}, {0, 6}};
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&f[i], NULL, fresh_allocator, &fa[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(f[i], NULL);
    cr_assert_eq(fa[0].bad + fa[1].bad, 0, "a newcomer's blocks were corrupted (overlap with adopted pools?)");
    for (size_t i = 2 * ORPHAN_N / 3; i < ORPHAN_N; i++)
        if (g_orphans[i].p)
            cr_assert(item_ok(&g_orphans[i]), "live orphan #%zu corrupted by newcomers' allocations", i);

    /* Free the rest from yet another thread, after its owner is long gone. */
    range_t r3 = {2 * ORPHAN_N / 3, ORPHAN_N, 0};
    cr_assert_eq(pthread_create(&t, NULL, free_range, &r3), 0);
    pthread_join(t, NULL);
    cr_assert_eq(r3.bad, 0);

    ftm_collect(true);
    ftm_stats_get(&end);
    cr_assert_eq(end.live_count, base.live_count, "live_count %llu, baseline %llu: orphans not accounted as freed",
                 end.live_count, base.live_count);
    cr_assert_eq(end.malloc_count - end.free_count, end.live_count);
    cr_assert_leq(end.abandoned_pools, base.abandoned_pools,
                  "%llu abandoned pools remain after everything was freed and ftm_collect(true)", end.abandoned_pools);
    cr_assert_eq(end.threads, base.threads);
    cr_assert_eq(end.large_count, base.large_count, "large blocks of an exited thread still counted live");
}

/* ---- Many short-lived threads ---------------------------------------------- */

enum { SHORT_BLOCKS = 1500 };
static void *g_short[SHORT_BLOCKS];

static void *short_lived(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg;
    for (int i = 0; i < SHORT_BLOCKS; i++) {
        size_t n = 16 + ftt_rand(&rng) % 500;
        g_short[i] = ftm_malloc(n);
        if (!g_short[i])
            return (void *)1;
        memset(g_short[i], (int)(i & 0xff), 16);
    }
    for (int i = 0; i < SHORT_BLOCKS; i += 2)
        ftm_free(g_short[i]);
    return NULL;
}

Test(threads, many_short_lived_threads_do_not_grow_memory)
{
    ftm_stats_t base, s;
    size_t committed_early = 0;
    ftm_stats_get(&base);
    for (int round = 0; round < 160; round++) {
        pthread_t t;
        void *res;
        cr_assert_eq(pthread_create(&t, NULL, short_lived, (void *)(uintptr_t)(round + 1)), 0);
        pthread_join(t, &res);
        cr_assert_null(res);
        for (int i = 1; i < SHORT_BLOCKS; i += 2) {
            cr_assert_eq(((unsigned char *)g_short[i])[15], (unsigned char)(i & 0xff),
                         "round %d: block %d of an exited thread corrupted", round, i);
            ftm_free(g_short[i]);
        }
        if (round == 19) {
            ftm_collect(true);
            ftm_stats_get(&s);
            committed_early = s.committed;
        }
    }
    ftm_collect(true);
    ftm_stats_get(&s);
    cr_assert_eq(s.live_count, base.live_count, "live_count %llu, baseline %llu", s.live_count, base.live_count);
    cr_assert_eq(s.threads, base.threads, "%llu thread heaps in use after all threads exited (baseline %llu)",
                 s.threads, base.threads);
    cr_assert_leq(s.abandoned_pools, base.abandoned_pools, "%llu abandoned pools left", s.abandoned_pools);
    cr_assert_leq(s.committed, committed_early + 8 * MiB,
                  "committed grew from %zu (after 20 threads) to %zu (after 160): exited threads' pools leak",
                  committed_early, s.committed);
}

/* Concurrent allocation of many blocks: no two threads ever get the same
 * address.  Each thread fills its blocks with its id and checks after a
 * barrier that no other thread wrote them. */
enum { RACE_THREADS = 4, RACE_N = 5000 };
static pthread_barrier_t g_barrier;
static void *g_race[RACE_THREADS][RACE_N];

static void *racer(void *arg)
{
    int id = (int)(uintptr_t)arg;
    void *result = NULL;
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < RACE_N; i++) {
            size_t n = 16 + (size_t)(i % 13) * 16;
            g_race[id][i] = ftm_malloc(n);
            if (!g_race[id][i])
                abort();
            memset(g_race[id][i], id + 1, n);
        }
        pthread_barrier_wait(&g_barrier);
        for (int i = 0; i < RACE_N; i++) {
            size_t n = 16 + (size_t)(i % 13) * 16;
            const unsigned char *p = g_race[id][i];
            for (size_t k = 0; k < n; k++)
                if (p[k] != id + 1)
                    result = (void *)2;
        }
        pthread_barrier_wait(&g_barrier);
        /* Free the neighbour's blocks: every free is remote. */
        int other = (id + 1) % RACE_THREADS;
        for (int i = 0; i < RACE_N; i++)
            ftm_free(g_race[other][i]);
        pthread_barrier_wait(&g_barrier);
    }
    return result;
}

Test(threads, concurrent_allocations_never_shared)
{
    pthread_t t[RACE_THREADS];
    pthread_barrier_init(&g_barrier, NULL, RACE_THREADS);
    for (int i = 0; i < RACE_THREADS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, racer, (void *)(uintptr_t)i), 0);
    for (int i = 0; i < RACE_THREADS; i++) {
        void *res;
        pthread_join(t[i], &res);
        cr_assert_null(res, "thread %d: a block was written by another thread (handed out twice)", i);
    }
    pthread_barrier_destroy(&g_barrier);
}
