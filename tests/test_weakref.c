/* test_weakref.c — weak references: get while alive and NULL after, the
 * callback (once, with its argument, on the thread that frees the
 * referent, after get returns NULL), no callback once released, several
 * weak references to one object, finalizers and weak references, and
 * ftm_weakref_get racing the last decref on other threads. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "ftm_test.h"
#include <ftmem.h>

TestSuite(weakref, .timeout = 120);

#define CANARY 0x77EAC0DE77EAC0DEull
#define DEAD 0xDEADull

typedef struct {
    ftm_object ob;
    _Atomic uint64_t canary;
    uint32_t id;
} wobj;

enum { MAXID = 10000, MAXWR = 20000 };
static atomic_int deaths[MAXID];
static atomic_long n_dead;

static void w_dealloc(ftm_object *self)
{
    wobj *o = (wobj *)self;
    atomic_store(&o->canary, DEAD);
    atomic_fetch_add(&deaths[o->id], 1);
    atomic_fetch_add(&n_dead, 1);
}
static ftm_type w_type = {.name = "wobj", .basic_size = sizeof(wobj), .dealloc = w_dealloc};

static wobj *new_w(uint32_t id)
{
    wobj *o = (wobj *)ftm_new(&w_type);
    cr_assert_not_null(o);
    o->id = id;
    atomic_store(&o->canary, CANARY);
    return o;
}

static bool intact(wobj *o) { return atomic_load(&o->canary) == CANARY && atomic_load(&deaths[o->id]) == 0; }

/* Callback bookkeeping: arg points at a slot index. */
static atomic_int cb_count[MAXWR];
static _Atomic(ftm_weakref *) cb_wr[MAXWR];
static _Atomic pthread_t cb_thread[MAXWR];
static atomic_int cb_get_nonnull;  /* a get inside a callback returned an object */
static int idx_arg[MAXWR];
static ftm_weakref *_Atomic all_wrs_of_obj[8];

static void cb(ftm_weakref *wr, void *arg)
{
    int i = *(int *)arg;
    atomic_fetch_add(&cb_count[i], 1);
    atomic_store(&cb_wr[i], wr);
    atomic_store(&cb_thread[i], pthread_self());
    ftm_object *g = ftm_weakref_get(wr);
    if (g != NULL) {
        atomic_fetch_add(&cb_get_nonnull, 1);
        ftm_decref(g);
    }
    for (int k = 0; k < 8; k++) { /* every weak reference to the referent reads NULL */
        ftm_weakref *o = atomic_load(&all_wrs_of_obj[k]);
        if (o != NULL && (g = ftm_weakref_get(o)) != NULL) {
            atomic_fetch_add(&cb_get_nonnull, 1);
            ftm_decref(g);
        }
    }
}

static void init_args(void)
{
    for (int i = 0; i < MAXWR; i++)
        idx_arg[i] = i;
}

/* ---- basics ---------------------------------------------------------------- */

Test(weakref, get_while_alive_null_after)
{
    wobj *o = new_w(0);
    ftm_weakref *wr = ftm_weakref_new(&o->ob, NULL, NULL);
    cr_assert_not_null(wr);
    cr_assert_eq(ftm_type_of(ftm_weakref_as_object(wr)), &ftm_weakref_type);
    cr_assert_eq(ftm_refcount(&o->ob), 1, "a weak reference counted as a reference");
    for (int i = 0; i < 3; i++) {
        ftm_object *g = ftm_weakref_get(wr);
        cr_assert_eq(g, &o->ob);
        cr_assert_eq(ftm_refcount(&o->ob), 2, "get did not return a new reference");
        ftm_decref(g);
    }
    ftm_decref(&o->ob);
    cr_assert_eq(atomic_load(&deaths[0]), 1, "the weak reference kept the object alive");
    cr_assert_null(ftm_weakref_get(wr));
    cr_assert_null(ftm_weakref_get(wr));
    ftm_weakref_release(wr);
}

static wobj *g_obj;
static ftm_weakref *g_wr;
static _Atomic(ftm_object *) other_got;
static void *get_on_other(void *arg)
{
    atomic_store(&other_got, ftm_weakref_get(g_wr));
    return NULL;
}
static void *decref_on_other(void *arg)
{
    ftm_decref(&g_obj->ob);
    return NULL;
}
static void *incref_on_other(void *arg)
{
    ftm_incref(&g_obj->ob);
    return NULL;
}
static void run(void *(*fn)(void *), pthread_t *out)
{
    pthread_t t;
    pthread_create(&t, NULL, fn, NULL);
    pthread_join(t, NULL);
    if (out)
        *out = t;
}

Test(weakref, get_on_other_thread)
{
    g_obj = new_w(0);
    g_wr = ftm_weakref_new(&g_obj->ob, NULL, NULL);
    run(get_on_other, NULL);
    cr_assert_eq(atomic_load(&other_got), &g_obj->ob);
    cr_assert_eq(ftm_refcount(&g_obj->ob), 2);
    ftm_decref(&g_obj->ob);
    cr_assert_eq(n_dead, 0);
    run(decref_on_other, NULL); /* the reference the other thread got */
    cr_assert_eq(atomic_load(&deaths[0]), 1);
    run(get_on_other, NULL);
    cr_assert_null(atomic_load(&other_got));
    ftm_weakref_release(g_wr);
}

/* ---- callbacks -------------------------------------------------------------- */

Test(weakref, callback_once_owner_death)
{
    init_args();
    wobj *o = new_w(0);
    ftm_weakref *wr = ftm_weakref_new(&o->ob, cb, &idx_arg[3]);
    atomic_store(&all_wrs_of_obj[0], wr);
    ftm_incref(&o->ob);
    ftm_decref(&o->ob);
    cr_assert_eq(atomic_load(&cb_count[3]), 0, "callback ran while the referent lives");
    ftm_decref(&o->ob);
    cr_assert_eq(atomic_load(&cb_count[3]), 1, "callback ran %d times", atomic_load(&cb_count[3]));
    cr_assert_eq(atomic_load(&cb_wr[3]), wr, "callback got another weak reference");
    cr_assert(pthread_equal(atomic_load(&cb_thread[3]), pthread_self()));
    cr_assert_eq(atomic_load(&cb_get_nonnull), 0, "get returned the referent inside its callback");
    ftm_thread_flush();
    cr_assert_eq(atomic_load(&cb_count[3]), 1);
    ftm_weakref_release(wr);
    cr_assert_eq(atomic_load(&cb_count[3]), 1);
}

/* The last reference dropped on another thread (object merged): the
 * callback runs there. */
Test(weakref, callback_on_thread_dropping_last_reference)
{
    init_args();
    g_obj = new_w(0);
    ftm_weakref *wr = ftm_weakref_new(&g_obj->ob, cb, &idx_arg[5]);
    atomic_store(&all_wrs_of_obj[0], wr);
    run(incref_on_other, NULL);
    ftm_decref(&g_obj->ob);
    cr_assert_eq(atomic_load(&cb_count[5]), 0);
    pthread_t t;
    run(decref_on_other, &t);
    cr_assert_eq(atomic_load(&cb_count[5]), 1);
    cr_assert(pthread_equal(atomic_load(&cb_thread[5]), t), "callback not run on the thread that dropped the last reference");
    cr_assert_eq(atomic_load(&cb_get_nonnull), 0);
    ftm_weakref_release(wr);
}

/* The owner's only reference handed to another thread and dropped there:
 * queued; the owner's merge frees it and runs the callback. */
Test(weakref, callback_after_queued_drop)
{
    init_args();
    g_obj = new_w(0);
    ftm_weakref *wr = ftm_weakref_new(&g_obj->ob, cb, &idx_arg[6]);
    run(decref_on_other, NULL);
    ftm_safepoint();
    cr_assert_eq(atomic_load(&cb_count[6]), 1, "callback ran %d times after the merge", atomic_load(&cb_count[6]));
    cr_assert_eq(atomic_load(&deaths[0]), 1);
    cr_assert_null(ftm_weakref_get(wr));
    ftm_weakref_release(wr);
}

Test(weakref, no_callback_after_release)
{
    init_args();
    wobj *o = new_w(0);
    ftm_weakref *wr = ftm_weakref_new(&o->ob, cb, &idx_arg[1]);
    ftm_weakref_release(wr);
    ftm_decref(&o->ob);
    cr_assert_eq(atomic_load(&deaths[0]), 1);
    cr_assert_eq(atomic_load(&cb_count[1]), 0, "callback of a released weak reference ran");
}

/* Five with callbacks, two without; three released (the list's tail, middle
 * and head): exactly the other two callbacks run, once each. */
Test(weakref, several_weakrefs_one_object)
{
    init_args();
    wobj *o = new_w(0);
    ftm_weakref *wr[5], *plain[2];
    plain[0] = ftm_weakref_new(&o->ob, NULL, NULL);
    for (int i = 0; i < 5; i++) {
        wr[i] = ftm_weakref_new(&o->ob, cb, &idx_arg[i]);
        cr_assert_not_null(wr[i]);
        atomic_store(&all_wrs_of_obj[i], wr[i]);
    }
    plain[1] = ftm_weakref_new(&o->ob, NULL, NULL);
    atomic_store(&all_wrs_of_obj[5], plain[0]);
    atomic_store(&all_wrs_of_obj[6], plain[1]);
    ftm_weakref_release(wr[0]);
    atomic_store(&all_wrs_of_obj[0], NULL);
    ftm_weakref_release(wr[2]);
    atomic_store(&all_wrs_of_obj[2], NULL);
    ftm_weakref_release(wr[4]);
    atomic_store(&all_wrs_of_obj[4], NULL);
    for (int i = 1; i < 5; i += 2) {
        ftm_object *g = ftm_weakref_get(wr[i]);
        cr_assert_eq(g, &o->ob);
        ftm_decref(g);
    }
    ftm_decref(&o->ob);
    cr_assert_eq(atomic_load(&deaths[0]), 1);
    int expect[5] = {0, 1, 0, 1, 0};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(atomic_load(&cb_count[i]), expect[i], "weakref #%d: callback ran %d times, want %d", i,
                     atomic_load(&cb_count[i]), expect[i]);
    cr_assert_eq(atomic_load(&cb_wr[1]), wr[1]);
    cr_assert_eq(atomic_load(&cb_wr[3]), wr[3]);
    cr_assert_eq(atomic_load(&cb_get_nonnull), 0, "a weak reference still returned the referent in a callback");
    cr_assert_null(ftm_weakref_get(wr[1]));
    cr_assert_null(ftm_weakref_get(wr[3]));
    cr_assert_null(ftm_weakref_get(plain[0]));
    cr_assert_null(ftm_weakref_get(plain[1]));
    ftm_weakref_release(wr[1]);
    ftm_weakref_release(wr[3]);
    ftm_weakref_release(plain[0]);
    ftm_weakref_release(plain[1]);
}

/* All released, then a new one: the referent's list is rebuilt. */
Test(weakref, release_all_then_new)
{
    init_args();
    wobj *o = new_w(0);
    for (int round = 0; round < 3; round++) {
        ftm_weakref *a = ftm_weakref_new(&o->ob, cb, &idx_arg[10]);
        ftm_weakref *b = ftm_weakref_new(&o->ob, cb, &idx_arg[11]);
        ftm_weakref_release(b);
        ftm_weakref_release(a);
    }
    ftm_weakref *c = ftm_weakref_new(&o->ob, cb, &idx_arg[12]);
    ftm_decref(&o->ob);
    cr_assert_eq(atomic_load(&cb_count[10]) + atomic_load(&cb_count[11]), 0);
    cr_assert_eq(atomic_load(&cb_count[12]), 1);
    ftm_weakref_release(c);
}

/* A callback that releases its own weak reference. */
static void cb_release_self(ftm_weakref *wr, void *arg)
{
    atomic_fetch_add(&cb_count[*(int *)arg], 1);
    ftm_weakref_release(wr);
}

Test(weakref, callback_releases_its_weakref)
{
    init_args();
    ftm_object_stats_t a, b;
    ftm_object_stats_get(&a);
    for (int i = 0; i < 100; i++) {
        wobj *o = new_w((uint32_t)i);
        ftm_weakref *wr = ftm_weakref_new(&o->ob, cb_release_self, &idx_arg[i]);
        cr_assert_not_null(wr);
        ftm_decref(&o->ob);
        cr_assert_eq(atomic_load(&cb_count[i]), 1);
    }
    ftm_thread_flush();
    ftm_object_stats_get(&b);
    /* every referent and every weak reference object was freed */
    cr_assert_eq(b.created - a.created, 200);
    cr_assert_eq(b.freed - a.freed, 200, "%llu of 200 objects freed", (unsigned long long)(b.freed - a.freed));
}

/* ---- finalizers and weak references ---------------------------------------- */

static ftm_weakref *fin_wr;
static atomic_int fin_runs, fin_get_ok;
static ftm_object *_Atomic fin_keep;
static atomic_int fin_resurrect;
static void f_finalize(ftm_object *self)
{
    atomic_fetch_add(&fin_runs, 1);
    ftm_object *g = ftm_weakref_get(fin_wr); /* weak references still work here */
    if (g == self)
        atomic_fetch_add(&fin_get_ok, 1);
    if (g)
        ftm_decref(g);
    if (atomic_load(&fin_resurrect))
        atomic_store(&fin_keep, ftm_newref(self));
}
static ftm_type wf_type = {.name = "wfin", .basic_size = sizeof(wobj), .finalize = f_finalize, .dealloc = w_dealloc};

Test(weakref, finalizer_sees_weakrefs_and_resurrection_delays_callback)
{
    init_args();
    wobj *o = (wobj *)ftm_new(&wf_type);
    o->id = 0;
    atomic_store(&o->canary, CANARY);
    fin_wr = ftm_weakref_new(&o->ob, cb, &idx_arg[7]);
    atomic_store(&fin_resurrect, 1);
    ftm_decref(&o->ob);
    cr_assert_eq(atomic_load(&fin_runs), 1);
    cr_assert_eq(atomic_load(&fin_get_ok), 1, "weakref_get inside the finalizer did not return the object");
    cr_assert_eq(atomic_load(&cb_count[7]), 0, "callback ran although the finalizer resurrected the object");
    cr_assert_eq(atomic_load(&deaths[0]), 0);
    ftm_object *g = ftm_weakref_get(fin_wr);
    cr_assert_eq(g, &o->ob, "weak reference lost a resurrected object");
    ftm_decref(g);
    atomic_store(&fin_resurrect, 0);
    ftm_decref(atomic_exchange(&fin_keep, NULL));
    cr_assert_eq(atomic_load(&fin_runs), 1, "finalizer ran twice");
    cr_assert_eq(atomic_load(&cb_count[7]), 1);
    cr_assert_eq(atomic_load(&deaths[0]), 1);
    cr_assert_null(ftm_weakref_get(fin_wr));
    ftm_weakref_release(fin_wr);
}

/* ---- release while the referent's callbacks are running ------------------- */

/* Two weak references, both with callbacks, owned by thread R.  The
 * referent dies on main; the first callback to run waits until R has
 * released the other weak reference.  ftm_weakref_release promises that
 * no callback runs after it returns. */
static ftm_weakref *rel_wr[2];
static atomic_int rel_first = -1;
static atomic_int rel_phase;     /* 1: R created; 2: release requested; 3: released; 4: end */
static atomic_int rel_count[2];
static void cb_blocking(ftm_weakref *wr, void *arg)
{
    int i = *(int *)arg;
    atomic_fetch_add(&rel_count[i], 1);
    int expected = -1;
    if (atomic_compare_exchange_strong(&rel_first, &expected, i)) {
        atomic_store(&rel_phase, 2);
        while (atomic_load(&rel_phase) != 3)
            sched_yield();
    }
}
static void *rel_thread(void *arg)
{
    ftm_incref(&g_obj->ob); /* we hold a reference while creating */
    rel_wr[0] = ftm_weakref_new(&g_obj->ob, cb_blocking, &idx_arg[0]);
    rel_wr[1] = ftm_weakref_new(&g_obj->ob, cb_blocking, &idx_arg[1]);
    ftm_decref(&g_obj->ob);
    atomic_store(&rel_phase, 1);
    while (atomic_load(&rel_phase) != 2)
        sched_yield();
    int other = 1 - atomic_load(&rel_first);
    ftm_weakref_release(rel_wr[other]);
    atomic_store(&rel_phase, 3);
    while (atomic_load(&rel_phase) != 4)
        sched_yield();
    ftm_weakref_release(rel_wr[1 - other]);
    return NULL;
}

Test(weakref, release_during_callbacks_suppresses_pending_callback)
{
    init_args();
    g_obj = new_w(0);
    pthread_t r;
    pthread_create(&r, NULL, rel_thread, NULL);
    while (atomic_load(&rel_phase) != 1)
        sched_yield();
    ftm_decref(&g_obj->ob); /* dies here; callbacks run here */
    int first = atomic_load(&rel_first);
    int other_runs = first >= 0 ? atomic_load(&rel_count[1 - first]) : -1;
    atomic_store(&rel_phase, 4);
    pthread_join(r, NULL);
    cr_assert_geq(first, 0, "no callback ran");
    cr_assert_eq(atomic_load(&rel_count[first]), 1);
    cr_assert_eq(other_runs, 0, "the callback of weak reference #%d ran after ftm_weakref_release of it returned",
                 1 - first);
}

/* ---- get racing the last decref -------------------------------------------- */

enum { RACE_N = 3000, RACE_G = 5 };
static wobj *race_obj[RACE_N];
static ftm_weakref *race_wr[2 * RACE_N];
static atomic_int race_go, race_stop;
static atomic_long race_bad, race_hits;

static void *getter(void *arg)
{
    uint64_t rng = 42 + (uintptr_t)arg;
    while (!atomic_load(&race_go))
        sched_yield();
    while (!atomic_load(&race_stop)) {
        unsigned i = (unsigned)(ftt_rand(&rng) % (2 * RACE_N));
        wobj *o = (wobj *)ftm_weakref_get(race_wr[i]);
        if (o != NULL) {
            atomic_fetch_add(&race_hits, 1);
            if (!intact(o) || o->id != i / 2)
                atomic_fetch_add(&race_bad, 1);
            ftm_decref(&o->ob);
        }
    }
    return NULL;
}

/* Holds a reference to each odd object (on ob_ref_shared) and drops it
 * while main drops its own: either may be the last. */
static atomic_int killer_ready;
static void *killer(void *arg)
{
    for (int i = 1; i < RACE_N; i += 2)
        ftm_incref(&race_obj[i]->ob);
    atomic_store(&killer_ready, 1);
    while (!atomic_load(&race_go))
        sched_yield();
    for (int i = 1; i < RACE_N; i += 2)
        ftm_decref(&race_obj[i]->ob);
    return NULL;
}

Test(weakref, get_races_last_decref)
{
    init_args();
    for (uint32_t i = 0; i < RACE_N; i++) {
        race_obj[i] = new_w(i);
        race_wr[2 * i] = ftm_weakref_new(&race_obj[i]->ob, cb, &idx_arg[2 * i]);
        race_wr[2 * i + 1] = ftm_weakref_new(&race_obj[i]->ob, (i % 3) ? cb : NULL, &idx_arg[2 * i + 1]);
        cr_assert_not_null(race_wr[2 * i + 1]);
    }
    pthread_t k, g[RACE_G];
    pthread_create(&k, NULL, killer, NULL);
    while (!atomic_load(&killer_ready))
        sched_yield();
    for (uintptr_t t = 0; t < RACE_G; t++)
        pthread_create(&g[t], NULL, getter, (void *)t);
    atomic_store(&race_go, 1);
    for (uint32_t i = 0; i < RACE_N; i++) {
        ftm_decref(&race_obj[i]->ob);
        if (i % 16 == 0) {
            ftm_safepoint();
            sched_yield();
        }
    }
    pthread_join(k, NULL);
    ftm_thread_flush();
    atomic_store(&race_stop, 1);
    for (int t = 0; t < RACE_G; t++)
        pthread_join(g[t], NULL);
    cr_assert_eq(atomic_load(&race_bad), 0, "weakref_get returned %ld dead or damaged objects",
                 atomic_load(&race_bad));
    for (uint32_t i = 0; i < RACE_N; i++)
        cr_assert_eq(atomic_load(&deaths[i]), 1, "object %u died %d times", i, atomic_load(&deaths[i]));
    for (uint32_t i = 0; i < 2 * RACE_N; i++) {
        int want = (i % 2 == 0 || (i / 2) % 3) ? 1 : 0;
        cr_assert_eq(atomic_load(&cb_count[i]), want, "weakref %u: callback ran %d times, want %d", i,
                     atomic_load(&cb_count[i]), want);
        cr_assert_null(ftm_weakref_get(race_wr[i]), "weakref %u still returns its dead referent", i);
        ftm_weakref_release(race_wr[i]);
    }
    cr_assert_eq(atomic_load(&cb_get_nonnull), 0);
}
