/* trace_internal.h — what the tracer's files (trace.c, trace_snapshot.c,
 * symbolize.c) share, and the hooks the allocation entry points call.
 */
#ifndef FTM_TRACE_INTERNAL_H
#define FTM_TRACE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "ftmem.h"
#include "lockfree/atomic.h"

#define FTM_TRACE_INTERNAL __attribute__((visibility("hidden")))

/* An interned traceback: return addresses, innermost first. */
typedef struct ftm__tb {
  uint32_t hash;
  uint16_t n;
  uintptr_t pc[];
} ftm__tb;

/* One live traced block. */
typedef struct ftm__trace_entry {
  uintptr_t ptr; /* 0: empty slot */
  ftm__tb *tb;
  uint64_t size; /* bytes asked for */
  uint64_t est;  /* bytes it stands for (size unless sampled) */
} ftm__trace_entry;

/* 1 while tracing: the only thing the entry points test (relaxed). */
FTM_TRACE_INTERNAL extern _Atomic int ftm__trace_on;
/* Per-thread tracer state, 16 bytes (test_dlopen_tls bounds ftmem's
 * initial-exec TLS): the sampler's countdown, and the reentrancy flag. */
typedef struct {
  int64_t sample_left;   /* bytes until the next sample */
  uint32_t sample_epoch; /* the sampling settings sample_left was drawn for */
  int busy;              /* inside the tracer: allocations are not recorded */
} ftm__trace_thread;
FTM_TRACE_INTERNAL extern __thread ftm__trace_thread ftm__trace_tls __attribute__((tls_model("initial-exec")));
#define ftm__trace_busy (ftm__trace_tls.busy)
/* taken by start/stop/clear/snapshot/object traceback (not by recording) */
FTM_TRACE_INTERNAL extern pthread_mutex_t ftm__trace_api_lock;

#if defined(FTMEM_NO_TRACE)
#define ftm__tracing() false
#else
#define ftm__tracing() __builtin_expect(ftm_atomic_load_relaxed(&ftm__trace_on) != 0, 0)
#endif

/* the hooks: record a block handed out (p may be NULL), forget one freed */
FTM_TRACE_INTERNAL void ftm__trace_record(void *p, size_t size, void *ra);

/* ftm__trace_on: 0 off, 1 every allocation, 2 sampling.  Must an
 * allocation of `size` bytes go to ftm__trace_record?  Sampling counts the
 * bytes down inline and says yes only when the countdown runs out (about
 * once per sample rate), so leaving it on costs a few instructions per
 * allocation. */
static inline bool ftm__trace_wants(size_t size) {
#if !defined(FTMEM_NO_TRACE)
  int on = ftm_atomic_load_relaxed(&ftm__trace_on);
  return __builtin_expect(on != 0, 0) && (on != 2 || (ftm__trace_tls.sample_left -= (int64_t)size) <= 0);
#else
  (void)size;
  return false;
#endif
}
static inline void ftm__trace_alloc_hook(void *p, size_t size, void *ra) {
  if (ftm__trace_wants(size)) ftm__trace_record(p, size, ra);
}
FTM_TRACE_INTERNAL void ftm__trace_forget(const void *p);
FTM_TRACE_INTERNAL bool ftm__trace_take(const void *p, ftm__trace_entry *out, uint64_t *gen);
FTM_TRACE_INTERNAL void ftm__trace_put_back(const ftm__trace_entry *e, uint64_t gen);
FTM_TRACE_INTERNAL bool ftm__trace_lookup(const void *p, ftm__trace_entry *out);
FTM_TRACE_INTERNAL void ftm__trace_foreach(void (*fn)(const ftm__trace_entry *, void *), void *arg);
FTM_TRACE_INTERNAL void ftm__trace_init_from_env(void);
FTM_TRACE_INTERNAL void ftm__trace_prefork(void);
FTM_TRACE_INTERNAL void ftm__trace_postfork(void);

/* symbolize.c: pc (a return address) to function, file and line; strings
 * live until ftm__symbolize_reset (called by ftm_trace_stop). */
FTM_TRACE_INTERNAL void ftm__symbolize(uintptr_t pc, ftm_trace_frame *out);
FTM_TRACE_INTERNAL void ftm__symbolize_reset(void);

#endif
