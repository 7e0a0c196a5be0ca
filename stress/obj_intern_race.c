/* obj_intern_race.c — many threads interning the same values at once.
 *
 * Each round makes an intern table (odd rounds hash values to themselves,
 * even rounds mix them) and starts --threads threads that each intern
 * every one of the round's values, in an order of their own: a fresh
 * candidate object per value, handed to ftm_intern, which returns the
 * canonical (immortal) instance — the candidate itself if it was first,
 * else the one entered before, the candidate's reference then released.
 * Threads also look values up (ftm_intern_lookup, lock-free, racing the
 * inserts and the tables' growth) and intern canonical instances again.
 * Half of the threads hand the second half of their work to a successor
 * thread they start, and exit: canonical objects outlive their creators.
 *
 * Checks, per intern and lookup: the result has the value asked for, an
 * intact canary and is immortal; one instance per value (a harness table
 * of canonical pointers, set by CAS, must agree with every result); a
 * candidate that lost is freed by the time ftm_intern returns.  Per round:
 * exactly one winner per value, ftm_intern_count == number of values.  At
 * the end: the canonical objects are all that is left (immortal: created -
 * freed == values interned, live blocks == baseline + that), and the leak
 * check (obj_util.h) with the pools holding them allowed.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "obj_util.h"

typedef struct ival_s {
    ftm_object ob;
    obj_stamp_t st;
    uint64_t value;
    uint64_t tail; /* ~canary */
} ival_t;

typedef struct work_s {
    int serial;
    size_t from, to;  /* positions in the thread's own order */
    pthread_t successor;
    bool has_successor;
} work_t;

static stress_opts_t opt = { .name = "obj_intern_race" };
static size_t nvalues;
static int rounds, round_no;
static uint64_t value_base; /* the values of the current round: base + 0..n-1 */
static ftm_intern_table *table;
static _Atomic(ftm_object *) *canon; /* per value index: the canonical instance */
static _Atomic uint32_t *winners;    /* per value index: candidates that became canonical */
static _Atomic unsigned long long n_intern, n_lost, n_lookup, n_lookup_hit, n_reintern;

static void ival_dealloc(ftm_object *self)
{
    ival_t *v = (ival_t *)self;
    if (v->tail != ~v->st.canary)
        stress_fail("ival dealloc: object %llu: tail %016llx", (unsigned long long)v->st.id,
                    (unsigned long long)v->tail);
    obj_stamp_kill(&v->st, "ival dealloc");
    v->tail = 0;
}
static ftm_type ival_type = {
    .name = "ival",
    .basic_size = sizeof(ival_t),
    .flags = FTM_TYPE_FREELIST,
    .dealloc = ival_dealloc,
};

static uint64_t hash_mixed(const ftm_object *o)
{
    return stress_mix(((const ival_t *)o)->value);
}
static uint64_t hash_identity(const ftm_object *o)
{
    return ((const ival_t *)o)->value;
}
static bool ival_eq(const ftm_object *a, const ftm_object *b)
{
    return ((const ival_t *)a)->value == ((const ival_t *)b)->value;
}

/* r claims to be the canonical instance of value index i. */
static void canon_check(ftm_object *r, size_t i, const char *what)
{
    if (ftm_type_of(r) != &ival_type)
        stress_fail("%s: result %p has type %p", what, (void *)r, (const void *)ftm_type_of(r));
    ival_t *v = (ival_t *)r;
    obj_stamp_check(&v->st, what);
    if (v->tail != ~v->st.canary)
        stress_fail("%s: object %llu: tail %016llx", what, (unsigned long long)v->st.id,
                    (unsigned long long)v->tail);
    if (v->value != value_base + i)
        stress_fail("%s: asked for value %llu, got an instance of %llu", what,
                    (unsigned long long)(value_base + i), (unsigned long long)v->value);
    if (!ftm_is_immortal(r))
        stress_fail("%s: the canonical instance of %llu is not immortal", what,
                    (unsigned long long)v->value);
    ftm_object *expect = NULL;
    /* acq_rel: the first to see an instance publishes it for the others */
    if (!atomic_compare_exchange_strong_explicit(&canon[i], &expect, r, memory_order_acq_rel,
                                                 memory_order_acquire) &&
        expect != r)
        stress_fail("%s: value %llu has two instances, %p (object %llu) and %p (object %llu)",
                    what, (unsigned long long)v->value, (void *)expect,
                    (unsigned long long)((ival_t *)expect)->st.id, (void *)r,
                    (unsigned long long)v->st.id);
}

static void *worker_main(void *arg);

static void start_successor(work_t *w, size_t from, size_t to)
{
    work_t *s = malloc(sizeof *s);
    if (s == NULL)
        stress_fail("out of memory for a successor");
    s->serial = w->serial + 1000000;
    s->from = from;
    s->to = to;
    s->has_successor = false;
    w->has_successor = true;
    stress_thread_start(&w->successor, worker_main, s);
}

static void *worker_main(void *arg)
{
    work_t *w = arg;
    stress_rng_t r = stress_rng(opt.seed, (uint64_t)round_no * 7919 + (uint64_t)w->serial % 1000000);
    /* the thread's own order of the values: a permutation from its serial
     * (a successor recomputes its predecessor's) */
    size_t *order = malloc(nvalues * sizeof *order);
    if (order == NULL)
        stress_fail("out of memory for an order");
    for (size_t i = 0; i < nvalues; i++)
        order[i] = i;
    for (size_t i = nvalues - 1; i > 0; i--) {
        size_t j = (size_t)stress_below(&r, i + 1);
        size_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    stress_rng_t r2 = stress_rng(opt.seed, 0xabcdef + (uint64_t)w->serial);
    size_t to = w->to;
    if (w->serial % 2 == 1 && w->serial < 1000000) { /* hand the second half on */
        size_t mid = w->from + (w->to - w->from) / 2;
        to = mid;
        start_successor(w, mid, w->to);
    }
    unsigned long long interns = 0, lost = 0, lookups = 0, hits = 0, reinterns = 0;
    for (size_t k = w->from; k < to; k++) {
        size_t i = order[k];
        ival_t *c = (ival_t *)ftm_new(&ival_type);
        if (c == NULL)
            stress_fail("ftm_new(ival) failed");
        uint64_t cid = obj_stamp_init(&c->st);
        c->value = value_base + i;
        c->tail = ~c->st.canary;
        ftm_object *res = ftm_intern(table, &c->ob);
        interns++;
        if (res == NULL)
            stress_fail("ftm_intern(%llu) returned NULL (errno %d)",
                        (unsigned long long)(value_base + i), errno);
        canon_check(res, i, "ftm_intern");
        if (res == &c->ob) {
            atomic_fetch_add_explicit(&winners[i], 1, memory_order_relaxed);
        } else {
            lost++;
            /* the candidate's reference was released: it was ours alone */
            if (obj_state(cid) != OBJ_FREED)
                stress_fail("ftm_intern(%llu): the candidate that lost (object %llu) is not "
                            "freed",
                            (unsigned long long)(value_base + i), (unsigned long long)cid);
        }
        if (stress_one_in(&r2, 8)) { /* interning the canonical instance again */
            reinterns++;
            ftm_object *again = ftm_intern(table, res);
            if (again != res)
                stress_fail("ftm_intern of the canonical instance of %llu gave %p, not %p",
                            (unsigned long long)(value_base + i), (void *)again, (void *)res);
        }
        for (int q = 0; q < 2; q++) { /* lookups of values others may be inserting */
            size_t j = (size_t)stress_below(&r2, nvalues);
            ival_t probe;
            memset(&probe, 0, sizeof probe);
            probe.value = value_base + j;
            lookups++;
            ftm_object *x = ftm_intern_lookup(table, &probe.ob);
            if (x != NULL) {
                hits++;
                canon_check(x, j, "ftm_intern_lookup");
            }
        }
        if (k % 512 == 0)
            ftm_safepoint();
    }
    free(order);
    atomic_fetch_add_explicit(&n_intern, interns, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_lost, lost, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_lookup, lookups, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_lookup_hit, hits, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_reintern, reinterns, memory_order_relaxed);
    if (w->serial >= 1000000)
        free(w); /* a successor's work item is its own (main joins it by its predecessor's) */
    return NULL; /* the successor, if any, is joined by main */
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    stress_parse(&opt, argc, argv, 6, NULL);
    nvalues = opt.smoke ? 4000 : 200000;
    rounds = opt.smoke ? 3 : 6;
    uint64_t cap = (uint64_t)rounds * (uint64_t)opt.threads * nvalues + 16;
    obj_registry_init(opt.seed, cap);
    canon = calloc(nvalues, sizeof *canon);
    winners = calloc(nvalues, sizeof *winners);
    work_t *works = calloc((size_t)opt.threads, sizeof *works);
    pthread_t *th = calloc((size_t)opt.threads, sizeof *th);
    uint64_t *slices = calloc((size_t)rounds * nvalues, sizeof *slices);
    if (!canon || !winners || !works || !th || !slices)
        stress_fail("out of memory for the harness");

    /* warm up: a table, an interned value, a dropped candidate */
    ftm_intern_table *t0 = ftm_intern_table_new(hash_mixed, ival_eq);
    if (t0 == NULL)
        stress_fail("ftm_intern_table_new failed");
    ftm_intern_table_free(t0);
    {
        ival_t *w = (ival_t *)ftm_new(&ival_type);
        if (w == NULL)
            stress_fail("ftm_new(ival) failed");
        obj_stamp_init(&w->st);
        w->tail = ~w->st.canary;
        ftm_decref(&w->ob); /* onto the main thread's free list */
    }
    obj_base_t base;
    obj_baseline(&base);

    double t_start = stress_now();
    size_t nslices = 0;
    for (round_no = 0; round_no < rounds; round_no++) {
        value_base = (uint64_t)round_no << 40;
        table = ftm_intern_table_new(round_no % 2 ? hash_identity : hash_mixed, ival_eq);
        if (table == NULL)
            stress_fail("ftm_intern_table_new failed");
        for (size_t i = 0; i < nvalues; i++) {
            atomic_store_explicit(&canon[i], NULL, memory_order_relaxed);
            atomic_store_explicit(&winners[i], 0, memory_order_relaxed);
        }
        ftm_thread_detach();
        for (int i = 0; i < opt.threads; i++) {
            works[i] = (work_t){ .serial = i, .from = 0, .to = nvalues };
            stress_thread_start(&th[i], worker_main, &works[i]);
        }
        for (int i = 0; i < opt.threads; i++) {
            stress_thread_join(th[i]);
            if (works[i].has_successor) /* set before the thread exited */
                stress_thread_join(works[i].successor);
        }
        ftm_thread_attach();
        size_t count = ftm_intern_count(table);
        if (count != nvalues)
            stress_fail("round %d: ftm_intern_count = %zu, %zu values interned", round_no,
                        count, nvalues);
        for (size_t i = 0; i < nvalues; i++) {
            ftm_object *c = atomic_load_explicit(&canon[i], memory_order_acquire);
            if (c == NULL)
                stress_fail("round %d: value %zu has no canonical instance", round_no, i);
            uint32_t wn = atomic_load_explicit(&winners[i], memory_order_relaxed);
            if (wn != 1)
                stress_fail("round %d: value %zu: %u candidates became canonical", round_no,
                            i, wn);
            ival_t probe;
            memset(&probe, 0, sizeof probe);
            probe.value = value_base + i;
            if (ftm_intern_lookup(table, &probe.ob) != c)
                stress_fail("round %d: lookup of value %zu after the round is not its "
                            "instance",
                            round_no, i);
            canon_check(c, i, "after the round");
            slices[nslices++] = (uint64_t)(uintptr_t)c >> 16; /* 64 KiB slice */
        }
        ftm_intern_table_free(table);
        table = NULL;
        /* the canonical instances stay, immortal */
        for (size_t i = 0; i < nvalues; i++)
            canon_check(atomic_load_explicit(&canon[i], memory_order_relaxed), i,
                        "after ftm_intern_table_free");
    }
    double t_run = stress_now() - t_start;

    uint64_t immortal = (uint64_t)rounds * nvalues;
    obj_registry_expect_all_freed(immortal, "at the end (the canonical instances stay)");
    /* the canonical instances pin the pools they were carved from, left
     * abandoned by the threads that made them (ival is 64 bytes: one-slice
     * pools): as many pools as distinct slices among them */
    qsort(slices, nslices, sizeof *slices, cmp_u64);
    unsigned long long distinct = 0;
    for (size_t i = 0; i < nslices; i++)
        distinct += i == 0 || slices[i] != slices[i - 1];
    obj_leak_check(&base, immortal, distinct, distinct + OBJ_SLICE_SLACK, "at the end");

    stress_note("OK: %d rounds x %zu values, %d threads (half hand over to a successor): "
                "%llu interns (%llu candidates lost and freed), %llu re-interns, %llu lookups "
                "(%llu found); %llu canonical instances on %llu slices; %.2f s",
                rounds, nvalues, opt.threads, atomic_load(&n_intern), atomic_load(&n_lost),
                atomic_load(&n_reintern), atomic_load(&n_lookup), atomic_load(&n_lookup_hit),
                (unsigned long long)immortal, distinct, t_run);
    free(canon);
    free(winners);
    free(works);
    free(th);
    free(slices);
    free(obj_reg.state);
    return 0;
}
