/* test_abort.c — pointers ftmem did not hand out must abort with a message:
 * stack addresses, interior pointers, foreign (mmapped) memory, a pointer
 * just past a block; double frees in debug and secure builds; realloc and
 * usable_size of invalid pointers.  Each case runs in a forked child whose
 * stderr is captured; the parent checks SIGABRT and the message. */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include "ftm_test.h"
#include <ftmem.h>

TestSuite(abort, .timeout = 60);

#define INVALID_MSG "ftmem: free(): invalid pointer 0x"
#define DOUBLE_MSG "ftmem: free(): double free 0x"

typedef void (*case_fn)(void *);

static void expect_abort(case_fn fn, void *arg, const char *what, const char *msg)
{
    ftt_child_t r;
    char st[128];
    ftt_run_child(fn, arg, 20, &r);
    cr_assert(r.status != -1, "%s: could not fork", what);
    cr_assert(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT,
              "%s: child %s, expected SIGABRT; its stderr:\n%s", what, ftt_status_str(r.status, st, sizeof st), r.err);
    cr_assert(strstr(r.err, msg) != NULL, "%s: stderr lacks \"%s\"; it was:\n%s", what, msg, r.err);
}

/* The pointer printed after "0x" must be the one passed in. */
static void expect_abort_at(case_fn fn, void *arg, const char *what, const char *msg, const void *bad)
{
    ftt_child_t r;
    char st[128];
    ftt_run_child(fn, arg, 20, &r);
    cr_assert(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT,
              "%s: child %s, expected SIGABRT; its stderr:\n%s", what, ftt_status_str(r.status, st, sizeof st), r.err);
    const char *m = strstr(r.err, msg);
    cr_assert(m != NULL, "%s: stderr lacks \"%s\"; it was:\n%s", what, msg, r.err);
    unsigned long long named = strtoull(m + strlen(msg), NULL, 16);
    cr_assert_eq(named, (unsigned long long)(uintptr_t)bad, "%s: message names 0x%llx, want %p:\n%s", what, named,
                 bad, r.err);
}

/* ---- free() of pointers ftmem never handed out --------------------------- */

static void free_stack(void *arg)
{
    char buf[64];
    ftm_free(ftt_launder(buf + 16));
}

Test(abort, free_stack_address)
{
    expect_abort(free_stack, NULL, "ftm_free(stack address)", INVALID_MSG);
}

/* With an allocator already warmed up, a stack pointer is still caught. */
static void free_stack_after_use(void *arg)
{
    for (int i = 0; i < 1000; i++)
        ftm_free(ftm_malloc((size_t)(i % 300) + 1));
    void *keep = ftm_malloc(64);
    (void)keep;
    long x[4] = {0};
    ftm_free(ftt_launder(&x[2]));
}

Test(abort, free_stack_address_after_use)
{
    expect_abort(free_stack_after_use, NULL, "ftm_free(stack address) after allocations", INVALID_MSG);
}

struct interior { size_t size; size_t offset; };

static void free_interior(void *arg)
{
    const struct interior *c = arg;
    char *p = ftm_malloc(c->size);
    if (!p)
        _exit(3);
    ftm_free(ftt_launder(p + c->offset));
}

Test(abort, free_interior_pointer_small)
{
    struct interior cases[] = {{64, 8}, {64, 16}, {64, 32}, {64, 48}, {200, 16}, {1000, 512}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char what[96];
        snprintf(what, sizeof what, "ftm_free(p + %zu) of a %zu-byte block", cases[i].offset, cases[i].size);
        expect_abort(free_interior, &cases[i], what, INVALID_MSG);
    }
}

Test(abort, free_interior_pointer_medium_and_large)
{
    struct interior cases[] = {
        {50000, 16}, {50000, 4096}, {300000, 65536},
        {8 * MiB, 16}, {8 * MiB, 4096}, {8 * MiB, MiB}, {64 * MiB, 32 * MiB},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char what[96];
        snprintf(what, sizeof what, "ftm_free(p + %zu) of a %zu-byte block", cases[i].offset, cases[i].size);
        expect_abort(free_interior, &cases[i], what, INVALID_MSG);
    }
}

static void *foreign_page(size_t len)
{
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        _exit(4);
    memset(m, 0x5A, len);
    return m;
}

static void free_foreign(void *arg)
{
    size_t off = *(size_t *)arg;
    ftm_free(ftm_malloc(32)); /* the allocator is initialised */
    char *m = foreign_page(4 * MiB);
    ftm_free(m + off);
}

Test(abort, free_foreign_mmap_memory)
{
    size_t offs[] = {0, 16, 4096, MiB};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        char what[96];
        snprintf(what, sizeof what, "ftm_free(foreign mmap + %zu)", offs[i]);
        expect_abort(free_foreign, &offs[i], what, INVALID_MSG);
    }
}

/* Foreign memory that happens to be aligned like an arena (4 MiB). */
static void free_foreign_arena_aligned(void *arg)
{
    char *m = foreign_page(16 * MiB);
    char *a = (char *)(((uintptr_t)m + 4 * MiB - 1) & ~(uintptr_t)(4 * MiB - 1));
    ftm_free(ftm_malloc(32));
    ftm_free(a + *(size_t *)arg);
}

Test(abort, free_foreign_arena_aligned_memory)
{
    size_t offs[] = {0, 64, 65536};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++)
        expect_abort(free_foreign_arena_aligned, &offs[i], "ftm_free(foreign 4 MiB-aligned memory)", INVALID_MSG);
}

static void free_static(void *arg)
{
    static char data[256];
    ftm_free(ftt_launder(data + 32));
}

Test(abort, free_static_data)
{
    expect_abort(free_static, NULL, "ftm_free(static data)", INVALID_MSG);
}

/* Just past the end of a directly mapped block: the next page is not a
 * block of ours. */
static void free_past_large(void *arg)
{
    size_t n = *(size_t *)arg;
    char *p = ftm_malloc(n);
    if (!p)
        _exit(3);
    ftm_free(ftt_launder(p + ftm_usable_size(p)));
}

Test(abort, free_just_past_large_block)
{
    size_t sizes[] = {8 * MiB, 64 * MiB};
    for (size_t i = 0; i < 2; i++)
        expect_abort(free_past_large, &sizes[i], "ftm_free(p + usable_size(p)) of a large block", INVALID_MSG);
}

/* One byte past a small block lands inside the next block, not at its
 * start. */
static void free_past_small(void *arg)
{
    char *p = ftm_malloc(64);
    char *q = ftm_malloc(64);
    (void)q;
    ftm_free(ftt_launder(p + ftm_usable_size(p) + 1));
}

Test(abort, free_one_byte_past_small_block)
{
    expect_abort(free_past_small, NULL, "ftm_free(p + usable_size(p) + 1) of a 64-byte block", INVALID_MSG);
}

static void *g_bad;
static void free_given(void *arg)
{
    ftm_free(ftm_malloc(16));
    ftm_free(g_bad);
}

Test(abort, message_names_the_pointer)
{
    char buf[32];
    g_bad = ftt_launder(buf + 8); /* the child inherits the same address */
    expect_abort_at(free_given, NULL, "ftm_free(stack)", INVALID_MSG, g_bad);
}

/* free_sized must not trust a foreign pointer either. */
static void free_sized_stack(void *arg)
{
    char buf[64];
    ftm_free(ftm_malloc(64));
    ftm_free_sized(ftt_launder(buf + 16), 16);
}

static void free_sized_foreign(void *arg)
{
    ftm_free(ftm_malloc(64));
    ftm_free_sized(foreign_page(4096), 64);
}

Test(abort, free_sized_invalid_pointer)
{
    expect_abort(free_sized_stack, NULL, "ftm_free_sized(stack, 16)", "ftmem:");
    expect_abort(free_sized_foreign, NULL, "ftm_free_sized(foreign, 64)", "ftmem:");
}

/* ---- realloc and usable_size of invalid pointers ------------------------- */

static void realloc_stack(void *arg)
{
    char buf[64];
    ftm_free(ftm_malloc(16));
    void *q = ftm_realloc(ftt_launder(buf + 16), 100);
    (void)q;
}

static void realloc_foreign(void *arg)
{
    ftm_free(ftm_malloc(16));
    void *q = ftm_realloc(foreign_page(4096), 100);
    (void)q;
}

static void realloc_interior(void *arg)
{
    char *p = ftm_malloc(64);
    void *q = ftm_realloc(ftt_launder(p + 16), 1000);
    (void)q;
}

Test(abort, realloc_invalid_pointer)
{
    expect_abort(realloc_stack, NULL, "ftm_realloc(stack, 100)", "ftmem:");
    expect_abort(realloc_foreign, NULL, "ftm_realloc(foreign, 100)", "ftmem:");
    expect_abort(realloc_interior, NULL, "ftm_realloc(p + 16, 1000)", "ftmem:");
}

static void usable_stack(void *arg)
{
    char buf[64];
    ftm_free(ftm_malloc(16));
    volatile size_t n = ftm_usable_size(ftt_launder(buf + 16));
    (void)n;
}

static void usable_foreign(void *arg)
{
    ftm_free(ftm_malloc(16));
    volatile size_t n = ftm_usable_size(foreign_page(4096));
    (void)n;
}

Test(abort, usable_size_invalid_pointer)
{
    expect_abort(usable_stack, NULL, "ftm_usable_size(stack)", "ftmem:");
    expect_abort(usable_foreign, NULL, "ftm_usable_size(foreign)", "ftmem:");
}

/* The message goes out even when a thread other than the owner frees. */
#include <pthread.h>
static void *free_in_thread(void *arg)
{
    ftm_free(arg);
    return NULL;
}

static void free_invalid_from_thread(void *arg)
{
    char *p = ftm_malloc(64);
    pthread_t t;
    pthread_create(&t, NULL, free_in_thread, p + 24);
    pthread_join(t, NULL);
}

Test(abort, free_interior_pointer_from_other_thread)
{
    expect_abort(free_invalid_from_thread, NULL, "ftm_free(p + 24) from another thread", INVALID_MSG);
}

/* A valid free in a child exits normally: the harness itself is sound. */
static void valid_free(void *arg)
{
    void *p = ftm_malloc(64);
    ftm_free(p);
    void *q = ftm_malloc(8 * MiB);
    ftm_free(q);
}

Test(abort, control_valid_free_does_not_abort)
{
    ftt_child_t r;
    char st[128];
    ftt_run_child(valid_free, NULL, 20, &r);
    cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "valid frees: child %s; stderr:\n%s",
              ftt_status_str(r.status, st, sizeof st), r.err);
    cr_assert_null(strstr(r.err, "ftmem:"), "valid frees printed a diagnostic:\n%s", r.err);
}

/* ---- Double free (debug and secure builds) ------------------------------- */

#if defined(FTMEM_TEST_EXPECT_DOUBLE_FREE)
#define SKIP_UNLESS_DOUBLE_FREE_DETECTED() ((void)0)
#else
#define SKIP_UNLESS_DOUBLE_FREE_DETECTED() \
    cr_skip_test("double free is detected only in FTMEM_DEBUG / FTMEM_SECURE builds")
#endif

static void double_free_simple(void *arg)
{
    size_t n = *(size_t *)arg;
    void *keep = ftm_malloc(n); /* the pool stays in use */
    void *p = ftm_malloc(n);
    (void)keep;
    ftm_free(p);
    ftm_free(p);
}

static void double_free_interleaved(void *arg)
{
    size_t n = *(size_t *)arg;
    void *p = ftm_malloc(n), *q = ftm_malloc(n), *r = ftm_malloc(n);
    ftm_free(p);
    ftm_free(q);
    ftm_free(p);
    (void)r;
}

static void *free_and_return(void *arg)
{
    ftm_free(arg);
    return NULL;
}

static void double_free_remote(void *arg)
{
    size_t n = *(size_t *)arg;
    void *p = ftm_malloc(n);
    void *keep = ftm_malloc(n); /* the pool stays in use */
    (void)keep;
    pthread_t t;
    pthread_create(&t, NULL, free_and_return, p);
    pthread_join(t, NULL);
    ftm_free(p);
}

Test(abort, double_free)
{
    SKIP_UNLESS_DOUBLE_FREE_DETECTED();
    size_t sizes[] = {16, 64, 1000, 8000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char what[96];
        snprintf(what, sizeof what, "double free of a %zu-byte block", sizes[i]);
        expect_abort(double_free_simple, &sizes[i], what, DOUBLE_MSG);
        snprintf(what, sizeof what, "interleaved double free of %zu-byte blocks", sizes[i]);
        expect_abort(double_free_interleaved, &sizes[i], what, DOUBLE_MSG);
    }
}

/* A large block, or a medium one alone in its pool, may already be back
 * with the arena or the OS when it is freed again, so either diagnostic is
 * right; what matters is the abort. */
Test(abort, double_free_large)
{
    SKIP_UNLESS_DOUBLE_FREE_DETECTED();
    size_t sizes[] = {50000, 8 * MiB, 64 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        expect_abort(double_free_simple, &sizes[i], "double free of a medium/large block", "ftmem: free(): ");
        expect_abort(double_free_interleaved, &sizes[i], "interleaved double free of medium/large blocks", "ftmem: free(): ");
    }
}

Test(abort, double_free_after_remote_free)
{
    SKIP_UNLESS_DOUBLE_FREE_DETECTED();
    size_t sizes[] = {64, 1000};
    for (size_t i = 0; i < 2; i++)
        expect_abort(double_free_remote, &sizes[i], "free by owner after a remote free of the same block", DOUBLE_MSG);
}
