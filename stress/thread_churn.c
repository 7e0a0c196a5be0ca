/* thread_churn.c — waves of short-lived threads; their blocks outlive them.
 *
 * Each wave starts --threads threads while the previous wave is still
 * running (then joins that one).  A thread allocates and frees blocks of its
 * own, swaps blocks in and out of a shared array of slots (atomic exchange,
 * acq_rel: the slot hands the block and its contents to the next owner),
 * reads ftm_stats_get and calls ftm_collect(false) now and then, and exits
 * leaving blocks in the slots.  Later threads free those blocks — remote
 * frees into the pools of threads that have exited — and allocate more,
 * which is where abandoned pools get adopted.
 *
 * Every block starts with a 16-byte header {id, size}; the rest is the
 * pattern keyed by (seed, id, size), checked before every free.  At the end
 * the main thread frees what is left in the slots, calls ftm_collect(true)
 * and checks: live_count and large_count back to baseline, no abandoned
 * pools left (every block of every dead thread has been freed, and
 * ftm_collect(true) purges "empty pools of dead threads"), no more thread
 * heaps in use than at the start, and memory given back (committed bytes,
 * and RSS outside sanitizer builds, close to the baseline).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stress_util.h"

#define LOCAL_MAX 64

static stress_opts_t opt = { .name = "thread_churn" };
static _Atomic(stress_hdr_t *) *slots;
static size_t nslots;
static int ops_per_thread;
static _Atomic unsigned long long next_thread_serial;
static _Atomic unsigned long long n_alloc, n_free, n_remote_taken;
static _Atomic unsigned long long max_abandoned;

static stress_hdr_t *block_new(stress_rng_t *r, uint64_t id)
{
    size_t size;
    if (stress_one_in(r, 200))
        size = stress_size(r, STRESS_LARGE_MIN + 1, STRESS_LARGE_MAX);
    else if (stress_one_in(r, 8))
        size = stress_size(r, 2048, 64 * STRESS_KIB);
    else
        size = stress_size(r, sizeof(stress_hdr_t), 2048);
    return stress_hblock_new(id, size);
}

static void note_abandoned(void)
{
    ftm_stats_t s;
    ftm_stats_get(&s); /* concurrent with allocation: approximate, but safe */
    unsigned long long m = atomic_load_explicit(&max_abandoned, memory_order_relaxed);
    while (s.abandoned_pools > m &&
           !atomic_compare_exchange_weak_explicit(&max_abandoned, &m, s.abandoned_pools,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

static void *churn_main(void *arg)
{
    (void)arg;
    uint64_t serial = atomic_fetch_add_explicit(&next_thread_serial, 1, memory_order_relaxed);
    stress_rng_t r = stress_rng(opt.seed, serial);
    uint64_t next_id = serial << 32;
    stress_hdr_t *local[LOCAL_MAX];
    int nlocal = 0;
    unsigned long long allocs = 0, frees = 0, taken = 0;

    for (int op = 0; op < ops_per_thread; op++) {
        unsigned what = (unsigned)stress_below(&r, 100);
        if (what < 45) {
            /* Swap a new block (or nothing) into a slot; free what was there,
             * most likely a block of another, possibly dead, thread. */
            stress_hdr_t *nb = NULL;
            if (!stress_one_in(&r, 4)) {
                nb = block_new(&r, next_id++);
                allocs++;
            }
            size_t i = (size_t)stress_below(&r, nslots);
            /* acq_rel: release publishes nb's contents, acquire gets those
             * of the block taken out. */
            stress_hdr_t *old = atomic_exchange_explicit(&slots[i], nb, memory_order_acq_rel);
            if (old != NULL) {
                stress_hblock_free(old, "slot block (remote free)");
                frees++;
                taken++;
            }
        } else if (what < 75 && nlocal < LOCAL_MAX) {
            local[nlocal++] = block_new(&r, next_id++);
            allocs++;
        } else if (what < 99 && nlocal > 0) {
            int k = (int)stress_below(&r, (uint64_t)nlocal);
            stress_hblock_free(local[k], "local block");
            frees++;
            local[k] = local[--nlocal];
        } else if (stress_one_in(&r, 2)) {
            ftm_collect(false);
        } else {
            note_abandoned();
        }
    }
    /* Exit leaving half of the local blocks behind in the slots. */
    for (int k = 0; k < nlocal; k++) {
        if (k % 2) {
            stress_hblock_free(local[k], "local block at exit");
            frees++;
            continue;
        }
        size_t i = (size_t)stress_below(&r, nslots);
        stress_hdr_t *old = atomic_exchange_explicit(&slots[i], local[k], memory_order_acq_rel);
        if (old != NULL) {
            stress_hblock_free(old, "slot block at exit (remote free)");
            frees++;
            taken++;
        }
    }
    atomic_fetch_add_explicit(&n_alloc, allocs, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_free, frees, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_remote_taken, taken, memory_order_relaxed);
    return NULL;
}

int main(int argc, char **argv)
{
    stress_parse(&opt, argc, argv, 8, NULL);
    int waves = opt.smoke ? 10 : 60;
    ops_per_thread = opt.smoke ? 2000 : 20000;
    nslots = opt.smoke ? 1024 : 8192;
    slots = calloc(nslots, sizeof *slots);
    pthread_t *prev = calloc((size_t)opt.threads, sizeof *prev);
    pthread_t *cur = calloc((size_t)opt.threads, sizeof *cur);
    if (slots == NULL || prev == NULL || cur == NULL)
        stress_fail("out of memory for the harness");
    for (size_t i = 0; i < nslots; i++)
        atomic_init(&slots[i], NULL);

    ftm_free(ftm_malloc(16)); /* the main thread's heap exists from here on */
    ftm_collect(true);
    ftm_stats_t base;
    stress_stats(&base);
    size_t rss_base = stress_rss();
    double t0 = stress_now();

    for (int w = 0; w < waves; w++) {
        for (int i = 0; i < opt.threads; i++)
            stress_thread_start(&cur[i], churn_main, NULL);
        if (w > 0)
            for (int i = 0; i < opt.threads; i++)
                stress_thread_join(prev[i]);
        pthread_t *t = prev;
        prev = cur;
        cur = t;
    }
    for (int i = 0; i < opt.threads; i++)
        stress_thread_join(prev[i]);

    note_abandoned();
    ftm_stats_t mid;
    stress_stats(&mid);
    unsigned long long left = 0;
    for (size_t i = 0; i < nslots; i++) {
        stress_hdr_t *h = atomic_exchange_explicit(&slots[i], NULL, memory_order_acq_rel);
        if (h != NULL) {
            stress_hblock_free(h, "block left by a dead thread");
            left++;
        }
    }
    unsigned long long allocs = atomic_load(&n_alloc), frees = atomic_load(&n_free) + left;
    if (allocs != frees)
        stress_fail("harness: %llu blocks allocated, %llu freed", allocs, frees);
    if (mid.live_count - base.live_count != left)
        stress_fail("with every thread gone, live_count = %llu over the baseline, but %llu "
                    "blocks were live (in the slots)",
                    mid.live_count - base.live_count, left);

    ftm_collect(true);
    stress_expect_baseline(&base, "after freeing everything and ftm_collect(true)");
    ftm_stats_t s;
    stress_stats(&s);
    if (s.abandoned_pools != 0)
        stress_fail("%llu abandoned pools left after every block of every exited thread was "
                    "freed and ftm_collect(true)",
                    s.abandoned_pools);
    if (s.threads > base.threads)
        stress_fail("%llu thread heaps in use after every worker exited (baseline %llu)",
                    s.threads, base.threads);
    /* Memory given back: everything is free and force-purged, so what stays
     * committed is at most metadata; 8 MiB is two arenas' worth of slack. */
    if (s.committed > base.committed + 8 * STRESS_MIB)
        stress_fail("%.1f MiB committed after freeing everything and ftm_collect(true) "
                    "(baseline %.1f MiB, dirty %.1f MiB, active %.1f MiB)",
                    (double)s.committed / (double)STRESS_MIB,
                    (double)base.committed / (double)STRESS_MIB,
                    (double)s.dirty / (double)STRESS_MIB, (double)s.active / (double)STRESS_MIB);
    size_t rss = stress_rss();
    /* Sanitizer runtimes keep shadow memory of their own; RSS means nothing
     * there. */
    if (!STRESS_SANITIZED && rss > rss_base + 32 * STRESS_MIB)
        stress_fail("RSS %.1f MiB after freeing everything and ftm_collect(true), %.1f MiB at "
                    "the start",
                    (double)rss / (double)STRESS_MIB, (double)rss_base / (double)STRESS_MIB);

    stress_note("OK: %d waves x %d threads, %llu blocks (%llu freed from slots by other "
                "threads, %llu left by dead threads at the end), at most %llu abandoned pools "
                "seen, %llu purges, RSS %.1f -> peak %.1f -> %.1f MiB, %.2f s",
                waves, opt.threads, allocs, atomic_load(&n_remote_taken), left,
                atomic_load(&max_abandoned), s.purges, (double)rss_base / (double)STRESS_MIB,
                (double)s.peak_rss / (double)STRESS_MIB, (double)rss / (double)STRESS_MIB,
                stress_now() - t0);
    free(slots);
    free(prev);
    free(cur);
    return 0;
}
