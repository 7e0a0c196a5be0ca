/* binarytrees.c — the Benchmarks Game's binary-trees, single-threaded, on
 * three memory managers (gc_trees.h): ftm-bench-binarytrees (ftmem),
 * ftm-bench-binarytrees-boehm, ftm-bench-binarytrees-malloc.
 *
 *   ftm-bench-binarytrees[-boehm|-malloc] [-d DEPTH] [--cyclic] [--untracked]
 *
 * The program as published (benchmarksgame-team.pages.debian.net,
 * "binary-trees"): max_depth = max(6, DEPTH); a "stretch" tree of depth
 * max_depth + 1 is built, checked and dropped; a long-lived tree of depth
 * max_depth is built; then for depth d = 4, 6, ..., max_depth,
 * 2^(max_depth - d + 4) trees of depth d are built bottom-up, checked
 * (node count) and dropped, one at a time; finally the long-lived tree is
 * checked.  The standard output lines are printed, then one JSON line
 * (common.h's format): wall seconds, process CPU seconds, peak RSS
 * (ru_maxrss; run each variant in its own process), and what the memory
 * manager did.  `checksum` is the sum of every check, the same for every
 * implementation and variant; a wrong long-lived check exits 3.
 *
 * With --cyclic every child points back at its parent: dropping a tree
 * leaves a cycle per edge, which only a tracing collector (ftmem's cycle
 * collector, Boehm) reclaims.
 */
#include "gc_trees.h"

static tnode *bottom_up_tree(int depth)
{
    if (depth <= 0)
        return tn_new(NULL, NULL);
    tnode *l = bottom_up_tree(depth - 1);
    tnode *r = bottom_up_tree(depth - 1);
    return tn_new(l, r);
}

static uint64_t item_check(tnode *t)
{
    tnode *l = tn_left(t);
    if (l == NULL)
        return 1;
    return 1 + item_check(l) + item_check(tn_right(t));
}

int main(int argc, char **argv)
{
    int n = (int)gcb_arg_long(argc, argv, "-d", "--depth", 16);
    tn_init(argc, argv);
    const int min_depth = 4;
    int max_depth = n < min_depth + 2 ? min_depth + 2 : n;
    uint64_t sum = 0, errors = 0;
    double t0 = bench_now();

    int stretch = max_depth + 1;
    tnode *t = bottom_up_tree(stretch);
    uint64_t c = item_check(t);
    tn_release(t);
    printf("stretch tree of depth %d\t check: %" PRIu64 "\n", stretch, c);
    sum += c;
    errors += c != ((uint64_t)1 << (stretch + 1)) - 1;

    tnode *long_lived = bottom_up_tree(max_depth);
    for (int d = min_depth; d <= max_depth; d += 2) {
        uint64_t iterations = (uint64_t)1 << (max_depth - d + min_depth);
        uint64_t check = 0;
        for (uint64_t i = 1; i <= iterations; i++) {
            t = bottom_up_tree(d);
            check += item_check(t);
            tn_release(t);
        }
        printf("%" PRIu64 "\t trees of depth %d\t check: %" PRIu64 "\n", iterations, d, check);
        sum += check;
        errors += check != iterations * (((uint64_t)1 << (d + 1)) - 1);
    }
    c = item_check(long_lived);
    printf("long lived tree of depth %d\t check: %" PRIu64 "\n", max_depth, c);
    sum += c;
    errors += c != ((uint64_t)1 << (max_depth + 1)) - 1;
    double secs = bench_now() - t0;

    bench_result_t res;
    bench_result_init(&res, "binarytrees", 1, "tree node allocated");
    res.ops = tn_allocated;
    res.seconds = secs;
    res.checksum = sum;
    res.errors = errors;
    bench_result_add(&res, "depth", max_depth);
    bench_result_add(&res, "cyclic", tn_cyclic);
    tn_report(&res);
    tn_release(long_lived);
    bench_result_print(&res);
    fprintf(stderr, "binarytrees %s %s depth %d: %.3f s\n", GCB_IMPL, tn_variant, max_depth, secs);
    return errors ? 3 : 0;
}
