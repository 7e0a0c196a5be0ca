/* override_prog.c — an ordinary program (not linked with ftmem) run under
 * LD_PRELOAD=libftmem.so by ctest.  It checks that every allocation entry
 * point of the C library is really served by ftmem (ftm_usable_size, found
 * with dlsym, accepts each pointer and matches malloc_usable_size), that the
 * functions behave, across threads and a fork, and that freeing a stack
 * pointer aborts with ftmem's message.  Prints "override: N passed, 0 failed"
 * and exits 0 when all is well. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int g_passed, g_failed;

#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (cond) {                                                                       \
            g_passed++;                                                                   \
        } else {                                                                          \
            g_failed++;                                                                   \
            fprintf(stderr, "override: FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                          \
        }                                                                                 \
    } while (0)

typedef size_t (*usable_fn)(const void *);
static usable_fn ftm_usable;

static void *volatile g_sink;

/* Through a volatile function pointer so the compiler neither folds nor
 * warns about the calls. */
static void *(*volatile p_malloc)(size_t) = malloc;
static void (*volatile p_free)(void *) = free;

static void check_ours(void *p, size_t n, const char *what)
{
    CHECK(p != NULL, "%s returned NULL", what);
    if (!p)
        return;
    size_t u = ftm_usable(p); /* aborts if p is not ftmem's */
    CHECK(u >= n, "%s: ftm_usable_size %zu < %zu", what, u, n);
    CHECK(malloc_usable_size(p) == u, "%s: malloc_usable_size %zu != ftm_usable_size %zu", what,
          malloc_usable_size(p), u);
    CHECK(((uintptr_t)p & 15) == 0, "%s: %p not 16-aligned", what, p);
}

static void check_entry_points(void)
{
    void *p = malloc(100);
    check_ours(p, 100, "malloc(100)");
    memset(p, 0xAB, 100);
    p = realloc(p, 100000);
    check_ours(p, 100000, "realloc(p, 100000)");
    CHECK(((unsigned char *)p)[99] == 0xAB, "realloc lost contents");
    free(p);

    unsigned char *c = calloc(1000, 10);
    check_ours(c, 10000, "calloc(1000, 10)");
    int nz = 0;
    for (int i = 0; i < 10000; i++)
        nz |= c[i];
    CHECK(nz == 0, "calloc memory not zeroed");
    free(c);

    void *a = NULL;
    CHECK(posix_memalign(&a, 4096, 5000) == 0, "posix_memalign failed");
    check_ours(a, 5000, "posix_memalign(4096, 5000)");
    CHECK(((uintptr_t)a & 4095) == 0, "posix_memalign: %p not 4096-aligned", a);
    free(a);

    a = aligned_alloc(256, 1000);
    check_ours(a, 1000, "aligned_alloc(256, 1000)");
    CHECK(((uintptr_t)a & 255) == 0, "aligned_alloc misaligned");
    free(a);

    a = memalign(65536, 100);
    check_ours(a, 100, "memalign(65536, 100)");
    CHECK(((uintptr_t)a & 65535) == 0, "memalign misaligned");
    free(a);

    long page = sysconf(_SC_PAGESIZE);
    a = valloc(100);
    check_ours(a, 100, "valloc(100)");
    CHECK(((uintptr_t)a & (uintptr_t)(page - 1)) == 0, "valloc not page-aligned");
    free(a);

    a = pvalloc(100);
    check_ours(a, (size_t)page, "pvalloc(100)");
    CHECK(((uintptr_t)a & (uintptr_t)(page - 1)) == 0, "pvalloc not page-aligned");
    free(a);

    /* The C library's own allocations (strdup, asprintf, fopen) go to ftmem
     * too, and free() of them works. */
    char *s = strdup("hello ftmem");
    check_ours(s, 12, "strdup");
    free(s);
    char *f = NULL;
    CHECK(asprintf(&f, "%d-%s", 42, "x") > 0, "asprintf failed");
    check_ours(f, 5, "asprintf");
    free(f);

    /* Large blocks. */
    p = malloc(64u << 20);
    check_ours(p, 64u << 20, "malloc(64 MiB)");
    memset(p, 1, 64u << 20);
    free(p);

    /* The error contract as the C library's. */
    errno = 0;
    g_sink = p_malloc(SIZE_MAX);
    CHECK(g_sink == NULL && errno == ENOMEM, "malloc(SIZE_MAX) = %p, errno %d", g_sink, errno);
    errno = 0;
    volatile size_t huge = SIZE_MAX / 2;
    g_sink = calloc(huge, 3);
    CHECK(g_sink == NULL && errno == ENOMEM, "calloc overflow = %p, errno %d", g_sink, errno);
    a = (void *)1;
    CHECK(posix_memalign(&a, 24, 100) == EINVAL, "posix_memalign(24) not EINVAL");
    p_free(NULL);
    CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) != 0");
}

static void *thread_work(void *arg)
{
    void **mine = arg; /* blocks from the main thread, freed here */
    for (int i = 0; i < 1000; i++) {
        if (ftm_usable(mine[i]) < 32)
            return (void *)1;
        free(mine[i]);
    }
    void *v[500];
    for (int r = 0; r < 20; r++) {
        for (int i = 0; i < 500; i++) {
            v[i] = malloc((size_t)(i * 37 % 3000) + 1);
            if (!v[i])
                return (void *)2;
            memset(v[i], i, 1);
        }
        for (int i = 0; i < 500; i++) {
            if (*(unsigned char *)v[i] != (unsigned char)i)
                return (void *)3;
            free(v[i]);
        }
    }
    return NULL;
}

static void check_threads(void)
{
    pthread_t t[4];
    static void *blocks[4][1000];
    for (int k = 0; k < 4; k++) {
        for (int i = 0; i < 1000; i++)
            blocks[k][i] = malloc(32 + (size_t)i);
        CHECK(pthread_create(&t[k], NULL, thread_work, blocks[k]) == 0, "pthread_create");
    }
    for (int k = 0; k < 4; k++) {
        void *res;
        pthread_join(t[k], &res);
        CHECK(res == NULL, "thread %d failed with code %ld", k, (long)(intptr_t)res);
    }
}

static void check_fork(void)
{
    char *p = strdup("inherited");
    pid_t pid = fork();
    if (pid == 0) {
        alarm(20);
        int bad = strcmp(p, "inherited") != 0;
        free(p);
        for (int i = 0; i < 20000; i++)
            free(malloc((size_t)(i % 5000) + 1));
        char *q = realloc(NULL, 10);
        q = realloc(q, 1 << 20);
        free(q);
        _exit(bad);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "forked child: status 0x%x", st);
    free(p);
}

/* free() of a stack pointer must be caught by ftmem (glibc's message lacks
 * the "ftmem:" prefix, so this also proves who answered). */
static void check_invalid_free_aborts(void)
{
    int fds[2];
    if (pipe(fds) != 0)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        char buf[64];
        close(fds[0]);
        dup2(fds[1], 2);
        alarm(20);
        char *volatile bad = buf + 16;
        p_free(bad);
        _exit(0);
    }
    close(fds[1]);
    char out[4096];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof out - 1 && (r = read(fds[0], out + len, sizeof out - 1 - len)) > 0)
        len += (size_t)r;
    out[len] = '\0';
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "free(stack): child status 0x%x, stderr: %s", st, out);
    CHECK(strstr(out, "ftmem: free(): invalid pointer 0x") != NULL, "free(stack): stderr lacks ftmem's message: %s",
          out);
}

int main(void)
{
    ftm_usable = (usable_fn)dlsym(RTLD_DEFAULT, "ftm_usable_size");
    if (!ftm_usable) {
        fprintf(stderr, "override: FAIL ftm_usable_size not found: is libftmem preloaded? (LD_PRELOAD=%s)\n",
                getenv("LD_PRELOAD") ? getenv("LD_PRELOAD") : "");
        printf("override: 0 passed, 1 failed\n");
        return 1;
    }
    check_entry_points();
    check_threads();
    check_fork();
    check_invalid_free_aborts();
    printf("override: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
