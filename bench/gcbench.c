/* gcbench.c — GCBench (John Ellis and Pete Kovac's Java benchmark, as
 * adapted to C by Hans Boehm), single-threaded, on three memory managers
 * (gc_trees.h): ftm-bench-gcbench (ftmem), ftm-bench-gcbench-boehm,
 * ftm-bench-gcbench-malloc.
 *
 *   ftm-bench-gcbench[-boehm|-malloc] [--max-depth D] [--cyclic] [--untracked]
 *
 * As published: nodes of two child pointers and two ints; a "stretch"
 * tree of depth kStretchTreeDepth (18) built bottom-up and dropped; a
 * long-lived tree of depth kLongLivedTreeDepth (16) built top-down
 * (Populate) and a long-lived array of kArraySize (500000) doubles, half
 * filled, kept to the end; then for depth d = 4, 6, ..., kMaxTreeDepth (16)
 * NumIters(d) = 2 TreeSize(18) / TreeSize(d) trees of depth d are built
 * top-down and dropped, then as many bottom-up and dropped (TreeSize(i) =
 * 2^(i+1) - 1).  --max-depth D (for smoke runs) uses D for the long-lived
 * and maximum depths and D + 2 for the stretch tree.  Ends by checking the
 * long-lived tree (node count) and array.  One JSON line (common.h's
 * format): wall and CPU seconds, peak RSS, the top-down and bottom-up
 * construction times, what the memory manager did.
 *
 * --cyclic: every child also points at its parent (the last member of
 * the node, not allocated otherwise), so all garbage is cyclic.
 */
#define TNODE_EXTRA int32_t i, j;
#include "gc_trees.h"

static int kStretchTreeDepth = 18;
static int kLongLivedTreeDepth = 16;
static const size_t kArraySize = 500000;
static const int kMinTreeDepth = 4;
static int kMaxTreeDepth = 16;

static uint64_t tree_size(int i) { return ((uint64_t)1 << (i + 1)) - 1; }
static uint64_t num_iters(int i) { return 2 * tree_size(kStretchTreeDepth) / tree_size(i); }

/* top-down: children are attached to a node already in the tree */
static void populate(int depth, tnode *node)
{
    if (depth <= 0)
        return;
    depth--;
    tnode *l = tn_add_child(node, false);
    tnode *r = tn_add_child(node, true);
    populate(depth, l);
    populate(depth, r);
}

/* bottom-up */
static tnode *make_tree(int depth)
{
    if (depth <= 0)
        return tn_new(NULL, NULL);
    tnode *l = make_tree(depth - 1);
    tnode *r = make_tree(depth - 1);
    return tn_new(l, r);
}

static uint64_t count_nodes(tnode *t)
{
    tnode *l = tn_left(t);
    return 1 + (l ? count_nodes(l) : 0) + (tn_right(t) ? count_nodes(tn_right(t)) : 0);
}

static double td_total, bu_total;

static void time_construction(int depth)
{
    uint64_t iters = num_iters(depth);
    double t0 = bench_now();
    for (uint64_t i = 0; i < iters; i++) {
        tnode *t = tn_new(NULL, NULL);
        populate(depth, t);
        tn_release(t);
    }
    double t1 = bench_now();
    for (uint64_t i = 0; i < iters; i++) {
        tnode *t = make_tree(depth);
        tn_release(t);
    }
    double t2 = bench_now();
    td_total += t1 - t0;
    bu_total += t2 - t1;
    printf("Creating %" PRIu64 " trees of depth %d\tTop down construction took %.0f msec\t"
           "Bottom up construction took %.0f msec\n",
           iters, depth, (t1 - t0) * 1e3, (t2 - t1) * 1e3);
}

int main(int argc, char **argv)
{
    long md = gcb_arg_long(argc, argv, "--max-depth", NULL, 0);
    if (md) {
        if (md < kMinTreeDepth || md > 24) {
            fprintf(stderr, "--max-depth: 4..24\n");
            return 2;
        }
        kMaxTreeDepth = kLongLivedTreeDepth = (int)md;
        kStretchTreeDepth = (int)md + 2;
    }
    tn_init(argc, argv);
    printf("Garbage Collector Test\n Stretching memory with a binary tree of depth %d\n", kStretchTreeDepth);
    double t0 = bench_now();

    tnode *t = make_tree(kStretchTreeDepth);
    tn_release(t);

    printf(" Creating a long-lived binary tree of depth %d\n", kLongLivedTreeDepth);
    tnode *long_lived = tn_new(NULL, NULL);
    populate(kLongLivedTreeDepth, long_lived);

    printf(" Creating a long-lived array of %zu doubles\n", kArraySize);
    double *array = tn_raw_alloc(kArraySize * sizeof(double));
    if (array == NULL) {
        fprintf(stderr, "array allocation failed\n");
        return 2;
    }
    memset(array, 0, kArraySize * sizeof(double));
    for (size_t i = 0; i < kArraySize / 2; i++)
        array[i] = 1.0 / (double)i;

    for (int d = kMinTreeDepth; d <= kMaxTreeDepth; d += 2)
        time_construction(d);

    uint64_t errors = 0;
    uint64_t ll = count_nodes(long_lived);
    if (ll != tree_size(kLongLivedTreeDepth) || array[1000] != 1.0 / 1000) {
        fprintf(stderr, "Failed: long-lived tree has %" PRIu64 " nodes (want %" PRIu64 "), array[1000] %g\n",
                ll, tree_size(kLongLivedTreeDepth), array[1000]);
        errors++;
    }
    double secs = bench_now() - t0;
    printf("Completed in %.0f msec\n", secs * 1e3);

    bench_result_t res;
    bench_result_init(&res, "gcbench", 1, "tree node allocated");
    res.ops = tn_allocated;
    res.seconds = secs;
    res.checksum = tn_allocated + ll;
    res.errors = errors;
    bench_result_add(&res, "max_depth", kMaxTreeDepth);
    bench_result_add(&res, "cyclic", tn_cyclic);
    bench_result_add(&res, "top_down_s", td_total);
    bench_result_add(&res, "bottom_up_s", bu_total);
    tn_report(&res);
    tn_release(long_lived);
    tn_raw_free(array);
    bench_result_print(&res);
    fprintf(stderr, "gcbench %s %s: %.3f s\n", GCB_IMPL, tn_variant, secs);
    return errors ? 3 : 0;
}
