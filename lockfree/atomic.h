/* lockfree/atomic.h — named-order atomic helpers over <stdatomic.h>.
 *
 * Every atomic access in ftmem goes through one of these, so the memory
 * order of each access is in its name and greppable.  Atomic fields carry an
 * `x` prefix (xheap, xthread_free, ...).  Standalone fences are avoided:
 * ThreadSanitizer does not model them, so orders sit on the operation.
 */
#ifndef FTM_LOCKFREE_ATOMIC_H
#define FTM_LOCKFREE_ATOMIC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define ftm_atomic_load_relaxed(p)      atomic_load_explicit((p), memory_order_relaxed)
#define ftm_atomic_load_acquire(p)      atomic_load_explicit((p), memory_order_acquire)
#define ftm_atomic_store_relaxed(p, v)  atomic_store_explicit((p), (v), memory_order_relaxed)
#define ftm_atomic_store_release(p, v)  atomic_store_explicit((p), (v), memory_order_release)
#define ftm_atomic_exchange_acq_rel(p, v) atomic_exchange_explicit((p), (v), memory_order_acq_rel)
#define ftm_atomic_exchange_acquire(p, v) atomic_exchange_explicit((p), (v), memory_order_acquire)
#define ftm_atomic_fetch_add_relaxed(p, v) atomic_fetch_add_explicit((p), (v), memory_order_relaxed)
#define ftm_atomic_fetch_sub_relaxed(p, v) atomic_fetch_sub_explicit((p), (v), memory_order_relaxed)
#define ftm_atomic_fetch_add_acq_rel(p, v) atomic_fetch_add_explicit((p), (v), memory_order_acq_rel)
#define ftm_atomic_fetch_sub_acq_rel(p, v) atomic_fetch_sub_explicit((p), (v), memory_order_acq_rel)
#define ftm_atomic_fetch_or_release(p, v)  atomic_fetch_or_explicit((p), (v), memory_order_release)
#define ftm_atomic_fetch_or_relaxed(p, v)  atomic_fetch_or_explicit((p), (v), memory_order_relaxed)
#define ftm_atomic_fetch_and_acq_rel(p, v) atomic_fetch_and_explicit((p), (v), memory_order_acq_rel)
#define ftm_atomic_fetch_and_relaxed(p, v) atomic_fetch_and_explicit((p), (v), memory_order_relaxed)
/* seq_cst: only for Dekker-style handshakes (store one flag, load another) */
#define ftm_atomic_load_seq_cst(p)      atomic_load_explicit((p), memory_order_seq_cst)
#define ftm_atomic_store_seq_cst(p, v)  atomic_store_explicit((p), (v), memory_order_seq_cst)
#define ftm_atomic_fetch_add_seq_cst(p, v) atomic_fetch_add_explicit((p), (v), memory_order_seq_cst)
/* weak CAS; on failure *expected is reloaded with the given failure order */
#define ftm_atomic_cas_weak_acq_rel(p, e, d) \
  atomic_compare_exchange_weak_explicit((p), (e), (d), memory_order_acq_rel, memory_order_acquire)
#define ftm_atomic_cas_weak_relaxed(p, e, d) \
  atomic_compare_exchange_weak_explicit((p), (e), (d), memory_order_relaxed, memory_order_relaxed)
#define ftm_atomic_cas_weak_release(p, e, d) \
  atomic_compare_exchange_weak_explicit((p), (e), (d), memory_order_release, memory_order_relaxed)
#define ftm_atomic_cas_strong_acq_rel(p, e, d) \
  atomic_compare_exchange_strong_explicit((p), (e), (d), memory_order_acq_rel, memory_order_acquire)

/* A counter that one thread writes and any thread may read.  Only the
 * owner may call ftm_counter_add on it; readers use a relaxed load.
 * Portable form: a relaxed load and a relaxed store (no lock prefix).  On
 * x86-64 outside ThreadSanitizer builds it is one `add` to memory instead:
 * the counters sit on the malloc/free fast paths, where compilers turn the
 * load/store pair into three instructions, and an aligned 8-byte store is
 * single-copy atomic on x86-64, so a concurrent reader sees the old or the
 * new value, never a torn one (the same guarantee the relaxed store gives).
 * TSan builds keep the portable form so the checker sees every access. */
typedef _Atomic uint64_t ftm_counter_t;
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__) && !defined(FTMEM_PORTABLE_COUNTERS)
static inline void ftm_counter_add(ftm_counter_t *c, uint64_t n) {
  __asm__("addq %1, %0" : "+m"(*(uint64_t *)c) : "er"(n));
}
#else
static inline void ftm_counter_add(ftm_counter_t *c, uint64_t n) {
  ftm_atomic_store_relaxed(c, ftm_atomic_load_relaxed(c) + n);
}
#endif

static inline void ftm_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#endif
}

#endif
