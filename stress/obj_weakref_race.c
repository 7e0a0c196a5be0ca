/* obj_weakref_race.c — ftm_weakref_get racing the last decref of the
 * referent on other threads; callbacks racing the weak references' own
 * release.
 *
 * Referents live in a shared array of ftm_field slots; weak references
 * live in another, each wrapped in a holder object (a field holding the
 * ftm_weakref object and a pointer to the harness's record of it: referent
 * id, kind, callback runs).  Waves of threads:
 *   - create a referent and 1..3 weak references to it (most with a
 *     callback), check a get returns it, publish the holders (displacing,
 *     maybe releasing, older weak references) and the referent (displacing,
 *     maybe killing, an older referent — its callbacks run right here), or
 *     keep the referent a while, or drop it at once;
 *   - load a holder and ftm_weakref_get: a referent that comes back is
 *     checked and kept a while, so its last reference is dropped later by
 *     this thread;
 *   - load, replace and clear referent slots (last decrefs on any thread);
 *   - private weak references: to a referent the thread holds, a get must
 *     return it; released before the thread lets the referent go, so their
 *     callback must never run.
 * One weak reference in eight is pinned: the harness keeps a reference to
 * it until every referent is dead, so its callback must have run exactly
 * once.
 *
 * Checks: a get returns the weak reference's own referent, with its canary
 * and registry entry ALIVE (never one whose dealloc ran), or NULL once its
 * callback has started; a callback runs at most once per weak reference,
 * never for a private one, only once no harness reference to the referent
 * is left (the harness counts them per referent), and with get already
 * returning NULL; pinned weak references got their callback and get NULL
 * at the end; every object freed once; the leak check (obj_util.h).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "obj_util.h"

#define STASH 8

enum { WR_SHARED, WR_PINNED, WR_PRIVATE };

typedef struct wrec_s { /* 12 bytes: there are millions */
    uint32_t referent; /* id */
    uint8_t kind;
    bool has_cb;
    _Atomic int cb_runs;
} wrec_t;

typedef struct pin_s { /* a pinned weak reference: the harness's reference */
    ftm_weakref *wr;
    wrec_t *rec;
} pin_t;

typedef struct ref_s { /* a referent */
    ftm_object ob;
    obj_stamp_t st;
    uint64_t tail;
} ref_t;

typedef struct holder_s { /* what the weak reference slots hold */
    ftm_object ob;
    obj_stamp_t st;
    ftm_field wr; /* the ftm_weakref object: set before publication, cleared at death */
    wrec_t *rec;
} holder_t;

static stress_opts_t opt = { .name = "obj_weakref_race" };
static ftm_field *rslots, *wslots;
static int nrslots, nwslots, waves, ops_per_thread;
static wrec_t *recs;
static uint64_t max_recs, max_pins;
static _Atomic uint64_t nrecs, npins;
static pin_t *pins;
static _Atomic int32_t *strong; /* per referent id: references the harness holds */
static _Atomic unsigned long long n_get, n_get_hit, n_cb, n_private, n_killed_here;

static void ref_dealloc(ftm_object *self)
{
    ref_t *r = (ref_t *)self;
    if (r->tail != ~r->st.canary)
        stress_fail("referent dealloc: object %llu: tail %016llx",
                    (unsigned long long)r->st.id, (unsigned long long)r->tail);
    int32_t s = atomic_load_explicit(&strong[r->st.id], memory_order_acquire);
    if (s != 0)
        stress_fail("referent %llu dies while the harness holds %d references to it",
                    (unsigned long long)r->st.id, s);
    obj_stamp_kill(&r->st, "referent dealloc");
    r->tail = 0;
}
static ftm_type ref_type = {
    .name = "referent", .basic_size = sizeof(ref_t), .dealloc = ref_dealloc,
};

static void holder_clear(ftm_object *self)
{
    ftm_field_clear(&((holder_t *)self)->wr); /* releases the weak reference */
}
static int holder_traverse(ftm_object *self, ftm_visitproc visit, void *arg)
{
    ftm_object *w = ftm_field_peek(&((holder_t *)self)->wr);
    return w ? visit(w, arg) : 0;
}
static void holder_dealloc(ftm_object *self)
{
    obj_stamp_kill(&((holder_t *)self)->st, "holder dealloc");
}
static ftm_type holder_type = {
    .name = "wrholder",
    .basic_size = sizeof(holder_t),
    .flags = FTM_TYPE_FREELIST,
    .traverse = holder_traverse,
    .clear = holder_clear,
    .dealloc = holder_dealloc,
};

static void ref_check(ftm_object *p, const char *what)
{
    if (ftm_type_of(p) != &ref_type)
        stress_fail("%s: object %p has type %p, not the referent type", what, (void *)p,
                    (const void *)ftm_type_of(p));
    ref_t *r = (ref_t *)p;
    obj_stamp_check(&r->st, what);
    if (r->tail != ~r->st.canary)
        stress_fail("%s: referent %llu: tail %016llx", what, (unsigned long long)r->st.id,
                    (unsigned long long)r->tail);
}

/* The harness's count of references to referent p (taken / dropped). */
static void strong_add(ftm_object *p)
{
    atomic_fetch_add_explicit(&strong[((ref_t *)p)->st.id], 1, memory_order_relaxed);
}
static void ref_drop(ftm_object *p)
{
    /* release: the dying thread (acquire through the refcount) sees it */
    atomic_fetch_sub_explicit(&strong[((ref_t *)p)->st.id], 1, memory_order_release);
    ftm_decref(p);
}

static void wr_callback(ftm_weakref *wr, void *arg)
{
    wrec_t *rec = arg;
    int n = atomic_fetch_add_explicit(&rec->cb_runs, 1, memory_order_acq_rel);
    if (n != 0)
        stress_fail("callback of a weak reference to referent %llu runs a second time",
                    (unsigned long long)rec->referent);
    if (rec->kind == WR_PRIVATE)
        stress_fail("callback of a private weak reference to referent %llu, released while "
                    "the referent was alive",
                    (unsigned long long)rec->referent);
    if (!rec->has_cb)
        stress_fail("callback ran for a weak reference created without one");
    ftm_object *o = ftm_weakref_get(wr);
    if (o != NULL)
        stress_fail("in its callback, ftm_weakref_get returns %p (referent %llu), not NULL",
                    (void *)o, (unsigned long long)rec->referent);
    /* acquire: pairs with the release decrements before the decrefs */
    int32_t s = atomic_load_explicit(&strong[rec->referent], memory_order_acquire);
    if (s != 0)
        stress_fail("callback for referent %llu while the harness holds %d references to it",
                    (unsigned long long)rec->referent, s);
    if (obj_state(rec->referent) != OBJ_ALIVE)
        stress_fail("callback for referent %llu after its dealloc ran (callbacks run first)",
                    (unsigned long long)rec->referent);
    atomic_fetch_add_explicit(&n_cb, 1, memory_order_relaxed);
}

static wrec_t *rec_new(uint64_t referent, int kind, bool has_cb)
{
    uint64_t i = atomic_fetch_add_explicit(&nrecs, 1, memory_order_relaxed);
    if (i >= max_recs)
        stress_fail("harness: more than %llu weak references", (unsigned long long)max_recs);
    if (referent > UINT32_MAX)
        stress_fail("harness: object ids beyond 32 bits");
    wrec_t *rec = &recs[i];
    rec->referent = (uint32_t)referent;
    rec->kind = (uint8_t)kind;
    rec->has_cb = has_cb;
    atomic_store_explicit(&rec->cb_runs, 0, memory_order_relaxed);
    return rec;
}

static ftm_object *ref_new(void)
{
    ref_t *r = (ref_t *)ftm_new(&ref_type);
    if (r == NULL)
        stress_fail("ftm_new(referent) failed");
    obj_stamp_init(&r->st);
    r->tail = ~r->st.canary;
    atomic_store_explicit(&strong[r->st.id], 1, memory_order_relaxed); /* ours */
    return &r->ob;
}

/* A weak reference to p (held by the caller), checked; rec's weakref. */
static ftm_weakref *wr_new(ftm_object *p, wrec_t *rec)
{
    ftm_weakref *w = ftm_weakref_new(p, rec->has_cb ? wr_callback : NULL, rec);
    if (w == NULL)
        stress_fail("ftm_weakref_new failed");
    ftm_object *g = ftm_weakref_get(w);
    if (g != p)
        stress_fail("ftm_weakref_get of a new weak reference to a live referent gave %p, "
                    "not %p",
                    (void *)g, (void *)p);
    ftm_decref(g);
    return w;
}

/* A get through holder h: checked, the reference returned (or NULL). */
static ftm_object *holder_get(holder_t *h, const char *what)
{
    obj_stamp_check(&h->st, what);
    wrec_t *rec = h->rec;
    ftm_weakref *w = (ftm_weakref *)ftm_field_peek(&h->wr); /* h holds it */
    /* acquire: a callback that started (after clearing the weak
     * reference) happened before */
    int runs = atomic_load_explicit(&rec->cb_runs, memory_order_acquire);
    ftm_object *o = ftm_weakref_get(w);
    if (o == NULL)
        return NULL;
    if (runs != 0)
        stress_fail("%s: ftm_weakref_get returned a referent after its callback ran", what);
    ref_check(o, what);
    if (((ref_t *)o)->st.id != rec->referent)
        stress_fail("%s: ftm_weakref_get returned referent %llu, the weak reference is to "
                    "%llu",
                    what, (unsigned long long)((ref_t *)o)->st.id,
                    (unsigned long long)rec->referent);
    strong_add(o);
    return o;
}

static void *worker_main(void *arg)
{
    uint64_t serial = (uint64_t)(intptr_t)arg;
    stress_rng_t r = stress_rng(opt.seed, 100 + serial);
    ftm_object *stash[STASH]; /* referents */
    int nstash = 0;
    unsigned long long gets = 0, hits = 0, privates = 0;
    for (int op = 0; op < ops_per_thread; op++) {
        unsigned what = (unsigned)stress_below(&r, 100);
        if (what < 20) {
            /* a referent and its weak references */
            ftm_object *p = ref_new();
            int k = 1 + (int)stress_below(&r, 3);
            for (int i = 0; i < k; i++) {
                int kind = stress_one_in(&r, 8) ? WR_PINNED : WR_SHARED;
                bool cb = kind == WR_PINNED || !stress_one_in(&r, 4);
                wrec_t *rec = rec_new(((ref_t *)p)->st.id, kind, cb);
                ftm_weakref *w = wr_new(p, rec);
                if (kind == WR_PINNED) {
                    uint64_t pi = atomic_fetch_add_explicit(&npins, 1, memory_order_relaxed);
                    if (pi >= max_pins)
                        stress_fail("harness: more than %llu pinned weak references",
                                    (unsigned long long)max_pins);
                    ftm_incref(ftm_weakref_as_object(w));
                    pins[pi].wr = w; /* released by main at the end */
                    pins[pi].rec = rec;
                }
                holder_t *h = (holder_t *)ftm_new(&holder_type);
                if (h == NULL)
                    stress_fail("ftm_new(holder) failed");
                obj_stamp_init(&h->st);
                h->rec = rec;
                ftm_field_init(&h->wr, ftm_weakref_as_object(w));
                ftm_field_store(&wslots[stress_below(&r, (uint64_t)nwslots)], &h->ob);
            }
            unsigned fate = (unsigned)stress_below(&r, 4);
            if (fate <= 1) { /* published; the old referent may die here */
                ftm_object *old =
                    ftm_field_exchange(&rslots[stress_below(&r, (uint64_t)nrslots)], p);
                if (old != NULL) {
                    ref_check(old, "referent displaced");
                    ref_drop(old);
                }
            } else if (fate == 2 && nstash < STASH) {
                stash[nstash++] = p;
            } else {
                ref_drop(p); /* dies now: callbacks on this thread */
                atomic_fetch_add_explicit(&n_killed_here, 1, memory_order_relaxed);
            }
        } else if (what < 55) {
            gets++;
            ftm_object *ho = ftm_field_load(&wslots[stress_below(&r, (uint64_t)nwslots)]);
            if (ho != NULL) {
                ftm_object *o = holder_get((holder_t *)ho, "ftm_weakref_get");
                if (o != NULL) {
                    hits++;
                    if (nstash < STASH && stress_one_in(&r, 2))
                        stash[nstash++] = o;
                    else
                        ref_drop(o);
                }
                ftm_decref(ho); /* maybe the weak reference's last holder */
            }
        } else if (what < 65) {
            /* take a referent out of its slot (maybe its last reference) */
            ftm_object *old =
                ftm_field_exchange(&rslots[stress_below(&r, (uint64_t)nrslots)], NULL);
            if (old != NULL) {
                ref_check(old, "referent taken out");
                if (nstash < STASH && stress_one_in(&r, 2))
                    stash[nstash++] = old;
                else
                    ref_drop(old);
            }
        } else if (what < 72) {
            /* a private weak reference, released while we hold the referent */
            ftm_object *p = ftm_field_load(&rslots[stress_below(&r, (uint64_t)nrslots)]);
            if (p != NULL) {
                strong_add(p);
                ref_check(p, "referent loaded");
                wrec_t *rec = rec_new(((ref_t *)p)->st.id, WR_PRIVATE, true);
                ftm_weakref *w = wr_new(p, rec);
                ftm_weakref_release(w);
                privates++;
                ref_drop(p);
            }
        } else if (what < 80) {
            /* publish a stashed referent */
            if (nstash > 0) {
                ftm_object *p = stash[--nstash];
                ref_check(p, "stashed referent");
                ftm_object *old =
                    ftm_field_exchange(&rslots[stress_below(&r, (uint64_t)nrslots)], p);
                if (old != NULL) {
                    ref_check(old, "referent displaced");
                    ref_drop(old);
                }
            }
        } else if (what < 92) {
            if (nstash > 0) {
                int k = (int)stress_below(&r, (uint64_t)nstash);
                ftm_object *p = stash[k];
                ref_check(p, "stashed referent (dropped)");
                stash[k] = stash[--nstash];
                ref_drop(p);
            }
        } else if (what < 97) {
            /* replace a weak reference with nothing (releases it if last) */
            ftm_field_store(&wslots[stress_below(&r, (uint64_t)nwslots)], NULL);
        } else if (stress_one_in(&r, 3)) {
            ftm_thread_detach();
            struct timespec ts = { 0, 100000 };
            nanosleep(&ts, NULL);
            ftm_thread_attach();
        } else {
            ftm_safepoint();
        }
    }
    for (int k = 0; k < nstash; k++)
        ref_drop(stash[k]);
    atomic_fetch_add_explicit(&n_get, gets, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_get_hit, hits, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_private, privates, memory_order_relaxed);
    return NULL;
}

int main(int argc, char **argv)
{
    stress_parse(&opt, argc, argv, 6, NULL);
    waves = opt.smoke ? 6 : 40;
    ops_per_thread = opt.smoke ? 12000 : 80000;
    nrslots = opt.smoke ? 64 : 256;
    nwslots = opt.smoke ? 128 : 512;
    uint64_t ops = (uint64_t)waves * (uint64_t)opt.threads * (uint64_t)ops_per_thread;
    /* records: 2 per creation (20% of the ops) and one per private weak
     * reference (at most 7%) on average; calloc'd, so only the part used
     * is touched */
    max_recs = ops / 2 + 4096;
    max_pins = ops / 10 + 4096; /* 1 in 8 of the 2 per creation: ops / 20 */
    obj_registry_init(opt.seed, 4 * ops / 5 + 64); /* referent + 3 holders per creation */
    recs = calloc((size_t)max_recs, sizeof *recs);
    pins = calloc((size_t)max_pins, sizeof *pins);
    strong = calloc((size_t)obj_reg.cap, sizeof *strong);
    rslots = calloc((size_t)nrslots, sizeof *rslots);
    wslots = calloc((size_t)nwslots, sizeof *wslots);
    pthread_t *prev = calloc((size_t)opt.threads, sizeof *prev);
    pthread_t *cur = calloc((size_t)opt.threads, sizeof *cur);
    if (!recs || !pins || !strong || !rslots || !wslots || !prev || !cur)
        stress_fail("out of memory for the harness");
    for (int i = 0; i < nrslots; i++)
        atomic_init(&rslots[i], NULL);
    for (int i = 0; i < nwslots; i++)
        atomic_init(&wslots[i], NULL);

    /* warm up: the weak reference side table exists from here on */
    {
        ftm_object *p = ref_new();
        wrec_t *rec = rec_new(((ref_t *)p)->st.id, WR_SHARED, true);
        ftm_weakref *w = wr_new(p, rec);
        ref_drop(p);
        if (atomic_load_explicit(&rec->cb_runs, memory_order_relaxed) != 1 ||
            ftm_weakref_get(w) != NULL)
            stress_fail("warm-up: the callback did not run once or get is not NULL");
        ftm_weakref_release(w);
    }
    obj_base_t base;
    obj_baseline(&base);
    uint64_t recs0 = atomic_load_explicit(&nrecs, memory_order_relaxed);
    unsigned long long cb0 = atomic_load_explicit(&n_cb, memory_order_relaxed);

    double t0 = stress_now();
    ftm_thread_detach();
    for (int w = 0; w < waves; w++) {
        for (int i = 0; i < opt.threads; i++)
            stress_thread_start(&cur[i], worker_main, (void *)(intptr_t)(w * opt.threads + i));
        if (w > 0)
            for (int i = 0; i < opt.threads; i++)
                stress_thread_join(prev[i]);
        pthread_t *t = prev;
        prev = cur;
        cur = t;
    }
    for (int i = 0; i < opt.threads; i++)
        stress_thread_join(prev[i]);
    ftm_thread_attach();
    double t_run = stress_now() - t0;

    /* gets through the holders still published, with the referents alive */
    for (int i = 0; i < nwslots; i++) {
        ftm_object *ho = ftm_field_peek(&wslots[i]);
        if (ho != NULL) {
            ftm_object *o = holder_get((holder_t *)ho, "get at the end");
            if (o != NULL)
                ref_drop(o);
        }
    }
    /* every referent dies: the callbacks of live weak references run */
    for (int i = 0; i < nrslots; i++) {
        ftm_object *p = ftm_field_exchange(&rslots[i], NULL);
        if (p != NULL) {
            ref_check(p, "referent at the end");
            ref_drop(p);
        }
    }
    ftm_thread_flush();
    uint64_t n = atomic_load_explicit(&nrecs, memory_order_relaxed);
    unsigned long long pinned = 0, cb_expected = 0, cb_ran = 0, nprivate = 0, ncb = 0;
    for (uint64_t i = recs0; i < n; i++) {
        wrec_t *rec = &recs[i];
        int runs = atomic_load_explicit(&rec->cb_runs, memory_order_acquire);
        cb_ran += (unsigned long long)runs;
        ncb += rec->has_cb;
        if (obj_state(rec->referent) != OBJ_FREED)
            stress_fail("referent %llu of weak reference %llu alive at the end",
                        (unsigned long long)rec->referent, (unsigned long long)i);
        if (rec->kind == WR_PRIVATE) {
            nprivate++;
            if (runs != 0)
                stress_fail("private weak reference %llu: callback ran", (unsigned long long)i);
        } else if (rec->kind == WR_PINNED) {
            pinned++;
            cb_expected++;
            if (runs != 1)
                stress_fail("pinned weak reference %llu (alive until the end): callback ran "
                            "%d times after its referent died, expected once",
                            (unsigned long long)i, runs);
        }
    }
    uint64_t np = atomic_load_explicit(&npins, memory_order_relaxed);
    if (np != pinned)
        stress_fail("harness: %llu pins for %llu pinned records", (unsigned long long)np,
                    pinned);
    for (uint64_t i = 0; i < np; i++) {
        if (ftm_weakref_get(pins[i].wr) != NULL)
            stress_fail("pinned weak reference to referent %llu: get after the referent "
                        "died is not NULL",
                        (unsigned long long)pins[i].rec->referent);
        ftm_weakref_release(pins[i].wr);
    }
    if (cb_ran != atomic_load_explicit(&n_cb, memory_order_relaxed) - cb0)
        stress_fail("harness: %llu callback runs recorded, %llu counted", cb_ran,
                    atomic_load(&n_cb) - cb0);
    for (int i = 0; i < nwslots; i++)
        ftm_field_store(&wslots[i], NULL); /* releases the rest */
    ftm_thread_flush();
    obj_registry_expect_all_freed(0, "after every slot was cleared");
    /* the 64 stripes of the weak reference side table keep a ck_hs each;
     * a worker that grows one allocates its new slot array (the old one is
     * freed after a grace period), which outlives the worker in its
     * abandoned pool: up to 64 such pools (a slot array up to 64 KiB is in
     * a one-slice pool; the table never holds more than a few thousand
     * referents, so 8 slices per stripe is far above it). */
    obj_leak_check(&base, 0, 64, OBJ_SLICE_SLACK + 64 * 8, "at the end");

    stress_note("OK: %d waves x %d threads: %llu weak references (%llu pinned, %llu "
                "private, %llu with a callback), %llu callbacks ran (%llu required); %llu "
                "gets, %llu returned the referent; %llu referents killed by their creator; "
                "%.2f s",
                waves, opt.threads, (unsigned long long)(n - recs0), pinned, nprivate, ncb,
                cb_ran, cb_expected, atomic_load(&n_get), atomic_load(&n_get_hit),
                atomic_load(&n_killed_here), t_run);
    free(recs);
    free(pins);
    free((void *)strong);
    free(rslots);
    free(wslots);
    free(prev);
    free(cur);
    free(obj_reg.state);
    return 0;
}
