/* gc_trees.h — the binary-tree node of binarytrees.c and gcbench.c on
 * three memory managers, chosen at build time (gc_common.h):
 *
 *   GCB_FTM     an ftmem object per node.  Variants (tn_init):
 *                 acyclic    FTM_TYPE_GC type, left/right only: reference
 *                            counting frees every tree; the collector still
 *                            runs (tracked objects, CPython's thresholds)
 *                 untracked  the same node without FTM_TYPE_GC: reference
 *                            counting alone (the collector never runs)
 *                 cyclic     FTM_TYPE_GC with a parent pointer in every
 *                            child: no tree is ever freed by reference
 *                            counting, all garbage waits for the collector
 *   GCB_BOEHM   GC_MALLOC per node, never freed (cyclic: + parent pointer)
 *   GCB_MALLOC  malloc per node, trees freed recursively (acyclic only)
 *
 * The includer may define TNODE_EXTRA (extra members, e.g. GCBench's two
 * ints) before including.  The parent pointer is the last member and is
 * not allocated at all in the acyclic variants, so nodes are the same size
 * everywhere but for the header: ftmem 24 B + fields, Boehm and malloc just
 * the fields.
 */
#ifndef FTM_BENCH_GC_TREES_H
#define FTM_BENCH_GC_TREES_H

#include "gc_common.h"

#include <stddef.h>

#if defined(GCB_FTM)
#include <ftmem.h>
#elif defined(GCB_BOEHM)
#define GC_THREADS /* the thread-aware API (GC_get_parallel); one thread runs */
#include <gc/gc.h>
#endif

#ifndef TNODE_EXTRA
#define TNODE_EXTRA
#endif

#if defined(GCB_FTM)
typedef struct tnode {
    ftm_object ob;
    ftm_field left, right;
    TNODE_EXTRA
    ftm_field parent; /* cyclic variant only */
} tnode;
#else
typedef struct tnode {
    struct tnode *left, *right;
    TNODE_EXTRA
    struct tnode *parent; /* cyclic variant only */
} tnode;
#endif

#define TNODE_SIZE_ACYCLIC offsetof(tnode, parent)
#define TNODE_SIZE_CYCLIC sizeof(tnode)

static bool tn_cyclic;
static const char *tn_variant = "acyclic";
static size_t tn_size;
static uint64_t tn_allocated;

static void tn_die(const char *what)
{
    fprintf(stderr, "%s failed: %s\n", what, strerror(errno));
    exit(2);
}

/* ---- ftmem -------------------------------------------------------------------- */
#if defined(GCB_FTM)

static int tn_traverse(ftm_object *self, ftm_visitproc visit, void *arg)
{
    tnode *n = (tnode *)self;
    ftm_object *o;
    int r;
    if ((o = ftm_field_peek(&n->left)) != NULL && (r = visit(o, arg)) != 0)
        return r;
    if ((o = ftm_field_peek(&n->right)) != NULL && (r = visit(o, arg)) != 0)
        return r;
    return 0;
}

static int tn_traverse_cyclic(ftm_object *self, ftm_visitproc visit, void *arg)
{
    int r = tn_traverse(self, visit, arg);
    if (r != 0)
        return r;
    ftm_object *o = ftm_field_peek(&((tnode *)self)->parent);
    return o != NULL ? visit(o, arg) : 0;
}

static void tn_clear(ftm_object *self)
{
    tnode *n = (tnode *)self;
    ftm_field_clear(&n->left);
    ftm_field_clear(&n->right);
}

static void tn_clear_cyclic(ftm_object *self)
{
    tn_clear(self);
    ftm_field_clear(&((tnode *)self)->parent);
}

static ftm_type tn_type_acyclic = {.name = "tree-node", .basic_size = TNODE_SIZE_ACYCLIC,
                                   .flags = FTM_TYPE_GC, .traverse = tn_traverse, .clear = tn_clear};
static ftm_type tn_type_untracked = {.name = "tree-node-untracked", .basic_size = TNODE_SIZE_ACYCLIC,
                                     .traverse = tn_traverse, .clear = tn_clear};
static ftm_type tn_type_cyclic = {.name = "tree-node-parent", .basic_size = TNODE_SIZE_CYCLIC,
                                  .flags = FTM_TYPE_GC, .traverse = tn_traverse_cyclic,
                                  .clear = tn_clear_cyclic};
static ftm_type *tn_type;

static inline tnode *tn_left(tnode *n) { return (tnode *)ftm_field_peek(&n->left); }
static inline tnode *tn_right(tnode *n) { return (tnode *)ftm_field_peek(&n->right); }

/* a new node owning l and r (new references, may be NULL) */
static inline tnode *tn_new(tnode *l, tnode *r)
{
    tnode *n = (tnode *)ftm_new(tn_type);
    if (bench_unlikely(n == NULL))
        tn_die("ftm_new");
    tn_allocated++;
    if (l) {
        ftm_field_init(&n->left, &l->ob);
        if (tn_cyclic)
            ftm_field_store(&l->parent, ftm_newref(&n->ob));
    }
    if (r) {
        ftm_field_init(&n->right, &r->ob);
        if (tn_cyclic)
            ftm_field_store(&r->parent, ftm_newref(&n->ob));
    }
    return n;
}

/* a fresh leaf as n's left or right child (top-down construction): the
 * child's parent is set while nothing else can see the child */
static inline tnode *tn_add_child(tnode *n, bool right)
{
    tnode *c = (tnode *)ftm_new(tn_type);
    if (bench_unlikely(c == NULL))
        tn_die("ftm_new");
    tn_allocated++;
    if (tn_cyclic)
        ftm_field_init(&c->parent, ftm_newref(&n->ob));
    ftm_field_store(right ? &n->right : &n->left, &c->ob);
    return c;
}

static inline void tn_release(tnode *n) { ftm_decref(&n->ob); }

/* untyped memory (GCBench's array of doubles) */
static inline void *tn_raw_alloc(size_t bytes) { return ftm_malloc(bytes); }
static inline void tn_raw_free(void *p) { ftm_free(p); }

/* ---- Boehm ---------------------------------------------------------------------- */
#elif defined(GCB_BOEHM)

static inline tnode *tn_left(tnode *n) { return n->left; }
static inline tnode *tn_right(tnode *n) { return n->right; }

static inline tnode *tn_new(tnode *l, tnode *r)
{
    tnode *n = GC_MALLOC(tn_size);
    if (bench_unlikely(n == NULL))
        tn_die("GC_MALLOC");
    tn_allocated++;
    n->left = l;
    n->right = r;
    if (tn_cyclic) {
        if (l)
            l->parent = n;
        if (r)
            r->parent = n;
    }
    return n;
}

static inline tnode *tn_add_child(tnode *n, bool right)
{
    tnode *c = tn_new(NULL, NULL);
    if (tn_cyclic)
        c->parent = n;
    if (right)
        n->right = c;
    else
        n->left = c;
    return c;
}

static inline void tn_release(tnode *n) { (void)n; }
static inline void *tn_raw_alloc(size_t bytes) { return GC_MALLOC_ATOMIC(bytes); }
static inline void tn_raw_free(void *p) { (void)p; }

/* ---- malloc --------------------------------------------------------------------- */
#else

static inline tnode *tn_left(tnode *n) { return n->left; }
static inline tnode *tn_right(tnode *n) { return n->right; }

static inline tnode *tn_new(tnode *l, tnode *r)
{
    tnode *n = malloc(tn_size);
    if (bench_unlikely(n == NULL))
        tn_die("malloc");
    tn_allocated++;
    n->left = l;
    n->right = r;
    return n;
}

static inline tnode *tn_add_child(tnode *n, bool right)
{
    tnode *c = tn_new(NULL, NULL);
    if (right)
        n->right = c;
    else
        n->left = c;
    return c;
}

static void tn_release(tnode *n)
{
    if (n->left) {
        tn_release(n->left);
        tn_release(n->right);
    }
    free(n);
}

static inline void *tn_raw_alloc(size_t bytes) { return malloc(bytes); }
static inline void tn_raw_free(void *p) { free(p); }
#endif

/* Set the variant from argv ("--cyclic", "--untracked"); exits on a
 * variant this implementation does not have. */
static void tn_init(int argc, char **argv)
{
    tn_cyclic = gcb_flag(argc, argv, "--cyclic");
    bool untracked = gcb_flag(argc, argv, "--untracked");
    tn_size = tn_cyclic ? TNODE_SIZE_CYCLIC : TNODE_SIZE_ACYCLIC;
    tn_variant = tn_cyclic ? "cyclic" : untracked ? "untracked" : "acyclic";
#if defined(GCB_FTM)
    if (tn_cyclic && untracked) {
        fprintf(stderr, "--cyclic needs the collector: not with --untracked\n");
        exit(2);
    }
    tn_type = tn_cyclic ? &tn_type_cyclic : untracked ? &tn_type_untracked : &tn_type_acyclic;
#elif defined(GCB_BOEHM)
    if (untracked) {
        fprintf(stderr, "--untracked is an ftmem variant\n");
        exit(2);
    }
    GC_INIT();
    GC_start_performance_measurement(); /* GC_get_full_gc_total_time */
#else
    if (tn_cyclic || untracked) {
        fprintf(stderr, "malloc/free: acyclic only\n");
        exit(2);
    }
#endif
}

/* What the memory manager did, as extras of the result line. */
static void tn_report(bench_result_t *res)
{
    bench_result_add(res, "node_bytes", (double)
#if defined(GCB_FTM)
                     tn_type->basic_size
#else
                     tn_size
#endif
    );
    bench_result_add(res, "nodes_allocated", (double)tn_allocated);
    bench_result_add(res, "cpu_s", gcb_process_cpu());
    bench_result_add(res, "minor_faults", (double)gcb_minor_faults());
#if defined(GCB_FTM)
    ftm_gc_gen_stats_t st[FTM_GC_GENERATIONS];
    ftm_gc_get_stats(st);
    double pmax = 0, ptot = 0, dtot = 0, dmax = 0;
    for (int g = 0; g < FTM_GC_GENERATIONS; g++) {
        char *k = malloc(32);
        snprintf(k, 32, "gc%d_collections", g);
        bench_result_add(res, k, (double)st[g].collections);
        k = malloc(32);
        snprintf(k, 32, "gc%d_collected", g);
        bench_result_add(res, k, (double)st[g].collected);
        pmax = st[g].pause_max > pmax ? st[g].pause_max : pmax;
        dmax = st[g].duration_max > dmax ? st[g].duration_max : dmax;
        ptot += st[g].pause_total;
        dtot += st[g].duration_total;
    }
    bench_result_add(res, "gc_abandoned", (double)(st[0].abandoned + st[1].abandoned + st[2].abandoned));
    bench_result_add(res, "gc_duration_total_s", dtot);
    bench_result_add(res, "gc_duration_max_ms", dmax * 1e3);
    bench_result_add(res, "gc_pause_total_s", ptot);
    bench_result_add(res, "gc_pause_max_ms", pmax * 1e3);
    ftm_object_stats_t os;
    ftm_object_stats_get(&os);
    bench_result_add(res, "objects_live_at_end", (double)(os.created - os.freed));
#elif defined(GCB_BOEHM)
    bench_result_add(res, "gc_collections", (double)GC_get_gc_no());
    bench_result_add(res, "gc_full_total_ms", (double)GC_get_full_gc_total_time());
    bench_result_add(res, "boehm_heap_kib", (double)(GC_get_heap_size() / 1024));
    bench_result_add(res, "boehm_parallel_markers", (double)GC_get_parallel());
#endif
}

#endif /* FTM_BENCH_GC_TREES_H */
