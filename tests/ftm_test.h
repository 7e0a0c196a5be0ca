/* ftm_test.h — helpers shared by the Criterion unit tests in tests/.
 *
 * Owns: byte patterns written into blocks and checked later, hiding sizes
 * and pointers from the optimiser, RSS measurement, running a function in a
 * forked child with its stderr captured, capturing stderr of the calling
 * process.  Does not own any assertion policy: each test decides.
 * Everything is static inline so each test binary stays one file.
 */
#ifndef FTM_TEST_H
#define FTM_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* The API carries alloc_size attributes, so the compiler (and UBSan's
 * object-size check) believe a block is exactly the requested size.  Writing
 * up to the usable size is allowed by the contract; launder the pointer so
 * the compiler loses track of the requested size.  Likewise hide constant
 * sizes such as SIZE_MAX so the call is really made at run time. */
static inline void *ftt_launder(void *p)
{
    __asm__ volatile("" : "+r"(p) : : "memory");
    return p;
}

static inline size_t ftt_hide(size_t n)
{
    __asm__ volatile("" : "+r"(n));
    return n;
}

/* ---- Patterns ---------------------------------------------------------- */

/* Word i of a block filled with `seed` holds ftt_word(seed, i); a trailing
 * partial word holds that word's leading bytes.  Different seeds give
 * different contents, so blocks that overlap or get swapped are caught. */
static inline uint64_t ftt_word(uint64_t seed, size_t i)
{
    uint64_t x = seed ^ ((uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull);
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    return x;
}

static inline void ftt_fill(void *block, size_t n, uint64_t seed)
{
    unsigned char *p = ftt_launder(block);
    size_t words = n / 8;
    for (size_t i = 0; i < words; i++) {
        uint64_t w = ftt_word(seed, i);
        memcpy(p + i * 8, &w, 8);
    }
    if (n % 8) {
        uint64_t w = ftt_word(seed, words);
        memcpy(p + words * 8, &w, n % 8);
    }
}

/* Offset of the first byte differing from the pattern, or SIZE_MAX. */
static inline size_t ftt_check(const void *block, size_t n, uint64_t seed)
{
    const unsigned char *p = ftt_launder((void *)block);
    size_t words = n / 8;
    for (size_t i = 0; i < words; i++) {
        uint64_t w = ftt_word(seed, i), got;
        memcpy(&got, p + i * 8, 8);
        if (got != w) {
            for (size_t b = 0; b < 8; b++)
                if (((unsigned char *)&got)[b] != ((unsigned char *)&w)[b])
                    return i * 8 + b;
        }
    }
    if (n % 8) {
        uint64_t w = ftt_word(seed, words);
        for (size_t b = 0; b < n % 8; b++)
            if (p[words * 8 + b] != ((unsigned char *)&w)[b])
                return words * 8 + b;
    }
    return SIZE_MAX;
}

/* Offset of the first non-zero byte, or SIZE_MAX. */
static inline size_t ftt_first_nonzero(const void *block, size_t n)
{
    const unsigned char *p = ftt_launder((void *)block);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w)
            break;
    }
    for (; i < n; i++)
        if (p[i])
            return i;
    return SIZE_MAX;
}

/* Small deterministic PRNG (splitmix64) so runs are reproducible. */
static inline uint64_t ftt_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline bool ftt_aligned(const void *p, size_t a)
{
    return ((uintptr_t)p & (a - 1)) == 0;
}

/* ---- Time and memory --------------------------------------------------- */

static inline double ftt_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void ftt_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Resident set size of this process in bytes, from /proc/self/statm. */
static inline size_t ftt_statm_rss(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* RSS that memory returned by the allocator should bring down.  Under
 * AddressSanitizer the shadow of every byte the allocator ever poisoned
 * stays resident (ASan releases shadow on munmap, not on madvise), which is
 * the sanitizer's cost, not the allocator's: there, sum /proc/self/smaps
 * over mappings outside the x86-64 shadow range [0x7fff8000, 0x10007fff8000). */
static inline size_t ftt_rss(void)
{
#if defined(FTMEM_TEST_ASAN)
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    unsigned long long total_kb = 0, start = 0, end = 0;
    bool counted = false;
    if (!f)
        return ftt_statm_rss();
    while (fgets(line, sizeof line, f)) {
        unsigned long long kb;
        if (sscanf(line, "%llx-%llx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            counted = start < 0x7fff8000ull || start >= 0x10007fff8000ull;
        } else if (counted && sscanf(line, "Rss: %llu kB", &kb) == 1) {
            total_kb += kb;
        }
    }
    fclose(f);
    return (size_t)total_kb * 1024;
#else
    return ftt_statm_rss();
#endif
}

/* ---- Children and stderr ------------------------------------------------- */

typedef struct ftt_child_s {
    int status;       /* from waitpid */
    char err[8192];   /* the child's stderr, NUL-terminated (truncated) */
} ftt_child_t;

/* Fork; in the child point stderr at a pipe, run fn(arg) and _exit(0) if it
 * returns.  The parent collects stderr and the wait status.  A child that
 * hangs is killed by SIGALRM after `timeout_s` seconds. */
static inline void ftt_run_child(void (*fn)(void *), void *arg, unsigned timeout_s, ftt_child_t *out)
{
    int fds[2];
    memset(out, 0, sizeof *out);
    out->status = -1;
    if (pipe(fds) != 0)
        return;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return;
    }
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        close(fds[1]);
        alarm(timeout_s);
        fn(arg);
        _exit(0);
    }
    close(fds[1]);
    size_t len = 0;
    for (;;) {
        char buf[1024];
        ssize_t r = read(fds[0], buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        size_t room = sizeof out->err - 1 - len;
        size_t take = (size_t)r < room ? (size_t)r : room;
        memcpy(out->err + len, buf, take);
        len += take;
    }
    out->err[len] = '\0';
    close(fds[0]);
    while (waitpid(pid, &out->status, 0) < 0 && errno == EINTR) {
    }
}

static inline const char *ftt_status_str(int status, char *buf, size_t n)
{
    if (status == -1)
        snprintf(buf, n, "fork/pipe failed");
    else if (WIFEXITED(status))
        snprintf(buf, n, "exited with %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, n, "status 0x%x", status);
    return buf;
}

/* Run fn() with this process's stderr (fd 2 and the stderr FILE) sent to a
 * temporary file; return the text in malloc'd memory (libc's malloc). */
static inline char *ftt_capture_stderr(void (*fn)(void))
{
    char path[] = "/tmp/ftmem-test-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    unlink(path);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    char *text = malloc((size_t)len + 1);
    if (!text) {
        close(fd);
        return NULL;
    }
    ssize_t got = pread(fd, text, (size_t)len, 0);
    text[got > 0 ? (size_t)got : 0] = '\0';
    close(fd);
    return text;
}

/* Case-insensitive substring search. */
static inline bool ftt_contains_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return true;
    return false;
}

#endif /* FTM_TEST_H */
