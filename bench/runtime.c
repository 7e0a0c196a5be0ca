/* runtime.c — ftm-bench-runtime: workloads of the example runtime
 * (examples/runtime: ints, strs, tuples, lists, dicts on ftmem objects),
 * each mirrored line for line by bench/runtime_py.py in CPython, so that
 * bench/run_objects.sh can put the two side by side.
 *
 *   ftm-bench-runtime list    [-n N]   build a list of N ints (append), sum it by
 *                                      index (rt_list_get + unbox), drop it
 *   ftm-bench-runtime dict    [-n N]   N str keys -> int: N sets, then 10 N lookups
 *                                      (same key objects, scattered order)
 *   ftm-bench-runtime tuples  [-n N]   N 3-tuples of existing objects made and dropped
 *   ftm-bench-runtime shared  [-d MS]  2 threads read one list at scattered indices
 *                                      (lock-free rt_list_get) while a third appends
 *                                      (popping back to half when it reaches the cap)
 *   --quick                            smoke size (1/10 of the work, 200 ms time box)
 *
 * A separate binary from ftm-bench-objects (not a mode of it): objects.c
 * measures the object layer alone and links only ftmem, while this links
 * the example runtime (ftmem_rt), which the top-level build only has when
 * examples/runtime is present; and each workload runs in its own process,
 * so the peak RSS (ru_maxrss) reported is that workload's.
 *
 * Timing: wall clock (bench_now; CPython: time.perf_counter), in-process.
 * The one-thread workloads run ROUNDS times and report the best round (the
 * one least disturbed by other load on a shared machine) with the median
 * round beside it, as the Python script does; and, as ops_per_cpu_s, the
 * rate per second of the thread's CPU time in its best round (CPython:
 * time.thread_time), which other load on the machine barely moves.  One JSON line per workload
 * (common.h: bench_result_print); `checksum` is the same in both languages
 * for the fixed-work workloads; `errors` counts wrong values read (exit 3).
 */
#include "common.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "rt.h"

#define ROUNDS 5

static void die(const char *what)
{
    fprintf(stderr, "ftm-bench-runtime: %s failed: %s\n", what, strerror(errno));
    exit(2);
}

static ftm_object *ok(ftm_object *o, const char *what)
{
    if (o == NULL)
        die(what);
    return o;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* best and median of ROUNDS values */
static double best_of(const double *v)
{
    double t[ROUNDS];
    memcpy(t, v, sizeof t);
    qsort(t, ROUNDS, sizeof *t, cmp_double);
    return t[0];
}

static double median_of(const double *v)
{
    double t[ROUNDS];
    memcpy(t, v, sizeof t);
    qsort(t, ROUNDS, sizeof *t, cmp_double);
    return t[ROUNDS / 2];
}

/* CPU time of the calling thread: a second figure beside wall time, robust
 * to other load on a shared machine (CPython side: time.thread_time) */
static double thread_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int ncpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* ---- 1. list of N ints: build, sum, drop -------------------------------------- */

static int wl_list(uint64_t n)
{
    double build[ROUNDS], sum_t[ROUNDS], drop[ROUNDS], total[ROUNDS], cpu[ROUNDS];
    size_t rss0 = bench_rss_bytes();
    int64_t sum = 0;
    uint64_t errors = 0;
    for (int r = 0; r < ROUNDS; r++) {
        double c0 = thread_cpu_now(), t0 = bench_now();
        ftm_object *l = ok(rt_list_new(), "rt_list_new");
        for (uint64_t i = 0; i < n; i++) {
            ftm_object *o = ok(rt_int_new((int64_t)i), "rt_int_new");
            if (rt_list_append(l, o) != 0)
                die("rt_list_append");
            ftm_decref(o);
        }
        double t1 = bench_now();
        sum = 0;
        for (uint64_t i = 0; i < n; i++) {
            ftm_object *x = rt_list_get(l, i);
            sum += rt_int_value(x);
            ftm_decref(x);
        }
        double t2 = bench_now();
        ftm_decref(l);
        double t3 = bench_now();
        cpu[r] = thread_cpu_now() - c0;
        build[r] = t1 - t0;
        sum_t[r] = t2 - t1;
        drop[r] = t3 - t2;
        total[r] = t3 - t0;
        errors += sum != (int64_t)(n * (n - 1) / 2);
    }
    bench_result_t res;
    bench_result_init(&res, "rt-list", 1, "int appended + read back by index + dropped");
    res.ops = n;
    res.seconds = best_of(total);
    res.checksum = (uint64_t)sum;
    res.errors = errors;
    bench_result_add(&res, "n", (double)n);
    bench_result_add(&res, "build_ns_per_item", best_of(build) * 1e9 / (double)n);
    bench_result_add(&res, "sum_ns_per_item", best_of(sum_t) * 1e9 / (double)n);
    bench_result_add(&res, "drop_ns_per_item", best_of(drop) * 1e9 / (double)n);
    bench_result_add(&res, "median_round_s", median_of(total));
    bench_result_add(&res, "ops_per_cpu_s", (double)n / best_of(cpu));
    bench_result_add(&res, "rss_start_kib", (double)(rss0 / 1024));
    bench_result_print(&res);
    return errors ? 3 : 0;
}

/* ---- 2. dict: N str keys -> int, N sets, 10 N lookups -------------------------- */

#define DICT_PROBES 10
#define SCATTER 2654435761u /* Knuth's multiplicative step: scattered, repeatable order */

static int wl_dict(uint64_t n)
{
    uint64_t m = n * DICT_PROBES;
    ftm_object **keys = malloc(n * sizeof *keys), **probes = malloc(m * sizeof *probes);
    if (keys == NULL || probes == NULL)
        die("malloc");
    double kt[ROUNDS], st[ROUNDS], gt[ROUNDS], dt[ROUNDS], total[ROUNDS], cpu[ROUNDS];
    size_t rss0 = bench_rss_bytes();
    int64_t sum = 0;
    uint64_t errors = 0;
    for (int r = 0; r < ROUNDS; r++) {
        char buf[32];
        double t0 = bench_now();
        for (uint64_t i = 0; i < n; i++) {
            int len = snprintf(buf, sizeof buf, "key%" PRIu64, i);
            keys[i] = ok(rt_str_new(buf, (size_t)len), "rt_str_new");
        }
        for (uint64_t j = 0; j < m; j++) /* untimed, as in the Python script */
            probes[j] = keys[(j * SCATTER) % n];
        double c1 = thread_cpu_now(), t1 = bench_now();
        ftm_object *d = ok(rt_dict_new(), "rt_dict_new");
        for (uint64_t i = 0; i < n; i++) {
            ftm_object *v = ok(rt_int_new((int64_t)i), "rt_int_new");
            if (rt_dict_set(d, keys[i], v) != 0)
                die("rt_dict_set");
            ftm_decref(v);
        }
        double t2 = bench_now();
        sum = 0;
        for (uint64_t j = 0; j < m; j++) {
            ftm_object *v = rt_dict_get(d, probes[j]);
            if (v == NULL) {
                errors++;
                continue;
            }
            sum += rt_int_value(v);
            ftm_decref(v);
        }
        double t3 = bench_now();
        cpu[r] = thread_cpu_now() - c1;
        errors += rt_dict_len(d) != n;
        ftm_decref(d);
        for (uint64_t i = 0; i < n; i++)
            ftm_decref(keys[i]);
        double t4 = bench_now();
        kt[r] = t1 - t0;
        st[r] = t2 - t1;
        gt[r] = t3 - t2;
        dt[r] = t4 - t3;
        total[r] = t3 - t1; /* sets + lookups */
    }
    /* expected sum: key (j*SCATTER)%n holds that index */
    int64_t want = 0;
    for (uint64_t j = 0; j < m; j++)
        want += (int64_t)((j * SCATTER) % n);
    errors += sum != want;
    bench_result_t res;
    bench_result_init(&res, "rt-dict", 1, "dict set or lookup (str key -> int)");
    res.ops = n + m;
    res.seconds = best_of(total);
    res.checksum = (uint64_t)sum;
    res.errors = errors;
    bench_result_add(&res, "n", (double)n);
    bench_result_add(&res, "lookups", (double)m);
    bench_result_add(&res, "set_ns", best_of(st) * 1e9 / (double)n);
    bench_result_add(&res, "get_ns", best_of(gt) * 1e9 / (double)m);
    bench_result_add(&res, "key_create_ns", best_of(kt) * 1e9 / (double)n);
    bench_result_add(&res, "drop_ns_per_key", best_of(dt) * 1e9 / (double)n);
    bench_result_add(&res, "median_round_s", median_of(total));
    bench_result_add(&res, "ops_per_cpu_s", (double)(n + m) / best_of(cpu));
    bench_result_add(&res, "rss_start_kib", (double)(rss0 / 1024));
    bench_result_print(&res);
    free(keys);
    free(probes);
    return errors ? 3 : 0;
}

/* ---- 3. tuple churn: N 3-tuples made and dropped ------------------------------- */

static int wl_tuples(uint64_t n)
{
    ftm_object *items[3] = {
        ok(rt_int_new(1), "rt_int_new"),              /* small (immortal) */
        ok(rt_str_from_cstr("x"), "rt_str_from_cstr"), /* a str */
        ok(rt_int_new(1000000), "rt_int_new"),        /* a boxed int */
    };
    double total[ROUNDS], cpu[ROUNDS];
    size_t rss0 = bench_rss_bytes();
    ftm_object_stats_t s0, s1;
    ftm_object_stats_get(&s0);
    uint64_t made = 0;
    for (int r = 0; r < ROUNDS; r++) {
        double c0 = thread_cpu_now(), t0 = bench_now();
        for (uint64_t i = 0; i < n; i++) {
            ftm_object *t = rt_tuple_new(3, items);
            bench_escape(t);
            ftm_decref(t);
        }
        total[r] = bench_now() - t0;
        cpu[r] = thread_cpu_now() - c0;
        made += n;
    }
    ftm_object_stats_get(&s1);
    /* every tuple died again; the items are back to one reference each */
    uint64_t errors = (s1.created - s0.created) != made || (s1.freed - s0.freed) != made ||
                      ftm_refcount(items[1]) != 1 || ftm_refcount(items[2]) != 1;
    bench_result_t res;
    bench_result_init(&res, "rt-tuples", 1, "3-tuple made and dropped");
    res.ops = n;
    res.seconds = best_of(total);
    res.checksum = n;
    res.errors = errors;
    bench_result_add(&res, "n", (double)n);
    bench_result_add(&res, "ns_per_tuple", best_of(total) * 1e9 / (double)n);
    bench_result_add(&res, "median_round_s", median_of(total));
    bench_result_add(&res, "ops_per_cpu_s", (double)n / best_of(cpu));
    bench_result_add(&res, "rss_start_kib", (double)(rss0 / 1024));
    bench_result_print(&res);
    for (int i = 0; i < 3; i++)
        ftm_decref(items[i]);
    return errors ? 3 : 0;
}

/* ---- 4. one shared list: 2 readers, 1 appender --------------------------------- */

typedef struct sh_s {
    ftm_object *list;
    uint64_t cap;
    pthread_barrier_t start;
    atomic_bool stop;
} sh_t;

typedef struct sh_arg_s {
    sh_t *sh;
    int id; /* 0: appender, 1..2: readers */
    uint64_t ops, pops, misses, errors, sum;
    double t_start, t_end;
    char pad[64];
} sh_arg;

static void *sh_thread(void *arg)
{
    sh_arg *a = arg;
    sh_t *sh = a->sh;
    ftm_object *l = sh->list;
    rt_list_len(l);
    ftm_safepoint(); /* register before the clock starts */
    pthread_barrier_wait(&sh->start);
    a->t_start = bench_now();
    if (a->id == 0) {
        /* item i always holds the int i: appends add len, pops take the tail */
        while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
            for (int b = 0; b < 256; b++) {
                size_t n = rt_list_len(l);
                if (n >= sh->cap) {
                    while (rt_list_len(l) > sh->cap / 2) {
                        ftm_decref(rt_list_pop(l));
                        a->pops++;
                    }
                } else {
                    ftm_object *o = ok(rt_int_new((int64_t)n), "rt_int_new");
                    if (rt_list_append(l, o) != 0)
                        die("rt_list_append");
                    ftm_decref(o);
                    a->ops++;
                }
            }
        }
    } else {
        uint64_t k = (uint64_t)a->id * 12345;
        while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
            for (int b = 0; b < 256; b++) {
                size_t n = rt_list_len(l);
                size_t i = (size_t)((++k * SCATTER) % n);
                ftm_object *x = rt_list_get(l, i);
                if (x == NULL) { /* popped between len and get */
                    a->misses++;
                    continue;
                }
                int64_t v = rt_int_value(x);
                a->errors += v != (int64_t)i;
                a->sum += (uint64_t)v;
                ftm_decref(x);
                a->ops++;
            }
        }
    }
    a->t_end = bench_now();
    return NULL;
}

static int wl_shared(long duration_ms, uint64_t cap)
{
    sh_t sh;
    memset(&sh, 0, sizeof sh);
    sh.cap = cap;
    sh.list = ok(rt_list_new(), "rt_list_new");
    for (uint64_t i = 0; i < cap / 2; i++) { /* untimed prefill */
        ftm_object *o = ok(rt_int_new((int64_t)i), "rt_int_new");
        rt_list_append(sh.list, o);
        ftm_decref(o);
    }
    size_t rss0 = bench_rss_bytes();
    pthread_barrier_init(&sh.start, NULL, 4);
    sh_arg a[3];
    pthread_t tid[3];
    memset(a, 0, sizeof a);
    for (int i = 0; i < 3; i++) {
        a[i].sh = &sh;
        a[i].id = i;
        if (pthread_create(&tid[i], NULL, sh_thread, &a[i]) != 0)
            die("pthread_create");
    }
    ftm_thread_detach(); /* main only sleeps and joins */
    pthread_barrier_wait(&sh.start);
    bench_sleep_until(bench_now() + (double)duration_ms / 1000.0);
    atomic_store_explicit(&sh.stop, true, memory_order_relaxed);
    for (int i = 0; i < 3; i++)
        pthread_join(tid[i], NULL);
    ftm_thread_attach();
    double t0 = a[0].t_start, t1 = a[0].t_end;
    for (int i = 1; i < 3; i++) {
        t0 = a[i].t_start < t0 ? a[i].t_start : t0;
        t1 = a[i].t_end > t1 ? a[i].t_end : t1;
    }
    uint64_t reads = a[1].ops + a[2].ops;
    double r1 = a[1].ops / (a[1].t_end - a[1].t_start), r2 = a[2].ops / (a[2].t_end - a[2].t_start);
    bench_result_t res;
    bench_result_init(&res, "rt-shared-list", 3, "lock-free get (2 reader threads), 1 thread appending");
    res.ops = reads;
    res.seconds = t1 - t0;
    res.checksum = a[1].sum + a[2].sum;
    res.errors = a[1].errors + a[2].errors;
    bench_result_add(&res, "readers", 2);
    bench_result_add(&res, "reader_min_ops_per_s", r1 < r2 ? r1 : r2);
    bench_result_add(&res, "appends", (double)a[0].ops);
    bench_result_add(&res, "append_ops_per_s", a[0].ops / (a[0].t_end - a[0].t_start));
    bench_result_add(&res, "pops", (double)a[0].pops);
    bench_result_add(&res, "misses", (double)(a[1].misses + a[2].misses));
    bench_result_add(&res, "cap", (double)cap);
    bench_result_add(&res, "final_len", (double)rt_list_len(sh.list));
    bench_result_add(&res, "cores", ncpus());
    bench_result_add(&res, "oversubscribed", 3 > ncpus());
    bench_result_add(&res, "rss_start_kib", (double)(rss0 / 1024));
    bench_result_print(&res);
    ftm_decref(sh.list);
    pthread_barrier_destroy(&sh.start);
    return res.errors ? 3 : 0;
}

/* ---- main ---------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: ftm-bench-runtime list|dict|tuples [-n N] [--quick]\n"
               "       ftm-bench-runtime shared [-d MS] [-n CAP] [--quick]\n"
               "  defaults: list N=1000000, dict N=100000 (10 N lookups), tuples N=10000000,\n"
               "  shared 1000 ms, CAP=1000000; --quick: a tenth of each, 200 ms\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *mode = argv[1];
    uint64_t n = 0;
    long duration_ms = -1;
    bool quick = false;
    for (int i = 2; i < argc; i++) {
        char *end;
        if ((!strcmp(argv[i], "-n") || !strcmp(argv[i], "-d")) && i + 1 < argc) {
            unsigned long long v = strtoull(argv[i + 1], &end, 0);
            if (*end || end == argv[i + 1] || v == 0) {
                fprintf(stderr, "ftm-bench-runtime: %s needs a positive number\n", argv[i]);
                return 2;
            }
            if (argv[i][1] == 'n')
                n = v;
            else
                duration_ms = (long)v;
            i++;
        } else if (!strcmp(argv[i], "--quick")) {
            quick = true;
        } else {
            usage(stderr);
            return 2;
        }
    }
    uint64_t div = quick ? 10 : 1;
    if (duration_ms < 0)
        duration_ms = quick ? 200 : 1000;
    if (!strcmp(mode, "list"))
        return wl_list(n ? n : 1000000 / div);
    if (!strcmp(mode, "dict"))
        return wl_dict(n ? n : 100000 / div);
    if (!strcmp(mode, "tuples"))
        return wl_tuples(n ? n : 10000000 / div);
    if (!strcmp(mode, "shared"))
        return wl_shared(duration_ms, n ? n : 1000000 / div);
    usage(stderr);
    return 2;
}
