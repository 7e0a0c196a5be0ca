/* test_alloc.c — the allocation calls through the public API: malloc,
 * calloc, realloc, reallocarray, free, free_sized, usable_size, good_size
 * and collect, across small, medium and large (directly mapped) sizes.
 * Bad arguments are in test_badinput.c, alignment in test_align.c. */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include "ftm_test.h"
#include <ftmem.h>

TestSuite(alloc, .timeout = 60);

/* Sizes covering every kind of block: the 8-byte steps, the classes per
 * doubling, the medium limit and beyond, and directly mapped blocks. */
static const size_t kSizes[] = {
    1, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 100, 127, 128, 129,
    255, 256, 257, 500, 511, 512, 513, 640, 1000, 1023, 1024, 1025, 2000, 4095,
    4096, 4097, 8191, 8192, 8193, 12345, 16384, 32767, 32768, 32769, 65535,
    65536, 65537, 100 * 1024, 128 * 1024 - 1, 128 * 1024, 128 * 1024 + 1,
    256 * 1024, 512 * 1024 - 8, 512 * 1024, 512 * 1024 + 8, 1024 * 1024 - 1,
    1024 * 1024, 1024 * 1024 + 1, 2 * 1024 * 1024, 4 * 1024 * 1024 - 16,
    4 * 1024 * 1024, 4 * 1024 * 1024 + 16, 8 * 1024 * 1024 + 4096 + 1,
    64 * 1024 * 1024,
};
#define NSIZES (sizeof kSizes / sizeof kSizes[0])

Test(alloc, malloc_every_kind_of_size)
{
    void *blocks[NSIZES];
    size_t usable[NSIZES];
    for (size_t i = 0; i < NSIZES; i++) {
        size_t n = kSizes[i];
        blocks[i] = ftm_malloc(n);
        cr_assert_not_null(blocks[i], "ftm_malloc(%zu) returned NULL", n);
        usable[i] = ftm_usable_size(blocks[i]);
        cr_assert_geq(usable[i], n, "ftm_usable_size(ftm_malloc(%zu)) = %zu < %zu", n, usable[i], n);
        cr_assert(ftt_aligned(blocks[i], FTM_MIN_ALIGN), "ftm_malloc(%zu) = %p not %d-aligned",
                  n, blocks[i], FTM_MIN_ALIGN);
        ftt_fill(blocks[i], usable[i], 1000 + i); /* the whole usable size is writable */
    }
    /* All live at once: no block overlaps another. */
    for (size_t i = 0; i < NSIZES; i++) {
        size_t bad = ftt_check(blocks[i], usable[i], 1000 + i);
        cr_assert_eq(bad, SIZE_MAX, "block of %zu bytes (usable %zu) at %p corrupted at offset %zu",
                     kSizes[i], usable[i], blocks[i], bad);
    }
    for (size_t i = 0; i < NSIZES; i++)
        ftm_free(blocks[i]);
}

Test(alloc, many_blocks_distinct_and_intact)
{
    enum { N = 20000 };
    static void *p[N];
    static size_t sz[N];
    uint64_t rng = 42;
    for (size_t i = 0; i < N; i++) {
        uint64_t r = ftt_rand(&rng);
        sz[i] = (r % 16 == 0) ? 1 + r % 40000 : 1 + r % 1024;
        p[i] = ftm_malloc(sz[i]);
        cr_assert_not_null(p[i], "ftm_malloc(%zu) #%zu returned NULL", sz[i], i);
        ftt_fill(p[i], sz[i], i);
    }
    /* Free a random half, then allocate new blocks into the holes. */
    for (size_t i = 0; i < N; i++) {
        if (ftt_rand(&rng) & 1) {
            size_t bad = ftt_check(p[i], sz[i], i);
            cr_assert_eq(bad, SIZE_MAX, "block #%zu (%zu B) corrupted at %zu before free", i, sz[i], bad);
            ftm_free(p[i]);
            sz[i] = 1 + ftt_rand(&rng) % 2048;
            p[i] = ftm_malloc(sz[i]);
            cr_assert_not_null(p[i]);
            ftt_fill(p[i], sz[i], i + N);
            sz[i] |= (size_t)1 << 62; /* mark: seed is i + N */
        }
    }
    for (size_t i = 0; i < N; i++) {
        bool second = sz[i] >> 62;
        size_t n = sz[i] & (((size_t)1 << 62) - 1);
        size_t bad = ftt_check(p[i], n, second ? i + N : i);
        cr_assert_eq(bad, SIZE_MAX, "block #%zu (%zu B at %p) corrupted at offset %zu", i, n, p[i], bad);
        ftm_free(p[i]);
    }
}

Test(alloc, usable_size_writable_without_touching_neighbours)
{
    static const size_t sizes[] = {1, 8, 13, 24, 100, 500, 1000, 3000, 5000, 20000, 70000, 300000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        void *blk[3];
        size_t u[3];
        for (int k = 0; k < 3; k++) {
            blk[k] = ftm_malloc(n);
            cr_assert_not_null(blk[k]);
            u[k] = ftm_usable_size(blk[k]);
            cr_assert_geq(u[k], n);
            ftt_fill(blk[k], u[k], 7 * s + k);
        }
        /* Rewrite the middle block to its full usable size with another
         * pattern: the neighbours must not change. */
        ftt_fill(blk[1], u[1], 999 + s);
        cr_assert_eq(ftt_check(blk[0], u[0], 7 * s), SIZE_MAX, "size %zu: writing usable_size bytes of a neighbour corrupted block 0", n);
        cr_assert_eq(ftt_check(blk[2], u[2], 7 * s + 2), SIZE_MAX, "size %zu: writing usable_size bytes of a neighbour corrupted block 2", n);
        cr_assert_eq(ftt_check(blk[1], u[1], 999 + s), SIZE_MAX);
        for (int k = 0; k < 3; k++)
            ftm_free(blk[k]);
    }
}

Test(alloc, usable_size_of_null_is_zero)
{
    cr_assert_eq(ftm_usable_size(NULL), 0);
}

Test(alloc, free_null_and_free_sized_null_do_nothing)
{
    ftm_stats_t before, after;
    ftm_stats_get(&before);
    ftm_free(NULL);
    ftm_free_sized(NULL, 0);
    ftm_free_sized(NULL, 64);
    ftm_stats_get(&after);
    cr_assert_eq(after.free_count, before.free_count, "ftm_free(NULL) counted as a free");
    cr_assert_eq(after.live_count, before.live_count);
    void *p = ftm_malloc(32);
    cr_assert_not_null(p, "allocation after ftm_free(NULL) failed");
    ftm_free(p);
}

Test(alloc, malloc_zero_gives_unique_freeable_blocks)
{
    void *a = ftm_malloc(0), *b = ftm_malloc(0);
    if (a && b)
        cr_assert_neq(a, b, "two live ftm_malloc(0) blocks share an address");
    ftm_free(a);
    ftm_free(b);
    void *c = ftm_calloc(0, 16), *d = ftm_calloc(16, 0);
    if (c && d)
        cr_assert_neq(c, d);
    ftm_free(c);
    ftm_free(d);
}

Test(alloc, calloc_is_zeroed)
{
    static const size_t counts[] = {1, 3, 10, 100, 1000};
    static const size_t elems[] = {1, 8, 12, 100, 4096, 10000};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        for (size_t e = 0; e < sizeof elems / sizeof elems[0]; e++) {
            size_t n = counts[c] * elems[e];
            void *p = ftm_calloc(counts[c], elems[e]);
            cr_assert_not_null(p, "ftm_calloc(%zu, %zu) returned NULL", counts[c], elems[e]);
            cr_assert_geq(ftm_usable_size(p), n);
            size_t nz = ftt_first_nonzero(p, n);
            cr_assert_eq(nz, SIZE_MAX, "ftm_calloc(%zu, %zu): byte %zu not zero", counts[c], elems[e], nz);
            ftm_free(p);
        }
    }
}

/* calloc must zero a block even when it reuses one the program dirtied:
 * small (pool free lists), medium and large (the cache of mappings). */
Test(alloc, calloc_zeroes_reused_dirty_blocks)
{
    static const size_t sizes[] = {16, 64, 200, 512, 1000, 4096, 30000, 100 * 1024,
                                   1024 * 1024, 5 * 1024 * 1024, 64 * 1024 * 1024};
    enum { K = 8 };
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        int k_max = n >= 1024 * 1024 ? 2 : K;
        void *p[K];
        for (int k = 0; k < k_max; k++) {
            p[k] = ftm_malloc(n);
            cr_assert_not_null(p[k]);
            memset(ftt_launder(p[k]), 0xAB, ftm_usable_size(p[k]));
        }
        for (int k = 0; k < k_max; k++)
            ftm_free(p[k]);
        for (int k = 0; k < k_max; k++) {
            p[k] = ftm_calloc(1, n);
            cr_assert_not_null(p[k]);
            size_t nz = ftt_first_nonzero(p[k], n);
            cr_assert_eq(nz, SIZE_MAX, "ftm_calloc(1, %zu) after freeing dirty blocks: byte %zu is 0x%02x",
                         n, nz, nz == SIZE_MAX ? 0 : ((unsigned char *)p[k])[nz]);
            memset(ftt_launder(p[k]), 0xCD, n);
        }
        for (int k = 0; k < k_max; k++)
            ftm_free(p[k]);
        /* And through calloc(count, size) with count > 1. */
        void *q = ftm_calloc(n / 8 ? n / 8 : 1, 8);
        cr_assert_not_null(q);
        cr_assert_eq(ftt_first_nonzero(q, n), SIZE_MAX, "ftm_calloc(%zu, 8) not zeroed", n / 8);
        ftm_free(q);
    }
}

Test(alloc, realloc_null_is_malloc)
{
    static const size_t sizes[] = {1, 100, 5000, 200000, 8 * 1024 * 1024};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        void *p = ftm_realloc(NULL, sizes[s]);
        cr_assert_not_null(p, "ftm_realloc(NULL, %zu) returned NULL", sizes[s]);
        cr_assert_geq(ftm_usable_size(p), sizes[s]);
        ftt_fill(p, sizes[s], s);
        cr_assert_eq(ftt_check(p, sizes[s], s), SIZE_MAX);
        ftm_free(p);
    }
    void *q = ftm_reallocarray(NULL, 10, 100);
    cr_assert_not_null(q, "ftm_reallocarray(NULL, 10, 100) returned NULL");
    cr_assert_geq(ftm_usable_size(q), 1000);
    ftm_free(q);
}

static const size_t kSteps[] = {8, 500, 4096, 100 * 1024, 1024 * 1024, 64 * 1024 * 1024};
#define NSTEPS (sizeof kSteps / sizeof kSteps[0])

static void *realloc_checked(void *p, size_t old, size_t new, uint64_t seed)
{
    void *q = ftm_realloc(p, new);
    cr_assert_not_null(q, "ftm_realloc(%p, %zu) from %zu returned NULL", p, new, old);
    cr_assert(ftt_aligned(q, FTM_MIN_ALIGN));
    cr_assert_geq(ftm_usable_size(q), new, "after realloc %zu -> %zu usable_size is %zu", old, new, ftm_usable_size(q));
    size_t keep = old < new ? old : new;
    size_t bad = ftt_check(q, keep, seed);
    cr_assert_eq(bad, SIZE_MAX, "ftm_realloc %zu -> %zu (%p -> %p) lost contents at offset %zu of %zu",
                 old, new, p, q, bad, keep);
    return q;
}

/* small -> medium -> large -> small, one block throughout. */
Test(alloc, realloc_chain_up_and_down)
{
    size_t cur = kSteps[0];
    void *p = ftm_malloc(cur);
    cr_assert_not_null(p);
    ftt_fill(p, cur, 77);
    uint64_t seed = 77;
    for (int dir = 0; dir < 2; dir++) {
        for (size_t k = 0; k < NSTEPS; k++) {
            size_t next = dir == 0 ? kSteps[k] : kSteps[NSTEPS - 1 - k];
            if (next == cur)
                continue;
            p = realloc_checked(p, cur, next, seed);
            cur = next;
            seed++;
            ftt_fill(p, cur, seed); /* fresh contents for the next step */
        }
    }
    ftm_free(p);
}

Test(alloc, realloc_every_pair_of_sizes)
{
    for (size_t a = 0; a < NSTEPS; a++) {
        for (size_t b = 0; b < NSTEPS; b++) {
            size_t from = kSteps[a], to = kSteps[b];
            void *p = ftm_malloc(from);
            cr_assert_not_null(p);
            ftt_fill(p, from, a * 10 + b);
            p = realloc_checked(p, from, to, a * 10 + b);
            /* The new block is fully writable. */
            ftt_fill(p, ftm_usable_size(p), 5);
            ftm_free(p);
        }
    }
}

Test(alloc, realloc_byte_by_byte_growth_and_shrink)
{
    size_t n = 1;
    unsigned char *p = ftm_malloc(n);
    cr_assert_not_null(p);
    p[0] = 0;
    for (n = 2; n <= 6000; n++) {
        p = ftm_realloc(p, n);
        cr_assert_not_null(p);
        for (size_t i = 0; i < n - 1; i += (n < 600 ? 1 : 97))
            cr_assert_eq(p[i], (unsigned char)(i * 7), "grow to %zu: byte %zu changed", n, i);
        p[n - 1] = (unsigned char)((n - 1) * 7);
    }
    for (n = 6000; n > 13; n -= 13) {
        p = ftm_realloc(p, n);
        cr_assert_not_null(p);
        cr_assert_eq(p[n - 1], (unsigned char)((n - 1) * 7), "shrink to %zu: last byte changed", n);
        cr_assert_eq(p[0], 0);
    }
    ftm_free(p);
}

Test(alloc, realloc_within_usable_size_stays_in_place)
{
    static const size_t sizes[] = {24, 100, 1000, 20000, 300000, 3 * 1024 * 1024};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        void *p = ftm_malloc(sizes[s]);
        cr_assert_not_null(p);
        size_t u = ftm_usable_size(p);
        ftt_fill(p, u, s);
        void *q = ftm_realloc(p, u);
#if !defined(FTMEM_TEST_TRACK) /* tracked builds always move (src/track.h) */
        cr_assert_eq(q, p, "ftm_realloc(p, usable_size(p) = %zu) moved the block (%p -> %p)", u, p, q);
#else
        cr_assert_not_null(q);
#endif
        cr_assert_eq(ftt_check(q, u, s), SIZE_MAX);
        q = ftm_realloc(q, sizes[s]);
        cr_assert_not_null(q);
        cr_assert_eq(ftt_check(q, sizes[s], s), SIZE_MAX);
        ftm_free(q);
    }
}

Test(alloc, reallocarray_preserves_contents)
{
    uint32_t *a = ftm_reallocarray(NULL, 100, sizeof(uint32_t));
    cr_assert_not_null(a);
    for (uint32_t i = 0; i < 100; i++)
        a[i] = i * 3u;
    a = ftm_reallocarray(a, 100000, sizeof(uint32_t));
    cr_assert_not_null(a, "ftm_reallocarray(p, 100000, 4) returned NULL");
    cr_assert_geq(ftm_usable_size(a), 100000 * sizeof(uint32_t));
    for (uint32_t i = 0; i < 100; i++)
        cr_assert_eq(a[i], i * 3u, "element %u lost by reallocarray growth", i);
    for (uint32_t i = 100; i < 100000; i++)
        a[i] = i * 3u;
    a = ftm_reallocarray(a, 50, sizeof(uint32_t));
    cr_assert_not_null(a);
    for (uint32_t i = 0; i < 50; i++)
        cr_assert_eq(a[i], i * 3u, "element %u lost by reallocarray shrink", i);
    ftm_free(a);
}

Test(alloc, free_sized_with_requested_and_usable_size)
{
    ftm_stats_t before, after;
    ftm_stats_get(&before);
    for (size_t i = 0; i < NSIZES; i++) {
        size_t n = kSizes[i];
        void *p = ftm_malloc(n);
        cr_assert_not_null(p);
        ftm_free_sized(p, n);
        p = ftm_malloc(n);
        cr_assert_not_null(p);
        ftm_free_sized(p, ftm_usable_size(p));
    }
    ftm_stats_get(&after);
    cr_assert_eq(after.live_count, before.live_count, "ftm_free_sized left %lld blocks live",
                 (long long)(after.live_count - before.live_count));
    cr_assert_eq(after.free_count - before.free_count, 2 * NSIZES);
}

Test(alloc, good_size)
{
    for (size_t i = 0; i < NSIZES; i++) {
        size_t n = kSizes[i];
        size_t g = ftm_good_size(n);
        cr_assert_geq(g, n, "ftm_good_size(%zu) = %zu is smaller than the request", n, g);
        cr_assert_eq(ftm_good_size(g), g, "ftm_good_size not idempotent: good(%zu)=%zu, good(%zu)=%zu",
                     n, g, g, ftm_good_size(g));
        if (i > 0)
            cr_assert_geq(g, ftm_good_size(kSizes[i - 1]), "ftm_good_size not monotonic at %zu", n);
        void *p = ftm_malloc(n);
        void *q = ftm_malloc(g);
        cr_assert_not_null(p);
        cr_assert_not_null(q);
#if defined(FTMEM_TEST_TRACK_ASAN) /* usable_size answers the request there (src/track.h) */
        cr_assert_eq(ftm_usable_size(p), n);
        cr_assert_eq(ftm_usable_size(q), g);
#else
        cr_assert_geq(ftm_usable_size(p), g, "usable_size(malloc(%zu)) = %zu < good_size %zu", n,
                      ftm_usable_size(p), g);
        cr_assert_eq(ftm_usable_size(q), ftm_usable_size(p),
                     "malloc(%zu) and malloc(good_size=%zu) got different block sizes (%zu, %zu)", n, g,
                     ftm_usable_size(p), ftm_usable_size(q));
#endif
        ftm_free(p);
        ftm_free(q);
    }
    for (size_t n = 1; n <= 1024; n++) {
        size_t g = ftm_good_size(n);
        cr_assert_geq(g, n);
        cr_assert_leq(g, n + n / 4 + 16, "ftm_good_size(%zu) = %zu wastes more than 25%%", n, g);
    }
}

Test(alloc, collect_keeps_live_blocks)
{
    enum { N = 3000 };
    static void *p[N];
    static size_t sz[N];
    uint64_t rng = 9;
    for (size_t i = 0; i < N; i++) {
        uint64_t r = ftt_rand(&rng);
        sz[i] = (i % 500 == 0) ? 2 * 1024 * 1024 + r % 4096 : (i % 50 == 0) ? 20000 + r % 100000 : 1 + r % 700;
        p[i] = ftm_malloc(sz[i]);
        cr_assert_not_null(p[i]);
        ftt_fill(p[i], sz[i], i);
    }
    for (size_t i = 0; i < N; i += 2) {
        ftm_free(p[i]);
        p[i] = NULL;
    }
    ftm_collect(false);
    for (size_t i = 1; i < N; i += 2)
        cr_assert_eq(ftt_check(p[i], sz[i], i), SIZE_MAX, "block #%zu (%zu B) changed by ftm_collect(false)", i, sz[i]);
    ftm_collect(true);
    for (size_t i = 1; i < N; i += 2)
        cr_assert_eq(ftt_check(p[i], sz[i], i), SIZE_MAX, "block #%zu (%zu B) changed by ftm_collect(true)", i, sz[i]);
    /* The allocator still works after purging, and hands out memory that
     * does not overlap what is live. */
    for (size_t i = 0; i < N; i += 2) {
        p[i] = ftm_malloc(sz[i]);
        cr_assert_not_null(p[i]);
        ftt_fill(p[i], sz[i], i);
    }
    for (size_t i = 0; i < N; i++) {
        cr_assert_eq(ftt_check(p[i], sz[i], i), SIZE_MAX, "block #%zu corrupted after collect + reallocation", i);
        ftm_free(p[i]);
    }
    ftm_collect(true);
    void *q = ftm_malloc(100);
    cr_assert_not_null(q);
    ftm_free(q);
}
