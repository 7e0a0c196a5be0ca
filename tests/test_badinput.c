/* test_badinput.c — the error contract for bad arguments that do not abort:
 * impossible sizes and overflowing products give NULL with errno ENOMEM
 * (leaving a realloc'd block untouched), invalid alignments give EINVAL.
 * Invalid pointers (which abort) are in test_abort.c. */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include "ftm_test.h"
#include <ftmem.h>

TestSuite(badinput, .timeout = 30);

/* Sizes no allocator can satisfy on x86-64 (47-bit user address space), and
 * sizes near SIZE_MAX that overflow when rounded up to a class, a page or an
 * alignment. */
static const size_t kHuge[] = {
    SIZE_MAX,
    SIZE_MAX - 1,
    SIZE_MAX - 15,
    SIZE_MAX - 4095,
    SIZE_MAX - (2u << 20),
    SIZE_MAX - (64u << 20),
    (size_t)PTRDIFF_MAX + 1,
    (size_t)PTRDIFF_MAX,
    (size_t)1 << 62,
    (size_t)1 << 48,
};
#define NHUGE (sizeof kHuge / sizeof kHuge[0])

Test(badinput, malloc_huge_is_enomem)
{
    for (size_t i = 0; i < NHUGE; i++) {
        errno = 0;
        void *p = ftm_malloc(ftt_hide(kHuge[i]));
        cr_assert_null(p, "ftm_malloc(%#zx) returned %p", kHuge[i], p);
        cr_assert_eq(errno, ENOMEM, "ftm_malloc(%#zx): errno %d, want ENOMEM", kHuge[i], errno);
    }
    /* The allocator still works afterwards. */
    void *q = ftm_malloc(64);
    cr_assert_not_null(q);
    ftm_free(q);
}

Test(badinput, calloc_overflow_is_enomem)
{
    static const size_t pairs[][2] = {
        {SIZE_MAX / 2, 3},
        {3, SIZE_MAX / 2},
        {SIZE_MAX, 2},
        {(size_t)1 << 32, (size_t)1 << 32},
        {((size_t)1 << 32) + 1, ((size_t)1 << 32) - 1},
        {SIZE_MAX / 16 + 1, 16},
        {1, SIZE_MAX},
        {(size_t)PTRDIFF_MAX / 2 + 1, 2},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        errno = 0;
        void *p = ftm_calloc(ftt_hide(pairs[i][0]), ftt_hide(pairs[i][1]));
        cr_assert_null(p, "ftm_calloc(%#zx, %#zx) returned %p", pairs[i][0], pairs[i][1], p);
        cr_assert_eq(errno, ENOMEM, "ftm_calloc(%#zx, %#zx): errno %d, want ENOMEM", pairs[i][0], pairs[i][1], errno);
    }
}

static void check_block_still_valid(void *p, size_t n, uint64_t seed, const char *what)
{
    size_t bad = ftt_check(p, n, seed);
    cr_assert_eq(bad, SIZE_MAX, "%s: old block changed at offset %zu", what, bad);
    cr_assert_geq(ftm_usable_size(p), n, "%s: old block's usable size shrank", what);
}

Test(badinput, realloc_huge_keeps_old_block)
{
    static const size_t sizes[] = {24, 700, 50000, 3 * 1024 * 1024};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        void *p = ftm_malloc(n);
        cr_assert_not_null(p);
        ftt_fill(p, n, s);
        for (size_t i = 0; i < NHUGE; i++) {
            errno = 0;
            void *q = ftm_realloc(p, ftt_hide(kHuge[i]));
            cr_assert_null(q, "ftm_realloc(%zu-byte block, %#zx) returned %p", n, kHuge[i], q);
            cr_assert_eq(errno, ENOMEM, "ftm_realloc(p, %#zx): errno %d, want ENOMEM", kHuge[i], errno);
            check_block_still_valid(p, n, s, "failed ftm_realloc");
        }
        /* The old block is still a valid argument to realloc. */
        p = ftm_realloc(p, 2 * n);
        cr_assert_not_null(p, "ftm_realloc of the block kept after a failed realloc returned NULL");
        check_block_still_valid(p, n, s, "growing after failed realloc");
        ftm_free(p);
    }
}

Test(badinput, reallocarray_overflow_keeps_old_block)
{
    void *p = ftm_malloc(300);
    cr_assert_not_null(p);
    ftt_fill(p, 300, 3);
    static const size_t pairs[][2] = {
        {SIZE_MAX / 2, 3}, {3, SIZE_MAX / 2}, {(size_t)1 << 32, (size_t)1 << 32}, {SIZE_MAX, SIZE_MAX},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        errno = 0;
        void *q = ftm_reallocarray(p, ftt_hide(pairs[i][0]), ftt_hide(pairs[i][1]));
        cr_assert_null(q, "ftm_reallocarray(p, %#zx, %#zx) returned %p", pairs[i][0], pairs[i][1], q);
        cr_assert_eq(errno, ENOMEM, "ftm_reallocarray overflow: errno %d, want ENOMEM", errno);
        check_block_still_valid(p, 300, 3, "failed ftm_reallocarray");
    }
    errno = 0;
    void *n = ftm_reallocarray(NULL, ftt_hide(SIZE_MAX / 2), 3);
    cr_assert_null(n);
    cr_assert_eq(errno, ENOMEM, "ftm_reallocarray(NULL, overflow): errno %d", errno);
    p = ftm_realloc(p, 5000);
    cr_assert_not_null(p);
    check_block_still_valid(p, 300, 3, "realloc after failed reallocarray");
    ftm_free(p);
}

Test(badinput, aligned_alloc_bad_alignment_is_einval)
{
    static const size_t bad[] = {0, 3, 5, 6, 12, 24, 48, 100, 1000, 4097, (size_t)3 << 20, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        void *p = ftm_aligned_alloc(ftt_hide(bad[i]), 64);
        cr_assert_null(p, "ftm_aligned_alloc(%zu, 64) returned %p", bad[i], p);
        cr_assert_eq(errno, EINVAL, "ftm_aligned_alloc(%zu, 64): errno %d, want EINVAL", bad[i], errno);
    }
}

Test(badinput, aligned_alloc_huge_size_is_enomem)
{
    static const size_t aligns[] = {16, 4096, 1 << 20};
    for (size_t a = 0; a < 3; a++) {
        for (size_t i = 0; i < NHUGE; i++) {
            errno = 0;
            void *p = ftm_aligned_alloc(aligns[a], ftt_hide(kHuge[i]));
            cr_assert_null(p, "ftm_aligned_alloc(%zu, %#zx) returned %p", aligns[a], kHuge[i], p);
            cr_assert_eq(errno, ENOMEM, "ftm_aligned_alloc(%zu, %#zx): errno %d, want ENOMEM", aligns[a], kHuge[i], errno);
        }
    }
}

Test(badinput, posix_memalign_bad_alignment_is_einval)
{
    /* POSIX: a power of two multiple of sizeof(void *). */
    static const size_t bad[] = {0, 1, 2, 3, 4, 12, 24, 48, 96, 4097, (size_t)3 << 20};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *sentinel = &sentinel;
        void *p = sentinel;
        int rc = ftm_posix_memalign(&p, ftt_hide(bad[i]), 64);
        cr_assert_eq(rc, EINVAL, "ftm_posix_memalign(&p, %zu, 64) returned %d, want EINVAL", bad[i], rc);
        /* POSIX: on failure *memptr is left unmodified or set to NULL. */
        cr_assert(p == sentinel || p == NULL, "ftm_posix_memalign failure set *memptr to %p", p);
    }
    /* sizeof(void *) itself is valid. */
    void *ok = NULL;
    cr_assert_eq(ftm_posix_memalign(&ok, sizeof(void *), 64), 0, "alignment sizeof(void *) must be accepted");
    cr_assert_not_null(ok);
    ftm_free(ok);
}

Test(badinput, posix_memalign_huge_size_is_enomem)
{
    for (size_t i = 0; i < NHUGE; i++) {
        void *p = (void *)0x10;
        int rc = ftm_posix_memalign(&p, 64, ftt_hide(kHuge[i]));
        cr_assert_eq(rc, ENOMEM, "ftm_posix_memalign(&p, 64, %#zx) returned %d, want ENOMEM", kHuge[i], rc);
        cr_assert(p == (void *)0x10 || p == NULL, "*memptr set to %p on failure", p);
    }
}

/* A failing call must not leave anything counted as live. */
Test(badinput, failures_do_not_count)
{
    ftm_stats_t before, after;
    ftm_stats_get(&before);
    for (size_t i = 0; i < NHUGE; i++) {
        cr_assert_null(ftm_malloc(ftt_hide(kHuge[i])));
        cr_assert_null(ftm_calloc(ftt_hide(kHuge[i]), 2));
        cr_assert_null(ftm_aligned_alloc(64, ftt_hide(kHuge[i])));
    }
    ftm_stats_get(&after);
    cr_assert_eq(after.live_count, before.live_count, "failed allocations changed live_count %llu -> %llu",
                 before.live_count, after.live_count);
    cr_assert_eq(after.large_count, before.large_count);
    cr_assert_eq(after.allocated, before.allocated);
}
