/* ck_epoch_check.c — ck_epoch and ck_hs used as the library uses them
 * (in TSan builds compiled from source: cmake/ck_tsan_sources.cmake).
 *
 * At once, on one epoch: --threads readers read a shared object in sections
 * while a writer replaces it and retires the old one (ck_epoch_call; poll,
 * synchronize + reclaim, barrier); another writer fills a ck_hs (SPMC) under
 * a mutex from 8 slots, so old tables are freed with defer=true through
 * ck_epoch_call, and replaces (ck_hs_fas) and removes keys, while --threads
 * - 1 readers ck_hs_get.  Readers keep unregistering and recycling/registering records.
 * Checked: readers see only intact canaries (retired objects are poisoned
 * before free()) and ids that never go back; each retired object freed
 * exactly once, every table freed; all keys found after the run.
 *
 * Negative control, by hand (not in CI): stress_ck_epoch_check_stock (TSan
 * builds, EXCLUDE_FROM_ALL) is this program calling Debian's stock libck.so;
 * under TSan it draws 8-12 data-race reports on every run (the retire
 * callbacks' free() against readers' reads, ck_epoch_begin against record
 * resets): stock ck_epoch's grace periods are invisible to TSan.  Built
 * with ftmem_ck_tsan (this test) it drew none over seeds 1-10.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>

#include <ck_epoch.h>
#include <ck_hs.h>

#include "stress_util.h"

#ifdef FTMEM_CK_TSAN_NAMES /* cmake/ck_tsan_sources.cmake's renaming is on */
#define CK_FROM "ftmem_ck_tsan"
#elif defined(FTMEM_EXPECT_CK_TSAN)
#error "ck_epoch/ck_hs would come from the stock libck: link FTMEM_CK_LIBS"
#else
#define CK_FROM "libck"
#endif

#define CANARY(key) (stress_mix(key) | 1) /* never 0, the poison */
#define NRECORDS 256
#define HDR sizeof(max_align_t) /* a table's epoch entry goes in front of it */

typedef struct obj_s {
    ck_epoch_entry_t entry; /* first: the callback gets the object */
    uint64_t key, serial, canary;
} obj_t;

static stress_opts_t opt = { .name = "ck_epoch_check" };
static ck_epoch_t epoch;
static ck_epoch_record_t records[NRECORDS]; /* never freed: ck keeps them listed */
/* Relaxed counters: they hand out indices or count, never publish. */
static _Atomic size_t records_used, recycled;
static _Atomic uint64_t serials;
static _Atomic(obj_t *) shared;
static _Atomic bool stop;          /* release: both writers are done */
static _Atomic uint64_t published; /* release: keys [0, published) are in hs */
static uint8_t *freed;             /* per serial; by the retiring record's owner */
static uint64_t nptr, nkeys, nserials;
static ck_hs_t hs;
static pthread_mutex_t hs_lock = PTHREAD_MUTEX_INITIALIZER; /* the writer lock */
static ck_epoch_record_t *hs_rec;  /* the hs writer's: ck_epoch_call under hs_lock */
static size_t tables_alloc, tables_freed; /* under hs_lock, or after the joins */

static obj_t *obj_new(uint64_t key)
{
    obj_t *o = malloc(sizeof *o);
    if (o == NULL)
        stress_fail("out of memory");
    *o = (obj_t){ .key = key, .canary = CANARY(key),
                  .serial = atomic_fetch_add_explicit(&serials, 1, memory_order_relaxed) };
    if (o->serial >= nserials)
        stress_fail("more objects than expected");
    return o;
}

static void obj_check(const obj_t *o, uint64_t key, const char *who)
{
    if (o == NULL || o->key != key || o->canary != CANARY(key))
        stress_fail("%s: object %p for key %llu is %s", who, (const void *)o,
                    (unsigned long long)key, o == NULL ? "missing" : "corrupt or freed");
}

static void obj_free_cb(ck_epoch_entry_t *e)
{
    obj_t *o = (obj_t *)e;
    obj_check(o, o->key, "retire");
    freed[o->serial]++;
    o->canary = 0; /* a reader still holding it would see the poison */
    free(o);
}

/* fresh: register a new record (while the pool lasts) even if one could be
 * recycled, so that registrations race with other threads' scans. */
static ck_epoch_record_t *record_get(bool fresh)
{
    for (;;) {
        ck_epoch_record_t *r = fresh ? NULL : ck_epoch_recycle(&epoch, NULL);
        if (r != NULL) {
            atomic_fetch_add_explicit(&recycled, 1, memory_order_relaxed);
            return r;
        }
        size_t i = NRECORDS;
        if (atomic_load_explicit(&records_used, memory_order_relaxed) < NRECORDS)
            i = atomic_fetch_add_explicit(&records_used, 1, memory_order_relaxed);
        if (i < NRECORDS) {
            ck_epoch_register(&epoch, &records[i], NULL);
            return &records[i];
        }
        fresh = false; /* pool used up: some thread will give one back */
        sched_yield();
    }
}

static unsigned long hs_hash(const void *o, unsigned long seed)
{
    return (unsigned long)stress_mix(((const obj_t *)o)->key ^ seed);
}
static bool hs_cmp(const void *a, const void *b)
{
    return ((const obj_t *)a)->key == ((const obj_t *)b)->key;
}
static unsigned long hs_h(uint64_t key) { return CK_HS_HASH(&hs, hs_hash, &(obj_t){ .key = key }); }
static obj_t *hs_lookup(uint64_t key) { return ck_hs_get(&hs, hs_h(key), &(obj_t){ .key = key }); }
static void *hs_malloc(size_t n)
{
    char *p = malloc(HDR + n);
    tables_alloc += p != NULL;
    return p != NULL ? p + HDR : NULL;
}
static void table_free_cb(ck_epoch_entry_t *e) { tables_freed++; free(e); }
static void hs_free(void *p, size_t n, bool defer) /* under hs_lock */
{
    ck_epoch_entry_t *e = (ck_epoch_entry_t *)((char *)p - HDR);
    if (defer) /* readers may still be in the old table */
        ck_epoch_call(hs_rec, e, table_free_cb);
    else
        table_free_cb(e);
}
static struct ck_malloc hs_allocator = { .malloc = hs_malloc, .free = hs_free };

/* One read in an epoch section: of the shared object (ids must not go back
 * from *last) or, for hs readers (last == NULL), of a published key. */
static void read_one(ck_epoch_record_t *rec, uint64_t *last, stress_rng_t *r)
{
    ck_epoch_section_t section;
    ck_epoch_begin(rec, &section);
    if (last != NULL) {
        obj_t *o = atomic_load_explicit(&shared, memory_order_acquire);
        obj_check(o, o->key, "pointer reader");
        if (o->key < *last)
            stress_fail("pointer reader: id went back from %llu to %llu",
                        (unsigned long long)*last, (unsigned long long)o->key);
        *last = o->key;
    } else {
        uint64_t n = atomic_load_explicit(&published, memory_order_acquire);
        uint64_t key = n > 0 ? stress_below(r, n) : 0;
        if (n > 0)
            obj_check(hs_lookup(key), key, "hs reader");
    }
    ck_epoch_end(rec, &section);
}

static void *reader_main(void *arg)
{
    intptr_t index = (intptr_t)arg; /* < 0: a hs reader */
    stress_rng_t r = stress_rng(opt.seed, (uint64_t)(index + 1000));
    ck_epoch_record_t *rec = record_get(false);
    uint64_t last = 0;
    for (uint64_t reads = 1; !atomic_load_explicit(&stop, memory_order_acquire); reads++) {
        read_one(rec, index >= 0 ? &last : NULL, &r);
        if (reads % 256 == 0) { /* give the record back, take one again */
            ck_epoch_unregister(rec);
            rec = record_get(reads % 2048 == 0);
        }
    }
    ck_epoch_unregister(rec);
    return NULL;
}

static void *ptr_writer_main(void *arg)
{
    stress_rng_t r = stress_rng(opt.seed, 1);
    ck_epoch_record_t *rec = record_get(false);
    uint64_t last = 0;
    for (uint64_t i = 1; i <= nptr; i++) {
        read_one(rec, &last, &r); /* writers read too: polls right after a section */
        /* release: readers that load the new object see it initialised */
        obj_t *old = atomic_exchange_explicit(&shared, obj_new(i), memory_order_release);
        ck_epoch_call(rec, &old->entry, obj_free_cb);
        if (i % 1024 == 0) {
            ck_epoch_synchronize(rec);
            ck_epoch_reclaim(rec);
        } else if (i % 16 == 0) {
            ck_epoch_poll(rec);
        }
    }
    ck_epoch_barrier(rec); /* readers still running: a real grace period */
    ck_epoch_unregister(rec);
    return NULL;
}

static void *hs_writer_main(void *arg)
{
    hs_rec = record_get(false);
    for (uint64_t key = 0; key < nkeys; key++) {
        pthread_mutex_lock(&hs_lock);
        obj_t *o = obj_new(key), *prev = NULL, *t = obj_new(nkeys + key);
        if (!ck_hs_put(&hs, hs_h(key), o))
            stress_fail("ck_hs_put of key %llu failed", (unsigned long long)key);
        if (key % 8 == 7) { /* replace an older key's object */
            obj_t *copy = obj_new(key / 2);
            if (!ck_hs_fas(&hs, hs_h(key / 2), copy, (void **)&prev))
                stress_fail("ck_hs_fas of key %llu failed", (unsigned long long)key / 2);
            ck_epoch_call(hs_rec, &prev->entry, obj_free_cb);
        }
        /* A temporary key, put and removed. */
        if (!ck_hs_put(&hs, hs_h(t->key), t) || ck_hs_remove(&hs, hs_h(t->key), t) != t)
            stress_fail("temporary key %llu: put or remove failed", (unsigned long long)t->key);
        ck_epoch_call(hs_rec, &t->entry, obj_free_cb);
        if (key % 64 == 0)
            ck_epoch_poll(hs_rec);
        pthread_mutex_unlock(&hs_lock);
        atomic_store_explicit(&published, key + 1, memory_order_release);
    }
    pthread_mutex_lock(&hs_lock);
    ck_hs_gc(&hs, 0, 0);
    ck_epoch_barrier(hs_rec);
    pthread_mutex_unlock(&hs_lock);
    return NULL;
}

int main(int argc, char **argv)
{
    stress_parse(&opt, argc, argv, 4, NULL);
    nptr = opt.smoke ? 20000 : 400000;
    nkeys = opt.smoke ? 4096 : 65536;
    nserials = 1 + nptr + 3 * nkeys; /* >= 1 + nptr + nkeys * (1 + 1/8 + 1) */
    if ((freed = calloc(nserials, 1)) == NULL)
        stress_fail("out of memory");
    ck_epoch_init(&epoch);
    if (!ck_hs_init(&hs, CK_HS_MODE_SPMC | CK_HS_MODE_OBJECT, hs_hash, hs_cmp, &hs_allocator, 8,
                    (unsigned long)opt.seed))
        stress_fail("ck_hs_init failed");
    atomic_store_explicit(&shared, obj_new(0), memory_order_relaxed); /* no threads yet */
    int nr = opt.threads + (opt.threads > 1 ? opt.threads - 1 : 1);
    pthread_t t[2 + 2048], *rt = t + 2;
    double t0 = stress_now();
    for (int i = 0; i < nr; i++)
        stress_thread_start(&rt[i], reader_main,
                            (void *)(intptr_t)(i < opt.threads ? i : opt.threads - 1 - i));
    stress_thread_start(&t[0], ptr_writer_main, NULL);
    stress_thread_start(&t[1], hs_writer_main, NULL);
    for (int i = 0; i < 2; i++)
        stress_thread_join(t[i]);
    atomic_store_explicit(&stop, true, memory_order_release);
    for (int i = 0; i < nr; i++)
        stress_thread_join(rt[i]);

    obj_t *last = atomic_load_explicit(&shared, memory_order_relaxed); /* all joined */
    obj_check(last, nptr, "final object");
    for (uint64_t key = 0; key < nkeys; key++)
        obj_check(hs_lookup(key), key, "after the run");
    if (ck_hs_count(&hs) != nkeys)
        stress_fail("ck_hs_count is %lu, expected %llu", ck_hs_count(&hs),
                    (unsigned long long)nkeys);
    /* All objects made were retired and freed once, but the shared one and
     * those in the table. */
    uint64_t n = atomic_load_explicit(&serials, memory_order_relaxed), nfreed = 0;
    for (uint64_t s = 0; s < n; s++) {
        if (freed[s] > 1)
            stress_fail("object %llu freed %u times", (unsigned long long)s, freed[s]);
        nfreed += freed[s];
    }
    if (nfreed != n - 1 - nkeys)
        stress_fail("%llu of %llu retired objects freed", (unsigned long long)nfreed,
                    (unsigned long long)(n - 1 - nkeys));
    for (uint64_t key = 0; key < nkeys; key++)
        free(ck_hs_remove(&hs, hs_h(key), &(obj_t){ .key = key }));
    ck_hs_destroy(&hs);
    if (tables_freed != tables_alloc)
        stress_fail("%zu of %zu hs tables freed", tables_freed, tables_alloc);
    size_t nrecycled = atomic_load_explicit(&recycled, memory_order_relaxed);
    if (nrecycled == 0)
        stress_fail("no epoch record was ever recycled");
    stress_note("OK (ck_epoch/ck_hs from " CK_FROM "): %llu objects retired and freed, "
                "%zu hs tables, %zu records recycled, %.2f s", (unsigned long long)nfreed,
                tables_alloc, nrecycled, stress_now() - t0);
    free(last);
    free(freed);
    return 0;
}
