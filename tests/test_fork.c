/* test_fork.c — fork while other threads allocate and free: the child's
 * allocator must be consistent (no lock or CAS loop left half-done by a
 * thread that does not exist in the child), blocks inherited from the
 * parent stay valid and freeable, and the child can allocate heavily, from
 * new threads too, and exit 0. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "ftm_test.h"
#include <ftmem.h>

TestSuite(fork, .timeout = 90);

enum { CHURN_THREADS = 4, SLOTS = 512 };
static atomic_bool g_stop;
static atomic_ulong g_ops;

/* Each churner keeps SLOTS blocks, replacing a random one per step (some
 * frees are of the neighbour's blocks, to keep remote frees in flight). */
typedef struct {
    int id;
    _Atomic(void *) slot[SLOTS];
} churn_t;
static churn_t g_churn[CHURN_THREADS];

static size_t churn_size(uint64_t r)
{
    if (r % 97 == 0)
        return 512 * 1024 + r % (2 * MiB);
    if (r % 13 == 0)
        return 4096 + r % 60000;
    return 8 + r % 900;
}

static void *churner(void *arg)
{
    churn_t *c = arg;
    uint64_t rng = 31 + (uint64_t)c->id;
    while (!atomic_load(&g_stop)) {
        uint64_t r = ftt_rand(&rng);
        churn_t *target = (r & 7) == 0 ? &g_churn[(c->id + 1) % CHURN_THREADS] : c;
        size_t n = churn_size(r >> 8);
        void *p = ftm_malloc(n);
        if (!p)
            abort();
        memset(p, c->id, n < 64 ? n : 64);
        void *old = atomic_exchange(&target->slot[r % SLOTS], p);
        ftm_free(old);
        if ((r & 255) == 0) {
            void *q = ftm_realloc(ftm_calloc(1, 100), 5000 + r % 100000);
            ftm_free(q);
        }
        atomic_fetch_add(&g_ops, 1);
    }
    return NULL;
}

static void *child_thread(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg;
    void *blk[256] = {0};
    for (int i = 0; i < 20000; i++) {
        uint64_t r = ftt_rand(&rng);
        int k = (int)(r % 256);
        ftm_free(blk[k]);
        blk[k] = ftm_malloc(churn_size(r >> 8));
        if (!blk[k])
            return (void *)1;
    }
    for (int k = 0; k < 256; k++)
        ftm_free(blk[k]);
    return NULL;
}

/* Inherited blocks of the main thread, with known contents. */
enum { INHERITED = 2000 };
static void *g_inh[INHERITED];

static int child_work(uint64_t seed)
{
    /* 1. Blocks inherited from the parent's main thread are intact. */
    for (int i = 0; i < INHERITED; i++)
        if (ftt_check(g_inh[i], 24 + (size_t)(i % 50) * 8, (uint64_t)i) != SIZE_MAX)
            return 10;
    /* 2. Heavy single-threaded work with verified contents. */
    enum { N = 2500 };
    static void *p[N];
    static size_t sz[N];
    uint64_t rng = seed;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            sz[i] = churn_size(ftt_rand(&rng));
            p[i] = ftm_malloc(sz[i]);
            if (!p[i])
                return 11;
            ftt_fill(p[i], sz[i], (uint64_t)i + seed);
        }
        for (int i = 0; i < N; i++) {
            if (ftt_check(p[i], sz[i], (uint64_t)i + seed) != SIZE_MAX)
                return 12;
            size_t n2 = churn_size(ftt_rand(&rng));
            void *q = ftm_realloc(p[i], n2);
            if (!q)
                return 13;
            if (ftt_check(q, sz[i] < n2 ? sz[i] : n2, (uint64_t)i + seed) != SIZE_MAX)
                return 14;
            ftm_free(q);
        }
    }
    /* 3. Blocks of the parent's threads (which do not exist here) can be
     *    freed; the main thread's inherited blocks too. */
    for (int t = 0; t < CHURN_THREADS; t++)
        for (int k = 0; k < SLOTS; k++)
            ftm_free(atomic_exchange(&g_churn[t].slot[k], NULL));
    for (int i = 0; i < INHERITED; i++)
        ftm_free(g_inh[i]);
    /* 4. New threads in the child. */
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        if (pthread_create(&th[i], NULL, child_thread, (void *)(uintptr_t)(seed + (uint64_t)i)) != 0)
            return 15;
    for (int i = 0; i < 2; i++) {
        void *res;
        pthread_join(th[i], &res);
        if (res)
            return 16;
    }
    ftm_collect(true);
    ftm_stats_t s;
    ftm_stats_get(&s);
    if (s.malloc_count - s.free_count != s.live_count)
        return 17;
    return 0;
}

static void start_churn(pthread_t *t)
{
    atomic_store(&g_stop, false);
    for (int i = 0; i < CHURN_THREADS; i++) {
        g_churn[i].id = i;
        cr_assert_eq(pthread_create(&t[i], NULL, churner, &g_churn[i]), 0);
    }
    /* Let them get going. */
    while (atomic_load(&g_ops) < 20000)
        sched_yield();
}

static void stop_churn(pthread_t *t)
{
    atomic_store(&g_stop, true);
    for (int i = 0; i < CHURN_THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < CHURN_THREADS; i++)
        for (int k = 0; k < SLOTS; k++)
            ftm_free(atomic_exchange(&g_churn[i].slot[k], NULL));
}

static const char *child_error(int code)
{
    switch (code) {
    case 10: return "a block inherited from the parent was corrupted";
    case 11: return "allocation failed";
    case 12: return "a block's contents changed";
    case 13: return "realloc failed";
    case 14: return "realloc lost contents";
    case 15: return "pthread_create failed";
    case 16: return "a child thread failed";
    case 17: return "stats identity broken";
    default: return "unknown";
    }
}

Test(fork, child_of_busy_parent_allocates_and_exits)
{
    for (int i = 0; i < INHERITED; i++) {
        g_inh[i] = ftm_malloc(24 + (size_t)(i % 50) * 8);
        cr_assert_not_null(g_inh[i]);
        ftt_fill(g_inh[i], 24 + (size_t)(i % 50) * 8, (uint64_t)i);
    }
    pthread_t t[CHURN_THREADS];
    start_churn(t);
    enum { FORKS = 4 };
    for (int f = 0; f < FORKS; f++) {
        /* Fork at varied points of the churn. */
        ftt_sleep_ms(3 + f * 7);
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            alarm(30); /* a deadlocked child dies by SIGALRM */
            _exit(child_work(1000 + (uint64_t)f));
        }
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        char buf[128];
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
            stop_churn(t);
            cr_assert_fail("fork #%d: child %s%s%s", f, ftt_status_str(st, buf, sizeof buf),
                           WIFEXITED(st) ? ": " : (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM ? " (deadlock?)" : ""),
                           WIFEXITED(st) ? child_error(WEXITSTATUS(st)) : "");
        }
    }
    stop_churn(t);
    /* The parent is unaffected. */
    for (int i = 0; i < INHERITED; i++) {
        cr_assert_eq(ftt_check(g_inh[i], 24 + (size_t)(i % 50) * 8, (uint64_t)i), SIZE_MAX,
                     "parent's block #%d changed across forks", i);
        ftm_free(g_inh[i]);
    }
}

/* A child forked from a child (the atfork handlers leave a state that can
 * be forked again). */
Test(fork, grandchild)
{
    void *p = ftm_malloc(1000);
    ftt_fill(p, 1000, 1);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        alarm(20);
        pid_t g = fork();
        if (g == 0) {
            alarm(20);
            if (ftt_check(p, 1000, 1) != SIZE_MAX)
                _exit(3);
            ftm_free(p);
            for (int i = 0; i < 10000; i++)
                ftm_free(ftm_malloc((size_t)(i % 2000) + 1));
            _exit(0);
        }
        int gst;
        waitpid(g, &gst, 0);
        ftm_free(p);
        _exit(WIFEXITED(gst) ? WEXITSTATUS(gst) : 100 + (WIFSIGNALED(gst) ? WTERMSIG(gst) : 0));
    }
    int st;
    waitpid(pid, &st, 0);
    char buf[128];
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child/grandchild: %s", ftt_status_str(st, buf, sizeof buf));
    ftm_free(p);
}
