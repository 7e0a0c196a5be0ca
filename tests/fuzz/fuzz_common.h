/* fuzz_common.h — what the libFuzzer harnesses in tests/fuzz share: a
 * reader that turns the fuzzer's bytes into numbers (0 once the input is
 * used up, so every input is a valid program), the failure macro, hiding
 * values from the optimiser, and a helper thread that runs part of an
 * input while the main thread waits.
 *
 * Every check failure prints "fuzz: <what>" and aborts: libFuzzer reports
 * the abort as a crash and saves the input.  The harness's own bookkeeping
 * uses libc malloc (the static ftmem library does not override it), so it
 * never shows in ftmem's statistics.
 */
#ifndef FTMEM_FUZZ_COMMON_H
#define FTMEM_FUZZ_COMMON_H

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ftmem.h>

/* ---- failures -------------------------------------------------------------- */
__attribute__((noreturn, format(printf, 3, 4))) static void fz_fail_at(const char *file, int line,
                                                                      const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "fuzz: %s:%d: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
  abort();
}
#define FZ_FAIL(...) fz_fail_at(__FILE__, __LINE__, __VA_ARGS__)
#define FZ_CHECK(cond, ...)                                                                        \
  do {                                                                                             \
    if (__builtin_expect(!(cond), 0)) FZ_FAIL("check failed: " #cond ": " __VA_ARGS__);          \
  } while (0)

/* The API carries alloc_size attributes, so the compiler (and UBSan's
 * object-size check) believe a block is exactly the requested size; the
 * contract allows writing up to the usable size.  Launder pointers, and
 * hide constant sizes so the call really happens at run time. */
static inline void *fz_launder(void *p) {
  __asm__ volatile("" : "+r"(p) : : "memory");
  return p;
}
static inline size_t fz_hide(size_t n) {
  __asm__ volatile("" : "+r"(n));
  return n;
}

/* Hot loops of the harness itself (filling and checking patterns of
 * blocks) gain nothing from coverage feedback and spend most of a run in
 * its comparison hooks; ASan knows nothing of ftmem's blocks (mapped
 * memory, never poisoned), so its checks there only cost time too. */
#define FZ_NO_COVERAGE __attribute__((no_sanitize("coverage", "address")))

/* ---- input ------------------------------------------------------------------ */
typedef struct fz_in {
  const uint8_t *p;
  size_t n;
} fz_in;

static inline bool fz_done(const fz_in *in) { return in->n == 0; }
static inline uint8_t fz_u8(fz_in *in) {
  if (in->n == 0) return 0;
  in->n--;
  return *in->p++;
}
static inline uint16_t fz_u16(fz_in *in) { return (uint16_t)(fz_u8(in) | (unsigned)fz_u8(in) << 8); }
static inline uint32_t fz_u32(fz_in *in) { return (uint32_t)fz_u16(in) | (uint32_t)fz_u16(in) << 16; }
static inline uint64_t fz_u64(fz_in *in) { return (uint64_t)fz_u32(in) | (uint64_t)fz_u32(in) << 32; }

/* A 64-bit mix (splitmix64's finaliser): seeds, canaries, patterns. */
static inline uint64_t fz_mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

/* Environment flag, read once per process. */
static inline bool fz_env_flag(const char *name) {
  const char *v = getenv(name);
  return v != NULL && *v != '\0' && *v != '0';
}

/* ---- a helper thread -------------------------------------------------------- */
/* Run fn(arg) on a new thread and wait for it.  The calling thread
 * optionally detaches from the object layer around the wait (as a runtime
 * does around a blocking call), then attaches again. */
typedef struct fz_thread_call {
  void (*fn)(void *);
  void *arg;
} fz_thread_call;

static void *fz_thread_main(void *p) {
  fz_thread_call *c = p;
  c->fn(c->arg);
  return NULL;
}

static inline void fz_run_on_thread(void (*fn)(void *), void *arg, bool detach) {
  fz_thread_call c = {fn, arg};
  pthread_t t;
  if (detach) ftm_thread_detach();
  int rc = pthread_create(&t, NULL, fz_thread_main, &c);
  if (rc != 0) FZ_FAIL("pthread_create: %s", strerror(rc));
  pthread_join(t, NULL);
  if (detach) ftm_thread_attach();
}

#endif
