/* test_intern.c — intern tables: one canonical immortal instance per value
 * (a small string type of our own), the duplicate's reference released,
 * lookups, counts, tables with colliding hashes, several tables, threads
 * interning the same values concurrently, EINVAL for missing callbacks,
 * and freeing a table (its objects stay). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "ftm_test.h"
#include <ftmem.h>

TestSuite(intern, .timeout = 120);

typedef struct {
    ftm_varobject ob; /* ob_size: length without the NUL */
    uint64_t hash;
    char data[];
} str_obj;

static atomic_long n_dead;
static void str_dealloc(ftm_object *self)
{
    ((str_obj *)self)->hash = 0xDEAD;
    atomic_fetch_add(&n_dead, 1);
}
static ftm_type str_type = {.name = "str", .basic_size = sizeof(str_obj) + 1, .item_size = 1,
                            .dealloc = str_dealloc};

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static str_obj *new_str(const char *s)
{
    size_t n = strlen(s);
    str_obj *o = (str_obj *)ftm_new_var(&str_type, n);
    if (o == NULL)
        return NULL;
    memcpy(o->data, s, n + 1);
    o->hash = fnv(s, n);
    return o;
}
static str_obj *new_strf(const char *fmt, unsigned v)
{
    char buf[64];
    snprintf(buf, sizeof buf, fmt, v);
    return new_str(buf);
}

static atomic_long n_hash_calls, n_eq_calls;
static uint64_t str_hash(const ftm_object *o)
{
    atomic_fetch_add_explicit(&n_hash_calls, 1, memory_order_relaxed);
    return ((const str_obj *)o)->hash;
}
static uint64_t str_bad_hash(const ftm_object *o) { return 42; }
static bool str_eq(const ftm_object *a, const ftm_object *b)
{
    atomic_fetch_add_explicit(&n_eq_calls, 1, memory_order_relaxed);
    const str_obj *x = (const str_obj *)a, *y = (const str_obj *)b;
    return ftm_var_size(a) == ftm_var_size(b) && memcmp(x->data, y->data, ftm_var_size(a)) == 0;
}

static bool str_is(const ftm_object *o, const char *s)
{
    const str_obj *x = (const str_obj *)o;
    return ftm_type_of(o) == &str_type && ftm_var_size(o) == strlen(s) && strcmp(x->data, s) == 0 &&
           x->hash == fnv(s, strlen(s));
}

/* ---- single thread ------------------------------------------------------------ */

Test(intern, canonical_instance_and_duplicate_released)
{
    ftm_intern_table *t = ftm_intern_table_new(str_hash, str_eq);
    cr_assert_not_null(t);
    cr_assert_eq(ftm_intern_count(t), 0);
    str_obj *a = new_str("hello");
    ftm_object *ca = ftm_intern(t, &a->ob.ob_base);
    cr_assert_eq(ca, &a->ob.ob_base, "the first instance is the canonical one");
    cr_assert(ftm_is_immortal(ca), "canonical instance is not immortal");
    cr_assert_eq(ftm_intern_count(t), 1);
    cr_assert_eq(atomic_load(&n_dead), 0);

    str_obj *b = new_str("hello");
    ftm_object *cb = ftm_intern(t, &b->ob.ob_base);
    cr_assert_eq(cb, &a->ob.ob_base, "an equal value got another instance");
    cr_assert_eq(atomic_load(&n_dead), 1, "the duplicate's reference was not released");
    cr_assert_eq(ftm_intern_count(t), 1);

    /* interning the canonical instance again changes nothing */
    cr_assert_eq(ftm_intern(t, ca), ca);
    cr_assert_eq(ftm_intern_count(t), 1);
    cr_assert_eq(atomic_load(&n_dead), 1);

    /* lookups take no reference and do not insert */
    str_obj *probe = new_str("hello");
    cr_assert_eq(ftm_intern_lookup(t, &probe->ob.ob_base), ca);
    cr_assert_eq(ftm_refcount(&probe->ob.ob_base), 1);
    ftm_decref(&probe->ob.ob_base);
    str_obj *miss = new_str("world");
    cr_assert_null(ftm_intern_lookup(t, &miss->ob.ob_base));
    cr_assert_eq(ftm_intern_count(t), 1, "a lookup inserted");
    ftm_object *cw = ftm_intern(t, &miss->ob.ob_base);
    cr_assert_eq(cw, &miss->ob.ob_base);
    cr_assert_eq(ftm_intern_count(t), 2);
    /* "hello" and "hell" + "o": same bytes through another construction */
    char buf[8] = "hell";
    strcat(buf, "o");
    str_obj *c = new_str(buf);
    cr_assert_eq(ftm_intern(t, &c->ob.ob_base), ca);
    /* canonical instances never die */
    for (int i = 0; i < 10; i++)
        ftm_decref(ca);
    cr_assert(str_is(ca, "hello"));
    cr_assert(str_is(cw, "world"));
    ftm_intern_table_free(t);
    cr_assert(str_is(ca, "hello"), "freeing the table damaged an interned object");
    cr_assert(str_is(cw, "world"));
    cr_assert(ftm_is_immortal(ca));
}

Test(intern, many_values_and_lookups)
{
    enum { N = 6000 };
    static ftm_object *canon[N];
    ftm_intern_table *t = ftm_intern_table_new(str_hash, str_eq);
    for (unsigned i = 0; i < N; i++) {
        canon[i] = ftm_intern(t, &new_strf("value-%u", i)->ob.ob_base);
        cr_assert_not_null(canon[i]);
    }
    cr_assert_eq(ftm_intern_count(t), N);
    cr_assert_eq(atomic_load(&n_dead), 0);
    for (unsigned i = 0; i < N; i++) {
        str_obj *p = new_strf("value-%u", i);
        cr_assert_eq(ftm_intern_lookup(t, &p->ob.ob_base), canon[i], "lookup of value-%u", i);
        cr_assert_eq(ftm_intern(t, &p->ob.ob_base), canon[i], "intern of a duplicate of value-%u", i);
        char want[32];
        snprintf(want, sizeof want, "value-%u", i);
        cr_assert(str_is(canon[i], want));
    }
    cr_assert_eq(atomic_load(&n_dead), N, "%ld of %d duplicates released", atomic_load(&n_dead), N);
    cr_assert_eq(ftm_intern_count(t), N);
    ftm_intern_table_free(t);
}

/* Every value hashes alike: equality alone tells them apart. */
Test(intern, colliding_hashes)
{
    enum { N = 300 };
    static ftm_object *canon[N];
    ftm_intern_table *t = ftm_intern_table_new(str_bad_hash, str_eq);
    for (unsigned i = 0; i < N; i++)
        canon[i] = ftm_intern(t, &new_strf("c%u", i)->ob.ob_base);
    cr_assert_eq(ftm_intern_count(t), N);
    for (unsigned i = 0; i < N; i++) {
        for (unsigned j = 0; j < i; j++)
            cr_assert_neq(canon[i], canon[j]);
        cr_assert_eq(ftm_intern(t, &new_strf("c%u", i)->ob.ob_base), canon[i], "colliding value c%u", i);
    }
    cr_assert_eq(atomic_load(&n_dead), N);
    cr_assert_eq(ftm_intern_count(t), N);
    ftm_intern_table_free(t);
}

Test(intern, tables_are_independent)
{
    ftm_intern_table *t1 = ftm_intern_table_new(str_hash, str_eq);
    ftm_intern_table *t2 = ftm_intern_table_new(str_hash, str_eq);
    ftm_object *a1 = ftm_intern(t1, &new_str("x")->ob.ob_base);
    str_obj *probe = new_str("x");
    cr_assert_null(ftm_intern_lookup(t2, &probe->ob.ob_base), "a value interned in t1 is visible in t2");
    ftm_object *a2 = ftm_intern(t2, &probe->ob.ob_base);
    cr_assert_eq(a2, &probe->ob.ob_base);
    cr_assert_neq(a1, a2);
    cr_assert_eq(ftm_intern_count(t1), 1);
    cr_assert_eq(ftm_intern_count(t2), 1);
    ftm_intern_table_free(t1);
    cr_assert_eq(ftm_intern(t2, &new_str("x")->ob.ob_base), a2, "t2 affected by freeing t1");
    ftm_intern_table_free(t2);
    ftm_intern_table_free(NULL);
}

Test(intern, einval_for_missing_callbacks)
{
    errno = 0;
    cr_assert_null(ftm_intern_table_new(NULL, str_eq));
    cr_assert_eq(errno, EINVAL);
    errno = 0;
    cr_assert_null(ftm_intern_table_new(str_hash, NULL));
    cr_assert_eq(errno, EINVAL);
    errno = 0;
    cr_assert_null(ftm_intern_table_new(NULL, NULL));
    cr_assert_eq(errno, EINVAL);
}

/* An object created by a thread that has exited can be interned. */
static _Atomic(str_obj *) orphan;
static void *make_orphan(void *arg)
{
    atomic_store(&orphan, new_str("orphan"));
    return NULL;
}

Test(intern, object_of_exited_thread)
{
    ftm_intern_table *t = ftm_intern_table_new(str_hash, str_eq);
    pthread_t th;
    pthread_create(&th, NULL, make_orphan, NULL);
    pthread_join(th, NULL);
    str_obj *o = atomic_load(&orphan);
    ftm_object *c = ftm_intern(t, &o->ob.ob_base);
    cr_assert_eq(c, &o->ob.ob_base, "interning an exited thread's object failed (errno %d)", errno);
    cr_assert(ftm_is_immortal(c));
    ftm_intern_table_free(t);
}

/* ---- threads --------------------------------------------------------------- */

enum { CT = 8, CN = 3000 };
_Static_assert(CN % 7 && CN % 11 && CN % 13 && CN % 17 && CN % 19 && CN % 23 && CN % 29, "strides");
static ftm_intern_table *ct_table;
static ftm_object *ct_got[CT][CN];
static atomic_int ct_go;
static atomic_long ct_bad;

static void *ct_worker(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    uint64_t rng = 7 + id;
    while (!atomic_load(&ct_go))
        sched_yield();
    /* each thread in its own order: a stride through the values */
    static const unsigned strides[CT] = {1, 7, 11, 13, 17, 19, 23, 29}; /* coprime with CN */
    unsigned stride = strides[id];
    for (unsigned k = 0; k < CN; k++) {
        unsigned i = (k * stride + id * 131) % CN;
        str_obj *s = new_strf("shared-value-%u", i);
        if (s == NULL)
            abort();
        ftm_object *c = ftm_intern(ct_table, &s->ob.ob_base);
        if (c == NULL || !ftm_is_immortal(c))
            atomic_fetch_add(&ct_bad, 1);
        ct_got[id][i] = c;
        /* lookups of values other threads may be inserting right now */
        unsigned j = (unsigned)(ftt_rand(&rng) % CN);
        str_obj *p = new_strf("shared-value-%u", j);
        ftm_object *l = ftm_intern_lookup(ct_table, &p->ob.ob_base);
        if (l != NULL) {
            char want[40];
            snprintf(want, sizeof want, "shared-value-%u", j);
            if (!str_is(l, want))
                atomic_fetch_add(&ct_bad, 1);
        }
        ftm_decref(&p->ob.ob_base);
    }
    return NULL;
}

Test(intern, threads_get_the_same_instances)
{
    ct_table = ftm_intern_table_new(str_hash, str_eq);
    pthread_t th[CT];
    for (uintptr_t i = 0; i < CT; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, ct_worker, (void *)i), 0);
    atomic_store(&ct_go, 1);
    for (int i = 0; i < CT; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&ct_bad), 0, "%ld bad results", atomic_load(&ct_bad));
    cr_assert_eq(ftm_intern_count(ct_table), CN, "count %zu for %d values", ftm_intern_count(ct_table), CN);
    size_t differ = 0;
    for (unsigned i = 0; i < CN; i++) {
        char want[40];
        snprintf(want, sizeof want, "shared-value-%u", i);
        cr_assert(str_is(ct_got[0][i], want), "canonical value %u damaged", i);
        for (int t = 1; t < CT; t++)
            differ += ct_got[t][i] != ct_got[0][i];
        str_obj *p = new_strf("shared-value-%u", i);
        cr_assert_eq(ftm_intern_lookup(ct_table, &p->ob.ob_base), ct_got[0][i]);
        ftm_decref(&p->ob.ob_base);
    }
    cr_assert_eq(differ, 0, "%zu (thread, value) pairs got a non-canonical instance", differ);
    /* every non-canonical copy and every probe was released */
    ftm_thread_flush();
    long probes = (long)CT * CN + CN;
    cr_assert_eq(atomic_load(&n_dead), (long)CT * CN - CN + probes, "%ld deallocations, want %ld",
                 atomic_load(&n_dead), (long)CT * CN - CN + probes);
    ftm_intern_table_free(ct_table);
}
