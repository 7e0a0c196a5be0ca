/* obj_deferred.c — deferred reference counting: per-thread counts of hot
 * objects, flushed at detach, exit, ftm_thread_flush and on request, and
 * ftm_clear_deferred while other threads keep counting.
 *
 * Phase A (quiescent clear): the main thread makes one object deferred;
 * waves of threads (a wave starts before the previous one is joined)
 * increment and decrement it at random, never dropping more than they
 * took, detach and attach around short sleeps, call ftm_safepoint and
 * ftm_thread_flush, and make holder objects (a field holding a reference
 * to the deferred object) that a dropper thread releases — so the holder
 * is queued to its owner and dies at the owner's next safepoint, dropping
 * its reference from there.  Half of the threads end with such a holder
 * handed over just before exit: the holder dies in the owner's exit merge.
 * Each thread leaves the references it still holds "parked" (counted for
 * the main thread to drop).  With every thread gone and the main thread
 * flushed, ftm_refcount must be exactly what it was after
 * ftm_set_deferred plus the parked references; then ftm_clear_deferred
 * (no other thread attached: completes at once), the refcount is one
 * less (the pin), and dropping the parked and the main thread's
 * references frees the object exactly once.
 *
 * Phase B (clear under load), twice: eight deferred objects hammered the
 * same way; while the threads run, each is cleared once by whichever
 * worker gets there first (the clear completes when every attached thread
 * has answered at a safepoint).  After the run: none is deferred any more,
 * each refcount is exactly 1 + its parked references, each is freed
 * exactly once when they are dropped.
 *
 * Checks: the canary of a deferred object whenever a thread touches it,
 * the refcounts above, holders all freed, each object freed once
 * (registry), ftm_object_stats and the leak check (obj_util.h).
 */
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "obj_util.h"

#define NB 8 /* deferred objects in phase B */

typedef struct dobj_s {
    ftm_object ob;
    obj_stamp_t st;
    uint64_t tail;
} dobj_t;

typedef struct holder_s {
    ftm_object ob;
    obj_stamp_t st;
    ftm_field ref; /* a reference to a deferred object */
} holder_t;

typedef struct drop_s { /* a holder for the dropper, and whom to tell */
    ftm_object *h;
    _Atomic int *done;
} drop_t;

static stress_opts_t opt = { .name = "obj_deferred" };
static int waves, ops_per_thread;
static dobj_t *objs[NB];
static int nobjs;
static _Atomic long long parked[NB];
static _Atomic int cleared[NB];
static _Atomic int clear_ok; /* phase B: ops after which workers may clear */
static _Atomic unsigned long long n_inc, n_dec, n_holders, n_exit_holders, n_detach,
    n_worker_clears;

/* the dropper's mailbox */
static pthread_mutex_t mlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t mcond = PTHREAD_COND_INITIALIZER;
static drop_t *mbox;
static size_t mlen, mcap;
static bool mstop;

static void dobj_dealloc(ftm_object *self)
{
    dobj_t *d = (dobj_t *)self;
    if (d->tail != ~d->st.canary)
        stress_fail("deferred object dealloc: tail %016llx", (unsigned long long)d->tail);
    obj_stamp_kill(&d->st, "deferred object dealloc");
    d->tail = 0;
}
static ftm_type dobj_type = {
    .name = "hot", .basic_size = sizeof(dobj_t), .dealloc = dobj_dealloc,
};

static int holder_traverse(ftm_object *self, ftm_visitproc visit, void *arg)
{
    ftm_object *o = ftm_field_peek(&((holder_t *)self)->ref);
    return o ? visit(o, arg) : 0;
}
static void holder_clear(ftm_object *self)
{
    ftm_field_clear(&((holder_t *)self)->ref);
}
static void holder_dealloc(ftm_object *self)
{
    obj_stamp_kill(&((holder_t *)self)->st, "holder dealloc");
}
static ftm_type holder_type = {
    .name = "holder",
    .basic_size = sizeof(holder_t),
    .flags = FTM_TYPE_FREELIST,
    .traverse = holder_traverse,
    .clear = holder_clear,
    .dealloc = holder_dealloc,
};

static void dobj_check(dobj_t *d, const char *what)
{
    obj_stamp_check(&d->st, what);
    if (d->tail != ~d->st.canary)
        stress_fail("%s: deferred object %llu: tail %016llx", what,
                    (unsigned long long)d->st.id, (unsigned long long)d->tail);
}

static dobj_t *dobj_new(void)
{
    dobj_t *d = (dobj_t *)ftm_new(&dobj_type);
    if (d == NULL)
        stress_fail("ftm_new failed");
    obj_stamp_init(&d->st);
    d->tail = ~d->st.canary;
    return d;
}

static void mbox_put(ftm_object *h, _Atomic int *done)
{
    pthread_mutex_lock(&mlock);
    if (mlen == mcap) {
        size_t cap = mcap ? mcap * 2 : 256;
        drop_t *n = realloc(mbox, cap * sizeof *n);
        if (n == NULL)
            stress_fail("out of memory for the mailbox");
        mbox = n;
        mcap = cap;
    }
    mbox[mlen++] = (drop_t){ h, done };
    pthread_cond_signal(&mcond);
    pthread_mutex_unlock(&mlock);
}

static void *dropper_main(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&mlock);
        if (mlen == 0 && !mstop) {
            pthread_mutex_unlock(&mlock);
            ftm_thread_detach(); /* blocking */
            pthread_mutex_lock(&mlock);
            while (mlen == 0 && !mstop)
                pthread_cond_wait(&mcond, &mlock);
            pthread_mutex_unlock(&mlock);
            ftm_thread_attach();
            pthread_mutex_lock(&mlock);
        }
        if (mlen == 0 && mstop) {
            pthread_mutex_unlock(&mlock);
            return NULL;
        }
        drop_t d = mbox[--mlen];
        pthread_mutex_unlock(&mlock);
        obj_stamp_check(&((holder_t *)d.h)->st, "holder (dropper)");
        ftm_decref(d.h); /* queued to its owner, if that is alive */
        if (d.done != NULL) /* release: the owner may exit now */
            atomic_store_explicit(d.done, 1, memory_order_release);
    }
}

/* A holder owned by us with a reference to objs[k]. */
static ftm_object *holder_new(int k)
{
    holder_t *h = (holder_t *)ftm_new(&holder_type);
    if (h == NULL)
        stress_fail("ftm_new(holder) failed");
    obj_stamp_init(&h->st);
    ftm_incref(&objs[k]->ob);
    ftm_field_init(&h->ref, &objs[k]->ob);
    return &h->ob;
}

static void *worker_main(void *arg)
{
    uint64_t serial = (uint64_t)(intptr_t)arg;
    stress_rng_t r = stress_rng(opt.seed, 100 + serial);
    long long held[NB] = { 0 };
    unsigned long long inc = 0, dec = 0, holders = 0, detaches = 0, clears = 0;
    for (int op = 0; op < ops_per_thread; op++) {
        int k = (int)stress_below(&r, (uint64_t)nobjs);
        dobj_t *d = objs[k];
        unsigned what = (unsigned)stress_below(&r, 1000);
        if (what < 420) {
            ftm_incref(&d->ob);
            held[k]++;
            inc++;
        } else if (what < 840) {
            if (held[k] > 0) {
                ftm_decref(&d->ob);
                held[k]--;
                dec++;
            }
        } else if (what < 900) {
            dobj_check(d, "deferred object (held by main)");
        } else if (what < 940) {
            holders++;
            mbox_put(holder_new(k), NULL);
        } else if (what < 950) {
            detaches++;
            ftm_thread_detach(); /* flushes our counts */
            struct timespec ts = { 0, 50000 };
            nanosleep(&ts, NULL);
            ftm_thread_attach();
        } else if (what < 990) {
            ftm_safepoint();
        } else if (what < 995) {
            ftm_thread_flush();
        } else if (nobjs > 1 &&
                   op >= atomic_load_explicit(&clear_ok, memory_order_relaxed)) {
            int z = 0;
            if (atomic_compare_exchange_strong_explicit(&cleared[k], &z, 1,
                                                        memory_order_relaxed,
                                                        memory_order_relaxed)) {
                if (ftm_clear_deferred(&d->ob) != 0)
                    stress_fail("ftm_clear_deferred of object %d failed: errno %d", k, errno);
                if (ftm_is_deferred(&d->ob))
                    stress_fail("object %d still deferred after ftm_clear_deferred", k);
                clears++;
            }
        }
    }
    /* half of us: a holder dropped just before we exit, so that it dies
     * in our exit merge, dropping its reference there */
    if (serial % 2 == 0) {
        _Atomic int done;
        atomic_init(&done, 0);
        mbox_put(holder_new((int)stress_below(&r, (uint64_t)nobjs)), &done);
        /* no safepoint while we wait: spin; acquire pairs with the
         * dropper's release */
        while (!atomic_load_explicit(&done, memory_order_acquire))
            sched_yield();
        atomic_fetch_add_explicit(&n_exit_holders, 1, memory_order_relaxed);
    }
    for (int k = 0; k < nobjs; k++) /* ours are the main thread's to drop */
        atomic_fetch_add_explicit(&parked[k], held[k], memory_order_relaxed);
    atomic_fetch_add_explicit(&n_inc, inc, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_dec, dec, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_holders, holders, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_detach, detaches, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_worker_clears, clears, memory_order_relaxed);
    return NULL;
}

/* Run the waves and the dropper; returns after every thread is joined. */
static void run_waves(void)
{
    pthread_t *prev = calloc((size_t)opt.threads, sizeof *prev);
    pthread_t *cur = calloc((size_t)opt.threads, sizeof *cur);
    if (!prev || !cur)
        stress_fail("out of memory for the harness");
    pthread_t dropper;
    mstop = false;
    stress_thread_start(&dropper, dropper_main, NULL);
    static int serial;
    ftm_thread_detach(); /* main blocks in joins */
    for (int w = 0; w < waves; w++) {
        for (int i = 0; i < opt.threads; i++)
            stress_thread_start(&cur[i], worker_main, (void *)(intptr_t)serial++);
        if (w > 0)
            for (int i = 0; i < opt.threads; i++)
                stress_thread_join(prev[i]);
        pthread_t *t = prev;
        prev = cur;
        cur = t;
    }
    for (int i = 0; i < opt.threads; i++)
        stress_thread_join(prev[i]);
    pthread_mutex_lock(&mlock);
    mstop = true;
    pthread_cond_broadcast(&mcond);
    pthread_mutex_unlock(&mlock);
    stress_thread_join(dropper);
    ftm_thread_attach();
    free(prev);
    free(cur);
}

/* Drop the parked references and the main thread's own: freed once. */
static void drop_all(int k, const char *phase)
{
    uint64_t id = objs[k]->st.id;
    long long p = atomic_load_explicit(&parked[k], memory_order_relaxed);
    for (long long i = 0; i < p; i++)
        ftm_decref(&objs[k]->ob);
    if (obj_state(id) != OBJ_ALIVE)
        stress_fail("%s: object %d freed before the main thread's last reference was dropped",
                    phase, k);
    ftm_decref(&objs[k]->ob);
    ftm_thread_flush();
    if (obj_state(id) != OBJ_FREED)
        stress_fail("%s: object %d not freed after its last reference was dropped (refcount "
                    "reads %zd)",
                    phase, k, ftm_refcount(&objs[k]->ob));
}

int main(int argc, char **argv)
{
    stress_parse(&opt, argc, argv, 6, NULL);
    waves = opt.smoke ? 4 : 24;
    ops_per_thread = opt.smoke ? 20000 : 200000;
    /* ids: deferred objects, and at most one holder per op (4%) plus one per thread */
    uint64_t threads_total = 3ull * (uint64_t)waves * (uint64_t)opt.threads;
    obj_registry_init(opt.seed, threads_total * ((uint64_t)ops_per_thread / 20 + 2) + 64);

    /* warm up: a deferred object set and cleared, a holder */
    {
        dobj_t *w = dobj_new();
        if (ftm_set_deferred(&w->ob) != 0)
            stress_fail("warm-up: ftm_set_deferred failed (errno %d)", errno);
        objs[0] = w;
        nobjs = 1;
        ftm_decref(holder_new(0));
        if (ftm_clear_deferred(&w->ob) != 0)
            stress_fail("warm-up: ftm_clear_deferred failed");
        ftm_decref(&w->ob);
        if (obj_state(w->st.id) != OBJ_FREED)
            stress_fail("warm-up: the cleared object was not freed by its last decref");
    }
    obj_base_t base;
    obj_baseline(&base);
    double t0 = stress_now();

    /* ---- phase A ---- */
    nobjs = 1;
    objs[0] = dobj_new();
    if (ftm_set_deferred(&objs[0]->ob) != 0)
        stress_fail("ftm_set_deferred failed (errno %d)", errno);
    if (!ftm_is_deferred(&objs[0]->ob))
        stress_fail("ftm_is_deferred false after ftm_set_deferred");
    ssize_t r0 = ftm_refcount(&objs[0]->ob);
    atomic_store_explicit(&parked[0], 0, memory_order_relaxed);
    atomic_store_explicit(&clear_ok, ops_per_thread + 1, memory_order_relaxed); /* never */
    run_waves();
    ftm_thread_flush();
    long long pk = atomic_load_explicit(&parked[0], memory_order_relaxed);
    ssize_t ra = ftm_refcount(&objs[0]->ob);
    if (!ftm_is_deferred(&objs[0]->ob))
        stress_fail("phase A: the object is no longer deferred");
    if (ra != r0 + pk)
        stress_fail("phase A: with every thread exited and the main thread flushed, "
                    "ftm_refcount = %zd; it was %zd after ftm_set_deferred and %lld references "
                    "are still held: expected %lld (%+lld)",
                    ra, r0, pk, (long long)r0 + pk, (long long)(ra - r0 - pk));
    obj_registry_expect_all_freed(1, "phase A, before the clear (the object itself stays)");
    if (ftm_clear_deferred(&objs[0]->ob) != 0)
        stress_fail("phase A: ftm_clear_deferred failed (errno %d)", errno);
    if (ftm_is_deferred(&objs[0]->ob))
        stress_fail("phase A: still deferred after ftm_clear_deferred");
    ssize_t rc = ftm_refcount(&objs[0]->ob);
    if (rc != 1 + pk)
        stress_fail("phase A: after ftm_clear_deferred (no other thread attached) refcount "
                    "%zd, expected %lld (ours + parked)",
                    rc, 1 + pk);
    drop_all(0, "phase A");
    double ta = stress_now() - t0;

    /* ---- phase B, twice ---- */
    unsigned long long wclears = 0;
    for (int round = 0; round < 2; round++) {
        nobjs = NB;
        for (int k = 0; k < NB; k++) {
            objs[k] = dobj_new();
            if (ftm_set_deferred(&objs[k]->ob) != 0)
                stress_fail("phase B: ftm_set_deferred failed (errno %d)", errno);
            atomic_store_explicit(&parked[k], 0, memory_order_relaxed);
            atomic_store_explicit(&cleared[k], 0, memory_order_relaxed);
        }
        atomic_store_explicit(&clear_ok, ops_per_thread / 4, memory_order_relaxed);
        unsigned long long before = atomic_load_explicit(&n_worker_clears, memory_order_relaxed);
        run_waves();
        wclears += atomic_load_explicit(&n_worker_clears, memory_order_relaxed) - before;
        for (int k = 0; k < NB; k++) {
            int z = 0;
            if (atomic_compare_exchange_strong_explicit(&cleared[k], &z, 1,
                                                        memory_order_relaxed,
                                                        memory_order_relaxed) &&
                ftm_clear_deferred(&objs[k]->ob) != 0)
                stress_fail("phase B: ftm_clear_deferred by main failed (errno %d)", errno);
        }
        ftm_thread_flush();
        ftm_safepoint();
        for (int k = 0; k < NB; k++) {
            dobj_check(objs[k], "phase B, after the run");
            if (ftm_is_deferred(&objs[k]->ob))
                stress_fail("phase B: object %d still deferred", k);
            long long p = atomic_load_explicit(&parked[k], memory_order_relaxed);
            ssize_t rk = ftm_refcount(&objs[k]->ob);
            if (rk != 1 + p)
                stress_fail("phase B round %d: object %d (cleared %s) has refcount %zd with "
                            "every thread exited: expected %lld (ours + %lld parked) (%+lld)",
                            round, k, "while the threads ran or after", rk, 1 + p, p,
                            (long long)(rk - 1 - p));
        }
        obj_registry_expect_all_freed((uint64_t)NB, "phase B, before the drops");
        for (int k = 0; k < NB; k++)
            drop_all(k, "phase B");
    }

    obj_registry_expect_all_freed(0, "at the end");
    obj_leak_check(&base, 0, 0, OBJ_SLICE_SLACK, "at the end");
    stress_note("OK: phase A %d waves x %d threads on one deferred object (refcount %zd "
                "-> %zd, %lld parked), %.2f s; phase B 2 rounds x %d objects, %llu of the %d "
                "clears done by workers under load; %llu increments, %llu decrements, %llu "
                "holders (%llu dying in their owner's exit), %llu detaches; %.2f s in all",
                waves, opt.threads, r0, ra, pk, ta, NB, wclears, 2 * NB, atomic_load(&n_inc),
                atomic_load(&n_dec), atomic_load(&n_holders), atomic_load(&n_exit_holders),
                atomic_load(&n_detach), stress_now() - t0);
    free(mbox);
    free(obj_reg.state);
    return 0;
}
