/* test_object.c — the object layer's types and objects through the public
 * API: ftm_type_ready refusing bad types, ftm_new / ftm_new_var (header,
 * zeroed body, item counts, overflow), ftm_sizeof, per-thread free lists,
 * PEP 442 finalizers (once, resurrection), deep chains freed without
 * recursion (trashcan), and the header layout. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "ftm_test.h"
#include <ftmem.h>

TestSuite(object, .timeout = 120);

/* ---- header layout ------------------------------------------------------ */

Test(object, header_is_24_bytes)
{
    cr_assert_eq(sizeof(ftm_object), 24, "sizeof(ftm_object) = %zu", sizeof(ftm_object));
    cr_assert_eq(offsetof(ftm_object, ob_tid), 0);
    cr_assert_eq(offsetof(ftm_object, ob_ref_local), 4);
    cr_assert_eq(offsetof(ftm_object, ob_ref_shared), 8);
    cr_assert_eq(offsetof(ftm_object, ob_gc_bits), 12);
    cr_assert_eq(offsetof(ftm_object, ob_flags), 13);
    cr_assert_eq(offsetof(ftm_object, ob_deferred), 14);
    cr_assert_eq(offsetof(ftm_object, ob_type), 16);
    cr_assert_eq(sizeof(ftm_varobject), 32, "sizeof(ftm_varobject) = %zu", sizeof(ftm_varobject));
    cr_assert_eq(offsetof(ftm_varobject, ob_size), 24);
}

/* ---- ftm_type_ready: refused types ------------------------------------- */

static int dummy_traverse(ftm_object *self, ftm_visitproc visit, void *arg) { return 0; }
static void dummy_clear(ftm_object *self) {}

static ftm_type *g_refuse_type;
static int g_refuse_rc, g_refuse_errno;
static void call_type_ready(void)
{
    errno = 0;
    g_refuse_rc = ftm_type_ready(g_refuse_type);
    g_refuse_errno = errno;
}

/* ftm_type_ready gives -1/EINVAL with a message naming the type; ftm_new
 * and ftm_new_var give NULL/EINVAL, also on later calls. */
static void expect_refused(ftm_type *t, const char *what)
{
    g_refuse_type = t;
    char *err = ftt_capture_stderr(call_type_ready);
    cr_assert_eq(g_refuse_rc, -1, "%s: ftm_type_ready returned %d", what, g_refuse_rc);
    cr_assert_eq(g_refuse_errno, EINVAL, "%s: errno %d, want EINVAL", what, g_refuse_errno);
    cr_assert_not_null(err);
    cr_assert(strstr(err, "ftmem:") != NULL, "%s: no ftmem message on stderr: \"%s\"", what, err);
    if (t->name != NULL)
        cr_assert(strstr(err, t->name) != NULL, "%s: message does not name type %s: \"%s\"", what, t->name, err);
    free(err);
    for (int i = 0; i < 2; i++) {
        errno = 0;
        ftm_object *o = ftm_new(t);
        cr_assert_null(o, "%s: ftm_new accepted the type (call %d)", what, i);
        cr_assert_eq(errno, EINVAL, "%s: ftm_new errno %d, want EINVAL", what, errno);
        errno = 0;
        o = ftm_new_var(t, 3);
        cr_assert_null(o, "%s: ftm_new_var accepted the type", what);
        cr_assert_eq(errno, EINVAL, "%s: ftm_new_var errno %d, want EINVAL", what, errno);
        errno = 0;
        cr_assert_eq(ftm_type_ready(t), -1, "%s: ftm_type_ready accepted it later", what);
        cr_assert_eq(errno, EINVAL);
    }
}

Test(object, refuses_basic_size_below_header)
{
    static ftm_type t0 = {.name = "refuse_size0", .basic_size = 0};
    static ftm_type t1 = {.name = "refuse_size23", .basic_size = sizeof(ftm_object) - 1};
    expect_refused(&t0, "basic_size 0");
    expect_refused(&t1, "basic_size header-1");
}

Test(object, refuses_var_type_without_varobject_room)
{
    static ftm_type t = {.name = "refuse_var", .basic_size = sizeof(ftm_object), .item_size = 8};
    static ftm_type t2 = {.name = "refuse_var31", .basic_size = sizeof(ftm_varobject) - 1, .item_size = 1};
    expect_refused(&t, "var type with basic_size = header");
    expect_refused(&t2, "var type with basic_size = varobject-1");
}

Test(object, refuses_gc_without_traverse_or_clear)
{
    static ftm_type a = {.name = "refuse_gc_noclear", .basic_size = 32, .flags = FTM_TYPE_GC,
                         .traverse = dummy_traverse};
    static ftm_type b = {.name = "refuse_gc_notraverse", .basic_size = 32, .flags = FTM_TYPE_GC,
                         .clear = dummy_clear};
    static ftm_type c = {.name = "refuse_gc_neither", .basic_size = 32, .flags = FTM_TYPE_GC};
    expect_refused(&a, "GC without clear");
    expect_refused(&b, "GC without traverse");
    expect_refused(&c, "GC without traverse and clear");
}

Test(object, refuses_traverse_without_clear)
{
    static ftm_type t = {.name = "refuse_trav_only", .basic_size = 40, .traverse = dummy_traverse};
    expect_refused(&t, "traverse without clear");
}

Test(object, refuses_freelist_on_var_type)
{
    static ftm_type t = {.name = "refuse_fl_var", .basic_size = sizeof(ftm_varobject), .item_size = 4,
                         .flags = FTM_TYPE_FREELIST};
    expect_refused(&t, "free list on a var type");
}

Test(object, refuses_unnamed_and_unknown_flags)
{
    static ftm_type a = {.name = NULL, .basic_size = 32};
    static ftm_type b = {.name = "refuse_flags", .basic_size = 32, .flags = 0x80};
    expect_refused(&a, "no name");
    expect_refused(&b, "unknown flag 0x80");
}

Test(object, accepts_good_types)
{
    static ftm_type plain = {.name = "ok_plain", .basic_size = sizeof(ftm_object)};
    static ftm_type var = {.name = "ok_var", .basic_size = sizeof(ftm_varobject), .item_size = 16};
    static ftm_type gc = {.name = "ok_gc", .basic_size = 48, .flags = FTM_TYPE_GC, .traverse = dummy_traverse,
                          .clear = dummy_clear};
    static ftm_type clear_only = {.name = "ok_clear_only", .basic_size = 48, .clear = dummy_clear};
    static ftm_type fl = {.name = "ok_fl", .basic_size = 64, .flags = FTM_TYPE_FREELIST};
    ftm_type *all[] = {&plain, &var, &gc, &clear_only, &fl};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        cr_assert_eq(ftm_type_ready(all[i]), 0, "type %s refused", all[i]->name);
        cr_assert_eq(ftm_type_ready(all[i]), 0, "type %s refused the second time", all[i]->name);
        ftm_object *o = ftm_new(all[i]);
        cr_assert_not_null(o, "ftm_new(%s) failed", all[i]->name);
        cr_assert_eq(ftm_type_of(o), all[i]);
        ftm_decref(o);
    }
}

/* First use of one type from many threads at once: every ftm_new works. */
static ftm_type race_type = {.name = "race_ready", .basic_size = 48, .flags = FTM_TYPE_FREELIST};
static ftm_type race_bad = {.name = "race_bad", .basic_size = 8};
static atomic_int race_go;
static atomic_int race_fail;

static void *race_ready_thread(void *arg)
{
    while (!atomic_load(&race_go))
        sched_yield();
    for (int i = 0; i < 200; i++) {
        ftm_object *o = ftm_new(&race_type);
        if (o == NULL || ftm_type_of(o) != &race_type || ftm_refcount(o) != 1)
            atomic_fetch_add(&race_fail, 1);
        if (o)
            ftm_decref(o);
        errno = 0;
        if (ftm_new(&race_bad) != NULL || errno != EINVAL)
            atomic_fetch_add(&race_fail, 1);
    }
    return NULL;
}

Test(object, type_ready_concurrent_first_use)
{
    enum { T = 8 };
    pthread_t th[T];
    for (int i = 0; i < T; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, race_ready_thread, NULL), 0);
    atomic_store(&race_go, 1);
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&race_fail), 0, "%d failed creations under concurrent first use",
                 atomic_load(&race_fail));
    cr_assert_eq(ftm_type_ready(&race_type), 0);
    cr_assert_eq(ftm_type_ready(&race_bad), -1);
}

/* ---- ftm_new / ftm_new_var ------------------------------------------------ */

typedef struct {
    ftm_object ob;
    unsigned char body[232];
} fat_obj;
static ftm_type fat_type = {.name = "fat", .basic_size = sizeof(fat_obj)};

typedef struct {
    ftm_varobject ob;
    uint64_t extra; /* reported by sizeof_extra */
    uint64_t items[];
} vec_obj;
static size_t vec_extra(const ftm_object *o) { return (size_t)((const vec_obj *)o)->extra; }
static ftm_type vec_type = {.name = "vec", .basic_size = sizeof(vec_obj), .item_size = sizeof(uint64_t),
                            .sizeof_extra = vec_extra};
static ftm_type bytes_type = {.name = "bytes", .basic_size = sizeof(ftm_varobject), .item_size = 1};

static void check_fresh_header(ftm_object *o, const ftm_type *t)
{
    cr_assert_eq(ftm_type_of(o), t);
    cr_assert_eq(ftm_refcount(o), 1, "fresh object refcount %zd", ftm_refcount(o));
    cr_assert_neq(atomic_load(&o->ob_tid), 0u, "fresh object has no owner");
    cr_assert_neq(atomic_load(&o->ob_tid), UINT32_MAX);
    cr_assert_eq(atomic_load(&o->ob_ref_local), 1u);
    cr_assert_eq(atomic_load(&o->ob_ref_shared), 0);
    cr_assert_eq(atomic_load(&o->ob_flags), 0);
    cr_assert_eq(atomic_load(&o->ob_gc_bits), 0);
    cr_assert_eq(atomic_load(&o->ob_deferred), 0);
    cr_assert(!ftm_is_immortal(o));
    cr_assert(!ftm_is_deferred(o));
}

Test(object, new_zeroed_body_refcount_one)
{
    /* dirty the memory, free it, and allocate again: each new body is zero */
    for (int round = 0; round < 50; round++) {
        fat_obj *o = (fat_obj *)ftm_new(&fat_type);
        cr_assert_not_null(o);
        check_fresh_header(&o->ob, &fat_type);
        size_t nz = ftt_first_nonzero(o->body, sizeof o->body);
        cr_assert_eq(nz, SIZE_MAX, "round %d: body byte %zu not zero", round, nz);
        memset(o->body, 0xA5, sizeof o->body);
        ftm_decref(&o->ob);
    }
    /* ftm_object_stats counts them */
    ftm_object_stats_t a, b;
    ftm_object_stats_get(&a);
    ftm_object *o = ftm_new(&fat_type);
    ftm_object_stats_get(&b);
    cr_assert_eq(b.created - a.created, 1);
    ftm_decref(o);
    ftm_object_stats_get(&a);
    cr_assert_eq(a.freed - b.freed, 1);
}

Test(object, new_var_items_zeroed_and_sized)
{
    size_t counts[] = {0, 1, 7, 100, 1000, 70000 /* > small classes */, 300000};
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
            size_t n = counts[i];
            vec_obj *v = (vec_obj *)ftm_new_var(&vec_type, n);
            cr_assert_not_null(v, "ftm_new_var(%zu) failed", n);
            check_fresh_header(&v->ob.ob_base, &vec_type);
            cr_assert_eq(ftm_var_size(&v->ob.ob_base), n);
            cr_assert_eq(v->ob.ob_size, n);
            cr_assert_eq(v->extra, 0);
            size_t nz = ftt_first_nonzero(v->items, n * sizeof(uint64_t));
            cr_assert_eq(nz, SIZE_MAX, "items[%zu]: byte %zu not zero (round %d)", n, nz, round);
            memset(v->items, 0xFF, n * sizeof(uint64_t));
            v->extra = 0xFFFFFFFFu;
            ftm_decref(&v->ob.ob_base);
        }
    }
    /* a var type through plain ftm_new has ob_size 0 */
    ftm_object *o = ftm_new(&vec_type);
    cr_assert_not_null(o);
    cr_assert_eq(ftm_var_size(o), 0);
    ftm_decref(o);
}

Test(object, new_var_overflow_is_enomem)
{
    ftm_object *o;
    errno = 0;
    o = ftm_new_var(&vec_type, ftt_hide(SIZE_MAX));
    cr_assert_null(o);
    cr_assert_eq(errno, ENOMEM, "SIZE_MAX items: errno %d", errno);
    errno = 0;
    o = ftm_new_var(&vec_type, ftt_hide(SIZE_MAX / sizeof(uint64_t) + 1)); /* multiplication wraps */
    cr_assert_null(o);
    cr_assert_eq(errno, ENOMEM, "items * size wraps: errno %d", errno);
    errno = 0;
    o = ftm_new_var(&bytes_type, ftt_hide(SIZE_MAX - 8)); /* addition wraps */
    cr_assert_null(o);
    cr_assert_eq(errno, ENOMEM, "basic + items wraps: errno %d", errno);
    errno = 0;
    o = ftm_new_var(&bytes_type, ftt_hide((size_t)PTRDIFF_MAX)); /* beyond PTRDIFF_MAX */
    cr_assert_null(o);
    cr_assert_eq(errno, ENOMEM, "size > PTRDIFF_MAX: errno %d", errno);
    errno = 0;
    o = ftm_new_var(&bytes_type, ftt_hide((size_t)1 << 47)); /* more than the address space */
    cr_assert_null(o);
    cr_assert_eq(errno, ENOMEM, "128 TiB: errno %d", errno);
    /* and the type still works afterwards */
    o = ftm_new_var(&bytes_type, 10);
    cr_assert_not_null(o);
    cr_assert_eq(ftm_var_size(o), 10);
    ftm_decref(o);
}

Test(object, sizeof_counts_items_and_extra)
{
    ftm_object *f = ftm_new(&fat_type);
    cr_assert_eq(ftm_sizeof(f), sizeof(fat_obj));
    ftm_decref(f);
    vec_obj *v = (vec_obj *)ftm_new_var(&vec_type, 37);
    cr_assert_eq(ftm_sizeof(&v->ob.ob_base), sizeof(vec_obj) + 37 * sizeof(uint64_t));
    v->extra = 1000;
    cr_assert_eq(ftm_sizeof(&v->ob.ob_base), sizeof(vec_obj) + 37 * sizeof(uint64_t) + 1000);
    ftm_decref(&v->ob.ob_base);
    ftm_object *b = ftm_new_var(&bytes_type, 5);
    cr_assert_eq(ftm_sizeof(b), sizeof(ftm_varobject) + 5);
    ftm_decref(b);
}

/* ---- free lists ------------------------------------------------------------ */

typedef struct {
    ftm_object ob;
    uint64_t body[5];
} fl_obj;
static ftm_type fl10_type = {.name = "fl10", .basic_size = sizeof(fl_obj), .flags = FTM_TYPE_FREELIST,
                             .freelist_max = 10};
static ftm_type fldef_type = {.name = "fl_default", .basic_size = sizeof(fl_obj), .flags = FTM_TYPE_FREELIST};

/* Create n, free n, create n again: how many came from the free list. */
static uint64_t freelist_round(ftm_type *t, size_t n)
{
    ftm_object **v = calloc(n, sizeof *v);
    for (size_t i = 0; i < n; i++) {
        v[i] = ftm_new(t);
        cr_assert_not_null(v[i]);
        memset(((fl_obj *)v[i])->body, 0x5A, sizeof((fl_obj *)v[i])->body);
    }
    for (size_t i = 0; i < n; i++)
        ftm_decref(v[i]);
    ftm_object_stats_t a, b;
    ftm_object_stats_get(&a);
    for (size_t i = 0; i < n; i++) {
        v[i] = ftm_new(t);
        cr_assert_not_null(v[i]);
        check_fresh_header(v[i], t);
        size_t nz = ftt_first_nonzero(((fl_obj *)v[i])->body, sizeof((fl_obj *)v[i])->body);
        cr_assert_eq(nz, SIZE_MAX, "object %zu from the free list: body byte %zu not zero", i, nz);
    }
    ftm_object_stats_get(&b);
    for (size_t i = 0; i < n; i++)
        ftm_decref(v[i]);
    free(v);
    return b.freelist_hits - a.freelist_hits;
}

Test(object, freelist_reuse_bounded)
{
#if FTMEM_TEST_OBJECT_CHECKS
    /* debug/secure builds quarantine freed objects (to catch late
     * increfs) instead of keeping free lists: still check the zeroing */
    (void)freelist_round(&fl10_type, 50);
    (void)freelist_round(&fldef_type, 100);
    cr_skip_test("free lists are bypassed in debug/secure builds");
#elif defined(FTMEM_TEST_TRACK)
    /* FTMEM_TRACK builds free every object to the allocator, so the tool
     * sees each death: no free-list hit, ever */
    cr_assert_eq(freelist_round(&fl10_type, 50), 0, "a tracked build reused an object from a free list");
    cr_assert_eq(freelist_round(&fldef_type, 100), 0);
#else
    uint64_t hits = freelist_round(&fl10_type, 50);
    cr_assert_eq(hits, 10, "freelist_max 10: %llu hits for 50 frees", (unsigned long long)hits);
    hits = freelist_round(&fldef_type, 200);
    cr_assert_eq(hits, 80, "default freelist_max (80): %llu hits for 200 frees", (unsigned long long)hits);
    /* a type without FTM_TYPE_FREELIST never hits */
    hits = freelist_round(&fat_type, 20);
    cr_assert_eq(hits, 0);
    /* LIFO reuse of the last freed object */
    ftm_object *a = ftm_new(&fl10_type);
    ftm_decref(a);
    ftm_object *b = ftm_new(&fl10_type);
    cr_assert_eq(a, b, "the free list did not hand back the object just freed");
    ftm_decref(b);
#endif
}

/* An object another thread may be reading (stored in a field) must not be
 * handed out again — free list or not — while that reader's section lasts. */
static ftm_field shared_slot;
static atomic_int rd_state; /* 1: reader inside and holds p; 2: main done */
static ftm_object *rd_seen;
static atomic_int rd_header_ok;

static void *section_reader(void *arg)
{
    ftm_read_begin();
    rd_seen = ftm_field_peek(&shared_slot);
    atomic_store(&rd_state, 1);
    while (atomic_load(&rd_state) != 2)
        sched_yield();
    /* the memory is still ours to look at: the type pointer is intact */
    atomic_store(&rd_header_ok, rd_seen->ob_type == &fl10_type);
    ftm_read_end();
    return NULL;
}

Test(object, shared_object_not_reused_during_read_section)
{
    ftm_object *o = ftm_new(&fl10_type);
    ftm_field_init(&shared_slot, o);
    pthread_t r;
    cr_assert_eq(pthread_create(&r, NULL, section_reader, NULL), 0);
    while (atomic_load(&rd_state) != 1)
        sched_yield();
    cr_assert_eq(rd_seen, o);
    ftm_field_clear(&shared_slot); /* o dies */
    ftm_object *again[300];
    bool reused = false;
    for (int i = 0; i < 300; i++) {
        again[i] = ftm_new(&fl10_type);
        if (again[i] == o)
            reused = true;
    }
    atomic_store(&rd_state, 2);
    pthread_join(r, NULL);
    for (int i = 0; i < 300; i++)
        ftm_decref(again[i]);
    cr_assert(!reused, "a dead shared object was handed out again while a reader was in a read section");
    cr_assert(atomic_load(&rd_header_ok), "the header of a dead shared object changed during the read section");
}

/* ---- finalize (PEP 442), clear, dealloc ----------------------------------- */

typedef struct {
    ftm_object ob;
    uint64_t canary;
    ftm_field child;
} fin_obj;
#define CANARY 0xC0FFEE1234567890ull

static atomic_int n_finalize, n_clear, n_dealloc;
static char order_log[16];
static atomic_int order_pos;
static ftm_object *_Atomic resurrect_to; /* finalize stores a new reference here when set */
static atomic_int resurrect_on;
static _Atomic pthread_t finalize_thread;

static void log_event(char c)
{
    int i = atomic_fetch_add(&order_pos, 1);
    if (i < (int)sizeof order_log - 1)
        order_log[i] = c;
}

static void fin_finalize(ftm_object *self)
{
    atomic_fetch_add(&n_finalize, 1);
    atomic_store(&finalize_thread, pthread_self());
    log_event('F');
    if (((fin_obj *)self)->canary != CANARY)
        log_event('!');
    if (atomic_load(&resurrect_on))
        atomic_store(&resurrect_to, ftm_newref(self));
}
static void fin_clear(ftm_object *self)
{
    atomic_fetch_add(&n_clear, 1);
    log_event('C');
    ftm_field_clear(&((fin_obj *)self)->child);
}
static void fin_dealloc(ftm_object *self)
{
    atomic_fetch_add(&n_dealloc, 1);
    log_event('D');
    ((fin_obj *)self)->canary = 0xDEAD;
}
static ftm_type fin_type = {.name = "fin", .basic_size = sizeof(fin_obj), .clear = fin_clear,
                            .finalize = fin_finalize, .dealloc = fin_dealloc};

static fin_obj *new_fin(void)
{
    fin_obj *o = (fin_obj *)ftm_new(&fin_type);
    cr_assert_not_null(o);
    o->canary = CANARY;
    return o;
}

Test(object, finalize_clear_dealloc_once_in_order)
{
    fin_obj *o = new_fin();
    ftm_incref(&o->ob);
    ftm_decref(&o->ob);
    cr_assert_eq(atomic_load(&n_finalize), 0, "finalize ran while references remained");
    ftm_decref(&o->ob);
    cr_assert_eq(atomic_load(&n_finalize), 1);
    cr_assert_eq(atomic_load(&n_clear), 1);
    cr_assert_eq(atomic_load(&n_dealloc), 1);
    cr_assert_str_eq(order_log, "FCD", "order of callbacks: %s", order_log);
}

Test(object, finalize_resurrects_owner_death)
{
    fin_obj *o = new_fin();
    atomic_store(&resurrect_on, 1);
    ftm_decref(&o->ob);
    atomic_store(&resurrect_on, 0);
    cr_assert_eq(atomic_load(&n_finalize), 1);
    cr_assert_eq(atomic_load(&n_clear), 0, "clear ran on a resurrected object");
    cr_assert_eq(atomic_load(&n_dealloc), 0, "dealloc ran on a resurrected object");
    cr_assert_eq(atomic_load(&resurrect_to), &o->ob);
    cr_assert_eq(o->canary, CANARY);
    cr_assert_eq(ftm_refcount(&o->ob), 1, "resurrected object refcount %zd", ftm_refcount(&o->ob));
    /* still a working object */
    ftm_incref(&o->ob);
    ftm_decref(&o->ob);
    cr_assert_eq(atomic_load(&n_dealloc), 0);
    /* now it dies for good, without a second finalize */
    ftm_decref(atomic_exchange(&resurrect_to, NULL));
    cr_assert_eq(atomic_load(&n_finalize), 1, "finalize ran again");
    cr_assert_eq(atomic_load(&n_clear), 1);
    cr_assert_eq(atomic_load(&n_dealloc), 1);
    cr_assert_str_eq(order_log, "FCD");
}

/* Death through ob_ref_shared on another thread: finalize runs there,
 * resurrects; the final death (on main) does not finalize again. */
static fin_obj *g_fin;
static void *drop_last_ref(void *arg)
{
    ftm_decref(&g_fin->ob);
    return NULL;
}
static void *take_ref(void *arg)
{
    ftm_incref(&g_fin->ob);
    return NULL;
}

Test(object, finalize_resurrects_shared_death)
{
    g_fin = new_fin();
    pthread_t t;
    /* T takes a reference (shared), main drops its own: merged, T holds the last */
    pthread_create(&t, NULL, take_ref, NULL);
    pthread_join(t, NULL);
    ftm_decref(&g_fin->ob);
    cr_assert_eq(atomic_load(&n_finalize), 0);
    atomic_store(&resurrect_on, 1);
    pthread_create(&t, NULL, drop_last_ref, NULL);
    pthread_join(t, NULL);
    atomic_store(&resurrect_on, 0);
    cr_assert_eq(atomic_load(&n_finalize), 1, "finalize did not run on the thread dropping the last reference");
    cr_assert(pthread_equal(atomic_load(&finalize_thread), t), "finalize ran on another thread");
    cr_assert_eq(atomic_load(&n_dealloc), 0, "resurrected object deallocated");
    cr_assert_eq(atomic_load(&resurrect_to), &g_fin->ob);
    cr_assert_eq(ftm_refcount(&g_fin->ob), 1);
    cr_assert_eq(g_fin->canary, CANARY);
    /* main holds the resurrected reference now and drops it */
    ftm_decref(atomic_exchange(&resurrect_to, NULL));
    cr_assert_eq(atomic_load(&n_finalize), 1, "finalize ran a second time");
    cr_assert_eq(atomic_load(&n_clear), 1);
    cr_assert_eq(atomic_load(&n_dealloc), 1);
}

/* Death through the owner's merge of a queued object. */
Test(object, finalize_on_queued_death)
{
    g_fin = new_fin();
    pthread_t t;
    pthread_create(&t, NULL, drop_last_ref, NULL); /* main's only reference, dropped by T: queued */
    pthread_join(t, NULL);
    ftm_thread_flush();
    cr_assert_eq(atomic_load(&n_finalize), 1);
    cr_assert_eq(atomic_load(&n_clear), 1);
    cr_assert_eq(atomic_load(&n_dealloc), 1);
    cr_assert_str_eq(order_log, "FCD");
}

/* A child held in a field is released by clear when the parent dies. */
Test(object, clear_releases_children)
{
    fin_obj *parent = new_fin();
    fin_obj *child = new_fin();
    ftm_field_init(&parent->child, &child->ob);
    ftm_decref(&parent->ob);
    cr_assert_eq(atomic_load(&n_finalize), 2);
    cr_assert_eq(atomic_load(&n_clear), 2);
    cr_assert_eq(atomic_load(&n_dealloc), 2);
}

/* ---- trashcan: a million-long chain ------------------------------------- */

typedef struct {
    ftm_object ob;
    ftm_field next;
    uint64_t index;
} link_obj;
static atomic_long links_dead;
static void link_clear(ftm_object *self) { ftm_field_clear(&((link_obj *)self)->next); }
static void link_dealloc(ftm_object *self) { atomic_fetch_add_explicit(&links_dead, 1, memory_order_relaxed); }
static ftm_type link_type = {.name = "link", .basic_size = sizeof(link_obj), .clear = link_clear,
                             .dealloc = link_dealloc};

enum { CHAIN = 1000000 };
static void *chain_thread(void *arg)
{
    bool use_fields = arg != NULL;
    link_obj *head = (link_obj *)ftm_new(&link_type), *tail = head;
    if (head == NULL)
        return (void *)1;
    for (long i = 1; i < CHAIN; i++) {
        link_obj *n = (link_obj *)ftm_new(&link_type);
        if (n == NULL)
            return (void *)1;
        n->index = (uint64_t)i;
        if (use_fields)
            ftm_field_init(&tail->next, &n->ob);
        else
            atomic_store_explicit(&tail->next, &n->ob, memory_order_relaxed); /* exclusive: no sharing */
        tail = n;
    }
    ftm_decref(&head->ob);
    return NULL;
}

static void run_chain(bool fields)
{
    ftm_object_stats_t a, b;
    ftm_object_stats_get(&a);
    /* a small stack: recursion per link would overflow it within a few
     * thousand links, never mind a million */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1 << 20);
    pthread_t t;
    void *res;
    cr_assert_eq(pthread_create(&t, &attr, chain_thread, fields ? (void *)1 : NULL), 0);
    pthread_join(t, &res);
    cr_assert_null(res, "allocation failed building the chain");
    cr_assert_eq(atomic_load(&links_dead), CHAIN, "%ld of %d links deallocated", atomic_load(&links_dead), CHAIN);
    ftm_object_stats_get(&b);
    cr_assert_eq(b.freed - a.freed, (uint64_t)CHAIN);
    cr_assert_eq(b.created - a.created, (uint64_t)CHAIN);
}

Test(object, trashcan_million_chain_fields)
{
    run_chain(true);
}

Test(object, trashcan_million_chain_plain)
{
    run_chain(false);
}
