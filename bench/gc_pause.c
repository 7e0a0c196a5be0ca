/* gc_pause.c — ftm-bench-gc-pause (ftmem) and ftm-bench-gc-pause-boehm
 * (the Boehm GC): how long a mutator thread is stalled while collections
 * run over a large live heap.
 *
 *   ftm-bench-gc-pause[-boehm] -n N [-d MS] [--collector loop|bg|none] [--gap-ms G]
 *                              [-s SEED] [--quiet-reps K]
 *
 * Builds gc_common.h's graph (N nodes of two references, held by a root
 * array; automatic collection off meanwhile), times K full collections
 * with nothing else running ("quiet": ftm_gc_collect(2) / GC_gcollect),
 * then runs the mutator twice for MS milliseconds each:
 *
 *   baseline  no collection may run (ftm_gc_disable / GC_disable);
 *   gc        with collections: --collector loop (default): a second
 *             thread calls ftm_gc_collect(2) / GC_gcollect() in a loop,
 *             sleeping G ms (default 5) between two collections, so
 *             nearly every operation overlaps a full collection (without
 *             the gap, Boehm's collector thread takes its allocation lock
 *             back at once and starves the mutator for seconds — an
 *             artefact of the loop, not a pause); --collector bg (ftmem only; run with
 *             FTMEM_GC_THREADS=1): automatic collections on ftmem's
 *             background collector thread, triggered by the mutator's own
 *             allocations.
 *
 * The mutator (the main thread) does, on nodes picked at random: 70%
 * loads (root[i] -> node, node.a -> its payload), 25% stores (node.b =
 * root[j]) and 5% new objects (a new node pointing at two others
 * replaces root[i]; ftm_new is where an ftmem thread meets its
 * safepoints).  Each operation's latency is the gap between consecutive
 * clock_gettime readings (the clock's ~20 ns included), so a stall anywhere
 * in the loop is seen.  One JSON line per phase: the latency histogram
 * (p50/p99/p99.9/p99.99/max, counts over 100 us / 1 ms / 10 ms) and what
 * the collector did (collections, their durations; ftmem: the library's
 * own pause figures from ftm_gc_get_stats; Boehm: its world-stopped
 * intervals, from GC_set_on_collection_event), and the minimum mutator
 * utilisation over 1, 10 and 100 ms windows (operations slower than 20 us
 * count as stalled time), and the longest operation of each kind (a new
 * object is where an ftmem thread meets its safepoints).  Each stall over
 * 20 us is also classified with getrusage(RUSAGE_THREAD): if the thread's
 * involuntary context switches rose and its voluntary ones did not, the OS
 * preempted it and it never blocked (another process wanted the core: on a
 * shared 2-core machine that is most long stalls of the baseline too);
 * np_* are all other stalls — time the mutator lost while it had its core
 * (spinning, page faults) or blocked (a voluntary switch: a futex wait for
 * the collector, Boehm's signal handler waiting for the world to restart).
 * Those over 200 us are placed against the collections (timed by a gc
 * callback / Boehm's collection events): at a collection's start, at its
 * end, during it, or between two (np_stalls_* and np_max_*_ns of the
 * -collector line).
 *
 * Two threads (mutator + collector) on a 2-core machine: other load on the
 * machine shows up as stalls in both phases — compare gc with baseline.
 */
#include "gc_common.h"

#include <pthread.h>
#include <unistd.h>

#if defined(GCB_FTM)
#include "gc_ftm.h"
#elif defined(GCB_BOEHM)
#define GC_THREADS
#include <gc/gc.h>
#else
#error "gc_pause.c: build with GCB_FTM or GCB_BOEHM"
#endif

#define P_LOAD 70
#define P_STORE 95 /* 70..94: store; 95..99: new */

static atomic_bool g_stop;

/* Collection intervals (CLOCK_MONOTONIC ns), written only by the thread
 * running a collection (ftmem: a gc callback; Boehm: its collection
 * events), one collection at a time; read after the phase.  The mutator's
 * long stalls are placed against them: at a collection's start (its first
 * 2 ms), at its end (the last 2 ms and 1 ms after), during it, or between
 * collections. */
#define MAX_COLL 65536
static uint64_t g_coll_start[MAX_COLL], g_coll_end[MAX_COLL];
static _Atomic size_t g_ncoll;
static bool g_record_colls;

static void coll_begin(uint64_t t)
{
    size_t i = atomic_load_explicit(&g_ncoll, memory_order_relaxed);
    if (g_record_colls && i < MAX_COLL) {
        g_coll_start[i] = t;
        g_coll_end[i] = 0;
    }
}

static void coll_end(uint64_t t)
{
    size_t i = atomic_load_explicit(&g_ncoll, memory_order_relaxed);
    if (g_record_colls && i < MAX_COLL) {
        g_coll_end[i] = t;
        atomic_store_explicit(&g_ncoll, i + 1, memory_order_release);
    }
}

/* the mutator's long stalls not explained by preemption (np), for placing */
#define MAX_EV 65536
#define EV_NS 200000u
static uint64_t g_ev_t[MAX_EV], g_ev_d[MAX_EV];
static size_t g_nev;

#if defined(GCB_FTM)
static void ftm_coll_cb(const char *phase, const ftm_gc_info *info, void *arg)
{
    (void)info;
    (void)arg;
    if (phase[1] == 't' && phase[2] == 'a') /* "start" */
        coll_begin(gcb_now_ns());
    else
        coll_end(gcb_now_ns());
}
#endif
static double g_gap_s; /* --gap-ms: the loop thread's pause between collections */

/* ---- The collector thread (--collector loop) ------------------------------------ */

typedef struct collector_s {
    pthread_t tid;
    uint64_t collections;
    uint64_t eagain;
    uint64_t found; /* objects the collections found unreachable */
    double *dur;    /* seconds per call */
    size_t ndur, cap;
    double cpu_s;
} collector_t;

static void coll_record(collector_t *c, double s)
{
    if (c->ndur == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 1024;
        c->dur = realloc(c->dur, c->cap * sizeof *c->dur);
        if (!c->dur) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
    }
    c->dur[c->ndur++] = s;
}

static void *collector_main(void *arg)
{
    collector_t *c = arg;
    double c0 = gcb_thread_cpu();
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        double t0 = bench_now();
#if defined(GCB_FTM)
        ssize_t r = ftm_gc_collect(2);
        if (r < 0) {
            c->eagain++;
            continue;
        }
        c->found += (uint64_t)r;
#else
        GC_gcollect();
#endif
        coll_record(c, bench_now() - t0);
        c->collections++;
        if (g_gap_s > 0) {
#if defined(GCB_FTM)
            ftm_thread_detach(); /* a sleeping attached thread would hold up handshakes */
            bench_sleep_until(bench_now() + g_gap_s);
            ftm_thread_attach();
#else
            bench_sleep_until(bench_now() + g_gap_s);
#endif
        }
    }
    c->cpu_s = gcb_thread_cpu() - c0;
#if defined(GCB_FTM)
    ftm_thread_flush();
#endif
    return NULL;
}

/* ---- Boehm: world-stopped intervals ------------------------------------------------ */

#if defined(GCB_BOEHM)
static uint64_t b_stop_t0;
static uint64_t b_stw_max, b_stw_total, b_stw_count;
static uint64_t b_cycle_t0, b_cycle_max;

static void boehm_event(GC_EventType e)
{
    uint64_t t = gcb_now_ns();
    switch (e) {
    case GC_EVENT_PRE_STOP_WORLD:
        b_stop_t0 = t;
        break;
    case GC_EVENT_POST_START_WORLD:
        if (b_stop_t0) {
            uint64_t d = t - b_stop_t0;
            b_stw_total += d;
            b_stw_count++;
            if (d > b_stw_max)
                b_stw_max = d;
            b_stop_t0 = 0;
        }
        break;
    case GC_EVENT_START:
        b_cycle_t0 = t;
        coll_begin(t);
        break;
    case GC_EVENT_END:
        coll_end(t);
        if (b_cycle_t0 && t - b_cycle_t0 > b_cycle_max)
            b_cycle_max = t - b_cycle_t0;
        break;
    default:
        break;
    }
}
#endif

/* Place the np stalls over 200 us against the collections: the longest
 * and the count in each class, as extras of the result line. */
static void place_stalls(bench_result_t *res)
{
    static const char *cls[4] = {"start", "end", "during", "between"};
    uint64_t mx[4] = {0}, cnt[4] = {0};
    size_t nc = atomic_load_explicit(&g_ncoll, memory_order_acquire);
    for (size_t e = 0; e < g_nev; e++) {
        uint64_t a = g_ev_t[e], b = a + g_ev_d[e];
        int c = 3;
        for (size_t k = 0; k < nc && c != 0; k++) {
            uint64_t s0 = g_coll_start[k], s1 = g_coll_end[k];
            if (b >= s0 && a <= s0 + 2000000)
                c = 0;
            else if (c > 1 && b + 2000000 >= s1 && a <= s1 + 1000000)
                c = 1;
            else if (c > 2 && a < s1 && b > s0)
                c = 2;
        }
        cnt[c]++;
        if (g_ev_d[e] > mx[c])
            mx[c] = g_ev_d[e];
    }
    static char keys[8][40];
    for (int c = 0; c < 4; c++) {
        snprintf(keys[2 * c], sizeof keys[0], "np_stalls_%s", cls[c]);
        snprintf(keys[2 * c + 1], sizeof keys[0], "np_max_%s_ns", cls[c]);
        bench_result_add(res, keys[2 * c], (double)cnt[c]);
        bench_result_add(res, keys[2 * c + 1], (double)mx[c]);
    }
    bench_result_add(res, "collections_timed", (double)nc);
    /* GCB_PRINT_STALLS=1: list them on stderr (CLOCK_MONOTONIC ns, to be
     * matched with `perf record -k CLOCK_MONOTONIC` samples) */
    if (getenv("GCB_PRINT_STALLS")) {
        for (size_t e = 0; e < g_nev; e++)
            fprintf(stderr, "np-stall start_ns %" PRIu64 " dur_ns %" PRIu64 "\n", g_ev_t[e], g_ev_d[e]);
        for (size_t k = 0; k < nc; k++)
            fprintf(stderr, "collection start_ns %" PRIu64 " end_ns %" PRIu64 "\n", g_coll_start[k], g_coll_end[k]);
    }
}

/* ---- The graph and the mutator ------------------------------------------------------ */

#if defined(GCB_FTM)

typedef gcb_root *graph_t;

static graph_t graph_build(size_t n) { return gcb_graph_build(n); }

static inline uint64_t op_load(graph_t g, size_t i)
{
    gcb_node *x = (gcb_node *)ftm_field_load(&g->items[i]);
    gcb_node *y = (gcb_node *)ftm_field_load(&x->a);
    uint64_t s = (uint64_t)x->payload;
    if (y) {
        s += (uint64_t)y->payload;
        ftm_decref(&y->ob);
    }
    ftm_decref(&x->ob);
    return s;
}

static inline void op_store(graph_t g, size_t i, size_t j)
{
    gcb_node *x = (gcb_node *)ftm_field_load(&g->items[i]);
    ftm_field_store(&x->b, ftm_field_load(&g->items[j]));
    ftm_decref(&x->ob);
}

static inline void op_new(graph_t g, size_t i, size_t j, size_t k)
{
    ftm_object *a = ftm_field_load(&g->items[j]), *b = ftm_field_load(&g->items[k]);
    gcb_node *z = gcb_node_new(a, b, (int64_t)i);
    ftm_decref(a);
    ftm_decref(b);
    ftm_field_store(&g->items[i], &z->ob);
}

#else /* Boehm */

typedef struct bnode {
    struct bnode *a, *b;
    int64_t payload;
} bnode;

typedef bnode **graph_t;
static bnode **volatile g_root; /* a root Boehm scans (data segment) */

static bnode *bnode_new(bnode *a, bnode *b, int64_t payload)
{
    bnode *n = GC_MALLOC(sizeof *n);
    if (!n) {
        fprintf(stderr, "GC_MALLOC failed\n");
        exit(2);
    }
    n->a = a;
    n->b = b;
    n->payload = payload;
    return n;
}

static graph_t graph_build(size_t n)
{
    bnode **r = GC_MALLOC(n * sizeof *r);
    if (!r) {
        fprintf(stderr, "GC_MALLOC(root) failed\n");
        exit(2);
    }
    g_root = r;
    for (size_t i = 0; i < n; i++)
        r[i] = bnode_new(NULL, NULL, (int64_t)i);
    for (size_t i = 0; i < n; i++) {
        r[i]->a = r[gcb_edge_a(i, n)];
        r[i]->b = r[gcb_edge_b(i, n)];
    }
    return r;
}

static inline uint64_t op_load(graph_t g, size_t i)
{
    bnode *x = ((bnode *volatile *)g)[i];
    bnode *y = x->a;
    return (uint64_t)x->payload + (y ? (uint64_t)y->payload : 0);
}

static inline void op_store(graph_t g, size_t i, size_t j)
{
    bnode *x = ((bnode *volatile *)g)[i];
    x->b = g[j];
}

static inline void op_new(graph_t g, size_t i, size_t j, size_t k)
{
    g[i] = bnode_new(g[j], g[k], (int64_t)i);
}

#endif

/* ---- Minimum mutator utilisation ------------------------------------------------------
 * Every operation slower than STALL_NS counts as stalled time, spread over
 * 100 us bins of the phase's timeline; MMU(w) is the lowest fraction of any
 * window of w (in whole bins) the mutator was not stalled (Cheng and
 * Blelloch's metric: a pause of 50 ms gives MMU(10 ms) = 0). */
#define STALL_NS 20000u
#define BIN_NS 100000u

typedef struct stallmap_s {
    uint64_t *bin; /* stalled ns per bin */
    size_t nbins;
} stallmap_t;

static void stall_add(stallmap_t *s, uint64_t start, uint64_t len)
{
    while (len > 0) {
        size_t b = (size_t)(start / BIN_NS);
        if (b >= s->nbins)
            return;
        uint64_t room = (uint64_t)(b + 1) * BIN_NS - start;
        uint64_t take = len < room ? len : room;
        s->bin[b] += take;
        start += take;
        len -= take;
    }
}

static double mmu(const stallmap_t *s, size_t used_bins, uint64_t window_ns)
{
    size_t w = (size_t)(window_ns / BIN_NS);
    if (w == 0 || used_bins < w)
        return -1;
    uint64_t sum = 0, worst = 0;
    for (size_t i = 0; i < used_bins; i++) {
        sum += s->bin[i];
        if (i >= w)
            sum -= s->bin[i - w];
        if (i + 1 >= w && sum > worst)
            worst = sum;
    }
    double u = 1.0 - (double)worst / (double)(w * BIN_NS);
    return u < 0 ? 0 : u;
}

typedef struct mut_result_s {
    uint64_t ops, sum;
    double seconds, cpu_s;
    uint64_t n_load, n_store, n_new;
    uint64_t max_kind[3];    /* longest op of each kind: load, store, new */
    uint64_t over1ms_kind[3];
    /* stalls (> 20 us) other than those in which the OS preempted the
     * mutator (its involuntary context switches rose) while it never
     * blocked: what remains when other processes' share of the 2 cores is
     * taken out */
    uint64_t np_max, np_over_100us, np_over_1ms;
    uint64_t preempted_stalls, blocked_stalls; /* stalls with an involuntary / voluntary switch */
    double mmu_1ms, mmu_10ms, mmu_100ms;
} mut_result_t;

static mut_result_t mutate(graph_t g, size_t n, double seconds, bench_rng_t *rng, gcb_hist *h)
{
    mut_result_t m = {0};
    double c0 = gcb_thread_cpu();
    uint64_t t_start = gcb_now_ns(), t_prev = t_start;
    uint64_t t_end = t_start + (uint64_t)(seconds * 1e9);
    stallmap_t sm;
    sm.nbins = (size_t)(seconds * 1e9 / BIN_NS) + 1;
    sm.bin = bench_map(sm.nbins * sizeof *sm.bin);
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    long inv0 = ru.ru_nivcsw, vol0 = ru.ru_nvcsw;
    while (t_prev < t_end) {
        uint64_t r = bench_rng_next(rng);
        size_t i = (size_t)((r >> 8) % n);
        unsigned kind = (unsigned)((r >> 56) % 100u);
        unsigned k3 = kind < P_LOAD ? 0 : kind < P_STORE ? 1 : 2;
        if (kind < P_LOAD) {
            m.sum += op_load(g, i);
            m.n_load++;
        } else {
            uint64_t r2 = bench_rng_next(rng);
            size_t j = (size_t)(r2 % n);
            if (kind < P_STORE) {
                op_store(g, i, j);
                m.n_store++;
            } else {
                op_new(g, i, j, (size_t)((r2 >> 32) % n));
                m.n_new++;
            }
        }
        uint64_t t = gcb_now_ns();
        gcb_hist_add(h, t - t_prev);
        if (bench_unlikely(t - t_prev > STALL_NS)) {
            stall_add(&sm, t_prev - t_start, t - t_prev);
            if (t - t_prev > m.max_kind[k3])
                m.max_kind[k3] = t - t_prev;
            m.over1ms_kind[k3] += t - t_prev > 1000000;
            /* preempted?  (a syscall: only after a stall, and then the
             * clock restarts after it, so the next op does not pay it) */
            getrusage(RUSAGE_THREAD, &ru);
            uint64_t d = t - t_prev;
            /* preempted and never blocked: other processes' time slice.
             * A stall in which the thread blocked (a voluntary switch: a
             * futex wait, Boehm's sigsuspend while the world is stopped)
             * counts as the mutator's own, preempted or not */
            if (ru.ru_nivcsw != inv0 && ru.ru_nvcsw == vol0) {
                m.preempted_stalls++;
            } else {
                if (d > m.np_max)
                    m.np_max = d;
                m.np_over_100us += d > 100000;
                m.np_over_1ms += d > 1000000;
                if (d > EV_NS && g_nev < MAX_EV) {
                    g_ev_t[g_nev] = t_prev;
                    g_ev_d[g_nev++] = d;
                }
            }
            m.blocked_stalls += ru.ru_nvcsw != vol0;
            inv0 = ru.ru_nivcsw;
            vol0 = ru.ru_nvcsw;
            t = gcb_now_ns();
        } else if (bench_unlikely((m.ops & 4095) == 0)) {
            /* forget switches that made no stall of their own */
            getrusage(RUSAGE_THREAD, &ru);
            inv0 = ru.ru_nivcsw;
            vol0 = ru.ru_nvcsw;
            t = gcb_now_ns();
        }
        t_prev = t;
        m.ops++;
    }
    m.seconds = (double)(t_prev - t_start) * 1e-9;
    size_t used = (size_t)((t_prev - t_start) / BIN_NS);
    if (used > sm.nbins)
        used = sm.nbins;
    m.mmu_1ms = mmu(&sm, used, 1000000);
    m.mmu_10ms = mmu(&sm, used, 10000000);
    m.mmu_100ms = mmu(&sm, used, 100000000);
    bench_unmap(sm.bin, sm.nbins * sizeof *sm.bin);
    m.cpu_s = gcb_thread_cpu() - c0;
    return m;
}

static void report_phase(const char *phase, size_t n, const mut_result_t *m,
                         const gcb_hist *h, int threads)
{
    bench_result_t res;
    char wl[64];
    snprintf(wl, sizeof wl, "gc-pause-%s", phase);
    bench_result_init(&res, strdup(wl), threads, "mutator op (load/store/new on the graph)");
    res.ops = m->ops;
    res.seconds = m->seconds;
    res.checksum = m->sum;
    bench_result_add(&res, "n", (double)n);
    gcb_hist_report(&res, h);
    bench_result_add(&res, "mutator_cpu_util", m->seconds > 0 ? m->cpu_s / m->seconds : 0);
    bench_result_add(&res, "mmu_1ms", m->mmu_1ms);
    bench_result_add(&res, "mmu_10ms", m->mmu_10ms);
    bench_result_add(&res, "mmu_100ms", m->mmu_100ms);
    bench_result_add(&res, "max_load_ns", (double)m->max_kind[0]);
    bench_result_add(&res, "max_store_ns", (double)m->max_kind[1]);
    bench_result_add(&res, "max_new_ns", (double)m->max_kind[2]);
    bench_result_add(&res, "over_1ms_new", (double)m->over1ms_kind[2]);
    bench_result_add(&res, "np_max_ns", (double)m->np_max);
    bench_result_add(&res, "np_over_100us", (double)m->np_over_100us);
    bench_result_add(&res, "np_over_1ms", (double)m->np_over_1ms);
    bench_result_add(&res, "preempted_stalls", (double)m->preempted_stalls);
    bench_result_add(&res, "blocked_stalls", (double)m->blocked_stalls);
    bench_result_add(&res, "ops_new", (double)m->n_new);
    bench_result_add(&res, "rss_kib", (double)(bench_rss_bytes() / 1024));
    bench_result_print(&res);
}

int main(int argc, char **argv)
{
    size_t n = (size_t)gcb_arg_long(argc, argv, "-n", "--objects", 1000000);
    double dur = (double)gcb_arg_long(argc, argv, "-d", "--duration", 2000) / 1000.0;
    long quiet_reps = gcb_arg_long(argc, argv, "--quiet-reps", NULL, 3);
    uint64_t seed = (uint64_t)gcb_arg_long(argc, argv, "-s", "--seed", 42);
    g_gap_s = (double)gcb_arg_long(argc, argv, "--gap-ms", NULL, 5) / 1000.0;
    const char *collector = gcb_arg(argc, argv, "--collector", NULL);
    if (!collector)
        collector = "loop";
    if (n < 16 || dur <= 0 || quiet_reps < 0 ||
        (strcmp(collector, "loop") && strcmp(collector, "bg") && strcmp(collector, "none"))) {
        fprintf(stderr, "usage: %s -n N [-d MS] [--collector loop|bg|none] [--gap-ms MS] [--quiet-reps K] [-s SEED]\n",
                argv[0]);
        return 2;
    }
#if defined(GCB_BOEHM)
    if (strcmp(collector, "bg") == 0) {
        fprintf(stderr, "--collector bg is ftmem's (FTMEM_GC_THREADS); Boehm has loop or none\n");
        return 2;
    }
    GC_INIT();
    GC_start_performance_measurement();
    GC_set_on_collection_event(boehm_event);
    GC_disable();
#else
    ftm_gc_disable();
#endif
    bench_rng_t rng;
    bench_rng_init(&rng, seed, 0);

    /* build */
    size_t rss0 = bench_rss_bytes();
    double t0 = bench_now();
    graph_t g = graph_build(n);
    double build_s = bench_now() - t0;
    size_t rss_built = bench_rss_bytes();

    /* quiet full collections: nothing else runs */
    double *q = calloc((size_t)quiet_reps + 1, sizeof *q);
    double qcpu = 0;
#if defined(GCB_BOEHM)
    GC_enable();
#endif
    for (long k = 0; k < quiet_reps; k++) {
        double c0 = gcb_process_cpu();
        double a = bench_now();
#if defined(GCB_FTM)
        if (ftm_gc_collect(2) < 0)
            fprintf(stderr, "ftm_gc_collect(2): %s\n", strerror(errno));
#else
        GC_gcollect();
#endif
        q[k] = bench_now() - a;
        qcpu += gcb_process_cpu() - c0;
    }
#if defined(GCB_BOEHM)
    uint64_t quiet_stw_max = b_stw_max;
    GC_disable();
#endif
    {
        bench_result_t res;
        bench_result_init(&res, "gc-pause-setup", 1, "full collection, nothing else running");
        res.ops = (uint64_t)quiet_reps;
        double qmax = gcb_max(q, (size_t)quiet_reps);
        res.seconds = gcb_median(q, (size_t)quiet_reps);
        bench_result_add(&res, "n", (double)n);
        bench_result_add(&res, "build_s", build_s);
        bench_result_add(&res, "rss_before_build_kib", (double)(rss0 / 1024));
        bench_result_add(&res, "rss_built_kib", (double)(rss_built / 1024));
        bench_result_add(&res, "bytes_per_object", (double)(rss_built - rss0) / (double)n);
        bench_result_add(&res, "quiet_reps", (double)quiet_reps);
        bench_result_add(&res, "quiet_full_median_ms", res.seconds * 1e3);
        bench_result_add(&res, "quiet_full_max_ms", qmax * 1e3);
        bench_result_add(&res, "quiet_full_ns_per_object", res.seconds * 1e9 / (double)n);
        bench_result_add(&res, "quiet_full_cpu_ms", quiet_reps ? qcpu * 1e3 / (double)quiet_reps : 0);
#if defined(GCB_BOEHM)
        bench_result_add(&res, "boehm_parallel_markers", (double)GC_get_parallel());
        bench_result_add(&res, "boehm_stw_max_ms", (double)quiet_stw_max / 1e6);
        bench_result_add(&res, "boehm_heap_kib", (double)(GC_get_heap_size() / 1024));
#endif
        bench_result_print(&res);
    }
    free(q);

    /* baseline: no collection */
    gcb_hist *h = calloc(1, sizeof *h);
    mut_result_t m = mutate(g, n, dur, &rng, h);
    report_phase("baseline", n, &m, h, 1);
    if (strcmp(collector, "none") == 0)
        return 0;

    /* with collections */
    memset(h, 0, sizeof *h);
    collector_t c = {0};
#if defined(GCB_FTM)
    ftm_gc_gen_stats_t before[FTM_GC_GENERATIONS];
    ftm_gc_get_stats(before);
#else
    uint64_t gc_no0 = GC_get_gc_no();
    b_stw_max = b_stw_total = b_stw_count = b_cycle_max = 0;
    GC_enable();
#endif
#if defined(GCB_FTM)
    ftm_gc_callback_add(ftm_coll_cb, NULL);
#endif
    g_nev = 0;
    atomic_store(&g_ncoll, 0);
    g_record_colls = true;
    atomic_store(&g_stop, false);
    double pc0 = gcb_process_cpu();
    if (strcmp(collector, "loop") == 0) {
        if (pthread_create(&c.tid, NULL, collector_main, &c) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 2;
        }
    } else {
#if defined(GCB_FTM)
        ftm_gc_enable();
#endif
    }
    m = mutate(g, n, dur, &rng, h);
    atomic_store(&g_stop, true);
    if (strcmp(collector, "loop") == 0) {
#if defined(GCB_FTM)
        ftm_thread_detach(); /* we block in join: do not hold up a handshake */
        pthread_join(c.tid, NULL);
        ftm_thread_attach();
#else
        pthread_join(c.tid, NULL);
#endif
    }
#if defined(GCB_FTM)
    ftm_gc_disable();
#endif
    double pcpu = gcb_process_cpu() - pc0;
    {
        bench_result_t res;
        char wl[64];
        snprintf(wl, sizeof wl, "gc-pause-%s", collector);
        bench_result_init(&res, wl, 2, "mutator op (load/store/new on the graph)");
        res.ops = m.ops;
        res.seconds = m.seconds;
        res.checksum = m.sum;
        bench_result_add(&res, "n", (double)n);
        gcb_hist_report(&res, h);
        bench_result_add(&res, "mutator_cpu_util", m.seconds > 0 ? m.cpu_s / m.seconds : 0);
        bench_result_add(&res, "mmu_1ms", m.mmu_1ms);
        bench_result_add(&res, "mmu_10ms", m.mmu_10ms);
        bench_result_add(&res, "mmu_100ms", m.mmu_100ms);
        bench_result_add(&res, "max_load_ns", (double)m.max_kind[0]);
        bench_result_add(&res, "max_store_ns", (double)m.max_kind[1]);
        bench_result_add(&res, "max_new_ns", (double)m.max_kind[2]);
        bench_result_add(&res, "over_1ms_new", (double)m.over1ms_kind[2]);
        bench_result_add(&res, "np_max_ns", (double)m.np_max);
        bench_result_add(&res, "np_over_100us", (double)m.np_over_100us);
        bench_result_add(&res, "np_over_1ms", (double)m.np_over_1ms);
        bench_result_add(&res, "preempted_stalls", (double)m.preempted_stalls);
        bench_result_add(&res, "blocked_stalls", (double)m.blocked_stalls);
        bench_result_add(&res, "process_cpu_util", m.seconds > 0 ? pcpu / m.seconds : 0);
        bench_result_add(&res, "ops_new", (double)m.n_new);
        bench_result_add(&res, "rss_kib", (double)(bench_rss_bytes() / 1024));
        bench_result_print(&res);
        g_record_colls = false;
        /* what the collector did: a line of its own (common.h keeps 40 extras a line) */
        static char wl2[80];
        snprintf(wl2, sizeof wl2, "gc-pause-%s-collector", collector);
        bench_result_init(&res, wl2, 2, "collections during the mutator phase");
        res.ops = c.collections;
        res.seconds = m.seconds;
        bench_result_add(&res, "n", (double)n);
        place_stalls(&res);
        bench_result_add(&res, "loop_gap_ms", strcmp(collector, "loop") == 0 ? g_gap_s * 1e3 : 0);
        bench_result_add(&res, "loop_collections", (double)c.collections);
        bench_result_add(&res, "loop_eagain", (double)c.eagain);
        bench_result_add(&res, "loop_found", (double)c.found);
        double cmax = gcb_max(c.dur, c.ndur);
        bench_result_add(&res, "loop_collect_median_ms", gcb_median(c.dur, c.ndur) * 1e3);
        bench_result_add(&res, "loop_collect_max_ms", cmax * 1e3);
        bench_result_add(&res, "collector_cpu_util", m.seconds > 0 ? c.cpu_s / m.seconds : 0);
#if defined(GCB_FTM)
        gcb_ftm_stats_report(&res, 2, before);
#else
        bench_result_add(&res, "boehm_collections", (double)(GC_get_gc_no() - gc_no0));
        bench_result_add(&res, "boehm_stw_count", (double)b_stw_count);
        bench_result_add(&res, "boehm_stw_max_ms", (double)b_stw_max / 1e6);
        bench_result_add(&res, "boehm_stw_mean_ms", b_stw_count ? (double)b_stw_total / 1e6 / (double)b_stw_count : 0);
        bench_result_add(&res, "boehm_cycle_max_ms", (double)b_cycle_max / 1e6);
        bench_result_add(&res, "boehm_parallel_markers", (double)GC_get_parallel());
#endif
        bench_result_print(&res);
    }
    free(c.dur);
    free(h);
    return 0;
}
