/* fork_alloc.c — fork while other threads allocate; the child must find the
 * allocator consistent (DESIGN.md §4: pthread_atfork).
 *
 * Worker threads allocate and free continuously and swap blocks through a
 * shared array of slots.  The main thread, holding blocks of its own, forks
 * repeatedly in the middle of that.  Each child (only the forking thread
 * survives in it):
 *   - checks and frees the main thread's inherited blocks and every block in
 *     the slots (the latter belong to the pools of threads that do not exist
 *     in the child: remote frees to heaps that will never run again);
 *   - allocates, reallocates and frees heavily, checking contents;
 *   - forks once more (single-threaded) and waits for that grandchild, which
 *     does the same on a smaller scale;
 *   - checks that ftm_stats live_count dropped by exactly the number of
 *     inherited blocks it freed (it is the only thread, so the count is
 *     exact), and exits 0.
 * The parent checks every child's exit status, with a deadline: a child that
 * hangs (a lock held across fork) is killed and reported.  At the end the
 * workers stop, everything is freed, and live_count is back to baseline.
 *
 * Sanitizers: the child creates no threads, which is what TSan's
 * die_after_fork guards against, so the default TSAN_OPTIONS apply; the
 * child leaves by _exit (no atexit handlers inherited from the parent), and
 * TSan still reports at _exit.  The harness must not call libc malloc in a
 * child: gcc 12's TSan runtime does not hold its own allocator's locks
 * across fork, and a child whose malloc/free meets a lock that a worker
 * held at the fork hangs in TSan's allocator (seen while developing this
 * against a stand-in over libc malloc).  ftmem's blocks come from mmap, not
 * from TSan's allocator.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "stress_util.h"

#define LOCAL_MAX 32

static stress_opts_t opt = { .name = "fork_alloc" };
static _Atomic(stress_hdr_t *) *slots;
static size_t nslots;
static _Atomic bool stop_workers;
static _Atomic unsigned long long worker_ops;
static int child_ops;
static double child_deadline_s;

/* Main thread's own blocks, inherited by every child. */
static stress_hdr_t **mine;
static size_t nmine;

static size_t random_size(stress_rng_t *r)
{
    if (stress_one_in(r, 100))
        return stress_size(r, STRESS_LARGE_MIN + 1, STRESS_LARGE_MAX);
    return stress_size(r, sizeof(stress_hdr_t), 16 * STRESS_KIB);
}

static void *worker_main(void *arg)
{
    uint64_t index = (uint64_t)(uintptr_t)arg;
    stress_rng_t r = stress_rng(opt.seed, 100 + index);
    stress_hdr_t *local[LOCAL_MAX] = { 0 };
    uint64_t next_id = (index + 1) << 40;
    unsigned long long ops = 0;
    while (!atomic_load_explicit(&stop_workers, memory_order_acquire)) {
        int k = (int)stress_below(&r, LOCAL_MAX);
        if (local[k] != NULL) {
            stress_hblock_free(local[k], "worker block");
            local[k] = NULL;
        } else {
            local[k] = stress_hblock_new(next_id++, random_size(&r));
        }
        if (stress_one_in(&r, 4)) {
            size_t i = (size_t)stress_below(&r, nslots);
            stress_hdr_t *nb = stress_hblock_new(next_id++, random_size(&r));
            /* acq_rel: publishes nb, acquires the block taken out. */
            stress_hdr_t *old = atomic_exchange_explicit(&slots[i], nb, memory_order_acq_rel);
            if (old != NULL)
                stress_hblock_free(old, "slot block (worker)");
        }
        ops++;
    }
    for (int k = 0; k < LOCAL_MAX; k++)
        if (local[k] != NULL)
            stress_hblock_free(local[k], "worker block at exit");
    atomic_fetch_add_explicit(&worker_ops, ops, memory_order_relaxed);
    return NULL;
}

/* Waits for `pid` until the deadline; fails unless it exited with 0. */
static void wait_child(pid_t pid, const char *what)
{
    double deadline = stress_now() + child_deadline_s;
    int status = 0;
    for (;;) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid)
            break;
        if (got < 0 && errno != EINTR)
            stress_fail("waitpid(%s %d): %s", what, (int)pid, strerror(errno));
        if (stress_now() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            stress_fail("%s %d did not finish in %.0f s: deadlock after fork (a lock held "
                        "across fork, or state not reset in the child)?",
                        what, (int)pid, child_deadline_s);
        }
        struct timespec ts = { 0, 5 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    if (WIFSIGNALED(status))
        stress_fail("%s %d killed by signal %d (%s)", what, (int)pid, WTERMSIG(status),
                    strsignal(WTERMSIG(status)));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        stress_fail("%s %d exited with status %d", what, (int)pid, WEXITSTATUS(status));
}

/* Single-threaded heavy use in a child: a set of blocks, random malloc,
 * realloc (contents kept up to the smaller size) and free. */
static void child_churn(stress_rng_t *r, int ops, uint64_t id_base)
{
    enum { SET = 64 };
    struct { unsigned char *p; size_t size; uint64_t key; } set[SET] = { { 0 } };
    for (int op = 0; op < ops; op++) {
        int k = (int)stress_below(r, SET);
        size_t size = random_size(r);
        if (set[k].p == NULL) {
            set[k].key = stress_key3(opt.seed, id_base + (uint64_t)op, 0xc41d);
            set[k].p = ftm_malloc(size);
            if (set[k].p == NULL)
                stress_fail("child: ftm_malloc(%zu) returned NULL", size);
            stress_check_block(set[k].p, size, 0, "child ftm_malloc");
            set[k].size = size;
            stress_fill(set[k].p, 0, size, set[k].key);
            continue;
        }
        stress_verify(set[k].p, 0, set[k].size, set[k].key, "child block", (unsigned long long)k);
        if (stress_one_in(r, 2)) {
            unsigned char *p = ftm_realloc(set[k].p, size);
            if (p == NULL)
                stress_fail("child: ftm_realloc(%zu -> %zu) returned NULL", set[k].size, size);
            stress_check_block(p, size, 0, "child ftm_realloc");
            size_t keep = set[k].size < size ? set[k].size : size;
            stress_verify(p, 0, keep, set[k].key, "child block after realloc",
                          (unsigned long long)k);
            stress_fill(p, keep, size, set[k].key);
            set[k].p = p;
            set[k].size = size;
        } else {
            ftm_free(set[k].p);
            set[k].p = NULL;
        }
    }
    for (int k = 0; k < SET; k++)
        if (set[k].p != NULL) {
            stress_verify(set[k].p, 0, set[k].size, set[k].key, "child block at exit",
                          (unsigned long long)k);
            ftm_free(set[k].p);
        }
}

static char child_name[64];

/* What a child (depth 0) or grandchild (depth 1) does; returns on success. */
static void child_run(int n, int depth)
{
    snprintf(child_name, sizeof child_name, "fork_alloc[%s %d]", depth ? "grandchild" : "child",
             n);
    stress_set_name(child_name);
    stress_rng_t r = stress_rng(opt.seed, 0xf0f0 + (uint64_t)n * 2 + (uint64_t)depth);
    ftm_stats_t start;
    stress_stats(&start);
    unsigned long long inherited_freed = 0;

    /* Half of the main thread's blocks now (the grandchild inherits the
     * other half), the rest at the end. */
    for (size_t i = 0; i < nmine; i += 2)
        if (mine[i] != NULL) {
            stress_hblock_free(mine[i], "inherited main-thread block");
            mine[i] = NULL;
            inherited_freed++;
        }
    /* Blocks of the workers' pools: their threads do not exist here. */
    for (size_t i = 0; i < nslots; i++) {
        stress_hdr_t *h = atomic_exchange_explicit(&slots[i], NULL, memory_order_acq_rel);
        if (h != NULL) {
            stress_hblock_free(h, "inherited worker block");
            inherited_freed++;
        }
    }
    child_churn(&r, depth ? child_ops / 4 : child_ops, (uint64_t)(n + 1) << 48);
    if (depth == 0) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0)
            stress_fail("fork (grandchild): %s", strerror(errno));
        if (pid == 0) {
            child_run(n, 1);
            fflush(NULL);
            _exit(0);
        }
        child_churn(&r, child_ops / 4, (uint64_t)(n + 1) << 52);
        wait_child(pid, "grandchild");
    }
    for (size_t i = 0; i < nmine; i++)
        if (mine[i] != NULL) {
            stress_hblock_free(mine[i], "inherited main-thread block");
            inherited_freed++;
        }

    ftm_stats_t end;
    stress_stats(&end);
    if (start.live_count - end.live_count != inherited_freed)
        stress_fail("live_count went from %llu to %llu, but the child freed %llu inherited "
                    "blocks and all of its own (malloc_count +%llu, free_count +%llu)",
                    start.live_count, end.live_count, inherited_freed,
                    end.malloc_count - start.malloc_count, end.free_count - start.free_count);
}

int main(int argc, char **argv)
{
    stress_parse(&opt, argc, argv, 6, NULL);
    int nworkers = opt.threads > 1 ? opt.threads - 1 : 1;
    int forks = opt.smoke ? 6 : 40;
    child_ops = opt.smoke ? 3000 : 40000;
    nslots = opt.smoke ? 256 : 2048;
    nmine = opt.smoke ? 64 : 512;
    /* Generous: TSan makes fork of a multithreaded process slow. */
    child_deadline_s = STRESS_SANITIZED ? 300 : 120;
    slots = calloc(nslots, sizeof *slots);
    mine = calloc(nmine, sizeof *mine);
    pthread_t *th = calloc((size_t)nworkers, sizeof *th);
    if (slots == NULL || mine == NULL || th == NULL)
        stress_fail("out of memory for the harness");
    for (size_t i = 0; i < nslots; i++)
        atomic_init(&slots[i], NULL);

    ftm_stats_t base;
    stress_stats(&base);
    double t0 = stress_now();
    stress_rng_t r = stress_rng(opt.seed, 0);
    for (int i = 0; i < nworkers; i++)
        stress_thread_start(&th[i], worker_main, (void *)(uintptr_t)i);

    for (int n = 0; n < forks; n++) {
        /* New main-thread blocks for every child: some freed, some made. */
        for (size_t i = 0; i < nmine; i++) {
            if (mine[i] != NULL && stress_one_in(&r, 2)) {
                stress_hblock_free(mine[i], "main-thread block");
                mine[i] = NULL;
            }
            if (mine[i] == NULL)
                mine[i] = stress_hblock_new(((uint64_t)n << 32) | i, random_size(&r));
        }
        struct timespec ts = { 0, (long)stress_below(&r, 20) * 1000 * 1000 };
        nanosleep(&ts, NULL); /* let the workers get going again */
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0)
            stress_fail("fork: %s", strerror(errno));
        if (pid == 0) {
            child_run(n, 0);
            fflush(NULL);
            _exit(0);
        }
        wait_child(pid, "child");
    }

    atomic_store_explicit(&stop_workers, true, memory_order_release);
    for (int i = 0; i < nworkers; i++)
        stress_thread_join(th[i]);
    for (size_t i = 0; i < nslots; i++) {
        stress_hdr_t *h = atomic_exchange_explicit(&slots[i], NULL, memory_order_acq_rel);
        if (h != NULL)
            stress_hblock_free(h, "slot block at the end");
    }
    for (size_t i = 0; i < nmine; i++)
        if (mine[i] != NULL)
            stress_hblock_free(mine[i], "main-thread block at the end");
    stress_expect_baseline(&base, "after the workers stopped and everything was freed");
    ftm_collect(true);
    stress_expect_baseline(&base, "after ftm_collect(true)");

    stress_note("OK: %d forks (each child forked once more) beside %d allocating threads "
                "(%llu operations), %.2f s",
                forks, nworkers, atomic_load(&worker_ops), stress_now() - t0);
    free(slots);
    free(mine);
    free(th);
    return 0;
}
