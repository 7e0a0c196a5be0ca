/* objects.c — ftm-bench-objects: benchmarks of ftmem's object layer
 * (biased reference counting, immortal and deferred objects, cross-thread
 * release, object churn, header size).  Unlike ftm-bench it links ftmem
 * (ftmem-static) and calls the ftm_ API; only the `malloc` mode calls plain
 * malloc/free, so bench/run_objects.sh can run it under each peer allocator
 * with LD_PRELOAD, as bench/run.sh does for ftm-bench.
 *
 *   ftm-bench-objects pair    [-n N] [-s S]  owner incref+decref vs a plain and an atomic
 *                                            counter (same loop); immortal, shared (non-
 *                                            owner: atomic path) and deferred objects
 *   ftm-bench-objects churn   [-n N]         ftm_new+ftm_decref of a 32 B object
 *                                            (with/without FTM_TYPE_FREELIST), ftm_malloc/free
 *   ftm-bench-objects malloc  [-n N]         malloc(32)+free through whatever malloc the
 *                                            process resolves (LD_PRELOAD)
 *   ftm-bench-objects xthread -t K [-d MS] [--malloc]
 *                                            one thread creates, K threads release
 *   ftm-bench-objects hot     -t T -m atomic|deferred|private [-d MS]
 *                                            one hot object, T threads incref+decref it
 *                                            (thread i pinned to CPU i mod cores)
 *   ftm-bench-objects sizes                  header and block sizes
 *   ftm-bench-objects cg VARIANT [-n N]      run_VARIANT(10000) to warm up, then
 *                                            run_VARIANT(N), for valgrind --tool=callgrind
 *                                            --toggle-collect=run_VARIANT
 *                                            --zero-before=run_VARIANT (only the
 *                                            second call is counted)
 *
 * Every result is one JSON line in ftm-bench's format (common.h:
 * bench_result_print): workload, threads, unit, ops, seconds, ops_per_s,
 * checksum, errors, maxrss_kib and numeric extras.  `errors` counts wrong
 * reference counts or corrupted payloads seen after a run (exit 3), never a
 * time: nothing here asserts on speed.
 *
 * Loops under test are noinline/noipa functions taking the objects through
 * an array of volatile pointers, with bench_escape() (an empty asm with a
 * memory clobber) between the increment and the decrement: the compiler
 * can neither hoist the object out of the loop nor fold +1/-1 into nothing,
 * and every variant (ftm, plain, atomic, loop only) has the same shape: one
 * pointer load from the array, the counting, the barrier.
 */
#include "common.h"

#include <ftmem.h>

#include <ck_ring.h>
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#if defined(__clang__)
#define OBJ_NOIPA __attribute__((noinline))
#else
#define OBJ_NOIPA __attribute__((noinline, noipa))
#endif

#define NOBJ 64      /* objects cycled through by the pair loops (power of two) */
#define BATCH 256    /* objects allocated before they are freed, batch variants */
#define KEEP 64      /* blocks kept live during churn so the 32 B pool never empties */

/* ---- Types ----------------------------------------------------------------- */

static ftm_type t32 = {.name = "bench32", .basic_size = 32};
static ftm_type t32fl = {.name = "bench32-freelist", .basic_size = 32, .flags = FTM_TYPE_FREELIST};
static ftm_type tbare = {.name = "bench-object", .basic_size = sizeof(ftm_object)};
static ftm_type ttuple = {.name = "bench-tuple", .basic_size = sizeof(ftm_varobject),
                          .item_size = sizeof(void *)};
/* list-like: varobject + item pointer + allocated (CPython's PyListObject) */
static ftm_type tlist = {.name = "bench-list", .basic_size = sizeof(ftm_varobject) + 16};

/* The plain and atomic counters live in objects of the same size (32 B
 * blocks from the same allocator), the count at the same offset as
 * ob_ref_local, so all variants touch memory the same way. */
typedef struct plain_obj_s {
    uint32_t tid;
    uint32_t ref;
    int32_t shared;
    uint32_t bits;
    const void *type;
    uint64_t payload;
} plain_obj;

typedef struct atomic_obj_s {
    uint32_t tid;
    _Atomic uint32_t ref;
    int32_t shared;
    uint32_t bits;
    const void *type;
    uint64_t payload;
} atomic_obj;

/* CPython 3.12+ default build: 64-bit ob_refcnt at offset 0, immortal when
 * its low 32 bits are negative (Py_INCREF / Py_DECREF). */
typedef struct cpy_obj_s {
    int64_t refcnt;
    const void *type;
    uint64_t payload[2];
} cpy_obj;

_Static_assert(sizeof(plain_obj) == 32 && sizeof(atomic_obj) == 32 && sizeof(cpy_obj) == 32,
               "32 B like the ftm objects");

static ftm_object *volatile g_ftm[NOBJ];
static ftm_object *volatile g_imm[NOBJ];
static ftm_object *volatile g_ro[NOBJ];
static ftm_object *volatile g_shared[NOBJ]; /* owned by a thread that has exited */
static ftm_object *volatile g_def[NOBJ];    /* deferred */
static plain_obj *volatile g_plain[NOBJ];
static atomic_obj *volatile g_atomic[NOBJ];
static cpy_obj *volatile g_cpy[NOBJ];

OBJ_NOIPA void obj_dealloc_stub(void *p)
{
    bench_escape(p);
}

/* ---- The pair loops ------------------------------------------------------ */

/* The ftm pair loop.  Identical copies under other names for immortal,
 * shared (owned by another thread: the atomic path) and deferred objects,
 * so callgrind can tell the runs apart (noipa implies no_icf: the copies
 * are not folded into one). */
#define DEFINE_PAIR_FTM(name)                                      \
    OBJ_NOIPA void name(ftm_object *volatile *objs, uint64_t n)    \
    {                                                              \
        for (uint64_t i = 0; i < n; i++) {                         \
            ftm_object *o = objs[i & (NOBJ - 1)];                  \
            ftm_incref(o);                                         \
            bench_escape(o);                                       \
            ftm_decref(o);                                         \
        }                                                          \
    }
DEFINE_PAIR_FTM(run_pair_ftm)
DEFINE_PAIR_FTM(run_pair_immortal)
DEFINE_PAIR_FTM(run_pair_shared)
DEFINE_PAIR_FTM(run_pair_deferred)

OBJ_NOIPA void run_pair_plain(plain_obj *volatile *objs, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        plain_obj *o = objs[i & (NOBJ - 1)];
        o->ref++;
        bench_escape(o);
        if (--o->ref == 0)
            obj_dealloc_stub(o);
    }
}

OBJ_NOIPA void run_pair_cpy312(cpy_obj *volatile *objs, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        cpy_obj *o = objs[i & (NOBJ - 1)];
        /* Py_INCREF: skip if the 32-bit add would wrap (immortal) */
        uint32_t lo = (uint32_t)o->refcnt + 1;
        if (lo != 0)
            memcpy(&o->refcnt, &lo, sizeof lo); /* little-endian low half, as CPython */
        bench_escape(o);
        /* Py_DECREF */
        if ((int32_t)o->refcnt >= 0 && --o->refcnt == 0)
            obj_dealloc_stub(o);
    }
}

OBJ_NOIPA void run_pair_atomic(atomic_obj *volatile *objs, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        atomic_obj *o = objs[i & (NOBJ - 1)];
        atomic_fetch_add_explicit(&o->ref, 1, memory_order_relaxed);
        bench_escape(o);
        if (atomic_fetch_sub_explicit(&o->ref, 1, memory_order_acq_rel) == 1)
            obj_dealloc_stub(o);
    }
}

OBJ_NOIPA void run_pair_loop(ftm_object *volatile *objs, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        ftm_object *o = objs[i & (NOBJ - 1)];
        bench_escape(o);
    }
}

/* ---- Churn loops ----------------------------------------------------------- */

OBJ_NOIPA void run_new(ftm_type *t, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        ftm_object *o = ftm_new(t);
        bench_escape(o);
        ftm_decref(o);
    }
}

/* The same loop under another name, for the freelist type (callgrind tells
 * the runs apart by function name). */
OBJ_NOIPA void run_new_fl(ftm_type *t, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        ftm_object *o = ftm_new(t);
        bench_escape(o);
        ftm_decref(o);
    }
}

OBJ_NOIPA void run_new_batch(ftm_type *t, uint64_t n)
{
    ftm_object *a[BATCH];
    for (uint64_t i = 0; i < n; i += BATCH) {
        for (int j = 0; j < BATCH; j++) {
            a[j] = ftm_new(t);
            bench_escape(a[j]);
        }
        for (int j = 0; j < BATCH; j++)
            ftm_decref(a[j]);
    }
}

OBJ_NOIPA void run_ftm_malloc(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        void *p = ftm_malloc(32);
        bench_escape(p);
        ftm_free(p);
    }
}

OBJ_NOIPA void run_ftm_malloc_batch(uint64_t n)
{
    void *a[BATCH];
    for (uint64_t i = 0; i < n; i += BATCH) {
        for (int j = 0; j < BATCH; j++) {
            a[j] = ftm_malloc(32);
            bench_escape(a[j]);
        }
        for (int j = 0; j < BATCH; j++)
            ftm_free(a[j]);
    }
}

/* malloc/free of the process (a peer allocator under LD_PRELOAD). */
OBJ_NOIPA void run_malloc(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        void *p = malloc(32);
        bench_escape(p);
        free(p);
    }
}

/* The same with the 32 bytes written, as ftm_new writes the header and
 * zeroes the rest: what initialisation adds to a bare malloc. */
OBJ_NOIPA void run_malloc_init(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        void *p = malloc(32);
        memset(p, 0, 32);
        bench_escape(p);
        free(p);
    }
}

OBJ_NOIPA void run_malloc_batch(uint64_t n)
{
    void *a[BATCH];
    for (uint64_t i = 0; i < n; i += BATCH) {
        for (int j = 0; j < BATCH; j++) {
            a[j] = malloc(32);
            bench_escape(a[j]);
        }
        for (int j = 0; j < BATCH; j++)
            free(a[j]);
    }
}

static _Alignas(64) char fake_block[64];

OBJ_NOIPA void *fake_new(size_t size)
{
    bench_escape(size);
    return fake_block;
}

OBJ_NOIPA void fake_release(void *p)
{
    bench_escape(p);
}

/* Callgrind baseline of the churn loops: the same loop calling two empty
 * noinline functions. */
OBJ_NOIPA void run_calls_empty(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        void *p = fake_new(32);
        bench_escape(p);
        fake_release(p);
    }
}

/* ---- Helpers --------------------------------------------------------------- */

static int ncpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static double thread_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    fprintf(stderr, "ftm-bench-objects: %s: %s\n", what, strerror(errno));
    exit(2);
}

static ftm_object *new_or_die(ftm_type *t)
{
    ftm_object *o = ftm_new(t);
    if (!o)
        die("ftm_new");
    return o;
}

/* ---- Timing of the single-thread loops ------------------------------------
 * The machine may be shared (2 cores, other jobs): wall time would count the
 * time the thread spent descheduled.  Each loop is therefore timed by the
 * thread's CPU time, in ROUNDS rounds interleaved with the other variants of
 * the same mode (order rotated by the seed), and reported as the best round
 * (least disturbed: cache pollution by other processes only adds time), with
 * the median round and the median round's wall time beside it. */

#define ROUNDS 5

typedef struct timed_s {
    const char *name;
    const char *unit;
    void (*fn)(const struct timed_s *, uint64_t);
    void *ctx;          /* objects array or type */
    bool batch;         /* n must be a multiple of BATCH */
    double cpu[ROUNDS]; /* seconds per round */
    double wall[ROUNDS];
    uint64_t n_round;
} timed_t;

#define TV(name_, unit_, fn_, ctx_, batch_) \
    {.name = (name_), .unit = (unit_), .fn = (fn_), .ctx = (void *)(ctx_), .batch = (batch_)}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median_of(const double *v, int n)
{
    double t[ROUNDS];
    memcpy(t, v, (size_t)n * sizeof *t);
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

/* Warm every variant up (1/20 of its work), then ROUNDS interleaved rounds. */
static void timed_run(timed_t *v, int nv, uint64_t n, uint64_t seed)
{
    for (int i = 0; i < nv; i++) {
        uint64_t r = n / ROUNDS;
        v[i].n_round = v[i].batch ? (r + BATCH - 1) / BATCH * BATCH : r ? r : 1;
        uint64_t w = v[i].n_round / 4;
        v[i].fn(&v[i], v[i].batch ? (w + BATCH - 1) / BATCH * BATCH : w + 1);
    }
    for (int r = 0; r < ROUNDS; r++) {
        for (int k = 0; k < nv; k++) {
            timed_t *t = &v[(k + r + seed) % (uint64_t)nv];
            double c0 = thread_cpu_now(), w0 = bench_now();
            t->fn(t, t->n_round);
            t->wall[r] = bench_now() - w0;
            t->cpu[r] = thread_cpu_now() - c0;
        }
    }
}

static void timed_init_result(bench_result_t *r, const timed_t *t)
{
    double best = t->cpu[0];
    for (int i = 1; i < ROUNDS; i++)
        if (t->cpu[i] < best)
            best = t->cpu[i];
    double nr = (double)t->n_round;
    bench_result_init(r, t->name, 1, t->unit);
    r->ops = t->n_round;
    r->seconds = best;
    bench_result_add(r, "ns_per_op", best * 1e9 / nr);
    bench_result_add(r, "ns_per_op_median_round", median_of(t->cpu, ROUNDS) * 1e9 / nr);
    bench_result_add(r, "ns_per_op_wall", median_of(t->wall, ROUNDS) * 1e9 / nr);
    bench_result_add(r, "rounds", ROUNDS);
}

static void timed_print(const timed_t *t, uint64_t checksum, uint64_t errors, const char *k1, double v1)
{
    bench_result_t r;
    timed_init_result(&r, t);
    r.checksum = checksum;
    r.errors = errors;
    if (k1)
        bench_result_add(&r, k1, v1);
    bench_result_print(&r);
}

/* ---- pair ------------------------------------------------------------------- */

static sigjmp_buf ro_jmp;
static volatile sig_atomic_t ro_faulted;

static void ro_segv(int sig)
{
    (void)sig;
    ro_faulted = 1;
    siglongjmp(ro_jmp, 1);
}

/* 64 hand-built immortal objects in one page of their own, made read-only
 * while incref/decref run on them: any store to a header faults. */
static _Alignas(4096) unsigned char ro_page[4096];

static void *make_shared_objects(void *arg)
{
    (void)arg;
    for (int i = 0; i < NOBJ; i++)
        g_shared[i] = new_or_die(&t32); /* count 1 stays with this thread, which exits */
    return NULL;
}

static void setup_pair_objects(void)
{
    pthread_t th;
    if (pthread_create(&th, NULL, make_shared_objects, NULL) != 0)
        die("pthread_create");
    pthread_join(th, NULL);
    for (int i = 0; i < NOBJ; i++) {
        g_ftm[i] = new_or_die(&t32);
        g_imm[i] = new_or_die(&t32);
        if (ftm_make_immortal(g_imm[i]) != 0)
            die("ftm_make_immortal");
        plain_obj *p = ftm_malloc(sizeof *p);
        atomic_obj *a = ftm_malloc(sizeof *a);
        cpy_obj *c = ftm_malloc(sizeof *c);
        if (!p || !a || !c)
            die("ftm_malloc");
        memset(p, 0, sizeof *p);
        memset(a, 0, sizeof *a);
        memset(c, 0, sizeof *c);
        p->ref = 1;
        atomic_init(&a->ref, 1);
        c->refcnt = 1;
        g_plain[i] = p;
        g_atomic[i] = a;
        g_cpy[i] = c;
        ftm_object *r = (ftm_object *)(ro_page + (size_t)i * 32);
        r->ob_type = &t32;
        if (ftm_make_immortal(r) != 0) /* no owner (ob_tid 0): allowed */
            die("ftm_make_immortal (static)");
        g_ro[i] = r;
        g_def[i] = new_or_die(&t32);
        if (ftm_set_deferred(g_def[i]) != 0)
            die("ftm_set_deferred");
    }
}

static void tv_pair_ftm(const timed_t *t, uint64_t n) { run_pair_ftm(t->ctx, n); }
static void tv_pair_immortal(const timed_t *t, uint64_t n) { run_pair_immortal(t->ctx, n); }
static void tv_pair_plain(const timed_t *t, uint64_t n) { run_pair_plain(t->ctx, n); }
static void tv_pair_cpy312(const timed_t *t, uint64_t n) { run_pair_cpy312(t->ctx, n); }
static void tv_pair_atomic(const timed_t *t, uint64_t n) { run_pair_atomic(t->ctx, n); }
static void tv_pair_loop(const timed_t *t, uint64_t n) { run_pair_loop(t->ctx, n); }
static void tv_pair_shared(const timed_t *t, uint64_t n) { run_pair_shared(t->ctx, n); }
static void tv_pair_deferred(const timed_t *t, uint64_t n) { run_pair_deferred(t->ctx, n); }

static int mode_pair(uint64_t n, uint64_t seed)
{
    setup_pair_objects();
    unsigned char before[NOBJ][sizeof(ftm_object)];
    ssize_t rc_shared[NOBJ], rc_def[NOBJ];
    for (int i = 0; i < NOBJ; i++) {
        memcpy(before[i], (const void *)g_imm[i], sizeof(ftm_object));
        rc_shared[i] = ftm_refcount(g_shared[i]);
        rc_def[i] = ftm_refcount(g_def[i]);
    }

    const char *u = "incref+decref";
    timed_t v[] = {
        TV("pair-ftm-owner", u, tv_pair_ftm, g_ftm, false),
        TV("pair-plain", u, tv_pair_plain, g_plain, false),
        TV("pair-cpy312", u, tv_pair_cpy312, g_cpy, false),
        TV("pair-atomic", u, tv_pair_atomic, g_atomic, false),
        TV("pair-loop", u, tv_pair_loop, g_ftm, false),
        TV("pair-ftm-shared", u, tv_pair_shared, g_shared, false),
        TV("pair-ftm-deferred", u, tv_pair_deferred, g_def, false),
        TV("pair-ftm-immortal", u, tv_pair_immortal, g_imm, false), /* last */
    };
    int nv = (int)(sizeof v / sizeof v[0]);
    timed_run(v, nv, n, seed);

    /* Counts must be back to 1 (checksum: their sum). */
    uint64_t errors = 0, sum = 0;
    for (int i = 0; i < NOBJ; i++) {
        ssize_t rc = ftm_refcount(g_ftm[i]);
        sum += (uint64_t)rc;
        errors += rc != 1;
        errors += g_plain[i]->ref != 1;
        errors += atomic_load(&g_atomic[i]->ref) != 1;
        errors += g_cpy[i]->refcnt != 1;
        errors += ftm_refcount(g_shared[i]) != rc_shared[i];
    }
    ftm_thread_flush(); /* flush the deferred counts: net zero */
    for (int i = 0; i < NOBJ; i++)
        errors += ftm_refcount(g_def[i]) != rc_def[i];
    for (int i = 0; i < nv - 1; i++)
        timed_print(&v[i], sum, errors, NULL, 0);

    /* Immortal: same loop; the header bytes must be unchanged after it ... */
    int changed = 0;
    for (int i = 0; i < NOBJ; i++)
        changed += memcmp(before[i], (const void *)g_imm[i], sizeof(ftm_object)) != 0;
    timed_print(&v[nv - 1], 0, (uint64_t)changed, "headers_changed", changed);

    /* ... and on a read-only page no store may happen at all (one would fault). */
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = ro_segv;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old);
    ro_faulted = 0;
    timed_t ro = TV("pair-ftm-immortal-ro", u, tv_pair_immortal, g_ro, false);
    if (mprotect(ro_page, sizeof ro_page, PROT_READ) != 0)
        die("mprotect");
    if (sigsetjmp(ro_jmp, 1) == 0)
        timed_run(&ro, 1, n, 0);
    mprotect(ro_page, sizeof ro_page, PROT_READ | PROT_WRITE);
    sigaction(SIGSEGV, &old, NULL);
    timed_print(&ro, 0, (uint64_t)ro_faulted, "store_faulted", ro_faulted);
    return errors || changed || ro_faulted ? 3 : 0;
}

/* ---- churn ------------------------------------------------------------------ */

/* Keep blocks of several sizes live (32 B among them), as pair.c does, so a
 * pool never empties and the loop is not timed retiring it. */
static void churn_keep(void **keep, ftm_object **okeep)
{
    for (int i = 0; i < KEEP; i++) {
        keep[i] = ftm_malloc((size_t)(16 + 16 * (i % 8)));
        okeep[i] = new_or_die(i % 2 ? &t32 : &t32fl);
    }
}

static void tv_new(const timed_t *t, uint64_t n)
{
    ftm_type *ty = t->ctx;
    (ty == &t32fl ? run_new_fl : run_new)(ty, n);
}
static void tv_new_batch(const timed_t *t, uint64_t n) { run_new_batch(t->ctx, n); }
static void tv_ftm_malloc(const timed_t *t, uint64_t n) { run_ftm_malloc(n); }
static void tv_ftm_malloc_batch(const timed_t *t, uint64_t n) { run_ftm_malloc_batch(n); }

static int mode_churn(uint64_t n, uint64_t seed)
{
    void *keep[KEEP];
    ftm_object *okeep[KEEP];
    churn_keep(keep, okeep);
    const char *uo = "ftm_new+ftm_decref", *um = "ftm_malloc+ftm_free";
    timed_t v[] = {
        TV("churn-ftm-new", uo, tv_new, &t32, false),
        TV("churn-ftm-new-freelist", uo, tv_new, &t32fl, false),
        TV("churn-ftm-malloc", um, tv_ftm_malloc, NULL, false),
        TV("churn-ftm-new-batch", uo, tv_new_batch, &t32, true),
        TV("churn-ftm-new-freelist-batch", uo, tv_new_batch, &t32fl, true),
        TV("churn-ftm-malloc-batch", um, tv_ftm_malloc_batch, NULL, true),
    };
    int nv = (int)(sizeof v / sizeof v[0]);
    ftm_object_stats_t s0, s1;
    ftm_object_stats_get(&s0);
    timed_run(v, nv, n, seed);
    ftm_object_stats_get(&s1);
    /* every object created in the loops died again */
    uint64_t created = s1.created - s0.created, freed = s1.freed - s0.freed;
    uint64_t errors = created != freed;
    for (int i = 0; i < nv; i++)
        timed_print(&v[i], created, errors, NULL, 0);
    for (int i = 0; i < KEEP; i++) {
        ftm_free(keep[i]);
        ftm_decref(okeep[i]);
    }
    return errors ? 3 : 0;
}

/* ---- malloc (a peer allocator, chosen by LD_PRELOAD) ------------------------ */

static const char *malloc_from(void)
{
    Dl_info info;
    void *sym = dlsym(RTLD_DEFAULT, "malloc");
    if (sym && dladdr(sym, &info) && info.dli_fname)
        return info.dli_fname;
    return "?";
}

static void tv_malloc(const timed_t *t, uint64_t n) { run_malloc(n); }
static void tv_malloc_init(const timed_t *t, uint64_t n) { run_malloc_init(n); }
static void tv_malloc_batch(const timed_t *t, uint64_t n) { run_malloc_batch(n); }

static int mode_malloc(uint64_t n, uint64_t seed)
{
    /* which library `malloc` resolves to: proves the preload took effect */
    printf("{\"workload\":\"malloc-info\",\"malloc_from\":\"%s\"}\n", malloc_from());
    void *keep[KEEP];
    for (int i = 0; i < KEEP; i++)
        keep[i] = malloc((size_t)(16 + 16 * (i % 8)));
    timed_t v[] = {
        TV("churn-malloc", "malloc+free", tv_malloc, NULL, false),
        TV("churn-malloc-init", "malloc+memset32+free", tv_malloc_init, NULL, false),
        TV("churn-malloc-batch", "malloc+free", tv_malloc_batch, NULL, true),
    };
    int nv = (int)(sizeof v / sizeof v[0]);
    timed_run(v, nv, n, seed);
    for (int i = 0; i < nv; i++)
        timed_print(&v[i], 0, 0, NULL, 0);
    for (int i = 0; i < KEEP; i++)
        free(keep[i]);
    return 0;
}

/* ---- hot: one shared object, T threads -------------------------------------- */

enum { HOT_ATOMIC, HOT_DEFERRED, HOT_PRIVATE };

typedef struct hot_shared_s {
    ftm_object *obj;
    int mode;
    double cpu[1024];
} hot_shared;

OBJ_NOIPA void run_pair_one(ftm_object *o, uint64_t n)
{
    ftm_object *volatile vo = o;
    for (uint64_t i = 0; i < n; i++) {
        ftm_object *p = vo;
        ftm_incref(p);
        bench_escape(p);
        ftm_decref(p);
    }
}

/* Worker i runs on CPU i mod cores: with T <= cores the threads really run
 * in parallel (the scheduler would otherwise stack them on one core when
 * another process keeps the other busy, and no contention would be seen). */
static void pin_to_cpu(int i)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(i % ncpus(), &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *hot_worker(void *arg)
{
    bench_worker_t *w = arg;
    hot_shared *sh = w->shared;
    pin_to_cpu(w->id);
    ftm_object *o = sh->mode == HOT_PRIVATE ? new_or_die(&t32) : sh->obj;
    run_pair_one(o, 1000); /* registers the thread (deferred), warms the line */
    bench_worker_started(w);
    double c0 = thread_cpu_now();
    uint64_t ops = 0;
    while (!bench_should_stop(ops, w->o->ops)) {
        run_pair_one(o, 1024);
        ops += 1024;
    }
    w->t_end = bench_now();
    sh->cpu[w->id] = thread_cpu_now() - c0;
    w->ops = ops;
    if (sh->mode == HOT_PRIVATE) {
        w->errors = ftm_refcount(o) != 1;
        ftm_decref(o);
    }
    return NULL;
}

static int mode_hot(const bench_opts_t *o, const char *mode)
{
    hot_shared *sh = calloc(1, sizeof *sh);
    if (!strcmp(mode, "atomic"))
        sh->mode = HOT_ATOMIC;
    else if (!strcmp(mode, "deferred"))
        sh->mode = HOT_DEFERRED;
    else if (!strcmp(mode, "private"))
        sh->mode = HOT_PRIVATE;
    else {
        fprintf(stderr, "ftm-bench-objects: hot -m atomic|deferred|private\n");
        return 2;
    }
    if (o->threads > 1024)
        return 2;
    /* The main thread creates (owns) the shared object and only sleeps: the
     * workers are never its owner, so without deferral they take the
     * atomic path (fetch_add on ob_ref_shared, CAS in ftm__decref_shared). */
    if (sh->mode != HOT_PRIVATE) {
        sh->obj = new_or_die(&t32);
        if (sh->mode == HOT_DEFERRED && ftm_set_deferred(sh->obj) != 0)
            die("ftm_set_deferred");
    }
    bench_worker_t *w = calloc((size_t)o->threads, sizeof *w);
    bench_result_t r;
    char name[64];
    snprintf(name, sizeof name, "hot-%s", mode);
    bench_result_init(&r, name, o->threads, "incref+decref");
    r.seconds = bench_run_workers(o, hot_worker, sh, w);
    bench_result_sum_workers(&r, w, o->threads);
    double rate_sum = 0, rate_min = 0, cpu_rate_sum = 0, cpu_sum = 0;
    for (int i = 0; i < o->threads; i++) {
        double el = w[i].t_end - w[i].t_start;
        double rate = el > 0 ? (double)w[i].ops / el : 0;
        rate_sum += rate;
        if (i == 0 || rate < rate_min)
            rate_min = rate;
        cpu_rate_sum += sh->cpu[i] > 0 ? (double)w[i].ops / sh->cpu[i] : 0;
        cpu_sum += sh->cpu[i];
    }
    if (sh->mode != HOT_PRIVATE) {
        if (sh->mode == HOT_DEFERRED && ftm_clear_deferred(sh->obj) != 0)
            die("ftm_clear_deferred");
        /* the workers' counts are flushed (exit) or were atomic: back to 1 */
        ssize_t rc = ftm_refcount(sh->obj);
        r.checksum = (uint64_t)rc;
        r.errors += rc != 1;
        ftm_decref(sh->obj);
    }
    double per = rate_sum / o->threads;
    bench_result_add(&r, "per_thread_ops_per_s", per);
    bench_result_add(&r, "min_thread_ops_per_s", rate_min);
    bench_result_add(&r, "ns_per_op_per_thread", per > 0 ? 1e9 / per : 0);
    /* per thread per second of its own CPU time: what a thread achieves
     * while it runs, oversubscription (T > cores) and other load aside */
    bench_result_add(&r, "per_thread_cpu_ops_per_s", cpu_rate_sum / o->threads);
    bench_result_add(&r, "cpu_util", r.seconds > 0 ? cpu_sum / (r.seconds * o->threads) : 0);
    bench_result_add(&r, "cores", ncpus());
    bench_result_add(&r, "oversubscribed", o->threads > ncpus());
    bench_result_add(&r, "pinned", 1);
    bench_result_print(&r);
    free(w);
    int err = r.errors ? 3 : 0;
    free(sh);
    return err;
}

/* ---- xthread: one creator, K releasers -------------------------------------- */

#define XT_RING 1024

typedef struct xt_ring_s {
    ck_ring_t ring;
    char pad[64];
    ck_ring_buffer_t *buf;
} xt_ring;

typedef struct xt_shared_s {
    xt_ring *rings;
    int k;
    bool use_malloc;
    pthread_barrier_t start;
    atomic_bool stop;
} xt_shared;

typedef struct xt_arg_s {
    xt_shared *sh;
    int id; /* 0: producer, 1..K: consumer id-1 */
    uint64_t ops, sum, errors;
    double t_start, t_end;
    char pad[64];
} xt_arg;

static inline void xt_pause(unsigned *spins, bool producer_objects)
{
    if (++*spins < 256) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else {
        *spins = 0;
        /* a runtime's eval loop would reach a safepoint while it waits:
         * merge what the releasers queued to us */
        if (producer_objects)
            ftm_safepoint();
        sched_yield();
    }
}

static void *xt_thread(void *arg)
{
    xt_arg *a = arg;
    xt_shared *sh = a->sh;
    if (a->id == 0)
        ftm_safepoint(); /* register before the clock starts */
    pthread_barrier_wait(&sh->start);
    a->t_start = bench_now();
    if (a->id == 0) {
        uint64_t produced = 0;
        int k = 0;
        while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
            void *p = sh->use_malloc ? ftm_malloc(32) : (void *)ftm_new(&t32);
            if (!p)
                die("allocation");
            uint64_t tag = bench_mix64(produced + 1);
            memcpy((char *)p + 24, &tag, sizeof tag); /* the payload word after the header */
            unsigned spins = 0;
            while (!ck_ring_enqueue_spsc(&sh->rings[k].ring, sh->rings[k].buf, p)) {
                k = (k + 1) % sh->k;
                if (atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
                    if (sh->use_malloc)
                        ftm_free(p);
                    else
                        ftm_decref(p);
                    goto out;
                }
                xt_pause(&spins, !sh->use_malloc);
            }
            k = (k + 1) % sh->k;
            produced++;
        }
    out:
        a->ops = produced;
    } else {
        xt_ring *in = &sh->rings[a->id - 1];
        uint64_t consumed = 0, sum = 0;
        unsigned spins = 0;
        while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
            void *p;
            if (!ck_ring_dequeue_spsc(&in->ring, in->buf, &p)) {
                xt_pause(&spins, false);
                continue;
            }
            spins = 0;
            uint64_t tag;
            memcpy(&tag, (char *)p + 24, sizeof tag);
            sum += tag;
            if (sh->use_malloc)
                ftm_free(p);
            else
                ftm_decref(p); /* not the owner: queued to the producer */
            consumed++;
        }
        a->ops = consumed;
        a->sum = sum;
    }
    a->t_end = bench_now();
    return NULL;
}

static int mode_xthread(const bench_opts_t *o, bool use_malloc)
{
    int k = o->threads;
    if (k < 1 || k > 64) {
        fprintf(stderr, "ftm-bench-objects: xthread -t K: 1..64 releasing threads\n");
        return 2;
    }
    xt_shared sh;
    memset(&sh, 0, sizeof sh);
    sh.k = k;
    sh.use_malloc = use_malloc;
    sh.rings = calloc((size_t)k, sizeof *sh.rings);
    for (int i = 0; i < k; i++) {
        ck_ring_init(&sh.rings[i].ring, XT_RING);
        sh.rings[i].buf = calloc(XT_RING, sizeof(ck_ring_buffer_t));
    }
    pthread_barrier_init(&sh.start, NULL, (unsigned)k + 2);
    xt_arg *a = calloc((size_t)k + 1, sizeof *a);
    pthread_t *tid = calloc((size_t)k + 1, sizeof *tid);
    ftm_object_stats_t s0, s;
    ftm_object_stats_get(&s0);
    size_t rss0 = bench_rss_bytes();
    for (int i = 0; i <= k; i++) {
        a[i].sh = &sh;
        a[i].id = i;
        if (pthread_create(&tid[i], NULL, xt_thread, &a[i]) != 0)
            die("pthread_create");
    }
    pthread_barrier_wait(&sh.start);
    /* Sample the queue backlog (queued, not yet merged) and RSS every ms. */
    double t0 = bench_now(), t_end = t0 + (double)o->duration_ms / 1000.0;
    uint64_t peak_backlog = 0, samples = 0;
    double backlog_sum = 0;
    size_t peak_rss = rss0;
    for (;;) {
        ftm_object_stats_get(&s);
        uint64_t q = s.queued - s0.queued, m = s.merged - s0.merged;
        uint64_t backlog = q > m ? q - m : 0;
        if (backlog > peak_backlog)
            peak_backlog = backlog;
        backlog_sum += (double)backlog;
        samples++;
        size_t rss = bench_rss_bytes();
        if (rss > peak_rss)
            peak_rss = rss;
        if (bench_now() >= t_end)
            break;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&sh.stop, true);
    for (int i = 0; i <= k; i++)
        pthread_join(tid[i], NULL);
    double t_first = a[0].t_start, t_last = a[0].t_end;
    for (int i = 1; i <= k; i++) {
        if (a[i].t_start < t_first)
            t_first = a[i].t_start;
        if (a[i].t_end > t_last)
            t_last = a[i].t_end;
    }
    ftm_object_stats_t s_stop;
    ftm_object_stats_get(&s_stop);
    /* Objects still in the rings: released here, off the clock (the
     * producer has exited: they are merged on its behalf). */
    uint64_t leftover = 0, released = 0, sum = 0;
    for (int i = 0; i < k; i++) {
        void *p;
        while (ck_ring_dequeue_spsc(&sh.rings[i].ring, sh.rings[i].buf, &p)) {
            uint64_t tag;
            memcpy(&tag, (char *)p + 24, sizeof tag);
            sum += tag;
            if (use_malloc)
                ftm_free(p);
            else
                ftm_decref(p);
            leftover++;
        }
        free(sh.rings[i].buf);
    }
    for (int i = 1; i <= k; i++) {
        released += a[i].ops;
        sum += a[i].sum;
    }
    /* every produced object's tag was seen exactly once */
    uint64_t expect = 0;
    for (uint64_t j = 1; j <= a[0].ops; j++)
        expect += bench_mix64(j);
    ftm_object_stats_get(&s);
    bench_result_t r;
    bench_result_init(&r, use_malloc ? "xthread-malloc" : "xthread-objects", k + 1,
                      use_malloc ? "ftm_malloc->ftm_free" : "ftm_new->ftm_decref (other thread)");
    r.ops = released;
    r.seconds = t_last - t_first;
    r.checksum = sum;
    r.errors = (sum != expect) + (released + leftover != a[0].ops);
    if (!use_malloc) /* all produced objects are dead after the drain */
        r.errors += (s.created - s0.created) != (s.freed - s0.freed);
    bench_result_add(&r, "releasers", k);
    bench_result_add(&r, "cores", ncpus());
    bench_result_add(&r, "oversubscribed", k + 1 > ncpus());
    bench_result_add(&r, "produced", (double)a[0].ops);
    bench_result_add(&r, "in_flight_at_stop", (double)leftover);
    bench_result_add(&r, "queued", (double)(s_stop.queued - s0.queued));
    bench_result_add(&r, "merged", (double)(s_stop.merged - s0.merged));
    bench_result_add(&r, "merged_for_others", (double)(s_stop.merged_for_others - s0.merged_for_others));
    bench_result_add(&r, "backlog_at_stop", (double)((s_stop.queued - s0.queued) - (s_stop.merged - s0.merged)));
    bench_result_add(&r, "peak_backlog", (double)peak_backlog);
    bench_result_add(&r, "mean_backlog", samples ? backlog_sum / (double)samples : 0);
    /* a queued object holds its own block and a queue node */
    bench_result_add(&r, "peak_backlog_bytes",
                     (double)peak_backlog * (double)(ftm_good_size(32) + ftm_good_size(2 * sizeof(void *))));
    bench_result_add(&r, "rss_start_kib", (double)(rss0 / 1024));
    bench_result_add(&r, "peak_rss_kib", (double)(peak_rss / 1024));
    bench_result_add(&r, "peak_rss_growth_kib", (double)((peak_rss - rss0) / 1024));
    bench_result_print(&r);
    pthread_barrier_destroy(&sh.start);
    free(sh.rings);
    free(a);
    free(tid);
    return r.errors ? 3 : 0;
}

/* ---- sizes ------------------------------------------------------------------ */

static int mode_sizes(void)
{
    ftm_object *bare = new_or_die(&tbare);
    ftm_object *o32 = new_or_die(&t32);
    ftm_object *tup = ftm_new_var(&ttuple, 0);
    ftm_object *lst = new_or_die(&tlist);
    if (!tup)
        die("ftm_new_var");
    bench_result_t r;
    bench_result_init(&r, "sizes", 1, "bytes");
    bench_result_add(&r, "sizeof_ftm_object", sizeof(ftm_object));
    bench_result_add(&r, "sizeof_ftm_varobject", sizeof(ftm_varobject));
    /* like sys.getsizeof, and the block the allocator hands out for it */
    bench_result_add(&r, "object_sizeof", (double)ftm_sizeof(bare));
    bench_result_add(&r, "object_block", (double)ftm_usable_size(bare));
    bench_result_add(&r, "obj32_sizeof", (double)ftm_sizeof(o32));
    bench_result_add(&r, "obj32_block", (double)ftm_usable_size(o32));
    bench_result_add(&r, "empty_tuple_sizeof", (double)ftm_sizeof(tup));
    bench_result_add(&r, "empty_tuple_block", (double)ftm_usable_size(tup));
    bench_result_add(&r, "empty_list_sizeof", (double)ftm_sizeof(lst));
    bench_result_add(&r, "empty_list_block", (double)ftm_usable_size(lst));
    bench_result_add(&r, "gc_head", 0); /* GC state is in the header (ob_gc_bits) */
    bench_result_print(&r);
    ftm_decref(bare);
    ftm_decref(o32);
    ftm_decref(tup);
    ftm_decref(lst);
    return 0;
}

/* ---- cg: one loop, for callgrind --------------------------------------------- */

/* Cross-thread release, split in its two halves: run_xrelease is a thread
 * dropping the only references to objects a live thread owns (each is
 * queued to the owner), run_xmerge is the owner's safepoint merging (and
 * freeing) what was queued. */
OBJ_NOIPA void run_xrelease(ftm_object **objs, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        ftm_decref(objs[i]);
}

OBJ_NOIPA void run_xmerge(void)
{
    ftm_safepoint();
}

typedef struct xcg_s {
    ftm_object **objs;
    uint64_t w, n;
    pthread_barrier_t bar;
} xcg_t;

static void *xcg_owner(void *arg)
{
    xcg_t *x = arg;
    for (uint64_t i = 0; i < x->w + x->n; i++)
        x->objs[i] = new_or_die(&t32);
    pthread_barrier_wait(&x->bar); /* 1: objects ready */
    pthread_barrier_wait(&x->bar); /* 2: warm-up released */
    run_xmerge();
    pthread_barrier_wait(&x->bar); /* 3: merged */
    pthread_barrier_wait(&x->bar); /* 4: released */
    run_xmerge();
    return NULL;
}

static int mode_cg_cross(uint64_t n)
{
    xcg_t x = {.w = 10000, .n = n};
    x.objs = bench_map((x.w + n) * sizeof *x.objs);
    pthread_barrier_init(&x.bar, NULL, 2);
    pthread_t th;
    if (pthread_create(&th, NULL, xcg_owner, &x) != 0)
        die("pthread_create");
    pthread_barrier_wait(&x.bar);
    run_xrelease(x.objs, x.w);
    pthread_barrier_wait(&x.bar);
    pthread_barrier_wait(&x.bar);
    run_xrelease(x.objs + x.w, n);
    pthread_barrier_wait(&x.bar);
    pthread_join(th, NULL);
    ftm_object_stats_t s;
    ftm_object_stats_get(&s);
    printf("{\"workload\":\"cg\",\"variant\":\"xrelease/xmerge\",\"n\":%" PRIu64
           ",\"queued\":%" PRIu64 ",\"merged\":%" PRIu64 ",\"merged_for_others\":%" PRIu64 "}\n",
           n, s.queued, s.merged, s.merged_for_others);
    bench_unmap(x.objs, (x.w + n) * sizeof *x.objs);
    return s.queued == x.w + n && s.merged == x.w + n ? 0 : 3;
}

static int mode_cg(const char *v, uint64_t n)
{
    if (!strcmp(v, "xrelease") || !strcmp(v, "xmerge"))
        return mode_cg_cross(n);
    /* the same warm-up as the timed runs: objects, kept blocks, one pass */
    setup_pair_objects();
    void *keep[KEEP];
    ftm_object *okeep[KEEP];
    bool is_malloc = !strncmp(v, "malloc", 6);
    if (is_malloc) {
        for (int i = 0; i < KEEP; i++)
            keep[i] = malloc((size_t)(16 + 16 * (i % 8)));
    } else {
        churn_keep(keep, okeep);
    }
    uint64_t w = 10240; /* a multiple of BATCH */
    if (strstr(v, "batch"))
        n = (n + BATCH - 1) / BATCH * BATCH;
    if (!strcmp(v, "pair_ftm")) {
        run_pair_ftm(g_ftm, w);
        run_pair_ftm(g_ftm, n);
    } else if (!strcmp(v, "pair_immortal")) {
        run_pair_immortal(g_imm, w);
        run_pair_immortal(g_imm, n);
    } else if (!strcmp(v, "pair_shared")) {
        run_pair_shared(g_shared, w);
        run_pair_shared(g_shared, n);
    } else if (!strcmp(v, "pair_deferred")) {
        run_pair_deferred(g_def, w);
        run_pair_deferred(g_def, n);
    } else if (!strcmp(v, "pair_plain")) {
        run_pair_plain(g_plain, w);
        run_pair_plain(g_plain, n);
    } else if (!strcmp(v, "pair_cpy312")) {
        run_pair_cpy312(g_cpy, w);
        run_pair_cpy312(g_cpy, n);
    } else if (!strcmp(v, "pair_atomic")) {
        run_pair_atomic(g_atomic, w);
        run_pair_atomic(g_atomic, n);
    } else if (!strcmp(v, "pair_loop")) {
        run_pair_loop(g_ftm, w);
        run_pair_loop(g_ftm, n);
    } else if (!strcmp(v, "new")) {
        run_new(&t32, w);
        run_new(&t32, n);
    } else if (!strcmp(v, "new_fl")) {
        run_new_fl(&t32fl, w);
        run_new_fl(&t32fl, n);
    } else if (!strcmp(v, "ftm_malloc")) {
        run_ftm_malloc(w);
        run_ftm_malloc(n);
    } else if (!strcmp(v, "malloc")) {
        run_malloc(w);
        run_malloc(n);
    } else if (!strcmp(v, "new_batch")) {
        run_new_batch(&t32, w);
        run_new_batch(&t32, n);
    } else if (!strcmp(v, "ftm_malloc_batch")) {
        run_ftm_malloc_batch(w);
        run_ftm_malloc_batch(n);
    } else if (!strcmp(v, "malloc_batch")) {
        run_malloc_batch(w);
        run_malloc_batch(n);
    } else if (!strcmp(v, "calls_empty")) {
        run_calls_empty(w);
        run_calls_empty(n);
    } else {
        fprintf(stderr, "ftm-bench-objects: cg: unknown variant '%s'\n", v);
        return 2;
    }
    for (int i = 0; i < KEEP; i++) {
        if (is_malloc) {
            free(keep[i]);
        } else {
            ftm_free(keep[i]);
            ftm_decref(okeep[i]);
        }
    }
    printf("{\"workload\":\"cg\",\"variant\":\"%s\",\"n\":%" PRIu64 "}\n", v, n);
    return 0;
}

/* ---- main ------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ftm-bench-objects <mode> [options]\n"
            "  pair    [-n N] [-s S]   owner incref+decref vs plain/CPython-3.12/atomic counters; immortal\n"
            "  churn   [-n N]          ftm_new+ftm_decref of 32 B objects (freelist or not), ftm_malloc\n"
            "  malloc  [-n N]          malloc(32)+free of the process's malloc (LD_PRELOAD a peer)\n"
            "  xthread -t K [-d MS] [--malloc]   one creating thread, K releasing threads\n"
            "  hot     -t T -m atomic|deferred|private [-d MS]   one hot object, T threads\n"
            "  sizes                   header and block sizes\n"
            "  cg VARIANT [-n N]       run_VARIANT(10000) to warm up, then run_VARIANT(N) (callgrind with\n"
            "                          --toggle-collect=run_VARIANT --zero-before=run_VARIANT): pair_ftm\n"
            "                          pair_immortal pair_shared pair_deferred pair_plain pair_cpy312\n"
            "                          pair_atomic pair_loop new new_fl\n"
            "                          ftm_malloc malloc calls_empty new_batch ftm_malloc_batch malloc_batch\n"
            "                          xrelease xmerge (non-owner release / owner merge, one object)\n"
            "  --quick                 smoke size\n");
}

static unsigned long long parse_num(const char *opt, const char *s)
{
    char *end;
    unsigned long long v = strtoull(s ? s : "", &end, 0);
    if (!s || *s == 0 || *end != 0) {
        fprintf(stderr, "ftm-bench-objects: %s needs a number, got '%s'\n", opt, s ? s : "");
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *mode = argv[1];
    const char *variant = NULL, *hot_mode = "atomic";
    bench_opts_t o = {.threads = 1, .duration_ms = -1, .seed = 0};
    bool use_malloc = false;
    int i = 2;
    if (!strcmp(mode, "cg")) {
        if (argc < 3) {
            usage(stderr);
            return 2;
        }
        variant = argv[2];
        i = 3;
    }
    for (; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-t"))
            o.threads = (int)parse_num(a, v), i++;
        else if (!strcmp(a, "-d"))
            o.duration_ms = (long)parse_num(a, v), i++;
        else if (!strcmp(a, "-n"))
            o.ops = parse_num(a, v), i++;
        else if (!strcmp(a, "-s"))
            o.seed = parse_num(a, v), i++;
        else if (!strcmp(a, "-m") && v)
            hot_mode = v, i++;
        else if (!strcmp(a, "--malloc"))
            use_malloc = true;
        else if (!strcmp(a, "--quick"))
            o.quick = true;
        else {
            fprintf(stderr, "ftm-bench-objects: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (o.duration_ms < 0)
        o.duration_ms = o.quick ? 200 : 1000;
    uint64_t n = o.ops;
    if (!strcmp(mode, "pair"))
        return mode_pair(n ? n : o.quick ? 5000000 : 100000000, o.seed);
    if (!strcmp(mode, "churn"))
        return mode_churn(n ? n : o.quick ? 1000000 : 20000000, o.seed);
    if (!strcmp(mode, "malloc"))
        return mode_malloc(n ? n : o.quick ? 1000000 : 20000000, o.seed);
    if (!strcmp(mode, "xthread"))
        return mode_xthread(&o, use_malloc);
    if (!strcmp(mode, "hot")) {
        o.ops = 0; /* always time-boxed */
        return mode_hot(&o, hot_mode);
    }
    if (!strcmp(mode, "sizes"))
        return mode_sizes();
    if (!strcmp(mode, "cg"))
        return mode_cg(variant, n ? n : 1000000);
    fprintf(stderr, "ftm-bench-objects: unknown mode '%s'\n", mode);
    usage(stderr);
    return 2;
}
