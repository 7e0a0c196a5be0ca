/* stress_util.h — what every ftmem stress program shares: the command line
 * (--seed, --threads, --smoke), a seeded RNG, size distributions, the
 * position-keyed fill pattern that detects overlapping or corrupted blocks,
 * failure reporting and the statistics checks at quiescence.
 *
 * Not a test framework: each program in stress/ is a plain executable that
 * checks its own results and exits non-zero with a message on a mismatch.
 * The harness's own bookkeeping uses libc malloc (the static ftmem library
 * does not override it), so it never shows in ftmem's statistics.
 */
#ifndef FTMEM_STRESS_UTIL_H
#define FTMEM_STRESS_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftmem.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define STRESS_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define STRESS_SANITIZED 1
#endif
#endif
#ifndef STRESS_SANITIZED
#define STRESS_SANITIZED 0
#endif

#define STRESS_KIB ((size_t)1024)
#define STRESS_MIB ((size_t)1024 * 1024)
/* Above this ftmem maps blocks directly (DESIGN.md §1: "larger blocks are
 * mapped directly"); the stress programs aim some requests beyond it. */
#define STRESS_LARGE_MIN (256 * STRESS_KIB)
/* The largest block asked for, in smoke runs too: 4 MiB, beyond the 2 MiB
 * up to which large blocks are carved from arenas, so both kinds of large
 * block (and the arena size itself) are covered.  The sparse fill keeps it
 * cheap. */
#define STRESS_LARGE_MAX (4 * STRESS_MIB)

typedef struct stress_opts_s {
    const char *name;  /* program name, prefix of every message */
    uint64_t seed;
    int threads;
    bool smoke;        /* CI size: a few seconds even under TSan on 2 cores */
} stress_opts_t;

/* Parse --seed N, --threads N, --smoke, --help.  Prints the settings line. */
void stress_parse(stress_opts_t *o, int argc, char **argv, int default_threads,
                  const char *usage_extra);

/* Rename the program in messages (e.g. "fork_alloc[child 3]"). */
void stress_set_name(const char *name);

/* "<name>: FAIL: <message>" on stderr, then _exit(1) (no atexit handlers:
 * other threads may still be running). */
_Noreturn __attribute__((format(printf, 1, 2))) void stress_fail(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) void stress_note(const char *fmt, ...);

/* ---- Random numbers ------------------------------------------------------ */

static inline uint64_t stress_mix(uint64_t x) /* splitmix64 finaliser */
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static inline uint64_t stress_key3(uint64_t a, uint64_t b, uint64_t c)
{
    return stress_mix(stress_mix(stress_mix(a) ^ b) ^ c);
}

typedef struct stress_rng_s { uint64_t s; } stress_rng_t;

static inline stress_rng_t stress_rng(uint64_t seed, uint64_t stream)
{
    stress_rng_t r = { stress_key3(seed, stream, 0x5eed) };
    return r;
}

static inline uint64_t stress_next(stress_rng_t *r)
{
    r->s += 0x9e3779b97f4a7c15ull;
    uint64_t x = r->s;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Uniform in [0, n); n > 0. */
static inline uint64_t stress_below(stress_rng_t *r, uint64_t n)
{
    return stress_next(r) % n;
}

/* true with probability 1/n. */
static inline bool stress_one_in(stress_rng_t *r, uint64_t n)
{
    return stress_below(r, n) == 0;
}

/* Log-uniform size in [lo, hi] (every power-of-two range equally likely),
 * so small classes and large blocks are both exercised. */
size_t stress_size(stress_rng_t *r, size_t lo, size_t hi);

/* ---- Block contents -------------------------------------------------------
 * Byte i of a block filled with `key` is a function of (key, i) only, so a
 * prefix survives realloc with the same key, and two live blocks that overlap
 * (a block handed out twice) or a write through a stale pointer show up as a
 * mismatch.  Blocks up to 64 KiB are filled densely; beyond that one word in
 * 32 (every 256 bytes) keeps multi-megabyte blocks cheap under TSan. */
void stress_fill(void *p, size_t from, size_t to, uint64_t key);
/* Returns the offset of the first mismatching byte in [from, to), or
 * SIZE_MAX when all the bytes checked match. */
size_t stress_check(const void *p, size_t from, size_t to, uint64_t key);
/* Same sampling, expecting zero bytes (calloc). */
size_t stress_check_zero(const void *p, size_t size);
/* stress_check, failing with a message naming `what` and the bytes. */
void stress_verify(const void *p, size_t from, size_t to, uint64_t key, const char *what,
                   unsigned long long id);

/* A block that carries its id and size in its first 16 bytes, so that it can
 * travel as a bare pointer (slots, queues, across fork); the rest holds the
 * pattern keyed by (seed, id, size). */
typedef struct stress_hdr_s {
    uint64_t id;
    uint64_t size;
} stress_hdr_t;
/* ftm_malloc(size >= 16), checked, header written, filled. */
stress_hdr_t *stress_hblock_new(uint64_t id, size_t size);
/* Check the header (16 <= size <= STRESS_LARGE_MAX), usable size and
 * contents, then free (ftm_free_sized for odd ids, ftm_free for even). */
void stress_hblock_free(stress_hdr_t *h, const char *who);

/* The bytes stress_fill writes at offset i, for messages. */
uint8_t stress_pattern_byte(uint64_t key, size_t i);

/* Alignment and usable size of a fresh block of `size` bytes aligned to
 * `align` (0: FTM_MIN_ALIGN): fails with a message when violated. */
void stress_check_block(const void *p, size_t size, size_t align, const char *what);

/* ---- Threads, time, memory ----------------------------------------------- */

void stress_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);
void stress_thread_join(pthread_t t);
double stress_now(void);           /* monotonic seconds */
size_t stress_rss(void);           /* resident set size, bytes (/proc/self/statm) */

/* ---- Statistics ------------------------------------------------------------ */

void stress_stats(ftm_stats_t *out); /* ftm_stats_get */
/* Fail unless live_count and large_count are back to the baseline and as
 * many blocks were freed as allocated since it. */
void stress_expect_baseline(const ftm_stats_t *base, const char *when);

#endif /* FTMEM_STRESS_UTIL_H */
