/* realloc_storm.c — random malloc/calloc/aligned/realloc/free per thread,
 * with blocks passed between threads to be reallocated or freed remotely.
 *
 * Each thread keeps a set of blocks and picks at random: allocate (ftm_malloc,
 * ftm_calloc, ftm_aligned_alloc, ftm_posix_memalign, ftm_realloc(NULL, n)),
 * reallocate (ftm_realloc or ftm_reallocarray: small steps inside a size
 * class, doubling, halving, or any size, across classes and to and from
 * large blocks), free (ftm_free or ftm_free_sized), an impossible realloc
 * (must fail with ENOMEM and leave the block as it was), or send a block to
 * another thread's mailbox; the receiver checks it and then reallocates or
 * frees it.
 *
 * Checks: alignment and usable_size >= requested on every (re)allocation;
 * calloc memory zero; contents survive every realloc up to the smaller size;
 * sometimes the bytes between the requested and the usable size are filled
 * and checked too (usable bytes must really be usable and private);
 * usable_size stable while a block lives; live_count back to baseline at the
 * end.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stress_util.h"

typedef struct blk_s {
    unsigned char *p;
    size_t size;    /* requested */
    size_t checked; /* bytes [0, checked) carry the pattern: size, or usable size */
    uint64_t key;
    unsigned long long id;
} blk_t;

#define MAILBOX_CAP 32

typedef struct mailbox_s {
    pthread_mutex_t lock;
    blk_t items[MAILBOX_CAP];
    int n;
} mailbox_t;

typedef struct worker_s {
    int index;
    pthread_t thread;
    mailbox_t box;
    blk_t *set;
    unsigned long long n_alloc, n_realloc, n_free, n_sent, n_received, n_failed_realloc;
} worker_t;

static stress_opts_t opt = { .name = "realloc_storm" };
static worker_t *workers;
static int set_size, ops_per_thread;
static pthread_barrier_t phase_end;

static size_t random_size(stress_rng_t *r)
{
    if (stress_one_in(r, 16))
        return stress_size(r, STRESS_LARGE_MIN + 1, STRESS_LARGE_MAX);
    return stress_size(r, 1, 64 * STRESS_KIB);
}

static void blk_verify(const blk_t *b, const char *what)
{
    stress_verify(b->p, 0, b->checked, b->key, what, b->id);
}

/* After a (re)allocation of b->size bytes: check it, fill the bytes past
 * `keep` with the pattern, sometimes up to the usable size. */
static void blk_settle(stress_rng_t *r, blk_t *b, size_t keep, size_t align, const char *what)
{
    stress_check_block(b->p, b->size, align, what);
    size_t end = b->size;
    if (stress_one_in(r, 4))
        end = ftm_usable_size(b->p); /* the slack is the caller's to use */
    if (keep > end)
        keep = end;
    stress_fill(b->p, keep, end, b->key);
    b->checked = end;
}

static void blk_alloc(worker_t *w, stress_rng_t *r, blk_t *b)
{
    size_t size = random_size(r);
    size_t align = 0;
    const char *what;
    unsigned how = (unsigned)stress_below(r, 20);
    b->id = ((unsigned long long)w->index << 40) | w->n_alloc;
    b->key = stress_key3(opt.seed, b->id, 0xa110c);
    if (how < 9) {
        what = "ftm_malloc";
        b->p = ftm_malloc(size);
    } else if (how < 12) {
        what = "ftm_calloc";
        size_t n = 1 + (size_t)stress_below(r, 5);
        size = (size + n - 1) / n * n;
        b->p = ftm_calloc(n, size / n);
        if (b->p != NULL) {
            size_t bad = stress_check_zero(b->p, size);
            if (bad != SIZE_MAX)
                stress_fail("ftm_calloc(%zu, %zu) = %p: byte %zu is 0x%02x, not zero", n,
                            size / n, (void *)b->p, bad, b->p[bad]);
        }
    } else if (how < 15) {
        what = "ftm_aligned_alloc";
        unsigned maxlog = stress_one_in(r, 50) ? 20 : 12; /* up to 1 MiB, mostly 4 KiB */
        align = (size_t)1 << (4 + stress_below(r, maxlog - 4 + 1));
        b->p = ftm_aligned_alloc(align, size);
    } else if (how < 18) {
        what = "ftm_posix_memalign";
        align = (size_t)8 << stress_below(r, 10); /* 8 .. 4096 */
        void *p = NULL;
        int e = ftm_posix_memalign(&p, align, size);
        if (e != 0)
            stress_fail("ftm_posix_memalign(%zu, %zu) returned %d", align, size, e);
        b->p = p;
    } else {
        what = "ftm_realloc(NULL)";
        b->p = ftm_realloc(NULL, size);
    }
    if (b->p == NULL)
        stress_fail("%s(%zu) returned NULL (align %zu)", what, size, align);
    b->size = size;
    w->n_alloc++;
    blk_settle(r, b, 0, align, what);
}

static void blk_free(worker_t *w, stress_rng_t *r, blk_t *b, const char *who)
{
    blk_verify(b, who);
    if (b->checked > b->size && ftm_usable_size(b->p) != b->checked)
        stress_fail("%s: ftm_usable_size(%p) changed from %zu to %zu while the block lived",
                    who, (void *)b->p, b->checked, ftm_usable_size(b->p));
    if (stress_one_in(r, 2))
        ftm_free_sized(b->p, b->size);
    else
        ftm_free(b->p);
    b->p = NULL;
    w->n_free++;
}

static void blk_realloc(worker_t *w, stress_rng_t *r, blk_t *b, const char *who)
{
    blk_verify(b, who);
    size_t old = b->size, size;
    switch (stress_below(r, 5)) {
    case 0: /* a small step, likely inside the size class */
        size = old + (size_t)stress_below(r, 33);
        size = size > 16 ? size - 16 : 1;
        break;
    case 1:
        size = old * 2;
        break;
    case 2:
        size = old / 2 ? old / 2 : 1;
        break;
    default:
        size = random_size(r);
        break;
    }
    if (size > STRESS_LARGE_MAX)
        size = STRESS_LARGE_MAX;
    unsigned char *p;
    const char *what;
    if (stress_one_in(r, 4)) {
        what = "ftm_reallocarray";
        size_t n = 1 + (size_t)stress_below(r, 4);
        size = (size + n - 1) / n * n;
        p = ftm_reallocarray(b->p, n, size / n);
    } else {
        what = "ftm_realloc";
        p = ftm_realloc(b->p, size);
    }
    if (p == NULL)
        stress_fail("%s(%p, %zu) returned NULL (was %zu bytes)", what, (void *)b->p, size, old);
    b->p = p;
    b->size = size;
    size_t keep = old < size ? old : size;
    size_t bad = stress_check(p, 0, keep, b->key);
    if (bad != SIZE_MAX)
        stress_fail("%s %zu -> %zu bytes (%s): byte %zu is 0x%02x, expected 0x%02x: contents "
                    "not preserved",
                    what, old, size, who, bad, p[bad], stress_pattern_byte(b->key, bad));
    w->n_realloc++;
    blk_settle(r, b, keep, 0, what);
}

/* A request beyond the address space fails with ENOMEM and leaves the block
 * untouched (the C library's contract, restated in ftmem.h). */
static void blk_realloc_impossible(worker_t *w, stress_rng_t *r, blk_t *b)
{
    /* volatile: the overflow is the point, keep the compiler from warning. */
    static volatile size_t huge_count = SIZE_MAX / 4;
    void *p;
    errno = 0;
    if (stress_one_in(r, 2))
        p = ftm_realloc(b->p, SIZE_MAX / 2);
    else
        p = ftm_reallocarray(b->p, huge_count, 16); /* overflows */
    if (p != NULL)
        stress_fail("an impossible realloc of %p returned %p", (void *)b->p, p);
    if (errno != ENOMEM)
        stress_fail("an impossible realloc set errno %d, not ENOMEM", errno);
    blk_verify(b, "block after a failed realloc");
    w->n_failed_realloc++;
}

static void send_block(worker_t *w, stress_rng_t *r, blk_t *b)
{
    worker_t *to = &workers[stress_below(r, (uint64_t)opt.threads)];
    if (to == w)
        return;
    pthread_mutex_lock(&to->box.lock);
    if (to->box.n < MAILBOX_CAP) {
        to->box.items[to->box.n++] = *b;
        b->p = NULL;
        w->n_sent++;
    }
    pthread_mutex_unlock(&to->box.lock);
}

/* Takes the blocks sent here: each is reallocated into the set or freed. */
static void receive_blocks(worker_t *w, stress_rng_t *r, bool final)
{
    blk_t got[MAILBOX_CAP];
    pthread_mutex_lock(&w->box.lock);
    int n = w->box.n;
    memcpy(got, w->box.items, (size_t)n * sizeof *got);
    w->box.n = 0;
    pthread_mutex_unlock(&w->box.lock);
    for (int i = 0; i < n; i++) {
        w->n_received++;
        blk_t *slot = final ? NULL : &w->set[stress_below(r, (uint64_t)set_size)];
        if (slot == NULL || slot->p != NULL || stress_one_in(r, 3)) {
            blk_free(w, r, &got[i], "received block (remote free)");
        } else {
            *slot = got[i];
            blk_realloc(w, r, slot, "received block (remote realloc)");
        }
    }
}

static void *storm_main(void *arg)
{
    worker_t *w = arg;
    stress_rng_t r = stress_rng(opt.seed, (uint64_t)w->index);
    for (int op = 0; op < ops_per_thread; op++) {
        blk_t *b = &w->set[stress_below(&r, (uint64_t)set_size)];
        if (b->p == NULL) {
            blk_alloc(w, &r, b);
            continue;
        }
        unsigned what = (unsigned)stress_below(&r, 200);
        if (what < 90)
            blk_realloc(w, &r, b, "own block");
        else if (what < 150)
            blk_free(w, &r, b, "own block");
        else if (what < 151)
            blk_realloc_impossible(w, &r, b);
        else if (what < 175)
            send_block(w, &r, b);
        else
            receive_blocks(w, &r, false);
    }
    /* No thread sends after this barrier, so the final drain is complete. */
    int e = pthread_barrier_wait(&phase_end);
    if (e != 0 && e != PTHREAD_BARRIER_SERIAL_THREAD)
        stress_fail("pthread_barrier_wait: %d", e);
    receive_blocks(w, &r, true);
    for (int i = 0; i < set_size; i++)
        if (w->set[i].p != NULL)
            blk_free(w, &r, &w->set[i], "own block at exit");
    return NULL;
}

int main(int argc, char **argv)
{
    stress_parse(&opt, argc, argv, 8, NULL);
    set_size = opt.smoke ? 64 : 256;
    ops_per_thread = opt.smoke ? 4000 : 200000;
    workers = calloc((size_t)opt.threads, sizeof *workers);
    if (workers == NULL)
        stress_fail("out of memory for the harness");
    pthread_barrier_init(&phase_end, NULL, (unsigned)opt.threads);

    ftm_stats_t base;
    stress_stats(&base);
    double t0 = stress_now();
    for (int i = 0; i < opt.threads; i++) {
        worker_t *w = &workers[i];
        w->index = i;
        pthread_mutex_init(&w->box.lock, NULL);
        w->set = calloc((size_t)set_size, sizeof *w->set);
        if (w->set == NULL)
            stress_fail("out of memory for the harness");
    }
    for (int i = 0; i < opt.threads; i++)
        stress_thread_start(&workers[i].thread, storm_main, &workers[i]);
    unsigned long long a = 0, re = 0, f = 0, sent = 0, recv = 0, failed = 0;
    for (int i = 0; i < opt.threads; i++) {
        worker_t *w = &workers[i];
        stress_thread_join(w->thread);
        a += w->n_alloc;
        re += w->n_realloc;
        f += w->n_free;
        sent += w->n_sent;
        recv += w->n_received;
        failed += w->n_failed_realloc;
    }
    if (sent != recv)
        stress_fail("harness: %llu blocks sent, %llu received", sent, recv);
    if (a != f)
        stress_fail("harness: %llu blocks allocated, %llu freed", a, f);
    stress_expect_baseline(&base, "after every thread freed its blocks");
    ftm_collect(true);
    stress_expect_baseline(&base, "after ftm_collect(true)");

    stress_note("OK: %llu allocations, %llu reallocs (%llu impossible ones refused), %llu "
                "frees, %llu blocks passed between threads, %.2f s",
                a, re, failed, f, sent, stress_now() - t0);
    for (int i = 0; i < opt.threads; i++) {
        free(workers[i].set);
        pthread_mutex_destroy(&workers[i].box.lock);
    }
    free(workers);
    pthread_barrier_destroy(&phase_end);
    return 0;
}
