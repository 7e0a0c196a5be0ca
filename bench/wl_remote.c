/* wl_remote.c — workloads where blocks cross threads.
 *
 *   xthread       producer/consumer pairs: thread 2k only mallocs, thread
 *                 2k+1 only frees, blocks passing through an SPSC ring
 *                 (Concurrency Kit ck_ring).  Every free is remote and the
 *                 consumer never allocates, so an allocator cannot recycle
 *                 remotely freed blocks in the consumer's own cache.
 *   thread-churn  generations of T short-lived threads; each mallocs and
 *                 frees 1000 blocks and leaves 10% for the next generation,
 *                 whose thread frees them after their owner has exited.
 */
#include "common.h"

#include <ck_ring.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- xthread ----------------------------------------------------------- */

#define XT_RING 1024  /* slots per ring (power of two; capacity RING - 1) */

typedef struct xt_ring_s {
    ck_ring_t ring;
    char pad[64];
    ck_ring_buffer_t *buf;
} xt_ring_t;

typedef struct xt_shared_s {
    xt_ring_t *rings; /* rings[k]: produced by thread 2k, consumed by 2k+1 */
} xt_shared_t;

/* The tag's low 16 bits carry the block size, so the consumer can check the
 * tail word of a block it knows nothing else about. */
static inline uint64_t xt_tag(uint64_t x, size_t size)
{
    return (x & ~(uint64_t)0xffff) | (uint64_t)size;
}

static inline int xt_consume(void *p, uint64_t *sum)
{
    uint64_t tag;
    memcpy(&tag, p, sizeof tag);
    size_t size = (size_t)(tag & 0xffff);
    int bad = size < 16 || size > 512 || bench_tag_bad(p, size, tag);
    *sum += tag;
    free(p);
    return bad;
}

/* Spin politely; after a while yield, so that on a busy (or 2-core) machine
 * a waiting thread gives its core to the one it waits for. */
static inline void xt_pause(unsigned *spins)
{
    if (++*spins < 256) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else {
        *spins = 0;
        sched_yield();
    }
}

/* Producer: malloc 16–512 B, tag, enqueue; spins while the ring is full. */
static void xt_produce(bench_worker_t *w, xt_ring_t *out)
{
    bench_rng_t r;
    bench_rng_init(&r, w->o->seed, (uint64_t)w->id + 300);
    uint64_t produced = 0, limit = w->o->ops;
    while (!bench_should_stop(produced, limit)) {
        uint64_t x = bench_rng_next(&r);
        size_t size = 16 + (size_t)((x >> 32) % 497); /* 16..512 */
        void *p = malloc(size);
        if (bench_unlikely(!p)) {
            fprintf(stderr, "ftm-bench: malloc(%zu) returned NULL\n", size);
            exit(2);
        }
        bench_tag_write(p, size, xt_tag(x, size));
        unsigned spins = 0;
        while (!ck_ring_enqueue_spsc(&out->ring, out->buf, p)) {
            if (!limit && atomic_load_explicit(&bench_stop, memory_order_relaxed)) {
                free(p); /* never handed over: freed by its own thread */
                goto out;
            }
            xt_pause(&spins);
        }
        produced++;
    }
out:
    w->t_end = bench_now();
    w->extra = produced;
}

/* Consumer: dequeue, check, free (a remote free); spins while empty. */
static void xt_consume_loop(bench_worker_t *w, xt_ring_t *in)
{
    uint64_t consumed = 0, sum = 0, errors = 0, limit = w->o->ops;
    unsigned spins = 0;
    while (!bench_should_stop(consumed, limit)) {
        void *p;
        if (!ck_ring_dequeue_spsc(&in->ring, in->buf, &p)) {
            xt_pause(&spins);
            continue;
        }
        spins = 0;
        errors += (uint64_t)xt_consume(p, &sum);
        consumed++;
    }
    w->t_end = bench_now();
    w->ops = consumed;
    w->sum = sum;
    w->errors = errors;
}

static void *xt_worker(void *arg)
{
    bench_worker_t *w = arg;
    xt_shared_t *sh = w->shared;
    xt_ring_t *ring = &sh->rings[w->id / 2];
    bench_worker_started(w);
    if (w->id % 2 == 0)
        xt_produce(w, ring);
    else
        xt_consume_loop(w, ring);
    return NULL;
}

int wl_xthread(const bench_opts_t *o)
{
    if (o->threads < 2 || o->threads % 2) {
        fprintf(stderr, "ftm-bench: xthread needs an even number of threads (producer/consumer pairs)\n");
        return 2;
    }
    int pairs = o->threads / 2;
    xt_shared_t sh;
    sh.rings = calloc((size_t)pairs, sizeof *sh.rings);
    for (int i = 0; i < pairs; i++) {
        ck_ring_init(&sh.rings[i].ring, XT_RING);
        sh.rings[i].buf = calloc(XT_RING, sizeof(ck_ring_buffer_t));
    }
    bench_worker_t *w = calloc((size_t)o->threads, sizeof *w);
    bench_result_t res;
    bench_result_init(&res, "xthread", o->threads, "remote free");
    res.seconds = bench_run_workers(o, xt_worker, &sh, w);
    bench_result_sum_workers(&res, w, o->threads);
    /* Blocks still in flight are freed here, off the clock (by a third
     * thread, which is one more remote free for the allocator). */
    uint64_t leftover = 0;
    for (int i = 0; i < pairs; i++) {
        void *p;
        while (ck_ring_dequeue_spsc(&sh.rings[i].ring, sh.rings[i].buf, &p)) {
            res.errors += (uint64_t)xt_consume(p, &res.checksum);
            leftover++;
        }
        free(sh.rings[i].buf);
    }
    bench_result_add(&res, "in_flight_at_stop", (double)leftover);
    bench_result_print(&res);
    free(sh.rings);
    free(w);
    return res.errors ? 3 : 0;
}

/* ---- thread-churn ------------------------------------------------------ */

#define TC_BLOCKS 1000
#define TC_KEEP 100 /* left to the next generation */

typedef struct tc_slot_s {
    void *p[TC_KEEP];
    size_t size[TC_KEEP];
    uint64_t tag[TC_KEEP];
    int n;
} tc_slot_t;

typedef struct tc_arg_s {
    tc_slot_t *slot;  /* handoff with the same index of the previous generation */
    uint64_t seed;
    uint64_t sum;
    uint64_t errors;
} tc_arg_t;

static void *tc_thread(void *arg)
{
    tc_arg_t *a = arg;
    tc_slot_t *s = a->slot;
    /* Free what the previous generation left: its threads have exited. */
    for (int i = 0; i < s->n; i++) {
        a->errors += (uint64_t)bench_tag_bad(s->p[i], s->size[i], s->tag[i]);
        a->sum += s->tag[i];
        free(s->p[i]);
    }
    s->n = 0;

    bench_rng_t r;
    bench_rng_init(&r, a->seed, 0);
    void *p[TC_BLOCKS];
    size_t size[TC_BLOCKS];
    uint64_t tag[TC_BLOCKS];
    for (int i = 0; i < TC_BLOCKS; i++) {
        tag[i] = bench_rng_next(&r);
        size[i] = 16 + (size_t)((tag[i] >> 32) % 1009); /* 16..1024 */
        p[i] = malloc(size[i]);
        if (bench_unlikely(!p[i])) {
            fprintf(stderr, "ftm-bench: malloc(%zu) returned NULL\n", size[i]);
            exit(2);
        }
        bench_tag_write(p[i], size[i], tag[i]);
    }
    /* Free in random order (Fisher–Yates), the last TC_KEEP survive. */
    for (int i = TC_BLOCKS - 1; i > 0; i--) {
        int j = (int)(bench_rng_next(&r) % (uint64_t)(i + 1));
        void *tp = p[i]; p[i] = p[j]; p[j] = tp;
        size_t ts = size[i]; size[i] = size[j]; size[j] = ts;
        uint64_t tt = tag[i]; tag[i] = tag[j]; tag[j] = tt;
    }
    for (int i = 0; i < TC_BLOCKS - TC_KEEP; i++) {
        a->errors += (uint64_t)bench_tag_bad(p[i], size[i], tag[i]);
        a->sum += tag[i];
        free(p[i]);
    }
    for (int i = 0; i < TC_KEEP; i++) {
        s->p[i] = p[TC_BLOCKS - TC_KEEP + i];
        s->size[i] = size[TC_BLOCKS - TC_KEEP + i];
        s->tag[i] = tag[TC_BLOCKS - TC_KEEP + i];
    }
    s->n = TC_KEEP;
    return NULL;
}

int wl_thread_churn(const bench_opts_t *o)
{
    int n = o->threads;
    tc_slot_t *slots = calloc((size_t)n, sizeof *slots);
    tc_arg_t *args = calloc((size_t)n, sizeof *args);
    pthread_t *tid = calloc((size_t)n, sizeof *tid);
    bench_result_t res;
    bench_result_init(&res, "thread-churn", n, "malloc+free");

    uint64_t gens = 0, limit = o->ops; /* -n: generations */
    double t0 = bench_now(), deadline = t0 + (double)o->duration_ms / 1000.0;
    for (;;) {
        for (int i = 0; i < n; i++) {
            args[i].slot = &slots[i];
            args[i].seed = bench_mix64(o->seed + gens * 1024 + (uint64_t)i);
            if (pthread_create(&tid[i], NULL, tc_thread, &args[i]) != 0) {
                fprintf(stderr, "ftm-bench: pthread_create failed\n");
                return 2;
            }
        }
        for (int i = 0; i < n; i++)
            pthread_join(tid[i], NULL);
        gens++;
        if (limit ? gens >= limit : bench_now() >= deadline)
            break;
    }
    res.seconds = bench_now() - t0;
    for (int i = 0; i < n; i++) {
        res.checksum += args[i].sum;
        res.errors += args[i].errors;
        for (int k = 0; k < slots[i].n; k++) {
            res.errors += (uint64_t)bench_tag_bad(slots[i].p[k], slots[i].size[k], slots[i].tag[k]);
            free(slots[i].p[k]);
        }
    }
    res.ops = gens * (uint64_t)n * TC_BLOCKS;
    bench_result_add(&res, "threads_created", (double)(gens * (uint64_t)n));
    bench_result_add(&res, "threads_per_s", (double)(gens * (uint64_t)n) / res.seconds);
    bench_result_print(&res);
    free(slots);
    free(args);
    free(tid);
    return res.errors ? 3 : 0;
}
