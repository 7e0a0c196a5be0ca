/* test_purge.c — memory goes back to the OS: ~200 MiB of small blocks
 * freed and purged by ftm_collect(true), by the decay of ftm_collect(false)
 * after the purge delay, and by the purge thread with nothing called at
 * all; cached large blocks likewise.  RSS is measured from /proc (minus
 * ASan's shadow in ASan builds, see ftt_rss). */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include "ftm_test.h"
#include <ftmem.h>

TestSuite(purge, .timeout = 60);

#define BIG (200 * MiB)
#define BLOCK 64

/* Allocate `total` bytes of `block`-byte blocks, each written, linked into
 * a list through their first word so no side array is needed. */
static void **fill_list(size_t total, size_t block)
{
    void **head = NULL;
    for (size_t done = 0; done < total; done += block) {
        void **p = ftm_malloc(block);
        cr_assert_not_null(p, "ftm_malloc(%zu) failed after %zu MiB", block, done / MiB);
        memset(ftt_launder(p), 0x33, block);
        *p = head;
        head = p;
    }
    return head;
}

static size_t free_list(void **head)
{
    size_t n = 0;
    while (head) {
        void **next = *head;
        ftm_free(head);
        head = next;
        n++;
    }
    return n;
}

static size_t allocate_and_free(size_t *peak)
{
    void **list = fill_list(BIG, BLOCK);
    *peak = ftt_rss();
    return free_list(list);
}

static void warm_up(void)
{
    /* Everything the process and the allocator set up once (heap, first
     * arena, page map, purge thread) belongs to the baseline. */
    ftm_free(ftm_malloc(BLOCK));
    ftm_free(ftm_malloc(8 * MiB));
    ftm_collect(true);
    ftt_sleep_ms(20);
}

#define MB(x) ((double)(x) / (double)MiB)

Test(purge, collect_true_returns_small_blocks)
{
    warm_up();
    size_t base = ftt_rss(), peak;
    allocate_and_free(&peak);
    cr_assert_gt(peak, base + BIG / 2, "RSS only rose from %.1f to %.1f MiB for 200 MiB of blocks", MB(base), MB(peak));
    ftm_collect(true);
    size_t after = ftt_rss();
    cr_assert_leq(after, base + 8 * MiB,
                  "after freeing 200 MiB of %d-byte blocks and ftm_collect(true) RSS is %.1f MiB (baseline %.1f, "
                  "peak %.1f)", BLOCK, MB(after), MB(base), MB(peak));
    /* Purged memory is usable again. */
    void **again = fill_list(20 * MiB, BLOCK);
    free_list(again);
}

Test(purge, collect_true_returns_cached_large_blocks)
{
    warm_up();
    size_t base = ftt_rss();
    enum { K = 20 };
    void *p[K];
    for (int i = 0; i < K; i++) {
        p[i] = ftm_malloc(8 * MiB + (size_t)i * 4096);
        cr_assert_not_null(p[i]);
        memset(ftt_launder(p[i]), 0x44, 8 * MiB);
    }
    size_t peak = ftt_rss();
    cr_assert_gt(peak, base + 100 * MiB);
    for (int i = 0; i < K; i++)
        ftm_free(p[i]);
    ftm_collect(true);
    size_t after = ftt_rss();
    cr_assert_leq(after, base + 8 * MiB,
                  "after freeing 20 large blocks (160 MiB) and ftm_collect(true) RSS is %.1f MiB (baseline %.1f)",
                  MB(after), MB(base));
}

/* With no purge thread, ftm_collect(false) purges what has been idle longer
 * than the purge delay — and only that.  (The delay is set before the
 * memory becomes idle: whether a later change applies to memory already
 * waiting is not part of the contract.) */
Test(purge, collect_false_keeps_memory_younger_than_the_delay)
{
    ftm_option_set(FTM_OPTION_PURGE_THREAD, 0);
    ftm_option_set(FTM_OPTION_PURGE_DELAY, 10000); /* 10 s */
    warm_up();
    size_t base = ftt_rss(), peak;
    allocate_and_free(&peak);
    ftm_collect(false);
    size_t kept = ftt_rss();
    cr_assert_geq(kept, base + BIG / 2,
                  "ftm_collect(false) purged memory idle for less than the 10 s purge delay: RSS %.1f MiB, "
                  "baseline %.1f, peak %.1f", MB(kept), MB(base), MB(peak));
    /* force=true ignores the delay. */
    ftm_collect(true);
    size_t after = ftt_rss();
    cr_assert_leq(after, base + 8 * MiB, "ftm_collect(true) with a 10 s delay: RSS %.1f MiB, baseline %.1f",
                  MB(after), MB(base));
}

Test(purge, collect_false_purges_memory_older_than_the_delay)
{
    ftm_option_set(FTM_OPTION_PURGE_THREAD, 0);
    ftm_option_set(FTM_OPTION_PURGE_DELAY, 10);
    warm_up();
    size_t base = ftt_rss(), peak;
    allocate_and_free(&peak);
    ftt_sleep_ms(60);
    ftm_collect(false);
    size_t after = ftt_rss();
    cr_assert_leq(after, base + 8 * MiB,
                  "ftm_collect(false) 60 ms after the frees (delay 10 ms, no purge thread): RSS %.1f MiB, "
                  "baseline %.1f, peak %.1f", MB(after), MB(base), MB(peak));
}

/* Default options: nothing is called after the frees, yet the purge thread
 * (or decay) returns the memory within a second. */
Test(purge, returned_without_collect)
{
    if (getenv("FTMEM_PURGE_THREAD") || getenv("FTMEM_PURGE_DELAY"))
        cr_skip_test("purge options overridden in the environment");
    warm_up();
    size_t base = ftt_rss(), peak;
    allocate_and_free(&peak);
    size_t limit = base + base / 10 + 4 * MiB, now = ftt_rss();
    double t0 = ftt_now();
    while (now > limit && ftt_now() - t0 < 1.0) {
        ftt_sleep_ms(10);
        now = ftt_rss();
    }
    cr_assert_leq(now, limit,
                  "1 s after freeing 200 MiB of small blocks RSS is %.1f MiB (baseline %.1f, limit %.1f, peak %.1f)",
                  MB(now), MB(base), MB(limit), MB(peak));
}

/* Large blocks left in the cache are returned by decay too. */
Test(purge, large_cache_decays_without_collect)
{
    if (getenv("FTMEM_PURGE_THREAD") || getenv("FTMEM_PURGE_DELAY"))
        cr_skip_test("purge options overridden in the environment");
    warm_up();
    size_t base = ftt_rss();
    for (int i = 0; i < 10; i++) {
        void *p = ftm_malloc(12 * MiB);
        cr_assert_not_null(p);
        memset(ftt_launder(p), 0x55, 12 * MiB);
        void *q = ftm_malloc(12 * MiB);
        memset(ftt_launder(q), 0x55, 12 * MiB);
        ftm_free(q);
        ftm_free(p);
    }
    size_t limit = base + base / 10 + 4 * MiB, now = ftt_rss();
    double t0 = ftt_now();
    while (now > limit && ftt_now() - t0 < 1.0) {
        ftt_sleep_ms(10);
        now = ftt_rss();
    }
    cr_assert_leq(now, limit, "1 s after freeing cached large blocks RSS is %.1f MiB (baseline %.1f, limit %.1f)",
                  MB(now), MB(base), MB(limit));
}

/* Free and reallocate many times: RSS must not ratchet up. */
Test(purge, repeated_cycles_do_not_ratchet)
{
    warm_up();
    size_t base = ftt_rss();
    for (int round = 0; round < 4; round++) {
        void **l = fill_list(50 * MiB, round % 2 ? 48 : 256);
        free_list(l);
        ftm_collect(true);
    }
    size_t after = ftt_rss();
    cr_assert_leq(after, base + 8 * MiB, "RSS %.1f MiB after 4 alloc/free/collect cycles (baseline %.1f)", MB(after),
                  MB(base));
    ftm_stats_t s;
    ftm_stats_get(&s);
    cr_assert_leq(s.committed, 16 * MiB, "committed %.1f MiB with nothing live after ftm_collect(true)",
                  MB(s.committed));
}
