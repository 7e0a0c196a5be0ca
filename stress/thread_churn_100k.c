/* thread_churn_100k.c — 100,000 short-lived threads, a batch at a time:
 * thread heaps and object thread states are recycled, pools of exited
 * threads adopted, and nothing accumulates (issue 6, "Process life").
 *
 * Threads run in batches of --threads (default 8) started together and
 * joined together.  Each thread:
 *   - allocates a mix through ftm_malloc / ftm_calloc / ftm_realloc /
 *     ftm_aligned_alloc (16 B .. 64 KiB, 1 in 64 a large block up to 1 MiB),
 *     frees most of it, and swaps some blocks (those up to 16 KiB) into a
 *     shared array of slots, freeing what it takes out — blocks of exited
 *     threads, whose pools are abandoned and adopted by later threads;
 *   - creates nodes (one in two holding a reference to another), stores
 *     some in the fields of shared cells (the old value's reference dropped
 *     here: objects owned by exited threads die on later threads), loads
 *     from them, makes a weak reference (half with a callback) and gets
 *     through it, and drops everything else before it exits.
 * After every --sample threads (10,000; 500 in smoke runs), with no
 * worker alive, the main thread samples RSS (/proc/self/statm), ftm_stats
 * and ftm_object_stats, and checks:
 *   - ftm_object_stats threads == the baseline (the main thread's: 1) and
 *     ftm_stats threads (heaps) <= the baseline: every exited thread's state
 *     and heap went back;
 *   - live blocks beyond the baseline = blocks in the slots + live nodes +
 *     a small constant overhead (the weak reference side table): this
 *     overhead may not grow over the last 8 samples by more than 64 blocks;
 * and once the last 8 samples exist (the first two are warm-up, in a full
 * run the first 20,000 threads):
 *   - RSS: max - min over the last 8 samples < 2 MiB plus 64 KiB for each
 *     abandoned pool in the spread of their count over those samples
 *     (pools of exited threads wait resident until a later thread adopts
 *     them; not under sanitizers: their shadow memory and thread
 *     bookkeeping are their own);
 *   - mapped address space: max - min over the last 8 samples <= 12 MiB
 *     (three arenas; arenas are never unmapped, so this is the growth of a
 *     high-water mark: a rare peak of concurrent large blocks may add one).
 * RSS is sampled after ftm_collect(true) (what is still resident once idle
 * memory is returned; the figure before it is printed too: it includes up
 * to a purge delay's worth of freed memory).
 * At the end: the slots and cells are emptied and the object leak check of
 * obj_util.h runs (created == freed, live_count back to the baseline, no
 * thread state but main's, abandoned pools only those holding the side
 * table's blocks).
 *
 * Size: 100,000 threads by default (the stress_full test: release CI, well
 * under a minute on 2 cores), 5,000 with --smoke.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "obj_util.h"

#define NF 4
#define NSLOTS 512
#define LOCAL 24
#define MAX_DEPTH 16
#define WINDOW 8 /* samples the flatness bounds look at */

typedef struct node_s {
    ftm_object ob;
    obj_stamp_t st;
    ftm_field next;
    uint32_t depth;
    uint32_t pad;
} node_t;

typedef struct cell_s {
    ftm_object ob;
    obj_stamp_t st;
    ftm_field f[NF];
} cell_t;

static stress_opts_t opt = { .name = "thread_churn_100k" };
static _Atomic(stress_hdr_t *) slots[NSLOTS];
static cell_t **cells;
static int ncells;
static _Atomic unsigned long long n_alloc, n_free, n_nodes, n_wr, n_cb, n_remote;

static int node_traverse(ftm_object *self, ftm_visitproc visit, void *arg)
{
    ftm_object *n = ftm_field_peek(&((node_t *)self)->next);
    return n ? visit(n, arg) : 0;
}
static void node_clear(ftm_object *self)
{
    ftm_field_clear(&((node_t *)self)->next);
}
static void node_dealloc(ftm_object *self)
{
    obj_stamp_kill(&((node_t *)self)->st, "node dealloc");
}
static ftm_type node_type = {
    .name = "churn_node",
    .basic_size = sizeof(node_t),
    .flags = FTM_TYPE_FREELIST,
    .traverse = node_traverse,
    .clear = node_clear,
    .dealloc = node_dealloc,
};

static int cell_traverse(ftm_object *self, ftm_visitproc visit, void *arg)
{
    cell_t *c = (cell_t *)self;
    for (int i = 0; i < NF; i++) {
        ftm_object *o = ftm_field_peek(&c->f[i]);
        int r = o ? visit(o, arg) : 0;
        if (r)
            return r;
    }
    return 0;
}
static void cell_clear(ftm_object *self)
{
    cell_t *c = (cell_t *)self;
    for (int i = 0; i < NF; i++)
        ftm_field_clear(&c->f[i]);
}
static void cell_dealloc(ftm_object *self)
{
    obj_stamp_kill(&((cell_t *)self)->st, "cell dealloc");
}
static ftm_type cell_type = {
    .name = "churn_cell",
    .basic_size = sizeof(cell_t),
    .flags = FTM_TYPE_GC,
    .traverse = cell_traverse,
    .clear = cell_clear,
    .dealloc = cell_dealloc,
};

static void node_check(ftm_object *p, const char *what)
{
    if (ftm_type_of(p) != &node_type)
        stress_fail("%s: object %p has type %p, not the node type", what, (void *)p,
                    (const void *)ftm_type_of(p));
    obj_stamp_check(&((node_t *)p)->st, what);
}

static ftm_object *node_new(ftm_object *next)
{
    node_t *v = (node_t *)ftm_new(&node_type);
    if (v == NULL)
        stress_fail("ftm_new(node): %s", strerror(errno));
    obj_stamp_init(&v->st);
    if (next != NULL) {
        v->depth = ((node_t *)next)->depth + 1;
        ftm_field_init(&v->next, next);
    }
    return &v->ob;
}

static void wr_callback(ftm_weakref *wr, void *arg)
{
    (void)wr;
    (void)arg;
    atomic_fetch_add_explicit(&n_cb, 1, memory_order_relaxed);
}

static size_t block_size(stress_rng_t *r)
{
    if (stress_one_in(r, 64))
        return stress_size(r, STRESS_LARGE_MIN + 1, STRESS_MIB);
    if (stress_one_in(r, 8))
        return stress_size(r, 1024, 64 * STRESS_KIB);
    return stress_size(r, sizeof(stress_hdr_t), 1024);
}

/* A block with the header and pattern of stress_hblock, made through one
 * of the allocation entry points. */
static stress_hdr_t *block_new(stress_rng_t *r, uint64_t id)
{
    size_t size = block_size(r);
    unsigned how = (unsigned)stress_below(r, 4);
    if (how == 0)
        return stress_hblock_new(id, size);
    stress_hdr_t *h;
    if (how == 1) {
        h = ftm_calloc(1, size);
        if (h == NULL)
            stress_fail("ftm_calloc(1, %zu): %s", size, strerror(errno));
        if (stress_check_zero(h, size) != SIZE_MAX)
            stress_fail("ftm_calloc(1, %zu): not zeroed", size);
    } else if (how == 2) {
        size_t align = (size_t)64 << stress_below(r, 6); /* 64 .. 2048 */
        h = ftm_aligned_alloc(align, size);
        if (h == NULL)
            stress_fail("ftm_aligned_alloc(%zu, %zu): %s", align, size, strerror(errno));
        stress_check_block(h, size, align, "ftm_aligned_alloc");
    } else {
        /* grown by realloc from a small block */
        h = ftm_malloc(sizeof(stress_hdr_t));
        if (h == NULL)
            stress_fail("ftm_malloc(16): %s", strerror(errno));
        h = ftm_realloc(h, size);
        if (h == NULL)
            stress_fail("ftm_realloc(16 -> %zu): %s", size, strerror(errno));
    }
    stress_check_block(h, size, 0, "block");
    h->id = id;
    h->size = size;
    stress_fill(h, sizeof *h, size, stress_key3(opt.seed, id, size));
    return h;
}

static void *churn_main(void *arg)
{
    uint64_t serial = (uint64_t)(uintptr_t)arg;
    stress_rng_t r = stress_rng(opt.seed, serial);
    uint64_t next_id = (serial + 1) << 24;
    unsigned long long allocs = 0, frees = 0, remote = 0, nodes = 0, wrs = 0;

    /* allocations: a local set, most freed here, some handed on */
    stress_hdr_t *local[LOCAL];
    int nlocal = 0;
    for (int op = 0; op < 40; op++) {
        unsigned what = (unsigned)stress_below(&r, 10);
        if (what < 5 && nlocal < LOCAL) {
            local[nlocal++] = block_new(&r, next_id++);
            allocs++;
        } else if (what < 8 && nlocal > 0) {
            int k = (int)stress_below(&r, (uint64_t)nlocal);
            stress_hblock_free(local[k], "local block");
            local[k] = local[--nlocal];
            frees++;
        } else {
            /* hand on a block of at most 16 KiB: what the slots hold stays
             * small next to the RSS bound, so its random makeup does not
             * show as a trend */
            stress_hdr_t *nb = NULL;
            for (int k = nlocal - 1; k >= 0 && nb == NULL; k--)
                if (local[k]->size <= 16 * STRESS_KIB) {
                    nb = local[k];
                    local[k] = local[--nlocal];
                }
            /* acq_rel: publishes nb's contents, acquires the old block's */
            stress_hdr_t *old = atomic_exchange_explicit(&slots[stress_below(&r, NSLOTS)], nb,
                                                         memory_order_acq_rel);
            if (old != NULL) {
                stress_hblock_free(old, "slot block (of an earlier thread)");
                frees++;
                remote++;
            }
        }
    }
    for (int k = 0; k < nlocal; k++) {
        stress_hblock_free(local[k], "local block at exit");
        frees++;
    }

    /* objects */
    ftm_object *held[8];
    int nheld = 0;
    for (int i = 0; i < 8; i++) {
        ftm_object *next = NULL;
        if (nheld > 0 && stress_one_in(&r, 2)) {
            next = held[stress_below(&r, (uint64_t)nheld)];
            if (((node_t *)next)->depth < MAX_DEPTH)
                ftm_incref(next);
            else
                next = NULL;
        }
        held[nheld++] = node_new(next);
        nodes++;
    }
    ftm_weakref *w = NULL;
    if (stress_one_in(&r, 2)) {
        w = ftm_weakref_new(held[0], stress_one_in(&r, 2) ? wr_callback : NULL, NULL);
        if (w == NULL)
            stress_fail("ftm_weakref_new: %s", strerror(errno));
        wrs++;
    }
    for (int i = 0; i < 3; i++) {
        cell_t *c = cells[stress_below(&r, (uint64_t)ncells)];
        ftm_field *f = &c->f[stress_below(&r, NF)];
        if (stress_one_in(&r, 2)) {
            ftm_object *v = ftm_field_load(f);
            if (v != NULL) {
                node_check(v, "ftm_field_load");
                ftm_decref(v);
            }
        }
        /* a new reference to one of ours in; the old value (most likely
         * made by an exited thread) dropped here */
        ftm_object *old = ftm_field_exchange(f, ftm_newref(held[stress_below(&r, (uint64_t)nheld)]));
        if (old != NULL) {
            node_check(old, "ftm_field_exchange (old value)");
            ftm_decref(old);
        }
    }
    if (w != NULL) {
        ftm_object *o = ftm_weakref_get(w);
        if (o != held[0])
            stress_fail("weakref get: %p, expected the node it refers to (%p), held", (void *)o,
                        (void *)held[0]);
        ftm_decref(o);
    }
    for (int i = 0; i < nheld; i++)
        ftm_decref(held[i]);
    if (w != NULL)
        ftm_weakref_release(w);

    atomic_fetch_add_explicit(&n_alloc, allocs, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_free, frees, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_remote, remote, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_nodes, nodes, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_wr, wrs, memory_order_relaxed);
    return NULL;
}

static unsigned long long count_slots(void)
{
    unsigned long long n = 0;
    for (int i = 0; i < NSLOTS; i++)
        if (atomic_load_explicit(&slots[i], memory_order_acquire) != NULL)
            n++;
    return n;
}

/* Registry entries ALIVE (nodes and cells). */
static unsigned long long count_alive(void)
{
    uint64_t n = obj_ids_used();
    unsigned long long alive = 0;
    for (uint64_t i = 0; i < n; i++)
        alive += obj_state(i) == OBJ_ALIVE;
    return alive;
}

typedef struct sample_s {
    unsigned long long threads;
    size_t rss_raw; /* as found */
    size_t rss;     /* after ftm_collect(true) */
    size_t mapped, committed;
    long long overhead; /* live blocks not accounted for by slots and live objects */
    unsigned long long abandoned;
    double t;
} sample_t;

static double mib(size_t b)
{
    return (double)b / (double)STRESS_MIB;
}

int main(int argc, char **argv)
{
    stress_parse(&opt, argc, argv, 8, NULL);
    unsigned long long total = opt.smoke ? 5000 : 100000;
    unsigned long long every = opt.smoke ? 500 : 10000;
    int batch = opt.threads;
    ncells = 64;
    /* 8 nodes per thread, the cells, the warm-up */
    obj_registry_init(opt.seed, total * 8 + (uint64_t)ncells + 64);
    cells = calloc((size_t)ncells, sizeof *cells);
    pthread_t *th = calloc((size_t)batch, sizeof *th);
    int nsamples = (int)(total / every);
    sample_t *smp = calloc((size_t)nsamples + 1, sizeof *smp);
    if (cells == NULL || th == NULL || smp == NULL)
        stress_fail("out of memory for the harness");
    for (int i = 0; i < NSLOTS; i++)
        atomic_init(&slots[i], NULL);

    /* warm-up: the main thread's heap and state, the weakref side table */
    {
        ftm_object *p = node_new(NULL);
        ftm_weakref *w = ftm_weakref_new(p, NULL, NULL);
        if (w == NULL)
            stress_fail("warm-up: ftm_weakref_new: %s", strerror(errno));
        ftm_weakref_release(w);
        ftm_decref(p);
    }
    obj_base_t base;
    obj_baseline(&base);
    if (base.obj.threads != 1)
        stress_fail("baseline: %llu thread states registered, expected the main thread's only",
                    (unsigned long long)base.obj.threads);
    for (int i = 0; i < ncells; i++) {
        cell_t *c = (cell_t *)ftm_new(&cell_type);
        if (c == NULL)
            stress_fail("ftm_new(cell): %s", strerror(errno));
        obj_stamp_init(&c->st);
        cells[i] = c;
    }
    size_t rss0 = stress_rss();
    double t0 = stress_now();

    unsigned long long started = 0, next_sample = every;
    int ns = 0;
    ftm_thread_detach(); /* only joins from here: a blocked thread must not delay merges */
    while (started < total) {
        int n = (int)((total - started) < (unsigned long long)batch ? total - started
                                                                     : (unsigned long long)batch);
        for (int i = 0; i < n; i++)
            stress_thread_start(&th[i], churn_main, (void *)(uintptr_t)(started + (unsigned)i));
        for (int i = 0; i < n; i++)
            stress_thread_join(th[i]);
        started += (unsigned long long)n;
        if (started < next_sample && started < total)
            continue;
        next_sample += every;

        ftm_thread_attach();
        ftm_thread_flush(); /* queued merges and grace periods of the main thread */
        ftm_object_stats_t os;
        ftm_object_stats_get(&os);
        sample_t *x = &smp[ns++];
        x->threads = started;
        x->rss_raw = stress_rss();
        ftm_collect(true); /* idle memory back to the OS now, not after the purge delay */
        x->rss = stress_rss();
        ftm_stats_t s;
        stress_stats(&s);
        x->mapped = s.mapped;
        x->committed = s.committed;
        x->abandoned = s.abandoned_pools;
        x->t = stress_now() - t0;
        unsigned long long in_slots = count_slots(), alive = count_alive();
        x->overhead = (long long)(s.live_count - base.mem.live_count) - (long long)in_slots -
                      (long long)alive;
        ftm_thread_detach();
        if (os.threads != base.obj.threads)
            stress_fail("after %llu threads (all joined): %llu thread states registered, %llu at "
                        "the baseline",
                        started, (unsigned long long)os.threads,
                        (unsigned long long)base.obj.threads);
        if (s.threads > base.mem.threads)
            stress_fail("after %llu threads (all joined): %llu thread heaps in use, %llu at the "
                        "baseline",
                        started, s.threads, base.mem.threads);
        printf("%s: %7llu threads  %6.2f s  RSS %6.2f MiB (%6.2f before collect)  mapped %6.1f MiB  committed %6.1f "
               "MiB  live %llu (slots %llu, objects %llu, other %lld)  abandoned pools %llu\n",
               opt.name, started, x->t, mib(x->rss), mib(x->rss_raw), mib(x->mapped), mib(x->committed),
               s.live_count - base.mem.live_count, in_slots, alive, x->overhead, x->abandoned);
        fflush(stdout);
        if (ns >= WINDOW + 2) { /* the first two samples are warm-up (see the top) */
            sample_t *w0 = &smp[ns - WINDOW];
            size_t rmin = SIZE_MAX, rmax = 0, mmin = SIZE_MAX, mmax = 0;
            long long omin = x->overhead, omax = x->overhead;
            unsigned long long amin = x->abandoned, amax = x->abandoned;
            for (sample_t *y = w0; y <= x; y++) {
                amin = y->abandoned < amin ? y->abandoned : amin;
                amax = y->abandoned > amax ? y->abandoned : amax;
                rmin = y->rss < rmin ? y->rss : rmin;
                rmax = y->rss > rmax ? y->rss : rmax;
                mmin = y->mapped < mmin ? y->mapped : mmin;
                mmax = y->mapped > mmax ? y->mapped : mmax;
                omin = y->overhead < omin ? y->overhead : omin;
                omax = y->overhead > omax ? y->overhead : omax;
            }
            /* pools of exited threads waiting to be adopted stay resident
             * (at least one 64 KiB slice each); how many there are at a
             * sample depends on scheduling, so their spread is allowed */
            size_t rbound = 2 * STRESS_MIB + (size_t)(amax - amin) * 64 * 1024;
            if (!STRESS_SANITIZED && rmax - rmin >= rbound)
                stress_fail("RSS not flat: %.2f .. %.2f MiB over the last %d samples (threads "
                            "%llu .. %llu); bound: a spread under %.2f MiB (2 MiB + the "
                            "abandoned pools' spread, %llu .. %llu, at 64 KiB)",
                            mib(rmin), mib(rmax), WINDOW, w0->threads, x->threads, mib(rbound), amin, amax);
            if (mmax - mmin > 12 * STRESS_MIB)
                stress_fail("mapped address space grows: %.1f .. %.1f MiB over the last %d "
                            "samples (threads %llu .. %llu); bound: 12 MiB",
                            mib(mmin), mib(mmax), WINDOW, w0->threads, x->threads);
            if (omax - omin > 64)
                stress_fail("live blocks beyond the slots' and the live objects' grow: %lld .. "
                            "%lld over the last %d samples (threads %llu .. %llu); bound: 64",
                            omin, omax, WINDOW, w0->threads, x->threads);
        }
    }
    ftm_thread_attach();
    double t_run = stress_now() - t0;

    /* everything left goes */
    unsigned long long left = 0;
    for (int i = 0; i < NSLOTS; i++) {
        stress_hdr_t *h = atomic_exchange_explicit(&slots[i], NULL, memory_order_acq_rel);
        if (h != NULL) {
            stress_hblock_free(h, "block left by an exited thread");
            left++;
        }
    }
    unsigned long long allocs = atomic_load(&n_alloc), frees = atomic_load(&n_free) + left;
    if (allocs != frees)
        stress_fail("harness: %llu blocks allocated, %llu freed", allocs, frees);
    for (int i = 0; i < ncells; i++)
        ftm_decref(&cells[i]->ob);
    ftm_thread_flush();
    obj_registry_expect_all_freed(0, "after the last thread and the cells");
    /* the weakref side table's stripes grow on workers (obj_weakref_race) */
    obj_leak_check(&base, 0, 64, OBJ_SLICE_SLACK + 64 * 8, "at the end");

    size_t rmin = SIZE_MAX, rmax = 0;
    for (int i = ns >= WINDOW ? ns - WINDOW : 0; i < ns; i++) {
        rmin = smp[i].rss < rmin ? smp[i].rss : rmin;
        rmax = smp[i].rss > rmax ? smp[i].rss : rmax;
    }
    stress_note("OK: %llu threads in batches of %d, %.2f s (%.1f us a thread); %llu blocks (%llu "
                "freed by a later thread), %llu nodes, %llu weakrefs (%llu callbacks); RSS %.1f "
                "MiB at the start, %.2f .. %.2f MiB over the last %d samples (spread %.2f MiB)%s",
                total, batch, t_run, t_run * 1e6 / (double)total, allocs, atomic_load(&n_remote),
                atomic_load(&n_nodes), atomic_load(&n_wr), atomic_load(&n_cb), mib(rss0),
                mib(rmin), mib(rmax), ns < WINDOW ? ns : WINDOW, mib(rmax - rmin),
                STRESS_SANITIZED ? " (RSS not checked under sanitizers)" : "");
    free(cells);
    free(th);
    free(smp);
    return 0;
}
