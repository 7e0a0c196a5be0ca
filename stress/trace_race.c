/* trace_race.c — allocation tracing (ftmem/trace.h) while the heap is busy.
 *
 * --threads workers (ctest: 6, more than the 2 cores) allocate blocks of
 * mixed sizes (16 B .. 64 KiB, one in twenty large: > 128 KiB) by
 * ftm_malloc, ftm_calloc and ftm_realloc(NULL, n), grow and shrink them by
 * ftm_realloc, free them by ftm_free, ftm_free_sized and ftm_realloc(p, 0),
 * and make and drop managed objects (a fixed-size type with a free list and
 * a variable-size one whose big objects take ftm_new_var's ftm_malloc path).
 * About half of everything travels to another thread through atomic slots
 * and dies there (remote frees, cross-thread decrefs).  Every block carries
 * a header (id, size, session, how it was made) and a pattern; every object
 * a canary.
 *
 * One more thread, the controller, keeps tracing busy meanwhile: snapshots
 * (count and size within what the harness has live, statistics by line,
 * file and traceback adding up to the snapshot, filters, compare_to against
 * the previous snapshot), ftm_trace_get_object_traceback on blocks of its
 * own (traced ones must name the function that allocated them, untraced
 * ones must give ENOENT), ftm_trace_reset_peak, a new depth, and once per
 * round a clear, a stop + start (alternating full and sampled tracing) or a
 * stop that lasts until the round ends — while the workers run.
 *
 * Rounds end with every thread parked (two barriers around a
 * ftm_thread_flush, so cross-thread decrefs have been merged and their
 * objects are dead).  At each pause, with nothing running:
 *   - traced current == the sum of a snapshot (the counter and the table
 *     agree), in full and sampled mode;
 *   - stopped: current == 0, no snapshot, no block has a traceback;
 *   - a session started at a pause and not disturbed since, full mode:
 *     current and the snapshot's count equal exactly the harness's live
 *     blocks and objects made in that session; each of them has a traceback
 *     naming its allocating function; each older one gives ENOENT;
 *   - reset_peak makes peak == current.
 * Then the controller may clear or restart tracing (a clean session).
 *
 * Final phase: every worker joined, tracing stopped and started again
 * (full); new threads allocate a known set (with cross-thread frees and
 * decrefs) and stop; current must equal the sizes of the blocks and
 * objects of that set still live, exactly; then everything is freed and
 * current must be 0, the peak at least what was live, and after
 * ftm_trace_stop the tracer's tables must be gone.
 *
 * Failures of the tracer's answers are counted by kind (the first few of
 * each printed) and fail the run at the end; corrupted blocks fail at once.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stress_util.h"

/* ---- settings --------------------------------------------------------------- */
#define OWN_MAX 64          /* items a worker holds */
#define SLOTS_PER_WORKER 16 /* hand-off slots */
#define CTL_N 48            /* the controller's own blocks */
#define FINAL_LIMIT 8       /* frames in the final phase */
#define PROBE_FRAMES 8

static stress_opts_t opt = { .name = "trace_race" };
static int nworkers;
static int rounds;
static unsigned long long ops_per_round;
static int final_ops;
static size_t large_max;

/* ---- items: blocks and objects ---------------------------------------------- */
enum { HOW_ALLOC = 1, HOW_REALLOC = 2, HOW_OBJ = 3, HOW_VOBJ = 4 };

typedef struct hdr_s {
    uint64_t id;
    uint32_t size;  /* bytes asked for (objects: what tracing records) */
    uint16_t sess;  /* session it was (re)allocated in */
    uint8_t how;    /* HOW_* */
    uint8_t pad;
} hdr_t;
_Static_assert(sizeof(hdr_t) == 16, "block header");

/* Both object types share this layout; the fixed-size one ignores ob_size. */
typedef struct tobj_s {
    ftm_varobject ob;
    hdr_t h;
    uint64_t canary;
    uint64_t items[];
} tobj_t;

#define OBJ_POISON 0xdeadbeefdeadbeefull

static _Atomic uint64_t objs_made, objs_dead;

static uint64_t obj_canary(uint64_t id)
{
    uint64_t c = stress_key3(opt.seed, id, 0xca9a41);
    return c == OBJ_POISON ? c ^ 1 : c;
}

static void tobj_dealloc(ftm_object *o)
{
    tobj_t *t = (tobj_t *)o;
    if (t->canary != obj_canary(t->h.id))
        stress_fail("dealloc of object %p (id %llu): canary %016llx, expected %016llx%s", (void *)o,
                    (unsigned long long)t->h.id, (unsigned long long)t->canary,
                    (unsigned long long)obj_canary(t->h.id),
                    t->canary == OBJ_POISON ? " (a second dealloc)" : "");
    t->canary = OBJ_POISON;
    atomic_fetch_add_explicit(&objs_dead, 1, memory_order_relaxed);
}

static ftm_type tobj_type = {
    .name = "trace_race.obj",
    .basic_size = sizeof(tobj_t),
    .flags = FTM_TYPE_FREELIST,
    .dealloc = tobj_dealloc,
};
static ftm_type tvar_type = {
    .name = "trace_race.var",
    .basic_size = sizeof(tobj_t),
    .item_size = sizeof(uint64_t),
    .dealloc = tobj_dealloc,
};

/* An item travels as a tagged pointer: bit 0 set for an object. */
typedef uintptr_t item_t;
static inline bool item_is_obj(item_t it) { return it & 1; }
static inline hdr_t *item_hdr(item_t it)
{
    return item_is_obj(it) ? &((tobj_t *)(it & ~(uintptr_t)1))->h : (hdr_t *)it;
}
static inline const void *item_ptr(item_t it) { return (const void *)(it & ~(uintptr_t)1); }

static uint64_t blk_key(uint64_t id) { return stress_key3(opt.seed, id, 0x7ace); }

/* What the harness has live, counted before an allocation and after a free,
 * so it bounds what a snapshot can see (plus the library's own traced
 * blocks: queue nodes of cross-thread decrefs). */
static _Atomic int64_t h_live_bytes, h_live_count;
static _Atomic uint64_t h_alloc_bytes, h_alloc_count;
#define INTERNAL_SLACK_BYTES ((int64_t)1 << 20)
#define INTERNAL_SLACK_COUNT 4096

static void h_add(size_t size)
{
    atomic_fetch_add_explicit(&h_live_bytes, (int64_t)size, memory_order_relaxed);
    atomic_fetch_add_explicit(&h_live_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h_alloc_bytes, size, memory_order_relaxed);
    atomic_fetch_add_explicit(&h_alloc_count, 1, memory_order_relaxed);
}
static void h_sub(size_t size)
{
    atomic_fetch_sub_explicit(&h_live_bytes, (int64_t)size, memory_order_relaxed);
    atomic_fetch_sub_explicit(&h_live_count, 1, memory_order_relaxed);
}

static size_t pick_size(stress_rng_t *r)
{
    unsigned k = (unsigned)stress_below(r, 100);
    if (k < 10)
        return 16; /* the smallest class: neighbours 16 bytes apart */
    if (k < 70)
        return stress_size(r, 17, 1024);
    if (k < 95)
        return stress_size(r, 1025, 64 * STRESS_KIB);
    return stress_size(r, 128 * STRESS_KIB + 1, large_max);
}

/* The allocating functions are not inlined: tracebacks must name them. */
#define TRACED_FN __attribute__((noinline, noclone))

static TRACED_FN hdr_t *tr_alloc_block(stress_rng_t *r, uint64_t id, size_t size, unsigned sess)
{
    h_add(size);
    unsigned how = (unsigned)stress_below(r, 8);
    hdr_t *h;
    if (how == 0) {
        size_t n = size % 4 == 0 ? 4 : 1;
        h = ftm_calloc(n, size / n);
        if (h == NULL)
            stress_fail("ftm_calloc(%zu, %zu) returned NULL", n, size / n);
        size_t bad = stress_check_zero(h, size);
        if (bad != SIZE_MAX)
            stress_fail("ftm_calloc(%zu): byte %zu of %p is 0x%02x, not zero", size, bad, (void *)h,
                        ((unsigned char *)h)[bad]);
    } else if (how == 1) {
        h = ftm_realloc(NULL, size);
        if (h == NULL)
            stress_fail("ftm_realloc(NULL, %zu) returned NULL", size);
    } else {
        h = ftm_malloc(size);
        if (h == NULL)
            stress_fail("ftm_malloc(%zu) returned NULL", size);
    }
    stress_check_block(h, size, 0, "tr_alloc_block");
    h->id = id;
    h->size = (uint32_t)size;
    h->sess = (uint16_t)sess;
    h->how = HOW_ALLOC;
    stress_fill(h, sizeof *h, size, blk_key(id));
    return h;
}

static void block_verify(const hdr_t *h, const char *who)
{
    if (h->size < sizeof *h || h->size > large_max || h->how < HOW_ALLOC || h->how > HOW_REALLOC)
        stress_fail("%s: block %p: header corrupted (id %llu, size %u, how %u)", who, (const void *)h,
                    (unsigned long long)h->id, h->size, h->how);
    size_t u = ftm_usable_size(h);
    if (u < h->size)
        stress_fail("%s: ftm_usable_size(%p) = %zu < %u", who, (const void *)h, u, h->size);
    stress_verify(h, sizeof *h, h->size, blk_key(h->id), who, (unsigned long long)h->id);
}

static TRACED_FN hdr_t *tr_realloc_block(hdr_t *h, size_t nsize, unsigned sess)
{
    block_verify(h, "before ftm_realloc");
    size_t old = h->size;
    uint64_t id = h->id;
    h_add(nsize);
    hdr_t *q = ftm_realloc(h, nsize);
    if (q == NULL)
        stress_fail("ftm_realloc(%zu -> %zu) returned NULL", old, nsize);
    h_sub(old);
    stress_check_block(q, nsize, 0, "tr_realloc_block");
    if (q->id != id)
        stress_fail("ftm_realloc(%zu -> %zu): header id %llu, expected %llu", old, nsize,
                    (unsigned long long)q->id, (unsigned long long)id);
    stress_verify(q, sizeof *q, old < nsize ? old : nsize, blk_key(id), "after ftm_realloc",
                  (unsigned long long)id);
    if (nsize > old)
        stress_fill(q, old, nsize, blk_key(id));
    q->size = (uint32_t)nsize;
    q->sess = (uint16_t)sess;
    q->how = HOW_REALLOC;
    return q;
}

static void block_free(hdr_t *h, stress_rng_t *r, const char *who)
{
    block_verify(h, who);
    size_t size = h->size;
    unsigned how = (unsigned)stress_below(r, 16);
    h->how = 0xee; /* a stale view of it no longer passes block_verify */
    if (how < 5) {
        ftm_free_sized(h, size);
    } else if (how == 5) {
        if (ftm_realloc(h, 0) != NULL)
            stress_fail("ftm_realloc(p, 0) did not return NULL");
    } else {
        ftm_free(h);
    }
    h_sub(size);
}

static TRACED_FN tobj_t *tr_new_obj(stress_rng_t *r, uint64_t id, unsigned sess)
{
    tobj_t *t;
    size_t size;
    if (stress_one_in(r, 3)) {
        /* up to 64 KiB: beyond 512 bytes ftm_new_var takes ftm_malloc's path */
        size_t n = (size_t)stress_size(r, 1, 8192);
        size = tvar_type.basic_size + n * tvar_type.item_size;
        h_add(size);
        t = (tobj_t *)ftm_new_var(&tvar_type, n);
        if (t == NULL)
            stress_fail("ftm_new_var(%zu) returned NULL", n);
        if ((size_t)t->ob.ob_size != n)
            stress_fail("ftm_new_var(%zu): ob_size %zd", n, (ssize_t)t->ob.ob_size);
        for (size_t i = 0; i < n; i += 61)
            t->items[i] = id ^ i;
        t->h.how = HOW_VOBJ;
    } else {
        size = tobj_type.basic_size;
        h_add(size);
        t = (tobj_t *)ftm_new(&tobj_type);
        if (t == NULL)
            stress_fail("ftm_new returned NULL");
        t->h.how = HOW_OBJ;
    }
    t->h.id = id;
    t->h.size = (uint32_t)size;
    t->h.sess = (uint16_t)sess;
    t->canary = obj_canary(id);
    atomic_fetch_add_explicit(&objs_made, 1, memory_order_relaxed);
    return t;
}

static void obj_verify(const tobj_t *t, const char *who)
{
    if (t->canary != obj_canary(t->h.id))
        stress_fail("%s: object %p (id %llu): canary %016llx, expected %016llx%s", who, (const void *)t,
                    (unsigned long long)t->h.id, (unsigned long long)t->canary,
                    (unsigned long long)obj_canary(t->h.id),
                    t->canary == OBJ_POISON ? " (its dealloc ran)" : "");
    if (t->h.how == HOW_VOBJ) {
        size_t n = (size_t)t->ob.ob_size;
        if (t->h.size != tvar_type.basic_size + n * tvar_type.item_size)
            stress_fail("%s: object %llu: size %u for %zu items", who, (unsigned long long)t->h.id,
                        t->h.size, n);
        for (size_t i = 0; i < n; i += 61)
            if (t->items[i] != (t->h.id ^ i))
                stress_fail("%s: object %llu: item %zu corrupted", who, (unsigned long long)t->h.id, i);
    } else if (t->h.how != HOW_OBJ) {
        stress_fail("%s: object %p: header corrupted (how %u)", who, (const void *)t, t->h.how);
    }
}

static void item_verify(item_t it, const char *who)
{
    if (item_is_obj(it))
        obj_verify((const tobj_t *)item_ptr(it), who);
    else
        block_verify((const hdr_t *)it, who);
}

static void item_destroy(item_t it, stress_rng_t *r, const char *who)
{
    if (item_is_obj(it)) {
        tobj_t *t = (tobj_t *)item_ptr(it);
        obj_verify(t, who);
        size_t size = t->h.size;
        ftm_decref(&t->ob.ob_base); /* maybe on a thread that does not own it */
        h_sub(size);
    } else {
        block_free((hdr_t *)it, r, who);
    }
}

/* ---- hand-off slots ------------------------------------------------------------- */
static _Atomic item_t *slots;
static size_t nslots;

static bool slot_give(stress_rng_t *r, item_t it)
{
    size_t s = (size_t)stress_below(r, nslots);
    for (int k = 0; k < 4; k++, s = (s + 1) % nslots) {
        item_t expect = 0;
        /* release: the item's contents travel with it */
        if (atomic_compare_exchange_strong_explicit(&slots[s], &expect, it, memory_order_acq_rel,
                                                    memory_order_relaxed))
            return true;
    }
    return false;
}

static item_t slot_take(stress_rng_t *r)
{
    size_t s = (size_t)stress_below(r, nslots);
    for (int k = 0; k < 4; k++, s = (s + 1) % nslots) {
        if (atomic_load_explicit(&slots[s], memory_order_relaxed) == 0)
            continue;
        item_t it = atomic_exchange_explicit(&slots[s], 0, memory_order_acq_rel);
        if (it != 0)
            return it;
    }
    return 0;
}

/* ---- reporting the tracer's wrong answers ---------------------------------------- */
enum {
    E_COUNTER,   /* current disagrees with the table at quiescence */
    E_EXACT,     /* clean full session: not what the harness has live */
    E_STOPPED,   /* stopped, yet something is traced */
    E_UNTRACED,  /* an untraced block has a traceback */
    E_MISSING,   /* a block of a clean full session has none */
    E_FRAME,     /* a traceback naming the wrong function */
    E_SNAPSHOT,  /* a snapshot or its statistics inconsistent */
    E_API,       /* an API answer contrary to trace.h */
    E_FINAL,     /* the final phase */
    E_OBJECTS,   /* objects not all dead at the end */
    E_KINDS
};
static const char *const e_name[E_KINDS] = {
    "counter-vs-table", "exact-live-sum", "traced-while-stopped", "traceback-of-untraced-block",
    "traceback-missing", "traceback-wrong-function", "snapshot/statistics", "api", "final-phase",
    "objects",
};
static _Atomic unsigned long e_count[E_KINDS];
static pthread_mutex_t e_lock = PTHREAD_MUTEX_INITIALIZER;

__attribute__((format(printf, 2, 3))) static void report(int kind, const char *fmt, ...)
{
    unsigned long n = atomic_fetch_add(&e_count[kind], 1);
    if (n >= 5)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&e_lock);
    fflush(stdout);
    fprintf(stderr, "%s: MISMATCH [%s]: %s\n", opt.name, e_name[kind], buf);
    fflush(stderr);
    pthread_mutex_unlock(&e_lock);
}

static unsigned long errors_total(void)
{
    unsigned long n = 0;
    for (int k = 0; k < E_KINDS; k++)
        n += atomic_load(&e_count[k]);
    return n;
}

/* ---- tracebacks ------------------------------------------------------------------- */
static bool fn_is(const char *name, const char *want)
{
    size_t n = strlen(want);
    return name != NULL && strncmp(name, want, n) == 0 && (name[n] == 0 || name[n] == '.');
}

static const char *how_fn(unsigned how)
{
    switch (how) {
    case HOW_ALLOC: return "tr_alloc_block";
    case HOW_REALLOC: return "tr_realloc_block";
    default: return "tr_new_obj";
    }
}

/* p's traceback: -1 when untraced (ENOENT, else an E_API report), or its
 * frame count with frame 0's function copied to fn. */
static int probe(const void *p, int limit, char *fn, size_t fnlen)
{
    ftm_trace_frame fr[PROBE_FRAMES];
    errno = 0;
    int n = ftm_trace_get_object_traceback(p, fr, PROBE_FRAMES);
    if (n < 0) {
        if (errno != ENOENT)
            report(E_API, "ftm_trace_get_object_traceback(%p) = -1 with errno %d, not ENOENT", p, errno);
        return -1;
    }
    if (n == 0 || n > PROBE_FRAMES || n > limit)
        report(E_API, "ftm_trace_get_object_traceback(%p) = %d frames (limit %d)", p, n, limit);
    if (n > 0) {
        snprintf(fn, fnlen, "%s", fr[0].function ? fr[0].function : "(null)");
        if (fr[0].filename == NULL || fr[0].pc == 0)
            report(E_API, "ftm_trace_get_object_traceback(%p): frame 0 has filename %p, pc %#lx", p,
                   (const void *)fr[0].filename, (unsigned long)fr[0].pc);
    } else {
        snprintf(fn, fnlen, "(none)");
    }
    return n;
}

/* ---- snapshots ---------------------------------------------------------------------- */
typedef struct sess_state_s {
    bool on;
    size_t rate;   /* 0: full */
    int limit;     /* current traceback limit */
    int max_limit; /* the largest a trace may have (depth changes, resets while running) */
    bool dirty;    /* reset while threads ran: traces with the old rate's estimates may remain */
} sess_state_t;

static const char *const known_fns[] = { "tr_alloc_block", "tr_realloc_block", "tr_new_obj",
                                         "tr_ctl_alloc" };

/* Consistency of a snapshot with itself and its statistics. */
static void snapshot_check(const ftm_trace_snapshot *s, const sess_state_t *st, const char *when,
                           bool only_known_fns)
{
    size_t count = ftm_trace_snapshot_count(s), size = ftm_trace_snapshot_size(s);
    if (ftm_trace_snapshot_traceback_limit(s) != st->limit)
        report(E_SNAPSHOT, "%s: snapshot traceback limit %d, tracing with %d", when,
               ftm_trace_snapshot_traceback_limit(s), st->limit);
    if (ftm_trace_snapshot_sample_rate(s) != st->rate)
        report(E_SNAPSHOT, "%s: snapshot sample rate %zu, tracing with %zu", when,
               ftm_trace_snapshot_sample_rate(s), st->rate);
    bool exact = st->rate == 0 && !st->dirty; /* every trace counts 1 */
    if (exact && size < count)
        report(E_SNAPSHOT, "%s: full tracing, %zu traces of %zu bytes in all", when, count, size);
    static const ftm_trace_key keys[] = { FTM_TRACE_BY_LINENO, FTM_TRACE_BY_FILENAME,
                                          FTM_TRACE_BY_TRACEBACK };
    for (int k = 0; k < 3; k++) {
        ftm_trace_stats *stats = ftm_trace_statistics(s, keys[k], false);
        if (stats == NULL) {
            report(E_SNAPSHOT, "%s: ftm_trace_statistics(key %d) failed: %s", when, k, strerror(errno));
            continue;
        }
        size_t n = ftm_trace_stats_len(stats);
        unsigned long long ssize = 0, scount = 0;
        size_t prev = SIZE_MAX;
        for (size_t i = 0; i < n; i++) {
            const ftm_trace_stat *x = ftm_trace_stats_get(stats, i);
            ssize += x->size;
            scount += x->count;
            if (x->size > prev)
                report(E_SNAPSHOT, "%s: statistics (key %d) not largest first at %zu", when, k, i);
            prev = x->size;
            int maxf = keys[k] == FTM_TRACE_BY_TRACEBACK ? st->max_limit : 1;
            if (x->nframes < 1 || x->nframes > maxf || x->frames == NULL || x->frames[0].filename == NULL)
                report(E_SNAPSHOT, "%s: statistic %zu (key %d): %d frames (at most %d)", when, i, k,
                       x->nframes, maxf);
            else if (keys[k] == FTM_TRACE_BY_FILENAME && x->frames[0].lineno != 0)
                report(E_SNAPSHOT, "%s: statistic by file with line %d", when, x->frames[0].lineno);
            else if (only_known_fns && keys[k] == FTM_TRACE_BY_TRACEBACK) {
                bool ok = false;
                for (size_t f = 0; f < sizeof known_fns / sizeof *known_fns; f++)
                    ok |= fn_is(x->frames[0].function, known_fns[f]);
                if (!ok)
                    report(E_SNAPSHOT, "%s: a trace allocated in %s (%s:%d), not by this program",
                           when, x->frames[0].function, x->frames[0].filename, x->frames[0].lineno);
            }
        }
        if (ssize != size)
            report(E_SNAPSHOT, "%s: statistics (key %d) add up to %llu bytes, snapshot has %zu", when,
                   k, ssize, size);
        if (exact && scount != count)
            report(E_SNAPSHOT, "%s: statistics (key %d) count %llu traces, snapshot has %zu", when, k,
                   scount, count);
        if (k == 0) {
            char *text = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&text, &len);
            if (f != NULL) {
                if (ftm_trace_stats_print(stats, 10, f) != 0)
                    report(E_SNAPSHOT, "%s: ftm_trace_stats_print failed", when);
                fclose(f);
                if (n > 0 && (text == NULL || strstr(text, "size=") == NULL))
                    report(E_SNAPSHOT, "%s: ftm_trace_stats_print wrote no statistic", when);
                free(text);
            }
        }
        ftm_trace_stats_free(stats);
    }
    /* cumulative: every group at most the whole */
    ftm_trace_stats *cum = ftm_trace_statistics(s, FTM_TRACE_BY_LINENO, true);
    if (cum == NULL) {
        report(E_SNAPSHOT, "%s: cumulative statistics failed: %s", when, strerror(errno));
    } else {
        for (size_t i = 0; i < ftm_trace_stats_len(cum); i++)
            if (ftm_trace_stats_get(cum, i)->size > size)
                report(E_SNAPSHOT, "%s: a cumulative group of %zu bytes in a snapshot of %zu", when,
                       ftm_trace_stats_get(cum, i)->size, size);
        ftm_trace_stats_free(cum);
    }
    /* filters: "*" keeps everything, excluding "*" nothing */
    ftm_trace_filter all = { .inclusive = true, .filename_pattern = "*" };
    ftm_trace_snapshot *fs = ftm_trace_snapshot_filter(s, &all, 1);
    if (fs == NULL || ftm_trace_snapshot_count(fs) != count || ftm_trace_snapshot_size(fs) != size)
        report(E_SNAPSHOT, "%s: filter '*' kept %zu of %zu traces", when,
               fs ? ftm_trace_snapshot_count(fs) : (size_t)0, count);
    ftm_trace_snapshot_free(fs);
    all.inclusive = false;
    fs = ftm_trace_snapshot_filter(s, &all, 1);
    if (fs == NULL || ftm_trace_snapshot_count(fs) != 0)
        report(E_SNAPSHOT, "%s: excluding '*' kept %zu traces", when, fs ? ftm_trace_snapshot_count(fs) : (size_t)0);
    ftm_trace_snapshot_free(fs);
}

static bool ctl_is_dirty(void);

/* newer against older: the differences add up. */
static void compare_check(const ftm_trace_snapshot *nw, const ftm_trace_snapshot *old, const char *when)
{
    bool comparable = ftm_trace_snapshot_traceback_limit(nw) == ftm_trace_snapshot_traceback_limit(old) &&
                      ftm_trace_snapshot_sample_rate(nw) == ftm_trace_snapshot_sample_rate(old);
    errno = 0;
    ftm_trace_stats *d = ftm_trace_compare_to(nw, old, FTM_TRACE_BY_LINENO, false);
    if (!comparable) {
        if (d != NULL || errno != EINVAL)
            report(E_API, "%s: compare_to of snapshots of different depth/rate gave %p, errno %d", when,
                   (void *)d, errno);
        ftm_trace_stats_free(d);
        return;
    }
    if (d == NULL) {
        report(E_SNAPSHOT, "%s: compare_to failed: %s", when, strerror(errno));
        return;
    }
    long long sd = 0, cd = 0;
    for (size_t i = 0; i < ftm_trace_stats_len(d); i++) {
        sd += ftm_trace_stats_get(d, i)->size_diff;
        cd += ftm_trace_stats_get(d, i)->count_diff;
    }
    long long want = (long long)ftm_trace_snapshot_size(nw) - (long long)ftm_trace_snapshot_size(old);
    if (sd != want)
        report(E_SNAPSHOT, "%s: compare_to size differences add up to %lld, snapshots differ by %lld", when,
               sd, want);
    long long wantc = (long long)ftm_trace_snapshot_count(nw) - (long long)ftm_trace_snapshot_count(old);
    if (ftm_trace_snapshot_sample_rate(nw) == 0 && !ctl_is_dirty() && cd != wantc)
        report(E_SNAPSHOT, "%s: compare_to count differences add up to %lld, snapshots differ by %lld",
               when, cd, wantc);
    ftm_trace_stats_free(d);
}

/* ---- workers --------------------------------------------------------------------------- */
typedef struct worker_s {
    int idx;
    stress_rng_t r;
    uint64_t next_id;
    int nown;
    item_t own[OWN_MAX];
} worker_t;

static worker_t *workers;
static pthread_barrier_t bar;
static _Atomic int done_count;  /* workers finished with the round */
static _Atomic unsigned g_sess; /* changed only while every worker is parked */
static _Atomic bool g_finish;

static uint64_t new_id(worker_t *w) { return ((uint64_t)w->idx << 40) | w->next_id++; }

static void own_remove(worker_t *w, int i)
{
    w->own[i] = w->own[--w->nown];
}

/* One random operation. */
static void worker_op(worker_t *w, unsigned sess)
{
    stress_rng_t *r = &w->r;
    unsigned k = (unsigned)stress_below(r, 100);
    if (k < 30) { /* allocate */
        if (w->nown == OWN_MAX) {
            int i = (int)stress_below(r, (uint64_t)w->nown);
            item_destroy(w->own[i], r, "local free");
            own_remove(w, i);
        }
        item_t it;
        if (stress_one_in(r, 6))
            it = (item_t)tr_new_obj(r, new_id(w), sess) | 1;
        else
            it = (item_t)tr_alloc_block(r, new_id(w), pick_size(r), sess);
        w->own[w->nown++] = it;
    } else if (k < 45) { /* free locally */
        if (w->nown == 0)
            return;
        int i = (int)stress_below(r, (uint64_t)w->nown);
        item_destroy(w->own[i], r, "local free");
        own_remove(w, i);
    } else if (k < 55) { /* realloc */
        if (w->nown == 0)
            return;
        int i = (int)stress_below(r, (uint64_t)w->nown);
        if (item_is_obj(w->own[i]))
            return;
        hdr_t *h = (hdr_t *)w->own[i];
        size_t ns;
        unsigned m = (unsigned)stress_below(r, 4);
        if (m == 0)
            ns = h->size > 32 ? h->size - (size_t)stress_below(r, h->size / 4) : h->size; /* in place, often */
        else if (m == 1)
            ns = h->size / 2 > 16 ? h->size / 2 : 16;
        else
            ns = pick_size(r);
        w->own[i] = (item_t)tr_realloc_block(h, ns, sess);
    } else if (k < 72) { /* hand one to another thread */
        if (w->nown == 0)
            return;
        int i = (int)stress_below(r, (uint64_t)w->nown);
        item_verify(w->own[i], "before hand-off");
        if (slot_give(r, w->own[i]))
            own_remove(w, i);
    } else if (k < 92) { /* take one from another thread */
        item_t it = slot_take(r);
        if (it == 0)
            return;
        if (w->nown < OWN_MAX && stress_one_in(r, 4))
            w->own[w->nown++] = it, item_verify(it, "taken");
        else
            item_destroy(it, r, "remote free");
    } else { /* look at one */
        if (w->nown > 0)
            item_verify(w->own[stress_below(r, (uint64_t)w->nown)], "check");
    }
}

static void park(void)
{
    int e = pthread_barrier_wait(&bar);
    if (e != 0 && e != PTHREAD_BARRIER_SERIAL_THREAD)
        stress_fail("pthread_barrier_wait: %s", strerror(e));
}

/* Rounds' end: stop, merge cross-thread decrefs, stop again, wait. */
static void worker_pause(void)
{
    atomic_fetch_add_explicit(&done_count, 1, memory_order_release);
    park();             /* 1: nobody mutates */
    ftm_thread_flush(); /* this thread's queue: decrefs from others merged */
    park();             /* 2: everything merged; the checker looks */
    park();             /* 3: go on */
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    for (;;) {
        unsigned sess = atomic_load_explicit(&g_sess, memory_order_relaxed);
        for (unsigned long long i = 0; i < ops_per_round; i++)
            worker_op(w, sess);
        worker_pause();
        if (atomic_load_explicit(&g_finish, memory_order_relaxed))
            break;
    }
    for (int i = 0; i < w->nown; i++)
        item_destroy(w->own[i], &w->r, "last free");
    w->nown = 0;
    ftm_thread_flush();
    return NULL;
}

/* ---- the controller ------------------------------------------------------------------------ */
typedef struct ctl_block_s {
    hdr_t *h;
    unsigned gen; /* the controller's reset count when it was allocated */
} ctl_block_t;

static TRACED_FN hdr_t *tr_ctl_alloc(stress_rng_t *r, uint64_t id)
{
    size_t size;
    unsigned k = (unsigned)stress_below(r, 50);
    if (k == 0)
        size = 200 * STRESS_KIB;
    else if (k < 35)
        size = 16;
    else
        size = stress_size(r, 17, 4096);
    h_add(size);
    hdr_t *h = ftm_malloc(size);
    if (h == NULL)
        stress_fail("ftm_malloc(%zu) returned NULL", size);
    h->id = id;
    h->size = (uint32_t)size;
    h->sess = 0;
    h->how = HOW_ALLOC;
    stress_fill(h, sizeof *h, size, blk_key(id));
    return h;
}

typedef struct ctl_s {
    stress_rng_t r;
    sess_state_t st;
    unsigned gen;      /* resets done by the controller (its own blocks' clock) */
    bool dirty;        /* a reset ran while the workers did: the session is ambiguous */
    unsigned sess_start_gen;
    ctl_block_t blk[CTL_N];
    uint64_t next_id;
    ftm_trace_snapshot *prev;
    /* what happened, for the summary */
    unsigned long snapshots, probes, probes_found, clears, restarts, stops, pauses, clean_checks,
        sampled_sessions, depth_changes, peak_resets, vobj_internal;
    size_t max_count, max_size;
} ctl_t;

static ctl_t ctl;

static bool ctl_is_dirty(void) { return ctl.dirty; }

static void ctl_free_block(ctl_block_t *b)
{
    block_verify(b->h, "controller free");
    size_t size = b->h->size;
    ftm_free(b->h);
    h_sub(size);
    b->h = NULL;
}

static void ctl_new_block(ctl_block_t *b)
{
    b->h = tr_ctl_alloc(&ctl.r, (1ull << 62) | ctl.next_id++);
    b->gen = ctl.gen;
}

static void ctl_forget_prev(void)
{
    ftm_trace_snapshot_free(ctl.prev);
    ctl.prev = NULL;
}

/* Every reset the controller does goes through these (gen: its clock). */
/* sharp: with every worker parked.  A reset while they run leaves traces
 * recorded under the old settings (depth, rate) in the new session. */
static void ctl_clear(bool sharp)
{
    ftm_trace_clear_traces();
    ctl.gen++;
    if (sharp)
        ctl.st.max_limit = ctl.st.limit;
    ctl.clears++;
    ctl_forget_prev();
}

static void ctl_stop(void)
{
    ftm_trace_stop();
    ctl.gen++;
    ctl.st.on = false;
    ctl.stops++;
    ctl_forget_prev();
    if (ftm_trace_is_tracing())
        report(E_API, "tracing after ftm_trace_stop");
}

static void ctl_start(bool sharp)
{
    static const int limits[] = { 1, 2, 5, 16, 64 };
    static const size_t rates[] = { 512, 4096, 65536, 1 << 20 };
    int limit = limits[stress_below(&ctl.r, 5)];
    size_t rate = stress_below(&ctl.r, 5) < 2 ? rates[stress_below(&ctl.r, 4)] : 0; /* 40% sampled */
    if (ftm_trace_start_sampled(limit, rate) != 0)
        stress_fail("ftm_trace_start_sampled(%d, %zu): %s", limit, rate, strerror(errno));
    ctl.gen++;
    int max_limit = !sharp && ctl.st.max_limit > limit ? ctl.st.max_limit : limit;
    ctl.st = (sess_state_t){ .on = true, .rate = rate, .limit = limit, .max_limit = max_limit };
    ctl.restarts++;
    ctl.sampled_sessions += rate != 0;
    ctl_forget_prev();
    if (!ftm_trace_is_tracing() || ftm_trace_get_traceback_limit() != limit ||
        ftm_trace_get_sample_rate() != rate)
        report(E_API, "after start(%d, %zu): tracing %d, limit %d, rate %zu", limit, rate,
               ftm_trace_is_tracing(), ftm_trace_get_traceback_limit(), ftm_trace_get_sample_rate());
}

/* Probe a few of the controller's own blocks: their state is certain. */
static void ctl_probe_own(int n)
{
    for (int k = 0; k < n; k++) {
        ctl_block_t *b = &ctl.blk[stress_below(&ctl.r, CTL_N)];
        char fn[128];
        int got = probe(b->h, ctl.st.on ? ctl.st.max_limit : FTM_TRACE_MAX_FRAMES, fn, sizeof fn);
        ctl.probes++;
        bool current = ctl.st.on && b->gen == ctl.gen;
        if (got >= 0) {
            ctl.probes_found++;
            if (!current) {
                const ctl_block_t *nb = NULL;
                for (int j = 0; j < CTL_N; j++)
                    if ((char *)ctl.blk[j].h == (char *)b->h - 16)
                        nb = &ctl.blk[j];
                char why[160] = "";
                if (nb != NULL)
                    snprintf(why, sizeof why,
                             "; the %u-byte block 16 bytes before it, %p, is %s", nb->h->size,
                             (void *)nb->h, nb->gen == ctl.gen && ctl.st.on ? "traced" : "untraced too");
                report(E_UNTRACED,
                       "controller block %p (%u bytes), allocated before the controller's last "
                       "clear/stop/start%s, has a traceback (frame 0 in %s)%s",
                       (void *)b->h, b->h->size, ctl.st.on ? "" : " (tracing is stopped)", fn, why);
            }
            else if (!fn_is(fn, "tr_ctl_alloc"))
                report(E_FRAME, "controller block %p (%u bytes): traceback frame 0 in %s, not tr_ctl_alloc",
                       (void *)b->h, b->h->size, fn);
        } else if (current && ctl.st.rate == 0) {
            report(E_MISSING, "controller block %p (%u bytes), allocated while tracing everything, has no traceback",
                   (void *)b->h, b->h->size);
        }
    }
}

static void ctl_snapshot(void)
{
    if (!ctl.st.on) {
        errno = 0;
        ftm_trace_snapshot *s = ftm_trace_take_snapshot();
        if (s != NULL || errno != EINVAL)
            report(E_API, "ftm_trace_take_snapshot while stopped: %p, errno %d", (void *)s, errno);
        ftm_trace_snapshot_free(s);
        return;
    }
    /* what the snapshot may see: live at its start, or allocated during it */
    int64_t live0 = atomic_load(&h_live_bytes), nlive0 = atomic_load(&h_live_count);
    uint64_t a0 = atomic_load(&h_alloc_bytes), n0 = atomic_load(&h_alloc_count);
    ftm_trace_snapshot *s = ftm_trace_take_snapshot();
    uint64_t a1 = atomic_load(&h_alloc_bytes), n1 = atomic_load(&h_alloc_count);
    if (s == NULL) {
        report(E_SNAPSHOT, "ftm_trace_take_snapshot failed while tracing: %s", strerror(errno));
        return;
    }
    ctl.snapshots++;
    size_t count = ftm_trace_snapshot_count(s), size = ftm_trace_snapshot_size(s);
    if (count > ctl.max_count)
        ctl.max_count = count;
    if (size > ctl.max_size)
        ctl.max_size = size;
    if (ctl.st.rate == 0 && !ctl.dirty) {
        int64_t bound = live0 + (int64_t)(a1 - a0) + INTERNAL_SLACK_BYTES;
        int64_t nbound = nlive0 + (int64_t)(n1 - n0) + INTERNAL_SLACK_COUNT;
        if ((int64_t)size > bound || (int64_t)count > nbound)
            report(E_SNAPSHOT,
                   "snapshot of %zu traces, %zu bytes; the program had at most %lld blocks, %lld bytes live",
                   count, size, (long long)nbound, (long long)bound);
    }
    ctl.st.dirty = ctl.dirty;
    snapshot_check(s, &ctl.st, "snapshot while running", false);
    if (ctl.prev != NULL)
        compare_check(s, ctl.prev, "snapshot while running");
    ftm_trace_snapshot_free(ctl.prev);
    ctl.prev = s;
}

/* The round's disturbance, while the workers run. */
enum { CHAOS_NONE, CHAOS_CLEAR, CHAOS_RESTART, CHAOS_STOP, CHAOS_DEPTH };

static void ctl_chaos(int kind)
{
    switch (kind) {
    case CHAOS_CLEAR:
        if (ctl.st.on) {
            ctl_clear(false);
            ctl.dirty = true;
        }
        break;
    case CHAOS_RESTART:
        if (ctl.st.on)
            ctl_stop();
        ctl_start(false);
        ctl.dirty = true;
        break;
    case CHAOS_STOP:
        if (ctl.st.on)
            ctl_stop();
        ctl.dirty = true;
        break;
    case CHAOS_DEPTH: /* start while tracing: a new depth, no reset */
        if (ctl.st.on) {
            int limit = 1 + (int)stress_below(&ctl.r, 24);
            if (ftm_trace_start_sampled(limit, ctl.st.rate) != 0)
                stress_fail("ftm_trace_start_sampled(%d) while tracing: %s", limit, strerror(errno));
            ctl.st.limit = limit;
            if (limit > ctl.st.max_limit)
                ctl.st.max_limit = limit;
            ctl.depth_changes++;
            ctl_forget_prev();
        }
        break;
    default:
        break;
    }
}

/* The live items, sorted by address: what lies 16 bytes before one. */
typedef struct live_s {
    uintptr_t p;
    item_t it;
} live_t;
static live_t *live_idx;
static size_t live_n, live_cap;

static int live_cmp(const void *a, const void *b)
{
    uintptr_t x = ((const live_t *)a)->p, y = ((const live_t *)b)->p;
    return x < y ? -1 : x > y;
}

static void live_add(item_t it)
{
    if (live_n == live_cap) {
        live_cap = live_cap ? live_cap * 2 : 1024;
        live_idx = realloc(live_idx, live_cap * sizeof *live_idx);
        if (live_idx == NULL)
            stress_fail("out of memory for the harness");
    }
    live_idx[live_n++] = (live_t){ (uintptr_t)item_ptr(it), it };
}

/* " (the N-byte block before it at p - 16 is from this session)" or "". */
static void neighbour_note(const void *p, unsigned sess, char *buf, size_t len)
{
    buf[0] = 0;
    live_t key = { (uintptr_t)p - 16, 0 };
    const live_t *n = bsearch(&key, live_idx, live_n, sizeof *live_idx, live_cmp);
    if (n != NULL)
        snprintf(buf, len, "; 16 bytes before it starts %s %s %p of %u bytes%s",
                 item_hdr(n->it)->sess == (uint16_t)sess ? "a this-session" : "an older",
                 item_is_obj(n->it) ? "object" : "block", (const void *)n->p, item_hdr(n->it)->size,
                 item_hdr(n->it)->how == HOW_REALLOC ? " (reallocated)" : "");
}

/* An exact-sum mismatch made of whole dead objects of the free-list type. */
static void excess_note(long long dbytes, long long dcount, char *buf, size_t len)
{
    buf[0] = 0;
    if (dcount > 0 && dbytes == dcount * (long long)tobj_type.basic_size)
        snprintf(buf, len, " (the excess is exactly %lld traces of %zu bytes: objects of the free-list "
                           "type %s, dead yet traced)",
                 dcount, tobj_type.basic_size, tobj_type.name);
}

/* With every worker parked and merged. */
static void ctl_quiescent_check(int round)
{
    unsigned sess = atomic_load(&g_sess);
    char when[64];
    snprintf(when, sizeof when, "pause %d", round);
    ctl.pauses++;
    size_t cur, peak;
    ftm_trace_get_traced_memory(&cur, &peak);
    /* every live item, and what the exact check expects of it */
    unsigned long long exp_bytes = 0, exp_count = 0;
    bool clean_full = ctl.st.on && ctl.st.rate == 0 && !ctl.dirty;
    for (int w = 0; w < nworkers; w++)
        for (int i = 0; i < workers[w].nown; i++) {
            const hdr_t *h = item_hdr(workers[w].own[i]);
            if (h->sess == (uint16_t)sess)
                exp_bytes += h->size, exp_count++;
        }
    for (size_t s = 0; s < nslots; s++) {
        item_t it = atomic_load(&slots[s]);
        if (it != 0 && item_hdr(it)->sess == (uint16_t)sess)
            exp_bytes += item_hdr(it)->size, exp_count++;
    }
    for (int i = 0; i < CTL_N; i++)
        if (ctl.blk[i].gen == ctl.gen)
            exp_bytes += ctl.blk[i].h->size, exp_count++;
    live_n = 0;
    for (int w = 0; w < nworkers; w++)
        for (int i = 0; i < workers[w].nown; i++)
            live_add(workers[w].own[i]);
    for (size_t s = 0; s < nslots; s++)
        if (atomic_load(&slots[s]) != 0)
            live_add(atomic_load(&slots[s]));
    qsort(live_idx, live_n, sizeof *live_idx, live_cmp);

    if (!ctl.st.on) {
        if (cur != 0 || peak != 0 || ftm_trace_get_tracer_memory() != 0)
            report(E_STOPPED,
                   "%s: tracing stopped, every thread parked, yet traced current=%zu peak=%zu and the "
                   "tracer's tables take %zu bytes (ftm_trace_stop unmapped them all)",
                   when, cur, peak, ftm_trace_get_tracer_memory());
    } else {
        ftm_trace_snapshot *s = ftm_trace_take_snapshot();
        if (s == NULL) {
            report(E_SNAPSHOT, "%s: ftm_trace_take_snapshot failed: %s", when, strerror(errno));
        } else {
            size_t count = ftm_trace_snapshot_count(s), size = ftm_trace_snapshot_size(s);
            size_t cur2;
            ftm_trace_get_traced_memory(&cur2, NULL);
            if (size != cur || cur2 != cur)
                report(E_COUNTER,
                       "%s (%s, %s): traced current=%zu but the table holds %zu traces of %zu bytes "
                       "(every thread parked)",
                       when, ctl.st.rate ? "sampled" : "full", ctl.dirty ? "after a concurrent reset" : "clean",
                       cur, count, size);
            if (clean_full) {
                ctl.clean_checks++;
                if (cur != exp_bytes || count != exp_count) {
                    char note[200];
                    excess_note((long long)cur - (long long)exp_bytes, (long long)count - (long long)exp_count,
                                note, sizeof note);
                    report(E_EXACT,
                           "%s: traced current=%zu, %zu traces; the program has %llu blocks, %llu bytes "
                           "live from this session%s",
                           when, cur, count, exp_count, exp_bytes, note);
                }
            } else if (ctl.st.rate != 0 && !ctl.dirty && count > exp_count) {
                report(E_EXACT, "%s: sampled, %zu traces but only %llu blocks live from this session", when,
                       count, exp_count);
            }
            ctl.st.dirty = ctl.dirty;
            snapshot_check(s, &ctl.st, when, ctl.st.rate == 0);
            ftm_trace_snapshot_free(s);
        }
        ftm_trace_reset_peak();
        ftm_trace_get_traced_memory(&cur, &peak);
        ctl.peak_resets++;
        if (peak != cur)
            report(E_API, "%s: after ftm_trace_reset_peak with every thread parked: current=%zu peak=%zu",
                   when, cur, peak);
    }
    /* tracebacks of every item */
    for (int w = 0; w < nworkers; w++) {
        for (int i = 0; i < workers[w].nown; i++) {
            item_t it = workers[w].own[i];
            const hdr_t *h = item_hdr(it);
            char fn[128];
            int n = probe(item_ptr(it), ctl.st.on ? ctl.st.max_limit : FTM_TRACE_MAX_FRAMES, fn, sizeof fn);
            bool this_sess = h->sess == (uint16_t)sess;
            if (n >= 0) {
                if (h->how == HOW_VOBJ && strncmp(fn, "ftm", 3) == 0)
                    ctl.vobj_internal++; /* sampled: ftm_new_var's inner ftm_malloc was the sample */
                if (!ctl.st.on)
                    report(E_STOPPED, "%s: tracing stopped, yet %s %p (%u bytes) has a traceback (%s)", when,
                           item_is_obj(it) ? "object" : "block", item_ptr(it), h->size, fn);
                else if (!this_sess) {
                    char note[200];
                    neighbour_note(item_ptr(it), sess, note, sizeof note);
                    report(E_UNTRACED,
                           "%s: %s %p (%u bytes, allocated before the last reset at a pause) has a "
                           "traceback, frame 0 in %s%s",
                           when, item_is_obj(it) ? "object" : "block", item_ptr(it), h->size, fn, note);
                } else if (!fn_is(fn, how_fn(h->how)) &&
                           !(h->how == HOW_VOBJ && ctl.st.rate != 0 && strncmp(fn, "ftm", 3) == 0)) {
                    char note[200];
                    neighbour_note(item_ptr(it), sess, note, sizeof note);
                    report(E_FRAME, "%s: %s %p (%u bytes, how %u): traceback frame 0 in %s, not %s%s", when,
                           item_is_obj(it) ? "object" : "block", item_ptr(it), h->size, h->how, fn,
                           how_fn(h->how), note);
                }
            } else if (clean_full && this_sess) {
                report(E_MISSING, "%s: %s %p (%u bytes, how %u) allocated in this clean full session has no traceback",
                       when, item_is_obj(it) ? "object" : "block", item_ptr(it), h->size, h->how);
            }
        }
    }
    ctl_probe_own(CTL_N);
}

/* At a pause: maybe reset, so that the next round starts a clean session. */
static void ctl_pause_action(void)
{
    bool reset = ctl.dirty || !ctl.st.on || stress_one_in(&ctl.r, 2);
    if (!reset)
        return;
    if (ctl.st.on && stress_one_in(&ctl.r, 3)) {
        ctl_clear(true);
    } else {
        if (ctl.st.on)
            ctl_stop();
        ctl_start(true);
    }
    ctl.dirty = false;
    atomic_fetch_add(&g_sess, 1);
}

static void *ctl_main(void *arg)
{
    (void)arg;
    ctl.r = stress_rng(opt.seed, 777);
    for (int i = 0; i < CTL_N; i++)
        ctl_new_block(&ctl.blk[i]);
    for (int round = 0; round < rounds; round++) {
        int kind = (int)stress_below(&ctl.r, 10);
        kind = kind < 3 ? CHAOS_NONE : kind < 5 ? CHAOS_CLEAR : kind < 7 ? CHAOS_RESTART : kind < 9 ? CHAOS_STOP : CHAOS_DEPTH;
        int chaos_at = (int)stress_below(&ctl.r, 6);
        for (int it = 0; atomic_load_explicit(&done_count, memory_order_acquire) < nworkers; it++) {
            /* clears and restarts come in storms: many resets racing the
             * workers' recording and freeing; a stop stays until the pause */
            if (it == chaos_at || (it > chaos_at && kind != CHAOS_STOP && kind != CHAOS_DEPTH &&
                                   stress_one_in(&ctl.r, kind == CHAOS_CLEAR ? 2 : 6)))
                ctl_chaos(kind);
            unsigned k = (unsigned)stress_below(&ctl.r, 10);
            if (k < 3) {
                ctl_snapshot();
            } else if (k < 6) {
                ctl_probe_own(8);
            } else if (k < 8) { /* churn: LIFO reuse puts traced and untraced neighbours together */
                for (int j = 0; j < 4; j++) {
                    ctl_block_t *b = &ctl.blk[stress_below(&ctl.r, CTL_N)];
                    ctl_free_block(b);
                    ctl_new_block(b);
                }
            } else if (k == 8) {
                size_t cur, peak;
                ftm_trace_reset_peak();
                ftm_trace_get_traced_memory(&cur, &peak);
                if (peak < cur)
                    report(E_API, "peak %zu below current %zu", peak, cur);
                ctl.peak_resets++;
            } else {
                sched_yield();
            }
        }
        park(); /* 1 */
        park(); /* 2: workers flushed */
        ctl_quiescent_check(round);
        atomic_store(&done_count, 0);
        if (round == rounds - 1)
            atomic_store(&g_finish, true);
        else
            ctl_pause_action();
        park(); /* 3 */
    }
    for (int i = 0; i < CTL_N; i++)
        ctl_free_block(&ctl.blk[i]);
    ctl_forget_prev();
    return NULL;
}

/* ---- the final phase ------------------------------------------------------------------------ */
static unsigned final_sess;

static void *final_main(void *arg)
{
    worker_t *w = arg;
    stress_rng_t *r = &w->r;
    for (int i = 0; i < final_ops; i++) {
        unsigned k = (unsigned)stress_below(r, 100);
        if (k < 45 && w->nown < OWN_MAX) {
            item_t it = stress_one_in(r, 6) ? (item_t)tr_new_obj(r, new_id(w), final_sess) | 1
                                            : (item_t)tr_alloc_block(r, new_id(w), pick_size(r), final_sess);
            w->own[w->nown++] = it;
        } else if (k < 60 && w->nown > 0) {
            int j = (int)stress_below(r, (uint64_t)w->nown);
            if (!item_is_obj(w->own[j]))
                w->own[j] = (item_t)tr_realloc_block((hdr_t *)w->own[j], pick_size(r), final_sess);
        } else if (k < 75 && w->nown > 0) {
            int j = (int)stress_below(r, (uint64_t)w->nown);
            if (slot_give(r, w->own[j]))
                own_remove(w, j);
        } else if (k < 90) {
            item_t it = slot_take(r);
            if (it != 0)
                item_destroy(it, r, "final remote free");
        } else if (w->nown > 0) {
            int j = (int)stress_below(r, (uint64_t)w->nown);
            item_destroy(w->own[j], r, "final local free");
            own_remove(w, j);
        }
    }
    park();             /* 1 */
    ftm_thread_flush();
    park();             /* 2: main checks */
    park();             /* 3 */
    for (int i = 0; i < w->nown; i++)
        item_destroy(w->own[i], r, "final last free");
    w->nown = 0;
    for (size_t s = 0; s < nslots; s++) {
        item_t it = atomic_exchange(&slots[s], 0);
        if (it != 0)
            item_destroy(it, r, "final drain");
    }
    park();             /* 4: everything dropped */
    ftm_thread_flush();
    park();             /* 5: everything merged */
    return NULL;
}

static void final_phase(unsigned long long *live_bytes_out, unsigned long long *live_count_out)
{
    ftm_trace_stop();
    size_t cur, peak;
    ftm_trace_get_traced_memory(&cur, &peak);
    if (cur != 0 || peak != 0)
        report(E_FINAL, "after ftm_trace_stop with one thread left: current=%zu peak=%zu", cur, peak);
    if (ftm_trace_start(FINAL_LIMIT) != 0)
        stress_fail("ftm_trace_start(%d): %s", FINAL_LIMIT, strerror(errno));
    ftm_trace_get_traced_memory(&cur, &peak);
    if (cur != 0 || peak != 0)
        report(E_FINAL, "right after ftm_trace_start: current=%zu peak=%zu", cur, peak);
    final_sess = 0xfff0;

    pthread_barrier_destroy(&bar);
    pthread_barrier_init(&bar, NULL, (unsigned)nworkers + 1);
    pthread_t *th = calloc((size_t)nworkers, sizeof *th);
    if (th == NULL)
        stress_fail("out of memory for the harness");
    for (int i = 0; i < nworkers; i++) {
        workers[i].r = stress_rng(opt.seed, 5000 + (uint64_t)i);
        workers[i].nown = 0;
        stress_thread_start(&th[i], final_main, &workers[i]);
    }
    park(); /* 1 */
    park(); /* 2 */
    unsigned long long bytes = 0, count = 0;
    for (int w = 0; w < nworkers; w++)
        for (int i = 0; i < workers[w].nown; i++)
            bytes += item_hdr(workers[w].own[i])->size, count++;
    for (size_t s = 0; s < nslots; s++) {
        item_t it = atomic_load(&slots[s]);
        if (it != 0)
            bytes += item_hdr(it)->size, count++;
    }
    ftm_trace_get_traced_memory(&cur, &peak);
    if (cur != bytes) {
        ftm_trace_snapshot *cs = ftm_trace_take_snapshot();
        char note[200] = "";
        if (cs != NULL)
            excess_note((long long)cur - (long long)bytes,
                        (long long)ftm_trace_snapshot_count(cs) - (long long)count, note, sizeof note);
        ftm_trace_snapshot_free(cs);
        report(E_FINAL, "traced current=%zu, but the blocks and objects of the final phase still live "
                        "take %llu bytes (%llu of them)%s",
               cur, bytes, count, note);
    }
    if (peak < cur)
        report(E_FINAL, "peak %zu < current %zu", peak, cur);
    sess_state_t st = { .on = true, .rate = 0, .limit = FINAL_LIMIT, .max_limit = FINAL_LIMIT };
    ftm_trace_snapshot *s = ftm_trace_take_snapshot();
    if (s == NULL) {
        report(E_FINAL, "ftm_trace_take_snapshot: %s", strerror(errno));
    } else {
        if (ftm_trace_snapshot_count(s) != count || ftm_trace_snapshot_size(s) != bytes)
            report(E_FINAL, "snapshot of %zu traces, %zu bytes; %llu blocks and objects of %llu bytes live",
                   ftm_trace_snapshot_count(s), ftm_trace_snapshot_size(s), count, bytes);
        snapshot_check(s, &st, "final phase", true);
        ftm_trace_snapshot_free(s);
    }
    for (int w = 0; w < nworkers; w++)
        for (int i = 0; i < workers[w].nown; i++) {
            item_t it = workers[w].own[i];
            char fn[128];
            int n = probe(item_ptr(it), FINAL_LIMIT, fn, sizeof fn);
            if (n < 0)
                report(E_FINAL, "%s %p (%u bytes) of the final phase has no traceback",
                       item_is_obj(it) ? "object" : "block", item_ptr(it), item_hdr(it)->size);
            else if (!fn_is(fn, how_fn(item_hdr(it)->how)))
                report(E_FINAL, "%s %p: traceback frame 0 in %s, not %s", item_is_obj(it) ? "object" : "block",
                       item_ptr(it), fn, how_fn(item_hdr(it)->how));
        }
    size_t peak_live = cur;
    park(); /* 3 */
    park(); /* 4 */
    park(); /* 5 */
    for (int i = 0; i < nworkers; i++)
        stress_thread_join(th[i]);
    free(th);
    ftm_thread_flush();
    ftm_trace_get_traced_memory(&cur, &peak);
    if (cur != 0)
        report(E_FINAL, "everything freed, yet traced current=%zu", cur);
    if (peak < peak_live)
        report(E_FINAL, "peak %zu below the %zu bytes that were live", peak, peak_live);
    s = ftm_trace_take_snapshot();
    if (s == NULL || ftm_trace_snapshot_count(s) != 0)
        report(E_FINAL, "everything freed, yet a snapshot holds %zu traces", s ? ftm_trace_snapshot_count(s) : (size_t)0);
    ftm_trace_snapshot_free(s);
    ftm_trace_stop();
    ftm_trace_get_traced_memory(&cur, &peak);
    if (cur != 0 || peak != 0 || ftm_trace_get_tracer_memory() != 0)
        report(E_FINAL, "after the last ftm_trace_stop: current=%zu peak=%zu tracer memory=%zu", cur, peak,
               ftm_trace_get_tracer_memory());
    *live_bytes_out = bytes;
    *live_count_out = count;
}

/* ---- main ----------------------------------------------------------------------------------- */
int main(int argc, char **argv)
{
    stress_parse(&opt, argc, argv, 6, NULL);
    nworkers = opt.threads;
    rounds = opt.smoke ? 14 : 80;
    ops_per_round = opt.smoke ? 600 : 12000;
    final_ops = opt.smoke ? 300 : 3000;
    large_max = opt.smoke ? STRESS_MIB : STRESS_LARGE_MAX;
    if (STRESS_SANITIZED && !opt.smoke)
        ops_per_round /= 2;

    nslots = (size_t)SLOTS_PER_WORKER * (size_t)nworkers;
    slots = calloc(nslots, sizeof *slots);
    workers = calloc((size_t)nworkers, sizeof *workers);
    pthread_t *th = calloc((size_t)nworkers, sizeof *th);
    if (slots == NULL || workers == NULL || th == NULL)
        stress_fail("out of memory for the harness");
    pthread_barrier_init(&bar, NULL, (unsigned)nworkers + 1);

    double t0 = stress_now();
    /* a clean full session to begin with */
    ctl.r = stress_rng(opt.seed, 777);
    if (ftm_trace_start(16) != 0)
        stress_fail("ftm_trace_start(16): %s", strerror(errno));
    ctl.st = (sess_state_t){ .on = true, .rate = 0, .limit = 16, .max_limit = 16 };
    atomic_store(&g_sess, 1);

    for (int i = 0; i < nworkers; i++) {
        workers[i].idx = i;
        workers[i].r = stress_rng(opt.seed, 100 + (uint64_t)i);
        stress_thread_start(&th[i], worker_main, &workers[i]);
    }
    pthread_t cth;
    stress_thread_start(&cth, ctl_main, NULL);
    for (int i = 0; i < nworkers; i++)
        stress_thread_join(th[i]);
    stress_thread_join(cth);
    double t1 = stress_now();

    /* what is left in the slots */
    stress_rng_t r = stress_rng(opt.seed, 999);
    for (size_t s = 0; s < nslots; s++) {
        item_t it = atomic_exchange(&slots[s], 0);
        if (it != 0)
            item_destroy(it, &r, "drain");
    }
    ftm_thread_flush();
    if (atomic_load(&h_live_count) != 0)
        stress_fail("harness: %lld items still counted live after the drain", (long long)atomic_load(&h_live_count));

    unsigned long long fbytes = 0, fcount = 0;
    final_phase(&fbytes, &fcount);
    ftm_thread_flush();
    if (atomic_load(&objs_made) != atomic_load(&objs_dead))
        report(E_OBJECTS, "%llu objects made, %llu deallocated", (unsigned long long)atomic_load(&objs_made),
               (unsigned long long)atomic_load(&objs_dead));

    unsigned long nerr = errors_total();
    stress_note("%s: %d rounds x %llu ops x %d workers, %.1f MiB allocated; controller: %lu snapshots "
                "(max %zu traces, %.1f MiB), %lu tracebacks asked (%lu found), %lu clears, %lu starts "
                "(%lu sampled), %lu stops, %lu depth changes, %lu peak resets, %lu pauses (%lu exact "
                "checks, %lu big objects traced inside ftm_new_var); final phase: %llu live items, %llu bytes; "
                "%lu objects; %.2f s + %.2f s",
                nerr ? "FAILED" : "OK", rounds, ops_per_round, nworkers,
                (double)atomic_load(&h_alloc_bytes) / (double)STRESS_MIB, ctl.snapshots, ctl.max_count,
                (double)ctl.max_size / (double)STRESS_MIB, ctl.probes, ctl.probes_found, ctl.clears,
                ctl.restarts, ctl.sampled_sessions, ctl.stops, ctl.depth_changes, ctl.peak_resets,
                ctl.pauses, ctl.clean_checks, ctl.vobj_internal, fcount, fbytes,
                (unsigned long)atomic_load(&objs_made), t1 - t0, stress_now() - t1);
    if (nerr) {
        for (int k = 0; k < E_KINDS; k++)
            if (atomic_load(&e_count[k]))
                fprintf(stderr, "%s: FAIL: %lu x %s\n", opt.name, atomic_load(&e_count[k]), e_name[k]);
        return 1;
    }
    pthread_barrier_destroy(&bar);
    free(slots);
    free(workers);
    free(th);
    free(live_idx);
    return 0;
}
