/* obj_decref_storm.c — biased reference counting under a storm of
 * non-owner decrements: queued merges, owners that exit while other
 * threads still hold their objects, owners that detach while their queue
 * grows past the backlog.
 *
 * Owners (waves of threads: a wave starts before the previous one is
 * joined) create objects, increment them locally and hand the references
 * to workers through per-worker mutex inboxes.  Workers check each object,
 * add and remove references of their own on the shared count, forward
 * references to each other (moved, or incremented and kept), keep some a
 * while in a stash, and drop them: the last non-owner drop queues the
 * object to its owner, which merges it at its next safepoint (ftm_new), at
 * detach or exit — or, when the owner has exited, the dropping worker
 * merges it itself.  Owners also keep and drop references themselves
 * (owner-local deaths, and the owner's count going to zero while workers
 * hold references).
 *   - Exit: an owner's last act hands out its stash and a batch of holder
 *     pairs (H holds a field reference to G, both its own) to one worker,
 *     which drops every H (queued to the owner), tells the owner, then
 *     drops its references to the G one by one; the owner exits without a
 *     safepoint in between, so its exit merge frees the H — dropping their
 *     references to the G on the owner's own count — while the worker
 *     drops the G and, finding the owner gone, merges them itself.
 *   - Detach episodes: an owner makes a batch (more than the 1024-entry
 *     backlog, FTM_BRC_BACKLOG in src/object_internal.h) of objects, one
 *     reference each, detaches, only then publishes them to the workers,
 *     and blocks until every reference is dropped: the queue of a detached
 *     thread must be merged on its behalf when it grows ("the queue of a
 *     detached thread is merged on its behalf when it grows", object.h);
 *     the rest is merged at the owner's first safepoint after it attaches.
 *
 * Checks: every object checked (canary, registry entry, tail, the holder's
 * field target) whenever a thread holds it; each dealloc runs once (the
 * registry entry goes ALIVE -> FREED once, deallocs == ids handed out);
 * each detach episode: some of its objects freed while the owner was still
 * detached, all of them once it attached again; the references handed out
 * all came back (in-flight count 0, inboxes empty); merges for others
 * happened; ftm_object_stats created == freed and the leak check
 * (obj_util.h).
 */
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "obj_util.h"

/* FTM_BRC_BACKLOG (src/object_internal.h): queue length at which a
 * detached owner's queue is merged for it.  A detach batch is larger. */
#define BRC_BACKLOG 1024
#define WSTASH 32
#define OSTASH 64

typedef struct episode_s {
    unsigned long long n;
    _Atomic long long refs;                /* references to its objects still held */
    _Atomic int detached;                  /* the owner is detached now */
    _Atomic unsigned long long freed, freed_detached;
} episode_t;

typedef struct sobj_s {
    ftm_object ob;
    obj_stamp_t st;
    episode_t *ep; /* the detach episode it belongs to, or NULL */
    ftm_field held; /* holders: a reference to another object of the same owner */
    uint64_t tail;  /* ~canary */
} sobj_t;

/* An owner's last act, for one worker: drop every holder H (queued to the
 * owner, which is alive), say so, then drop the G references one by one
 * while the owner exits — its exit merge frees the H, dropping their
 * references to the G on its own count, while this worker drops the G
 * and, finding the owner gone, merges them itself. */
typedef struct xbatch_s {
    int n;
    ftm_object **h, **g;
    _Atomic int *done; /* on the owner's stack: the owner waits for it */
} xbatch_t;
#define XBATCH_TAG ((uintptr_t)1) /* inbox items: tagged = an xbatch_t */

typedef struct inbox_s {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ftm_object **items;
    size_t len, cap;
} inbox_t;

static stress_opts_t opt = { .name = "obj_decref_storm" };
static int nworkers, nowners, waves;
static int objs_per_owner, ep_objs, holders_per_exit;
static inbox_t *inboxes;
static episode_t *episodes;
static _Atomic int nepisodes;
static int max_episodes;
static _Atomic long long inflight;   /* references in inboxes and worker stashes */
static _Atomic int owners_done;
static _Atomic unsigned long long n_forward, n_pairs, n_handed, n_holders;

static int sobj_traverse(ftm_object *self, ftm_visitproc visit, void *arg);
static void sobj_clear(ftm_object *self);
static void sobj_dealloc(ftm_object *self);

static ftm_type sobj_type = {
    .name = "storm",
    .basic_size = sizeof(sobj_t),
    .flags = FTM_TYPE_FREELIST,
    .traverse = sobj_traverse,
    .clear = sobj_clear,
    .dealloc = sobj_dealloc,
};

static int sobj_traverse(ftm_object *self, ftm_visitproc visit, void *arg)
{
    ftm_object *h = ftm_field_peek(&((sobj_t *)self)->held);
    return h ? visit(h, arg) : 0;
}

static void sobj_clear(ftm_object *self)
{
    ftm_field_clear(&((sobj_t *)self)->held);
}

static void sobj_dealloc(ftm_object *self)
{
    sobj_t *o = (sobj_t *)self;
    if (o->tail != ~o->st.canary)
        stress_fail("dealloc: object %llu: tail %016llx, canary %016llx",
                    (unsigned long long)o->st.id, (unsigned long long)o->tail,
                    (unsigned long long)o->st.canary);
    episode_t *ep = o->ep;
    obj_stamp_kill(&o->st, "storm dealloc");
    o->tail = 0;
    if (ep != NULL) {
        /* acquire: pairs with the owner's release store after detaching */
        if (atomic_load_explicit(&ep->detached, memory_order_acquire))
            atomic_fetch_add_explicit(&ep->freed_detached, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&ep->freed, 1, memory_order_relaxed);
    }
}

static void sobj_check(ftm_object *p, const char *what)
{
    if (ftm_type_of(p) != &sobj_type)
        stress_fail("%s: object %p has type %p, not the storm type", what, (void *)p,
                    (const void *)ftm_type_of(p));
    sobj_t *o = (sobj_t *)p;
    obj_stamp_check(&o->st, what);
    if (o->tail != ~o->st.canary)
        stress_fail("%s: object %llu: tail %016llx, expected %016llx", what,
                    (unsigned long long)o->st.id, (unsigned long long)o->tail,
                    (unsigned long long)~o->st.canary);
    /* the held object lives as long as its holder (we hold the holder) */
    ftm_object *h = ftm_field_peek(&o->held);
    if (h != NULL) {
        sobj_t *g = (sobj_t *)h;
        obj_stamp_check(&g->st, "held object (its holder is alive)");
        if (g->tail != ~g->st.canary)
            stress_fail("%s: held object %llu: tail %016llx", what,
                        (unsigned long long)g->st.id, (unsigned long long)g->tail);
    }
}

static sobj_t *sobj_new(episode_t *ep)
{
    sobj_t *o = (sobj_t *)ftm_new(&sobj_type);
    if (o == NULL)
        stress_fail("ftm_new failed");
    if (ftm_refcount(&o->ob) != 1)
        stress_fail("new object: refcount %zd, expected 1", ftm_refcount(&o->ob));
    obj_stamp_init(&o->st);
    o->ep = ep;
    o->tail = ~o->st.canary;
    return o;
}

/* ---- inboxes (the harness's transport, not under test) ------------------- */

static void inbox_put_n(int w, ftm_object *o, long long refs)
{
    inbox_t *b = &inboxes[w];
    /* counted before it becomes visible: a worker never sees inflight 0
     * while a reference is on its way */
    atomic_fetch_add_explicit(&inflight, refs, memory_order_relaxed);
    pthread_mutex_lock(&b->lock);
    if (b->len == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        ftm_object **n = realloc(b->items, cap * sizeof *n);
        if (n == NULL)
            stress_fail("out of memory for an inbox");
        b->items = n;
        b->cap = cap;
    }
    b->items[b->len++] = o;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

static void inbox_put(int w, ftm_object *o)
{
    inbox_put_n(w, o, 1);
}

/* Take up to max items; waits (detached) up to 2 ms when empty. */
static size_t inbox_take(int w, ftm_object **out, size_t max, bool wait)
{
    inbox_t *b = &inboxes[w];
    pthread_mutex_lock(&b->lock);
    if (b->len == 0 && wait) {
        pthread_mutex_unlock(&b->lock);
        ftm_thread_detach(); /* blocking: let others merge our queue, flush */
        pthread_mutex_lock(&b->lock);
        if (b->len == 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 2000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&b->cond, &b->lock, &ts);
        }
        pthread_mutex_unlock(&b->lock);
        ftm_thread_attach();
        pthread_mutex_lock(&b->lock);
    }
    size_t n = 0;
    while (n < max && b->len > 0) {
        /* from a random-ish end: LIFO for some, FIFO would need a ring */
        out[n++] = b->items[--b->len];
    }
    pthread_mutex_unlock(&b->lock);
    return n;
}

/* ---- workers -------------------------------------------------------------- */

static void drop_ref(ftm_object *p)
{
    episode_t *ep = ((sobj_t *)p)->ep; /* read while the reference is held */
    ftm_decref(p);
    if (ep != NULL) /* release: the owner's acquire sees the decref (and its push) done */
        atomic_fetch_sub_explicit(&ep->refs, 1, memory_order_release);
}

static void worker_xbatch(xbatch_t *xb, stress_rng_t *r)
{
    for (int i = 0; i < xb->n; i++) {
        sobj_check(xb->h[i], "exit batch holder");
        ftm_decref(xb->h[i]);
        atomic_fetch_sub_explicit(&inflight, 1, memory_order_relaxed);
    }
    /* release: the owner may exit now (its queue holds the H) */
    atomic_store_explicit(xb->done, 1, memory_order_release);
    for (int i = 0; i < xb->n; i++) {
        if (stress_one_in(r, 2))
            sched_yield(); /* spread the drops over the owner's exit */
        sobj_check(xb->g[i], "exit batch held object");
        ftm_decref(xb->g[i]);
        atomic_fetch_sub_explicit(&inflight, 1, memory_order_relaxed);
    }
    free(xb->h);
    free(xb->g);
    free(xb);
}

static void *worker_main(void *arg)
{
    int me = (int)(intptr_t)arg;
    stress_rng_t r = stress_rng(opt.seed, 5000 + (uint64_t)me);
    ftm_object *stash[WSTASH];
    int nstash = 0;
    ftm_object *batch[16];
    unsigned long long forwards = 0, pairs = 0;
    for (;;) {
        size_t n = inbox_take(me, batch, 16, nstash == 0);
        if (n == 0) {
            if (nstash > 0) { /* nothing new: drain the stash */
                ftm_object *p = stash[--nstash];
                sobj_check(p, "worker stash (draining)");
                drop_ref(p);
                atomic_fetch_sub_explicit(&inflight, 1, memory_order_relaxed);
                continue;
            }
            /* acquire: pairs with main's release store once every owner is
             * joined; then inflight only falls */
            if (atomic_load_explicit(&owners_done, memory_order_acquire) &&
                atomic_load_explicit(&inflight, memory_order_relaxed) == 0)
                break;
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            ftm_object *p = batch[i];
            if ((uintptr_t)p & XBATCH_TAG) {
                worker_xbatch((xbatch_t *)((uintptr_t)p & ~XBATCH_TAG), &r);
                continue;
            }
            sobj_check(p, "worker (reference received)");
            /* references of our own, on the shared count */
            unsigned m = (unsigned)stress_below(&r, 4);
            for (unsigned k = 0; k < m; k++)
                ftm_incref(p);
            sobj_check(p, "worker (after increments)");
            for (unsigned k = 0; k < m; k++)
                ftm_decref(p);
            pairs += m;
            unsigned what = (unsigned)stress_below(&r, 16);
            if (what < 3) { /* move it on */
                forwards++;
                /* put (counted) before uncounting: inflight never shows 0
                 * while the reference moves */
                inbox_put((int)stress_below(&r, (uint64_t)nworkers), p);
                atomic_fetch_sub_explicit(&inflight, 1, memory_order_relaxed);
            } else if (what < 5) { /* a second reference for another worker */
                forwards++;
                ftm_incref(p);
                episode_t *ep = ((sobj_t *)p)->ep;
                if (ep != NULL)
                    atomic_fetch_add_explicit(&ep->refs, 1, memory_order_relaxed);
                inbox_put((int)stress_below(&r, (uint64_t)nworkers), p);
                drop_ref(p);
                atomic_fetch_sub_explicit(&inflight, 1, memory_order_relaxed);
            } else if (what < 9 && nstash < WSTASH) { /* keep it a while */
                stash[nstash++] = p;
            } else {
                drop_ref(p);
                atomic_fetch_sub_explicit(&inflight, 1, memory_order_relaxed);
            }
            if (nstash > 0 && stress_one_in(&r, 3)) {
                int k = (int)stress_below(&r, (uint64_t)nstash);
                ftm_object *q = stash[k];
                stash[k] = stash[--nstash];
                sobj_check(q, "worker stash");
                drop_ref(q);
                atomic_fetch_sub_explicit(&inflight, 1, memory_order_relaxed);
            }
        }
    }
    atomic_fetch_add_explicit(&n_forward, forwards, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_pairs, pairs, memory_order_relaxed);
    return NULL;
}

/* ---- owners ------------------------------------------------------------- */

static void owner_episode(stress_rng_t *r)
{
    int e = atomic_fetch_add_explicit(&nepisodes, 1, memory_order_relaxed);
    if (e >= max_episodes)
        stress_fail("harness: too many detach episodes");
    episode_t *ep = &episodes[e];
    ep->n = (unsigned long long)ep_objs;
    atomic_store_explicit(&ep->refs, ep_objs, memory_order_relaxed);
    ftm_object **batch = malloc((size_t)ep_objs * sizeof *batch);
    if (batch == NULL)
        stress_fail("out of memory for a detach batch");
    for (int i = 0; i < ep_objs; i++)
        batch[i] = &sobj_new(ep)->ob; /* its one reference goes to a worker */
    ftm_thread_detach();
    /* release: deallocs that see it (acquire) count as freed while detached */
    atomic_store_explicit(&ep->detached, 1, memory_order_release);
    /* only now do the references leave: every push finds us detached */
    for (int i = 0; i < ep_objs; i++)
        inbox_put((int)stress_below(r, (uint64_t)nworkers), batch[i]);
    free(batch);
    /* blocked while the queue grows; acquire: pairs with the workers'
     * release decrements after their decrefs */
    while (atomic_load_explicit(&ep->refs, memory_order_acquire) != 0) {
        struct timespec ts = { 0, 500000 };
        nanosleep(&ts, NULL);
    }
    unsigned long long fd = atomic_load_explicit(&ep->freed, memory_order_relaxed);
    atomic_store_explicit(&ep->detached, 0, memory_order_release);
    /* attach answers flush requests only; the next safepoint merges what
     * is left of our queue (object.h: "merges ... at its next safepoint") */
    ftm_thread_attach();
    ftm_safepoint();
    unsigned long long f = atomic_load_explicit(&ep->freed, memory_order_relaxed);
    if (f != ep->n)
        stress_fail("detach episode %d: %llu of %llu objects freed after every reference "
                    "was dropped and the owner attached again and reached a safepoint",
                    e, f, ep->n);
    if (atomic_load_explicit(&ep->freed_detached, memory_order_relaxed) == 0)
        stress_fail("detach episode %d: %llu objects queued to a detached owner (backlog "
                    "%d), none merged on its behalf while it was detached (freed by then: %llu)",
                    e, ep->n, BRC_BACKLOG, fd);
}

static void *owner_main(void *arg)
{
    uint64_t serial = (uint64_t)(intptr_t)arg;
    stress_rng_t r = stress_rng(opt.seed, 100 + serial);
    ftm_object *stash[OSTASH];
    int nstash = 0;
    unsigned long long handed = 0;
    /* one owner in three has a detach episode, a third of the way in */
    int episode_at = serial % 3 == 0 ? objs_per_owner / 3 : -1;
    for (int i = 0; i < objs_per_owner; i++) {
        if (i == episode_at)
            owner_episode(&r);
        sobj_t *o = sobj_new(NULL); /* ftm_new: a safepoint (merges our queue) */
        unsigned give = (unsigned)stress_below(&r, 4);
        for (unsigned k = 0; k < give; k++) {
            ftm_incref(&o->ob);
            inbox_put((int)stress_below(&r, (uint64_t)nworkers), &o->ob);
        }
        handed += give;
        if (stress_one_in(&r, 2) || nstash == OSTASH) {
            ftm_decref(&o->ob); /* ours; dead here if nothing was given */
        } else {
            stash[nstash++] = &o->ob;
        }
        if (nstash > 0 && stress_one_in(&r, 3)) {
            int k = (int)stress_below(&r, (uint64_t)nstash);
            ftm_object *p = stash[k];
            sobj_check(p, "owner stash");
            ftm_incref(p);
            ftm_incref(p);
            ftm_decref(p);
            ftm_decref(p);
            stash[k] = stash[--nstash];
            if (stress_one_in(&r, 2)) {
                ftm_decref(p);
            } else { /* the owner's own reference, handed on */
                inbox_put((int)stress_below(&r, (uint64_t)nworkers), p);
                handed++;
            }
        }
        if (i % 256 == 0)
            ftm_safepoint();
    }
    /* Last act: the stash to the workers (these objects outlive us), and
     * holder pairs whose holders our exit merge will free. */
    for (int k = 0; k < nstash; k++)
        inbox_put((int)stress_below(&r, (uint64_t)nworkers), stash[k]);
    handed += (unsigned long long)nstash;
    xbatch_t *xb = malloc(sizeof *xb);
    if (xb == NULL)
        stress_fail("out of memory for an exit batch");
    xb->n = holders_per_exit;
    xb->h = malloc((size_t)xb->n * sizeof *xb->h);
    xb->g = malloc((size_t)xb->n * sizeof *xb->g);
    if (xb->h == NULL || xb->g == NULL)
        stress_fail("out of memory for an exit batch");
    _Atomic int done;
    atomic_init(&done, 0);
    xb->done = &done;
    for (int k = 0; k < holders_per_exit; k++) {
        sobj_t *g = sobj_new(NULL);
        sobj_t *h = sobj_new(NULL);
        ftm_incref(&g->ob);
        ftm_field_init(&h->held, &g->ob); /* H's reference */
        xb->h[k] = &h->ob;                /* H's only reference */
        xb->g[k] = &g->ob;                /* ours */
    }
    inbox_put_n((int)stress_below(&r, (uint64_t)nworkers),
                (ftm_object *)((uintptr_t)xb | XBATCH_TAG), 2 * (long long)holders_per_exit);
    /* no safepoint until we exit: our exit merge must be what frees the H;
     * acquire pairs with the worker's release */
    while (!atomic_load_explicit(&done, memory_order_acquire))
        sched_yield();
    handed += 2 * (unsigned long long)holders_per_exit;
    atomic_fetch_add_explicit(&n_handed, handed, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_holders, (unsigned long long)holders_per_exit,
                              memory_order_relaxed);
    return NULL; /* exit: merge our queue; others merge what we still own */
}

int main(int argc, char **argv)
{
    stress_parse(&opt, argc, argv, 6, NULL);
    if (opt.threads < 2)
        stress_fail("needs --threads >= 2 (owners and workers)");
    nworkers = opt.threads / 2;
    nowners = opt.threads - nworkers;
    waves = opt.smoke ? 6 : 40;
    objs_per_owner = opt.smoke ? 5000 : 200000;
    ep_objs = BRC_BACKLOG + (opt.smoke ? 300 : 3000);
    holders_per_exit = opt.smoke ? 64 : 512;
    max_episodes = waves * nowners / 3 + nowners + 1;

    /* objects: per owner thread its own, its holders, an episode's batch */
    uint64_t cap = (uint64_t)waves * (uint64_t)nowners *
                   ((uint64_t)objs_per_owner + 2 * (uint64_t)holders_per_exit + (uint64_t)ep_objs);
    obj_registry_init(opt.seed, cap + 16);
    inboxes = calloc((size_t)nworkers, sizeof *inboxes);
    episodes = calloc((size_t)max_episodes, sizeof *episodes);
    pthread_t *workers = calloc((size_t)nworkers, sizeof *workers);
    pthread_t *prev = calloc((size_t)nowners, sizeof *prev);
    pthread_t *cur = calloc((size_t)nowners, sizeof *cur);
    if (!inboxes || !episodes || !workers || !prev || !cur)
        stress_fail("out of memory for the harness");
    for (int w = 0; w < nworkers; w++) {
        pthread_mutex_init(&inboxes[w].lock, NULL);
        pthread_cond_init(&inboxes[w].cond, NULL);
    }

    /* warm up the main thread's object state, then the baseline */
    ftm_decref(&sobj_new(NULL)->ob);
    obj_base_t base;
    obj_baseline(&base);
    uint64_t ids0 = obj_ids_used();
    double t0 = stress_now();

    for (int w = 0; w < nworkers; w++)
        stress_thread_start(&workers[w], worker_main, (void *)(intptr_t)w);
    ftm_thread_detach(); /* main blocks in joins from here on */
    for (int wv = 0; wv < waves; wv++) {
        for (int i = 0; i < nowners; i++)
            stress_thread_start(&cur[i], owner_main, (void *)(intptr_t)(wv * nowners + i));
        if (wv > 0)
            for (int i = 0; i < nowners; i++)
                stress_thread_join(prev[i]);
        pthread_t *t = prev;
        prev = cur;
        cur = t;
    }
    for (int i = 0; i < nowners; i++)
        stress_thread_join(prev[i]);
    /* release: workers that see it know no owner will hand out more */
    atomic_store_explicit(&owners_done, 1, memory_order_release);
    for (int w = 0; w < nworkers; w++)
        stress_thread_join(workers[w]);
    ftm_thread_attach();
    double t_run = stress_now() - t0;

    long long left = atomic_load_explicit(&inflight, memory_order_relaxed);
    if (left != 0)
        stress_fail("%lld references still in flight after every worker finished", left);
    for (int w = 0; w < nworkers; w++)
        if (inboxes[w].len != 0)
            stress_fail("inbox %d holds %zu references at the end", w, inboxes[w].len);
    int neps = atomic_load_explicit(&nepisodes, memory_order_relaxed);
    unsigned long long fdet = 0;
    for (int e = 0; e < neps; e++) {
        if (atomic_load_explicit(&episodes[e].refs, memory_order_relaxed) != 0)
            stress_fail("detach episode %d: references left", e);
        fdet += atomic_load_explicit(&episodes[e].freed_detached, memory_order_relaxed);
    }
    if (neps == 0)
        stress_fail("harness: no detach episode ran");

    ftm_thread_flush();
    ftm_object_stats_t os;
    ftm_object_stats_get(&os);
    obj_registry_expect_all_freed(0, "after every thread exited");
    uint64_t made = obj_ids_used() - ids0;
    if (os.created - base.obj.created != made)
        stress_fail("ftm_object_stats.created grew by %llu, the harness created %llu",
                    (unsigned long long)(os.created - base.obj.created),
                    (unsigned long long)made);
    unsigned long long queued = os.queued - base.obj.queued;
    unsigned long long merged = os.merged - base.obj.merged;
    unsigned long long mfo = os.merged_for_others - base.obj.merged_for_others;
    if (queued == 0 || merged == 0 || mfo == 0)
        stress_fail("ftm_object_stats: queued %llu, merged %llu, merged for others %llu: "
                    "every one should have happened",
                    queued, merged, mfo);
    obj_leak_check(&base, 0, 0, OBJ_SLICE_SLACK, "at the end");

    stress_note("OK: %d waves x %d owners, %d workers: %llu objects (%llu holder pairs), "
                "%llu references handed out, %llu forwarded, %llu incref/decref pairs; "
                "%llu queued, %llu merged (%llu for others); %d detach episodes of %d "
                "objects, %llu freed while their owner was detached; %.2f s",
                waves, nowners, nworkers, (unsigned long long)made,
                atomic_load(&n_holders), atomic_load(&n_handed), atomic_load(&n_forward),
                atomic_load(&n_pairs), queued, merged, mfo, neps, ep_objs, fdet, t_run);
    for (int w = 0; w < nworkers; w++) {
        free(inboxes[w].items);
        pthread_mutex_destroy(&inboxes[w].lock);
        pthread_cond_destroy(&inboxes[w].cond);
    }
    free(inboxes);
    free(episodes);
    free(workers);
    free(prev);
    free(cur);
    free(obj_reg.state);
    return 0;
}
