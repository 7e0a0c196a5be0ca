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
#define ftm_atomic_fetch_or_release(p, v)  atomic_fetch_or_explicit((p), (v), memory_order_release)
#define ftm_atomic_fetch_or_relaxed(p, v)  atomic_fetch_or_explicit((p), (v), memory_order_relaxed)
#define ftm_atomic_fetch_and_acq_rel(p, v) atomic_fetch_and_explicit((p), (v), memory_order_acq_rel)
#define ftm_atomic_fetch_and_relaxed(p, v) atomic_fetch_and_explicit((p), (v), memory_order_relaxed)
/* weak CAS; on failure *expected is reloaded with the given failure order */
#define ftm_atomic_cas_weak_acq_rel(p, e, d) \
  atomic_compare_exchange_weak_explicit((p), (e), (d), memory_order_acq_rel, memory_order_acquire)
#define ftm_atomic_cas_weak_release(p, e, d) \
  atomic_compare_exchange_weak_explicit((p), (e), (d), memory_order_release, memory_order_relaxed)
#define ftm_atomic_cas_strong_acq_rel(p, e, d) \
  atomic_compare_exchange_strong_explicit((p), (e), (d), memory_order_acq_rel, memory_order_acquire)

/* A counter that one thread writes and any thread may read: a relaxed load
 * and store (no read-modify-write instruction, no lock prefix).  Only the
 * owner may call ftm_counter_add on it. */
typedef _Atomic uint64_t ftm_counter_t;
static inline void ftm_counter_add(ftm_counter_t *c, uint64_t n) {
  ftm_atomic_store_relaxed(c, ftm_atomic_load_relaxed(c) + n);
}

static inline void ftm_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#endif
}

#endif
