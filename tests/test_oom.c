/* test_oom.c — out of memory under RLIMIT_AS (issue 6, "Process life"):
 * every entry point returns NULL (or its error code) with errno ENOMEM,
 * nothing aborts, blocks already handed out stay intact, and once memory is
 * freed allocation works again.
 *
 * Each Criterion test is its own process, so each sets RLIMIT_AS (soft
 * limit) to its current address-space size plus a margin and puts the
 * original limit back at the end.  While the limit is in force nothing here
 * calls cr_assert or libc malloc (Criterion's reporting allocates): a
 * failed check writes its message into a static buffer and jumps to the
 * end, where the limit is lifted and the message asserted.
 *
 * ftmem reserves 4 MiB arenas (8 MiB mapped, then trimmed to alignment) and
 * 8 MiB page-map leaves with mmap; a failing mmap must surface as NULL.
 *
 * Suite oom: the documented contract through every entry point.
 * Suite oom_internal: the object layer's internal allocations (weak
 * reference side table, thread state, queue node of a cross-thread decref,
 * deferred-count array, the array that postpones deep deallocations) and
 * the arena records a failed mmap used to use up.  These expect the
 * documented behaviour too (the API has no way to report an error from a
 * decref or an incref, so "keeps working" is all that can be expected
 * there); most run in a forked child whose stderr is captured.  Each once
 * aborted or leaked (docs/objects.md, "Out of memory", says what each does
 * now):
 *   weakref_first_use          "out of memory creating the weak reference table"
 *   new_thread_first_object    "cannot register a thread (more than 65536 threads?)"
 *   cross_thread_decref        "out of memory queueing an object to its owner"
 *   deep_dealloc               "out of memory postponing a deallocation"
 *   deferred_first_incref      "out of memory growing deferred counts"
 *   intern_enomem_releases_value  a failed ftm_intern leaked its (immortal) value
 *   failures_do_not_use_up_arenas 16384 failed arena mmaps and no arena ever again
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "ftm_test.h"
#include <ftmem.h>

TestSuite(oom, .timeout = 120);
TestSuite(oom_internal, .timeout = 120);

/* ---- the limit, failure messages ------------------------------------------ */

static struct rlimit g_saved;
static bool g_limited;
static char g_err[1024];

#define FAIL_IF(cond, ...)                                                                   \
    do {                                                                                     \
        if (cond) {                                                                          \
            snprintf(g_err, sizeof g_err, __VA_ARGS__);                                      \
            goto done;                                                                       \
        }                                                                                    \
    } while (0)

static size_t vm_size(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0;
    if (f) {
        if (fscanf(f, "%lu", &size) != 1)
            size = 0;
        fclose(f);
    }
    return (size_t)size * (size_t)sysconf(_SC_PAGESIZE);
}

/* RLIMIT_AS = what is mapped now + margin. */
static void limit_as(size_t margin)
{
    cr_assert_eq(getrlimit(RLIMIT_AS, &g_saved), 0);
    size_t vm = vm_size();
    cr_assert_gt(vm, 0);
    struct rlimit r = g_saved;
    r.rlim_cur = (rlim_t)(vm + margin);
    if (g_saved.rlim_max != RLIM_INFINITY && r.rlim_cur > g_saved.rlim_max)
        cr_skip_test("hard RLIMIT_AS too low");
    g_err[0] = '\0';
    cr_assert_eq(setrlimit(RLIMIT_AS, &r), 0, "setrlimit: %s", strerror(errno));
    g_limited = true;
}

static void unlimit(void)
{
    if (g_limited)
        setrlimit(RLIMIT_AS, &g_saved);
    g_limited = false;
}

/* Lift the limit, then report what a check found. */
static void finish(void)
{
    unlimit();
    cr_assert(g_err[0] == '\0', "%s", g_err);
}

/* Map single pages until mmap fails: afterwards not even one page of
 * address space is left.  munmap_all gives them back. */
typedef struct pages_s {
    void *head; /* each page holds the address of the next */
    size_t n;
} pages_t;

static void eat_address_space(pages_t *pg)
{
    for (;;) {
        void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return;
        *(void **)p = pg->head;
        pg->head = p;
        pg->n++;
    }
}

static void munmap_all(pages_t *pg)
{
    while (pg->head) {
        void *next = *(void **)pg->head;
        munmap(pg->head, 4096);
        pg->head = next;
    }
    pg->n = 0;
}

/* ---- chains of blocks with checked contents --------------------------------- */

/* Every block starts with this header; the rest holds the ftt pattern of
 * (seed).  Blocks are chained through `next`, so no other memory is needed
 * to keep track of them. */
typedef struct blk_s {
    struct blk_s *next;
    size_t size;
    uint64_t seed;
    uint64_t pad;
} blk_t;

typedef struct chain_s {
    blk_t *head;
    size_t n;
    uint64_t next_seed;
} chain_t;

/* Sampled for big blocks: whole pages are still touched (fill writes
 * every 512th word... and the first 64 KiB densely). */
static void blk_fill(blk_t *b)
{
    unsigned char *p = (unsigned char *)(b + 1);
    size_t n = b->size - sizeof *b;
    if (n <= 65536) {
        ftt_fill(p, n, b->seed);
        return;
    }
    ftt_fill(p, 65536, b->seed);
    for (size_t off = 65536; off + 8 <= n; off += 4096) {
        uint64_t w = ftt_word(b->seed, off);
        memcpy(p + off, &w, 8);
    }
}

static bool blk_intact(const blk_t *b)
{
    const unsigned char *p = (const unsigned char *)(b + 1);
    size_t n = b->size - sizeof *b;
    if (n <= 65536)
        return ftt_check(p, n, b->seed) == SIZE_MAX;
    if (ftt_check(p, 65536, b->seed) != SIZE_MAX)
        return false;
    for (size_t off = 65536; off + 8 <= n; off += 4096) {
        uint64_t w = ftt_word(b->seed, off), got;
        memcpy(&got, p + off, 8);
        if (got != w)
            return false;
    }
    return true;
}

static void chain_push(chain_t *c, void *p, size_t size)
{
    blk_t *b = p;
    b->size = size;
    b->seed = ++c->next_seed * 0x9E3779B97F4A7C15ull;
    blk_fill(b);
    b->next = c->head;
    c->head = b;
    c->n++;
}

/* Check every block; free every other one (odd positions) when `half`,
 * all when not.  Returns the number of damaged blocks seen. */
static size_t chain_free(chain_t *c, bool half)
{
    size_t bad = 0, i = 0;
    blk_t **link = &c->head;
    while (*link) {
        blk_t *b = *link;
        if (!blk_intact(b))
            bad++;
        if (!half || (i & 1)) {
            *link = b->next;
            ftm_free(b);
            c->n--;
        } else {
            link = &b->next;
        }
        i++;
    }
    return bad;
}

static size_t chain_check(const chain_t *c)
{
    size_t bad = 0;
    for (const blk_t *b = c->head; b; b = b->next)
        bad += !blk_intact(b);
    return bad;
}

/* ---- allocation through each entry point ------------------------------------ */

typedef enum {
    EP_MALLOC,
    EP_CALLOC,
    EP_ALIGNED,
    EP_MEMALIGN,
} entry_t;

static const char *const ep_name[] = {"ftm_malloc", "ftm_calloc", "ftm_aligned_alloc",
                                      "ftm_posix_memalign"};

typedef struct alloc_res_s {
    void *p;
    int err; /* errno (or posix_memalign's result) on failure */
    const char *bad; /* a contract violation on failure, else NULL */
} alloc_res_t;

/* One allocation of `size` through entry point ep (alignment `align` for
 * the aligned ones), checking the contract of a failure. */
static alloc_res_t ep_alloc(entry_t ep, size_t size, size_t align)
{
    alloc_res_t r = {NULL, 0, NULL};
    errno = 0;
    switch (ep) {
    case EP_MALLOC:
        r.p = ftm_malloc(size);
        break;
    case EP_CALLOC:
        r.p = ftm_calloc(1, size);
        if (r.p != NULL && ftt_first_nonzero(r.p, size < 65536 ? size : 65536) != SIZE_MAX)
            r.bad = "ftm_calloc returned a block that is not zeroed";
        break;
    case EP_ALIGNED:
        r.p = ftm_aligned_alloc(align, size);
        if (r.p != NULL && !ftt_aligned(r.p, align))
            r.bad = "ftm_aligned_alloc returned a misaligned block";
        break;
    case EP_MEMALIGN: {
        void *sentinel = &r;
        void *out = sentinel;
        errno = EDOM;
        int rc = ftm_posix_memalign(&out, align, size);
        if (rc == 0) {
            r.p = out;
            if (!ftt_aligned(out, align))
                r.bad = "ftm_posix_memalign returned a misaligned block";
        } else {
            r.err = rc;
            if (rc != ENOMEM)
                r.bad = "ftm_posix_memalign failed with a code other than ENOMEM";
            else if (out != sentinel)
                r.bad = "ftm_posix_memalign failed but wrote *memptr";
            return r;
        }
        break;
    }
    }
    if (r.p == NULL) {
        r.err = errno;
        if (errno != ENOMEM)
            r.bad = "failed allocation did not set errno to ENOMEM";
    } else if (ftm_usable_size(r.p) < size) {
        r.bad = "usable size below the request";
    }
    return r;
}

typedef struct range_s {
    size_t lo, hi;
} range_t;

static size_t pick_size(uint64_t *rng, range_t r)
{
    /* log-uniform in [lo, hi] */
    unsigned blo = 63 - (unsigned)__builtin_clzll(r.lo), bhi = 63 - (unsigned)__builtin_clzll(r.hi);
    unsigned b = blo + (unsigned)(ftt_rand(rng) % (bhi - blo + 1));
    size_t s = ((size_t)1 << b) + ftt_rand(rng) % ((size_t)1 << b);
    return s < r.lo ? r.lo : s > r.hi ? r.hi : s;
}

static size_t pick_align(uint64_t *rng)
{
    return (size_t)32 << (ftt_rand(rng) % 12); /* 32 B .. 64 KiB */
}

/* The common scenario: under the limit, allocate through ep until it
 * fails; 64 more attempts (every failure NULL + ENOMEM); free every other
 * block (contents checked); allocate again (at least a quarter of what was
 * freed must succeed); check the survivors; free everything; the limit
 * goes; live_count is back to its baseline and a 64 MiB allocation spree
 * works. */
static void exhaust_and_recover(entry_t ep, range_t sizes, size_t margin)
{
    ftm_stats_t base, s;
    ftm_free(ftm_malloc(16)); /* the thread's heap exists */
    ftm_collect(true);
    ftm_stats_get(&base);
    chain_t c = {0};
    uint64_t rng = 42 + (uint64_t)ep;
    size_t failures = 0, freed = 0, again = 0;

    limit_as(margin);
    for (size_t i = 0;; i++) {
        FAIL_IF(i > (size_t)64 << 20, "%s never failed under RLIMIT_AS", ep_name[ep]);
        size_t size = pick_size(&rng, sizes);
        alloc_res_t r = ep_alloc(ep, size, pick_align(&rng));
        FAIL_IF(r.bad, "%s(%zu) under RLIMIT_AS: %s (errno/result %d)", ep_name[ep], size, r.bad,
                r.err);
        if (r.p == NULL) {
            failures++;
            break;
        }
        chain_push(&c, r.p, size);
    }
    FAIL_IF(c.n < 16, "%s failed after only %zu blocks", ep_name[ep], c.n);
    for (int k = 0; k < 64; k++) {
        size_t size = pick_size(&rng, sizes);
        alloc_res_t r = ep_alloc(ep, size, pick_align(&rng));
        FAIL_IF(r.bad, "%s(%zu), attempt %d after the first failure: %s (errno/result %d)",
                ep_name[ep], size, k, r.bad, r.err);
        if (r.p == NULL)
            failures++;
        else
            chain_push(&c, r.p, size);
    }
    size_t before = c.n;
    size_t bad = chain_free(&c, true);
    freed = before - c.n;
    FAIL_IF(bad, "%zu of %zu blocks damaged after allocation failures", bad, before);
    /* room again: a quarter of the freed number must be allocatable (sizes
     * are random, so not every one fits where the freed ones were) */
    for (size_t k = 0; again < freed / 4 && k < freed * 4; k++) {
        size_t size = pick_size(&rng, sizes);
        alloc_res_t r = ep_alloc(ep, size, pick_align(&rng));
        FAIL_IF(r.bad, "%s(%zu) after freeing half: %s (errno/result %d)", ep_name[ep], size,
                r.bad, r.err);
        if (r.p != NULL) {
            chain_push(&c, r.p, size);
            again++;
        }
    }
    FAIL_IF(again < freed / 4,
            "after freeing %zu of %zu blocks only %zu new %s calls succeeded", freed, before,
            again, ep_name[ep]);
    bad = chain_check(&c);
    FAIL_IF(bad, "%zu blocks damaged after allocating again", bad);
    bad = chain_free(&c, false);
    FAIL_IF(bad, "%zu blocks damaged at the end", bad);
done:
    unlimit();
    chain_free(&c, false);
    ftm_collect(true);
    ftm_stats_get(&s);
    cr_log_info("%s: %zu blocks before the first failure (%zu failures), %zu freed, %zu "
                "allocated again",
                ep_name[ep], before, failures, freed, again);
    finish();
    cr_assert_eq(s.live_count, base.live_count, "live_count %llu, baseline %llu", s.live_count,
                 base.live_count);
    cr_assert_eq(s.large_count, base.large_count);
    /* the process keeps working */
    chain_t d = {0};
    for (size_t n = 0; n < 64 * MiB;) {
        size_t size = pick_size(&rng, (range_t){64, 256 * KiB});
        void *p = ftm_malloc(size);
        cr_assert_not_null(p, "ftm_malloc(%zu) after the limit was lifted: %s", size, strerror(errno));
        chain_push(&d, p, size);
        n += size;
    }
    cr_assert_eq(chain_free(&d, false), 0);
}

static const size_t kMargin = 64 * MiB;

Test(oom, malloc_small)
{
    exhaust_and_recover(EP_MALLOC, (range_t){sizeof(blk_t), 512}, kMargin);
}

Test(oom, malloc_medium)
{
    exhaust_and_recover(EP_MALLOC, (range_t){513, 128 * KiB}, kMargin);
}

Test(oom, malloc_large)
{
    /* arena-slice large blocks (up to 2 MiB) and mappings of their own */
    exhaust_and_recover(EP_MALLOC, (range_t){129 * KiB, 8 * MiB}, 2 * kMargin);
}

Test(oom, calloc)
{
    exhaust_and_recover(EP_CALLOC, (range_t){sizeof(blk_t), 1 * MiB}, kMargin);
}

Test(oom, aligned_alloc)
{
    exhaust_and_recover(EP_ALIGNED, (range_t){sizeof(blk_t), 512 * KiB}, kMargin);
}

Test(oom, posix_memalign)
{
    exhaust_and_recover(EP_MEMALIGN, (range_t){sizeof(blk_t), 512 * KiB}, kMargin);
}

/* realloc growth: blocks grow by half again in turns until each has failed
 * once; a failed growth returns NULL + ENOMEM and leaves the block valid
 * with its contents.  Then small blocks (their classes exhausted first)
 * that cannot move up a class fail the same way.  Half of the blocks go;
 * the others grow again. */
#define NGROW 12
Test(oom, realloc_growth)
{
    ftm_stats_t base, s;
    ftm_free(ftm_malloc(16));
    ftm_collect(true);
    ftm_stats_get(&base);
    blk_t *g[NGROW] = {0};
    bool failed[NGROW] = {0};
    chain_t filler = {0};
    size_t grows = 0, fails = 0, small_fails = 0;
    for (int i = 0; i < NGROW; i++) {
        g[i] = ftm_malloc(64);
        cr_assert_not_null(g[i]);
        g[i]->size = 64;
        g[i]->seed = 1000 + (uint64_t)i;
        blk_fill(g[i]);
    }
    limit_as(kMargin);
    for (int round = 0, left = NGROW; left > 0; round++) {
        FAIL_IF(round > 10000, "realloc growth never failed");
        for (int i = 0; i < NGROW; i++) {
            if (failed[i])
                continue;
            size_t old = g[i]->size, want = old + old / 2 + 16;
            errno = 0;
            blk_t *n = ftm_realloc(g[i], want);
            if (n == NULL) {
                FAIL_IF(errno != ENOMEM, "ftm_realloc(%zu -> %zu): NULL with errno %d", old, want,
                        errno);
                FAIL_IF(!blk_intact(g[i]) || ftm_usable_size(g[i]) < old,
                        "ftm_realloc(%zu -> %zu) failed and damaged the old block", old, want);
                failed[i] = true;
                left--;
                fails++;
                continue;
            }
            FAIL_IF(ftm_usable_size(n) < want, "ftm_realloc(%zu -> %zu): usable size %zu", old,
                    want, ftm_usable_size(n));
            /* the old contents moved: check them, extend the pattern */
            size_t keep = n->size;
            FAIL_IF(ftt_check(n + 1, (keep - sizeof *n) < 65536 ? keep - sizeof *n : 65536,
                              n->seed) != SIZE_MAX,
                    "ftm_realloc(%zu -> %zu) lost the contents", old, want);
            n->size = want;
            blk_fill(n);
            g[i] = n;
            grows++;
        }
    }
    /* small blocks: exhaust small classes, then realloc 48 -> 100 must fail cleanly */
    {
        uint64_t rng = 7;
        for (;;) {
            size_t size = pick_size(&rng, (range_t){sizeof(blk_t), 512});
            void *p = ftm_malloc(size);
            if (p == NULL)
                break;
            chain_push(&filler, p, size);
        }
        for (int k = 0; k < 200; k++) {
            void *p = ftm_malloc(48);
            if (p == NULL)
                break;
            ((blk_t *)p)->size = 48;
            ((blk_t *)p)->seed = 5000 + (uint64_t)k;
            blk_fill(p);
            errno = 0;
            void *q = ftm_realloc(p, 100 + (size_t)k * 2);
            if (q == NULL) {
                FAIL_IF(errno != ENOMEM, "small ftm_realloc: NULL with errno %d", errno);
                FAIL_IF(!blk_intact(p), "failed small ftm_realloc damaged the block");
                small_fails++;
                ftm_free(p);
            } else {
                FAIL_IF(ftt_check((blk_t *)q + 1, 48 - sizeof(blk_t), 5000 + (uint64_t)k) != SIZE_MAX,
                        "small ftm_realloc lost the contents");
                ftm_free(q);
            }
        }
    }
    /* half of the grown blocks and of the filler go; the rest grow again */
    FAIL_IF(chain_free(&filler, true), "filler blocks damaged");
    for (int i = 0; i < NGROW; i++) {
        FAIL_IF(!blk_intact(g[i]), "grown block %d damaged", i);
        if (i & 1) {
            ftm_free(g[i]);
            g[i] = NULL;
        }
    }
    {
        size_t regrown = 0;
        for (int i = 0; i < NGROW; i += 2) {
            size_t want = g[i]->size + 4096;
            blk_t *n = ftm_realloc(g[i], want);
            if (n != NULL) {
                FAIL_IF(ftt_check(n + 1, 1024, n->seed) != SIZE_MAX, "regrown block lost its contents");
                n->size = want;
                blk_fill(n);
                g[i] = n;
                regrown++;
            }
        }
        FAIL_IF(regrown == 0, "no block could grow again after half were freed");
    }
done:
    unlimit();
    for (int i = 0; i < NGROW; i++)
        ftm_free(g[i]);
    chain_free(&filler, false);
    cr_log_info("realloc: %zu growths, %zu failed growths, %zu failed small reallocs", grows, fails,
                small_fails);
    finish();
    ftm_collect(true);
    ftm_stats_get(&s);
    cr_assert_eq(s.live_count, base.live_count);
}

/* ---- objects ---------------------------------------------------------------- */

typedef struct tobj_s {
    ftm_object ob;
    uint64_t canary;
    struct tobj_s *next; /* the chain holds one reference to each */
} tobj_t;

typedef struct tvar_s {
    ftm_varobject ob;
    uint64_t canary;
    struct tvar_s *next;
    uint64_t items[];
} tvar_t;

static _Atomic unsigned long g_deallocs;
static void count_dealloc(ftm_object *o)
{
    (void)o;
    atomic_fetch_add_explicit(&g_deallocs, 1, memory_order_relaxed);
}

static ftm_type tobj_type = {.name = "oom_obj", .basic_size = sizeof(tobj_t), .dealloc = count_dealloc};
static ftm_type tlist_type = {.name = "oom_freelist_obj",
                              .basic_size = sizeof(tobj_t),
                              .flags = FTM_TYPE_FREELIST,
                              .dealloc = count_dealloc};
static ftm_type tvar_type = {.name = "oom_var",
                             .basic_size = sizeof(tvar_t),
                             .item_size = sizeof(uint64_t),
                             .dealloc = count_dealloc};

static uint64_t canary_of(const void *p)
{
    return (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull ^ 0x5a5a;
}

/* Objects until ftm_new / ftm_new_var fails: NULL + ENOMEM; half dropped;
 * creation works again; canaries intact; created == freed at the end. */
Test(oom, ftm_new_and_new_var)
{
    ftm_object_stats_t os0, os1;
    ftm_stats_t base, s;
    ftm_decref(ftm_new(&tobj_type)); /* the thread state, the types ready */
    ftm_decref(ftm_new(&tlist_type));
    ftm_decref(ftm_new_var(&tvar_type, 3));
    ftm_thread_flush();
    ftm_collect(true);
    ftm_object_stats_get(&os0);
    ftm_stats_get(&base);
    tobj_t *objs = NULL;
    tvar_t *vars = NULL;
    size_t nobj = 0, nvar = 0, nobj_fail = 0, nvar_fail = 0, again = 0;
    uint64_t rng = 99;

    limit_as(kMargin);
    /* interleaved: fixed-size objects (two types) and variable-size ones of
     * 1 .. 40000 items (up to 320 KiB: small, medium, large blocks) */
    for (size_t i = 0; nobj_fail == 0 || nvar_fail == 0; i++) {
        FAIL_IF(i > (size_t)32 << 20, "ftm_new never failed under RLIMIT_AS");
        if (nobj_fail == 0 || (i & 1)) {
            errno = 0;
            tobj_t *o = (tobj_t *)ftm_new((i & 2) ? &tlist_type : &tobj_type);
            if (o == NULL) {
                FAIL_IF(errno != ENOMEM, "ftm_new: NULL with errno %d", errno);
                nobj_fail++;
            } else {
                o->canary = canary_of(o);
                o->next = objs;
                objs = o;
                nobj++;
            }
        }
        if (nvar_fail == 0 || !(i & 1)) {
            size_t items = pick_size(&rng, (range_t){1, 40000});
            errno = 0;
            tvar_t *v = (tvar_t *)ftm_new_var(&tvar_type, items);
            if (v == NULL) {
                FAIL_IF(errno != ENOMEM, "ftm_new_var(%zu): NULL with errno %d", items, errno);
                nvar_fail++;
            } else {
                FAIL_IF(ftm_var_size(&v->ob.ob_base) != items, "ftm_new_var: ob_size %zu, asked %zu",
                        ftm_var_size(&v->ob.ob_base), items);
                v->canary = canary_of(v);
                v->items[items - 1] = v->canary;
                v->next = vars;
                vars = v;
                nvar++;
            }
        }
    }
    /* more attempts: each NULL + ENOMEM or a success */
    for (int k = 0; k < 64; k++) {
        errno = 0;
        ftm_object *o = ftm_new(&tobj_type);
        FAIL_IF(o == NULL && errno != ENOMEM, "ftm_new after failures: errno %d", errno);
        if (o)
            ftm_decref(o);
        errno = 0;
        o = ftm_new_var(&tvar_type, 1000 + (size_t)k * 997);
        FAIL_IF(o == NULL && errno != ENOMEM, "ftm_new_var after failures: errno %d", errno);
        if (o)
            ftm_decref(o);
    }
    /* drop every other object */
    {
        size_t i = 0;
        for (tobj_t **l = &objs; *l; i++) {
            tobj_t *o = *l;
            FAIL_IF(o->canary != canary_of(o), "object %zu damaged", i);
            if (i & 1) {
                *l = o->next;
                ftm_decref(&o->ob);
                nobj--;
            } else {
                l = &o->next;
            }
        }
        i = 0;
        for (tvar_t **l = &vars; *l; i++) {
            tvar_t *v = *l;
            size_t n = ftm_var_size(&v->ob.ob_base);
            FAIL_IF(v->canary != canary_of(v) || v->items[n - 1] != v->canary,
                    "variable-size object %zu damaged", i);
            if (i & 1) {
                *l = v->next;
                ftm_decref(&v->ob.ob_base);
                nvar--;
            } else {
                l = &v->next;
            }
        }
    }
    /* creation works again */
    for (int k = 0; k < 1000; k++) {
        tobj_t *o = (tobj_t *)ftm_new(&tobj_type);
        FAIL_IF(o == NULL, "ftm_new after half the objects were dropped: %s", strerror(errno));
        o->canary = canary_of(o);
        o->next = objs;
        objs = o;
        nobj++;
        again++;
    }
    for (tobj_t *o = objs; o; o = o->next)
        FAIL_IF(o->canary != canary_of(o), "an object was damaged after creating again");
done:
    unlimit();
    while (objs) {
        tobj_t *n = objs->next;
        ftm_decref(&objs->ob);
        objs = n;
    }
    while (vars) {
        tvar_t *n = vars->next;
        ftm_decref(&vars->ob.ob_base);
        vars = n;
    }
    cr_log_info("objects: %zu fixed / %zu variable alive at the failures, %zu created again",
                nobj, nvar, again);
    finish();
    ftm_thread_flush();
    ftm_object_stats_get(&os1);
    cr_assert_eq(os1.created - os0.created, os1.freed - os0.freed,
                 "objects created %llu, freed %llu", (unsigned long long)(os1.created - os0.created),
                 (unsigned long long)(os1.freed - os0.freed));
    (void)s;
    (void)base;
}

/* Fill most of the memory left under the limit with blocks of 16 B ..
 * 64 KiB (until the first failure), so that what comes next fails soon. */
static void fill_most(chain_t *filler, uint64_t seed)
{
    uint64_t rng = seed;
    for (;;) {
        size_t size = pick_size(&rng, (range_t){sizeof(blk_t), 64 * KiB});
        void *p = ftm_malloc(size);
        if (p == NULL)
            return;
        chain_push(filler, p, size);
    }
}

/* Weak references until ftm_weakref_new fails (NULL + ENOMEM): the
 * referents exist before the limit (a few get many weak references: new
 * weak-reference objects; the others one each: new side-table entries and
 * table growth); a filler eats most of the memory first.  Gets through the
 * surviving ones return their referents; after half of the filler and of
 * the weak references are gone new ones can be made; when the referents
 * die, callbacks run exactly for the live weak references with one. */
static _Atomic unsigned long g_callbacks;
static void wr_cb(ftm_weakref *wr, void *arg)
{
    (void)wr;
    (void)arg;
    atomic_fetch_add_explicit(&g_callbacks, 1, memory_order_relaxed);
}

#define NREF 20000
#define MAXW (1 << 20)
static struct {
    ftm_weakref *w;
    uint32_t ref;
    uint32_t has_cb;
} g_w[MAXW]; /* static: no allocation under the limit */

Test(oom, weakref_new)
{
    ftm_object_stats_t os0, os1;
    static tobj_t *refs[NREF];
    chain_t filler = {0};
    size_t nw = 0, fails = 0, again = 0, live_cb = 0;
    /* warm-up: the side table exists (see oom_internal.weakref_first_use) */
    {
        ftm_object *o = ftm_new(&tobj_type);
        ftm_weakref_release(ftm_weakref_new(o, NULL, NULL));
        ftm_decref(o);
    }
    ftm_thread_flush();
    ftm_object_stats_get(&os0);
    for (int i = 0; i < NREF; i++) {
        refs[i] = (tobj_t *)ftm_new(&tobj_type);
        cr_assert_not_null(refs[i]);
        refs[i]->canary = canary_of(refs[i]);
    }
    atomic_store(&g_callbacks, 0);
    limit_as(kMargin);
    fill_most(&filler, 11);
    for (size_t i = 0;; i++) {
        FAIL_IF(nw == MAXW, "ftm_weakref_new never failed under RLIMIT_AS (%zu made)", nw);
        /* a third to new referents, the rest to the first 16 */
        uint32_t r = (uint32_t)((i % 3 == 0) ? (i / 3) % NREF : i % 16);
        int cb = (int)(i & 1);
        errno = 0;
        ftm_weakref *w = ftm_weakref_new(&refs[r]->ob, cb ? wr_cb : NULL, NULL);
        if (w == NULL) {
            FAIL_IF(errno != ENOMEM, "ftm_weakref_new: NULL with errno %d", errno);
            fails++;
            break;
        }
        g_w[nw].w = w;
        g_w[nw].ref = r;
        g_w[nw].has_cb = (uint32_t)cb;
        nw++;
    }
    for (int k = 0; k < 64; k++) {
        errno = 0;
        ftm_weakref *w = ftm_weakref_new(&refs[(k * 311) % NREF]->ob, wr_cb, NULL);
        FAIL_IF(w == NULL && errno != ENOMEM, "ftm_weakref_new after failures: errno %d", errno);
        if (w == NULL)
            fails++;
        else
            ftm_weakref_release(w);
    }
    /* gets are right; half of the filler and every other weak reference go */
    FAIL_IF(chain_free(&filler, true) != 0, "filler damaged");
    {
        size_t kept = 0;
        for (size_t i = 0; i < nw; i++) {
            ftm_object *o = ftm_weakref_get(g_w[i].w);
            FAIL_IF(o != &refs[g_w[i].ref]->ob, "weakref %zu: get returned %p, expected %p", i,
                    (void *)o, (void *)refs[g_w[i].ref]);
            ftm_decref(o);
            if (i & 1)
                ftm_weakref_release(g_w[i].w);
            else
                g_w[kept++] = g_w[i];
        }
        nw = kept;
    }
    for (int k = 0; k < 1000; k++) {
        ftm_weakref *w = ftm_weakref_new(&refs[(k * 7919) % NREF]->ob, NULL, NULL);
        FAIL_IF(w == NULL, "ftm_weakref_new after memory was freed: %s", strerror(errno));
        ftm_weakref_release(w);
        again++;
    }
done:
    unlimit();
    chain_free(&filler, false);
    for (size_t i = 0; i < nw; i++)
        live_cb += g_w[i].has_cb;
    for (int i = 0; i < NREF; i++) {
        cr_assert_eq(refs[i]->canary, canary_of(refs[i]), "referent %d damaged", i);
        ftm_decref(&refs[i]->ob);
    }
    size_t cbs = atomic_load(&g_callbacks);
    for (size_t i = 0; i < nw; i++) {
        cr_assert_null(ftm_weakref_get(g_w[i].w), "a get after the referent died");
        ftm_weakref_release(g_w[i].w);
    }
    cr_log_info("weakrefs: %zu live at the first failure, %zu failures, %zu made again", nw * 2,
                fails, again);
    finish();
    cr_assert_eq(cbs, live_cb, "%zu callbacks ran, %zu live weak references had one", cbs, live_cb);
    ftm_thread_flush();
    ftm_object_stats_get(&os1);
    cr_assert_eq(os1.created - os0.created, os1.freed - os0.freed, "objects created %llu, freed %llu",
                 (unsigned long long)(os1.created - os0.created),
                 (unsigned long long)(os1.freed - os0.freed));
}

/* Interning until ftm_intern fails (NULL + ENOMEM): the values are made
 * before the limit, a filler eats most of the memory; after half the
 * filler is freed interning works again; every interned value is still
 * found, intact.  With check_release (oom_internal.intern_enomem_releases):
 * afterwards created - freed must be exactly the number interned (they are
 * immortal; object.h: a failed ftm_intern releases obj's reference "in both
 * cases"). */
typedef struct tstr_s {
    ftm_object ob;
    uint64_t v;
    uint64_t check;
} tstr_t;
static ftm_type tstr_type = {.name = "oom_str", .basic_size = sizeof(tstr_t)};
static uint64_t tstr_hash(const ftm_object *o)
{
    return ((const tstr_t *)o)->v * 0x9E3779B97F4A7C15ull;
}
static bool tstr_eq(const ftm_object *a, const ftm_object *b)
{
    return ((const tstr_t *)a)->v == ((const tstr_t *)b)->v;
}

#define NSTR (1 << 19)
static tstr_t *g_str[NSTR];

static void intern_scenario(bool check_release)
{
    ftm_object_stats_t os0, os1;
    ftm_intern_table *t = ftm_intern_table_new(tstr_hash, tstr_eq);
    cr_assert_not_null(t);
    ftm_thread_flush();
    ftm_object_stats_get(&os0);
    for (size_t i = 0; i < NSTR; i++) {
        g_str[i] = (tstr_t *)ftm_new(&tstr_type);
        cr_assert_not_null(g_str[i]);
        g_str[i]->v = i + 1;
        g_str[i]->check = ~(uint64_t)(i + 1);
    }
    chain_t filler = {0};
    size_t fails = 0, interned = 0, again = 0, next = 0;

    limit_as(kMargin);
    fill_most(&filler, 5);
    while (fails < 16) {
        FAIL_IF(next == NSTR, "ftm_intern never failed under RLIMIT_AS (%zu interned)", interned);
        tstr_t *s = g_str[next];
        g_str[next++] = NULL; /* its reference goes to ftm_intern */
        errno = 0;
        ftm_object *c = ftm_intern(t, &s->ob);
        if (c == NULL) {
            FAIL_IF(errno != ENOMEM, "ftm_intern: NULL with errno %d", errno);
            fails++;
            continue;
        }
        FAIL_IF(c != &s->ob, "ftm_intern of a new value returned another object");
        interned++;
    }
    FAIL_IF(ftm_intern_count(t) != interned, "ftm_intern_count %zu, %zu interned",
            ftm_intern_count(t), interned);
    FAIL_IF(chain_free(&filler, true) != 0, "filler damaged");
    for (int k = 0; k < 1000 && next < NSTR; k++) {
        tstr_t *s = g_str[next];
        g_str[next++] = NULL;
        ftm_object *c = ftm_intern(t, &s->ob);
        FAIL_IF(c == NULL, "ftm_intern after half the filler was freed: %s", strerror(errno));
        interned++;
        again++;
    }
done:
    unlimit();
    chain_free(&filler, false);
    for (size_t i = next; i < NSTR; i++)
        ftm_decref(&g_str[i]->ob);
    cr_log_info("intern: %zu interned, %zu ENOMEM from ftm_intern, %zu interned again", interned,
                fails, again);
    finish();
    /* every value interned is there, intact */
    size_t found = 0;
    for (uint64_t x = 1; x <= next; x++) {
        tstr_t probe = {.v = x};
        tstr_t *c = (tstr_t *)ftm_intern_lookup(t, &probe.ob);
        if (c) {
            cr_assert_eq(c->v, x);
            cr_assert_eq(c->check, ~x, "interned value %llu damaged", (unsigned long long)x);
            found++;
        }
    }
    cr_assert_eq(found, interned, "%zu values found, %zu interned", found, interned);
    ftm_thread_flush();
    ftm_object_stats_get(&os1);
    if (check_release)
        cr_assert_eq(os1.created - os1.freed - (os0.created - os0.freed), (uint64_t)interned,
                 "%llu objects still alive, %zu interned: values whose ftm_intern failed with "
                 "ENOMEM were not released",
                 (unsigned long long)(os1.created - os1.freed - (os0.created - os0.freed)), interned);
    ftm_intern_table_free(t);
}

Test(oom, intern)
{
    intern_scenario(false);
}

/* When the shard's ck_hs cannot grow (ck_hs_put fails) ftm_intern must
 * release obj (object.h: "obj's reference is released in both cases").
 * It used to make obj immortal before ck_hs_put, so every such ENOMEM
 * leaked the value for good; now it enters obj first and makes it
 * immortal after (src/intern.c). */
Test(oom_internal, intern_enomem_releases_value)
{
    intern_scenario(true);
}

/* ---- the object layer's internal allocations --------------------------------
 * Each runs in a forked child: the limit is set, every class the calling
 * thread's heap could serve is used up (exhaust_all) and every page of
 * address space left is mapped (eat_address_space), then one operation
 * runs.  The child exits 0 if it returned as documented; an abort shows as
 * SIGABRT with ftmem's message in its stderr. */

static chain_t g_fill;
static pages_t g_pages;

/* Allocate until failure in every small and medium class and as large
 * blocks, then map what is left page by page. */
static void exhaust_all(void)
{
    static const size_t sizes[] = {16,   32,   48,   64,   80,   96,   112,  128,  144,  160,
                                   176,  192,  208,  224,  240,  256,  272,  288,  320,  352,
                                   384,  416,  448,  480,  512,  640,  768,  896,  1024, 1280,
                                   1536, 1792, 2048, 2560, 3072, 3584, 4096, 6144, 8192, 16384,
                                   32768, 65536, 131072, 1048576};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
        for (;;) {
            size_t n = sizes[k] < sizeof(blk_t) ? sizeof(blk_t) : sizes[k];
            void *p = ftm_malloc(n);
            if (p == NULL)
                break;
            chain_push(&g_fill, p, n);
        }
    eat_address_space(&g_pages);
}

static void release_all(void)
{
    munmap_all(&g_pages);
    chain_free(&g_fill, false);
}

static void child_limit(size_t margin)
{
    struct rlimit r;
    if (getrlimit(RLIMIT_AS, &r) != 0)
        _exit(90);
    g_saved = r;
    r.rlim_cur = (rlim_t)(vm_size() + margin);
    if (setrlimit(RLIMIT_AS, &r) != 0)
        _exit(91);
    g_limited = true;
}

static void expect_child_ok(void (*fn)(void *), const char *what)
{
    ftt_child_t out;
    ftt_run_child(fn, NULL, 60, &out);
    char buf[128];
    cr_assert(WIFEXITED(out.status) && WEXITSTATUS(out.status) == 0,
              "%s: the child %s; its stderr:\n%s", what, ftt_status_str(out.status, buf, sizeof buf),
              out.err);
}

/* The weak reference side table is created by the first ftm_weakref_new
 * (src/weakref.c ftm__wr_init); if ck_hs_init cannot allocate, object.h
 * promises NULL + ENOMEM, and a later call must be able to build it.  (It
 * used to abort: "ftmem: out of memory creating the weak reference table",
 * from a pthread_once that could not run again.) */
static void child_weakref_first_use(void *arg)
{
    (void)arg;
    ftm_object *o = ftm_new(&tobj_type);
    if (o == NULL)
        _exit(2);
    child_limit(32 * MiB);
    exhaust_all();
    errno = 0;
    ftm_weakref *w = ftm_weakref_new(o, NULL, NULL);
    int e = errno;
    release_all();
    unlimit();
    if (w != NULL) { /* room was left after all: fine, if it works */
        ftm_weakref_release(w);
        _exit(0);
    }
    if (e != ENOMEM)
        _exit(3);
    /* memory is back: the weak reference can be made now */
    w = ftm_weakref_new(o, NULL, NULL);
    if (w == NULL)
        _exit(4);
    if (ftm_weakref_get(w) != o)
        _exit(5);
    ftm_decref(o);
    ftm_weakref_release(w);
    ftm_decref(o);
    _exit(0);
}

Test(oom_internal, weakref_first_use)
{
    expect_child_ok(child_weakref_first_use, "first ftm_weakref_new out of memory");
}

/* A thread's first object call registers its thread state, one page from
 * ftm__os_map (src/tstate.c ftm__tstate_acquire); when that mmap fails
 * ftm_new must return NULL + ENOMEM, and take no slot.  (It used to abort
 * with "ftmem: cannot register a thread (more than 65536 threads?)", after
 * taking a slot for good.) */
static pthread_barrier_t g_bar;
static ftm_object *g_thread_result;
static int g_thread_errno;
static void *late_thread(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&g_bar); /* memory is exhausted now */
    errno = 0;
    g_thread_result = ftm_new(&tobj_type);
    g_thread_errno = errno;
    pthread_barrier_wait(&g_bar);
    return NULL;
}

static void child_new_thread(void *arg)
{
    (void)arg;
    ftm_decref(ftm_new(&tobj_type)); /* type ready, main registered */
    pthread_barrier_init(&g_bar, NULL, 2);
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 256 * 1024);
    if (pthread_create(&t, &a, late_thread, NULL) != 0)
        _exit(2);
    child_limit(32 * MiB);
    exhaust_all();
    pthread_barrier_wait(&g_bar);
    pthread_barrier_wait(&g_bar);
    release_all();
    unlimit();
    pthread_join(t, NULL);
    if (g_thread_result != NULL) {
        ftm_decref(g_thread_result); /* another thread's object: shared decref */
        _exit(0);
    }
    _exit(g_thread_errno == ENOMEM ? 0 : 3);
}

Test(oom_internal, new_thread_first_object)
{
    expect_child_ok(child_new_thread, "a thread's first ftm_new out of memory");
}

/* A decref by a thread that is not the owner, taking the shared count
 * below zero while the owner lives, queues the object to its owner in a
 * node from ftm_malloc (src/refcount.c ftm__brc_queue).  ftm_decref has no
 * error path: when the node cannot be allocated it must still work — here
 * with the owner attached, blocked in a barrier (it used to abort: "ftmem:
 * out of memory queueing an object to its owner"). */
static tobj_t *g_shared;
static void *decref_thread(void *arg)
{
    (void)arg;
    ftm_decref(ftm_new(&tobj_type)); /* registered, with a pool of that class */
    pthread_barrier_wait(&g_bar);    /* memory is exhausted now */
    ftm_decref(&g_shared->ob);       /* the main thread owns it and lives */
    pthread_barrier_wait(&g_bar);
    return NULL;
}

static void child_cross_decref(void *arg)
{
    (void)arg;
    atomic_store(&g_deallocs, 0);
    g_shared = (tobj_t *)ftm_new(&tobj_type);
    if (g_shared == NULL)
        _exit(2);
    ftm_incref(&g_shared->ob); /* two references: ours and the thread's */
    pthread_barrier_init(&g_bar, NULL, 2);
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 256 * 1024);
    if (pthread_create(&t, &a, decref_thread, NULL) != 0)
        _exit(3);
    child_limit(32 * MiB);
    exhaust_all();
    pthread_barrier_wait(&g_bar);
    pthread_barrier_wait(&g_bar);
    release_all();
    unlimit();
    pthread_join(t, NULL);
    ftm_decref(&g_shared->ob); /* the last reference */
    ftm_thread_flush();
    _exit(atomic_load(&g_deallocs) == 2 ? 0 : 4); /* the thread's own object and g_shared */
}

Test(oom_internal, cross_thread_decref)
{
    expect_child_ok(child_cross_decref, "cross-thread decref out of memory");
}

/* Deaths nested more than FTM_TRASH_DEPTH (64) deep are postponed in an
 * array grown with ftm_realloc (src/object.c ftm__dealloc).  Dropping the
 * head of a long chain must work when it cannot grow (it used to abort:
 * "ftmem: out of memory postponing a deallocation"). */
typedef struct link_s {
    ftm_object ob;
    ftm_field next;
} link_t;
static void link_clear(ftm_object *self)
{
    ftm_field_clear(&((link_t *)self)->next);
}
static int link_traverse(ftm_object *self, ftm_visitproc visit, void *arg)
{
    ftm_object *n = ftm_field_peek(&((link_t *)self)->next);
    return n ? visit(n, arg) : 0;
}
static ftm_type link_type = {.name = "oom_link",
                             .basic_size = sizeof(link_t),
                             .traverse = link_traverse,
                             .clear = link_clear,
                             .dealloc = count_dealloc};

static void child_deep_dealloc(void *arg)
{
    (void)arg;
    enum { DEPTH = 2000 };
    atomic_store(&g_deallocs, 0);
    ftm_object *head = NULL;
    for (int i = 0; i < DEPTH; i++) {
        link_t *l = (link_t *)ftm_new(&link_type);
        if (l == NULL)
            _exit(2);
        ftm_field_init(&l->next, head);
        head = &l->ob;
    }
    child_limit(32 * MiB);
    exhaust_all();
    ftm_decref(head); /* 2000 deaths, nested */
    release_all();
    unlimit();
    ftm_thread_flush();
    _exit(atomic_load(&g_deallocs) == DEPTH ? 0 : 3);
}

Test(oom_internal, deep_dealloc)
{
    expect_child_ok(child_deep_dealloc, "dropping a 2000-deep chain out of memory");
}

/* A thread's per-thread counts of deferred objects are an array grown by
 * ftm_realloc on the first incref of a deferred object (src/deferred.c
 * ftm__dcounts_grow, from ftm_incref's slow path).  ftm_incref has no
 * error path: it must work when the array cannot grow (it used to abort:
 * "ftmem: out of memory growing deferred counts"). */
static void child_deferred_incref(void *arg)
{
    (void)arg;
    atomic_store(&g_deallocs, 0);
    ftm_object *o = ftm_new(&tobj_type);
    if (o == NULL || ftm_set_deferred(o) != 0)
        _exit(2);
    child_limit(32 * MiB);
    exhaust_all();
    ftm_incref(o); /* the first deferred count of this thread */
    ftm_decref(o);
    release_all();
    unlimit();
    if (ftm_clear_deferred(o) != 0)
        _exit(3);
    ftm_decref(o);
    ftm_thread_flush();
    _exit(atomic_load(&g_deallocs) == 1 ? 0 : 4);
}

Test(oom_internal, deferred_first_incref)
{
    expect_child_ok(child_deferred_incref, "first incref of a deferred object out of memory");
}

/* A failed arena reservation must not use up an arena record (records are
 * never given back).  There are FTM_MAX_ARENAS (16384) of them: when each
 * failed mmap took one (src/arena.c ftm__arena_create used to), after that
 * many allocation failures no arena could ever be made again, and once the
 * limit was lifted allocation still failed with ENOMEM.  (Heap and
 * thread-state records did the same: src/heap.c ftm__heap_acquire,
 * src/tstate.c ftm__tstate_acquire.)  Now the memory is mapped first. */
Test(oom_internal, failures_do_not_use_up_arenas)
{
    ftm_free(ftm_malloc(100000));
    chain_t c = {0};
    size_t fails = 0;
    limit_as(32 * MiB);
    for (;;) {
        void *p = ftm_malloc(100000);
        if (p == NULL)
            break;
        chain_push(&c, p, 100000);
    }
    /* 20000 more failures of a medium allocation (each tries to reserve an arena) */
    for (int k = 0; k < 20000; k++) {
        errno = 0;
        void *p = ftm_malloc(100000);
        FAIL_IF(p != NULL, "allocation %d succeeded under the limit", k);
        FAIL_IF(errno != ENOMEM, "errno %d", errno);
        fails++;
    }
done:
    unlimit();
    finish();
    /* the limit is gone: 256 MiB more must be allocatable (new arenas) */
    chain_t d = {0};
    size_t got = 0;
    for (; got < 256 * MiB; got += 100000) {
        errno = 0;
        void *p = ftm_malloc(100000);
        if (p == NULL)
            break;
        chain_push(&d, p, 100000);
    }
    size_t dn = d.n;
    chain_free(&d, false);
    chain_free(&c, false);
    cr_assert_geq(got, 256 * MiB,
                  "after %zu allocation failures and with RLIMIT_AS lifted, ftm_malloc(100000) "
                  "fails (%s) after only %zu more blocks: arena records used up by failed "
                  "reservations",
                  fails, strerror(errno), dn);
}
