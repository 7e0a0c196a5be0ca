/* obj_field_race.c — ftm_field slots loaded, stored and exchanged by many
 * threads at once.
 *
 * A shared array of containers ("boxes", each an object with four
 * ftm_field slots; the main thread holds them for the whole run) is
 * hammered by waves of threads (a wave starts before the previous one is
 * joined, so values outlive the threads that made them):
 *   - ftm_field_load: the loaded value (a new reference) is checked, kept a
 *     while in a small stash or dropped at once;
 *   - the documented optimistic read: inside ftm_read_begin/end,
 *     ftm_field_peek then ftm_try_incref (values made with
 *     ftm_enable_try_incref), the reference checked if it was taken;
 *   - ftm_field_store of a new value, of a stashed one or of NULL (the old
 *     value's reference dropped inside, maybe its last);
 *   - ftm_field_exchange (the old value's reference comes back to us and is
 *     checked), and moves of a value from one slot to another.
 * Values are chains: a new value may hold (ftm_field_init before it is
 * published, never changed after) a reference to a value taken from the
 * slots, so deaths cascade through clear.  Values have a per-thread free
 * list (FTM_TYPE_FREELIST): values that never reached a field are reused
 * at once, values that did go through epoch bags.
 * At the end the main thread drops the boxes (clearing every slot).
 *
 * Checks: every value a thread holds (loaded, exchanged out, try-increfed,
 * stashed, and the chain behind it up to 8 links) has its canary, tail and
 * registry entry ALIVE; every dealloc runs once; after the boxes are
 * dropped every object is FREED and ftm_object_stats created == freed, and
 * the leak check (obj_util.h).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "obj_util.h"

#define NSLOTS 4
#define STASH 16
#define CHAIN_CHECK 8

typedef struct val_s {
    ftm_object ob;
    obj_stamp_t st;
    ftm_field next;   /* set before publication, never changed, cleared at death */
    uint32_t depth;   /* links behind this one */
    uint32_t tryable; /* ftm_enable_try_incref was called */
    uint64_t tail;    /* ~canary */
} val_t;

typedef struct box_s {
    ftm_object ob;
    obj_stamp_t st;
    ftm_field slot[NSLOTS];
} box_t;

static stress_opts_t opt = { .name = "obj_field_race" };
static box_t **boxes;
static int nboxes, waves, ops_per_thread;
static _Atomic unsigned long long n_load, n_load_hit, n_try, n_try_hit, n_store, n_xchg,
    n_move, n_drop, n_new;

static int val_traverse(ftm_object *self, ftm_visitproc visit, void *arg)
{
    ftm_object *n = ftm_field_peek(&((val_t *)self)->next);
    return n ? visit(n, arg) : 0;
}
static void val_clear(ftm_object *self)
{
    ftm_field_clear(&((val_t *)self)->next);
}
static void val_dealloc(ftm_object *self)
{
    val_t *v = (val_t *)self;
    if (v->tail != ~v->st.canary)
        stress_fail("value dealloc: object %llu: tail %016llx, canary %016llx",
                    (unsigned long long)v->st.id, (unsigned long long)v->tail,
                    (unsigned long long)v->st.canary);
    obj_stamp_kill(&v->st, "value dealloc");
    v->tail = 0;
}

static ftm_type val_type = {
    .name = "value",
    .basic_size = sizeof(val_t),
    .flags = FTM_TYPE_FREELIST,
    .traverse = val_traverse,
    .clear = val_clear,
    .dealloc = val_dealloc,
};

static int box_traverse(ftm_object *self, ftm_visitproc visit, void *arg)
{
    box_t *b = (box_t *)self;
    for (int i = 0; i < NSLOTS; i++) {
        ftm_object *o = ftm_field_peek(&b->slot[i]);
        int r = o ? visit(o, arg) : 0;
        if (r)
            return r;
    }
    return 0;
}
static void box_clear(ftm_object *self)
{
    box_t *b = (box_t *)self;
    for (int i = 0; i < NSLOTS; i++)
        ftm_field_clear(&b->slot[i]);
}
static void box_dealloc(ftm_object *self)
{
    obj_stamp_kill(&((box_t *)self)->st, "box dealloc");
}

static ftm_type box_type = {
    .name = "box",
    .basic_size = sizeof(box_t),
    .flags = FTM_TYPE_GC,
    .traverse = box_traverse,
    .clear = box_clear,
    .dealloc = box_dealloc,
};

/* A value we hold a reference to: it and the chain behind it are alive. */
static void val_check(ftm_object *p, const char *what)
{
    for (int k = 0; p != NULL && k < CHAIN_CHECK; k++) {
        if (ftm_type_of(p) != &val_type)
            stress_fail("%s: object %p (link %d) has type %p, not the value type", what,
                        (void *)p, k, (const void *)ftm_type_of(p));
        val_t *v = (val_t *)p;
        obj_stamp_check(&v->st, what);
        if (v->tail != ~v->st.canary)
            stress_fail("%s: value %llu (link %d): tail %016llx, expected %016llx", what,
                        (unsigned long long)v->st.id, k, (unsigned long long)v->tail,
                        (unsigned long long)~v->st.canary);
        /* next never changes while v lives, and v's reference keeps it */
        ftm_object *n = ftm_field_peek(&v->next);
        uint32_t want = n ? ((val_t *)n)->depth + 1 : 0;
        if (v->depth != want)
            stress_fail("%s: value %llu has depth %u, its next says %u", what,
                        (unsigned long long)v->st.id, v->depth, want);
        p = n;
    }
}

static val_t *val_new(stress_rng_t *r, ftm_object *next)
{
    val_t *v = (val_t *)ftm_new(&val_type);
    if (v == NULL)
        stress_fail("ftm_new(value) failed");
    obj_stamp_init(&v->st);
    v->tail = ~v->st.canary;
    if (next != NULL) { /* steals our reference to next */
        v->depth = ((val_t *)next)->depth + 1;
        ftm_field_init(&v->next, next);
    }
    if (stress_one_in(r, 2)) {
        ftm_enable_try_incref(&v->ob);
        v->tryable = 1;
    }
    return v;
}

static ftm_field *random_slot(stress_rng_t *r)
{
    box_t *b = boxes[stress_below(r, (uint64_t)nboxes)];
    return &b->slot[stress_below(r, NSLOTS)];
}

static void *worker_main(void *arg)
{
    uint64_t serial = (uint64_t)(intptr_t)arg;
    stress_rng_t r = stress_rng(opt.seed, 100 + serial);
    ftm_object *stash[STASH];
    int nstash = 0;
    unsigned long long loads = 0, hits = 0, tries = 0, thits = 0, stores = 0, xchgs = 0,
                       moves = 0, drops = 0, made = 0;
    for (int op = 0; op < ops_per_thread; op++) {
        unsigned what = (unsigned)stress_below(&r, 100);
        if (what < 30) {
            loads++;
            ftm_object *v = ftm_field_load(random_slot(&r));
            if (v != NULL) {
                hits++;
                val_check(v, "ftm_field_load");
                if (nstash < STASH && stress_one_in(&r, 3))
                    stash[nstash++] = v;
                else
                    ftm_decref(v);
            }
        } else if (what < 40) {
            tries++;
            ftm_field *s = random_slot(&r);
            ftm_object *got = NULL;
            ftm_read_begin();
            ftm_object *p = ftm_field_peek(s);
            /* p's memory stays valid inside the section even if it dies;
             * tryable is written before publication and never after */
            if (p != NULL && ((val_t *)p)->tryable && ftm_try_incref(p))
                got = p;
            ftm_read_end();
            if (got != NULL) {
                thits++;
                val_check(got, "ftm_try_incref after ftm_field_peek");
                ftm_decref(got);
            }
        } else if (what < 60) {
            stores++;
            ftm_object *v;
            unsigned how = (unsigned)stress_below(&r, 8);
            if (how == 0) {
                v = NULL;
            } else if (how == 1 && nstash > 0) {
                v = stash[--nstash]; /* our reference goes into the slot */
            } else {
                ftm_object *next = NULL;
                if (stress_one_in(&r, 3))
                    next = ftm_field_load(random_slot(&r));
                if (next != NULL && ((val_t *)next)->depth > 64) { /* keep chains short-ish */
                    ftm_decref(next);
                    next = NULL;
                }
                v = &val_new(&r, next)->ob;
                made++;
            }
            ftm_field_store(random_slot(&r), v);
        } else if (what < 75) {
            xchgs++;
            ftm_object *v = NULL;
            if (stress_one_in(&r, 2)) {
                v = &val_new(&r, NULL)->ob;
                made++;
            }
            ftm_object *old = ftm_field_exchange(random_slot(&r), v);
            if (old != NULL) {
                val_check(old, "ftm_field_exchange (old value)");
                if (nstash < STASH && stress_one_in(&r, 2))
                    stash[nstash++] = old;
                else
                    ftm_decref(old);
            }
        } else if (what < 85) {
            moves++;
            ftm_object *v = ftm_field_exchange(random_slot(&r), NULL);
            if (v != NULL)
                val_check(v, "move (taken out)");
            ftm_object *old = ftm_field_exchange(random_slot(&r), v);
            if (old != NULL) {
                val_check(old, "move (displaced)");
                ftm_decref(old);
            }
        } else if (what < 92) {
            drops++;
            ftm_field_store(random_slot(&r), NULL);
        } else if (what < 98) {
            if (nstash > 0) {
                int k = (int)stress_below(&r, (uint64_t)nstash);
                ftm_object *v = stash[k];
                val_check(v, "stash");
                ftm_incref(v);
                ftm_decref(v);
                stash[k] = stash[--nstash];
                ftm_decref(v);
            }
        } else if (stress_one_in(&r, 4)) {
            /* a blocking call: detached, holding references */
            ftm_thread_detach();
            struct timespec ts = { 0, 100000 };
            nanosleep(&ts, NULL);
            ftm_thread_attach();
        } else {
            ftm_safepoint();
        }
    }
    /* the stash outlives us: into the slots (or dropped) */
    for (int k = 0; k < nstash; k++) {
        val_check(stash[k], "stash at exit");
        if (k % 2)
            ftm_field_store(random_slot(&r), stash[k]);
        else
            ftm_decref(stash[k]);
    }
    atomic_fetch_add_explicit(&n_load, loads, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_load_hit, hits, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_try, tries, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_try_hit, thits, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_store, stores, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_xchg, xchgs, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_move, moves, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_drop, drops, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_new, made, memory_order_relaxed);
    return NULL;
}

int main(int argc, char **argv)
{
    stress_parse(&opt, argc, argv, 6, NULL);
    waves = opt.smoke ? 6 : 40;
    ops_per_thread = opt.smoke ? 12000 : 220000;
    nboxes = opt.smoke ? 32 : 128;
    /* ids: at most one new value per op, plus the boxes and the warm-up */
    obj_registry_init(opt.seed, (uint64_t)waves * (uint64_t)opt.threads *
                                        (uint64_t)ops_per_thread + (uint64_t)nboxes + 16);
    boxes = calloc((size_t)nboxes, sizeof *boxes);
    pthread_t *prev = calloc((size_t)opt.threads, sizeof *prev);
    pthread_t *cur = calloc((size_t)opt.threads, sizeof *cur);
    if (!boxes || !prev || !cur)
        stress_fail("out of memory for the harness");

    /* warm up the main thread's object state (a value on its free list,
     * epoch record, bag), then the baseline */
    {
        stress_rng_t r0 = stress_rng(opt.seed, 1);
        ftm_object *w = &val_new(&r0, NULL)->ob;
        ftm_field tmp;
        atomic_init(&tmp, NULL);
        ftm_field_store(&tmp, w);
        ftm_decref(ftm_field_load(&tmp));
        ftm_field_clear(&tmp);
        ftm_decref(&val_new(&r0, NULL)->ob);
    }
    obj_base_t base;
    obj_baseline(&base);

    for (int i = 0; i < nboxes; i++) {
        box_t *b = (box_t *)ftm_new(&box_type);
        if (b == NULL)
            stress_fail("ftm_new(box) failed");
        obj_stamp_init(&b->st);
        boxes[i] = b; /* main's reference, for the whole run */
    }
    double t0 = stress_now();
    ftm_thread_detach(); /* main blocks in joins */
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

    /* every slot still holds a live value or NULL */
    unsigned long long left = 0;
    for (int i = 0; i < nboxes; i++) {
        obj_stamp_check(&boxes[i]->st, "box at the end");
        for (int k = 0; k < NSLOTS; k++) {
            ftm_object *v = ftm_field_peek(&boxes[i]->slot[k]);
            if (v != NULL) {
                val_check(v, "slot at the end");
                left++;
            }
        }
    }
    for (int i = 0; i < nboxes; i++)
        ftm_decref(&boxes[i]->ob); /* clears the slots: the chains die */
    ftm_thread_flush();
    obj_registry_expect_all_freed(0, "after the boxes were dropped");
    obj_leak_check(&base, 0, 0, OBJ_SLICE_SLACK, "at the end");

    stress_note("OK: %d waves x %d threads, %d boxes x %d slots: %llu values made; %llu "
                "loads (%llu hits), %llu peek+try_incref (%llu taken), %llu stores, %llu "
                "exchanges, %llu moves, %llu drops; %llu values in slots at the end; %.2f s",
                waves, opt.threads, nboxes, NSLOTS, atomic_load(&n_new), atomic_load(&n_load),
                atomic_load(&n_load_hit), atomic_load(&n_try), atomic_load(&n_try_hit),
                atomic_load(&n_store), atomic_load(&n_xchg), atomic_load(&n_move),
                atomic_load(&n_drop), left, t_run);
    free(boxes);
    free(prev);
    free(cur);
    free(obj_reg.state);
    return 0;
}
