/* ftmem/gc.h — the concurrent generational cycle collector (Python's `gc`
 * module, without the global lock).  Included by <ftmem.h>.
 *
 * What is collected.  Objects of types flagged FTM_TYPE_GC are tracked
 * from creation (ftm_gc_untrack takes one out, ftm_gc_track puts it back).
 * A collection finds groups of tracked objects that reference each other
 * but that nothing else references (trial deletion, as CPython's gc), and
 * frees them: weak references to them are cleared and their callbacks
 * run (not for weak references that are garbage themselves), finalizers
 * run once per object (PEP 442; an object a finalizer resurrects lives
 * on), then each garbage object's `clear` drops its references and
 * ordinary reference counting frees the lot.
 *
 * Generations 0, 1 and 2 as CPython: a collection of generation 0 starts
 * when tracked allocations minus deallocations exceed threshold0 (2000),
 * generation 1 every threshold1 (10) collections of 0, generation 2 every
 * threshold2 (10) of 1 — and then only when the objects waiting to be
 * examined in a full collection exceed 25% of those the last full
 * collection kept.
 *
 * Concurrency.  Mutators keep running while a collection traces: the
 * collector asks every attached thread to acknowledge at its next
 * safepoint (ftm_new, ftm_safepoint, attach, detach) when it starts, and
 * parks them only for a short final step whose length grows with the
 * garbage found, not with the heap (docs/gc.md).  A thread that stays
 * attached without reaching a safepoint (blocked in a system call without
 * ftm_thread_detach) delays a collection; after FTMEM_GC_HANDSHAKE_MS
 * (default 1000 ms for ftm_gc_collect, 20 ms for automatic collections)
 * the collection is abandoned — ftm_gc_collect then returns -1 with
 * errno = EAGAIN.  Automatic collections run on the thread that crosses a
 * threshold, or on FTMEM_GC_THREADS background collector threads.
 *
 * Rules for types, because the collector reads objects while mutators
 * write them:
 *   - every reference a tracked object holds is an ftm_field written
 *     through ftm_field_store/exchange/init; a reference taken out of a
 *     field for a thread goes through ftm_field_exchange (or
 *     ftm_field_load); a reference moved inside the container to another
 *     field is written there with ftm_field_init — these are what the
 *     collector's barrier watches;
 *   - `traverse` reads fields with ftm_field_peek, takes no lock, and
 *     reads separately allocated storage through atomics; such storage
 *     is freed with ftm_free_deferred, both when it is replaced and when
 *     the object dies (dealloc), since a traverse may be reading it;
 *   - `traverse` may visit objects that died since it loaded them (the
 *     collector skips them), and may see an entry twice or miss it while
 *     another thread moves it: the barrier covers that.
 * Do not reach a safepoint (ftm_new, ftm_safepoint) while holding a lock
 * that another attached thread may wait for: a collection's park would
 * wait for that thread, and that thread for the lock.
 *
 * Known limitation: an object that a finalizer resurrects keeps the
 * collector's "unreachable" mark until the collection's recheck, a few
 * moments later; a weak reference made to it in between returns NULL
 * until then (weak references that existed were cleared, as in CPython).
 *
 * Errors: from a detached thread every call prints "ftmem: ..." and
 * aborts; a collection requested from inside a finalizer or callback of a
 * running collection returns 0 at once.  Debug builds (FTMEM_DEBUG) check
 * each traverse: a visit of a freed object or of memory that is not an
 * object, and a `clear` that leaves references behind, print a message
 * naming the type and abort.
 */
#ifndef FTMEM_GC_H
#define FTMEM_GC_H

#ifndef FTMEM_H
#error "include <ftmem.h>, not <ftmem/gc.h>"
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define FTM_GC_GENERATIONS 3

/* Tracking (ftm_new tracks objects of FTM_TYPE_GC types).  As with
 * CPython's PyObject_GC_Track, one thread at a time tracks or untracks a
 * given object (its creator, typically). */
FTM_API void ftm_gc_track(ftm_object *o);   /* no-op if tracked or not FTM_TYPE_GC */
FTM_API void ftm_gc_untrack(ftm_object *o); /* no-op if untracked */
FTM_API bool ftm_gc_is_tracked(const ftm_object *o);
/* Has the object's finalizer run (PEP 442)? */
FTM_API bool ftm_gc_is_finalized(const ftm_object *o);

/* Collect generations 0..gen (2: full); gen < 0 or > 2 means 2.  Returns
 * the number of unreachable objects found (collected, or saved with
 * FTM_GC_DEBUG_SAVEALL), 0 when called from inside a collection's
 * finalizer or callback, -1 with errno = EAGAIN when a thread did not
 * answer the handshake in time (nothing was collected). */
FTM_API ssize_t ftm_gc_collect(int gen);

FTM_API void ftm_gc_enable(void);
FTM_API void ftm_gc_disable(void);
FTM_API bool ftm_gc_isenabled(void);
/* Thresholds (CPython's defaults 2000, 10, 10); threshold0 == 0 disables
 * automatic collection. */
FTM_API void ftm_gc_set_threshold(unsigned t0, unsigned t1, unsigned t2);
FTM_API void ftm_gc_get_threshold(unsigned out[FTM_GC_GENERATIONS]);
/* gc.get_count(): generation 0's allocations minus deallocations since its
 * last collection, collections of 0 since 1 was collected, of 1 since 2. */
FTM_API void ftm_gc_get_count(unsigned long out[FTM_GC_GENERATIONS]);

typedef struct ftm_gc_gen_stats_s {
  uint64_t collections;   /* completed collections of this generation */
  uint64_t collected;     /* unreachable objects freed */
  uint64_t uncollectable; /* unreachable objects kept (FTM_GC_DEBUG_SAVEALL) */
  uint64_t candidates;    /* objects examined, summed over collections */
  uint64_t abandoned;     /* collections abandoned (a handshake timed out) */
  double duration_total;  /* seconds, start to end of each collection */
  double duration_max;
  double pause_total;     /* seconds threads were parked (the final step) */
  double pause_max;
} ftm_gc_gen_stats_t;
/* gc.get_stats(): one entry per generation. */
FTM_API void ftm_gc_get_stats(ftm_gc_gen_stats_t out[FTM_GC_GENERATIONS]);

/* Callbacks (gc.callbacks): called with phase "start" before and "stop"
 * after each collection, on the collecting thread, while no other
 * collection can start; like finalizers they may use this API (a collect
 * returns 0, introspection works).  info->collected and uncollectable are
 * 0 at "start". */
typedef struct ftm_gc_info_s {
  int generation;
  size_t collected;
  size_t uncollectable;
  size_t candidates;     /* objects examined */
  double duration;       /* seconds ("stop" only) */
  double pause;          /* seconds threads were parked ("stop" only) */
} ftm_gc_info;
typedef void (*ftm_gc_callback)(const char *phase, const ftm_gc_info *info, void *arg);
/* 0, or -1 with errno = ENOMEM (at most 32 callbacks) */
FTM_API int ftm_gc_callback_add(ftm_gc_callback cb, void *arg);
/* 0, or -1 with errno = ENOENT */
FTM_API int ftm_gc_callback_remove(ftm_gc_callback cb, void *arg);

/* gc.freeze(): move every tracked object into a permanent generation that
 * collections ignore; unfreeze puts them back in the oldest generation. */
FTM_API void ftm_gc_freeze(void);
FTM_API void ftm_gc_unfreeze(void);
FTM_API size_t ftm_gc_get_freeze_count(void);

/* gc.get_objects(gen): new references to the tracked objects of generation
 * gen (-1: all, frozen ones included) in out[0..cap); returns how many
 * there are (the caller may retry with a larger array when it exceeds
 * cap; only min(count, cap) references are taken).  Threads are parked
 * while the list is made (this is introspection, not a collection). */
FTM_API size_t ftm_gc_get_objects(int gen, ftm_object **out, size_t cap);
/* gc.get_referrers(o): new references to the tracked objects whose
 * traverse visits o; same contract as ftm_gc_get_objects. */
FTM_API size_t ftm_gc_get_referrers(ftm_object *o, ftm_object **out, size_t cap);
/* gc.get_referents(o): new references to what o's traverse visits. */
FTM_API size_t ftm_gc_get_referents(ftm_object *o, ftm_object **out, size_t cap);

/* gc.set_debug flags */
#define FTM_GC_DEBUG_STATS 0x01        /* print a line per collection to stderr */
#define FTM_GC_DEBUG_COLLECTABLE 0x02  /* print each unreachable object found */
#define FTM_GC_DEBUG_SAVEALL 0x20      /* keep garbage (ftm_gc_garbage) instead of freeing it */
FTM_API void ftm_gc_set_debug(unsigned flags);
FTM_API unsigned ftm_gc_get_debug(void);
/* gc.garbage: new references to the objects kept by FTM_GC_DEBUG_SAVEALL
 * (same contract as ftm_gc_get_objects); ftm_gc_garbage_clear drops the
 * collector's references to them. */
FTM_API size_t ftm_gc_garbage(ftm_object **out, size_t cap);
FTM_API void ftm_gc_garbage_clear(void);

#ifdef __cplusplus
}
#endif
#endif
