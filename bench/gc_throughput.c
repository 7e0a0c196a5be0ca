/* gc_throughput.c — ftm-bench-gc: how fast ftmem's collector examines and
 * frees objects, single-threaded, nothing else running.
 *
 *   ftm-bench-gc full  -n N [--reps K]
 *       Builds gc_common.h's graph (N nodes of two references + the root
 *       array, automatic collection off), runs one full collection to
 *       settle it, then times K more: ns per live object examined
 *       ("live").  Then drops the root: the nodes still reference each
 *       other (every node has in-edges), so reference counting frees
 *       little; one full collection finds and frees the rest ("garbage",
 *       ns per object freed).  gc_py.py full does the same in CPython.
 *   ftm-bench-gc young --old N [--young Y] [--reps K (default 50)] [--refs random|fixed]
 *       The old heap: the graph of N nodes, moved to the oldest generation
 *       by two full collections.  Then K times: Y new nodes (each pointing
 *       at two old ones, held by a new root array), ftm_gc_collect(0)
 *       timed, the young objects dropped (reference counting frees them).
 *       Run at N = 100k and 1M: a young collection should not depend on
 *       the old heap's size.  --refs random (default): the old nodes
 *       pointed at are anywhere in the old heap, so the references a young
 *       collection follows out of the generation miss the cache more as
 *       the heap grows (CPython's do too); --refs fixed: only the first
 *       1000 old nodes are pointed at, which leaves the algorithm's own
 *       dependence on the heap size.  gc_py.py young mirrors it.
 *
 * One JSON line per figure (common.h's format).
 */
#include "gc_ftm.h"

static void usage(const char *argv0)
{
    fprintf(stderr, "usage: %s full -n N [--reps K]\n"
                    "       %s young --old N [--young Y] [--reps K] [--refs random|fixed]\n",
            argv0, argv0);
    exit(2);
}

static double collect_timed(int gen, ssize_t *found)
{
    double t0 = bench_now();
    ssize_t r = ftm_gc_collect(gen);
    double t = bench_now() - t0;
    if (r < 0) {
        fprintf(stderr, "ftm_gc_collect(%d): %s\n", gen, strerror(errno));
        exit(4);
    }
    if (found)
        *found = r;
    return t;
}

static int mode_full(size_t n, long reps)
{
    size_t rss0 = bench_rss_bytes();
    double t0 = bench_now();
    gcb_root *g = gcb_graph_build(n);
    double build_s = bench_now() - t0;
    size_t rss1 = bench_rss_bytes();
    ssize_t found;
    double settle = collect_timed(2, &found);
    ftm_gc_gen_stats_t before[FTM_GC_GENERATIONS];
    ftm_gc_get_stats(before);
    double *t = calloc((size_t)reps, sizeof *t), *cpu = calloc((size_t)reps, sizeof *cpu);
    uint64_t found_live = 0;
    for (long k = 0; k < reps; k++) {
        double c0 = gcb_process_cpu();
        t[k] = collect_timed(2, &found);
        cpu[k] = gcb_process_cpu() - c0;
        found_live += (uint64_t)found;
    }
    double tmax = gcb_max(t, (size_t)reps);
    double med = gcb_median(t, (size_t)reps), cmed = gcb_median(cpu, (size_t)reps);
    bench_result_t res;
    bench_result_init(&res, "gc-full-live", 1, "full collection of a live graph");
    res.ops = (uint64_t)reps;
    res.seconds = med;
    res.errors = found_live; /* nothing live may be found unreachable */
    bench_result_add(&res, "n", (double)n);
    bench_result_add(&res, "ns_per_object", med * 1e9 / (double)(n + 1));
    bench_result_add(&res, "cpu_ns_per_object", cmed * 1e9 / (double)(n + 1));
    bench_result_add(&res, "median_ms", med * 1e3);
    bench_result_add(&res, "max_ms", tmax * 1e3);
    bench_result_add(&res, "settle_ms", settle * 1e3);
    bench_result_add(&res, "build_s", build_s);
    bench_result_add(&res, "bytes_per_object", (double)(rss1 - rss0) / (double)n);
    gcb_ftm_stats_report(&res, 2, before);
    bench_result_print(&res);
    free(t);
    free(cpu);
    if (found_live) {
        fprintf(stderr, "ftm-bench-gc: full collections of a live graph found %" PRIu64
                        " unreachable objects\n", found_live);
        return 3;
    }

    /* all garbage: drop the root */
    ftm_object_stats_t os0, os1;
    ftm_object_stats_get(&os0);
    t0 = bench_now();
    ftm_decref(&g->ob.ob_base);
    double drop_s = bench_now() - t0;
    ftm_object_stats_get(&os1);
    uint64_t freed_by_rc = os1.freed - os0.freed;
    double c0 = gcb_process_cpu();
    double tg = collect_timed(2, &found);
    double cg = gcb_process_cpu() - c0;
    ftm_object_stats_get(&os0);
    uint64_t freed_by_gc = os0.freed - os1.freed;
    bench_result_init(&res, "gc-full-garbage", 1, "full collection freeing a dropped graph");
    res.ops = 1;
    res.seconds = tg;
    bench_result_add(&res, "n", (double)n);
    bench_result_add(&res, "found", (double)found);
    bench_result_add(&res, "freed_by_refcount_on_drop", (double)freed_by_rc);
    bench_result_add(&res, "freed_during_collection", (double)freed_by_gc);
    bench_result_add(&res, "drop_ms", drop_s * 1e3);
    bench_result_add(&res, "ms", tg * 1e3);
    bench_result_add(&res, "ns_per_object", found > 0 ? tg * 1e9 / (double)found : 0);
    bench_result_add(&res, "cpu_ns_per_object", found > 0 ? cg * 1e9 / (double)found : 0);
    bench_result_add(&res, "ns_per_graph_object", tg * 1e9 / (double)(n + 1));
    bench_result_print(&res);
    return 0;
}

static int mode_young(size_t old, size_t young, long reps, size_t span)
{
    gcb_root *g = gcb_graph_build(old);
    collect_timed(2, NULL);
    collect_timed(2, NULL);
    bench_rng_t rng;
    bench_rng_init(&rng, 7, 1);
    const long warm = 3;
    double *t = calloc((size_t)reps, sizeof *t), *cpu = calloc((size_t)reps, sizeof *cpu);
    ftm_gc_gen_stats_t before[FTM_GC_GENERATIONS];
    uint64_t found_total = 0;
    for (long k = -warm; k < reps; k++) {
        if (k == 0)
            ftm_gc_get_stats(before);
        gcb_root *y = gcb_ftm_check(ftm_new_var(&gcb_root_type, young), "ftm_new_var(young)");
        for (size_t i = 0; i < young; i++) {
            uint64_t r = bench_rng_next(&rng);
            ftm_object *a = ftm_field_peek(&g->items[(size_t)(r % span)]);
            ftm_object *b = ftm_field_peek(&g->items[(size_t)((r >> 32) % span)]);
            ftm_field_store(&y->items[i], &gcb_node_new(a, b, (int64_t)i)->ob);
        }
        ssize_t found;
        double c0 = gcb_process_cpu();
        double d = collect_timed(0, &found);
        double c = gcb_process_cpu() - c0;
        if (k >= 0) {
            t[k] = d;
            cpu[k] = c;
            found_total += (uint64_t)found;
        }
        ftm_decref(&y->ob.ob_base);
    }
    double tmax = gcb_max(t, (size_t)reps);
    double med = gcb_median(t, (size_t)reps), cmed = gcb_median(cpu, (size_t)reps);
    bench_result_t res;
    bench_result_init(&res, "gc-young", 1, "collection of generation 0");
    res.ops = (uint64_t)reps;
    res.seconds = med;
    bench_result_add(&res, "old", (double)old);
    bench_result_add(&res, "young", (double)young);
    bench_result_add(&res, "refs_span", (double)span);
    bench_result_add(&res, "median_us", med * 1e6);
    bench_result_add(&res, "cpu_median_us", cmed * 1e6);
    bench_result_add(&res, "max_us", tmax * 1e6);
    bench_result_add(&res, "ns_per_young_object", med * 1e9 / (double)(young + 1));
    bench_result_add(&res, "found", (double)found_total);
    gcb_ftm_stats_report(&res, 0, before);
    bench_result_print(&res);
    free(t);
    free(cpu);
    ftm_decref(&g->ob.ob_base);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage(argv[0]);
    ftm_gc_disable(); /* only the collections asked for here */
    bool young_mode = strcmp(argv[1], "young") == 0;
    long reps = gcb_arg_long(argc, argv, "--reps", "-r", young_mode ? 50 : 5);
    if (reps < 1)
        usage(argv[0]);
    if (strcmp(argv[1], "full") == 0) {
        long n = gcb_arg_long(argc, argv, "-n", NULL, 1000000);
        if (n < 16)
            usage(argv[0]);
        return mode_full((size_t)n, reps);
    }
    if (strcmp(argv[1], "young") == 0) {
        long old = gcb_arg_long(argc, argv, "--old", NULL, 100000);
        long young = gcb_arg_long(argc, argv, "--young", NULL, 2000);
        const char *refs = gcb_arg(argc, argv, "--refs", NULL);
        if (old < 16 || young < 1 || (refs && strcmp(refs, "random") && strcmp(refs, "fixed")))
            usage(argv[0]);
        size_t span = refs && strcmp(refs, "fixed") == 0 && old > 1000 ? 1000 : (size_t)old;
        return mode_young((size_t)old, (size_t)young, reps, span);
    }
    usage(argv[0]);
    return 2;
}
