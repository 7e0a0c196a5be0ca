/* test_runtime.c — the example runtime (examples/runtime, ftmem_rt) through
 * its API: the small-int cache, interning, tuple/list/dict contents and
 * reference counts, lock-free list reads racing writers, dicts shared by
 * threads.  Every test ends by checking that each object it created was
 * freed, except the immortal ones the runtime counts (rt_immortal_count). */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "rt.h"

TestSuite(runtime, .timeout = 120);

/* ---- leak accounting ------------------------------------------------------ */
static ftm_object_stats_t g_base;
static size_t g_immortal_base;

static void leak_check_begin(void)
{
    ftm_object_stats_get(&g_base);
    g_immortal_base = rt_immortal_count();
}

static void leak_check_end(void)
{
    /* objects other threads queued back to us are merged (freed) here */
    ftm_thread_flush();
    ftm_object_stats_t now;
    ftm_object_stats_get(&now);
    uint64_t created = now.created - g_base.created, freed = now.freed - g_base.freed;
    size_t immortal = rt_immortal_count() - g_immortal_base;
    cr_assert_eq(created - freed, immortal, "created %llu freed %llu immortal %zu",
                 (unsigned long long)created, (unsigned long long)freed, immortal);
}

/* cr_assert cannot be used off the main thread: threads count failed
 * checks (and print them), and the test asserts the count is zero. */
static _Atomic unsigned g_thread_failures;
#define THREAD_CHECK(cond)                                                              \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: check failed in a thread: %s\n", __FILE__, __LINE__, \
                    #cond);                                                             \
            /* relaxed: a count, read after the threads are joined */                  \
            atomic_fetch_add_explicit(&g_thread_failures, 1, memory_order_relaxed);    \
        }                                                                               \
    } while (0)

static int count_visit(ftm_object *o, void *arg)
{
    cr_assert_not_null(o);
    ++*(size_t *)arg;
    return 0;
}

static size_t traverse_count(ftm_object *o)
{
    size_t n = 0;
    ftm_type_of(o)->traverse(o, count_visit, &n);
    return n;
}

/* ---- ints ------------------------------------------------------------------ */
enum { RACE_THREADS = 4 };
static pthread_barrier_t g_barrier;

static void *first_small_int(void *arg)
{
    pthread_barrier_wait(&g_barrier);
    *(ftm_object **)arg = rt_int_new(42); /* the first use builds the cache */
    return NULL;
}

Test(runtime, small_int_cache_built_once_by_racing_threads)
{
    leak_check_begin();
    pthread_t th[RACE_THREADS];
    ftm_object *got[RACE_THREADS];
    pthread_barrier_init(&g_barrier, NULL, RACE_THREADS);
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_create(&th[i], NULL, first_small_int, &got[i]);
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&g_barrier);
    for (int i = 0; i < RACE_THREADS; i++)
        cr_assert_eq(got[i], rt_int_new(42));
    cr_assert_eq(rt_immortal_count() - g_immortal_base, RT_SMALL_INT_COUNT);
    leak_check_end();
}

Test(runtime, small_int_identity_and_immortality)
{
    leak_check_begin();
    for (int64_t v = RT_SMALL_INT_MIN; v <= RT_SMALL_INT_MAX; v++) {
        ftm_object *a = rt_int_new(v), *b = rt_int_new(v);
        cr_assert_eq(a, b, "small int %lld not cached", (long long)v);
        cr_assert(ftm_is_immortal(a));
        cr_assert_eq(ftm_refcount(a), (ssize_t)FTM_REF_IMMORTAL);
        cr_assert_eq(rt_int_value(a), v);
    }
    /* decrefs of an immortal store nothing: it survives any number */
    ftm_object *seven = rt_int_new(7);
    for (int i = 0; i < 100000; i++)
        ftm_decref(seven);
    cr_assert_eq(rt_int_value(rt_int_new(7)), 7);
    /* just outside the range: fresh, mortal objects */
    int64_t outside[] = {RT_SMALL_INT_MIN - 1, RT_SMALL_INT_MAX + 1, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++) {
        ftm_object *a = rt_int_new(outside[i]), *b = rt_int_new(outside[i]);
        cr_assert_neq(a, b);
        cr_assert(!ftm_is_immortal(a));
        cr_assert_eq(ftm_refcount(a), 1);
        cr_assert(rt_eq(a, b) && rt_hash(a) == rt_hash(b));
        cr_assert_eq(rt_int_value(b), outside[i]);
        ftm_decref(a);
        ftm_decref(b);
    }
    /* the free list hands blocks back: values must not leak between lives */
    for (int round = 0; round < 3; round++) {
        ftm_object *v[200];
        for (int i = 0; i < 200; i++)
            v[i] = rt_int_new(1000000 + round * 1000 + i);
        for (int i = 0; i < 200; i++) {
            cr_assert_eq(rt_int_value(v[i]), 1000000 + round * 1000 + i);
            ftm_decref(v[i]);
        }
    }
    leak_check_end();
}

/* ---- strs ------------------------------------------------------------------- */
Test(runtime, str_contents_hash_and_size)
{
    leak_check_begin();
    ftm_object *a = rt_str_new("a\0b", 3), *b = rt_str_new("a\0b", 3), *c = rt_str_from_cstr("a");
    cr_assert_eq(rt_str_len(a), 3);
    cr_assert_eq(memcmp(rt_str_data(a), "a\0b", 4), 0); /* NUL-terminated too */
    cr_assert(rt_eq(a, b) && rt_hash(a) == rt_hash(b));
    cr_assert(!rt_eq(a, c));
    cr_assert_eq(rt_hash(a), rt_hash(a)); /* cached value is stable */
    cr_assert_eq(ftm_sizeof(c), rt_str_type.basic_size + 1);
    ftm_object *empty = rt_str_new("", 0);
    cr_assert_eq(rt_str_len(empty), 0);
    cr_assert_str_eq(rt_str_data(empty), "");
    ftm_decref(a);
    ftm_decref(b);
    ftm_decref(c);
    ftm_decref(empty);
    leak_check_end();
}

Test(runtime, str_intern_gives_one_instance)
{
    leak_check_begin();
    size_t count0 = rt_str_intern_count();
    ftm_object *a = rt_str_intern_cstr("hello"), *b = rt_str_intern_cstr("hello");
    cr_assert_eq(a, b);
    cr_assert(ftm_is_immortal(a));
    /* an equal, mortal str interns to the canonical one and stays mortal */
    ftm_object *s = rt_str_from_cstr("hello"), *c = rt_str_intern(s);
    cr_assert_eq(c, a);
    cr_assert(!ftm_is_immortal(s));
    cr_assert_eq(ftm_refcount(s), 1);
    ftm_decref(s);
    /* a str new to the table becomes the canonical instance itself */
    ftm_object *f = rt_str_from_cstr("fresh"), *cf = rt_str_intern(f);
    cr_assert_eq(cf, f);
    cr_assert(ftm_is_immortal(f));
    cr_assert_eq(rt_str_intern_count(), count0 + 2);
    leak_check_end();
}

enum { INTERN_NAMES = 200 };
static ftm_object *g_interned[RACE_THREADS][INTERN_NAMES];
static ftm_object *g_foreign; /* a str owned by the main thread */
static ftm_object *g_foreign_canonical[RACE_THREADS];

static void *intern_names(void *arg)
{
    int id = (int)(intptr_t)arg;
    pthread_barrier_wait(&g_barrier);
    for (int k = 0; k < INTERN_NAMES; k++) {
        int i = (k + id * 37) % INTERN_NAMES; /* threads start at different names */
        char buf[16];
        snprintf(buf, sizeof buf, "name%d", i);
        ftm_object *s = rt_str_from_cstr(buf);
        g_interned[id][i] = rt_str_intern(s);
        ftm_decref(s);
    }
    /* g_foreign is owned by a live thread: interning must copy it */
    g_foreign_canonical[id] = rt_str_intern(g_foreign);
    return NULL;
}

Test(runtime, str_intern_from_racing_threads)
{
    leak_check_begin();
    size_t count0 = rt_str_intern_count();
    g_foreign = rt_str_from_cstr("owned by main");
    pthread_t th[RACE_THREADS];
    pthread_barrier_init(&g_barrier, NULL, RACE_THREADS);
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_create(&th[i], NULL, intern_names, (void *)(intptr_t)i);
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&g_barrier);
    for (int i = 0; i < INTERN_NAMES; i++) {
        char buf[16];
        snprintf(buf, sizeof buf, "name%d", i);
        cr_assert_str_eq(rt_str_data(g_interned[0][i]), buf);
        for (int t = 1; t < RACE_THREADS; t++)
            cr_assert_eq(g_interned[t][i], g_interned[0][i], "two instances of %s", buf);
    }
    for (int t = 0; t < RACE_THREADS; t++) {
        cr_assert_eq(g_foreign_canonical[t], g_foreign_canonical[0]);
        cr_assert_neq(g_foreign_canonical[t], g_foreign);
    }
    cr_assert(!ftm_is_immortal(g_foreign));
    cr_assert_eq(rt_str_intern(g_foreign), g_foreign_canonical[0]);
    cr_assert_eq(rt_str_intern_count(), count0 + INTERN_NAMES + 1);
    ftm_decref(g_foreign);
    leak_check_end();
}

/* ---- tuples ----------------------------------------------------------------- */
Test(runtime, tuple_contents_and_refcounts)
{
    leak_check_begin();
    ftm_object *big = rt_int_new(123456), *s = rt_str_from_cstr("x");
    ftm_object *t = rt_tuple_pack(3, big, s, big);
    cr_assert_eq(rt_tuple_len(t), 3);
    cr_assert_eq(ftm_refcount(big), 3);
    cr_assert_eq(ftm_refcount(s), 2);
    ftm_object *x = rt_tuple_get(t, 1);
    cr_assert_eq(x, s);
    cr_assert_eq(ftm_refcount(s), 3);
    ftm_decref(x);
    errno = 0;
    cr_assert_null(rt_tuple_get(t, 3));
    cr_assert_eq(errno, ERANGE);
    cr_assert_eq(traverse_count(t), 3);
    cr_assert_eq(ftm_sizeof(t), rt_tuple_type.basic_size + 3 * sizeof(ftm_field) + 16); /* + the GC head, as sys.getsizeof */
    ftm_object *items[] = {s, t};
    ftm_object *nested = rt_tuple_new(2, items), *empty = rt_tuple_new(0, NULL);
    char buf[64];
    rt_repr(nested, buf, sizeof buf);
    cr_assert_str_eq(buf, "('x', (123456, 'x', 123456))");
    rt_repr(empty, buf, sizeof buf);
    cr_assert_str_eq(buf, "()");
    ftm_object *one = rt_tuple_pack(1, empty);
    rt_repr(one, buf, sizeof buf);
    cr_assert_str_eq(buf, "((),)");
    ftm_decref(one);
    ftm_decref(nested);
    ftm_decref(empty);
    ftm_decref(t);
    cr_assert_eq(ftm_refcount(big), 1);
    cr_assert_eq(ftm_refcount(s), 1);
    ftm_decref(big);
    ftm_decref(s);
    leak_check_end();
}

/* ---- lists ------------------------------------------------------------------ */
Test(runtime, list_operations_and_refcounts)
{
    leak_check_begin();
    ftm_object *l = rt_list_new(), *v[100];
    size_t size0 = ftm_sizeof(l);
    for (int i = 0; i < 100; i++) {
        v[i] = rt_int_new(10000 + i);
        cr_assert_eq(rt_list_append(l, v[i]), 0);
        cr_assert_eq(ftm_refcount(v[i]), 2);
    }
    cr_assert_eq(rt_list_len(l), 100);
    cr_assert_eq(traverse_count(l), 100);
    cr_assert_geq(ftm_sizeof(l), size0 + 100 * sizeof(ftm_field)); /* the items array */
    for (int i = 0; i < 100; i++) {
        ftm_object *x = rt_list_get(l, (size_t)i);
        cr_assert_eq(x, v[i]);
        ftm_decref(x);
    }
    errno = 0;
    cr_assert_null(rt_list_get(l, 100));
    cr_assert_eq(errno, ERANGE);
    cr_assert_eq(rt_list_set(l, 100, v[0]), -1);
    /* set replaces and releases the old item */
    cr_assert_eq(rt_list_set(l, 5, v[0]), 0);
    cr_assert_eq(ftm_refcount(v[5]), 1);
    cr_assert_eq(ftm_refcount(v[0]), 3);
    cr_assert_eq(rt_list_set(l, 5, v[5]), 0);
    /* pop hands the list's reference over, last item first */
    for (int i = 99; i >= 50; i--) {
        ftm_object *x = rt_list_pop(l);
        cr_assert_eq(x, v[i]);
        cr_assert_eq(ftm_refcount(x), 2);
        ftm_decref(x);
    }
    cr_assert_eq(rt_list_len(l), 50);
    char buf[8];
    cr_assert_gt(rt_repr(l, buf, sizeof buf), sizeof buf); /* snprintf-style length */
    cr_assert_str_eq(buf, "[10000,");
    ftm_decref(l);
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(ftm_refcount(v[i]), 1);
        ftm_decref(v[i]);
    }
    ftm_object *e = rt_list_new();
    cr_assert_null(rt_list_pop(e));
    cr_assert_eq(traverse_count(e), 0);
    ftm_decref(e);
    leak_check_end();
}

/* Readers get items with rt_list_get while writers append, replace and
 * pop.  Every item a writer stores is a valid "stamp" (an int 3k + 1000001
 * or a str "s<k>:<k*7>"); a reader must only ever see a stamp — never a
 * freed, recycled or half-built object.  The shared list itself sits in a
 * field and writer 0 swaps in an empty one every LIST_SWAP operations, so
 * arrays are outgrown (and old ones retired under readers) all the time. */
enum { RACE_WRITERS = 2, RACE_READERS = 2, RACE_OPS = 100000, LIST_SWAP = 40 };
static ftm_field g_list_holder;
static _Atomic int g_writers_left;
static _Atomic unsigned long g_reads, g_misses;

static ftm_object *stamp_new(uint64_t k)
{
    if (k % 3 == 0) {
        char buf[48];
        snprintf(buf, sizeof buf, "s%llu:%llu", (unsigned long long)k, (unsigned long long)(k * 7));
        return rt_str_from_cstr(buf);
    }
    return rt_int_new((int64_t)(3 * k + 1000001));
}

static bool stamp_ok(ftm_object *o)
{
    if (rt_int_check(o))
        return rt_int_value(o) >= 1000001 && rt_int_value(o) % 3 == 1000001 % 3;
    if (!rt_str_check(o))
        return false;
    unsigned long long k, k7;
    return sscanf(rt_str_data(o), "s%llu:%llu", &k, &k7) == 2 && k7 == k * 7;
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *list_writer(void *arg)
{
    uint64_t rng = 0x1234567ULL + (uintptr_t)arg;
    for (uint64_t k = 0; k < RACE_OPS; k++) {
        if (arg == 0 && k % LIST_SWAP == LIST_SWAP - 1)
            ftm_field_store(&g_list_holder, rt_list_new());
        ftm_object *l = ftm_field_load(&g_list_holder);
        ftm_object *o = stamp_new(k * RACE_WRITERS + (uintptr_t)arg);
        uint64_t r = xorshift(&rng) % 8;
        size_t n = rt_list_len(l);
        if (r < 4 || n < 16) {
            rt_list_append(l, o); /* outgrows the array now and then */
        } else if (r < 7) {
            rt_list_set(l, xorshift(&rng) % n, o); /* may miss after a pop: fine */
        } else {
            ftm_object *p = rt_list_pop(l);
            THREAD_CHECK(p == NULL || stamp_ok(p));
            ftm_xdecref(p);
        }
        ftm_decref(o);
        ftm_decref(l);
    }
    atomic_fetch_sub_explicit(&g_writers_left, 1, memory_order_release); /* pairs with readers' acquire */
    return NULL;
}

static void *list_reader(void *arg)
{
    uint64_t rng = 0xabcdefULL + (uintptr_t)arg;
    unsigned long reads = 0, misses = 0;
    /* acquire: pairs with the writers' release; not needed for safety, only
     * so the last round sees the final list */
    while (atomic_load_explicit(&g_writers_left, memory_order_acquire) > 0) {
        ftm_object *l = ftm_field_load(&g_list_holder);
        size_t n = rt_list_len(l);
        for (int i = 0; i < 64 && n > 0; i++) {
            ftm_object *o = rt_list_get(l, xorshift(&rng) % n);
            reads++;
            if (o == NULL) {
                misses++; /* shrunk under us */
                continue;
            }
            THREAD_CHECK(stamp_ok(o)); /* never freed, recycled or half-built */
            ftm_decref(o);
        }
        ftm_decref(l);
    }
    atomic_fetch_add_explicit(&g_reads, reads, memory_order_relaxed);   /* totals, read after join */
    atomic_fetch_add_explicit(&g_misses, misses, memory_order_relaxed);
    return NULL;
}

Test(runtime, list_get_races_append_set_pop)
{
    leak_check_begin();
    ftm_field_init(&g_list_holder, rt_list_new());
    atomic_store_explicit(&g_writers_left, RACE_WRITERS, memory_order_relaxed); /* before the threads */
    pthread_t th[RACE_WRITERS + RACE_READERS];
    for (int i = 0; i < RACE_WRITERS; i++)
        pthread_create(&th[i], NULL, list_writer, (void *)(intptr_t)i);
    for (int i = 0; i < RACE_READERS; i++)
        pthread_create(&th[RACE_WRITERS + i], NULL, list_reader, (void *)(intptr_t)i);
    for (int i = 0; i < RACE_WRITERS + RACE_READERS; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&g_thread_failures), 0);
    ftm_object *l = ftm_field_load(&g_list_holder);
    size_t n = rt_list_len(l);
    cr_assert_eq(traverse_count(l), n);
    for (size_t i = 0; i < n; i++) {
        ftm_object *o = rt_list_get(l, i);
        cr_assert(o != NULL && stamp_ok(o));
        ftm_decref(o);
    }
    cr_assert_gt(atomic_load(&g_reads), 0);
    cr_log_info("%zu items left, %lu reads, %lu misses", n, atomic_load(&g_reads), atomic_load(&g_misses));
    ftm_decref(l);
    ftm_field_clear(&g_list_holder);
    leak_check_end();
}

/* ---- dicts ------------------------------------------------------------------ */
Test(runtime, dict_contents_and_refcounts)
{
    leak_check_begin();
    ftm_object *d = rt_dict_new(), *k = rt_str_from_cstr("key"), *v = rt_int_new(777777);
    cr_assert_eq(rt_dict_set(d, k, v), 0);
    cr_assert_eq(ftm_refcount(k), 2);
    cr_assert_eq(ftm_refcount(v), 2);
    /* an equal key built afresh finds the entry; the dict keeps its key */
    ftm_object *k2 = rt_str_from_cstr("key"), *got = rt_dict_get(d, k2);
    cr_assert_eq(got, v);
    ftm_decref(got);
    cr_assert_eq(rt_dict_set(d, k2, k2), 0);
    cr_assert_eq(rt_dict_len(d), 1);
    cr_assert_eq(ftm_refcount(v), 1);
    cr_assert_eq(ftm_refcount(k2), 2); /* only as the value */
    char buf[32];
    rt_repr(d, buf, sizeof buf);
    cr_assert_str_eq(buf, "{'key': 'key'}");
    cr_assert_eq(rt_dict_del(d, k), 0);
    cr_assert_eq(rt_dict_del(d, k), -1);
    cr_assert_eq(errno, ENOENT);
    cr_assert_null(rt_dict_get(d, k));
    cr_assert_eq(ftm_refcount(k), 1);
    cr_assert_eq(ftm_refcount(k2), 1);
    ftm_decref(k);
    ftm_decref(k2);
    ftm_decref(v);

    /* many keys: growth, then deletion by backward shift keeps the rest
     * reachable; int and str keys share the table */
    enum { N = 5000 };
    for (int i = 0; i < N; i++) {
        ftm_object *ik = rt_int_new(i), *sk, *val = rt_int_new(-i);
        char s[16];
        snprintf(s, sizeof s, "k%d", i);
        sk = rt_str_from_cstr(s);
        cr_assert_eq(rt_dict_set(d, ik, val), 0);
        cr_assert_eq(rt_dict_set(d, sk, ik), 0);
        ftm_decref(ik);
        ftm_decref(sk);
        ftm_decref(val);
    }
    cr_assert_eq(rt_dict_len(d), 2 * N);
    cr_assert_eq(traverse_count(d), 4 * N);
    cr_assert_geq(ftm_sizeof(d), rt_dict_type.basic_size + 2 * N * sizeof(ftm_field));
    for (int i = 1; i < N; i += 2) {
        ftm_object *ik = rt_int_new(i);
        cr_assert_eq(rt_dict_del(d, ik), 0);
        ftm_decref(ik);
    }
    for (int i = 0; i < N; i++) {
        ftm_object *ik = rt_int_new(i), *sk, *x;
        char s[16];
        snprintf(s, sizeof s, "k%d", i);
        sk = rt_str_from_cstr(s);
        x = rt_dict_get(d, ik);
        cr_assert_eq(x != NULL, i % 2 == 0, "int key %d", i);
        cr_assert(x == NULL || rt_int_value(x) == -i);
        ftm_xdecref(x);
        x = rt_dict_get(d, sk);
        cr_assert(x != NULL && rt_int_value(x) == i, "str key %s", s);
        ftm_decref(x);
        ftm_decref(ik);
        ftm_decref(sk);
    }
    ftm_object *items = rt_dict_items(d);
    cr_assert_eq(rt_list_len(items), rt_dict_len(d));
    ftm_decref(items);
    ftm_decref(d);
    leak_check_end();
}

static ftm_object *g_dict;

static void *dict_worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 500; i++) {
            ftm_object *k = rt_int_new(id * 100000 + i), *v = rt_int_new(round * 1000 + i);
            THREAD_CHECK(rt_dict_set(g_dict, k, v) == 0);
            ftm_decref(k);
            ftm_decref(v);
        }
        for (int i = 0; i < 500; i++) {
            ftm_object *k = rt_int_new(id * 100000 + i), *v = rt_dict_get(g_dict, k);
            THREAD_CHECK(v != NULL && rt_int_value(v) == round * 1000 + i);
            ftm_xdecref(v);
            if (i % 2)
                THREAD_CHECK(rt_dict_del(g_dict, k) == 0);
            ftm_decref(k);
        }
    }
    return NULL;
}

Test(runtime, dict_shared_by_threads)
{
    leak_check_begin();
    g_dict = rt_dict_new();
    pthread_t th[RACE_THREADS];
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_create(&th[i], NULL, dict_worker, (void *)(intptr_t)i);
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&g_thread_failures), 0);
    cr_assert_eq(rt_dict_len(g_dict), RACE_THREADS * 250);
    ftm_decref(g_dict);
    leak_check_end();
}
