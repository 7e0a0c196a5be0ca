/* test_align.c — alignment guarantees: every block FTM_MIN_ALIGN-aligned,
 * and ftm_aligned_alloc / ftm_posix_memalign for every power-of-two
 * alignment from 16 B to 1 MiB (and beyond the 4 MiB arena size) with sizes
 * below, at, above and not a multiple of the alignment.  Invalid alignments
 * are in test_badinput.c. */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include "ftm_test.h"
#include <ftmem.h>

TestSuite(align, .timeout = 60);

Test(align, every_block_min_aligned)
{
    /* Every size 1..4096, then a geometric walk to 12 MiB with neighbours. */
    for (size_t n = 1; n <= 4096; n++) {
        void *p = ftm_malloc(n);
        cr_assert_not_null(p);
        cr_assert(ftt_aligned(p, FTM_MIN_ALIGN), "ftm_malloc(%zu) = %p is not %d-byte aligned", n, p, FTM_MIN_ALIGN);
        ((volatile char *)p)[n - 1] = 1;
        ftm_free(p);
    }
    for (size_t base = 4096; base <= 12 * MiB; base += base / 7) {
        for (size_t n = base - 3; n <= base + 3; n++) {
            void *p = ftm_malloc(n);
            cr_assert_not_null(p, "ftm_malloc(%zu) returned NULL", n);
            cr_assert(ftt_aligned(p, FTM_MIN_ALIGN), "ftm_malloc(%zu) = %p is not %d-byte aligned", n, p, FTM_MIN_ALIGN);
            ((volatile char *)p)[0] = 1;
            ((volatile char *)p)[n - 1] = 1;
            void *c = ftm_calloc(1, n);
            cr_assert_not_null(c);
            cr_assert(ftt_aligned(c, FTM_MIN_ALIGN), "ftm_calloc(1, %zu) = %p misaligned", n, c);
            c = ftm_realloc(c, n / 3 + 1);
            cr_assert_not_null(c);
            cr_assert(ftt_aligned(c, FTM_MIN_ALIGN), "ftm_realloc to %zu = %p misaligned", n / 3 + 1, c);
            ftm_free(c);
            ftm_free(p);
        }
    }
}

/* Many live blocks of mixed odd sizes: alignment must not depend on the
 * order blocks come off a free list. */
Test(align, mixed_live_blocks_min_aligned)
{
    enum { N = 4000 };
    static void *p[N];
    uint64_t rng = 5;
    for (int i = 0; i < N; i++) {
        size_t n = 1 + ftt_rand(&rng) % 3000;
        p[i] = ftm_malloc(n);
        cr_assert_not_null(p[i]);
        cr_assert(ftt_aligned(p[i], FTM_MIN_ALIGN), "block #%d (%zu B) at %p misaligned", i, n, p[i]);
        if (i % 3 == 0) {
            ftm_free(p[i / 2]);
            p[i / 2] = ftm_malloc(1 + ftt_rand(&rng) % 500);
            cr_assert(ftt_aligned(p[i / 2], FTM_MIN_ALIGN));
        }
    }
    for (int i = 0; i < N; i++)
        ftm_free(p[i]);
}

typedef void *(*aligned_fn)(size_t align, size_t size);

static void *via_aligned_alloc(size_t align, size_t size)
{
    return ftm_aligned_alloc(align, size);
}

static void *via_posix_memalign(size_t align, size_t size)
{
    void *p = (void *)0x1;
    int rc = ftm_posix_memalign(&p, align, size);
    cr_assert_eq(rc, 0, "ftm_posix_memalign(&p, %zu, %zu) returned %d", align, size, rc);
    return p;
}

static void check_alignments(aligned_fn fn, const char *name, size_t max_align)
{
    enum { MAXB = 16 * 16 };
    static void *blk[MAXB];
    static size_t bsz[MAXB];
    size_t nb = 0;
    for (size_t a = 16; a <= max_align; a <<= 1) {
        const size_t sizes[] = {1, a / 2, a - 1, a, a + 1, 3 * a + 8, 100, 4096 + 16, 200000};
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            size_t n = sizes[s];
            void *p = fn(a, n);
            cr_assert_not_null(p, "%s(%zu, %zu) returned NULL", name, a, n);
            cr_assert(ftt_aligned(p, a), "%s(%zu, %zu) = %p is not %zu-aligned", name, a, n, p, a);
            size_t u = ftm_usable_size(p);
            cr_assert_geq(u, n, "%s(%zu, %zu): usable_size %zu too small", name, a, n, u);
            ftt_fill(p, n, a * 64 + s);
            cr_assert_lt(nb, (size_t)MAXB);
            blk[nb] = p;
            bsz[nb] = n;
            nb++;
        }
    }
    /* All were live together: none overlaps another, contents intact. */
    size_t k = 0;
    for (size_t a = 16; a <= max_align; a <<= 1) {
        for (size_t s = 0; s < 9; s++, k++) {
            size_t bad = ftt_check(blk[k], bsz[k], a * 64 + s);
            cr_assert_eq(bad, SIZE_MAX, "%s(%zu, %zu) block %p corrupted at offset %zu", name, a, bsz[k], blk[k], bad);
        }
    }
    /* Freeable by every free function; free_sized with the requested size. */
    for (size_t i = 0; i < nb; i++) {
        if (i % 2)
            ftm_free(blk[i]);
        else
            ftm_free_sized(blk[i], bsz[i]);
    }
}

Test(align, aligned_alloc_16_to_1MiB)
{
    ftm_stats_t before, after;
    ftm_stats_get(&before);
    check_alignments(via_aligned_alloc, "ftm_aligned_alloc", MiB);
    ftm_stats_get(&after);
    cr_assert_eq(after.live_count, before.live_count, "aligned blocks not all freed: live %llu -> %llu",
                 before.live_count, after.live_count);
}

Test(align, posix_memalign_16_to_1MiB)
{
    ftm_stats_t before, after;
    ftm_stats_get(&before);
    check_alignments(via_posix_memalign, "ftm_posix_memalign", MiB);
    ftm_stats_get(&after);
    cr_assert_eq(after.live_count, before.live_count);
}

/* Alignments at and beyond the 4 MiB arena size. */
Test(align, alignment_up_to_8MiB)
{
    for (size_t a = 2 * MiB; a <= 8 * MiB; a <<= 1) {
        const size_t sizes[] = {1, 4096, a + 1};
        for (size_t s = 0; s < 3; s++) {
            void *p = ftm_aligned_alloc(a, sizes[s]);
            cr_assert_not_null(p, "ftm_aligned_alloc(%zu, %zu) returned NULL", a, sizes[s]);
            cr_assert(ftt_aligned(p, a), "ftm_aligned_alloc(%zu, %zu) = %p misaligned", a, sizes[s], p);
            cr_assert_geq(ftm_usable_size(p), sizes[s]);
            ftt_fill(p, sizes[s], s);
            void *q = NULL;
            cr_assert_eq(ftm_posix_memalign(&q, a, sizes[s]), 0);
            cr_assert(ftt_aligned(q, a), "ftm_posix_memalign(%zu, %zu) = %p misaligned", a, sizes[s], q);
            ftt_fill(q, sizes[s], s + 100);
            cr_assert_eq(ftt_check(p, sizes[s], s), SIZE_MAX);
            cr_assert_eq(ftt_check(q, sizes[s], s + 100), SIZE_MAX);
            ftm_free(q);
            ftm_free(p);
        }
    }
}

/* Alignments below FTM_MIN_ALIGN are valid powers of two for aligned_alloc
 * (and sizeof(void *) for posix_memalign); the block is still 16-aligned. */
Test(align, small_alignments)
{
    for (size_t a = 1; a < 16; a <<= 1) {
        void *p = ftm_aligned_alloc(a, 40);
        cr_assert_not_null(p, "ftm_aligned_alloc(%zu, 40) returned NULL (errno %d)", a, errno);
        cr_assert(ftt_aligned(p, FTM_MIN_ALIGN));
        cr_assert_geq(ftm_usable_size(p), 40);
        ftm_free(p);
    }
    void *q = NULL;
    int rc = ftm_posix_memalign(&q, sizeof(void *), 40);
    cr_assert_eq(rc, 0, "ftm_posix_memalign(&q, sizeof(void *), 40) = %d, want 0", rc);
    cr_assert_not_null(q);
    cr_assert(ftt_aligned(q, FTM_MIN_ALIGN));
    ftm_free(q);
}

/* An aligned block behaves as any other: realloc keeps its contents. */
Test(align, realloc_of_aligned_block)
{
    for (size_t a = 16; a <= MiB; a <<= 2) {
        size_t n = a + 24;
        void *p = ftm_aligned_alloc(a, n);
        cr_assert_not_null(p);
        ftt_fill(p, n, a);
        void *q = ftm_realloc(p, 3 * n);
        cr_assert_not_null(q);
        cr_assert_eq(ftt_check(q, n, a), SIZE_MAX, "realloc of a %zu-aligned block lost contents", a);
        q = ftm_realloc(q, n / 2 + 1);
        cr_assert_not_null(q);
        cr_assert_eq(ftt_check(q, n / 2 + 1, a), SIZE_MAX);
        ftm_free(q);
    }
}

/* Many aligned blocks of one alignment at once (exercises carving aligned
 * blocks out of pools rather than one-offs). */
Test(align, many_aligned_blocks)
{
    enum { N = 2000 };
    static void *p[N];
    static const size_t aligns[] = {32, 64, 128, 256, 4096};
    for (size_t k = 0; k < sizeof aligns / sizeof aligns[0]; k++) {
        size_t a = aligns[k];
        for (int i = 0; i < N; i++) {
            size_t n = 8 + (size_t)(i % 7) * 40;
            p[i] = ftm_aligned_alloc(a, n);
            cr_assert_not_null(p[i]);
            cr_assert(ftt_aligned(p[i], a), "block #%d of alignment %zu at %p", i, a, p[i]);
            ftt_fill(p[i], n, (uint64_t)i * 16 + k);
        }
        for (int i = 0; i < N; i++) {
            size_t n = 8 + (size_t)(i % 7) * 40;
            cr_assert_eq(ftt_check(p[i], n, (uint64_t)i * 16 + k), SIZE_MAX,
                         "aligned block #%d (align %zu) overlapped", i, a);
            ftm_free(p[i]);
        }
    }
}
