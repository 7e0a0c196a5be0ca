/* gc_ftm.h — the ftmem side of the collector benchmarks' graph
 * (gc_pause.c, gc_throughput.c): a node type with two references and an
 * integer, a root array type, and the builder of gc_common.h's graph.
 *
 * Both types are FTM_TYPE_GC and follow gc.h's rules: every reference is
 * an ftm_field, traverse reads with ftm_field_peek, clear drops with
 * ftm_field_clear.  No free list (what a runtime's plain class gets).
 */
#ifndef FTM_BENCH_GC_FTM_H
#define FTM_BENCH_GC_FTM_H

#include "gc_common.h"

#include <ftmem.h>

typedef struct gcb_node {
    ftm_object ob;
    ftm_field a, b;
    int64_t payload;
} gcb_node;

typedef struct gcb_root {
    ftm_varobject ob;
    ftm_field items[];
} gcb_root;

static int gcb_node_traverse(ftm_object *self, ftm_visitproc visit, void *arg)
{
    gcb_node *n = (gcb_node *)self;
    ftm_object *o;
    int r;
    if ((o = ftm_field_peek(&n->a)) != NULL && (r = visit(o, arg)) != 0)
        return r;
    if ((o = ftm_field_peek(&n->b)) != NULL && (r = visit(o, arg)) != 0)
        return r;
    return 0;
}

static void gcb_node_clear(ftm_object *self)
{
    gcb_node *n = (gcb_node *)self;
    ftm_field_clear(&n->a);
    ftm_field_clear(&n->b);
}

static int gcb_root_traverse(ftm_object *self, ftm_visitproc visit, void *arg)
{
    gcb_root *t = (gcb_root *)self;
    size_t n = ftm_var_size(self);
    for (size_t i = 0; i < n; i++) {
        ftm_object *o = ftm_field_peek(&t->items[i]);
        int r = o != NULL ? visit(o, arg) : 0;
        if (r != 0)
            return r;
    }
    return 0;
}

static void gcb_root_clear(ftm_object *self)
{
    gcb_root *t = (gcb_root *)self;
    size_t n = ftm_var_size(self);
    for (size_t i = 0; i < n; i++)
        ftm_field_clear(&t->items[i]);
}

static ftm_type gcb_node_type = {
    .name = "gcb-node",
    .basic_size = sizeof(gcb_node),
    .flags = FTM_TYPE_GC,
    .traverse = gcb_node_traverse,
    .clear = gcb_node_clear,
};

static ftm_type gcb_root_type = {
    .name = "gcb-root",
    .basic_size = sizeof(gcb_root),
    .item_size = sizeof(ftm_field),
    .flags = FTM_TYPE_GC,
    .traverse = gcb_root_traverse,
    .clear = gcb_root_clear,
};

static inline void *gcb_ftm_check(void *p, const char *what)
{
    if (p == NULL) {
        fprintf(stderr, "ftm-bench-gc: %s failed: %s\n", what, strerror(errno));
        exit(2);
    }
    return p;
}

/* A new node (refcount 1) holding new references to a and b (may be NULL). */
static inline gcb_node *gcb_node_new(ftm_object *a, ftm_object *b, int64_t payload)
{
    gcb_node *n = gcb_ftm_check(ftm_new(&gcb_node_type), "ftm_new");
    n->payload = payload;
    /* init: nothing else can reach n yet (rt_tuple_new does the same) */
    if (a)
        ftm_field_init(&n->a, ftm_newref(a));
    if (b)
        ftm_field_init(&n->b, ftm_newref(b));
    return n;
}

/* The graph of gc_common.h: a root array of n nodes, node i referencing
 * nodes gcb_edge_a(i) and gcb_edge_b(i).  The caller decides whether the
 * collector may run meanwhile (the benchmarks build with it disabled, as
 * gc_py.py does). */
static inline gcb_root *gcb_graph_build(size_t n)
{
    gcb_root *r = gcb_ftm_check(ftm_new_var(&gcb_root_type, n), "ftm_new_var(root)");
    for (size_t i = 0; i < n; i++)
        ftm_field_store(&r->items[i], (ftm_object *)gcb_node_new(NULL, NULL, (int64_t)i));
    for (size_t i = 0; i < n; i++) {
        gcb_node *x = (gcb_node *)ftm_field_peek(&r->items[i]);
        ftm_field_store(&x->a, ftm_newref(ftm_field_peek(&r->items[gcb_edge_a(i, n)])));
        ftm_field_store(&x->b, ftm_newref(ftm_field_peek(&r->items[gcb_edge_b(i, n)])));
    }
    return r;
}

/* Collector statistics as extras, prefix "gc_" (generation gen). */
static inline void gcb_ftm_stats_report(bench_result_t *res, int gen, const ftm_gc_gen_stats_t *before)
{
    ftm_gc_gen_stats_t st[FTM_GC_GENERATIONS];
    ftm_gc_get_stats(st);
    const ftm_gc_gen_stats_t *s = &st[gen];
    ftm_gc_gen_stats_t z = {0};
    const ftm_gc_gen_stats_t *b = before ? &before[gen] : &z;
    double coll = (double)(s->collections - b->collections);
    bench_result_add(res, "lib_collections", coll);
    bench_result_add(res, "lib_abandoned", (double)(s->abandoned - b->abandoned));
    bench_result_add(res, "lib_collected", (double)(s->collected - b->collected));
    bench_result_add(res, "lib_candidates_per_collection",
                     coll > 0 ? (double)(s->candidates - b->candidates) / coll : 0);
    bench_result_add(res, "lib_duration_mean_ms",
                     coll > 0 ? (s->duration_total - b->duration_total) * 1e3 / coll : 0);
    bench_result_add(res, "lib_pause_mean_ms", coll > 0 ? (s->pause_total - b->pause_total) * 1e3 / coll : 0);
    /* the maxima are over the process's life (the library keeps no window) */
    bench_result_add(res, "lib_duration_max_ms", s->duration_max * 1e3);
    bench_result_add(res, "lib_pause_max_ms", s->pause_max * 1e3);
    /* all generations together */
    double pmax = 0, ptot = 0, dtot = 0, coll_all = 0;
    for (int g = 0; g < FTM_GC_GENERATIONS; g++) {
        if (st[g].pause_max > pmax)
            pmax = st[g].pause_max;
        ptot += st[g].pause_total - (before ? before[g].pause_total : 0);
        dtot += st[g].duration_total - (before ? before[g].duration_total : 0);
        coll_all += (double)(st[g].collections - (before ? before[g].collections : 0));
    }
    bench_result_add(res, "lib_all_collections", coll_all);
    bench_result_add(res, "lib_all_duration_mean_ms", coll_all > 0 ? dtot * 1e3 / coll_all : 0);
    bench_result_add(res, "lib_all_pause_max_ms", pmax * 1e3);
    bench_result_add(res, "lib_all_pause_total_ms", ptot * 1e3);
}

#endif /* FTM_BENCH_GC_FTM_H */
