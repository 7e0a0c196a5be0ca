/* lockfree/spinlock.h — a test-and-test-and-set lock on C11 atomics.
 *
 * For short critical sections that fork's prepare handler must hold all at
 * once: the 64 weak reference stripes and every intern table's 16 shards.
 * Written here rather than taken from a library because the two obvious
 * ones do not fit: pthread mutexes make ThreadSanitizer's deadlock detector
 * abort when one thread holds more than 64 (it does at every fork), and
 * Concurrency Kit's ck_spinlock is inline assembly that TSan cannot see, so
 * the data it protects would be reported as racing.  Acquire on lock and
 * release on unlock are what TSan needs to order the critical sections.
 * Spins briefly, then yields: holders never block inside.
 */
#ifndef FTM_LOCKFREE_SPINLOCK_H
#define FTM_LOCKFREE_SPINLOCK_H

#include <sched.h>

#include "lockfree/atomic.h"

typedef struct ftm_spinlock_s {
  _Atomic int xlocked;
} ftm_spinlock_t;

#define FTM_SPINLOCK_INIT {0}

static inline bool ftm_spinlock_trylock(ftm_spinlock_t *l) {
  /* acquire: pairs with the release in ftm_spinlock_unlock */
  return ftm_atomic_load_relaxed(&l->xlocked) == 0 && ftm_atomic_exchange_acquire(&l->xlocked, 1) == 0;
}

static inline void ftm_spinlock_lock(ftm_spinlock_t *l) {
  for (unsigned spins = 0; !ftm_spinlock_trylock(l); spins++) {
    if (spins < 64) ftm_cpu_relax();
    else sched_yield();
  }
}

static inline void ftm_spinlock_unlock(ftm_spinlock_t *l) {
  /* release: the critical section's writes reach the next holder */
  ftm_atomic_store_release(&l->xlocked, 0);
}

#endif
