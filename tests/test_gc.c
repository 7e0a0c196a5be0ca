/* test_gc.c — the cycle collector (include/ftmem/gc.h) through the public
 * API, after CPython's Lib/test/test_gc.py: self-references, containers
 * (our own and the example runtime's list, dict and tuple), a 10000-long
 * ring, external references, finalizers (once, resurrection, a collection
 * asked from inside one), weak reference callbacks (garbage referents,
 * garbage weak references), referents and referrers, freeze, thresholds,
 * enable/disable, counts, generations, callbacks, get_objects, SAVEALL,
 * track/untrack, the handshake timeout, mutator threads racing collections
 * (moving references, ftm_weakref_get), and misuse that aborts (a detached thread; in FTMEM_DEBUG builds, with
 * FTMEM_TEST_GC_DEBUG=1, bad traverse and clear functions).
 *
 * Criterion runs each test in its own process, so the collector's global
 * state (thresholds, debug flags, callbacks, freeze) starts fresh in each. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>

#include "ftm_test.h"
#include <ftmem.h>
#include <rt.h>

/* One timeout for the suite: a per-test .timeout makes Criterion's runner
 * leak 48 bytes when other tests finish meanwhile, which LeakSanitizer
 * reports (and ctest then fails the test) in address-sanitizer builds. */
TestSuite(gc, .timeout = 120);

/* ---- test types ------------------------------------------------------------- */

#define ALIVE 0xA11CEA11CEA11CE5ull
#define DEAD 0xDEADDEADDEADDEADull

/* node: three fields, a canary and an id.  gc_node (tracked), gc_fnode
 * (tracked, with a finalizer) and gc_plain (not tracked, no fields used). */
typedef struct {
    ftm_object ob;
    _Atomic uint64_t canary;
    uint32_t id;
    atomic_int fin_runs;
    bool slow; /* threads test: traverse takes traverse_delay spins */
    ftm_field next;
    ftm_field other;
    ftm_field anchor; /* threads test: set at creation, NULL only after clear */
} node;

/* Every object of our types: created and deallocated. */
static atomic_long n_created, n_dealloc;
static atomic_long n_bad_dealloc;   /* a dealloc of an object that was not alive */
static atomic_long n_finalized, n_bad_finalize;
static atomic_long fin_not_finalized; /* ftm_gc_is_finalized false inside the finalizer */
static atomic_int fin_check_neighbour;
static atomic_long fin_broken_neighbour; /* a finalizer saw its `next` cleared or dead */

/* resurrection: the finalizer of the node with this id stores a new
 * reference to itself here */
static atomic_int fin_resurrect_id = -1;
static ftm_object *_Atomic fin_resurrected;
/* a collection asked for from inside a finalizer */
static atomic_int fin_collect;
static atomic_int fin_collect_calls;
static _Atomic long fin_collect_result = LONG_MIN;

static long live(void) { return atomic_load(&n_created) - atomic_load(&n_dealloc); }

static int visit_field(ftm_field *f, ftm_visitproc visit, void *arg)
{
    ftm_object *o = ftm_field_peek(f);
    return o != NULL ? visit(o, arg) : 0;
}

/* The threads test slows the traverse of the nodes its threads hold so
 * that they act while a collection is in the middle of a phase. */
static atomic_int traverse_delay;

static int node_traverse(ftm_object *self, ftm_visitproc visit, void *arg)
{
    node *n = (node *)self;
    if (n->slow)
        for (int i = atomic_load_explicit(&traverse_delay, memory_order_relaxed); i > 0; i--)
            __asm__ volatile("" ::: "memory");
    int r = visit_field(&n->next, visit, arg);
    if (r == 0)
        r = visit_field(&n->other, visit, arg);
    return r != 0 ? r : visit_field(&n->anchor, visit, arg);
}

static void node_clear(ftm_object *self)
{
    node *n = (node *)self;
    ftm_field_clear(&n->next);
    ftm_field_clear(&n->other);
    ftm_field_clear(&n->anchor);
}

static void node_dealloc(ftm_object *self)
{
    node *n = (node *)self;
    if (atomic_exchange(&n->canary, DEAD) != ALIVE)
        atomic_fetch_add(&n_bad_dealloc, 1);
    atomic_fetch_add(&n_dealloc, 1);
}

static void node_finalize(ftm_object *self)
{
    node *n = (node *)self;
    atomic_fetch_add(&n_finalized, 1);
    if (atomic_fetch_add(&n->fin_runs, 1) != 0 || atomic_load(&n->canary) != ALIVE)
        atomic_fetch_add(&n_bad_finalize, 1);
    if (!ftm_gc_is_finalized(self))
        atomic_fetch_add(&fin_not_finalized, 1);
    if (atomic_load(&fin_check_neighbour)) {
        /* PEP 442: every finalizer of the garbage runs before any clear */
        node *nx = (node *)ftm_field_peek(&n->next);
        if (nx == NULL || atomic_load(&nx->canary) != ALIVE)
            atomic_fetch_add(&fin_broken_neighbour, 1);
    }
    if ((int)n->id == atomic_load(&fin_resurrect_id))
        atomic_store(&fin_resurrected, ftm_newref(self));
    if (atomic_load(&fin_collect)) {
        atomic_fetch_add(&fin_collect_calls, 1);
        atomic_store(&fin_collect_result, (long)ftm_gc_collect(2));
    }
}

static ftm_type node_type = {.name = "gc_node", .basic_size = sizeof(node), .flags = FTM_TYPE_GC,
                             .traverse = node_traverse, .clear = node_clear, .dealloc = node_dealloc};
static ftm_type fnode_type = {.name = "gc_fnode", .basic_size = sizeof(node), .flags = FTM_TYPE_GC,
                              .traverse = node_traverse, .clear = node_clear, .finalize = node_finalize,
                              .dealloc = node_dealloc};
static ftm_type plain_type = {.name = "gc_plain", .basic_size = sizeof(node), .dealloc = node_dealloc};

/* No Criterion asserts: also used on worker threads. */
static node *make_node(ftm_type *t, uint32_t id)
{
    node *n = (node *)ftm_new(t);
    if (n == NULL)
        return NULL;
    n->id = id;
    atomic_store(&n->canary, ALIVE);
    atomic_fetch_add(&n_created, 1);
    return n;
}

static node *new_node(ftm_type *t, uint32_t id)
{
    node *n = make_node(t, id);
    cr_assert_not_null(n, "ftm_new(%s) failed", t->name);
    return n;
}

static bool intact(node *n) { return atomic_load(&n->canary) == ALIVE; }

/* a -> b through a's `next` (a new reference to b) */
static void link_next(node *a, node *b) { ftm_field_store(&a->next, ftm_newref(&b->ob)); }

/* A self-referencing node, returned with the caller's reference. */
static node *new_self_cycle(ftm_type *t, uint32_t id)
{
    node *n = new_node(t, id);
    link_next(n, n);
    return n;
}

/* A ring of len nodes linked by `next`; returns the first with the caller's
 * reference (every other node is held only by its predecessor). */
static node *new_ring(ftm_type *t, size_t len, uint32_t first_id)
{
    node *first = new_node(t, first_id), *prev = first;
    for (size_t i = 1; i < len; i++) {
        node *n = new_node(t, first_id + (uint32_t)i);
        ftm_field_init(&prev->next, &n->ob); /* steals the reference */
        prev = n;
    }
    link_next(prev, first);
    return first;
}

/* bag: a container of nslots fields (a variable-size object). */
typedef struct {
    ftm_varobject ob;
    _Atomic uint64_t canary;
    ftm_field items[];
} bag;

static int bag_traverse(ftm_object *self, ftm_visitproc visit, void *arg)
{
    bag *b = (bag *)self;
    for (size_t i = 0; i < ftm_var_size(self); i++) {
        int r = visit_field(&b->items[i], visit, arg);
        if (r != 0)
            return r;
    }
    return 0;
}
static void bag_clear(ftm_object *self)
{
    bag *b = (bag *)self;
    for (size_t i = 0; i < ftm_var_size(self); i++)
        ftm_field_clear(&b->items[i]);
}
static void bag_dealloc(ftm_object *self)
{
    bag *b = (bag *)self;
    if (atomic_exchange(&b->canary, DEAD) != ALIVE)
        atomic_fetch_add(&n_bad_dealloc, 1);
    atomic_fetch_add(&n_dealloc, 1);
}
static ftm_type bag_type = {.name = "gc_bag", .basic_size = sizeof(bag), .item_size = sizeof(ftm_field),
                            .flags = FTM_TYPE_GC, .traverse = bag_traverse, .clear = bag_clear,
                            .dealloc = bag_dealloc};

static bag *new_bag(size_t nslots)
{
    bag *b = (bag *)ftm_new_var(&bag_type, nslots);
    cr_assert_not_null(b);
    atomic_store(&b->canary, ALIVE);
    atomic_fetch_add(&n_created, 1);
    return b;
}

/* ---- helpers -------------------------------------------------------------------- */

/* The objects of gen (see ftm_gc_get_objects) in a malloc'd array of new
 * references; *n gets their number.  Free with drop_all. */
typedef size_t (*lister)(void *what, ftm_object **out, size_t cap);
static size_t list_objects_fn(void *what, ftm_object **out, size_t cap)
{
    return ftm_gc_get_objects(*(int *)what, out, cap);
}
static size_t list_referrers_fn(void *what, ftm_object **out, size_t cap)
{
    return ftm_gc_get_referrers(what, out, cap);
}
static size_t list_referents_fn(void *what, ftm_object **out, size_t cap)
{
    return ftm_gc_get_referents(what, out, cap);
}
static size_t list_garbage_fn(void *what, ftm_object **out, size_t cap) { return ftm_gc_garbage(out, cap); }

static void drop_all(ftm_object **a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ftm_decref(a[i]);
    free(a);
}

static ftm_object **list_all(lister fn, void *what, size_t *n)
{
    size_t cap = 4;
    for (int tries = 0; tries < 8; tries++) {
        ftm_object **a = malloc(cap * sizeof *a);
        cr_assert_not_null(a);
        size_t got = fn(what, a, cap);
        if (got <= cap) {
            *n = got;
            return a;
        }
        drop_all(a, cap); /* only cap references were taken */
        cap = got + 16;
    }
    cr_assert_fail("the list kept growing");
    return NULL;
}

static ftm_object **objects_of(int gen, size_t *n) { return list_all(list_objects_fn, &gen, n); }

static size_t count_in(ftm_object **a, size_t n, const void *o)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += a[i] == o;
    return c;
}

/* How many times gen's objects (ftm_gc_get_objects) include o. */
static size_t in_gen(int gen, const void *o)
{
    size_t n;
    ftm_object **a = objects_of(gen, &n);
    size_t c = count_in(a, n, o);
    drop_all(a, n);
    return c;
}

static void get_stats(ftm_gc_gen_stats_t s[FTM_GC_GENERATIONS]) { ftm_gc_get_stats(s); }

/* ---- cycles of our types ------------------------------------------------------ */

Test(gc, self_cycle_collected)
{
    ftm_gc_gen_stats_t s0[3], s1[3];
    get_stats(s0);
    node *a = new_self_cycle(&node_type, 1);
    cr_assert(ftm_gc_is_tracked(&a->ob), "an object of an FTM_TYPE_GC type is not tracked");
    ftm_decref(&a->ob);
    cr_assert_eq(live(), 1, "reference counting alone freed a self-cycle");
    ssize_t r = ftm_gc_collect(2);
    cr_assert_eq(r, 1, "ftm_gc_collect returned %zd for one self-referencing object", r);
    cr_assert_eq(live(), 0, "the self-cycle's dealloc did not run");
    cr_assert_eq(atomic_load(&n_bad_dealloc), 0);
    get_stats(s1);
    cr_assert_eq(s1[2].collections, s0[2].collections + 1, "stats[2].collections %llu -> %llu",
                 (unsigned long long)s0[2].collections, (unsigned long long)s1[2].collections);
    cr_assert_eq(s1[2].collected, s0[2].collected + 1, "stats[2].collected %llu -> %llu",
                 (unsigned long long)s0[2].collected, (unsigned long long)s1[2].collected);
    cr_assert_geq(s1[2].candidates, s0[2].candidates + 1);
    cr_assert_eq(ftm_gc_collect(2), 0, "a second collection found garbage again");
}

/* Two nodes referencing each other, one of them also itself. */
Test(gc, two_cycle_collected)
{
    node *a = new_node(&node_type, 1), *b = new_node(&node_type, 2);
    link_next(a, b);
    link_next(b, a);
    ftm_field_store(&a->other, ftm_newref(&a->ob));
    ftm_decref(&a->ob);
    ftm_decref(&b->ob);
    cr_assert_eq(live(), 2);
    cr_assert_eq(ftm_gc_collect(2), 2);
    cr_assert_eq(live(), 0);
    cr_assert_eq(atomic_load(&n_bad_dealloc), 0);
}

/* Garbage that is not itself in a cycle but hangs off one (a plain object
 * and a tracked chain) dies with it, and is not counted as unreachable
 * unless tracked. */
Test(gc, objects_hanging_off_a_cycle_die_with_it)
{
    node *a = new_self_cycle(&node_type, 1);
    node *p = new_node(&plain_type, 2);  /* untracked: not counted */
    node *c = new_node(&node_type, 3);   /* tracked, unreachable: counted */
    ftm_field_store(&a->other, &c->ob);
    ftm_field_store(&c->other, &p->ob);
    ftm_decref(&a->ob);
    cr_assert_eq(live(), 3);
    ssize_t r = ftm_gc_collect(2);
    cr_assert_eq(r, 2, "collect returned %zd, want 2 (two tracked unreachable objects)", r);
    cr_assert_eq(live(), 0, "%ld objects left", live());
}

Test(gc, container_cycle_collected)
{
    /* bag[i] = node i, node i.next = bag: CPython's test_dict / test_list */
    enum { SLOTS = 16 };
    bag *b = new_bag(SLOTS);
    for (uint32_t i = 0; i < SLOTS; i++) {
        node *n = new_node(&node_type, i);
        ftm_field_store(&n->next, ftm_newref(&b->ob.ob_base));
        ftm_field_store(&b->items[i], &n->ob);
    }
    ftm_decref(&b->ob.ob_base);
    cr_assert_eq(live(), SLOTS + 1);
    ssize_t r = ftm_gc_collect(2);
    cr_assert_eq(r, SLOTS + 1, "collect returned %zd, want %d", r, SLOTS + 1);
    cr_assert_eq(live(), 0);
    cr_assert_eq(atomic_load(&n_bad_dealloc), 0);
}

/* Weak reference w to o, released after the check that it died. */
static void expect_dead(ftm_weakref *w, const char *what)
{
    ftm_object *g = ftm_weakref_get(w);
    if (g != NULL)
        ftm_decref(g);
    cr_assert_null(g, "%s survived the collection", what);
    ftm_weakref_release(w);
}

Test(gc, runtime_list_self_cycle)
{
    ftm_object *l = rt_list_new();
    cr_assert_not_null(l);
    cr_assert_eq(rt_list_append(l, l), 0);
    ftm_weakref *w = ftm_weakref_new(l, NULL, NULL);
    ftm_decref(l);
    ftm_object *g = ftm_weakref_get(w);
    cr_assert_eq(g, l, "a self-referencing list died by reference counting");
    ftm_decref(g);
    ssize_t r = ftm_gc_collect(2);
    cr_assert_eq(r, 1, "collect returned %zd for [l] with l in itself", r);
    expect_dead(w, "the list");
}

Test(gc, runtime_dict_cycle)
{
    ftm_object *d = rt_dict_new(), *k = rt_int_new(1), *k2 = rt_str_from_cstr("key");
    cr_assert_not_null(d);
    cr_assert_eq(rt_dict_set(d, k, d), 0); /* d[1] = d */
    ftm_object *l = rt_list_new();          /* d["key"] = l, l.append(d) */
    cr_assert_eq(rt_list_append(l, d), 0);
    cr_assert_eq(rt_dict_set(d, k2, l), 0);
    ftm_weakref *wd = ftm_weakref_new(d, NULL, NULL), *wl = ftm_weakref_new(l, NULL, NULL);
    ftm_decref(k);
    ftm_decref(k2);
    ftm_decref(l);
    ftm_decref(d);
    ssize_t r = ftm_gc_collect(2);
    cr_assert_eq(r, 2, "collect returned %zd for a dict and a list in a cycle", r);
    expect_dead(wd, "the dict");
    expect_dead(wl, "the list");
}

Test(gc, runtime_tuple_list_cycle)
{
    ftm_object *l = rt_list_new();
    ftm_object *t = rt_tuple_pack(1, l);
    cr_assert_not_null(t);
    cr_assert_eq(rt_list_append(l, t), 0);
    ftm_weakref *wt = ftm_weakref_new(t, NULL, NULL), *wl = ftm_weakref_new(l, NULL, NULL);
    ftm_decref(t);
    ftm_decref(l);
    ssize_t r = ftm_gc_collect(2);
    cr_assert_eq(r, 2, "collect returned %zd for (l,) with l = [t]", r);
    expect_dead(wt, "the tuple");
    expect_dead(wl, "the list");
}

/* ---- long cycles, external references ------------------------------------------ */

enum { RING = 10000 };

Test(gc, long_ring_collected)
{
    node *first = new_ring(&node_type, RING, 0);
    ftm_decref(&first->ob);
    cr_assert_eq(live(), RING);
    ssize_t r = ftm_gc_collect(2);
    cr_assert_eq(r, RING, "collect returned %zd for a ring of %d", r, RING);
    cr_assert_eq(live(), 0, "%ld of %d ring nodes left", live(), RING);
    cr_assert_eq(atomic_load(&n_bad_dealloc), 0);
}

/* A reference from outside to one member keeps the whole ring; dropped, the
 * ring is collected. */
Test(gc, externally_referenced_ring_survives)
{
    node *first = new_ring(&node_type, RING, 0);
    /* hold the node halfway round, not the head */
    node *mid = first;
    for (int i = 0; i < RING / 2; i++)
        mid = (node *)ftm_field_peek(&mid->next);
    ftm_incref(&mid->ob);
    ftm_decref(&first->ob);
    for (int round = 0; round < 3; round++) {
        ssize_t r = ftm_gc_collect(round == 0 ? 0 : 2);
        cr_assert_eq(r, 0, "collection %d found %zd unreachable objects in a held ring", round, r);
        cr_assert_eq(live(), RING, "the collector freed %ld nodes of a held ring", RING - live());
    }
    /* every node intact and the ring closed */
    node *n = mid;
    for (int i = 0; i < RING; i++) {
        cr_assert(intact(n), "node %u damaged", n->id);
        n = (node *)ftm_field_peek(&n->next);
        cr_assert_not_null(n, "the held ring was cleared at step %d", i);
    }
    cr_assert_eq(n, mid);
    ftm_decref(&mid->ob);
    cr_assert_eq(live(), RING);
    ssize_t r = ftm_gc_collect(2);
    cr_assert_eq(r, RING, "collect returned %zd once the reference was dropped", r);
    cr_assert_eq(live(), 0);
}

/* A tracked object referenced by an untracked container: the reference is
 * external to the collector, so its cycle lives. */
Test(gc, cycle_referenced_from_untracked_object_survives)
{
    node *a = new_self_cycle(&node_type, 1);
    bag *holder = new_bag(1);
    ftm_gc_untrack(&holder->ob.ob_base);
    ftm_field_store(&holder->items[0], &a->ob); /* steals our reference */
    cr_assert_eq(ftm_gc_collect(2), 0);
    cr_assert_eq(live(), 2);
    cr_assert(intact(a));
    cr_assert_eq(ftm_field_peek(&a->next), &a->ob, "a held object's field was cleared");
    ftm_field_clear(&holder->items[0]);
    ftm_decref(&holder->ob.ob_base);
    cr_assert_eq(live(), 1);
    cr_assert_eq(ftm_gc_collect(2), 1);
    cr_assert_eq(live(), 0);
}

/* ---- generations ---------------------------------------------------------------- */

Test(gc, collect_out_of_range_means_full)
{
    int gens[] = {-1, 3, 7, INT_MIN};
    for (int i = 0; i < 4; i++) {
        node *a = new_self_cycle(&node_type, (uint32_t)i);
        cr_assert_eq(ftm_gc_collect(1), 0); /* a survives into generation 2 */
        ftm_decref(&a->ob);
        cr_assert_eq(ftm_gc_collect(0), 0, "collect(0) examined generation 2");
        cr_assert_eq(ftm_gc_collect(1), 0, "collect(1) examined generation 2");
        cr_assert_eq(live(), 1);
        ssize_t r = ftm_gc_collect(gens[i]);
        cr_assert_eq(r, 1, "collect(%d) returned %zd, want a full collection (1)", gens[i], r);
        cr_assert_eq(live(), 0);
    }
}

Test(gc, get_objects_by_generation)
{
    node *a = new_node(&node_type, 1);
    node *p = new_node(&plain_type, 2);
    cr_assert_eq(in_gen(0, a), 1, "a new tracked object is not in generation 0");
    cr_assert_eq(in_gen(1, a), 0);
    cr_assert_eq(in_gen(2, a), 0);
    cr_assert_eq(in_gen(-1, a), 1, "get_objects(-1) misses a tracked object");
    cr_assert_eq(in_gen(-1, p), 0, "get_objects(-1) lists an object of a non-GC type");
    ssize_t refs = ftm_refcount(&a->ob);
    size_t n;
    ftm_object **all = objects_of(0, &n);
    cr_assert_eq(ftm_refcount(&a->ob), refs + 1, "get_objects did not return a new reference");
    drop_all(all, n);
    cr_assert_eq(ftm_refcount(&a->ob), refs);

    cr_assert_eq(ftm_gc_collect(0), 0);
    cr_assert_eq(in_gen(0, a), 0, "a survivor of collect(0) is still in generation 0");
    cr_assert_eq(in_gen(1, a), 1, "a survivor of collect(0) is not in generation 1");
    cr_assert_eq(in_gen(-1, a), 1);
    cr_assert_eq(ftm_gc_collect(1), 0);
    cr_assert_eq(in_gen(1, a), 0);
    cr_assert_eq(in_gen(2, a), 1, "a survivor of collect(1) is not in generation 2");
    cr_assert_eq(ftm_gc_collect(2), 0);
    cr_assert_eq(in_gen(2, a), 1, "a survivor of collect(2) left generation 2");

    /* a fresh one joins generation 0 beside the old one */
    node *b = new_node(&node_type, 3);
    cr_assert_eq(in_gen(0, b), 1);
    cr_assert_eq(in_gen(0, a), 0);
    ftm_decref(&b->ob);
    cr_assert_eq(in_gen(-1, b), 0, "a freed object is still listed");
    ftm_decref(&a->ob);
    ftm_decref(&p->ob);
    cr_assert_eq(live(), 0);
}

/* CPython's test_get_count and test_collect_generations. */
Test(gc, get_count_moves_and_resets)
{
    unsigned long c[3];
    cr_assert_eq(ftm_gc_collect(2), 0);
    ftm_gc_get_count(c);
    cr_assert_eq(c[1], 0);
    cr_assert_eq(c[2], 0);
    unsigned long before = c[0];
    enum { N = 1000 }; /* below threshold0 (2000): no automatic collection */
    static node *held[N];
    for (int i = 0; i < N; i++)
        held[i] = new_node(&node_type, (uint32_t)i);
    ftm_gc_get_count(c);
    cr_assert_gt(c[0], before, "get_count()[0] did not move after %d tracked allocations (%lu)", N, c[0]);
    cr_assert_leq(c[0], before + N, "get_count()[0] = %lu after %d allocations", c[0], N);

    cr_assert_eq(ftm_gc_collect(0), 0);
    ftm_gc_get_count(c);
    cr_assert_eq(c[0], 0, "get_count()[0] = %lu after collect(0)", c[0]);
    cr_assert_eq(c[1], 1, "get_count()[1] = %lu after one collect(0)", c[1]);
    cr_assert_eq(c[2], 0);
    cr_assert_eq(ftm_gc_collect(0), 0);
    ftm_gc_get_count(c);
    cr_assert_eq(c[1], 2, "get_count()[1] = %lu after two collect(0)", c[1]);
    cr_assert_eq(ftm_gc_collect(1), 0);
    ftm_gc_get_count(c);
    cr_assert_eq(c[1], 0, "get_count()[1] = %lu after collect(1)", c[1]);
    cr_assert_eq(c[2], 1, "get_count()[2] = %lu after collect(1)", c[2]);
    cr_assert_eq(ftm_gc_collect(2), 0);
    ftm_gc_get_count(c);
    cr_assert_eq(c[0], 0);
    cr_assert_eq(c[1], 0);
    cr_assert_eq(c[2], 0, "get_count()[2] = %lu after collect(2)", c[2]);
    for (int i = 0; i < N; i++)
        ftm_decref(&held[i]->ob);
    cr_assert_eq(live(), 0);
}

/* ---- finalizers (PEP 442) ------------------------------------------------------- */

Test(gc, finalizers_run_once_before_any_clear)
{
    enum { N = 100 };
    atomic_store(&fin_check_neighbour, 1);
    node *first = new_ring(&fnode_type, N, 0);
    ftm_decref(&first->ob);
    cr_assert_eq(atomic_load(&n_finalized), 0);
    ssize_t r = ftm_gc_collect(2);
    cr_assert_eq(r, N, "collect returned %zd for a ring of %d objects with finalizers", r, N);
    cr_assert_eq(atomic_load(&n_finalized), N, "%ld finalizers ran for %d objects", atomic_load(&n_finalized), N);
    cr_assert_eq(atomic_load(&n_bad_finalize), 0, "a finalizer ran twice or on a dead object");
    cr_assert_eq(atomic_load(&fin_not_finalized), 0, "ftm_gc_is_finalized was false inside the finalizer");
    cr_assert_eq(atomic_load(&fin_broken_neighbour), 0,
                 "%ld finalizers saw their neighbour cleared or dead: clear ran before every finalizer had",
                 atomic_load(&fin_broken_neighbour));
    cr_assert_eq(live(), 0, "%ld finalized objects were not freed", live());
    cr_assert_eq(ftm_gc_collect(2), 0);
    cr_assert_eq(atomic_load(&n_finalized), N);
}

/* Mixed ring: finalizers and plain GC nodes. */
Test(gc, mixed_finalizer_cycle)
{
    node *a = new_node(&fnode_type, 1), *b = new_node(&node_type, 2), *c = new_node(&fnode_type, 3);
    link_next(a, b);
    link_next(b, c);
    link_next(c, a);
    ftm_decref(&a->ob);
    ftm_decref(&b->ob);
    ftm_decref(&c->ob);
    cr_assert_eq(ftm_gc_collect(2), 3);
    cr_assert_eq(atomic_load(&n_finalized), 2);
    cr_assert_eq(live(), 0);
}

/* A's finalizer stores a new reference to A in a global: A and B (which A
 * references) live on, untouched; once the global is dropped a later
 * collection frees both without finalizing again. */
Test(gc, resurrection_keeps_object_and_finalizes_once)
{
    node *a = new_node(&fnode_type, 1), *b = new_node(&fnode_type, 2);
    link_next(a, b);
    link_next(b, a);
    atomic_store(&fin_resurrect_id, 1);
    ftm_decref(&a->ob);
    ftm_decref(&b->ob);
    ssize_t r = ftm_gc_collect(2);
    cr_assert_geq(r, 0, "collect failed (%zd)", r);
    cr_assert_leq(r, 2);
    atomic_store(&fin_resurrect_id, -1);
    cr_assert_eq(atomic_load(&n_finalized), 2, "%ld finalizers ran, want 2", atomic_load(&n_finalized));
    cr_assert_eq(atomic_load(&fin_resurrected), &a->ob, "the finalizer did not resurrect A");
    cr_assert_eq(live(), 2, "a resurrected object (or one it references) was freed");
    cr_assert(intact(a), "the resurrected object's canary changed");
    cr_assert(intact(b), "an object the resurrected one references was damaged");
    cr_assert_eq(ftm_field_peek(&a->next), &b->ob, "the resurrected object was cleared");
    cr_assert_eq(ftm_field_peek(&b->next), &a->ob, "an object reachable from the resurrected one was cleared");
    cr_assert(ftm_gc_is_finalized(&a->ob));
    cr_assert(ftm_gc_is_finalized(&b->ob));
    cr_assert(ftm_gc_is_tracked(&a->ob), "a resurrected object was untracked");
    /* still working objects: a new reference and a collection change nothing */
    cr_assert_eq(ftm_gc_collect(2), 0, "the resurrected cycle counted as garbage while referenced");
    cr_assert_eq(live(), 2);

    ftm_decref(atomic_exchange(&fin_resurrected, NULL));
    cr_assert_eq(live(), 2, "reference counting freed a cycle");
    r = ftm_gc_collect(2);
    cr_assert_eq(r, 2, "collect returned %zd after the global was dropped", r);
    cr_assert_eq(atomic_load(&n_finalized), 2, "a finalizer ran again (%ld runs)", atomic_load(&n_finalized));
    cr_assert_eq(atomic_load(&n_bad_finalize), 0);
    cr_assert_eq(live(), 0);
}

/* A collection asked for inside a finalizer returns 0 at once. */
Test(gc, collect_inside_finalizer_returns_zero)
{
    node *a = new_self_cycle(&fnode_type, 1);
    node *b = new_self_cycle(&fnode_type, 2);
    ftm_decref(&a->ob);
    ftm_decref(&b->ob);
    atomic_store(&fin_collect, 1);
    ssize_t r = ftm_gc_collect(2);
    atomic_store(&fin_collect, 0);
    cr_assert_eq(atomic_load(&fin_collect_calls), 2, "%d finalizers ran (recursion?)", atomic_load(&fin_collect_calls));
    cr_assert_eq(atomic_load(&fin_collect_result), 0, "ftm_gc_collect inside a finalizer returned %ld",
                 atomic_load(&fin_collect_result));
    cr_assert_eq(r, 2);
    cr_assert_eq(atomic_load(&n_bad_finalize), 0);
    cr_assert_eq(live(), 0);
}

/* ---- weak references ------------------------------------------------------------ */

enum { NSLOT = 8 };
static atomic_int wcb_count[NSLOT];
static atomic_int wcb_get_nonnull[NSLOT]; /* get inside the callback returned an object */
static ftm_weakref *_Atomic wcb_wr[NSLOT];
static ftm_weakref *_Atomic wcb_probe;   /* another weak reference the callback reads */
static _Atomic(ftm_object *) wcb_probe_got = (ftm_object *)1;
static int slot_arg[NSLOT] = {0, 1, 2, 3, 4, 5, 6, 7};

static void wcb(ftm_weakref *wr, void *arg)
{
    int i = *(int *)arg;
    atomic_fetch_add(&wcb_count[i], 1);
    atomic_store(&wcb_wr[i], wr);
    ftm_object *g = ftm_weakref_get(wr);
    if (g != NULL) {
        atomic_fetch_add(&wcb_get_nonnull[i], 1);
        ftm_decref(g);
    }
    ftm_weakref *p = atomic_load(&wcb_probe);
    if (p != NULL) {
        g = ftm_weakref_get(p);
        atomic_store(&wcb_probe_got, g);
        if (g != NULL)
            ftm_decref(g);
    }
}

Test(gc, weakref_callback_for_garbage_referent)
{
    node *a = new_node(&node_type, 1), *b = new_node(&node_type, 2);
    link_next(a, b);
    link_next(b, a);
    ftm_weakref *wa = ftm_weakref_new(&a->ob, wcb, &slot_arg[0]);
    ftm_weakref *wb = ftm_weakref_new(&b->ob, NULL, NULL);
    cr_assert_not_null(wa);
    cr_assert_not_null(wb);
    ftm_decref(&a->ob);
    ftm_decref(&b->ob);
    cr_assert_eq(atomic_load(&wcb_count[0]), 0);
    ftm_object *g = ftm_weakref_get(wa);
    cr_assert_eq(g, &a->ob);
    ftm_decref(g);
    ssize_t r = ftm_gc_collect(2);
    cr_assert_eq(r, 2);
    cr_assert_eq(atomic_load(&wcb_count[0]), 1, "the callback ran %d times", atomic_load(&wcb_count[0]));
    cr_assert_eq(atomic_load(&wcb_wr[0]), wa, "the callback got another weak reference");
    cr_assert_eq(atomic_load(&wcb_get_nonnull[0]), 0, "ftm_weakref_get returned the garbage inside the callback");
    cr_assert_null(ftm_weakref_get(wa));
    cr_assert_null(ftm_weakref_get(wb));
    cr_assert_eq(live(), 0);
    ftm_gc_collect(2);
    cr_assert_eq(atomic_load(&wcb_count[0]), 1);
    ftm_weakref_release(wa);
    ftm_weakref_release(wb);
}

/* A weak reference held only by the garbage (it is garbage too): its
 * callback does not run, although its referent is in the cycle. */
Test(gc, weakref_callback_not_run_when_weakref_is_garbage)
{
    node *a = new_node(&node_type, 1), *b = new_node(&node_type, 2);
    link_next(a, b);
    link_next(b, a);
    ftm_weakref *inner = ftm_weakref_new(&b->ob, wcb, &slot_arg[1]);
    ftm_weakref *outer = ftm_weakref_new(&b->ob, wcb, &slot_arg[2]);
    cr_assert_not_null(inner);
    ftm_field_store(&a->other, ftm_weakref_as_object(inner)); /* A holds the only reference */
    ftm_decref(&a->ob);
    ftm_decref(&b->ob);
    ssize_t r = ftm_gc_collect(2);
    cr_assert_geq(r, 2, "collect returned %zd", r);
    cr_assert_eq(atomic_load(&wcb_count[1]), 0,
                 "the callback of a weak reference that was garbage itself ran (%d times)", atomic_load(&wcb_count[1]));
    cr_assert_eq(atomic_load(&wcb_count[2]), 1, "the callback of a live weak reference ran %d times",
                 atomic_load(&wcb_count[2]));
    cr_assert_eq(live(), 0);
    ftm_weakref_release(outer);
}

/* CPython's test_bug1055820c: c0 (in generation 2, not in a cycle any
 * more) is kept alive only by c1's self-cycle; c0 has a weak reference with
 * a callback that reads c2wr, a weak reference to c2, another piece of
 * garbage.  A collection of generation 0 frees c1, whose clear frees c0 and
 * runs the callback: it must see NULL for c2, whose weak references were
 * cleared before any clear. */
Test(gc, weakref_callback_during_clear_sees_no_garbage)
{
    node *c0 = new_self_cycle(&node_type, 0);
    cr_assert_eq(ftm_gc_collect(2), 0); /* c0 into generation 2 */
    node *c1 = new_self_cycle(&node_type, 1);
    ftm_field_store(&c1->other, ftm_newref(&c0->ob)); /* c1 keeps c0 alive */
    ftm_field_clear(&c0->next);                        /* c0 no longer in a cycle */
    node *c2 = new_self_cycle(&node_type, 2);
    ftm_weakref *c2wr = ftm_weakref_new(&c2->ob, NULL, NULL);
    atomic_store(&wcb_probe, c2wr);
    ftm_weakref *c0wr = ftm_weakref_new(&c0->ob, wcb, &slot_arg[3]);
    ftm_decref(&c0->ob);
    ftm_decref(&c1->ob);
    ftm_decref(&c2->ob);
    cr_assert_eq(live(), 3);
    ssize_t r = ftm_gc_collect(0);
    cr_assert_eq(r, 2, "collect(0) returned %zd, want 2 (c1 and c2)", r);
    cr_assert_eq(atomic_load(&wcb_count[3]), 1, "c0's callback ran %d times", atomic_load(&wcb_count[3]));
    cr_assert_null(atomic_load(&wcb_probe_got), "the callback reached garbage (c2) through a weak reference");
    cr_assert_null(ftm_weakref_get(c2wr));
    cr_assert_null(ftm_weakref_get(c0wr));
    cr_assert_eq(live(), 0);
    atomic_store(&wcb_probe, NULL);
    ftm_weakref_release(c0wr);
    ftm_weakref_release(c2wr);
}

/* Two garbage objects, each with a weak reference whose callback reads the
 * other's weak reference: whichever callback runs first must not get the
 * other object back (it is garbage, about to be cleared), even if that
 * object's weak references have not been cleared yet. */
static ftm_weakref *cross_wr[2];
static atomic_int cross_runs[2];
static _Atomic(ftm_object *) cross_got[2];
static void cross_cb(ftm_weakref *wr, void *arg)
{
    int i = *(int *)arg;
    atomic_fetch_add(&cross_runs[i], 1);
    ftm_object *g = ftm_weakref_get(cross_wr[1 - i]);
    atomic_store(&cross_got[i], g);
    if (g != NULL)
        ftm_decref(g);
}

Test(gc, weakref_callbacks_cannot_reach_other_garbage)
{
    for (int order = 0; order < 2; order++) { /* both creation orders */
        node *a = new_node(&node_type, 1), *b = new_node(&node_type, 2);
        link_next(a, b);
        link_next(b, a);
        node *first = order == 0 ? a : b, *second = order == 0 ? b : a;
        cross_wr[0] = ftm_weakref_new(&first->ob, cross_cb, &slot_arg[0]);
        cross_wr[1] = ftm_weakref_new(&second->ob, cross_cb, &slot_arg[1]);
        for (int i = 0; i < 2; i++) {
            atomic_store(&cross_runs[i], 0);
            atomic_store(&cross_got[i], (ftm_object *)1);
        }
        ftm_decref(&a->ob);
        ftm_decref(&b->ob);
        ssize_t r = ftm_gc_collect(2);
        cr_assert_eq(r, 2, "collect returned %zd", r);
        for (int i = 0; i < 2; i++) {
            cr_assert_eq(atomic_load(&cross_runs[i]), 1, "order %d: callback %d ran %d times", order, i,
                         atomic_load(&cross_runs[i]));
            cr_assert_null(atomic_load(&cross_got[i]),
                           "order %d: a weakref callback got another garbage object back through its weak reference",
                           order);
        }
        cr_assert_eq(live(), 0, "order %d: %ld objects left", order, live());
        ftm_weakref_release(cross_wr[0]);
        ftm_weakref_release(cross_wr[1]);
    }
}

/* ---- referents, referrers ------------------------------------------------------ */

Test(gc, get_referents_and_referrers)
{
    node *a = new_node(&node_type, 1), *b = new_node(&node_type, 2), *c = new_node(&node_type, 3);
    node *d = new_node(&node_type, 4), *p = new_node(&plain_type, 5);
    link_next(a, b);                                  /* a -> b, a -> p */
    ftm_field_store(&a->other, ftm_newref(&p->ob));
    ftm_field_store(&c->other, ftm_newref(&b->ob));   /* c -> b */

    size_t n;
    ssize_t rb = ftm_refcount(&b->ob);
    ftm_object **ref = list_all(list_referents_fn, &a->ob, &n);
    cr_assert_eq(n, 2, "get_referents(a) gave %zu objects, want 2", n);
    cr_assert_eq(count_in(ref, n, b), 1, "get_referents(a) misses b");
    cr_assert_eq(count_in(ref, n, p), 1, "get_referents(a) misses an untracked referent");
    cr_assert_eq(ftm_refcount(&b->ob), rb + 1, "get_referents did not return a new reference");
    drop_all(ref, n);
    cr_assert_eq(ftm_refcount(&b->ob), rb);

    ref = list_all(list_referents_fn, &d->ob, &n);
    cr_assert_eq(n, 0, "get_referents of an object with empty fields gave %zu", n);
    drop_all(ref, n);
    ref = list_all(list_referents_fn, &p->ob, &n);
    cr_assert_eq(n, 0, "get_referents of an object without traverse gave %zu", n);
    drop_all(ref, n);

    ssize_t ra = ftm_refcount(&a->ob);
    ref = list_all(list_referrers_fn, &b->ob, &n);
    cr_assert_eq(n, 2, "get_referrers(b) gave %zu objects, want 2 (a, c)", n);
    cr_assert_eq(count_in(ref, n, a), 1);
    cr_assert_eq(count_in(ref, n, c), 1);
    cr_assert_eq(ftm_refcount(&a->ob), ra + 1, "get_referrers did not return a new reference");
    drop_all(ref, n);
    cr_assert_eq(ftm_refcount(&a->ob), ra);
    ref = list_all(list_referrers_fn, &p->ob, &n);
    cr_assert_eq(n, 1);
    cr_assert_eq(ref[0], &a->ob);
    drop_all(ref, n);
    ref = list_all(list_referrers_fn, &a->ob, &n);
    cr_assert_eq(n, 0, "get_referrers(a) gave %zu, nothing references a", n);
    drop_all(ref, n);

    /* a small array: the count is still the full one, min(count, cap) taken */
    ftm_object *one[1] = {NULL};
    rb = ftm_refcount(&b->ob);
    ssize_t rc = ftm_refcount(&c->ob);
    size_t got = ftm_gc_get_referrers(&b->ob, one, 1);
    cr_assert_eq(got, 2);
    cr_assert(one[0] == &a->ob || one[0] == &c->ob);
    cr_assert_eq(ftm_refcount(&a->ob) + ftm_refcount(&c->ob), ra + rc + 1, "more than cap references were taken");
    ftm_decref(one[0]);
    cr_assert_eq(ftm_gc_get_referents(&a->ob, NULL, 0), 2);
    cr_assert_eq(ftm_refcount(&b->ob), rb);

    ftm_decref(&a->ob);
    ftm_decref(&b->ob);
    ftm_decref(&c->ob);
    ftm_decref(&d->ob);
    ftm_decref(&p->ob);
    cr_assert_eq(live(), 0);
}

/* ---- freeze -------------------------------------------------------------------------- */

Test(gc, freeze_hides_garbage_until_unfreeze)
{
    cr_assert_eq(ftm_gc_get_freeze_count(), 0);
    node *a = new_node(&node_type, 1), *b = new_node(&node_type, 2);
    link_next(a, b);
    link_next(b, a);
    size_t ntracked;
    ftm_object **all = objects_of(-1, &ntracked);
    drop_all(all, ntracked);
    ftm_gc_freeze();
    cr_assert_eq(ftm_gc_get_freeze_count(), ntracked, "freeze count %zu, %zu objects were tracked",
                 ftm_gc_get_freeze_count(), ntracked);
    for (int g = 0; g < 3; g++)
        cr_assert_eq(in_gen(g, a), 0, "a frozen object is listed in generation %d", g);
    cr_assert_eq(in_gen(-1, a), 1, "get_objects(-1) misses a frozen object");
    ftm_decref(&a->ob);
    ftm_decref(&b->ob);
    for (int g = 0; g < 3; g++) {
        ssize_t r = ftm_gc_collect(g);
        cr_assert_eq(r, 0, "collect(%d) found %zd frozen objects", g, r);
    }
    cr_assert_eq(live(), 2, "frozen garbage was freed");
    cr_assert(intact(a) && intact(b));

    /* objects made after the freeze are collected as usual */
    node *c = new_self_cycle(&node_type, 3);
    ftm_decref(&c->ob);
    cr_assert_eq(ftm_gc_collect(2), 1);
    cr_assert_eq(live(), 2);

    ftm_gc_unfreeze();
    cr_assert_eq(ftm_gc_get_freeze_count(), 0);
    cr_assert_eq(in_gen(2, a), 1, "unfreeze did not put the objects in the oldest generation");
    cr_assert_eq(ftm_gc_collect(1), 0, "collect(1) examined the oldest generation");
    ssize_t r = ftm_gc_collect(2);
    cr_assert_eq(r, 2, "collect(2) returned %zd after unfreeze", r);
    cr_assert_eq(live(), 0);
}

/* ---- automatic collections -------------------------------------------------------- */

/* Drop n self-cycles; ftm_new reaches safepoints on its own. */
static void make_garbage(int n)
{
    for (int i = 0; i < n; i++)
        ftm_decref(&new_self_cycle(&node_type, (uint32_t)i)->ob);
}

/* Automatic collections run on the allocating thread or on background
 * collector threads: give the latter up to 2 s. */
static uint64_t wait_collections(uint64_t above)
{
    ftm_gc_gen_stats_t s[3];
    double end = ftt_now() + 2.0;
    do {
        get_stats(s);
        if (s[0].collections > above)
            break;
        ftm_safepoint();
        ftt_sleep_ms(1);
    } while (ftt_now() < end);
    return s[0].collections;
}

Test(gc, threshold_triggers_collections)
{
    unsigned th[3];
    ftm_gc_get_threshold(th);
    cr_assert_eq(th[0], 2000, "default threshold0 %u", th[0]);
    cr_assert_eq(th[1], 10);
    cr_assert_eq(th[2], 10);
    cr_assert(ftm_gc_isenabled(), "the collector starts disabled");
    ftm_gc_set_threshold(100, 10, 10);
    ftm_gc_get_threshold(th);
    cr_assert_eq(th[0], 100);
    cr_assert_eq(th[1], 10);
    cr_assert_eq(th[2], 10);
    ftm_gc_gen_stats_t s0[3];
    get_stats(s0);
    enum { N = 3000 };
    make_garbage(N);
    uint64_t cols = wait_collections(s0[0].collections);
    cr_assert_gt(cols, s0[0].collections, "no automatic collection after %d garbage cycles with threshold 100", N);
    cr_assert_lt(live(), N / 2, "%ld of %d garbage cycles left: automatic collections did not free them", live(), N);
    ftm_gc_collect(2);
    cr_assert_eq(live(), 0);
}

Test(gc, disable_stops_automatic_collections)
{
    ftm_gc_set_threshold(100, 10, 10);
    ftm_gc_disable();
    cr_assert_not(ftm_gc_isenabled());
    ftm_gc_gen_stats_t s0[3], s1[3];
    get_stats(s0);
    enum { N = 3000 };
    make_garbage(N);
    for (int i = 0; i < 50; i++) { /* background collectors, if any, had their chance */
        ftm_safepoint();
        ftt_sleep_ms(1);
    }
    get_stats(s1);
    for (int g = 0; g < 3; g++)
        cr_assert_eq(s1[g].collections, s0[g].collections, "generation %d collected while disabled", g);
    cr_assert_eq(live(), N);
    unsigned long c[3];
    ftm_gc_get_count(c);
    cr_assert_gt(c[0], 100, "get_count()[0] = %lu with %d uncollected allocations", c[0], N);

    ftm_gc_enable();
    cr_assert(ftm_gc_isenabled());
    make_garbage(N);
    uint64_t cols = wait_collections(s0[0].collections);
    cr_assert_gt(cols, s0[0].collections, "no automatic collection after enable");
    cr_assert_lt(live(), 2 * N, "automatic collections after enable freed nothing");

    /* an explicit collection still works while disabled (as gc.collect) */
    ftm_gc_disable();
    long before = live();
    ssize_t r = ftm_gc_collect(2);
    cr_assert_eq(r, before, "explicit collect while disabled returned %zd, %ld garbage objects", r, before);
    cr_assert_eq(live(), 0);
    cr_assert_not(ftm_gc_isenabled(), "collect re-enabled the collector");
}

Test(gc, threshold_zero_disables_automatic_collections)
{
    ftm_gc_set_threshold(0, 10, 10);
    cr_assert(ftm_gc_isenabled());
    ftm_gc_gen_stats_t s0[3], s1[3];
    get_stats(s0);
    make_garbage(5000); /* more than the default threshold too */
    for (int i = 0; i < 50; i++) {
        ftm_safepoint();
        ftt_sleep_ms(1);
    }
    get_stats(s1);
    cr_assert_eq(s1[0].collections, s0[0].collections, "threshold0 = 0 still collects");
    cr_assert_eq(live(), 5000);
    cr_assert_eq(ftm_gc_collect(2), 5000);
    cr_assert_eq(live(), 0);
}

/* ---- callbacks ------------------------------------------------------------------ */

typedef struct {
    int calls;
    char phase[8][8];
    ftm_gc_info info[8];
} cb_log;

static void log_cb(const char *phase, const ftm_gc_info *info, void *arg)
{
    cb_log *l = arg;
    if (l->calls < 8) {
        snprintf(l->phase[l->calls], sizeof l->phase[0], "%s", phase);
        l->info[l->calls] = *info;
    }
    l->calls++;
}

static void other_cb(const char *phase, const ftm_gc_info *info, void *arg) { (*(int *)arg)++; }

Test(gc, callbacks_start_stop)
{
    cb_log lg = {0};
    cr_assert_eq(ftm_gc_callback_add(log_cb, &lg), 0);
    node *a = new_node(&node_type, 1), *b = new_node(&node_type, 2), *c = new_self_cycle(&node_type, 3);
    link_next(a, b);
    link_next(b, a);
    ftm_decref(&a->ob);
    ftm_decref(&b->ob);
    ftm_decref(&c->ob);
    ssize_t r = ftm_gc_collect(1);
    cr_assert_eq(r, 3);
    cr_assert_eq(lg.calls, 2, "%d callback calls for one collection", lg.calls);
    cr_assert_str_eq(lg.phase[0], "start");
    cr_assert_str_eq(lg.phase[1], "stop");
    cr_assert_eq(lg.info[0].generation, 1);
    cr_assert_eq(lg.info[1].generation, 1);
    cr_assert_eq(lg.info[0].collected, 0, "info->collected nonzero at start");
    cr_assert_eq(lg.info[0].uncollectable, 0);
    cr_assert_eq(lg.info[1].collected, (size_t)r, "info->collected %zu at stop, collect returned %zd",
                 lg.info[1].collected, r);
    cr_assert_eq(lg.info[1].uncollectable, 0);
    cr_assert_geq(lg.info[1].candidates, 3, "stop: %zu candidates examined, 3 garbage objects", lg.info[1].candidates);
    cr_assert_geq(lg.info[1].duration, 0.0);
    cr_assert_geq(lg.info[1].pause, 0.0);
    cr_assert_leq(lg.info[1].pause, lg.info[1].duration + 1e-3, "pause longer than the collection");

    /* one more, generation 2, nothing to find */
    cr_assert_eq(ftm_gc_collect(2), 0);
    cr_assert_eq(lg.calls, 4);
    cr_assert_eq(lg.info[2].generation, 2);
    cr_assert_eq(lg.info[3].generation, 2);
    cr_assert_eq(lg.info[3].collected, 0);

    int other = 0;
    cr_assert_eq(ftm_gc_callback_add(other_cb, &other), 0);
    errno = 0;
    cr_assert_eq(ftm_gc_callback_remove(log_cb, &other), -1, "removed a callback registered with another arg");
    cr_assert_eq(errno, ENOENT);
    cr_assert_eq(ftm_gc_callback_remove(log_cb, &lg), 0);
    errno = 0;
    cr_assert_eq(ftm_gc_callback_remove(log_cb, &lg), -1, "removed the same callback twice");
    cr_assert_eq(errno, ENOENT);
    cr_assert_eq(ftm_gc_collect(0), 0);
    cr_assert_eq(lg.calls, 4, "a removed callback was called");
    cr_assert_eq(other, 2, "the remaining callback was called %d times", other);
    cr_assert_eq(ftm_gc_callback_remove(other_cb, &other), 0);
    cr_assert_eq(live(), 0);
}

Test(gc, callbacks_at_most_32)
{
    static int args[33];
    for (int i = 0; i < 32; i++)
        cr_assert_eq(ftm_gc_callback_add(other_cb, &args[i]), 0, "callback %d refused", i);
    errno = 0;
    cr_assert_eq(ftm_gc_callback_add(other_cb, &args[32]), -1, "a 33rd callback was accepted");
    cr_assert_eq(errno, ENOMEM);
    cr_assert_eq(ftm_gc_collect(0), 0);
    for (int i = 0; i < 32; i++)
        cr_assert_eq(args[i], 2, "callback %d called %d times", i, args[i]);
    cr_assert_eq(args[32], 0);
    for (int i = 0; i < 32; i++)
        cr_assert_eq(ftm_gc_callback_remove(other_cb, &args[i]), 0);
    cr_assert_eq(ftm_gc_callback_add(other_cb, &args[32]), 0, "no room after removing every callback");
    cr_assert_eq(ftm_gc_callback_remove(other_cb, &args[32]), 0);
}

/* A collection asked for from a gc callback returns 0 at once. */
static atomic_int cbc_calls;
static _Atomic long cbc_result[2] = {LONG_MIN, LONG_MIN};
static void collecting_cb(const char *phase, const ftm_gc_info *info, void *arg)
{
    int i = atomic_fetch_add(&cbc_calls, 1);
    if (i < 2)
        atomic_store(&cbc_result[i], (long)ftm_gc_collect(2));
}

Test(gc, collect_inside_callback_returns_zero)
{
    cr_assert_eq(ftm_gc_callback_add(collecting_cb, NULL), 0);
    ftm_decref(&new_self_cycle(&node_type, 1)->ob);
    ssize_t r = ftm_gc_collect(2);
    cr_assert_eq(r, 1);
    cr_assert_eq(atomic_load(&cbc_calls), 2, "%d callback calls: the inner collect recursed",
                 atomic_load(&cbc_calls));
    cr_assert_eq(atomic_load(&cbc_result[0]), 0, "collect at \"start\" returned %ld", atomic_load(&cbc_result[0]));
    cr_assert_eq(atomic_load(&cbc_result[1]), 0, "collect at \"stop\" returned %ld", atomic_load(&cbc_result[1]));
    cr_assert_eq(live(), 0);
    ftm_gc_callback_remove(collecting_cb, NULL);
}

/* ---- DEBUG_SAVEALL ------------------------------------------------------------------ */

Test(gc, saveall_keeps_garbage)
{
    ftm_gc_set_debug(FTM_GC_DEBUG_SAVEALL);
    cr_assert_eq(ftm_gc_get_debug(), FTM_GC_DEBUG_SAVEALL);
    node *a = new_node(&node_type, 1), *b = new_node(&node_type, 2);
    link_next(a, b);
    link_next(b, a);
    ftm_decref(&a->ob);
    ftm_decref(&b->ob);
    ftm_gc_gen_stats_t s0[3], s1[3];
    get_stats(s0);
    ssize_t r = ftm_gc_collect(2);
    cr_assert_eq(r, 2, "collect returned %zd with SAVEALL", r);
    get_stats(s1);
    cr_assert_eq(s1[2].uncollectable, s0[2].uncollectable + 2, "stats[2].uncollectable %llu -> %llu",
                 (unsigned long long)s0[2].uncollectable, (unsigned long long)s1[2].uncollectable);
    cr_assert_eq(live(), 2, "SAVEALL garbage was freed");
    cr_assert(intact(a) && intact(b));
    cr_assert_eq(ftm_field_peek(&a->next), &b->ob, "SAVEALL garbage was cleared");
    cr_assert_eq(ftm_field_peek(&b->next), &a->ob, "SAVEALL garbage was cleared");
    size_t n;
    ftm_object **g = list_all(list_garbage_fn, NULL, &n);
    cr_assert_eq(n, 2, "ftm_gc_garbage lists %zu objects", n);
    cr_assert_eq(count_in(g, n, a), 1);
    cr_assert_eq(count_in(g, n, b), 1);
    drop_all(g, n);
    /* kept garbage is not found again */
    cr_assert_eq(ftm_gc_collect(2), 0);
    g = list_all(list_garbage_fn, NULL, &n);
    cr_assert_eq(n, 2, "ftm_gc_garbage lists %zu objects after a second collection", n);
    drop_all(g, n);

    ftm_gc_set_debug(0);
    cr_assert_eq(ftm_gc_get_debug(), 0);
    ftm_gc_garbage_clear();
    g = list_all(list_garbage_fn, NULL, &n);
    cr_assert_eq(n, 0, "garbage_clear left %zu", n);
    drop_all(g, n);
    cr_assert_eq(live(), 2, "reference counting freed a cycle");
    r = ftm_gc_collect(2);
    cr_assert_eq(r, 2, "collect returned %zd after garbage_clear", r);
    cr_assert_eq(live(), 0);
}

/* ---- track / untrack ------------------------------------------------------------------ */

Test(gc, untracked_cycle_not_collected)
{
    node *a = new_node(&node_type, 1), *b = new_node(&node_type, 2);
    link_next(a, b);
    link_next(b, a);
    ftm_gc_untrack(&a->ob);
    ftm_gc_untrack(&b->ob);
    ftm_gc_untrack(&b->ob); /* no-op */
    cr_assert_not(ftm_gc_is_tracked(&a->ob));
    cr_assert_not(ftm_gc_is_tracked(&b->ob));
    cr_assert_eq(in_gen(-1, a), 0, "get_objects lists an untracked object");
    ftm_decref(&a->ob);
    ftm_decref(&b->ob);
    for (int g = 0; g < 3; g++)
        cr_assert_eq(ftm_gc_collect(g), 0, "collect(%d) found an untracked cycle", g);
    cr_assert_eq(live(), 2, "an untracked cycle was freed");
    cr_assert(intact(a) && intact(b));
    /* it leaks: break it by hand (a and b are borrowed from the cycle) */
    ftm_field_clear(&a->next);
    cr_assert_eq(live(), 0);
}

/* Only one of two untracked: the tracked one is referenced from outside
 * the collector's view, so nothing is collected; tracking again makes the
 * cycle collectable. */
Test(gc, track_again_makes_collectable)
{
    node *a = new_node(&node_type, 1), *b = new_node(&node_type, 2);
    link_next(a, b);
    link_next(b, a);
    ftm_gc_untrack(&a->ob);
    cr_assert(ftm_gc_is_tracked(&b->ob));
    ftm_decref(&a->ob);
    ftm_decref(&b->ob);
    cr_assert_eq(ftm_gc_collect(2), 0, "collected an object referenced by an untracked one");
    cr_assert_eq(live(), 2);
    ftm_gc_track(&a->ob);
    ftm_gc_track(&a->ob); /* no-op */
    cr_assert(ftm_gc_is_tracked(&a->ob));
    cr_assert_eq(in_gen(-1, a), 1, "a re-tracked object is listed %zu times", in_gen(-1, a));
    ssize_t r = ftm_gc_collect(2);
    cr_assert_eq(r, 2, "collect returned %zd after re-tracking", r);
    cr_assert_eq(live(), 0);
}

Test(gc, track_non_gc_type_is_noop)
{
    node *p = new_node(&plain_type, 1);
    cr_assert_not(ftm_gc_is_tracked(&p->ob));
    ftm_gc_track(&p->ob);
    cr_assert_not(ftm_gc_is_tracked(&p->ob), "tracked an object of a type without FTM_TYPE_GC");
    ftm_gc_untrack(&p->ob);
    cr_assert_eq(in_gen(-1, p), 0);
    ftm_decref(&p->ob);
    cr_assert_eq(live(), 0);
}

/* An object that dies by reference counting is no longer listed, and an
 * untracked object of a GC type is freed normally. */
Test(gc, untracked_object_freed_by_refcount)
{
    node *a = new_node(&node_type, 1);
    ftm_gc_untrack(&a->ob);
    ftm_decref(&a->ob);
    cr_assert_eq(live(), 0);
    node *b = new_node(&fnode_type, 2);
    ftm_decref(&b->ob);
    cr_assert_eq(live(), 0);
    cr_assert_eq(atomic_load(&n_finalized), 1);
    cr_assert_eq(ftm_gc_collect(2), 0);
}

/* ---- the handshake -------------------------------------------------------------- */

/* An attached thread blocked without detaching: ftm_gc_collect gives up
 * after FTMEM_GC_HANDSHAKE_MS (1000 ms) with -1/EAGAIN, collecting nothing. */
static int hs_pipe[2];
static atomic_int hs_ready;
static void *blocked_thread(void *arg)
{
    node *n = make_node(&node_type, 99); /* attaches */
    atomic_store(&hs_ready, 1);
    char c;
    while (read(hs_pipe[0], &c, 1) < 0 && errno == EINTR) {
    }
    if (n != NULL)
        ftm_decref(&n->ob);
    return NULL;
}

Test(gc, blocked_attached_thread_abandons_collection)
{
    cr_assert_eq(pipe(hs_pipe), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, blocked_thread, NULL), 0);
    while (!atomic_load(&hs_ready))
        sched_yield();
    ftm_decref(&new_self_cycle(&node_type, 1)->ob);
    ftm_gc_gen_stats_t s0[3], s1[3];
    get_stats(s0);
    double t0 = ftt_now();
    errno = 0;
    ssize_t r = ftm_gc_collect(2);
    int e = errno;
    double took = ftt_now() - t0;
    get_stats(s1);
    cr_assert_eq(r, -1, "collect returned %zd while an attached thread was blocked", r);
    cr_assert_eq(e, EAGAIN, "errno %d, want EAGAIN", e);
    cr_assert_geq(took, 0.5, "gave up after %.3f s (FTMEM_GC_HANDSHAKE_MS default 1000)", took);
    cr_assert_lt(took, 10.0);
    cr_assert_eq(s1[2].abandoned, s0[2].abandoned + 1);
    cr_assert_eq(s1[2].collections, s0[2].collections, "an abandoned collection counted as completed");
    cr_assert_eq(live(), 2, "an abandoned collection freed something");

    cr_assert_eq(write(hs_pipe[1], "x", 1), 1);
    ftm_thread_detach();
    pthread_join(t, NULL);
    ftm_thread_attach();
    r = ftm_gc_collect(2);
    cr_assert_eq(r, 1, "collect returned %zd once the thread had left", r);
    cr_assert_eq(live(), 0);
    close(hs_pipe[0]);
    close(hs_pipe[1]);
}

/* ---- mutators racing the collector ------------------------------------------- */

/* Four threads build and drop cycles and rewire a graph of 64 nodes each
 * holds — moving references between fields and the stack without
 * increments, so that a collector that trusts a stale trace (a missing
 * barrier) finds live objects unreachable — while the main thread collects
 * over and over, mostly in full.  The traverse of held nodes is slowed
 * down so that the moves land inside a collection's phases.  A live object
 * the collector took for garbage is cleared (its anchor goes NULL) or
 * freed: the threads check what they reach.  In the end every object is
 * deallocated exactly once.  Run without finalizers (the barrier alone
 * keeps live objects), then with 25% of objects finalizable. */
#ifndef MT_DELAY
#define MT_DELAY 20000
#endif
enum { MT_THREADS = 4, MT_ITERS = 20000, MT_HELD = 64 };
enum { MT_COLLECTIONS = 200, MT_SECONDS = 3 };
static atomic_int mt_go, mt_done;
static atomic_long mt_collections;
static atomic_long mt_bad_live;    /* a reachable object found dead */
static atomic_long mt_bad_cleared; /* a reachable object found cleared */
static atomic_long mt_fnodes, mt_alloc_fail;
/* Objects with finalizers, in percent.  A collection that ran a finalizer
 * rechecks its garbage with the threads parked, which would also save an
 * object the concurrent trace lost: the barrier test runs without them. */
static atomic_int mt_fin_percent;

/* o is reachable by the calling worker: alive, and never cleared (every
 * worker node's anchor is set at creation; only clear empties it). */
static void mt_check(ftm_object *o)
{
    if (o == NULL)
        return;
    if (atomic_load(&((node *)o)->canary) != ALIVE)
        atomic_fetch_add(&mt_bad_live, 1);
    else if (ftm_field_peek(&((node *)o)->anchor) == NULL)
        atomic_fetch_add(&mt_bad_cleared, 1);
}

static node *mt_new(uint64_t *rng, node *token, bool slow)
{
    bool fin = ftt_rand(rng) % 100 < (uint64_t)atomic_load(&mt_fin_percent);
    node *n = make_node(fin ? &fnode_type : &node_type, 0);
    if (n == NULL) {
        atomic_fetch_add(&mt_alloc_fail, 1);
        return NULL;
    }
    if (fin)
        atomic_fetch_add(&mt_fnodes, 1);
    ftm_field_init(&n->anchor, ftm_newref(&token->ob));
    n->slow = slow;
    return n;
}

static void *mt_worker(void *arg)
{
    uint64_t rng = 0x5EED0000u + (uintptr_t)arg;
    node *held[MT_HELD];
    node *token = make_node(&plain_type, 0); /* untracked: what anchors point to */
    if (token == NULL) {
        atomic_fetch_add(&mt_alloc_fail, 1);
        return NULL;
    }
    while (!atomic_load(&mt_go)) {
        ftm_safepoint();
        sched_yield();
    }
    for (int k = 0; k < MT_HELD; k++)
        if ((held[k] = mt_new(&rng, token, true)) == NULL)
            return NULL;
    /* MT_ITERS, and on until the main thread has collected MT_COLLECTIONS
     * times (so that collections overlap the work however threads are
     * scheduled), within MT_SECONDS */
    double end = ftt_now() + MT_SECONDS;
    for (long i = 0; i < MT_ITERS || (atomic_load(&mt_collections) < MT_COLLECTIONS && ftt_now() < end); i++) {
        unsigned a = (unsigned)(ftt_rand(&rng) % MT_HELD), b = (unsigned)(ftt_rand(&rng) % MT_HELD);
        switch (ftt_rand(&rng) % 8) {
        case 0:
        case 1: { /* a garbage ring of 1..6 */
            int len = 1 + (int)(ftt_rand(&rng) % 6);
            node *first = mt_new(&rng, token, false), *prev = first;
            if (first == NULL)
                return NULL;
            for (int j = 1; j < len; j++) {
                node *n = mt_new(&rng, token, false);
                if (n == NULL)
                    return NULL;
                ftm_field_store(&prev->next, &n->ob);
                prev = n;
            }
            ftm_field_store(&prev->next, ftm_newref(&first->ob));
            if (ftt_rand(&rng) % 2) /* hang it off a held node for a while */
                ftm_field_store(&held[a]->other, ftm_newref(&first->ob));
            ftm_decref(&first->ob);
            break;
        }
        case 2: /* cycles among held nodes */
            ftm_field_store(&held[a]->other, ftm_newref(&held[b]->ob));
            break;
        case 3: { /* move a reference between fields through the stack, no increment */
            ftm_object *x = ftm_field_exchange(&held[a]->next, NULL);
            mt_check(x);
            if (x == NULL) /* nothing to move: make a cycle through `next` */
                x = ftm_newref(&held[a]->ob);
            sched_yield();
            ftm_field_store(&held[b]->next, x);
            break;
        }
        case 6:
        case 7: { /* move what a field holds (a ring, a former held node) to
                   * another held node's field, no increment: the classic
                   * lost object of a concurrent trace */
            ftm_object *x = ftm_field_exchange(&held[a]->other, NULL);
            mt_check(x);
            ftm_field_store(&held[b]->other, x);
            break;
        }
        case 4: { /* the only reference to a held node moves into a field */
            node *old = held[a], *n = mt_new(&rng, token, true);
            if (n == NULL)
                return NULL;
            held[a] = n;
            ftm_field_store(&n->other, &old->ob); /* steals ours */
            break;
        }
        case 5: { /* ... and back out of it (a load shades; then the field lets go) */
            ftm_object *x = ftm_field_load(&held[a]->other);
            mt_check(x);
            ftm_field_store(&held[a]->other, NULL);
            if (x != NULL) { /* x replaces held[b] (our load's reference) */
                ftm_decref(&held[b]->ob);
                held[b] = (node *)x;
            }
            break;
        }
        }
        mt_check(&held[a]->ob);
        mt_check(&held[b]->ob);
        if (i % 8 == 0) { /* everything reachable in one step */
            for (int k = 0; k < MT_HELD; k++) {
                mt_check(&held[k]->ob);
                mt_check(ftm_field_peek(&held[k]->next));
                mt_check(ftm_field_peek(&held[k]->other));
            }
            ftm_safepoint();
        }
    }
    for (int k = 0; k < MT_HELD; k++)
        ftm_decref(&held[k]->ob);
    ftm_decref(&token->ob); /* the garbage's anchors still hold it */
    atomic_fetch_add(&mt_done, 1);
    return NULL;
}

static void threads_race_collections(int fin_percent)
{
    pthread_t t[MT_THREADS];
    atomic_store(&mt_fin_percent, fin_percent);
    atomic_store(&traverse_delay, MT_DELAY);
    for (uintptr_t i = 0; i < MT_THREADS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, mt_worker, (void *)i), 0);
    atomic_store(&mt_go, 1);
    long collections = 0, eagain = 0, found = 0;
    double end = ftt_now() + MT_SECONDS + 40;
    while (atomic_load(&mt_done) < MT_THREADS && atomic_load(&mt_alloc_fail) == 0 && ftt_now() < end) {
        errno = 0;
        /* mostly full: the workers' held nodes are old */
        int gen = collections % 4 == 0 ? 0 : collections % 4 == 1 ? 1 : 2;
        ssize_t r = ftm_gc_collect(gen);
        if (r < 0) {
            cr_assert_eq(errno, EAGAIN, "collect failed with errno %d", errno);
            eagain++;
        } else {
            found += r;
        }
        collections++;
        atomic_store(&mt_collections, collections);
    }
    ftm_thread_detach();
    for (int i = 0; i < MT_THREADS; i++)
        pthread_join(t[i], NULL);
    ftm_thread_attach();
    cr_assert_eq(atomic_load(&mt_alloc_fail), 0);
    cr_assert_eq(atomic_load(&mt_done), MT_THREADS, "the workers did not finish in %d s", MT_SECONDS + 40);
    cr_assert_eq(atomic_load(&mt_bad_live), 0, "%ld times a reachable object was found dead",
                 atomic_load(&mt_bad_live));
    cr_assert_eq(atomic_load(&mt_bad_cleared), 0, "%ld times a reachable object was found cleared (collected)",
                 atomic_load(&mt_bad_cleared));
    /* every thread reaches safepoints often, but on a loaded machine one may
     * not be scheduled within the handshake timeout: -1/EAGAIN is allowed
     * then, as long as collections mostly complete */
    if (eagain != 0)
        cr_log_warn("%ld of %ld collections abandoned (EAGAIN)", eagain, collections);
    cr_assert_leq(eagain * 4, collections, "%ld of %ld collections abandoned although every thread reached safepoints",
                  eagain, collections);
    cr_log_info("%ld collections during the run found %ld objects; %ld created", collections, found,
                atomic_load(&n_created));
    ssize_t r = ftm_gc_collect(2);
    cr_assert_geq(r, 0);
    ftm_thread_flush();
    cr_assert_eq(atomic_load(&n_bad_dealloc), 0, "%ld objects deallocated twice (or dead before)",
                 atomic_load(&n_bad_dealloc));
    cr_assert_eq(live(), 0, "%ld of %ld objects never deallocated (%ld collections found %ld)", live(),
                 atomic_load(&n_created), collections, found);
    cr_assert_eq(atomic_load(&n_bad_finalize), 0, "a finalizer ran twice");
    cr_assert_eq(atomic_load(&n_finalized), atomic_load(&mt_fnodes), "%ld finalizers ran for %ld objects",
                 atomic_load(&n_finalized), atomic_load(&mt_fnodes));
    cr_assert_gt(collections, MT_THREADS, "only %ld collections ran during the test", collections);
    cr_assert_eq(ftm_gc_collect(2), 0);
}

Test(gc, threads_race_collections)
{
    threads_race_collections(0);
}

Test(gc, threads_race_collections_finalizers)
{
    threads_race_collections(25);
}

/* ftm_weakref_get racing collections: once a collection has found an
 * object unreachable, a weak reference must not hand it out (the
 * collector goes on to clear it).  A maker thread keeps replacing weak
 * references (in the fields of a bag) to fresh self-cycles it drops at
 * once; a reader takes objects through them and checks each one it gets
 * is whole: its own `next` and its anchor set.  The main thread collects. */
enum { WR_SLOTS = 512, WR_COLLECTIONS = 200, WR_SECONDS = 2 };
static bag *wr_bag;
static atomic_int wr_stop, wr_ready;
static atomic_long wr_got, wr_bad, wr_made, wr_fail, wr_collections;

static void *wr_maker(void *arg)
{
    node *token = make_node(&plain_type, 0);
    if (token == NULL) {
        atomic_fetch_add(&wr_fail, 1);
        atomic_store(&wr_ready, 1);
        return NULL;
    }
    for (long i = 0; !atomic_load(&wr_stop); i++) {
        /* a few thousand objects per collection, not millions */
        while (atomic_load(&wr_made) > (atomic_load(&wr_collections) + 1) * 4 * WR_SLOTS &&
               !atomic_load(&wr_stop)) {
            ftm_safepoint();
            sched_yield();
        }
        node *n = make_node(&node_type, 0);
        if (n == NULL) {
            atomic_fetch_add(&wr_fail, 1);
            break;
        }
        ftm_field_init(&n->anchor, ftm_newref(&token->ob));
        link_next(n, n);
        ftm_weakref *w = ftm_weakref_new(&n->ob, NULL, NULL);
        if (w == NULL) {
            atomic_fetch_add(&wr_fail, 1);
            ftm_decref(&n->ob);
            break;
        }
        ftm_field_store(&wr_bag->items[i % WR_SLOTS], ftm_weakref_as_object(w)); /* steals w */
        ftm_decref(&n->ob); /* garbage now */
        atomic_fetch_add(&wr_made, 1);
        if (i == WR_SLOTS)
            atomic_store(&wr_ready, 1);
    }
    atomic_store(&wr_ready, 1);
    ftm_decref(&token->ob);
    return NULL;
}

static void *wr_reader(void *arg)
{
    uint64_t rng = 0xBEEF;
    while (!atomic_load(&wr_stop)) {
        ftm_safepoint(); /* this loop creates nothing */
        ftm_object *wo = ftm_field_load(&wr_bag->items[ftt_rand(&rng) % WR_SLOTS]);
        if (wo == NULL)
            continue;
        node *n = (node *)ftm_weakref_get((ftm_weakref *)wo);
        if (n != NULL) {
            atomic_fetch_add(&wr_got, 1);
            for (int k = 0; k < 2; k++) { /* now and a little later */
                if (atomic_load(&n->canary) != ALIVE || ftm_field_peek(&n->next) != &n->ob ||
                    ftm_field_peek(&n->anchor) == NULL)
                    atomic_fetch_add(&wr_bad, 1);
                if (k == 0)
                    sched_yield();
            }
            ftm_decref(&n->ob);
        }
        ftm_decref(wo);
    }
    return NULL;
}

Test(gc, weakref_get_races_collections)
{
    wr_bag = new_bag(WR_SLOTS);
    pthread_t m, r;
    cr_assert_eq(pthread_create(&m, NULL, wr_maker, NULL), 0);
    while (!atomic_load(&wr_ready)) {
        ftm_safepoint();
        sched_yield();
    }
    cr_assert_eq(pthread_create(&r, NULL, wr_reader, NULL), 0);
    long collections = 0, found = 0, eagain = 0;
    double end = ftt_now() + WR_SECONDS;
    while (collections < WR_COLLECTIONS && ftt_now() < end && !atomic_load(&wr_fail)) {
        ssize_t c = ftm_gc_collect(collections % 8 == 7 ? 2 : 0);
        if (c < 0)
            eagain++;
        else
            found += c;
        collections++;
        atomic_store(&wr_collections, collections);
    }
    atomic_store(&wr_stop, 1);
    ftm_thread_detach();
    pthread_join(m, NULL);
    pthread_join(r, NULL);
    ftm_thread_attach();
    cr_log_info("%ld collections found %ld objects; %ld made, %ld got through weak references", collections, found,
                atomic_load(&wr_made), atomic_load(&wr_got));
    cr_assert_eq(atomic_load(&wr_fail), 0, "allocation failed");
    cr_assert_eq(atomic_load(&wr_bad), 0,
                 "%ld times ftm_weakref_get returned an object that the collector then cleared or freed",
                 atomic_load(&wr_bad));
    if (eagain != 0) /* a loaded machine: see threads_race_collections */
        cr_log_warn("%ld of %ld collections abandoned (EAGAIN)", eagain, collections);
    cr_assert_leq(eagain * 4, collections, "%ld of %ld collections abandoned", eagain, collections);
    cr_assert_gt(found, 0);
    ftm_decref(&wr_bag->ob.ob_base); /* the weak references go with it */
    ftm_gc_collect(2);
    ftm_thread_flush();
    cr_assert_eq(atomic_load(&n_bad_dealloc), 0);
    cr_assert_eq(live(), 0, "%ld objects left", live());
}

/* ---- misuse ------------------------------------------------------------------------ */

typedef void (*child_fn)(void *);

/* The child dies of SIGABRT after printing "ftmem: ..." (containing
 * `needle` when given). */
static void expect_abort_arg(child_fn fn, void *arg, const char *what, const char *needle)
{
    ftt_child_t r;
    char st[128];
    ftt_run_child(fn, arg, 20, &r);
    cr_assert(r.status != -1, "%s: could not fork", what);
    cr_assert(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT, "%s: child %s, expected SIGABRT; stderr:\n%s",
              what, ftt_status_str(r.status, st, sizeof st), r.err);
    const char *m = strstr(r.err, "ftmem: ");
    cr_assert(m != NULL, "%s: no \"ftmem: \" message:\n%s", what, r.err);
    if (needle != NULL)
        cr_assert(strstr(m, needle) != NULL, "%s: message does not name \"%s\":\n%s", what, needle, r.err);
}
static void expect_abort(child_fn fn, const char *what, const char *needle)
{
    expect_abort_arg(fn, NULL, what, needle);
}

static void detach_after_use(void)
{
    ftm_object *o = ftm_new(&node_type); /* registers and attaches */
    if (o != NULL)
        ftm_decref(o);
    ftm_thread_detach();
}
static void collect_detached(void *arg)
{
    detach_after_use();
    ftm_gc_collect(2);
}
static void get_objects_detached(void *arg)
{
    detach_after_use();
    ftm_object *out[4];
    size_t n = ftm_gc_get_objects(-1, out, 4);
    (void)n;
}
static void freeze_detached(void *arg)
{
    detach_after_use();
    ftm_gc_freeze();
}

Test(gc, detached_thread_aborts)
{
    expect_abort(collect_detached, "ftm_gc_collect from a detached thread", NULL);
    expect_abort(get_objects_detached, "ftm_gc_get_objects from a detached thread", NULL);
    expect_abort(freeze_detached, "ftm_gc_freeze from a detached thread", NULL);
}

#if defined(FTMEM_TEST_GC_DEBUG)
/* FTMEM_DEBUG: a clear that leaves references behind, and traverse visits
 * of memory that is not an object or of a freed object, abort naming the
 * type. */
static void noop_clear(ftm_object *self) {}
static ftm_type badclear_type = {.name = "gc_badclear", .basic_size = sizeof(node), .flags = FTM_TYPE_GC,
                                 .traverse = node_traverse, .clear = noop_clear};
static void bad_clear_child(void *arg)
{
    node *n = (node *)ftm_new(&badclear_type);
    ftm_field_store(&n->next, ftm_newref(&n->ob));
    ftm_decref(&n->ob);
    ftm_gc_collect(2);
}

/* memory that is not an object: a static, and the inside of an object */
static struct {
    ftm_object fake;
    char pad[64];
} not_an_object;
static int visit_static(ftm_object *self, ftm_visitproc visit, void *arg)
{
    return visit(&not_an_object.fake, arg);
}
static int visit_interior(ftm_object *self, ftm_visitproc visit, void *arg)
{
    return visit((ftm_object *)((char *)self + offsetof(node, next)), arg);
}
static ftm_type badvisit_type = {.name = "gc_badvisit", .basic_size = sizeof(node), .flags = FTM_TYPE_GC,
                                 .traverse = visit_static, .clear = node_clear};
static ftm_type interior_type = {.name = "gc_interior", .basic_size = sizeof(node), .flags = FTM_TYPE_GC,
                                 .traverse = visit_interior, .clear = node_clear};
static void bad_visit_child(void *arg)
{
    ftm_object *o = ftm_new(arg);
    (void)o; /* held: the collector traverses it */
    ftm_gc_collect(2);
}

/* `next` holds a raw pointer (no reference) to an object freed before the
 * collection started. */
static int visit_raw(ftm_object *self, ftm_visitproc visit, void *arg)
{
    ftm_object *o = atomic_load(&((node *)self)->next);
    return o != NULL ? visit(o, arg) : 0;
}
static void forget_raw(ftm_object *self) { atomic_store(&((node *)self)->next, NULL); }
static ftm_type stale_type = {.name = "gc_staleptr", .basic_size = sizeof(node), .flags = FTM_TYPE_GC,
                              .traverse = visit_raw, .clear = forget_raw};
static void stale_visit_child(void *arg)
{
    ftm_object *holder = ftm_new(&stale_type);
    ftm_object *victim = ftm_new(&node_type);
    atomic_store(&((node *)holder)->next, victim); /* no reference taken */
    ftm_decref(victim);                            /* freed */
    ftm_gc_collect(2);
}

Test(gc, debug_clear_leaving_references_aborts)
{
    expect_abort(bad_clear_child, "a clear that leaves references", "gc_badclear");
}
Test(gc, debug_traverse_visiting_inside_of_object_aborts)
{
    expect_abort_arg(bad_visit_child, &interior_type, "traverse visiting the inside of an object", "gc_interior");
}
Test(gc, debug_traverse_visiting_static_memory_aborts)
{
    expect_abort_arg(bad_visit_child, &badvisit_type, "traverse visiting static memory", "gc_badvisit");
}
Test(gc, debug_traverse_visiting_freed_object_aborts)
{
    expect_abort(stale_visit_child, "traverse visiting a freed object", "gc_staleptr");
}
#endif
