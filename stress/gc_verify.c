/* gc_verify.c — the concurrent cycle collector (gc.h) against mutators that
 * keep changing a graph full of cycles: every object a thread can still
 * reach must be intact, and at quiescence no garbage may be left.
 *
 * The graph: nodes (FTM_TYPE_GC) with K ftm_field edges and a field that
 * may hold a weak reference object; a global array of root slots (plain
 * ftm_field, outside every object) and, in the finalizer phase, slots that
 * finalizers resurrect nodes into.  Every node carries the obj_util.h stamp
 * (serial id, canary keyed by (seed, id), registry entry ALIVE -> FREED)
 * and a tail (~canary); clear marks the node `cleared`, dealloc poisons it.
 *
 * Mutators: --threads slots, each running `gens` threads one after the
 * other (a thread does a random number of operations, starts its
 * successor and exits, leaving its young objects to the collector), doing
 * at random:
 *   - loads of roots and walks along edges (ftm_field_load), each node
 *     checked, some kept in a stash across later operations;
 *   - stores and exchanges into roots and edges (self loops, edges between
 *     nodes of different threads, stashed nodes, NULL), drops;
 *   - new nodes, rings of 2..8 new nodes with cross edges and edges to old
 *     nodes, dropped at once (cyclic garbage) or published;
 *   - weak references: held by nodes (set at creation, checked through
 *     the node: a get gives the node's recorded referent or NULL) and
 *     private ones (new, get, release), half with callbacks;
 *   - untrack / track of a new node (edges stored while untracked, then
 *     published), ftm_gc_get_referents, read-only loops with
 *     ftm_safepoint, detach / sleep / attach holding the stash.
 * A collector thread meanwhile runs ftm_gc_collect(gen) back to back
 * (mixed generations, out-of-range ones too), now and then
 * ftm_gc_get_objects (every object listed must be intact), freeze /
 * unfreeze and detached pauses; workers crossing threshold0 run automatic
 * collections (FTMEM_GC_THREADS=1 in the environment moves those to the
 * library's background collector threads).
 *
 * Two phases, each ended by a quiescent check:
 *   1 "plain": nodes without finalizers.  A weak reference callback marks
 *     its referent dead, and no thread may hold a node marked dead.
 *   2 "finalizers": half the nodes have a finalizer (PEP 442) that checks
 *     the node and its edges (none cleared yet), now and then allocates a
 *     node, asks for a collection (inside a collection: must return 0),
 *     and resurrects one node in four into a resurrection slot (workers
 *     load, walk and drop those).  The graph grows larger here, so the
 *     phase does half the operations.
 *
 * Checks:
 *   - every node loaded, walked to, exchanged out, stashed, returned by a
 *     weakref get, ftm_gc_get_referents or ftm_gc_get_objects: node type,
 *     canary, tail, registry ALIVE, not cleared (phase 1: no weakref
 *     callback for it ran); a weakref get returns the recorded referent,
 *     and a get of a new weak reference to a node we hold returns it;
 *   - a finalizer runs at most once per node, on an intact, uncleared node
 *     whose edges are intact; a weakref callback runs at most once, with
 *     get already returning NULL; dealloc finds its edges cleared;
 *   - gc callbacks: start/stop paired on the collecting thread, no nested
 *     collection, info sane (generation, collected <= candidates, nothing
 *     uncollectable, pause <= duration);
 *   - the collector thread's ftm_gc_collect: -1 only with EAGAIN (counted,
 *     printed); at least one collection must complete; ftm_gc_get_stats
 *     never goes back;
 *   - at the end of each phase, every thread joined: with resurrection
 *     off, a full collection; then the nodes alive are exactly those
 *     reachable from the roots (every unreachable cycle gone, nothing
 *     reachable lost), all tracked, finalizer nodes finalized iff their
 *     finalizer ran, the objects alive exactly those nodes and their
 *     weakrefs; the collection's return value is the garbage it freed.
 *     Then every root is dropped and one full collection must free every
 *     object (created == dealloced, registry all FREED), returning as many;
 *     the leak check (obj_util.h's, allowing the collector's recycled cell
 *     chunks: see leak_check);
 *   - collector statistics: per generation, the callbacks' stops ==
 *     completed + abandoned collections and their collected == the stats';
 *     the collector thread's completed, found and EAGAINs within the
 *     stats; nothing uncollectable, nothing left frozen.
 *
 * Tolerated unless GC_VERIFY_STRICT=1 (counted and printed): a node that
 * ftm_gc_get_objects lists after the collector cleared it (garbage whose
 * memory waits for its owner to drain a queued reference), and, in
 * phase 2, a get of a new weak reference refused because its referent —
 * resurrected, or reachable from a resurrected node — still carries the
 * collector's unreachable bit until the resurrection recheck.
 *
 * Environment: FTMEM_GC_THREADS=N (background collection),
 * FTMEM_GC_HANDSHAKE_MS (1 forces abandoned collections), GC_VERIFY_PHASES
 * (1, 2 or 12), GC_VERIFY_SHARED_TRACK=1 (untrack / track shared nodes
 * too, which other threads may be doing at once), GC_VERIFY_NO_EXCHANGE=1
 * (a diagnostic: take old values with load + store instead of
 * ftm_field_exchange), GC_VERIFY_STRICT=1.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nanosleep, open_memstream (the build defines it too) */
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "obj_util.h"

#define K 4          /* edges per node */
#define NRES 32      /* resurrection slots */
#define STASH 12     /* references a worker holds */
#define PWR 8        /* private weak references a worker holds */
#define RING_MAX 8
#define MAXGEN 64
#define WALK_MAX 32
#define OBJS_CAP (1u << 17) /* ftm_gc_get_objects buffer */

enum { KIND_PLAIN = 1, KIND_FIN = 2 };

typedef struct node_s {
    ftm_object ob;
    obj_stamp_t st;
    uint32_t kind;            /* set before publication */
    _Atomic uint32_t cleared; /* clear ran */
    uint64_t wtarget;         /* id of the weak reference's referent (wref set at creation) */
    ftm_field edge[K];
    ftm_field wref; /* an ftm_weakref object or NULL: set at creation, cleared at death */
    uint64_t tail;  /* ~canary */
} node_t;

typedef struct wrec_s { /* a weak reference, for its callback */
    uint64_t target;    /* referent id */
    _Atomic uint32_t cb_runs;
} wrec_t;

typedef struct pwr_s { /* a private weak reference */
    ftm_weakref *wr;
    uint64_t target;
} pwr_t;

typedef struct slot_s {
    pthread_t th[MAXGEN]; /* th[g+1] written by generation g before it exits */
    int slot;
} slot_t;

typedef struct warg_s {
    slot_t *s;
    int gen;
} warg_t;

enum {
    C_LOAD, C_LOAD_HIT, C_HOP, C_STORE, C_XCHG, C_NEW, C_RING, C_RING_GARBAGE, C_DROP,
    C_WR_NEW, C_WR_GET, C_WR_HIT, C_WR_REL, C_NWR_GET, C_NWR_HIT, C_RES_LOAD, C_UNTRACK,
    C_REFERENTS, C_SLEEP, C_EXIT, C_N
};
static const char *const cnames[C_N] = {
    "loads", "hits", "hops", "stores", "exchanges", "nodes made", "rings", "garbage rings",
    "drops", "private weakrefs", "private gets", "hits", "released", "node weakref gets", "hits",
    "resurrected loads", "untrack/track", "get_referents", "detached sleeps", "thread exits"
};

static stress_opts_t opt = { .name = "gc_verify" };
static int nslots, gens, ops_per_gen, nroots;
static unsigned gc_t0;
static ftm_field *roots;
static ftm_field res_roots[NRES];
static slot_t *slots;
static _Atomic uint8_t *wdead;    /* per id: a weak reference callback for it ran */
static _Atomic uint8_t *fin_runs; /* per id: finalizer runs */
static wrec_t *wrecs;
static uint64_t wrec_cap;
static _Atomic uint64_t nwrecs;
static int phase;                      /* written by main between phases only */
static _Atomic int check_wdead;        /* phase 1 */
static _Atomic int resurrect_on, fin_alloc_on;
static _Atomic int stop_collector;
static _Atomic unsigned long long counts[C_N];
/* finalizers, callbacks */
static _Atomic unsigned long long n_fin, n_resurrect, n_fin_alloc, n_nested, n_wr_cb,
    n_wr_refused;
static bool strict; /* GC_VERIFY_STRICT */
/* gc callbacks */
static _Atomic unsigned long long cb_starts, cb_stops[FTM_GC_GENERATIONS],
    cb_collected[FTM_GC_GENERATIONS];
static _Thread_local int tls_in_gc;
static _Thread_local bool tls_harness; /* main, workers, the collector thread */
/* tids of threads that collected without being ours: the library's
 * background collectors (FTMEM_GC_THREADS), for messages */
#define MAX_BG 16
static _Atomic uint32_t bg_tids[MAX_BG];
/* the collector thread */
static _Atomic unsigned long long col_done, col_eagain, col_found, col_objs_checks,
    col_objs_seen, col_freezes;
static ftm_object **objs_buf;

/* ---- nodes -------------------------------------------------------------------- */

static void node_finalize(ftm_object *self);

static int node_traverse(ftm_object *self, ftm_visitproc visit, void *arg)
{
    node_t *n = (node_t *)self;
    for (int j = 0; j < K; j++) {
        ftm_object *e = ftm_field_peek(&n->edge[j]);
        int r = e ? visit(e, arg) : 0;
        if (r)
            return r;
    }
    ftm_object *w = ftm_field_peek(&n->wref);
    return w ? visit(w, arg) : 0;
}

static void node_clear(ftm_object *self)
{
    node_t *n = (node_t *)self;
    /* relaxed: read by threads that (wrongly) still hold the node */
    atomic_store_explicit(&n->cleared, 1, memory_order_relaxed);
    for (int j = 0; j < K; j++)
        ftm_field_clear(&n->edge[j]);
    ftm_field_clear(&n->wref);
}

static void node_dealloc(ftm_object *self)
{
    node_t *n = (node_t *)self;
    if (n->tail != ~n->st.canary)
        stress_fail("node dealloc: node %llu: tail %016llx, canary %016llx",
                    (unsigned long long)n->st.id, (unsigned long long)n->tail,
                    (unsigned long long)n->st.canary);
    for (int j = 0; j < K; j++)
        if (ftm_field_peek(&n->edge[j]) != NULL)
            stress_fail("node dealloc: node %llu still holds edge %d (clear did not run)",
                        (unsigned long long)n->st.id, j);
    if (ftm_field_peek(&n->wref) != NULL)
        stress_fail("node dealloc: node %llu still holds its weak reference (clear did not run)",
                    (unsigned long long)n->st.id);
    obj_stamp_kill(&n->st, "node dealloc");
    n->tail = 0;
}

static ftm_type node_type = {
    .name = "gcv_node",
    .basic_size = sizeof(node_t),
    .flags = FTM_TYPE_GC,
    .traverse = node_traverse,
    .clear = node_clear,
    .dealloc = node_dealloc,
};

static ftm_type fnode_type = {
    .name = "gcv_fnode",
    .basic_size = sizeof(node_t),
    .flags = FTM_TYPE_GC,
    .traverse = node_traverse,
    .clear = node_clear,
    .finalize = node_finalize,
    .dealloc = node_dealloc,
};

static inline node_t *N(ftm_object *o) { return (node_t *)o; }
static inline uint64_t nid(ftm_object *o) { return N(o)->st.id; }

/* The header as the library sees it, for failure messages (racy reads of
 * atomics: a snapshot). */
static const char *hdr_diag(ftm_object *o, char *buf, size_t n)
{
    uint32_t l = atomic_load_explicit(&o->ob_ref_local, memory_order_relaxed);
    int32_t sh = atomic_load_explicit(&o->ob_ref_shared, memory_order_relaxed);
    snprintf(buf, n,
             "[header: tid %u, local %u, shared %d state %d, gc_bits 0x%02x, flags 0x%02x; "
             "this thread's tid %u]",
             atomic_load_explicit(&o->ob_tid, memory_order_relaxed), l,
             sh >> FTM_REF_SHARED_SHIFT, sh & 3,
             atomic_load_explicit(&o->ob_gc_bits, memory_order_relaxed),
             atomic_load_explicit(&o->ob_flags, memory_order_relaxed), ftm__tid);
    return buf;
}

/* o is a node the caller holds a reference to (or whose holder it holds):
 * intact, not cleared; with `wd`, no weakref callback ran for it. */
enum { CHK_BASIC = 0, CHK_CLEARED = 1, CHK_WDEAD = 2, CHK_ALL = 3 };
static void node_check_x(ftm_object *o, const char *what, unsigned chk)
{
    const ftm_type *t = ftm_type_of(o);
    if (t != &node_type && t != &fnode_type)
        stress_fail("%s: object %p has type %p (%s), not a node (freed and reused?)", what,
                    (void *)o, (const void *)t,
                    t == &ftm_weakref_type ? "a weak reference" : "unknown");
    node_t *n = N(o);
    obj_stamp_check(&n->st, what);
    if (n->tail != ~n->st.canary)
        stress_fail("%s: node %llu: tail %016llx, expected %016llx", what,
                    (unsigned long long)n->st.id, (unsigned long long)n->tail,
                    (unsigned long long)~n->st.canary);
    if (n->kind != (t == &fnode_type ? KIND_FIN : KIND_PLAIN))
        stress_fail("%s: node %llu of type %s has kind %u", what, (unsigned long long)n->st.id,
                    t->name, n->kind);
    char d[200];
    if ((chk & CHK_CLEARED) && atomic_load_explicit(&n->cleared, memory_order_relaxed))
        stress_fail("%s: node %llu (%s) was cleared — its clear ran, the collector took it "
                    "for garbage — while a reference to it is held %s",
                    what, (unsigned long long)n->st.id, t->name, hdr_diag(o, d, sizeof d));
    if ((chk & CHK_WDEAD) && atomic_load_explicit(&check_wdead, memory_order_relaxed) &&
        atomic_load_explicit(&wdead[n->st.id], memory_order_relaxed))
        stress_fail("%s: node %llu: a weak reference callback for it ran (its referent was "
                    "declared dead) while a reference to it is held %s",
                    what, (unsigned long long)n->st.id, hdr_diag(o, d, sizeof d));
}

static void node_check(ftm_object *o, const char *what) { node_check_x(o, what, CHK_ALL); }


static ftm_object *node_new(stress_rng_t *r, bool fin)
{
    (void)r;
    ftm_object *o = ftm_new(fin ? &fnode_type : &node_type);
    if (o == NULL)
        stress_fail("ftm_new(node) failed (errno %d)", errno);
    node_t *n = N(o);
    obj_stamp_init(&n->st);
    n->kind = fin ? KIND_FIN : KIND_PLAIN;
    n->tail = ~n->st.canary;
    return o;
}

static wrec_t *wrec_new(uint64_t target)
{
    uint64_t i = atomic_fetch_add_explicit(&nwrecs, 1, memory_order_relaxed);
    if (i >= wrec_cap)
        stress_fail("harness: more than %llu weak references", (unsigned long long)wrec_cap);
    wrecs[i].target = target; /* published by ftm_weakref_new */
    return &wrecs[i];
}

static void nested_collect(uint64_t h, const char *where)
{
    /* inside a collection's finalizer or callback: returns 0 at once */
    errno = 0;
    ssize_t r = ftm_gc_collect((int)(h % 3));
    if (r != 0)
        stress_fail("ftm_gc_collect from inside %s of a running collection returned %zd "
                    "(errno %d), not 0",
                    where, r, errno);
    atomic_fetch_add_explicit(&n_nested, 1, memory_order_relaxed);
}

static void wr_callback(ftm_weakref *wr, void *arg)
{
    wrec_t *rec = arg;
    ftm_object *o = ftm_weakref_get(wr);
    if (o != NULL)
        stress_fail("weakref callback (referent %llu): ftm_weakref_get returns %p, not NULL",
                    (unsigned long long)rec->target, (void *)o);
    if (atomic_fetch_add_explicit(&rec->cb_runs, 1, memory_order_relaxed) != 0)
        stress_fail("weakref callback (referent %llu) ran twice", (unsigned long long)rec->target);
    atomic_store_explicit(&wdead[rec->target], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_wr_cb, 1, memory_order_relaxed);
    uint64_t h = stress_key3(opt.seed, (uint64_t)(rec - wrecs), 0xcb);
    if (tls_in_gc && h % 16 == 3)
        nested_collect(h >> 8, "a weakref callback");
}

/* A weak reference to target (held by the caller): get must give it back. */
static ftm_weakref *wr_make(stress_rng_t *r, ftm_object *target)
{
    bool cb = stress_one_in(r, 2);
    wrec_t *rec = wrec_new(nid(target));
    ftm_weakref *w = ftm_weakref_new(target, cb ? wr_callback : NULL, rec);
    if (w == NULL)
        stress_fail("ftm_weakref_new failed (errno %d)", errno);
    ftm_object *g = ftm_weakref_get(w);
    if (g == NULL && !strict && phase == 2 &&
        (atomic_load_explicit(&target->ob_gc_bits, memory_order_relaxed) & 0x20 /* UNREACH */)) {
        /* resurrected by a finalizer (or reachable from a node that was),
         * loaded before the collector's recheck cleared its unreachable
         * bit: gets refuse it meanwhile */
        atomic_fetch_add_explicit(&n_wr_refused, 1, memory_order_relaxed);
        return w;
    }
    if (g != target) {
        char d[200];
        stress_fail("ftm_weakref_get of a new weak reference to live node %llu (%s, finalizer "
                    "ran %u times) gave %p, not %p %s",
                    (unsigned long long)nid(target), ftm_type_of(target)->name,
                    (unsigned)atomic_load(&fin_runs[nid(target)]), (void *)g, (void *)target,
                    hdr_diag(target, d, sizeof d));
    }
    ftm_decref(g);
    return w;
}

/* A new node n (not yet published) gets a weak reference to target. */
static void node_set_wref(stress_rng_t *r, ftm_object *n, ftm_object *target)
{
    ftm_weakref *w = wr_make(r, target);
    N(n)->wtarget = nid(target); /* before publication, never changed */
    ftm_field_init(&N(n)->wref, ftm_weakref_as_object(w));
}

/* A node's weak reference: get gives its recorded referent or NULL.
 * Returns a reference to the referent or NULL. */
static ftm_object *node_wref_get(ftm_object *n, const char *what)
{
    ftm_object *wo = ftm_field_load(&N(n)->wref);
    if (wo == NULL)
        return NULL;
    if (ftm_type_of(wo) != &ftm_weakref_type)
        stress_fail("%s: node %llu's weakref field holds %p of type %p, not a weak reference",
                    what, (unsigned long long)nid(n), (void *)wo, (const void *)ftm_type_of(wo));
    ftm_object *t = ftm_weakref_get((ftm_weakref *)wo);
    if (t != NULL) {
        node_check(t, what);
        if (nid(t) != N(n)->wtarget)
            stress_fail("%s: node %llu's weak reference gave node %llu, its referent is %llu",
                        what, (unsigned long long)nid(n), (unsigned long long)nid(t),
                        (unsigned long long)N(n)->wtarget);
    }
    ftm_decref(wo);
    return t;
}

static void node_finalize(ftm_object *self)
{
    node_t *n = N(self);
    node_check_x(self, "finalizer (self)", CHK_CLEARED);
    uint64_t id = n->st.id;
    if (atomic_fetch_add_explicit(&fin_runs[id], 1, memory_order_relaxed) != 0)
        stress_fail("finalizer of node %llu ran twice", (unsigned long long)id);
    atomic_fetch_add_explicit(&n_fin, 1, memory_order_relaxed);
    /* nothing of the garbage is cleared before every finalizer has run */
    for (int j = 0; j < K; j++) {
        ftm_object *e = ftm_field_load(&n->edge[j]);
        if (e != NULL) {
            node_check_x(e, "finalizer (an edge of the node)", CHK_CLEARED);
            ftm_decref(e);
        }
    }
    uint64_t h = stress_key3(opt.seed, id, 0xf1a1);
    if (tls_in_gc && h % 16 == 1)
        nested_collect(h >> 8, "a finalizer");
    if (atomic_load_explicit(&fin_alloc_on, memory_order_relaxed) && (h >> 12) % 8 == 2) {
        stress_rng_t r = stress_rng(opt.seed, id ^ 0xa110c);
        ftm_object *x = node_new(&r, false);
        ftm_field_init(&N(x)->edge[0], ftm_newref(self)); /* keeps self alive through x */
        atomic_fetch_add_explicit(&n_fin_alloc, 1, memory_order_relaxed);
        if ((h >> 16) % 2)
            ftm_field_store(&res_roots[(h >> 20) % NRES], x);
        else
            ftm_decref(x);
    }
    if (atomic_load_explicit(&resurrect_on, memory_order_relaxed) && (h >> 24) % 4 == 0) {
        ftm_field_store(&res_roots[(h >> 28) % NRES], ftm_newref(self));
        atomic_fetch_add_explicit(&n_resurrect, 1, memory_order_relaxed);
    }
}

/* ---- gc callbacks ---------------------------------------------------------------- */

static void gc_callback(const char *ph, const ftm_gc_info *info, void *arg)
{
    (void)arg;
    if (info->generation < 0 || info->generation >= FTM_GC_GENERATIONS)
        stress_fail("gc callback '%s': generation %d", ph, info->generation);
    if (strcmp(ph, "start") == 0) {
        if (tls_in_gc)
            stress_fail("gc callback 'start' (generation %d) while this thread is inside a "
                        "collection (nested collection, or a start without a stop)",
                        info->generation);
        tls_in_gc = 1;
        if (!tls_harness) {
            uint32_t me = ftm__tid, z = 0;
            for (int i = 0; i < MAX_BG; i++) {
                uint32_t t = atomic_load_explicit(&bg_tids[i], memory_order_relaxed);
                if (t == me)
                    break;
                if (t == 0 && atomic_compare_exchange_strong_explicit(
                                  &bg_tids[i], &z, me, memory_order_relaxed, memory_order_relaxed))
                    break;
                z = 0;
            }
        }
        if (info->collected != 0 || info->uncollectable != 0)
            stress_fail("gc callback 'start': collected %zu, uncollectable %zu (must be 0)",
                        info->collected, info->uncollectable);
        atomic_fetch_add_explicit(&cb_starts, 1, memory_order_relaxed);
    } else if (strcmp(ph, "stop") == 0) {
        if (!tls_in_gc)
            stress_fail("gc callback 'stop' (generation %d) on a thread that saw no 'start'",
                        info->generation);
        tls_in_gc = 0;
        if (info->collected > info->candidates)
            stress_fail("gc callback 'stop': generation %d collected %zu of %zu candidates",
                        info->generation, info->collected, info->candidates);
        if (info->uncollectable != 0)
            stress_fail("gc callback 'stop': %zu uncollectable without DEBUG_SAVEALL",
                        info->uncollectable);
        if (info->duration < 0 || info->pause < 0 || info->pause > info->duration + 1e-6)
            stress_fail("gc callback 'stop': duration %.6f s, pause %.6f s", info->duration,
                        info->pause);
        atomic_fetch_add_explicit(&cb_stops[info->generation], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&cb_collected[info->generation], info->collected,
                                  memory_order_relaxed);
    } else {
        stress_fail("gc callback with phase '%s'", ph);
    }
}

/* ---- workers ---------------------------------------------------------------------- */

typedef struct wctx_s {
    stress_rng_t r;
    uint64_t serial;
    ftm_object *stash[STASH];
    const char *sorig[STASH]; /* how the reference was obtained, for messages */
    int nstash;
    pwr_t pw[PWR];
    int npw;
    unsigned long long cnt[C_N];
} wctx_t;

static inline uint64_t below(wctx_t *c, uint64_t n) { return stress_below(&c->r, n); }
static inline bool one_in(wctx_t *c, uint64_t n) { return stress_one_in(&c->r, n); }

static ftm_object *new_node(wctx_t *c)
{
    c->cnt[C_NEW]++;
    return node_new(&c->r, phase == 2 && one_in(c, 2));
}

/* Keep o (a reference) in the stash; when full, a random one is dropped. */
static void stash_check(wctx_t *c, int k, const char *what)
{
    char buf[160];
    snprintf(buf, sizeof buf, "%s (the reference came from %s)", what, c->sorig[k]);
    node_check(c->stash[k], buf);
}

/* Remove entry k (the caller takes its reference). */
static ftm_object *stash_take(wctx_t *c, int k)
{
    ftm_object *o = c->stash[k];
    c->nstash--;
    c->stash[k] = c->stash[c->nstash];
    c->sorig[k] = c->sorig[c->nstash];
    return o;
}

static void stash_put(wctx_t *c, ftm_object *o, const char *orig)
{
    if (c->nstash < STASH) {
        c->sorig[c->nstash] = orig;
        c->stash[c->nstash++] = o;
        return;
    }
    int k = (int)below(c, STASH);
    stash_check(c, k, "stash (dropped)");
    ftm_decref(c->stash[k]);
    c->stash[k] = o;
    c->sorig[k] = orig;
}

/* A new reference to a node: from the stash, a root or a resurrection slot
 * (NULL if the slot was empty). */
static ftm_object *pick_held(wctx_t *c)
{
    unsigned how = (unsigned)below(c, 8);
    if (how < 3 && c->nstash > 0)
        return ftm_newref(c->stash[below(c, (uint64_t)c->nstash)]);
    if (how == 3 && phase == 2) {
        ftm_object *o = ftm_field_load(&res_roots[below(c, NRES)]);
        if (o)
            node_check(o, "ftm_field_load (resurrection slot)");
        return o;
    }
    c->cnt[C_LOAD]++;
    ftm_object *o = ftm_field_load(&roots[below(c, (uint64_t)nroots)]);
    if (o) {
        c->cnt[C_LOAD_HIT]++;
        node_check(o, "ftm_field_load (root)");
    }
    return o;
}

/* Follow up to `hops` random edges from cur (a reference, consumed); returns
 * a reference to where the walk ended. */
static ftm_object *walk(wctx_t *c, ftm_object *cur, int hops, const char *what)
{
    for (int h = 0; h < hops; h++) {
        unsigned j = (unsigned)below(c, K + 1);
        ftm_object *nx;
        if (j == K) {
            c->cnt[C_NWR_GET]++;
            nx = node_wref_get(cur, what);
            if (nx)
                c->cnt[C_NWR_HIT]++;
        } else {
            nx = ftm_field_load(&N(cur)->edge[j]);
            if (nx)
                node_check(nx, what);
        }
        if (nx == NULL)
            break;
        c->cnt[C_HOP]++;
        ftm_decref(cur);
        cur = nx;
        if ((h & 7) == 7)
            ftm_safepoint();
    }
    return cur;
}

/* A value to store: a new reference or NULL. */
static ftm_object *pick_value(wctx_t *c, ftm_object *holder)
{
    switch (below(c, 8)) {
    case 0:
        return NULL;
    case 1:
        return holder ? ftm_newref(holder) : NULL; /* self loop */
    case 2:
    case 3: {
        ftm_object *v = new_node(c);
        if (one_in(c, 4) && holder != NULL)
            node_set_wref(&c->r, v, holder);
        if (one_in(c, 2) && holder != NULL) /* a cycle through the new node */
            ftm_field_init(&N(v)->edge[below(c, K)], ftm_newref(holder));
        return v;
    }
    default:
        return pick_held(c);
    }
}

/* ftm_field_exchange, or (GC_VERIFY_NO_EXCHANGE=1, a diagnostic) the old
 * value taken with a load (an incref) and then replaced by a store. */
static bool no_exchange;

static ftm_object *xchg(ftm_field *slot, ftm_object *v)
{
    if (!no_exchange)
        return ftm_field_exchange(slot, v);
    ftm_object *old = ftm_field_load(slot);
    ftm_field_store(slot, v);
    return old;
}

static void op_load_walk(wctx_t *c, int hops)
{
    ftm_object *o = pick_held(c);
    if (o == NULL)
        return;
    o = walk(c, o, hops, "walk (ftm_field_load of an edge)");
    if (one_in(c, 4))
        stash_put(c, o, hops ? "a walk (ftm_field_load)" : "ftm_field_load");
    else
        ftm_decref(o);
}

static void op_store_root(wctx_t *c)
{
    ftm_object *v;
    if (c->nstash > 0 && one_in(c, 5)) { /* move a stashed reference */
        v = stash_take(c, (int)below(c, (uint64_t)c->nstash));
    } else {
        v = pick_value(c, NULL);
    }
    c->cnt[C_STORE]++;
    if (one_in(c, 3)) {
        c->cnt[C_XCHG]++;
        ftm_object *old = xchg(&roots[below(c, (uint64_t)nroots)], v);
        if (old) {
            node_check(old, "ftm_field_exchange (old root)");
            if (one_in(c, 3))
                stash_put(c, old, no_exchange ? "load + store of a root" : "ftm_field_exchange of a root");
            else
                ftm_decref(old);
        }
    } else {
        ftm_field_store(&roots[below(c, (uint64_t)nroots)], v);
    }
}

static void op_store_edge(wctx_t *c, bool exchange)
{
    ftm_object *h = pick_held(c);
    if (h == NULL)
        return;
    h = walk(c, h, (int)below(c, 10), "walk to an edge to store (ftm_field_load)"); /* deep graphs */
    ftm_object *v = pick_value(c, h);
    ftm_field *slot = &N(h)->edge[below(c, K)];
    c->cnt[C_STORE]++;
    if (exchange) {
        c->cnt[C_XCHG]++;
        ftm_object *old = xchg(slot, v);
        if (old) {
            node_check(old, "ftm_field_exchange (old edge)");
            if (one_in(c, 3))
                stash_put(c, old, no_exchange ? "load + store of an edge" : "ftm_field_exchange of an edge");
            else
                ftm_decref(old);
        }
    } else {
        ftm_field_store(slot, v);
    }
    ftm_decref(h);
}

/* A ring of new nodes with cross edges, maybe edges out to old nodes and a
 * weak reference; dropped (cyclic garbage) or published. */
static void op_ring(wctx_t *c)
{
    int m = 2 + (int)below(c, RING_MAX - 1);
    ftm_object *ring[RING_MAX];
    for (int i = 0; i < m; i++)
        ring[i] = new_node(c);
    ftm_object *out = one_in(c, 2) ? pick_held(c) : NULL;
    for (int i = 0; i < m; i++) {
        ftm_field_init(&N(ring[i])->edge[0], ftm_newref(ring[(i + 1) % m]));
        if (one_in(c, 2))
            ftm_field_init(&N(ring[i])->edge[1], ftm_newref(ring[below(c, (uint64_t)m)]));
        if (out != NULL && one_in(c, 3))
            ftm_field_init(&N(ring[i])->edge[2], ftm_newref(out)); /* young -> old */
        if (one_in(c, 6)) {
            ftm_object *t = one_in(c, 2) || out == NULL ? ring[below(c, (uint64_t)m)] : out;
            node_set_wref(&c->r, ring[i], t);
        }
    }
    c->cnt[C_RING]++;
    unsigned fate = (unsigned)below(c, 8);
    int keep = (int)below(c, (uint64_t)m);
    if (fate < 4) {
        c->cnt[C_RING_GARBAGE]++;
    } else if (fate < 6) {
        ftm_field_store(&roots[below(c, (uint64_t)nroots)], ftm_newref(ring[keep]));
    } else if (fate == 6 && out != NULL) {
        ftm_field_store(&N(out)->edge[3], ftm_newref(ring[keep])); /* old -> young */
    } else {
        stash_put(c, ftm_newref(ring[keep]), "a new ring");
    }
    for (int i = 0; i < m; i++)
        ftm_decref(ring[i]);
    if (out)
        ftm_decref(out);
}

static void op_drop(wctx_t *c)
{
    c->cnt[C_DROP]++;
    unsigned how = (unsigned)below(c, 4);
    if (how < 2 && c->nstash > 0) {
        int k = (int)below(c, (uint64_t)c->nstash);
        stash_check(c, k, "stash (drop)");
        ftm_decref(stash_take(c, k));
    } else if (how == 2 && phase == 2) {
        ftm_field_store(&res_roots[below(c, NRES)], NULL);
    } else {
        ftm_field_store(&roots[below(c, (uint64_t)nroots)], NULL);
    }
}

static void pwr_get(wctx_t *c, int k, const char *what)
{
    c->cnt[C_WR_GET]++;
    ftm_object *t = ftm_weakref_get(c->pw[k].wr);
    if (t == NULL)
        return;
    c->cnt[C_WR_HIT]++;
    node_check(t, what);
    if (nid(t) != c->pw[k].target)
        stress_fail("%s: ftm_weakref_get gave node %llu, the weak reference is to %llu", what,
                    (unsigned long long)nid(t), (unsigned long long)c->pw[k].target);
    if (one_in(c, 8))
        stash_put(c, t, "a private ftm_weakref_get");
    else
        ftm_decref(t);
}

static void pwr_release(wctx_t *c, int k)
{
    c->cnt[C_WR_REL]++;
    ftm_weakref_release(c->pw[k].wr);
    c->pw[k] = c->pw[--c->npw];
}

static void op_weakref(wctx_t *c)
{
    unsigned how = (unsigned)below(c, 8);
    if (how < 2) { /* a private weak reference to a node we hold */
        ftm_object *t = pick_held(c);
        if (t == NULL)
            return;
        if (c->npw == PWR)
            pwr_release(c, (int)below(c, PWR));
        c->cnt[C_WR_NEW]++;
        c->pw[c->npw].wr = wr_make(&c->r, t);
        c->pw[c->npw].target = nid(t);
        c->npw++;
        ftm_decref(t); /* from here on only the weak reference */
    } else if (how < 5) {
        if (c->npw > 0)
            pwr_get(c, (int)below(c, (uint64_t)c->npw), "ftm_weakref_get (private)");
    } else if (how < 6) {
        if (c->npw > 0)
            pwr_release(c, (int)below(c, (uint64_t)c->npw));
    } else { /* through a node's weak reference */
        ftm_object *h = pick_held(c);
        if (h == NULL)
            return;
        c->cnt[C_NWR_GET]++;
        ftm_object *t = node_wref_get(h, "ftm_weakref_get (a node's)");
        if (t) {
            c->cnt[C_NWR_HIT]++;
            if (one_in(c, 4))
                stash_put(c, t, "a node's ftm_weakref_get");
            else
                ftm_decref(t);
        }
        ftm_decref(h);
    }
}

/* Loads only (no allocation): safepoints by hand. */
static void op_read_loop(wctx_t *c)
{
    for (int i = 0; i < 32; i++) {
        ftm_object *o = ftm_field_load(&roots[below(c, (uint64_t)nroots)]);
        c->cnt[C_LOAD]++;
        if (o) {
            c->cnt[C_LOAD_HIT]++;
            node_check(o, "read loop (root)");
            ftm_object *e = ftm_field_load(&N(o)->edge[i % K]);
            if (e) {
                node_check(e, "read loop (edge)");
                ftm_decref(e);
            }
            ftm_decref(o);
        }
        if ((i & 3) == 3)
            ftm_safepoint();
    }
}

/* Untrack a node, let collections run, track it again.  By default a new
 * node nobody else sees yet (given edges to shared nodes meanwhile, then
 * published); with GC_VERIFY_SHARED_TRACK=1 any node we hold, which other
 * threads may be untracking and tracking at the same time. */
static bool shared_track;

static void op_untrack(wctx_t *c)
{
    ftm_object *h;
    bool fresh = !shared_track || one_in(c, 2);
    if (fresh) {
        h = new_node(c);
        ftm_gc_untrack(h);
        if (ftm_gc_is_tracked(h))
            stress_fail("node %llu: tracked right after ftm_gc_untrack",
                        (unsigned long long)nid(h));
        ftm_object *v = pick_held(c);
        if (v != NULL)
            ftm_field_store(&N(h)->edge[0], v); /* untracked -> shared */
        ftm_field_store(&N(h)->edge[1], ftm_newref(h)); /* a self loop */
    } else {
        h = pick_held(c);
        if (h == NULL)
            return;
        ftm_gc_untrack(h);
    }
    c->cnt[C_UNTRACK]++;
    ftm_safepoint(); /* a collection may start with h untracked */
    ftm_object *o = walk(c, ftm_newref(h), 4, "walk from an untracked node");
    ftm_decref(o);
    ftm_safepoint();
    ftm_gc_track(h);
    if (!ftm_gc_is_tracked(h))
        stress_fail("node %llu: not tracked right after ftm_gc_track", (unsigned long long)nid(h));
    if (fresh)
        ftm_field_store(&roots[below(c, (uint64_t)nroots)], h);
    else
        ftm_decref(h);
}

static void op_referents(wctx_t *c)
{
    ftm_object *h = pick_held(c);
    if (h == NULL)
        return;
    c->cnt[C_REFERENTS]++;
    ftm_object *out[K + 1];
    size_t n = ftm_gc_get_referents(h, out, K + 1);
    if (n > K + 1)
        stress_fail("ftm_gc_get_referents of node %llu: %zu referents (at most %d)",
                    (unsigned long long)nid(h), n, K + 1);
    for (size_t i = 0; i < n; i++) {
        if (ftm_type_of(out[i]) != &ftm_weakref_type)
            node_check(out[i], "ftm_gc_get_referents");
        ftm_decref(out[i]);
    }
    ftm_decref(h);
}

static void op_sleep(wctx_t *c)
{
    c->cnt[C_SLEEP]++;
    struct timespec ts = { 0, (long)(20000 + below(c, 280000)) };
    ftm_thread_detach();
    nanosleep(&ts, NULL);
    ftm_thread_attach();
    for (int k = 0; k < c->nstash; k++) /* held across the sleep: intact */
        stash_check(c, k, "stash after a detached sleep");
}

static void *worker_main(void *arg);

static void worker_exit(wctx_t *c, warg_t *a)
{
    for (int k = 0; k < c->nstash; k++) {
        stash_check(c, k, "stash at exit");
        if (one_in(c, 2))
            ftm_field_store(&roots[below(c, (uint64_t)nroots)], c->stash[k]);
        else
            ftm_decref(c->stash[k]);
    }
    c->nstash = 0;
    while (c->npw > 0) {
        pwr_get(c, c->npw - 1, "ftm_weakref_get (private, at exit)");
        pwr_release(c, c->npw - 1);
    }
    while (c->nstash > 0) /* what the gets above stashed */
        ftm_decref(c->stash[--c->nstash]);
    c->cnt[C_EXIT]++;
    for (int i = 0; i < C_N; i++)
        atomic_fetch_add_explicit(&counts[i], c->cnt[i], memory_order_relaxed);
    if (a->gen + 1 < gens) {
        warg_t *na = malloc(sizeof *na);
        if (na == NULL)
            stress_fail("out of memory for the harness");
        na->s = a->s;
        na->gen = a->gen + 1;
        stress_thread_start(&a->s->th[a->gen + 1], worker_main, na);
    }
    free(a);
}

static void *worker_main(void *arg)
{
    warg_t *a = arg;
    tls_harness = true;
    wctx_t c;
    memset(&c, 0, sizeof c);
    c.serial = (uint64_t)a->s->slot * MAXGEN + (uint64_t)a->gen;
    c.r = stress_rng(opt.seed, (uint64_t)phase << 32 | c.serial);
    /* staggered exits; the finalizer phase's graph grows larger (what
     * finalizers resurrect), so it does half the operations */
    int per = phase == 2 ? ops_per_gen / 2 : ops_per_gen;
    int nops = per / 2 + (int)below(&c, (uint64_t)per);
    for (int op = 0; op < nops; op++) {
        unsigned what = (unsigned)below(&c, 1000);
        if (what < 170)
            op_load_walk(&c, (int)below(&c, 7));
        else if (what < 250)
            op_store_root(&c);
        else if (what < 370)
            op_store_edge(&c, false);
        else if (what < 420)
            op_store_edge(&c, true);
        else if (what < 520)
            op_ring(&c);
        else if (what < 600)
            op_drop(&c);
        else if (what < 700)
            op_weakref(&c);
        else if (what < 740)
            op_load_walk(&c, WALK_MAX);
        else if (what < 770)
            op_read_loop(&c);
        else if (what < 800) {
            if (phase == 2) { /* the resurrected */
                c.cnt[C_RES_LOAD]++;
                ftm_object *o = ftm_field_load(&res_roots[below(&c, NRES)]);
                if (o) {
                    node_check(o, "ftm_field_load (resurrection slot)");
                    o = walk(&c, o, 8, "walk from a resurrected node");
                    ftm_decref(o);
                }
            } else {
                op_load_walk(&c, 2);
            }
        } else if (what < 810)
            op_untrack(&c);
        else if (what < 820)
            op_referents(&c);
        else if (what < 832)
            op_sleep(&c);
        else if (what < 900) { /* one new node, into a root or an edge */
            ftm_object *h = pick_held(&c);
            ftm_object *v = pick_value(&c, h);
            if (h && one_in(&c, 2))
                ftm_field_store(&N(h)->edge[below(&c, K)], v);
            else
                ftm_field_store(&roots[below(&c, (uint64_t)nroots)], v);
            if (h)
                ftm_decref(h);
        } else if (c.nstash > 0) { /* check the stash */
            for (int k = 0; k < c.nstash; k++)
                stash_check(&c, k, "stash");
        }
        if ((op & 15) == 15)
            ftm_safepoint();
    }
    worker_exit(&c, a);
    return NULL;
}

/* ---- the collector thread ----------------------------------------------------------- */

static void stats_sane(const ftm_gc_gen_stats_t *s, const char *when)
{
    for (int g = 0; g < FTM_GC_GENERATIONS; g++) {
        if (s[g].uncollectable != 0)
            stress_fail("%s: ftm_gc_get_stats: generation %d: %llu uncollectable without "
                        "DEBUG_SAVEALL",
                        when, g, (unsigned long long)s[g].uncollectable);
        if (s[g].collected > s[g].candidates)
            stress_fail("%s: ftm_gc_get_stats: generation %d: collected %llu > candidates %llu",
                        when, g, (unsigned long long)s[g].collected,
                        (unsigned long long)s[g].candidates);
        if (s[g].pause_total > s[g].duration_total + 1e-6 ||
            s[g].pause_max > s[g].duration_max + 1e-6 ||
            s[g].duration_max > s[g].duration_total + 1e-6 || s[g].pause_max < 0)
            stress_fail("%s: ftm_gc_get_stats: generation %d: durations total %.6f max %.6f, "
                        "pauses total %.6f max %.6f",
                        when, g, s[g].duration_total, s[g].duration_max, s[g].pause_total,
                        s[g].pause_max);
    }
}

static void stats_monotonic(const ftm_gc_gen_stats_t *a, const ftm_gc_gen_stats_t *b)
{
    for (int g = 0; g < FTM_GC_GENERATIONS; g++)
        if (b[g].collections < a[g].collections || b[g].collected < a[g].collected ||
            b[g].candidates < a[g].candidates || b[g].abandoned < a[g].abandoned ||
            b[g].duration_total < a[g].duration_total || b[g].pause_total < a[g].pause_total ||
            b[g].duration_max < a[g].duration_max || b[g].pause_max < a[g].pause_max)
            stress_fail("ftm_gc_get_stats went back: generation %d: collections %llu -> %llu, "
                        "collected %llu -> %llu, candidates %llu -> %llu, abandoned %llu -> %llu",
                        g, (unsigned long long)a[g].collections,
                        (unsigned long long)b[g].collections, (unsigned long long)a[g].collected,
                        (unsigned long long)b[g].collected, (unsigned long long)a[g].candidates,
                        (unsigned long long)b[g].candidates, (unsigned long long)a[g].abandoned,
                        (unsigned long long)b[g].abandoned);
}

/* Every object ftm_gc_get_objects lists is intact.  A node the collector
 * already cleared as garbage but whose memory waits for its owner to merge
 * the collector's last decrement (biased counting) is still listed: such
 * "zombies" are counted (and fail with GC_VERIFY_STRICT=1), every other
 * check applies to them too. */
static _Atomic unsigned long long col_zombies;

static void check_objects(void)
{
    size_t n = ftm_gc_get_objects(-1, objs_buf, OBJS_CAP);
    size_t take = n < OBJS_CAP ? n : OBJS_CAP;
    for (size_t i = 0; i < take; i++) {
        ftm_object *o = objs_buf[i];
        if (ftm_type_of(o) == &ftm_weakref_type)
            continue;
        /* (its owner may have merged it by now: then our reference keeps it) */
        if (!strict && (ftm_type_of(o) == &node_type || ftm_type_of(o) == &fnode_type) &&
            atomic_load_explicit(&N(o)->cleared, memory_order_relaxed)) {
            atomic_fetch_add_explicit(&col_zombies, 1, memory_order_relaxed);
            node_check_x(o, "ftm_gc_get_objects (collected, not yet freed)", CHK_BASIC);
            continue;
        }
        node_check(o, "ftm_gc_get_objects");
    }
    for (size_t i = 0; i < take; i++)
        ftm_decref(objs_buf[i]);
    atomic_fetch_add_explicit(&col_objs_checks, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&col_objs_seen, take, memory_order_relaxed);
}

static void *collector_main(void *arg)
{
    (void)arg;
    tls_harness = true;
    stress_rng_t r = stress_rng(opt.seed, 0xc011ec7 + (uint64_t)phase);
    ftm_gc_gen_stats_t prev[FTM_GC_GENERATIONS], cur[FTM_GC_GENERATIONS];
    ftm_gc_get_stats(prev);
    unsigned long long it = 0;
    while (!atomic_load_explicit(&stop_collector, memory_order_acquire)) {
        it++;
        unsigned u = (unsigned)stress_below(&r, 100);
        int gen = u < 50 ? 0 : u < 78 ? 1 : u < 98 ? 2 : u == 98 ? -1 : 3;
        errno = 0;
        ssize_t n = ftm_gc_collect(gen);
        if (n < 0) {
            if (errno != EAGAIN)
                stress_fail("ftm_gc_collect(%d) returned %zd with errno %d (%s), not EAGAIN", gen,
                            n, errno, strerror(errno));
            atomic_fetch_add_explicit(&col_eagain, 1, memory_order_relaxed);
        } else {
            atomic_fetch_add_explicit(&col_done, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&col_found, (unsigned long long)n, memory_order_relaxed);
        }
        if (it % 8 == 0) {
            ftm_gc_get_stats(cur);
            stats_monotonic(prev, cur);
            stats_sane(cur, "collector thread");
            memcpy(prev, cur, sizeof cur);
            unsigned long cnt[FTM_GC_GENERATIONS];
            ftm_gc_get_count(cnt);
        }
        if (stress_one_in(&r, opt.smoke ? 24 : 64))
            check_objects();
        if (stress_one_in(&r, 97)) {
            atomic_fetch_add_explicit(&col_freezes, 1, memory_order_relaxed);
            ftm_gc_freeze();
            errno = 0;
            if (ftm_gc_collect(0) < 0 && errno != EAGAIN)
                stress_fail("ftm_gc_collect(0) with everything frozen: errno %d", errno);
            ftm_gc_unfreeze();
        }
        if (stress_one_in(&r, 4)) {
            struct timespec ts = { 0, (long)(10000 + stress_below(&r, 400000)) };
            ftm_thread_detach();
            nanosleep(&ts, NULL);
            ftm_thread_attach();
        }
    }
    ftm_gc_get_stats(cur);
    stats_monotonic(prev, cur);
    return NULL;
}

/* ---- quiescent checks ----------------------------------------------------------------- */

static uint64_t alive_nodes(void)
{
    return obj_ids_used() - atomic_load_explicit(&obj_reg.deallocs, memory_order_relaxed);
}

/* A full collection, retried while a handshake times out. */
static ssize_t collect_full(const char *when)
{
    for (int i = 0; i < 50; i++) {
        errno = 0;
        ssize_t n = ftm_gc_collect(2);
        if (n >= 0)
            return n;
        if (errno != EAGAIN)
            stress_fail("%s: ftm_gc_collect(2) returned %zd, errno %d", when, n, errno);
        stress_note("%s: ftm_gc_collect(2) abandoned (EAGAIN) with every mutator gone; retrying",
                    when);
    }
    stress_fail("%s: 50 full collections abandoned in a row with no mutator running", when);
}

typedef struct walk_res_s {
    uint64_t nodes, wrefs, fin_nodes, finalized;
    uint8_t *seen; /* per id, for the caller to free */
} walk_res_t;

/* Diagnostics: the first nodes that are alive but not reachable. */
static void print_unreachable(const uint8_t *seen, uint64_t nseen)
{
    size_t n = ftm_gc_get_objects(-1, objs_buf, OBJS_CAP);
    size_t take = n < OBJS_CAP ? n : OBJS_CAP;
    int shown = 0;
    for (size_t i = 0; i < take; i++) {
        ftm_object *o = objs_buf[i];
        if ((ftm_type_of(o) == &node_type || ftm_type_of(o) == &fnode_type) && nid(o) < nseen &&
            !seen[nid(o)] && shown < 8) {
            char d[200];
            const char *owner = "";
            uint32_t tid = atomic_load_explicit(&o->ob_tid, memory_order_relaxed);
            for (int b = 0; b < MAX_BG && tid != 0; b++)
                if (atomic_load_explicit(&bg_tids[b], memory_order_relaxed) == tid)
                    owner = "; owned by a background collector thread";
            shown++;
            fprintf(stderr,
                    "gc_verify: unreachable node %llu (%s): cleared %u, finalizer ran %u, edges "
                    "%p %p %p %p; %s%s (one reference is ftm_gc_get_objects')\n",
                    (unsigned long long)nid(o), ftm_type_of(o)->name,
                    (unsigned)atomic_load(&N(o)->cleared), (unsigned)atomic_load(&fin_runs[nid(o)]),
                    (void *)ftm_field_peek(&N(o)->edge[0]), (void *)ftm_field_peek(&N(o)->edge[1]),
                    (void *)ftm_field_peek(&N(o)->edge[2]), (void *)ftm_field_peek(&N(o)->edge[3]),
                    hdr_diag(o, d, sizeof d), owner);
        }
    }
    for (size_t i = 0; i < take; i++)
        ftm_decref(objs_buf[i]);
    if (shown == 0)
        fprintf(stderr, "gc_verify: no unreachable node is tracked (ftm_gc_get_objects: %zu)\n", n);
}

/* Every node reachable from the roots and the resurrection slots: intact,
 * tracked, finalized iff its finalizer ran. */
static walk_res_t walk_all(const char *when)
{
    walk_res_t res = { 0, 0, 0, 0, NULL };
    uint64_t used = obj_ids_used();
    uint8_t *seen = calloc((size_t)used + 1, 1);
    size_t cap = 1024, len = 0;
    ftm_object **q = malloc(cap * sizeof *q);
    if (seen == NULL || q == NULL)
        stress_fail("out of memory for the harness");
    for (int i = 0; i < nroots + NRES; i++) {
        ftm_object *o = ftm_field_load(i < nroots ? &roots[i] : &res_roots[i - nroots]);
        if (o == NULL)
            continue;
        if (len == cap && (q = realloc(q, (cap *= 2) * sizeof *q)) == NULL)
            stress_fail("out of memory for the harness");
        q[len++] = o;
    }
    while (len > 0) {
        ftm_object *o = q[--len];
        node_check(o, when);
        uint64_t id = nid(o);
        if (!seen[id]) {
            seen[id] = 1;
            res.nodes++;
            if (!ftm_gc_is_tracked(o))
                stress_fail("%s: node %llu is reachable but not tracked", when,
                            (unsigned long long)id);
            if (N(o)->kind == KIND_FIN) {
                res.fin_nodes++;
                bool ran = atomic_load_explicit(&fin_runs[id], memory_order_relaxed) != 0;
                if (ran)
                    res.finalized++;
                if (ftm_gc_is_finalized(o) != ran)
                    stress_fail("%s: node %llu: ftm_gc_is_finalized says %d, its finalizer %s",
                                when, (unsigned long long)id, (int)ftm_gc_is_finalized(o),
                                ran ? "ran" : "never ran");
            }
            for (int j = 0; j <= K; j++) {
                ftm_object *e = ftm_field_load(j < K ? &N(o)->edge[j] : &N(o)->wref);
                if (e == NULL)
                    continue;
                if (j == K) {
                    res.wrefs++;
                    ftm_object *t = node_wref_get(o, when);
                    if (t)
                        ftm_decref(t); /* reachable anyway, or the walk checks it */
                    ftm_decref(e);
                    continue;
                }
                if (len == cap && (q = realloc(q, (cap *= 2) * sizeof *q)) == NULL)
                    stress_fail("out of memory for the harness");
                q[len++] = e;
            }
        }
        ftm_decref(o);
    }
    free(q);
    res.seen = seen;
    return res;
}

static uint64_t objects_alive(const obj_base_t *b)
{
    ftm_thread_flush();
    ftm_object_stats_t os;
    ftm_object_stats_get(&os);
    return (os.created - b->obj.created) - (os.freed - b->obj.freed);
}

/* ---- the leak check --------------------------------------------------------------------
 * obj_util.h's, with what the collector keeps by design: its candidate
 * lists are chunks of cells (8 KiB blocks) that are recycled, never freed
 * (gc.c), and in FTMEM_GC_THREADS runs its background threads stay
 * registered.  So: objects created == freed, nothing waiting for a grace
 * period; after ftm_collect(true) no large block, and every live block
 * beyond the baseline is in the chunks' size class (per-class counts from
 * ftm_stats_json; 2 blocks of slack for per-thread arrays that moved
 * class); abandoned pools and slices within what those chunks and the
 * weakref side tables grown by workers (as obj_weakref_race) can pin. */
static unsigned chunk_block;   /* block size of an 8 KiB request */
static long long chunk_live0;  /* at the baseline */
static int bg_threads;
static const char *phases; /* GC_VERIFY_PHASES: "12" (default), "1", "2" */

static long long class_live(unsigned block_size)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        stress_fail("open_memstream failed");
    ftm_stats_json(f);
    fclose(f);
    long long live = 0;
    const char *q = buf;
    while ((q = strstr(q, "\"block_size\": ")) != NULL) {
        unsigned bs;
        unsigned long long m, fr;
        if (sscanf(q, "\"block_size\": %u, \"mallocs\": %llu, \"frees\": %llu", &bs, &m, &fr) ==
                3 &&
            bs == block_size)
            live += (long long)(m - fr);
        q++;
    }
    free(buf);
    return live;
}

static long long leak_check(const obj_base_t *b, const char *when)
{
    ftm_thread_flush();
    ftm_object_stats_t os;
    ftm_object_stats_get(&os);
    uint64_t created = os.created - b->obj.created, freed = os.freed - b->obj.freed;
    if (created != freed)
        stress_fail("%s: ftm_object_stats: %llu objects created, %llu freed since the baseline",
                    when, (unsigned long long)created, (unsigned long long)freed);
    /* a background collector waits detached with what its last collection
     * freed possibly still in its epoch bag: allowed (and counted below) */
    long long pending = (long long)os.deferred_pending;
    if (pending != 0 && (bg_threads == 0 || pending > 100000))
        stress_fail("%s: ftm_object_stats: %lld blocks still waiting for a grace period", when,
                    pending);
    if (os.threads > b->obj.threads + (uint64_t)bg_threads)
        stress_fail("%s: ftm_object_stats: %llu thread states registered, %llu at the baseline "
                    "(+ %d background collectors allowed)",
                    when, (unsigned long long)os.threads, (unsigned long long)b->obj.threads,
                    bg_threads);
    ftm_collect(true);
    ftm_stats_t s;
    stress_stats(&s);
    long long excess = (long long)s.live_count - (long long)b->mem.live_count;
    long long chunks = class_live(chunk_block) - chunk_live0;
    if (excess > (chunks > 0 ? chunks : 0) + pending + 2) {
        ftm_stats_print(stderr);
        stress_fail("%s: %lld live blocks beyond the baseline, only %lld of them in the "
                    "collector's chunk class (%u bytes), %lld waiting for a grace period",
                    when, excess, chunks, chunk_block, pending);
    }
    if (s.large_count != b->mem.large_count)
        stress_fail("%s: ftm_stats large_count = %llu, baseline %llu", when, s.large_count,
                    b->mem.large_count);
    if (s.threads > b->mem.threads + (unsigned long long)bg_threads)
        stress_fail("%s: %llu thread heaps in use after every worker exited (baseline %llu)",
                    when, s.threads, b->mem.threads);
    unsigned long long cpin = chunks > 0 ? (unsigned long long)chunks : 0;
    if (s.abandoned_pools > 64 + cpin || s.pools > b->mem.pools + 64 * 8 + cpin + OBJ_SLICE_SLACK) {
        ftm_stats_print(stderr);
        stress_fail("%s: %llu abandoned pools (allowed %llu), %llu slices in use (baseline %llu, "
                    "allowed %llu more)",
                    when, s.abandoned_pools, 64 + cpin, s.pools, b->mem.pools,
                    64 * 8 + cpin + OBJ_SLICE_SLACK);
    }
    stress_note("leak check %s: %llu objects created and freed; live blocks %llu (baseline "
                "%llu; %lld more chunks of cells, %lld in a background collector's epoch bag); "
                "slices %llu (baseline %llu); abandoned pools %llu",
                when, (unsigned long long)created, s.live_count, b->mem.live_count, chunks,
                pending, s.pools, b->mem.pools, s.abandoned_pools);
    return chunks;
}

typedef struct phase_res_s {
    double secs;
    uint64_t left_garbage, reachable, final_found, nodes;
    long long chunks;
} phase_res_t;

static phase_res_t run_phase(int p, const obj_base_t *base)
{
    phase_res_t pr;
    char when[64];
    phase = p;
    atomic_store(&check_wdead, p == 1);
    atomic_store(&resurrect_on, p == 2);
    atomic_store(&fin_alloc_on, p == 2);
    atomic_store(&stop_collector, 0);
    uint64_t ids0 = obj_ids_used();
    double t0 = stress_now();
    ftm_thread_detach(); /* main only blocks in joins from here */
    pthread_t col;
    stress_thread_start(&col, collector_main, NULL);
    for (int i = 0; i < nslots; i++) {
        warg_t *a = malloc(sizeof *a);
        if (a == NULL)
            stress_fail("out of memory for the harness");
        slots[i].slot = i;
        a->s = &slots[i];
        a->gen = 0;
        stress_thread_start(&slots[i].th[0], worker_main, a);
    }
    for (int i = 0; i < nslots; i++)
        for (int g = 0; g < gens; g++) /* th[g] is set before generation g-1 exits */
            stress_thread_join(slots[i].th[g]);
    atomic_store_explicit(&stop_collector, 1, memory_order_release);
    stress_thread_join(col);
    ftm_thread_attach();
    pr.secs = stress_now() - t0;
    pr.nodes = obj_ids_used() - ids0;

    /* quiescent: no resurrection, no allocation in finalizers from here */
    atomic_store(&resurrect_on, 0);
    atomic_store(&fin_alloc_on, 0);
    snprintf(when, sizeof when, "phase %d, quiescent", p);
    uint64_t objs0 = objects_alive(base), alive0 = alive_nodes();
    ssize_t n1 = collect_full(when);
    uint64_t objs1 = objects_alive(base), alive1 = alive_nodes();
    walk_res_t w = walk_all(when);
    if (alive1 != w.nodes)
        print_unreachable(w.seen, obj_ids_used());
    free(w.seen);
    if (alive1 != w.nodes)
        stress_fail("%s: after a full collection with every mutator gone, %llu nodes alive but "
                    "%llu reachable from the roots: %llu unreachable nodes left",
                    when, (unsigned long long)alive1, (unsigned long long)w.nodes,
                    (unsigned long long)(alive1 - w.nodes));
    if (objs1 != w.nodes + w.wrefs)
        stress_fail("%s: %llu objects alive (ftm_object_stats), the roots reach %llu nodes "
                    "holding %llu weak references",
                    when, (unsigned long long)objs1, (unsigned long long)w.nodes,
                    (unsigned long long)w.wrefs);
    /* every object it freed was garbage it found (nodes and their weakrefs) */
    if ((uint64_t)n1 != objs0 - objs1)
        stress_fail("%s: the full collection returned %zd; %llu objects (%llu nodes) were freed",
                    when, n1, (unsigned long long)(objs0 - objs1),
                    (unsigned long long)(alive0 - alive1));
    pr.left_garbage = alive0 - alive1;
    pr.reachable = w.nodes;

    /* drop everything: what the roots held dies by RC or in one full collection */
    snprintf(when, sizeof when, "phase %d, roots dropped", p);
    for (int i = 0; i < nroots; i++)
        ftm_field_store(&roots[i], NULL);
    for (int i = 0; i < NRES; i++)
        ftm_field_store(&res_roots[i], NULL);
    uint64_t objs2 = objects_alive(base), alive2 = alive_nodes();
    ssize_t n2 = collect_full(when);
    uint64_t objs3 = objects_alive(base), alive3 = alive_nodes();
    if (alive3 != 0 || objs3 != 0) {
        ssize_t n3 = collect_full(when);
        stress_fail("%s: %llu of %llu nodes, %llu of %llu objects (cyclic garbage) survived a "
                    "full collection with every mutator gone (it returned %zd; a second one "
                    "returned %zd and left %llu nodes, %llu objects)",
                    when, (unsigned long long)alive3, (unsigned long long)alive2,
                    (unsigned long long)objs3, (unsigned long long)objs2, n2, n3,
                    (unsigned long long)alive_nodes(), (unsigned long long)objects_alive(base));
    }
    if ((uint64_t)n2 != objs2)
        stress_fail("%s: the full collection returned %zd; it freed %llu objects", when, n2,
                    (unsigned long long)objs2);
    pr.final_found = (uint64_t)n2;
    obj_registry_expect_all_freed(0, when);
    pr.chunks = leak_check(base, when);
    if (ftm_gc_get_freeze_count() != 0)
        stress_fail("%s: %zu objects left frozen", when, ftm_gc_get_freeze_count());
    stress_note("phase %d (%s): %.2f s, %llu nodes made; at the end %llu reachable, %llu "
                "garbage nodes for the quiescent collection (%zd objects), %llu objects "
                "collected after the roots were dropped (%llu objects left by RC)",
                p, p == 1 ? "plain" : "finalizers", pr.secs, (unsigned long long)pr.nodes,
                (unsigned long long)pr.reachable, (unsigned long long)pr.left_garbage, n1,
                (unsigned long long)pr.final_found, (unsigned long long)objs2);
    return pr;
}

int main(int argc, char **argv)
{
    tls_harness = true;
    stress_parse(&opt, argc, argv, 6,
                 "environment: FTMEM_GC_THREADS=N  automatic collections on N background "
                 "collector threads\n"
                 "             GC_VERIFY_PHASES=1|2|12  phases to run (1 plain, 2 finalizers; "
                 "default 12)\n"
                 "             GC_VERIFY_SHARED_TRACK=1  untrack/track shared nodes too\n"
                 "             GC_VERIFY_NO_EXCHANGE=1  take old values with load + store, "
                 "not ftm_field_exchange (diagnostic)\n"
                 "             GC_VERIFY_STRICT=1  fail when ftm_gc_get_objects lists collected "
                 "garbage not yet freed, or a get of a new weakref to a resurrected node "
                 "is refused\n");
    nslots = opt.threads;
    gens = opt.smoke ? 3 : 8;
    ops_per_gen = opt.smoke ? 4000 : 25000;
    nroots = opt.smoke ? 256 : 2048;
    gc_t0 = opt.smoke ? 600 : 1500;
    /* ids: at most RING_MAX + 2 nodes per op, finalizers' allocations, warm-up */
    uint64_t ops_max = 2ull * (uint64_t)nslots * (uint64_t)gens * (uint64_t)ops_per_gen * 3 / 2;
    uint64_t cap = ops_max * (RING_MAX + 2) + 100000;
    obj_registry_init(opt.seed, cap);
    wdead = calloc((size_t)cap, 1);
    fin_runs = calloc((size_t)cap, 1);
    wrec_cap = cap;
    wrecs = calloc((size_t)wrec_cap, sizeof *wrecs);
    roots = calloc((size_t)nroots, sizeof *roots);
    slots = calloc((size_t)nslots, sizeof *slots);
    objs_buf = malloc(OBJS_CAP * sizeof *objs_buf);
    if (!wdead || !fin_runs || !wrecs || !roots || !slots || !objs_buf)
        stress_fail("out of memory for the harness");
    if (gens > MAXGEN)
        stress_fail("harness: too many generations");
    const char *bg = getenv("FTMEM_GC_THREADS");
    bg_threads = bg ? atoi(bg) : 0;
    if (bg_threads > 16)
        bg_threads = 16;
    if (bg_threads < 0)
        bg_threads = 0;
    phases = getenv("GC_VERIFY_PHASES");
    if (phases == NULL || *phases == '\0')
        phases = "12";
    const char *nx = getenv("GC_VERIFY_NO_EXCHANGE");
    no_exchange = nx && *nx && *nx != '0';
    const char *sv = getenv("GC_VERIFY_STRICT");
    strict = sv && *sv && *sv != '0';
    const char *st = getenv("GC_VERIFY_SHARED_TRACK");
    shared_track = st && *st && *st != '0';
    {
        void *p = ftm_malloc(8192); /* sizeof a chunk of cells (gc.c) */
        if (p == NULL)
            stress_fail("ftm_malloc(8192) failed");
        chunk_block = (unsigned)ftm_usable_size(p);
        ftm_free(p);
    }
    stress_note("phases %s; collector: ftm_gc_collect thread%s%s; threshold0 %u; weak "
                "references %s%s%s",
                phases, bg ? ", FTMEM_GC_THREADS=" : "", bg ? bg : "", gc_t0,
                (ftm_weakref_type.flags & FTM_TYPE_GC) ? "tracked" : "not tracked",
                shared_track ? "; untrack/track of shared nodes" : "",
                no_exchange ? "; exchanges done as load + store" : "");

    if (ftm_gc_callback_add(gc_callback, NULL) != 0)
        stress_fail("ftm_gc_callback_add failed (errno %d)", errno);
    ftm_gc_set_threshold(gc_t0, 10, 10);
    ftm_gc_enable();

    /* warm-up: main's object and collector state, a cycle collected */
    {
        stress_rng_t r0 = stress_rng(opt.seed, 1);
        ftm_object *a = node_new(&r0, false), *b = node_new(&r0, false);
        ftm_field_init(&N(a)->edge[0], ftm_newref(b));
        ftm_field_init(&N(b)->edge[0], ftm_newref(a));
        ftm_weakref *w = wr_make(&r0, a);
        ftm_field_store(&roots[0], a);
        ftm_decref(ftm_field_load(&roots[0]));
        ftm_field_store(&roots[0], NULL);
        ftm_decref(b);
        collect_full("warm-up");
        ftm_weakref_release(w);
        collect_full("warm-up");
        if (alive_nodes() != 0)
            stress_fail("warm-up: a two-node cycle survived a full collection");
    }
    obj_base_t base;
    obj_baseline(&base);
    chunk_live0 = class_live(chunk_block);
    ftm_gc_gen_stats_t gs0[FTM_GC_GENERATIONS], gs1[FTM_GC_GENERATIONS];
    ftm_gc_get_stats(gs0);
    unsigned long long stops0[FTM_GC_GENERATIONS], coll0[FTM_GC_GENERATIONS];
    for (int g = 0; g < FTM_GC_GENERATIONS; g++) {
        stops0[g] = atomic_load(&cb_stops[g]);
        coll0[g] = atomic_load(&cb_collected[g]);
    }

    double t0 = stress_now();
    int nphases = 0;
    for (const char *q = phases; *q; q++)
        if (*q == '1' || *q == '2') {
            run_phase(*q - '0', &base);
            nphases++;
        }
    double t_run = stress_now() - t0;

    /* the collector's statistics against what the callbacks saw (automatic
     * collections stopped, a background one allowed to finish) */
    ftm_gc_disable();
    unsigned long long stops[FTM_GC_GENERATIONS], coll[FTM_GC_GENERATIONS];
    for (int tries = 0;; tries++) {
        for (int g = 0; g < FTM_GC_GENERATIONS; g++) {
            stops[g] = atomic_load(&cb_stops[g]);
            coll[g] = atomic_load(&cb_collected[g]);
        }
        ftm_gc_get_stats(gs1);
        bool same = true;
        for (int g = 0; g < FTM_GC_GENERATIONS; g++)
            same = same && stops[g] == atomic_load(&cb_stops[g]) &&
                   coll[g] == atomic_load(&cb_collected[g]);
        if (same || tries == 100)
            break;
        ftm_thread_detach();
        struct timespec ts = { 0, 10000000 };
        nanosleep(&ts, NULL);
        ftm_thread_attach();
    }
    stats_monotonic(gs0, gs1);
    stats_sane(gs1, "at the end");
    unsigned long long tot_coll = 0, tot_collected = 0, tot_aband = 0;
    for (int g = 0; g < FTM_GC_GENERATIONS; g++) {
        unsigned long long dc = gs1[g].collections - gs0[g].collections;
        unsigned long long dcol = gs1[g].collected - gs0[g].collected;
        unsigned long long dab = gs1[g].abandoned - gs0[g].abandoned;
        /* an abandoned collection also calls "stop" (collected 0) */
        if (stops[g] - stops0[g] != dc + dab || coll[g] - coll0[g] != dcol)
            stress_fail("generation %d: ftm_gc_get_stats says %llu collections + %llu abandoned, "
                        "%llu collected; the callbacks saw %llu stops, %llu collected",
                        g, dc, dab, dcol, stops[g] - stops0[g], coll[g] - coll0[g]);
        tot_coll += dc;
        tot_collected += dcol;
        tot_aband += gs1[g].abandoned - gs0[g].abandoned;
    }
    unsigned long long done = atomic_load(&col_done), eagain = atomic_load(&col_eagain);
    if (done == 0)
        stress_fail("the collector thread's %llu collections were all abandoned (EAGAIN)", eagain);
    if (tot_coll < done)
        stress_fail("ftm_gc_get_stats counts %llu collections, the collector thread alone "
                    "completed %llu",
                    tot_coll, done);
    if (tot_aband < eagain)
        stress_fail("ftm_gc_get_stats counts %llu abandoned collections, the collector thread "
                    "saw %llu EAGAINs",
                    tot_aband, eagain);
    if (tot_collected < atomic_load(&col_found))
        stress_fail("ftm_gc_get_stats counts %llu collected, the collector thread's "
                    "collections returned %llu",
                    tot_collected, atomic_load(&col_found));
    unsigned long long all_stops = 0;
    for (int g = 0; g < FTM_GC_GENERATIONS; g++)
        all_stops += atomic_load(&cb_stops[g]);
    if (atomic_load(&cb_starts) != all_stops)
        stress_fail("%llu 'start' callbacks, %llu 'stop' callbacks", atomic_load(&cb_starts),
                    all_stops);
    ftm_gc_enable();

    char line[1024];
    size_t off = 0;
    for (int i = 0; i < C_N; i++)
        off += (size_t)snprintf(line + off, sizeof line - off, "%s%llu %s", i ? ", " : "",
                                atomic_load(&counts[i]), cnames[i]);
    stress_note("ops: %s", line);
    stress_note("finalizers %llu (resurrected %llu, allocated %llu), weakref callbacks %llu, "
                "nested collect calls %llu, gets of new weakrefs to resurrected nodes refused %llu; "
                "get_objects checks %llu (%llu objects, %llu of them collected garbage not yet "
                "freed), freezes %llu",
                atomic_load(&n_fin), atomic_load(&n_resurrect), atomic_load(&n_fin_alloc),
                atomic_load(&n_wr_cb), atomic_load(&n_nested), atomic_load(&n_wr_refused),
                atomic_load(&col_objs_checks),
                atomic_load(&col_objs_seen), atomic_load(&col_zombies), atomic_load(&col_freezes));
    stress_note("OK: %d slots x %d threads x ~%d ops x %d phases, %llu nodes (all freed); "
                "collector thread: %llu collections completed, %llu abandoned (EAGAIN), %llu "
                "found; all collections: %llu (%llu abandoned), %llu collected; %.2f s",
                nslots, gens, ops_per_gen, nphases, (unsigned long long)obj_ids_used(), done, eagain,
                atomic_load(&col_found), tot_coll, tot_aband, tot_collected, t_run);
    free(objs_buf);
    free(slots);
    free(roots);
    free(wrecs);
    free(fin_runs);
    free(wdead);
    free(obj_reg.state);
    return 0;
}
