/* test_field.c — reference fields: ftm_field_init/store/exchange/load/clear
 * and peek, their reference counts, and ftm_field_load racing stores on
 * other threads (every loaded object intact while held; every object
 * freed exactly once by the end). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "ftm_test.h"
#include <ftmem.h>

TestSuite(field, .timeout = 120);

#define CANARY 0xF1E1DCA7A11CE5EDull
#define DEAD 0xDEADBEEFDEADBEEFull

typedef struct {
    ftm_object ob;
    _Atomic uint64_t canary;
    uint32_t id;
    uint32_t id_check; /* ~id */
    ftm_field child;
} fobj;

enum { MAXID = 200000 };
static atomic_uchar deaths[MAXID];
static atomic_long n_dead, n_bad_death;
static atomic_uint next_id;

static void f_clear(ftm_object *self) { ftm_field_clear(&((fobj *)self)->child); }
static void f_dealloc(ftm_object *self)
{
    fobj *o = (fobj *)self;
    if (atomic_exchange(&o->canary, DEAD) != CANARY || o->id_check != ~o->id)
        atomic_fetch_add(&n_bad_death, 1);
    if (o->id < MAXID)
        atomic_fetch_add(&deaths[o->id], 1);
    atomic_fetch_add(&n_dead, 1);
}
static ftm_type f_type = {.name = "fobj", .basic_size = sizeof(fobj), .clear = f_clear, .dealloc = f_dealloc};

static fobj *new_f(void)
{
    fobj *o = (fobj *)ftm_new(&f_type);
    if (o == NULL)
        return NULL;
    o->id = atomic_fetch_add(&next_id, 1);
    o->id_check = ~o->id;
    atomic_store(&o->canary, CANARY);
    return o;
}

/* o is the live object with this id */
static bool intact(const fobj *o, uint32_t id)
{
    return atomic_load(&((fobj *)o)->canary) == CANARY && o->id == id && o->id_check == ~id &&
           ftm_type_of(&o->ob) == &f_type && atomic_load(&deaths[id]) == 0;
}

static void expect_all_dead_once(void)
{
    uint32_t n = atomic_load(&next_id);
    size_t zero = 0, many = 0;
    uint32_t first = UINT32_MAX;
    for (uint32_t i = 0; i < n; i++) {
        unsigned d = atomic_load(&deaths[i]);
        if (d != 1 && first == UINT32_MAX)
            first = i;
        zero += d == 0;
        many += d > 1;
    }
    cr_assert(zero == 0 && many == 0, "of %u objects: %zu never freed, %zu freed more than once (first #%u)", n, zero,
              many, first);
    cr_assert_eq(atomic_load(&n_dead), (long)n);
    cr_assert_eq(atomic_load(&n_bad_death), 0, "%ld objects corrupted at death", atomic_load(&n_bad_death));
}

/* ---- semantics ----------------------------------------------------------- */

Test(field, init_load_store_exchange_clear)
{
    static ftm_field slot;
    cr_assert_null(ftm_field_load(&slot));
    cr_assert_null(ftm_field_peek(&slot));
    ftm_field_clear(&slot); /* of an empty field: nothing */

    fobj *a = new_f();
    ftm_field_init(&slot, &a->ob); /* steals */
    cr_assert_eq(ftm_refcount(&a->ob), 1, "field_init took a reference of its own");
    cr_assert_eq(ftm_field_peek(&slot), &a->ob);
    cr_assert_eq(ftm_refcount(&a->ob), 1, "peek took a reference");
    ftm_object *r = ftm_field_load(&slot);
    cr_assert_eq(r, &a->ob);
    cr_assert_eq(ftm_refcount(&a->ob), 2, "field_load did not return a new reference");
    ftm_decref(r);
    cr_assert_eq(ftm_refcount(&a->ob), 1);

    fobj *b = new_f();
    uint32_t a_id = a->id; /* a dies in the store */
    ftm_field_store(&slot, &b->ob); /* a's reference released */
    cr_assert_eq(atomic_load(&deaths[a_id]), 1, "the replaced object was not released");
    cr_assert_eq(ftm_field_peek(&slot), &b->ob);
    cr_assert_eq(ftm_refcount(&b->ob), 1);

    fobj *c = new_f();
    ftm_object *old = ftm_field_exchange(&slot, &c->ob);
    cr_assert_eq(old, &b->ob);
    cr_assert_eq(ftm_refcount(&b->ob), 1, "exchange must hand the old reference over, not drop it");
    cr_assert_eq(atomic_load(&n_dead), 1);
    ftm_decref(old);
    cr_assert_eq(atomic_load(&deaths[b->id]), 1);

    /* storing the object the field already holds (with a new reference) */
    ftm_field_store(&slot, ftm_newref(&c->ob));
    cr_assert_eq(ftm_refcount(&c->ob), 1, "re-storing the same object changed its count");
    cr_assert_eq(atomic_load(&deaths[c->id]), 0);

    ftm_field_store(&slot, NULL);
    cr_assert_null(ftm_field_peek(&slot));
    cr_assert_eq(atomic_load(&deaths[c->id]), 1);
    cr_assert_null(ftm_field_load(&slot));

    fobj *d = new_f();
    ftm_field_init(&slot, &d->ob);
    cr_assert_eq(ftm_field_exchange(&slot, NULL), &d->ob);
    cr_assert_null(ftm_field_peek(&slot));
    cr_assert_eq(atomic_load(&deaths[d->id]), 0);
    ftm_field_store(&slot, &d->ob);
    ftm_field_clear(&slot);
    cr_assert_null(ftm_field_peek(&slot));
    cr_assert_eq(atomic_load(&deaths[d->id]), 1, "field_clear did not release the object");
    expect_all_dead_once();
}

Test(field, clear_callback_releases_children)
{
    fobj *parent = new_f(), *child = new_f(), *grandchild = new_f();
    int parent_id = parent->id, child_id = child->id; /* both die below */
    ftm_field_init(&child->child, &grandchild->ob);
    ftm_field_init(&parent->child, ftm_newref(&child->ob));
    ftm_decref(&child->ob);
    cr_assert_eq(atomic_load(&n_dead), 0);
    ftm_object *g = ftm_field_load(&child->child); /* keep the grandchild */
    ftm_decref(&parent->ob);
    cr_assert_eq(atomic_load(&deaths[parent_id]), 1);
    cr_assert_eq(atomic_load(&deaths[child_id]), 1);
    cr_assert_eq(atomic_load(&deaths[grandchild->id]), 0, "a child still referenced was freed");
    cr_assert(intact((fobj *)g, grandchild->id));
    ftm_decref(g);
    expect_all_dead_once();
}

/* immortal and deferred objects in fields */
Test(field, immortal_and_deferred_values)
{
    static ftm_field s1, s2;
    fobj *imm = new_f();
    cr_assert_eq(ftm_make_immortal(&imm->ob), 0);
    ftm_field_init(&s1, &imm->ob);
    for (int i = 0; i < 10; i++) {
        ftm_object *r = ftm_field_load(&s1);
        cr_assert_eq(r, &imm->ob);
        ftm_decref(r);
    }
    ftm_field_clear(&s1);
    cr_assert(ftm_is_immortal(&imm->ob));
    cr_assert_eq(atomic_load(&n_dead), 0);

    fobj *def = new_f();
    cr_assert_eq(ftm_set_deferred(&def->ob), 0);
    ftm_field_init(&s2, ftm_newref(&def->ob));
    ftm_thread_flush();
    ssize_t base = ftm_refcount(&def->ob);
    ftm_object *held[10];
    for (int i = 0; i < 10; i++)
        held[i] = ftm_field_load(&s2);
    ftm_thread_flush();
    cr_assert_eq(ftm_refcount(&def->ob), base + 10, "loads of a deferred object not counted: %zd, base %zd",
                 ftm_refcount(&def->ob), base);
    for (int i = 0; i < 10; i++)
        ftm_decref(held[i]);
    ftm_field_clear(&s2);
    ftm_decref(&def->ob);
    cr_assert_eq(atomic_load(&n_dead), 0);
    cr_assert_eq(ftm_clear_deferred(&def->ob), 0);
    cr_assert_eq(atomic_load(&deaths[def->id]), 1, "deferred object not freed after clear and last decref");
}

/* A reference loaded on another thread outlives the field's. */
static ftm_field xslot;
static _Atomic(ftm_object *) xloaded;
static atomic_int xphase;
static void *x_loader(void *arg)
{
    ftm_object *r = ftm_field_load(&xslot);
    atomic_store(&xloaded, r);
    atomic_store(&xphase, 1);
    while (atomic_load(&xphase) != 2)
        sched_yield();
    atomic_store(&xphase, intact((fobj *)r, ((fobj *)r)->id) ? 3 : 4);
    ftm_decref(r); /* the last reference */
    return NULL;
}

Test(field, loaded_reference_outlives_field_on_other_thread)
{
    fobj *a = new_f();
    int a_id = a->id; /* a dies while the other thread holds it */
    ftm_field_init(&xslot, &a->ob);
    pthread_t t;
    pthread_create(&t, NULL, x_loader, NULL);
    while (atomic_load(&xphase) != 1)
        sched_yield();
    cr_assert_eq(atomic_load(&xloaded), &a->ob);
    cr_assert_eq(ftm_refcount(&a->ob), 2);
    ftm_field_clear(&xslot);
    cr_assert_eq(atomic_load(&deaths[a_id]), 0, "freed while another thread holds a loaded reference");
    atomic_store(&xphase, 2);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&xphase), 3, "the loaded object was damaged while held");
    cr_assert_eq(atomic_load(&deaths[a_id]), 1);
}

/* ---- read sections and ftm_free_deferred --------------------------------- */

static unsigned char *_Atomic fd_block;
static atomic_int fd_phase, fd_intact;
static void *fd_reader(void *arg)
{
    ftm_read_begin();
    ftm_read_begin(); /* nested */
    unsigned char *p = atomic_load(&fd_block);
    atomic_store(&fd_phase, 1);
    while (atomic_load(&fd_phase) != 2)
        sched_yield();
    ftm_read_end();
    /* still inside the outer section */
    atomic_store(&fd_intact, ftt_check(p, 4096, 77) == SIZE_MAX);
    ftm_read_end();
    return NULL;
}

Test(field, free_deferred_waits_for_read_sections)
{
    ftm_free_deferred(NULL);
    unsigned char *p = ftm_malloc(4096);
    ftt_fill(p, 4096, 77);
    atomic_store(&fd_block, p);
    pthread_t r;
    pthread_create(&r, NULL, fd_reader, NULL);
    while (atomic_load(&fd_phase) != 1)
        sched_yield();
    ftm_object_stats_t a, b, c;
    ftm_object_stats_get(&a);
    ftm_free_deferred(p);
    ftm_object_stats_get(&b);
    cr_assert_eq(b.deferred_pending - a.deferred_pending, 1);
    /* churn the allocator and the epoch bags: p must not come back */
    bool reused = false;
    for (int i = 0; i < 3000; i++) {
        void *q = ftm_malloc(4096);
        if (q == p)
            reused = true;
        if (i % 2)
            ftm_free(q);
        else
            ftm_free_deferred(q);
    }
    atomic_store(&fd_phase, 2);
    pthread_join(r, NULL);
    cr_assert(!reused, "a block given to ftm_free_deferred was reused during a read section");
    cr_assert(atomic_load(&fd_intact), "the block changed while a read section that could see it was open");
    ftm_thread_flush();
    ftm_object_stats_get(&c);
    cr_assert_eq(c.deferred_pending, 0, "%llu blocks still pending after ftm_thread_flush",
                 (unsigned long long)c.deferred_pending);
    cr_assert_geq(c.deferred_frees - a.deferred_frees, 1 + 1500);
}

/* An object that dies while another thread is in a (nested) section stays
 * readable there until the outer section ends. */
static ftm_field ns_slot;
static atomic_int ns_phase, ns_ok;
static void *ns_reader(void *arg)
{
    ftm_read_begin();
    fobj *o = (fobj *)ftm_field_peek(&ns_slot);
    ftm_read_begin();
    ftm_read_end();
    atomic_store(&ns_phase, 1);
    while (atomic_load(&ns_phase) != 2)
        sched_yield();
    /* dead now (dealloc ran, canary DEAD), but not reused */
    atomic_store(&ns_ok, atomic_load(&o->canary) == DEAD && o->id_check == ~o->id && ftm_type_of(&o->ob) == &f_type);
    ftm_read_end();
    return NULL;
}

Test(field, dead_object_readable_until_section_ends)
{
    fobj *o = new_f();
    ftm_field_init(&ns_slot, &o->ob);
    pthread_t r;
    pthread_create(&r, NULL, ns_reader, NULL);
    while (atomic_load(&ns_phase) != 1)
        sched_yield();
    ftm_field_clear(&ns_slot);
    cr_assert_eq(atomic_load(&deaths[o->id]), 1);
    for (int i = 0; i < 2000; i++) { /* fill and seal several bags */
        fobj *x = new_f();
        ftm_field_init(&ns_slot, &x->ob);
        ftm_field_clear(&ns_slot);
    }
    atomic_store(&ns_phase, 2);
    pthread_join(r, NULL);
    cr_assert(atomic_load(&ns_ok), "a dead object's memory was reused while a read section could see it");
}

/* ---- loads racing stores ---------------------------------------------------- */

enum { SLOTS = 16, WRITERS = 3, READERS = 5, WRITES = 25000, HOLD = 8 };
static ftm_field slots[SLOTS];
static atomic_int writers_done;
static atomic_long race_bad, race_loads, race_nulls;

static void *writer(void *arg)
{
    uint64_t rng = 1234 + (uintptr_t)arg;
    for (int i = 0; i < WRITES; i++) {
        fobj *o = new_f();
        if (o == NULL)
            abort();
        unsigned s = (unsigned)(ftt_rand(&rng) % SLOTS);
        switch (ftt_rand(&rng) % 4) {
        case 0: { /* exchange, hold the old one a moment, drop it */
            ftm_object *old = ftm_field_exchange(&slots[s], &o->ob);
            if (old != NULL) {
                if (!intact((fobj *)old, ((fobj *)old)->id))
                    atomic_fetch_add(&race_bad, 1);
                ftm_decref(old);
            }
            break;
        }
        case 1: /* a child chain: the stored object holds another in a field */
            ftm_field_init(&o->child, &new_f()->ob);
            ftm_field_store(&slots[s], &o->ob);
            break;
        default:
            ftm_field_store(&slots[s], &o->ob);
        }
        if (i % 128 == 0)
            ftm_safepoint();
    }
    atomic_fetch_add(&writers_done, 1);
    return NULL;
}

static void *reader(void *arg)
{
    uint64_t rng = 999 + (uintptr_t)arg;
    struct {
        fobj *o;
        uint32_t id;
    } held[HOLD] = {0};
    long loads = 0;
    while (atomic_load(&writers_done) < WRITERS || loads < 20000) {
        unsigned s = (unsigned)(ftt_rand(&rng) % SLOTS);
        fobj *o = (fobj *)ftm_field_load(&slots[s]);
        loads++;
        if (o == NULL) {
            atomic_fetch_add(&race_nulls, 1);
            continue;
        }
        uint32_t id = o->id;
        if (!intact(o, id))
            atomic_fetch_add(&race_bad, 1);
        /* its child, if any, is alive too while we hold the parent */
        fobj *c = (fobj *)ftm_field_load(&o->child);
        if (c != NULL) {
            if (!intact(c, c->id))
                atomic_fetch_add(&race_bad, 1);
            ftm_decref(&c->ob);
        }
        unsigned h = (unsigned)(ftt_rand(&rng) % HOLD);
        if (held[h].o != NULL) {
            if (!intact(held[h].o, held[h].id))
                atomic_fetch_add(&race_bad, 1);
            /* sometimes move a held object into another slot (a store of an
             * object owned by another thread) */
            if (ftt_rand(&rng) % 8 == 0)
                ftm_field_store(&slots[(s + 1) % SLOTS], &held[h].o->ob);
            else
                ftm_decref(&held[h].o->ob);
        }
        held[h].o = o;
        held[h].id = id;
    }
    for (int h = 0; h < HOLD; h++)
        if (held[h].o != NULL) {
            if (!intact(held[h].o, held[h].id))
                atomic_fetch_add(&race_bad, 1);
            ftm_decref(&held[h].o->ob);
        }
    atomic_fetch_add(&race_loads, loads);
    return NULL;
}

Test(field, load_races_store)
{
    ftm_object_stats_t a, b;
    ftm_object_stats_get(&a);
    pthread_t w[WRITERS], r[READERS];
    for (uintptr_t i = 0; i < READERS; i++)
        cr_assert_eq(pthread_create(&r[i], NULL, reader, (void *)i), 0);
    for (uintptr_t i = 0; i < WRITERS; i++)
        cr_assert_eq(pthread_create(&w[i], NULL, writer, (void *)i), 0);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(w[i], NULL);
    for (int i = 0; i < READERS; i++)
        pthread_join(r[i], NULL);
    cr_assert_eq(atomic_load(&race_bad), 0, "%ld damaged or dead objects seen while held (of %ld loads)",
                 atomic_load(&race_bad), atomic_load(&race_loads));
    for (int i = 0; i < SLOTS; i++)
        ftm_field_clear(&slots[i]);
    ftm_thread_flush();
    expect_all_dead_once();
    ftm_object_stats_get(&b);
    uint64_t made = atomic_load(&next_id);
    cr_assert_eq(b.created - a.created, made);
    cr_assert_eq(b.freed - a.freed, made);
    cr_assert_eq(b.deferred_pending, 0, "%llu blocks still waiting for a grace period after every thread flushed",
                 (unsigned long long)b.deferred_pending);
    cr_assert_geq(b.deferred_frees - a.deferred_frees, made, "field objects must go through a grace period");
}

/* Many threads hammer one slot: store-heavy, each store's victim is the
 * last reference most of the time, loads race every death. */
static ftm_field hot;
static void *hot_thread(void *arg)
{
    uint64_t rng = 55 + (uintptr_t)arg;
    for (int i = 0; i < 20000; i++) {
        if (ftt_rand(&rng) % 3 == 0) {
            ftm_field_store(&hot, &new_f()->ob);
        } else {
            fobj *o = (fobj *)ftm_field_load(&hot);
            if (o != NULL) {
                if (!intact(o, o->id))
                    atomic_fetch_add(&race_bad, 1);
                ftm_decref(&o->ob);
            }
        }
    }
    return NULL;
}

Test(field, one_hot_slot_many_threads)
{
    enum { T = 8 };
    pthread_t t[T];
    for (uintptr_t i = 0; i < T; i++)
        pthread_create(&t[i], NULL, hot_thread, (void *)i);
    for (int i = 0; i < T; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(atomic_load(&race_bad), 0, "%ld damaged objects loaded", atomic_load(&race_bad));
    ftm_field_clear(&hot);
    ftm_thread_flush();
    expect_all_dead_once();
}
