/* rt_internal.h — what the runtime's files share and its users do not:
 * the mutex helper every container uses, the hash mixer, and per-type hooks
 * for rt_object.c.  Public API: rt.h. */
#ifndef RT_INTERNAL_H
#define RT_INTERNAL_H

#include <pthread.h>

#include "rt.h"

/* Lock a container's mutex.  Uncontended: one trylock.  Contended: the
 * wait may be long, and a thread blocked while attached stalls ftmem —
 * objects other threads queued to it are not merged (not freed), and
 * ftm_clear_deferred waits for every attached thread to reach a safepoint.
 * So detach around the wait (what CPython's PyMutex does when it parks).
 * We hold no other runtime lock here: runtime locks never nest.
 * Unlike CPython's, ftmem's attach runs a safepoint, which may merge our
 * queue and free objects while we already hold m (and, with the cycle
 * collector, take part in a collection).  Safe here because the runtime's
 * traverse, clear and dealloc callbacks take no lock; a runtime with
 * finalizers or weakref callbacks that can re-enter it must allow for it. */
static inline void rt__lock(pthread_mutex_t *m) {
  if (pthread_mutex_trylock(m) == 0) return;
  ftm_thread_detach();
  pthread_mutex_lock(m);
  ftm_thread_attach();
}

static inline void rt__unlock(pthread_mutex_t *m) { pthread_mutex_unlock(m); }

/* splitmix64's finaliser: ints hash to themselves in CPython, but open
 * addressing with a power-of-two mask needs the low bits mixed. */
static inline uint64_t rt__mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

uint64_t rt__str_hash(ftm_object *s); /* rt_str.c: cached */
size_t rt__small_int_count(void);     /* rt_int.c: 0 until the cache exists */

#endif
