/* ftmem/object.h — managed objects with biased reference counting.
 *
 * What a free-threaded language runtime builds its objects on, shaped like
 * CPython's C API without the global lock.  Included by <ftmem.h>.
 *
 * Objects.  A runtime embeds `ftm_object` as the first member of its
 * structs (or `ftm_varobject` for objects with a variable number of items)
 * and describes each kind with an `ftm_type`.  `ftm_new(type)` returns an
 * object with refcount 1, owned by the calling thread.
 *
 * Header layout (24 bytes; CPython's free-threaded build uses 32):
 *   offset 0  ob_tid        owner thread id (0: no owner, counts merged)
 *   offset 4  ob_ref_local  the owner's count; FTM_REF_IMMORTAL = immortal,
 *                           FTM_REF_DEFERRED = counted per thread
 *   offset 8  ob_ref_shared other threads' count << 2 | state (2 bits)
 *   offset 12 ob_gc_bits    collector bits (next layer)
 *   offset 13 ob_flags      FTM_OBF_*: weakrefs, read optimistically, ...
 *   offset 14 ob_deferred   per-thread count slot of a deferred object
 *   offset 16 ob_type
 *
 * Reference counting is biased (PEP 703): the owner thread increments and
 * decrements `ob_ref_local` with a plain load and store; other threads use
 * atomics on `ob_ref_shared`.  When another thread's decrement would take
 * the shared count below zero the object is queued to its owner, which
 * merges the two counts at its next safepoint (ftm_new, ftm_safepoint,
 * detach, exit).  An exiting thread merges its queue; objects it
 * still owns are merged by the first thread that would queue them; the
 * queue of a detached thread is merged on its behalf when it grows.
 *
 * Fields.  Every reference held inside an object that other threads may
 * read is an `ftm_field` written only through ftm_field_store/exchange
 * (or ftm_field_init before the object is shared) and read through
 * ftm_field_load, which returns a new reference even while another thread
 * replaces the field: memory of objects stored in fields is reused only
 * after an epoch grace period (Concurrency Kit's ck_epoch).
 *
 * Threads register on first use.  Call ftm_thread_detach() before a
 * blocking call and ftm_thread_attach() after it, and ftm_safepoint() in
 * long loops that never create objects.  A detached thread must not touch
 * objects (debug builds check this).
 *
 * Errors: a type with a size smaller than the header, a variable-size type
 * whose basic size does not hold ftm_varobject, or a GC-tracked type without
 * traverse and clear is refused (NULL + EINVAL).  Allocation failure and
 * item-count overflow give NULL + ENOMEM.  In FTMEM_DEBUG and FTMEM_SECURE
 * builds a decref of a freed object, a count driven below zero and an incref
 * of a freed object print "ftmem: ..." naming the object and type, and
 * abort.
 */
#ifndef FTMEM_OBJECT_H
#define FTMEM_OBJECT_H

#ifndef FTMEM_H
#error "include <ftmem.h>, not <ftmem/object.h>"
#endif

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Objects and types -------------------------------------------------- */

typedef struct ftm_type ftm_type;

typedef struct ftm_object {
  _Atomic uint32_t ob_tid;
  _Atomic uint32_t ob_ref_local;
  _Atomic int32_t ob_ref_shared;
  _Atomic uint8_t ob_gc_bits;
  _Atomic uint8_t ob_flags;
  _Atomic uint16_t ob_deferred;
  const ftm_type *ob_type;
} ftm_object;

/* Objects of a type with item_size > 0 start with this. */
typedef struct ftm_varobject {
  ftm_object ob_base;
  size_t ob_size; /* number of items */
} ftm_varobject;

#define FTM_REF_IMMORTAL UINT32_MAX
#define FTM_REF_DEFERRED (UINT32_MAX - 1)
/* debug and secure builds: the object is dead (set when it is freed) */
#define FTM_REF_FREED (UINT32_MAX - 2)
#define FTM_REF_SPECIAL FTM_REF_FREED /* ob_ref_local >= this: slow path */

/* ob_ref_shared: count << FTM_REF_SHARED_SHIFT | one of these states.
 * States only increase while the object lives. */
#define FTM_REF_SHARED_SHIFT 2
#define FTM_REF_MAYBE_WEAKREF 1 /* try-incref enabled: death is a CAS */
#define FTM_REF_QUEUED 2        /* queued to its owner for a merge */
#define FTM_REF_MERGED 3        /* no owner: ob_ref_shared is the count */

/* ob_flags */
#define FTM_OBF_SHARED 0x01   /* may be read optimistically: free after a grace period */
#define FTM_OBF_WEAKREFS 0x02 /* weak references may exist */
#define FTM_OBF_FINALIZED 0x04 /* finalize has run */
#define FTM_OBF_PINNED 0x08   /* deferred, or its clear is pending: holds the pin */

/* Called for each reference an object holds; a non-zero return stops the
 * traversal and is returned by it. */
typedef int (*ftm_visitproc)(ftm_object *referent, void *arg);

/* type flags */
#define FTM_TYPE_GC 0x01       /* tracked by the cycle collector: needs traverse and clear */
#define FTM_TYPE_FREELIST 0x02 /* keep a bounded per-thread free list (fixed-size types) */

struct ftm_type {
  const char *name;
  size_t basic_size; /* bytes of a fixed-size object, header included */
  size_t item_size;  /* bytes per item of a variable-size object, else 0 */
  unsigned flags;    /* FTM_TYPE_* */
  /* visit each reference the object holds (fields read with ftm_field_peek) */
  int (*traverse)(ftm_object *self, ftm_visitproc visit, void *arg);
  /* drop the references the object holds (ftm_field_clear); called when
   * the object dies and by the collector to break cycles */
  void (*clear)(ftm_object *self);
  /* optional, PEP 442: runs once, before clear; may resurrect the object */
  void (*finalize)(ftm_object *self);
  /* optional: release what the object owns outside ftmem objects */
  void (*dealloc)(ftm_object *self);
  /* optional: bytes owned outside the object, for ftm_sizeof */
  size_t (*sizeof_extra)(const ftm_object *self);
  /* FTM_TYPE_FREELIST: objects kept per thread (0: 80).  FTMEM_DEBUG and
   * FTMEM_SECURE builds keep no free lists: freed objects go through a
   * quarantine so that late increfs are caught */
  unsigned freelist_max;
  /* set by ftmem; zero-initialise */
  _Atomic uint32_t ftm_ready;
  uint32_t ftm_freelist_index;
  uint32_t ftm_type_index; /* its row in the census (ftmem/inspect.h) */
};

/* Check a type once (ftm_new does it on first use): 0, or -1 with
 * errno = EINVAL and a message on stderr naming the type and the fault. */
FTM_API int ftm_type_ready(ftm_type *type);

/* A new object, refcount 1, owned by the calling thread; fields after the
 * header are zero.  NULL + EINVAL for a bad type, NULL + ENOMEM. */
FTM_API ftm_object *ftm_new(ftm_type *type);
FTM_API ftm_object *ftm_new_var(ftm_type *type, size_t nitems);

static inline const ftm_type *ftm_type_of(const ftm_object *o) { return o->ob_type; }
static inline size_t ftm_var_size(const ftm_object *o) { return ((const ftm_varobject *)o)->ob_size; }

/* Like sys.getsizeof: basic size + items + sizeof_extra. */
FTM_API size_t ftm_sizeof(const ftm_object *o);

/* ---- Reference counting ------------------------------------------------- */

/* The calling thread's id as objects record it (UINT32_MAX before the
 * thread first creates an object: matches no object). */
FTM_API extern __thread uint32_t ftm__tid __attribute__((tls_model("initial-exec")));

FTM_API void ftm__incref_slow(ftm_object *o, uint32_t local);
FTM_API void ftm__decref_shared(ftm_object *o);
FTM_API void ftm__decref_slow(ftm_object *o, uint32_t local);
FTM_API void ftm__local_zero(ftm_object *o);
/* The collector's barrier (gc.h): non-zero while a collection traces;
 * then every new reference to a candidate shades it. */
FTM_API extern _Atomic int ftm__gc_barrier;
FTM_API void ftm__gc_shade(ftm_object *o);

static inline void ftm_incref(ftm_object *o) {
  /* relaxed: only the owner stores ob_ref_local (the collector reads it) */
  uint32_t l = atomic_load_explicit(&o->ob_ref_local, memory_order_relaxed);
  if (__builtin_expect(l >= FTM_REF_SPECIAL, 0)) {
    if (l != FTM_REF_IMMORTAL) ftm__incref_slow(o, l);
    return;
  }
  if (__builtin_expect(atomic_load_explicit(&o->ob_tid, memory_order_relaxed) == ftm__tid, 1))
    atomic_store_explicit(&o->ob_ref_local, l + 1, memory_order_relaxed);
  else /* relaxed: an increment orders nothing (a reference is already held) */
    atomic_fetch_add_explicit(&o->ob_ref_shared, 1 << FTM_REF_SHARED_SHIFT, memory_order_relaxed);
  /* relaxed: a hint; gc.c's handshake orders its switch before any
   * increment that must shade */
  if (__builtin_expect(atomic_load_explicit(&ftm__gc_barrier, memory_order_relaxed) != 0, 0))
    ftm__gc_shade(o);
}

static inline void ftm_decref(ftm_object *o) {
  uint32_t l = atomic_load_explicit(&o->ob_ref_local, memory_order_relaxed);
  /* one unsigned compare for both "l <= 1" (the last owner reference, or
   * one too many) and "l >= FTM_REF_SPECIAL" (immortal, deferred, freed) */
  if (__builtin_expect(l - 2u >= FTM_REF_SPECIAL - 2u, 0)) {
    if (l == FTM_REF_IMMORTAL) return;
    if (l >= FTM_REF_SPECIAL) ftm__decref_slow(o, l);
    else if (atomic_load_explicit(&o->ob_tid, memory_order_relaxed) == ftm__tid)
      ftm__local_zero(o); /* l == 0: a decref too many, reported there */
    else
      ftm__decref_shared(o);
    return;
  }
  if (__builtin_expect(atomic_load_explicit(&o->ob_tid, memory_order_relaxed) == ftm__tid, 1))
    atomic_store_explicit(&o->ob_ref_local, l - 1, memory_order_relaxed);
  else
    ftm__decref_shared(o);
}

static inline void ftm_xincref(ftm_object *o) { if (o) ftm_incref(o); }
static inline void ftm_xdecref(ftm_object *o) { if (o) ftm_decref(o); }
static inline ftm_object *ftm_newref(ftm_object *o) { ftm_incref(o); return o; }

/* local + shared, like sys.getrefcount (FTM_REF_IMMORTAL for immortal
 * objects; deferred objects count the per-thread counts flushed so far). */
FTM_API ssize_t ftm_refcount(const ftm_object *o);

/* Try-incref (CPython 3.14's PyUnstable_EnableTryIncRef/TryIncRef): after
 * ftm_enable_try_incref(o), ftm_try_incref(o) on a pointer whose memory is
 * still valid (read inside ftm_read_begin/end, or from a weak reference)
 * either takes a reference or returns false because o is being freed. */
FTM_API void ftm_enable_try_incref(ftm_object *o);
FTM_API bool ftm_try_incref(ftm_object *o);

/* Immortal objects: incref and decref store nothing; never freed.  Call
 * on an object the calling thread owns, or on one with no owner, before
 * other threads use it concurrently: returns 0, or -1 with errno = EPERM
 * if another live thread owns o, EINVAL if o is deferred (clear that
 * first). */
FTM_API int ftm_make_immortal(ftm_object *o);
static inline bool ftm_is_immortal(const ftm_object *o) {
  return atomic_load_explicit(&((ftm_object *)o)->ob_ref_local, memory_order_relaxed) ==
         FTM_REF_IMMORTAL;
}

/* Deferred counting for hot shared objects: increments and decrements from
 * any thread go to a per-thread count (no atomic, no shared cache line).
 * Counts are flushed into the object at detach, exit, ftm_thread_flush and
 * when asked; the object cannot die while deferred.  ftm_clear_deferred
 * returns at once: it switches the object back to ordinary counting and
 * asks every thread to flush; when each attached thread has answered at
 * its next safepoint (ftm_new, ftm_safepoint, attach/detach, exit) the
 * deferred pin is dropped — and the object freed if nothing else holds it.
 * Call it once per ftm_set_deferred; ftm_refcount does not count the pin.
 * Returns 0; -1 with errno = EBUSY (set while an earlier clear is pending),
 * ENOSPC
 * when all 65535 deferred slots are in use, ENOMEM, EPERM as for
 * ftm_make_immortal, EINVAL (clear of an object that is not deferred). */
FTM_API int ftm_set_deferred(ftm_object *o);
FTM_API int ftm_clear_deferred(ftm_object *o);
static inline bool ftm_is_deferred(const ftm_object *o) {
  return atomic_load_explicit(&((ftm_object *)o)->ob_ref_local, memory_order_relaxed) ==
         FTM_REF_DEFERRED;
}

/* ---- Fields ------------------------------------------------------------- */

typedef _Atomic(ftm_object *) ftm_field;

/* A new reference to the field's object, or NULL. */
FTM_API ftm_object *ftm_field_load(ftm_field *slot);
/* Store value (stealing its reference; may be NULL), release the old one. */
FTM_API void ftm_field_store(ftm_field *slot, ftm_object *value);
/* Store value (stolen), return the old one (its reference passes to the caller). */
FTM_API ftm_object *ftm_field_exchange(ftm_field *slot, ftm_object *value);
/* Initialise a field of an object no other thread can see yet (stolen);
 * also how a container moves a reference inside itself into an empty
 * field (the collector's barrier sees the move, gc.h). */
FTM_API void ftm_field_init(ftm_field *slot, ftm_object *value);
/* Set the field to NULL and release what it held (for clear callbacks). */
static inline void ftm_field_clear(ftm_field *slot) { ftm_xdecref(ftm_field_exchange(slot, NULL)); }
/* The field's object without a reference: for traverse, and for a thread
 * that holds the container exclusively. */
static inline ftm_object *ftm_field_peek(ftm_field *slot) {
  /* acquire: pairs with the release store that published the object */
  return atomic_load_explicit(slot, memory_order_acquire);
}

/* Read sections: memory of objects read optimistically (and blocks freed
 * with ftm_free_deferred) is not reused while any thread is inside one.
 * Nestable; keep them short — never across a blocking call. */
FTM_API void ftm_read_begin(void);
FTM_API void ftm_read_end(void);
/* Free p (from ftm_malloc) after every current read section has ended:
 * for arrays that readers may still be scanning (CPython's
 * _PyMem_FreeDelayed).  An array of ftm_field retired this way must have
 * its slots set to NULL first (after their references moved to the new
 * array): ftm_field_load's re-check reads the slot it loaded from, and a
 * stale slot that still named a since-dead object would pass it. */
FTM_API void ftm_free_deferred(void *p);

/* ---- Threads ------------------------------------------------------------ */
FTM_API void ftm_thread_attach(void);
FTM_API void ftm_thread_detach(void);
FTM_API void ftm_safepoint(void);
/* Merge this thread's queue, flush deferred counts and run pending
 * deferred frees now (what exit does, without exiting); debug and secure
 * builds also empty the thread's quarantine of freed objects. */
FTM_API void ftm_thread_flush(void);

/* ---- Weak references ---------------------------------------------------- */

typedef struct ftm_weakref ftm_weakref;
typedef void (*ftm_weakref_callback)(ftm_weakref *wr, void *arg);

/* A weak reference to obj (which must be alive; the caller holds a
 * reference).  callback (may be NULL) runs once, on the thread that drops
 * obj's last reference, after ftm_weakref_get starts returning NULL —
 * unless the weak reference was released first.  NULL + ENOMEM. */
FTM_API ftm_weakref *ftm_weakref_new(ftm_object *obj, ftm_weakref_callback callback, void *arg);
/* A new reference to the referent, or NULL once it is dying or dead. */
FTM_API ftm_object *ftm_weakref_get(ftm_weakref *wr);
/* Drop the weak reference.  A callback that has not started by the time
 * this is called does not run; one already running (the referent died
 * concurrently) finishes, holding its own reference to the weakref — as in
 * CPython. */
FTM_API void ftm_weakref_release(ftm_weakref *wr);
/* The type of weak reference objects (an ftm_weakref is an ftm_object). */
FTM_API extern ftm_type ftm_weakref_type;
static inline ftm_object *ftm_weakref_as_object(ftm_weakref *wr) { return (ftm_object *)wr; }

/* ---- Interning ---------------------------------------------------------- */

typedef struct ftm_intern_table ftm_intern_table;
typedef uint64_t (*ftm_intern_hash)(const ftm_object *o);
typedef bool (*ftm_intern_eq)(const ftm_object *a, const ftm_object *b);

/* A concurrent table of canonical objects (sharded Concurrency Kit ck_hs:
 * lock-free lookups, one writer per shard).  NULL + ENOMEM / EINVAL. */
FTM_API ftm_intern_table *ftm_intern_table_new(ftm_intern_hash hash, ftm_intern_eq eq);
/* The canonical instance equal to obj: obj itself (made immortal and
 * entered) or the one entered before (obj's reference is then released).
 * Steals obj's reference; the result is immortal.  NULL + ENOMEM, or
 * NULL + EPERM when obj is new to the table but owned by another live
 * thread (only its owner, or anyone after the owner exits, may make it
 * immortal); obj's reference is released in both cases. */
FTM_API ftm_object *ftm_intern(ftm_intern_table *t, ftm_object *obj);
/* The canonical instance equal to probe, or NULL; takes no reference. */
FTM_API ftm_object *ftm_intern_lookup(ftm_intern_table *t, const ftm_object *probe);
FTM_API size_t ftm_intern_count(ftm_intern_table *t);
/* Free the table (its immortal objects stay). */
FTM_API void ftm_intern_table_free(ftm_intern_table *t);

/* ---- Object statistics -------------------------------------------------- */
typedef struct ftm_object_stats_s {
  uint64_t created;       /* ftm_new / ftm_new_var */
  uint64_t freed;         /* objects whose memory went back (or to a free list) */
  uint64_t freelist_hits; /* ftm_new served from a free list */
  uint64_t queued;        /* objects queued to their owner */
  uint64_t merged;        /* queued objects merged (by the owner or for it) */
  uint64_t merged_for_others; /* of which merged by another thread */
  uint64_t deferred_frees; /* memory freed after a grace period */
  uint64_t deferred_pending; /* waiting for a grace period now */
  uint64_t threads;       /* registered thread states now */
} ftm_object_stats_t;
FTM_API void ftm_object_stats_get(ftm_object_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif
