/* test_refcount.c — biased reference counting through the public API:
 * incref/decref and friends on the owner and on other threads, decref
 * storms from many threads (owner alive, owner exiting), objects outliving
 * their owner, a detached owner that must not hold memory hostage,
 * immortal objects, try-incref, deferred counting, and misuse of
 * attach/detach that must abort with a message.
 *
 * Every object carries a canary and its index; its dealloc counts deaths
 * per index, so "freed exactly once" and "never used after death" are
 * checked object by object. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "ftm_test.h"
#include <ftmem.h>

TestSuite(refcount, .timeout = 120);

#define CANARY 0x5AFEC0DE0BADF00Dull
#define DEAD 0xDEADDEADDEADDEADull

typedef struct {
    ftm_object ob;
    _Atomic uint64_t canary;
    uint32_t index;
} cnt_obj;

enum { MAXOBJ = 40000 };
static atomic_int deaths[MAXOBJ];
static atomic_long n_dead;
static atomic_long n_bad_death; /* died with a bad canary (twice, or corrupted) */
static _Atomic pthread_t last_dealloc_thread;

static void cnt_dealloc(ftm_object *self)
{
    cnt_obj *o = (cnt_obj *)self;
    if (atomic_exchange(&o->canary, DEAD) != CANARY)
        atomic_fetch_add(&n_bad_death, 1);
    if (o->index < MAXOBJ)
        atomic_fetch_add(&deaths[o->index], 1);
    atomic_store(&last_dealloc_thread, pthread_self());
    atomic_fetch_add(&n_dead, 1);
}
static ftm_type cnt_type = {.name = "cnt", .basic_size = sizeof(cnt_obj), .dealloc = cnt_dealloc};

static cnt_obj *new_cnt(uint32_t index)
{
    cnt_obj *o = (cnt_obj *)ftm_new(&cnt_type);
    if (o == NULL)
        return NULL;
    atomic_store(&o->canary, CANARY);
    o->index = index;
    return o;
}

static bool alive(cnt_obj *o) { return atomic_load(&o->canary) == CANARY && atomic_load(&deaths[o->index]) == 0; }

/* Every object in [0, n) died exactly once. */
static void expect_all_dead_once(size_t n)
{
    size_t zero = 0, many = 0, first_bad = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        int d = atomic_load(&deaths[i]);
        if (d != 1 && first_bad == SIZE_MAX)
            first_bad = i;
        zero += d == 0;
        many += d > 1;
    }
    cr_assert(zero == 0 && many == 0, "%zu objects never freed, %zu freed more than once (first: #%zu, %d deaths)",
              zero, many, first_bad, first_bad == SIZE_MAX ? 0 : atomic_load(&deaths[first_bad]));
    cr_assert_eq(atomic_load(&n_bad_death), 0, "%ld deaths of objects with a bad canary", atomic_load(&n_bad_death));
}

static void *run_fn(void *arg)
{
    ((void (*)(void))arg)();
    return NULL;
}
static void in_thread(void (*fn)(void))
{
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, run_fn, (void *)fn), 0);
    pthread_join(t, NULL);
}

/* ---- basics ------------------------------------------------------------- */

static cnt_obj *g_obj;
static _Atomic ssize_t seen_rc;

static void read_rc(void) { atomic_store(&seen_rc, ftm_refcount(&g_obj->ob)); }
static void incref3(void)
{
    ftm_incref(&g_obj->ob);
    ftm_xincref(&g_obj->ob);
    ftm_object *r = ftm_newref(&g_obj->ob);
    if (r != &g_obj->ob)
        atomic_store(&seen_rc, -100);
    else
        atomic_store(&seen_rc, ftm_refcount(&g_obj->ob));
}
static void decref3(void)
{
    ftm_decref(&g_obj->ob);
    ftm_xdecref(&g_obj->ob);
    ftm_decref(&g_obj->ob);
    atomic_store(&seen_rc, ftm_refcount(&g_obj->ob));
}

Test(refcount, owner_incref_decref)
{
    cnt_obj *o = new_cnt(0);
    cr_assert_eq(ftm_refcount(&o->ob), 1);
    ftm_incref(&o->ob);
    cr_assert_eq(ftm_refcount(&o->ob), 2);
    cr_assert_eq(ftm_newref(&o->ob), &o->ob);
    cr_assert_eq(ftm_refcount(&o->ob), 3);
    ftm_xincref(&o->ob);
    ftm_xincref(NULL);
    ftm_xdecref(NULL);
    cr_assert_eq(ftm_refcount(&o->ob), 4);
    /* the owner counts in ob_ref_local, nothing shared */
    cr_assert_eq(atomic_load(&o->ob.ob_ref_local), 4u);
    cr_assert_eq(atomic_load(&o->ob.ob_ref_shared), 0);
    ftm_xdecref(&o->ob);
    ftm_decref(&o->ob);
    ftm_decref(&o->ob);
    cr_assert_eq(ftm_refcount(&o->ob), 1);
    cr_assert_eq(atomic_load(&n_dead), 0);
    ftm_decref(&o->ob);
    cr_assert_eq(atomic_load(&n_dead), 1);
    cr_assert_eq(atomic_load(&deaths[0]), 1);
}

Test(refcount, other_thread_counts_and_refcount)
{
    g_obj = new_cnt(0);
    in_thread(read_rc);
    cr_assert_eq(atomic_load(&seen_rc), 1, "refcount seen from another thread: %zd", atomic_load(&seen_rc));
    in_thread(incref3);
    cr_assert_eq(atomic_load(&seen_rc), 4, "refcount after 3 increfs on another thread: %zd", atomic_load(&seen_rc));
    cr_assert_eq(ftm_refcount(&g_obj->ob), 4);
    /* they went to ob_ref_shared, count << 2 */
    cr_assert_eq(atomic_load(&g_obj->ob.ob_ref_local), 1u);
    cr_assert_eq(atomic_load(&g_obj->ob.ob_ref_shared) >> FTM_REF_SHARED_SHIFT, 3);
    in_thread(decref3);
    cr_assert_eq(atomic_load(&seen_rc), 1);
    cr_assert_eq(ftm_refcount(&g_obj->ob), 1);
    cr_assert_eq(atomic_load(&n_dead), 0);
    ftm_decref(&g_obj->ob);
    cr_assert_eq(atomic_load(&n_dead), 1, "object not freed by the owner's last decref");
}

/* The owner drops its reference while another thread still holds one: the
 * other thread's decref frees it, on that thread. */
static void decref_g(void) { ftm_decref(&g_obj->ob); }
static void incref_g(void) { ftm_incref(&g_obj->ob); }

Test(refcount, last_decref_on_other_thread_frees_there)
{
    g_obj = new_cnt(0);
    in_thread(incref_g);
    ftm_decref(&g_obj->ob);
    cr_assert_eq(atomic_load(&n_dead), 0, "freed while another thread holds a reference");
    cr_assert_eq(ftm_refcount(&g_obj->ob), 1);
    pthread_t t;
    pthread_create(&t, NULL, run_fn, (void *)decref_g);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&n_dead), 1);
    cr_assert(pthread_equal(atomic_load(&last_dealloc_thread), t), "freed on another thread than the last decref");
}

/* The owner's reference handed to another thread and dropped there: queued
 * to the owner, freed at the owner's next safepoint. */
Test(refcount, handed_reference_freed_at_owner_safepoint)
{
    g_obj = new_cnt(0);
    ftm_object_stats_t a, b;
    ftm_object_stats_get(&a);
    in_thread(decref_g);
    ftm_safepoint();
    cr_assert_eq(atomic_load(&n_dead), 1, "queued object not freed at the owner's safepoint");
    cr_assert(pthread_equal(atomic_load(&last_dealloc_thread), pthread_self()));
    ftm_object_stats_get(&b);
    cr_assert_eq(b.queued - a.queued, 1);
    cr_assert_eq(b.merged - a.merged, 1);
}

static atomic_int spin_release;
static atomic_int spinner_ready;

/* Registers (maybe in the slot a dead owner left) and spins attached,
 * never reaching a safepoint: nothing may wait for it. */
static void *attached_spinner(void *arg)
{
    cnt_obj *mine = new_cnt(MAXOBJ - 1);
    atomic_store(&spinner_ready, 1);
    while (!atomic_load(&spin_release))
        sched_yield();
    ftm_decref(&mine->ob);
    return NULL;
}

Test(refcount, thread_count_in_stats)
{
    ftm_object_stats_t a, b, c;
    cnt_obj *o = new_cnt(0); /* main registered */
    ftm_object_stats_get(&a);
    pthread_t sp;
    pthread_create(&sp, NULL, attached_spinner, NULL);
    while (!atomic_load(&spinner_ready))
        sched_yield();
    ftm_object_stats_get(&b);
    atomic_store(&spin_release, 1);
    pthread_join(sp, NULL);
    ftm_object_stats_get(&c);
    cr_assert_eq(b.threads, a.threads + 1, "threads %llu with one more thread registered, was %llu",
                 (unsigned long long)b.threads, (unsigned long long)a.threads);
    cr_assert_eq(c.threads, a.threads, "an exited thread still counted (%llu -> %llu)",
                 (unsigned long long)a.threads, (unsigned long long)c.threads);
    ftm_decref(&o->ob);
    cr_assert_eq(atomic_load(&n_dead), 2);
}

/* ---- decref storms -------------------------------------------------------- */

enum { STORM_N = 20000, STORM_T = 6 };
static cnt_obj *storm[STORM_N];
static atomic_int storm_go;
static atomic_long storm_bad;

typedef struct {
    int id;
    uint64_t seed;
} storm_arg;

/* Each worker owns one reference to every object: churns counts, checks
 * the canary while holding a reference, then drops its reference. */
static void *storm_worker(void *p)
{
    storm_arg *a = p;
    uint64_t rng = a->seed;
    while (!atomic_load(&storm_go))
        sched_yield();
    size_t start = (size_t)a->id * (STORM_N / STORM_T);
    for (size_t k = 0; k < STORM_N; k++) {
        size_t i = (start + k) % STORM_N;
        cnt_obj *o = storm[i];
        if (!alive(o)) {
            atomic_fetch_add(&storm_bad, 1);
            continue;
        }
        unsigned extra = (unsigned)(ftt_rand(&rng) % 4);
        for (unsigned j = 0; j < extra; j++)
            ftm_incref(&o->ob);
        if (ftm_refcount(&o->ob) < 1 + (ssize_t)extra - 1 || !alive(o))
            atomic_fetch_add(&storm_bad, 1);
        for (unsigned j = 0; j < extra; j++)
            ftm_decref(&o->ob);
        if (!alive(o))
            atomic_fetch_add(&storm_bad, 1);
        ftm_decref(&o->ob); /* ours: maybe the last one */
    }
    return NULL;
}

Test(refcount, storm_owner_alive)
{
    ftm_object_stats_t a, b;
    for (uint32_t i = 0; i < STORM_N; i++) {
        storm[i] = new_cnt(i);
        cr_assert_not_null(storm[i]);
        for (int t = 0; t < STORM_T; t++)
            ftm_incref(&storm[i]->ob); /* one for each worker, counted locally */
    }
    ftm_object_stats_get(&a);
    pthread_t th[STORM_T];
    storm_arg args[STORM_T];
    for (int t = 0; t < STORM_T; t++) {
        args[t] = (storm_arg){t, 77 + (uint64_t)t};
        cr_assert_eq(pthread_create(&th[t], NULL, storm_worker, &args[t]), 0);
    }
    atomic_store(&storm_go, 1);
    /* the owner keeps running: drops its own references in the middle of
     * the storm and merges what was queued to it */
    for (uint32_t i = 0; i < STORM_N; i++) {
        ftm_decref(&storm[i]->ob);
        if (i % 64 == 0)
            ftm_safepoint();
    }
    for (int t = 0; t < STORM_T; t++)
        pthread_join(th[t], NULL);
    ftm_thread_flush();
    cr_assert_eq(atomic_load(&storm_bad), 0, "%ld uses of dead objects seen by workers", atomic_load(&storm_bad));
    expect_all_dead_once(STORM_N);
    ftm_object_stats_get(&b);
    cr_assert_eq(b.freed - a.freed, STORM_N);
    cr_assert_eq(b.queued - a.queued, STORM_N, "queued %llu, want one per object",
                 (unsigned long long)(b.queued - a.queued));
    cr_assert_eq(b.merged - a.merged, b.queued - a.queued, "merged %llu != queued %llu",
                 (unsigned long long)(b.merged - a.merged), (unsigned long long)(b.queued - a.queued));
    cr_assert_eq(b.merged_for_others, a.merged_for_others);
}

/* The owner creates, hands out and exits while the workers drop. */
static void *storm_owner(void *arg)
{
    for (uint32_t i = 0; i < STORM_N; i++) {
        storm[i] = new_cnt(i);
        if (storm[i] == NULL)
            abort();
        for (int t = 1; t < STORM_T; t++)
            ftm_incref(&storm[i]->ob); /* STORM_T references, all local */
    }
    atomic_store(&storm_go, 1);
    /* some churn of its own while the workers start */
    for (uint32_t i = 0; i < STORM_N; i += 3) {
        ftm_incref(&storm[i]->ob);
        ftm_decref(&storm[i]->ob);
    }
    return NULL;
}

Test(refcount, storm_owner_exits)
{
    ftm_object_stats_t a, b;
    ftm_object_stats_get(&a);
    pthread_t th[STORM_T], owner;
    storm_arg args[STORM_T];
    for (int t = 0; t < STORM_T; t++) {
        args[t] = (storm_arg){t, 99 + (uint64_t)t};
        cr_assert_eq(pthread_create(&th[t], NULL, storm_worker, &args[t]), 0);
    }
    cr_assert_eq(pthread_create(&owner, NULL, storm_owner, NULL), 0);
    pthread_join(owner, NULL);
    for (int t = 0; t < STORM_T; t++)
        pthread_join(th[t], NULL);
    ftm_thread_flush();
    cr_assert_eq(atomic_load(&storm_bad), 0, "%ld uses of dead objects seen by workers", atomic_load(&storm_bad));
    expect_all_dead_once(STORM_N);
    ftm_object_stats_get(&b);
    cr_assert_eq(b.created - a.created, STORM_N);
    cr_assert_eq(b.freed - a.freed, STORM_N);
    /* each object is merged once: by its owner from the queue, or by a
     * worker once the owner is gone */
    cr_assert_eq(b.merged - a.merged, STORM_N, "merged %llu times for %d objects",
                 (unsigned long long)(b.merged - a.merged), STORM_N);
    cr_assert(b.queued - a.queued <= STORM_N);
}

/* ---- objects outliving their owner ---------------------------------------- */

enum { OUTLIVE_N = 3000 };
static cnt_obj *outlive[OUTLIVE_N];
static void make_outlive(void)
{
    for (uint32_t i = 0; i < OUTLIVE_N; i++)
        outlive[i] = new_cnt(i);
}

Test(refcount, objects_outlive_owner_thread)
{
    in_thread(make_outlive);
    for (uint32_t i = 0; i < OUTLIVE_N; i++) {
        cr_assert_not_null(outlive[i]);
        cr_assert_eq(ftm_refcount(&outlive[i]->ob), 1);
        cr_assert(alive(outlive[i]));
    }
    pthread_t sp;
    pthread_create(&sp, NULL, attached_spinner, NULL);
    while (!atomic_load(&spinner_ready))
        sched_yield();
    /* some used for a while, then dropped: freed right away, since their
     * owner is gone (no safepoint of anyone needed) */
    for (uint32_t i = 0; i < OUTLIVE_N; i++) {
        ftm_incref(&outlive[i]->ob);
        ftm_decref(&outlive[i]->ob);
        ftm_decref(&outlive[i]->ob);
    }
    long dead = atomic_load(&n_dead);
    atomic_store(&spin_release, 1);
    pthread_join(sp, NULL);
    cr_assert_eq(dead, OUTLIVE_N, "%ld of %d objects of an exited owner freed by their last decref", dead, OUTLIVE_N);
    expect_all_dead_once(OUTLIVE_N);
}

/* ---- a detached owner does not hold memory hostage ------------------------ */

enum { HOSTAGE_N = 5000, HOSTAGE_T = 4 };
static cnt_obj *hostage[HOSTAGE_N];
static pthread_mutex_t hmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hcv = PTHREAD_COND_INITIALIZER;
static int h_detached, h_go;

static void *hostage_owner(void *arg)
{
    for (uint32_t i = 0; i < HOSTAGE_N; i++)
        if ((hostage[i] = new_cnt(i)) == NULL)
            abort();
    ftm_thread_detach();
    pthread_mutex_lock(&hmu);
    h_detached = 1;
    pthread_cond_broadcast(&hcv);
    while (!h_go)
        pthread_cond_wait(&hcv, &hmu);
    pthread_mutex_unlock(&hmu);
    ftm_thread_attach();
    return NULL;
}

static void *hostage_dropper(void *arg)
{
    size_t id = (size_t)arg;
    for (size_t i = id; i < HOSTAGE_N; i += HOSTAGE_T)
        ftm_decref(&hostage[i]->ob); /* the owner's reference, handed to us */
    return NULL;
}

Test(refcount, detached_owner_does_not_hold_memory_hostage)
{
    ftm_object_stats_t a, b;
    pthread_t owner, d[HOSTAGE_T];
    cr_assert_eq(pthread_create(&owner, NULL, hostage_owner, NULL), 0);
    pthread_mutex_lock(&hmu);
    while (!h_detached)
        pthread_cond_wait(&hcv, &hmu);
    pthread_mutex_unlock(&hmu);
    ftm_object_stats_get(&a);
    for (size_t t = 0; t < HOSTAGE_T; t++)
        pthread_create(&d[t], NULL, hostage_dropper, (void *)t);
    for (size_t t = 0; t < HOSTAGE_T; t++)
        pthread_join(d[t], NULL);
    long freed_while_detached = atomic_load(&n_dead);
    ftm_object_stats_get(&b);
    pthread_mutex_lock(&hmu);
    h_go = 1;
    pthread_cond_broadcast(&hcv);
    pthread_mutex_unlock(&hmu);
    pthread_join(owner, NULL);
    /* at most one backlog's worth (plus a few racing pushes) may wait */
    cr_assert_geq(freed_while_detached, HOSTAGE_N - 1024 - 2 * HOSTAGE_T,
                  "only %ld of %d objects freed while their owner stayed detached", freed_while_detached, HOSTAGE_N);
    cr_assert_geq(b.merged_for_others - a.merged_for_others, (uint64_t)(HOSTAGE_N - 1024 - 2 * HOSTAGE_T));
    cr_assert_eq(b.queued - a.queued, HOSTAGE_N);
    /* the rest at the owner's attach/exit */
    cr_assert_eq(atomic_load(&n_dead), HOSTAGE_N);
    expect_all_dead_once(HOSTAGE_N);
}

/* Below the backlog, the queue waits for the owner: merged at its first
 * safepoint once attached (attach itself leaves merges to the next
 * safepoint since d5ec9a2, though object.h still lists attach). */
static atomic_int at_attach = -1;
static void *small_hostage_owner(void *arg)
{
    for (uint32_t i = 0; i < 10; i++)
        hostage[i] = new_cnt(i);
    ftm_thread_detach();
    pthread_mutex_lock(&hmu);
    h_detached = 1;
    pthread_cond_broadcast(&hcv);
    while (!h_go)
        pthread_cond_wait(&hcv, &hmu);
    pthread_mutex_unlock(&hmu);
    ftm_thread_attach();
    ftm_safepoint();
    atomic_store(&at_attach, (int)atomic_load(&n_dead)); /* right after the first safepoint */
    pthread_mutex_lock(&hmu);
    while (h_go != 2)
        pthread_cond_wait(&hcv, &hmu);
    pthread_mutex_unlock(&hmu);
    return NULL;
}

Test(refcount, detached_owner_merges_after_attach)
{
    pthread_t owner;
    pthread_create(&owner, NULL, small_hostage_owner, NULL);
    pthread_mutex_lock(&hmu);
    while (!h_detached)
        pthread_cond_wait(&hcv, &hmu);
    pthread_mutex_unlock(&hmu);
    for (int i = 0; i < 10; i++)
        ftm_decref(&hostage[i]->ob);
    pthread_mutex_lock(&hmu);
    h_go = 1;
    pthread_cond_broadcast(&hcv);
    pthread_mutex_unlock(&hmu);
    while (atomic_load(&at_attach) < 0)
        sched_yield();
    int freed_at_attach = atomic_load(&at_attach);
    pthread_mutex_lock(&hmu);
    h_go = 2;
    pthread_cond_broadcast(&hcv);
    pthread_mutex_unlock(&hmu);
    pthread_join(owner, NULL);
    cr_assert_eq(freed_at_attach, 10, "%d of 10 queued objects freed at the owner's first safepoint after attach",
                 freed_at_attach);
    expect_all_dead_once(10);
}

/* A thread that exits while detached: its queue is merged at exit. */
static void *exit_detached_owner(void *arg)
{
    for (uint32_t i = 0; i < 10; i++)
        hostage[i] = new_cnt(i);
    ftm_thread_detach();
    pthread_mutex_lock(&hmu);
    h_detached = 1;
    pthread_cond_broadcast(&hcv);
    while (!h_go)
        pthread_cond_wait(&hcv, &hmu);
    pthread_mutex_unlock(&hmu);
    return NULL; /* still detached */
}

Test(refcount, owner_exits_detached)
{
    pthread_t owner;
    pthread_create(&owner, NULL, exit_detached_owner, NULL);
    pthread_mutex_lock(&hmu);
    while (!h_detached)
        pthread_cond_wait(&hcv, &hmu);
    pthread_mutex_unlock(&hmu);
    for (int i = 0; i < 5; i++)
        ftm_decref(&hostage[i]->ob); /* queued to the detached owner */
    pthread_mutex_lock(&hmu);
    h_go = 1;
    pthread_cond_broadcast(&hcv);
    pthread_mutex_unlock(&hmu);
    pthread_join(owner, NULL);
    cr_assert_eq(atomic_load(&n_dead), 5, "%ld of 5 queued objects freed at the owner's exit", atomic_load(&n_dead));
    for (int i = 5; i < 10; i++)
        ftm_decref(&hostage[i]->ob); /* owner gone: freed right here */
    cr_assert_eq(atomic_load(&n_dead), 10);
    expect_all_dead_once(10);
}

/* ---- exit race: the exiting owner still counts its own objects ----------- */

/* Boxes queued to their owner die during the owner's exit (step 3 of the
 * exit protocol, after its tid was retired) and drop a child the owner
 * also owns; at that moment another thread drops its own reference to the
 * same child.  That thread finds no live owner and merges the child
 * itself, while the exiting owner still decrements the child's local count.
 * Each child must die exactly once.  The dropper follows the owner's
 * progress (box_clear announces each box) so the two meet on every child. */
typedef struct {
    ftm_object ob;
    ftm_field child;
    uint32_t index;
} box_obj;
static atomic_int xr_clearing; /* index + 1 of the box the owner is clearing, 0: none yet */
static void box_clear(ftm_object *self)
{
    box_obj *b = (box_obj *)self;
    atomic_store(&xr_clearing, (int)b->index + 1);
    ftm_field_clear(&b->child);
}
static ftm_type box_type = {.name = "box", .basic_size = sizeof(box_obj), .clear = box_clear};

enum { XR_N = 2000, XR_ROUNDS = 300 };
static box_obj *xr_box[XR_N];
static cnt_obj *xr_child[XR_N];
static atomic_int xr_phase;

static void *xr_owner(void *arg)
{
    for (uint32_t i = 0; i < XR_N; i++) {
        xr_box[i] = (box_obj *)ftm_new(&box_type);
        xr_box[i]->index = i;
        xr_child[i] = new_cnt(i);
        ftm_field_init(&xr_box[i]->child, ftm_newref(&xr_child[i]->ob)); /* child: 2 local refs */
    }
    atomic_store(&xr_phase, 1);
    while (atomic_load(&xr_phase) != 2) /* our boxes get queued to us */
        sched_yield();
    return NULL; /* exit: merges the boxes, which drop their children */
}

static void *xr_box_dropper(void *arg)
{
    while (atomic_load(&xr_phase) != 1)
        sched_yield();
    for (uint32_t i = 0; i < XR_N; i++)
        ftm_decref(&xr_box[i]->ob); /* the owner's reference, handed over: queued */
    atomic_store(&xr_phase, 2);
    return NULL;
}

static void *xr_child_dropper(void *arg)
{
    while (atomic_load(&xr_phase) != 2)
        sched_yield();
    /* the owner's queue is a stack: it clears the boxes from the last one
     * queued down to the first; drop child i as the owner reaches box i */
    for (int i = XR_N - 1; i >= 0; i--) {
        for (long spins = 0; spins < 100000; spins++) {
            int c = atomic_load(&xr_clearing);
            if (c != 0 && c - 1 <= i)
                break;
        }
        ftm_decref(&xr_child[i]->ob);
    }
    return NULL;
}

Test(refcount, owner_exit_races_with_merges)
{
    for (int r = 0; r < XR_ROUNDS; r++) {
        atomic_store(&xr_phase, 0);
        atomic_store(&xr_clearing, 0);
        atomic_store(&n_dead, 0);
        for (int i = 0; i < XR_N; i++)
            atomic_store(&deaths[i], 0);
        pthread_t o, bd, cd;
        pthread_create(&o, NULL, xr_owner, NULL);
        pthread_create(&bd, NULL, xr_box_dropper, NULL);
        pthread_create(&cd, NULL, xr_child_dropper, NULL);
        pthread_join(o, NULL);
        pthread_join(bd, NULL);
        pthread_join(cd, NULL);
        ftm_thread_flush();
        size_t zero = 0, many = 0;
        for (int i = 0; i < XR_N; i++) {
            zero += atomic_load(&deaths[i]) == 0;
            many += atomic_load(&deaths[i]) > 1;
        }
        cr_assert(zero == 0 && many == 0, "round %d: %zu of %d children never freed, %zu freed twice", r, zero, XR_N,
                  many);
    }
    cr_assert_eq(atomic_load(&n_bad_death), 0);
}

/* ---- immortal objects -------------------------------------------------- */

static unsigned char hdr_before[sizeof(ftm_object)];
static atomic_int hdr_changed;

static void immortal_churn(void)
{
    for (int i = 0; i < 1000; i++) {
        ftm_incref(&g_obj->ob);
        ftm_decref(&g_obj->ob);
        ftm_decref(&g_obj->ob); /* more decrefs than references: still nothing */
        if (memcmp(hdr_before, &g_obj->ob, sizeof hdr_before) != 0)
            atomic_store(&hdr_changed, 1);
    }
}

Test(refcount, immortal_stores_nothing_and_never_dies)
{
    g_obj = new_cnt(0);
    cr_assert_eq(ftm_make_immortal(&g_obj->ob), 0);
    cr_assert(ftm_is_immortal(&g_obj->ob));
    cr_assert_eq(ftm_refcount(&g_obj->ob), (ssize_t)FTM_REF_IMMORTAL);
    memcpy(hdr_before, &g_obj->ob, sizeof hdr_before);
    immortal_churn(); /* owner */
    cr_assert_eq(atomic_load(&hdr_changed), 0, "owner incref/decref changed an immortal header");
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, run_fn, (void *)immortal_churn);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    ftm_thread_flush();
    cr_assert_eq(atomic_load(&hdr_changed), 0, "incref/decref on other threads changed an immortal header");
    cr_assert(ftm_is_immortal(&g_obj->ob));
    cr_assert_eq(atomic_load(&n_dead), 0, "an immortal object was freed");
    cr_assert(alive(g_obj));
    cr_assert_eq(ftm_make_immortal(&g_obj->ob), 0, "making an immortal object immortal again failed");
}

static atomic_int imm_rc, imm_errno;
static void immortal_from_other(void)
{
    errno = 0;
    atomic_store(&imm_rc, ftm_make_immortal(&g_obj->ob));
    atomic_store(&imm_errno, errno);
}

Test(refcount, immortal_eperm_from_non_owner)
{
    g_obj = new_cnt(0);
    in_thread(incref_g); /* register, share */
    memcpy(hdr_before, &g_obj->ob, sizeof hdr_before);
    in_thread(immortal_from_other);
    cr_assert_eq(atomic_load(&imm_rc), -1, "a non-owner made a live owner's object immortal");
    cr_assert_eq(atomic_load(&imm_errno), EPERM);
    cr_assert(!ftm_is_immortal(&g_obj->ob));
    cr_assert(memcmp(hdr_before, &g_obj->ob, sizeof hdr_before) == 0, "refused make_immortal changed the header");
    cr_assert_eq(ftm_refcount(&g_obj->ob), 2);
    ftm_decref(&g_obj->ob);
    in_thread(decref_g);
    cr_assert_eq(atomic_load(&n_dead), 1);
}

static void create_g(void) { g_obj = new_cnt(0); }

Test(refcount, immortal_after_owner_exit)
{
    in_thread(create_g);
    cr_assert_eq(ftm_make_immortal(&g_obj->ob), 0, "refused although the owner has exited (errno %d)", errno);
    cr_assert(ftm_is_immortal(&g_obj->ob));
    for (int i = 0; i < 5; i++)
        ftm_decref(&g_obj->ob);
    cr_assert_eq(atomic_load(&n_dead), 0);
}

/* An object with a reference queued to its owner (another thread dropped
 * it earlier) made immortal: the owner's later merge must not make it
 * mortal again. */
Test(refcount, immortal_survives_merge_of_earlier_queued_decref)
{
    g_obj = new_cnt(0);
    ftm_incref(&g_obj->ob);
    in_thread(decref_g); /* queued to us, not merged yet */
    cr_assert_eq(ftm_make_immortal(&g_obj->ob), 0);
    cr_assert(ftm_is_immortal(&g_obj->ob));
    ftm_safepoint(); /* merges the queue */
    cr_assert(ftm_is_immortal(&g_obj->ob), "no longer immortal after the owner's merge (ob_ref_local %u)",
              atomic_load(&g_obj->ob.ob_ref_local));
    for (int i = 0; i < 5; i++)
        ftm_decref(&g_obj->ob);
    cr_assert_eq(atomic_load(&n_dead), 0);
}

/* ---- try-incref ----------------------------------------------------------- */

static atomic_int ti_result;
static void try_incref_g(void) { atomic_store(&ti_result, ftm_try_incref(&g_obj->ob)); }

Test(refcount, try_incref_live)
{
    g_obj = new_cnt(0);
    ftm_enable_try_incref(&g_obj->ob);
    ftm_enable_try_incref(&g_obj->ob); /* idempotent */
    cr_assert(ftm_try_incref(&g_obj->ob));
    cr_assert_eq(ftm_refcount(&g_obj->ob), 2);
    in_thread(try_incref_g);
    cr_assert(atomic_load(&ti_result), "try-incref on a live object failed on another thread");
    cr_assert_eq(ftm_refcount(&g_obj->ob), 3);
    in_thread(decref_g);
    ftm_decref(&g_obj->ob);
    cr_assert_eq(atomic_load(&n_dead), 0);
    ftm_decref(&g_obj->ob);
    cr_assert_eq(atomic_load(&n_dead), 1);
}

/* A reader keeps the memory valid with a read section; the object dies
 * meanwhile; try-incref then fails (on the reader and on the owner). */
static atomic_int ts_phase;
static void *section_holder(void *arg)
{
    ftm_read_begin();
    atomic_store(&ts_phase, 1);
    while (atomic_load(&ts_phase) != 2)
        sched_yield();
    atomic_store(&ti_result, ftm_try_incref(&g_obj->ob) ? 1 : 0);
    atomic_store(&ts_phase, 3);
    while (atomic_load(&ts_phase) != 4)
        sched_yield();
    ftm_read_end();
    return NULL;
}

/* Holds a reference and drops it on request, staying alive (an exiting
 * thread waits for open read sections). */
static atomic_int hp_phase;
static void *ref_holder(void *arg)
{
    ftm_incref(&g_obj->ob);
    atomic_store(&hp_phase, 1);
    while (atomic_load(&hp_phase) != 2)
        sched_yield();
    ftm_decref(&g_obj->ob);
    atomic_store(&hp_phase, 3);
    while (atomic_load(&hp_phase) != 4)
        sched_yield();
    return NULL;
}

static void try_incref_after_death(bool shared_death)
{
    g_obj = new_cnt(0);
    ftm_enable_try_incref(&g_obj->ob);
    pthread_t h;
    if (shared_death) {
        pthread_create(&h, NULL, ref_holder, NULL);
        while (atomic_load(&hp_phase) != 1)
            sched_yield();
    }
    pthread_t r;
    pthread_create(&r, NULL, section_holder, NULL);
    while (atomic_load(&ts_phase) != 1)
        sched_yield();
    ftm_decref(&g_obj->ob);
    if (shared_death) {
        cr_assert_eq(atomic_load(&n_dead), 0);
        atomic_store(&hp_phase, 2);
        while (atomic_load(&hp_phase) != 3)
            sched_yield();
    }
    cr_assert_eq(atomic_load(&n_dead), 1);
    atomic_store(&ts_phase, 2);
    while (atomic_load(&ts_phase) != 3)
        sched_yield();
    bool owner_try = ftm_try_incref(&g_obj->ob);
    atomic_store(&ts_phase, 4);
    pthread_join(r, NULL);
    if (shared_death) {
        atomic_store(&hp_phase, 4);
        pthread_join(h, NULL);
    }
    cr_assert_eq(atomic_load(&ti_result), 0, "try-incref on another thread succeeded on a dead object");
    cr_assert(!owner_try, "try-incref by the owner succeeded on a dead object");
    cr_assert_eq(atomic_load(&n_dead), 1);
}

Test(refcount, try_incref_fails_after_owner_death) { try_incref_after_death(false); }
Test(refcount, try_incref_fails_after_shared_death) { try_incref_after_death(true); }

/* try-incref racing the last decref: a success always gets a live object,
 * and the object dies once. */
enum { TR_N = 3000, TR_T = 6 };
static ftm_field tr_slots[TR_N];
static atomic_int tr_go;
static atomic_long tr_bad, tr_hits;

static void *tr_worker(void *arg)
{
    while (!atomic_load(&tr_go))
        sched_yield();
    for (int pass = 0; pass < 3; pass++) {
        for (int i = 0; i < TR_N; i++) {
            ftm_read_begin();
            cnt_obj *o = (cnt_obj *)ftm_field_peek(&tr_slots[i]); /* no reference */
            bool got = o != NULL && ftm_try_incref(&o->ob);
            ftm_read_end();
            if (got) {
                atomic_fetch_add(&tr_hits, 1);
                if (!alive(o))
                    atomic_fetch_add(&tr_bad, 1);
                ftm_decref(&o->ob);
            }
        }
    }
    return NULL;
}

Test(refcount, try_incref_races_last_decref)
{
    for (uint32_t i = 0; i < TR_N; i++) {
        cnt_obj *o = new_cnt(i);
        ftm_enable_try_incref(&o->ob);
        ftm_field_init(&tr_slots[i], &o->ob);
    }
    pthread_t th[TR_T];
    for (int t = 0; t < TR_T; t++)
        pthread_create(&th[t], NULL, tr_worker, NULL);
    atomic_store(&tr_go, 1);
    for (uint32_t i = 0; i < TR_N; i++) {
        ftm_field_clear(&tr_slots[i]); /* the only reference */
        if (i % 32 == 0)
            sched_yield();
    }
    for (int t = 0; t < TR_T; t++)
        pthread_join(th[t], NULL);
    ftm_thread_flush();
    cr_assert_eq(atomic_load(&tr_bad), 0, "%ld try-increfs returned a dead object", atomic_load(&tr_bad));
    expect_all_dead_once(TR_N);
}

/* ---- deferred reference counting --------------------------------------- */

static void churn_deferred(void)
{
    for (int i = 0; i < 20000; i++) {
        ftm_incref(&g_obj->ob);
        if (!alive(g_obj))
            atomic_fetch_add(&storm_bad, 1);
        ftm_decref(&g_obj->ob);
    }
}

Test(refcount, deferred_churn_then_clear_frees)
{
    g_obj = new_cnt(0);
    cr_assert_eq(ftm_set_deferred(&g_obj->ob), 0);
    cr_assert(ftm_is_deferred(&g_obj->ob));
    cr_assert_eq(ftm_set_deferred(&g_obj->ob), 0, "set_deferred on a deferred object failed");
    ssize_t base = ftm_refcount(&g_obj->ob);
    cr_assert_geq(base, 1);
    pthread_t t[6];
    for (int i = 0; i < 6; i++)
        pthread_create(&t[i], NULL, run_fn, (void *)churn_deferred);
    churn_deferred();
    for (int i = 0; i < 6; i++)
        pthread_join(t[i], NULL);
    ftm_thread_flush();
    cr_assert_eq(atomic_load(&storm_bad), 0);
    cr_assert_eq(ftm_refcount(&g_obj->ob), base, "refcount %zd after balanced churn, was %zd",
                 ftm_refcount(&g_obj->ob), base);
    cr_assert_eq(atomic_load(&n_dead), 0);
    ftm_decref(&g_obj->ob); /* our reference: still pinned */
    cr_assert_eq(atomic_load(&n_dead), 0, "a deferred object died while deferred");
    cr_assert(alive(g_obj));
    cr_assert_eq(ftm_clear_deferred(&g_obj->ob), 0); /* frees it: not to be read after */
    cr_assert_eq(atomic_load(&n_dead), 1, "clear_deferred did not free an object nothing holds");
}

/* References moved between threads: one thread's count goes up, another's
 * down; flushed at exit. */
static void incs_only(void)
{
    for (int i = 0; i < 5000; i++)
        ftm_incref(&g_obj->ob);
}
static void decs_only(void)
{
    for (int i = 0; i < 5000; i++)
        ftm_decref(&g_obj->ob);
}

Test(refcount, deferred_counts_moved_between_threads)
{
    g_obj = new_cnt(0);
    cr_assert_eq(ftm_set_deferred(&g_obj->ob), 0);
    ssize_t base = ftm_refcount(&g_obj->ob);
    in_thread(incs_only);
    cr_assert_eq(ftm_refcount(&g_obj->ob), base + 5000, "exit did not flush +5000: %zd (base %zd)",
                 ftm_refcount(&g_obj->ob), base);
    in_thread(decs_only);
    cr_assert_eq(ftm_refcount(&g_obj->ob), base);
    incs_only();
    cr_assert_eq(ftm_refcount(&g_obj->ob), base, "counted before a flush");
    ftm_thread_flush();
    cr_assert_eq(ftm_refcount(&g_obj->ob), base + 5000);
    decs_only();
    ftm_decref(&g_obj->ob);
    cr_assert_eq(ftm_clear_deferred(&g_obj->ob), 0);
    cr_assert_eq(atomic_load(&n_dead), 1);
}

/* clear_deferred keeps the object while another (attached) thread holds a
 * reference counted in its per-thread count. */
static atomic_int kd_phase;
static void *deferred_holder(void *arg)
{
    ftm_incref(&g_obj->ob);
    atomic_store(&kd_phase, 1);
    while (atomic_load(&kd_phase) != 2)
        ftm_safepoint(); /* answers the flush request */
    ftm_safepoint();     /* surely after the request now */
    atomic_store(&kd_phase, 3);
    while (atomic_load(&kd_phase) != 4)
        sched_yield();
    if (!alive(g_obj))
        atomic_fetch_add(&storm_bad, 1);
    ftm_decref(&g_obj->ob);
    return NULL;
}

Test(refcount, deferred_clear_keeps_held_object)
{
    g_obj = new_cnt(0);
    cr_assert_eq(ftm_set_deferred(&g_obj->ob), 0);
    pthread_t t;
    pthread_create(&t, NULL, deferred_holder, NULL);
    while (atomic_load(&kd_phase) != 1)
        sched_yield();
    ftm_decref(&g_obj->ob);
    cr_assert_eq(ftm_clear_deferred(&g_obj->ob), 0);
    cr_assert(!ftm_is_deferred(&g_obj->ob));
    atomic_store(&kd_phase, 2);
    while (atomic_load(&kd_phase) != 3)
        sched_yield();
    /* the holder has answered: the pin is gone, its reference remains */
    cr_assert_eq(atomic_load(&n_dead), 0, "clear_deferred freed an object another thread holds");
    cr_assert_eq(ftm_refcount(&g_obj->ob), 1, "refcount %zd after the clear completed, want 1 (the holder's)",
                 ftm_refcount(&g_obj->ob));
    atomic_store(&kd_phase, 4);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&storm_bad), 0);
    cr_assert_eq(atomic_load(&n_dead), 1);
    cr_assert(pthread_equal(atomic_load(&last_dealloc_thread), t));
}

/* A thread took a reference while the object was deferred (counted in its
 * per-thread count, not flushed yet) and drops it while ftm_clear_deferred
 * runs on the owner — after the owner flushed its own decrement.  The
 * object must die exactly once, after both. */
static atomic_int dw_phase;
static atomic_long dw_died_early;
static void *deferred_window_thread(void *arg)
{
    ftm_incref(&g_obj->ob);
    atomic_store(&dw_phase, 1);
    /* no safepoint here: wait until clear_deferred has un-deferred the
     * object and the owner's flush left only the pin and our reference */
    while (ftm_is_deferred(&g_obj->ob))
        sched_yield();
    for (long spins = 0; spins < 2000000 && ftm_refcount(&g_obj->ob) != 1; spins++)
        sched_yield();
    ftm_decref(&g_obj->ob);
    atomic_store(&dw_died_early, atomic_load(&n_dead));
    ftm_safepoint(); /* now answer the flush request */
    atomic_store(&dw_phase, 2);
    while (atomic_load(&dw_phase) != 3) /* main checks before we exit and free our bags */
        sched_yield();
    return NULL;
}

Test(refcount, deferred_decref_during_clear)
{
    g_obj = new_cnt(0);
    ftm_enable_try_incref(&g_obj->ob); /* memory through a grace period, whatever happens */
    cr_assert_eq(ftm_set_deferred(&g_obj->ob), 0);
    pthread_t t;
    pthread_create(&t, NULL, deferred_window_thread, NULL);
    while (atomic_load(&dw_phase) != 1)
        sched_yield();
    ftm_decref(&g_obj->ob); /* ours, into our per-thread count */
    cr_assert_eq(ftm_clear_deferred(&g_obj->ob), 0);
    while (atomic_load(&dw_phase) != 2)
        sched_yield();
    long dead = atomic_load(&n_dead);
    cr_assert_eq(dead, 1, "object deallocated %ld times; %ld already at the thread's decref, before its "
                 "counted increment was flushed", dead, atomic_load(&dw_died_early));
    atomic_store(&dw_phase, 3);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&n_dead), 1);
}

/* An attached thread that never reaches a safepoint does not block the
 * clear; the object dies once that thread has flushed (here: at exit). */
Test(refcount, deferred_clear_does_not_wait_for_sleeping_thread)
{
    g_obj = new_cnt(0);
    cr_assert_eq(ftm_set_deferred(&g_obj->ob), 0);
    pthread_t sp;
    pthread_create(&sp, NULL, attached_spinner, NULL);
    while (!atomic_load(&spinner_ready))
        sched_yield();
    ftm_incref(&g_obj->ob);
    ftm_decref(&g_obj->ob);
    ftm_decref(&g_obj->ob);
    cr_assert_eq(ftm_clear_deferred(&g_obj->ob), 0); /* returns although the spinner never answers */
    cr_assert(!ftm_is_deferred(&g_obj->ob));
    errno = 0;
    cr_assert_eq(ftm_clear_deferred(&g_obj->ob), -1, "a second clear of the same object succeeded");
    cr_assert_eq(errno, EINVAL);
    long before = atomic_load(&n_dead);
    atomic_store(&spin_release, 1);
    pthread_join(sp, NULL); /* its own object dies too (index MAXOBJ-1) */
    cr_assert_eq(before, 0, "the pin was dropped before every attached thread answered");
    cr_assert_eq(atomic_load(&deaths[0]), 1, "the object did not die once every thread had flushed");
    cr_assert_eq(atomic_load(&n_dead), 2);
}

static atomic_int sd_rc, sd_errno;
static void set_deferred_other(void)
{
    errno = 0;
    atomic_store(&sd_rc, ftm_set_deferred(&g_obj->ob));
    atomic_store(&sd_errno, errno);
}

Test(refcount, deferred_eperm_from_non_owner)
{
    g_obj = new_cnt(0);
    in_thread(set_deferred_other);
    cr_assert_eq(atomic_load(&sd_rc), -1);
    cr_assert_eq(atomic_load(&sd_errno), EPERM);
    cr_assert(!ftm_is_deferred(&g_obj->ob));
    errno = 0;
    cr_assert_eq(ftm_clear_deferred(&g_obj->ob), -1, "clear_deferred of a non-deferred object succeeded");
    ftm_decref(&g_obj->ob);
    cr_assert_eq(atomic_load(&n_dead), 1);
}

/* "-1 + EPERM as for ftm_make_immortal": allowed once the owner has exited. */
Test(refcount, deferred_after_owner_exit)
{
    in_thread(create_g);
    errno = 0;
    int rc = ftm_set_deferred(&g_obj->ob);
    cr_assert_eq(rc, 0, "set_deferred refused an object whose owner exited (errno %d)", errno);
    cr_assert(ftm_is_deferred(&g_obj->ob));
    ftm_decref(&g_obj->ob);
    cr_assert_eq(ftm_clear_deferred(&g_obj->ob), 0);
    cr_assert_eq(atomic_load(&n_dead), 1);
}

/* Deferred after a decref was queued to the owner: the owner's merge of
 * that queue entry must leave the object deferred. */
Test(refcount, deferred_survives_merge_of_earlier_queued_decref)
{
    g_obj = new_cnt(0);
    ftm_incref(&g_obj->ob);
    in_thread(decref_g); /* queued to us */
    cr_assert_eq(ftm_set_deferred(&g_obj->ob), 0);
    cr_assert(ftm_is_deferred(&g_obj->ob));
    ftm_safepoint();
    cr_assert(ftm_is_deferred(&g_obj->ob), "no longer deferred after the owner's merge (ob_ref_local %u)",
              atomic_load(&g_obj->ob.ob_ref_local));
    ftm_decref(&g_obj->ob);
    cr_assert_eq(ftm_clear_deferred(&g_obj->ob), 0);
    cr_assert_eq(atomic_load(&n_dead), 1);
}

/* set_deferred again while the previous clear is still waiting for a
 * thread's answer: refused with EBUSY (the old clear still holds its pin and
 * slot), and accepted once the clear completed — with a slot of its own
 * whose counts are flushed. */
Test(refcount, deferred_again_while_clear_pending)
{
    g_obj = new_cnt(0);
    pthread_t sp;
    pthread_create(&sp, NULL, attached_spinner, NULL);
    while (!atomic_load(&spinner_ready))
        sched_yield();
    cr_assert_eq(ftm_set_deferred(&g_obj->ob), 0);
    cr_assert_eq(ftm_clear_deferred(&g_obj->ob), 0); /* pending: the spinner has not answered */
    cr_assert(!ftm_is_deferred(&g_obj->ob));
    errno = 0;
    cr_assert_eq(ftm_set_deferred(&g_obj->ob), -1, "deferring again while the clear is pending succeeded");
    cr_assert_eq(errno, EBUSY);
    atomic_store(&spin_release, 1);
    pthread_join(sp, NULL); /* answers at exit: the first clear completes */
    cr_assert_eq(atomic_load(&deaths[0]), 0);
    cr_assert_eq(ftm_set_deferred(&g_obj->ob), 0, "deferring again failed (errno %d)", errno);
    cr_assert(ftm_is_deferred(&g_obj->ob));
    cr_assert_neq(atomic_load(&g_obj->ob.ob_deferred), 0);
    ftm_thread_flush();
    ssize_t base = ftm_refcount(&g_obj->ob);
    for (int i = 0; i < 100; i++)
        ftm_incref(&g_obj->ob);
    ftm_thread_flush();
    cr_assert_eq(ftm_refcount(&g_obj->ob), base + 100, "100 deferred increfs flushed as %zd",
                 ftm_refcount(&g_obj->ob) - base);
    for (int i = 0; i < 101; i++)
        ftm_decref(&g_obj->ob);
    cr_assert_eq(ftm_clear_deferred(&g_obj->ob), 0);
    cr_assert_eq(atomic_load(&deaths[0]), 1);
}

/* ---- fork ---------------------------------------------------------------------- */

/* In a fork child the owner thread is gone: objects queued to it are
 * merged at the child's first safepoint (not inside the fork handler,
 * where their callbacks must not run), the rest by their last decref;
 * deferred clears do not wait for it. */
enum { FK_N = 200 };
static cnt_obj *fk_objs[FK_N];
static atomic_int fk_ready, fk_release;
static void *fk_owner(void *arg)
{
    for (uint32_t i = 0; i < FK_N; i++)
        fk_objs[i] = new_cnt(i);
    atomic_store(&fk_ready, 1);
    while (!atomic_load(&fk_release)) /* attached, never at a safepoint */
        sched_yield();
    return NULL;
}
static void fk_child(void *arg)
{
    if (atomic_load(&n_dead) != 0)
        _exit(7); /* merged (and freed) inside the fork handler */
    ftm_safepoint();
    if (atomic_load(&n_dead) != FK_N / 2)
        _exit(10 + (int)atomic_load(&n_dead) % 100); /* queued ones not merged at the fork */
    for (int i = FK_N / 2; i < FK_N; i++)
        ftm_decref(&fk_objs[i]->ob);
    if (atomic_load(&n_dead) != FK_N)
        _exit(3);
    cnt_obj *d = new_cnt(FK_N);
    if (ftm_set_deferred(&d->ob) != 0)
        _exit(4);
    ftm_decref(&d->ob);
    if (ftm_clear_deferred(&d->ob) != 0)
        _exit(5);
    _exit(atomic_load(&n_dead) == FK_N + 1 ? 0 : 6);
}

Test(refcount, fork_child_frees_objects_of_vanished_owner)
{
    pthread_t t;
    pthread_create(&t, NULL, fk_owner, NULL);
    while (!atomic_load(&fk_ready))
        sched_yield();
    for (int i = 0; i < FK_N / 2; i++)
        ftm_decref(&fk_objs[i]->ob); /* queued to the owner, which never merges */
    cr_assert_eq(atomic_load(&n_dead), 0);
    ftt_child_t r;
    char st[128];
    ftt_run_child(fk_child, NULL, 20, &r);
    atomic_store(&fk_release, 1);
    pthread_join(t, NULL); /* parent: merged at the owner's exit */
    for (int i = FK_N / 2; i < FK_N; i++)
        ftm_decref(&fk_objs[i]->ob);
    cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
              "fork child %s (7: merged inside the fork handler; 10+n: queued objects not merged at the first safepoint, n freed; 3: dropped ones not freed; "
              "4/5: deferred calls failed; 6: deferred clear did not free); stderr:\n%s",
              ftt_status_str(r.status, st, sizeof st), r.err);
    expect_all_dead_once(FK_N);
}

/* ---- misuse of attach / detach ---------------------------------------------- */

static void expect_abort_msg(void (*fn)(void *), const char *what, const char *msg)
{
    ftt_child_t r;
    char st[128];
    ftt_run_child(fn, NULL, 20, &r);
    cr_assert(r.status != -1, "%s: could not fork", what);
    cr_assert(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT, "%s: child %s, expected SIGABRT; stderr:\n%s",
              what, ftt_status_str(r.status, st, sizeof st), r.err);
    cr_assert(strstr(r.err, msg) != NULL, "%s: stderr lacks \"%s\":\n%s", what, msg, r.err);
}

static void double_detach(void *arg)
{
    ftm_object *o = &new_cnt(0)->ob;
    ftm_thread_detach();
    ftm_thread_detach();
    (void)o;
}
static void double_attach(void *arg)
{
    ftm_object *o = &new_cnt(0)->ob;
    ftm_thread_attach();
    (void)o;
}
static void detach_attach_twice(void *arg)
{
    ftm_object *o = &new_cnt(0)->ob;
    ftm_thread_detach();
    ftm_thread_attach();
    ftm_thread_attach();
    (void)o;
}
static void read_end_unbalanced(void *arg)
{
    ftm_read_begin();
    ftm_read_end();
    ftm_read_end();
}
static void fine_detach_attach(void *arg)
{
    cnt_obj *o = new_cnt(0);
    for (int i = 0; i < 3; i++) {
        ftm_thread_detach();
        ftm_thread_attach();
    }
    ftm_safepoint();
    ftm_decref(&o->ob);
    _exit(atomic_load(&n_dead) == 1 ? 0 : 3);
}

Test(refcount, misuse_double_detach_aborts)
{
    expect_abort_msg(double_detach, "detach twice", "ftmem: ftm_thread_detach");
}
Test(refcount, misuse_attach_while_attached_aborts)
{
    expect_abort_msg(double_attach, "attach while attached", "ftmem: ftm_thread_attach");
    expect_abort_msg(detach_attach_twice, "attach twice after detach", "ftmem: ftm_thread_attach");
}
Test(refcount, misuse_read_end_without_begin_aborts)
{
    expect_abort_msg(read_end_unbalanced, "read_end without begin", "ftmem: ftm_read_end");
}
Test(refcount, detach_attach_balanced_is_fine)
{
    ftt_child_t r;
    char st[128];
    ftt_run_child(fine_detach_attach, NULL, 20, &r);
    cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "child %s; stderr:\n%s",
              ftt_status_str(r.status, st, sizeof st), r.err);
}
