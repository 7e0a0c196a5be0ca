/* object_internal.h — internal API of the object layer: thread states,
 * biased-RC merging, epochs, deallocation.  See docs/objects.md for the
 * protocols and why they are correct.
 *
 * Glossary
 *   tstate   a thread's object-layer state: its id, its queue of objects
 *            other threads handed back for a merge, its epoch record, its
 *            per-thread deferred counts and free lists.  Kept in a table of
 *            65536 slots and reused by later threads, never freed.
 *   tid      (generation << 16) | slot, never 0 and never UINT32_MAX; a
 *            slot whose generation would wrap is retired, so a tid names
 *            one thread for the life of the process.
 *   merge    fold ob_ref_local into ob_ref_shared and mark it MERGED: the
 *            object then has no owner and all threads count on ob_ref_shared.
 *   bag      up to FTM_BAG_N blocks freed while optimistic readers may hold
 *            them; sealed bags are freed by ck_epoch after a grace period.
 */
#ifndef FTM_OBJECT_INTERNAL_H
#define FTM_OBJECT_INTERNAL_H

#include <ck_epoch.h>
#include <ck_stack.h>

#include "internal.h"

#define FTM_MAX_TSTATES 65536u
#define FTM_TID_NONE UINT32_MAX
#define FTM_MAX_FREELIST_TYPES 64
#define FTM_FREELIST_DEFAULT 80
#define FTM_BAG_N 126
#define FTM_BRC_BACKLOG 1024 /* queue length at which a detached owner is merged for */
#define FTM_CENSUS_TYPES 256 /* census rows; types past the last share it */
#define FTM_BRC_SPARE 1024   /* queue entries without a node, for when none can be allocated */
#define FTM_TRASH_DEPTH 64   /* nested deallocations before they are queued */
#define FTM_TRASH_FIRST 32   /* queued deallocations the tstate holds itself */
#define FTM_QUARANTINE 1024  /* debug/secure: freed objects kept readable */

#if defined(FTMEM_DEBUG) || defined(FTMEM_SECURE)
#define FTM_CHECK_OBJECTS 1
#else
#define FTM_CHECK_OBJECTS 0
#endif

/* tstate states (xstate) */
enum {
  FTM_TS_FREE = 0,     /* slot not in use */
  FTM_TS_ATTACHED = 1, /* its thread may touch objects */
  FTM_TS_DETACHED = 2, /* its thread is in a blocking call */
  FTM_TS_HELD = 3,     /* detached, and another thread is merging its queue */
};

typedef struct ftm__bag_s {
  ck_epoch_entry_t entry;
  uint32_t n;
  void *items[FTM_BAG_N];
} ftm__bag;

/* A queued object (a node, since the header has no spare link). */
typedef struct ftm__brc_node_s {
  ck_stack_entry_t link;
  ftm_object *obj;
} ftm__brc_node;

/* ---- cycle collector (gc.c; docs/gc.md) ---- */
/* Objects of FTM_TYPE_GC types carry this 16-byte head before the object
 * (CPython's PyGC_Head is 16 bytes too): the cell of a candidate list that
 * names the object, and the collector's scratch count. */
typedef struct ftm__gc_head_s {
  _Atomic(ftm_field *) cell; /* NULL while untracked */
  _Atomic int64_t refs;      /* collector only: gc_refs of trial deletion */
} ftm__gc_head;
#define FTM_GC_HEAD sizeof(ftm__gc_head)
_Static_assert(sizeof(ftm__gc_head) == 16, "GC head keeps objects 16-byte aligned");

/* ob_gc_bits */
#define FTM_GCB_TRACKED 0x01 /* named by a cell of a candidate list */
#define FTM_GCB_DEAD 0x02    /* its death has started: the collector skips it */
#define FTM_GCB_CAND 0x04    /* a candidate of the running collection */
#define FTM_GCB_SHADED 0x08  /* a barrier saw a new reference to it */
#define FTM_GCB_MARKED 0x10  /* reachable (running collection) */
#define FTM_GCB_UNREACH 0x20 /* found unreachable: weakref gets refuse it */
#define FTM_GCB_FREED_LATE 0x40 /* debug: freed while a collection ran (a stale visit is legal) */

/* Candidate lists are chunks of cells; chunks are type-stable (recycled
 * as chunks, never freed) so a late CAS on a stale cell is harmless. */
#define FTM_GC_CHUNK_N 1022
typedef struct ftm__gc_chunk_s {
  struct ftm__gc_chunk_s *next;
  uint32_t n; /* cells used */
  uint32_t pad;
  ftm_field cells[FTM_GC_CHUNK_N];
} ftm__gc_chunk;

typedef struct ftm__gc_list_s {
  ftm__gc_chunk *head, *tail; /* head: the chunk appended to */
  size_t chunks;
  size_t scanned; /* young lists: chunks at the last look for holes */
} ftm__gc_list;

typedef struct ftm__freelist_s {
  ftm_object *head; /* linked through ob_type */
  uint32_t n;
} ftm__freelist;

typedef struct ftm__tstate_s {
  /* -- read by other threads -- */
  _Atomic uint32_t xtid;     /* the owning thread's tid; 0 while free or exiting */
  _Atomic uint32_t xstate;   /* FTM_TS_* */
  _Atomic uint32_t xqueued;  /* objects on `queue` (approximate) */
  _Atomic uint64_t xflush_ack; /* last flush request this thread answered */
  ck_stack_t queue;          /* ftm__brc_node, pushed by any thread */
  _Atomic(struct ftm__tstate_s *) xholder; /* while HELD: the holder's tstate */
  _Atomic uint32_t xstack_next; /* link on the free-slot stack */
  uint32_t slot;
  uint16_t gen;
  /* -- owner only -- */
  uint64_t flush_seen;
  ck_epoch_record_t epoch;
  ftm__bag *bag;             /* open bag, or NULL */
  uint32_t bags_sealed;      /* sealed, not yet known freed */
  int64_t *dcounts;          /* per deferred slot: this thread's count */
  uint32_t dcap;
  bool dany;                 /* some dcounts entry may be non-zero */
  uint32_t dealloc_depth;
  ftm_object **trash;        /* deallocations postponed (trashcan), past trash_first */
  size_t ntrash, trash_cap;  /* ntrash counts trash_first's too; trash_cap is trash's */
  ftm_object *trash_first[FTM_TRASH_FIRST]; /* the first ones: need no memory */
#if FTM_CHECK_OBJECTS
  ftm_object **quarantine;
  uint32_t qpos;
#endif
  ftm__freelist freelists[FTM_MAX_FREELIST_TYPES];
  /* -- cycle collector (gc.c) -- */
  ftm__gc_list gc_young;     /* owner only until handed off at a safepoint */
  int64_t gc_count;          /* tracked allocations - deallocations, not yet flushed */
  ftm__gc_list gc_greys;     /* objects this thread's barriers shaded (chunks) */
  ftm_object **gc_grey;      /* unused (NULL): kept for tstate.c's exit path */
  size_t gc_ngrey, gc_grey_cap; /* gc_ngrey: cells in gc_greys */
  uint64_t gc_seen;          /* last collector handshake answered */
  _Atomic uint64_t xgc_ack;
  uint32_t gc_busy;          /* inside a collection (its finalizers, callbacks) */
  /* statistics: written by the owner only */
  ftm_counter_t created, freed, freelist_hits, queued, merged, merged_for_others,
      deferred_frees, deferred_queued;
  /* census (census.c): objects and bytes created minus freed by this
   * thread, per type row; written by the owner only, summed by anyone
   * (wrapping: a thread may free more of a type than it made) */
  ftm_counter_t census_n[FTM_CENSUS_TYPES], census_b[FTM_CENSUS_TYPES];
  /* -- read by other threads; keep last: the pages of xspare are touched
   * only out of memory, so they cost address space, not memory -- */
  _Atomic uint32_t xnspare;  /* objects in xspare (approximate) */
  /* more queue entries, for a queuer that cannot allocate a node (out of
   * memory): filled by CAS from NULL, emptied by the merges of `queue` */
  _Atomic(ftm_object *) xspare[FTM_BRC_SPARE];
} ftm__tstate;

ftm_internal extern __thread ftm__tstate *ftm__ts __attribute__((tls_model("initial-exec")));
ftm_internal extern ftm__tstate *_Atomic ftm__tstates[FTM_MAX_TSTATES];
ftm_internal extern _Atomic uint32_t ftm__tstate_count; /* slots ever used */
ftm_internal extern ck_epoch_t ftm__epoch;
ftm_internal extern _Atomic uint64_t ftm__flush_seq;
ftm_internal extern _Atomic(ftm_object *) ftm__deferred_objs[65536];

/* ---- thread states (tstate.c) ---- */
/* The calling thread's tstate, registered on first use.  _get is for
 * callers that have no error to return: out of memory it takes a reserved
 * page, and aborts only if that is in use too.  _try_get returns NULL +
 * ENOMEM instead (and leaves the reserve to the others). */
ftm_internal ftm__tstate *ftm__tstate_register(void);
ftm_internal ftm__tstate *ftm__tstate_try_register(void);
static inline ftm__tstate *ftm__tstate_get(void) {
  ftm__tstate *ts = ftm__ts;
  return ftm_likely(ts != NULL) ? ts : ftm__tstate_register();
}
static inline ftm__tstate *ftm__tstate_try_get(void) {
  ftm__tstate *ts = ftm__ts;
  return ftm_likely(ts != NULL) ? ts : ftm__tstate_try_register();
}
ftm_internal void ftm__tstate_thread_done(void *ts);
ftm_internal void ftm__safepoint_slow(ftm__tstate *ts);
static inline void ftm__safepoint(ftm__tstate *ts) {
  /* relaxed: hints; the slow path re-reads with acquire */
  if (ftm_unlikely(ftm_atomic_load_relaxed(&ftm__flush_seq) != ts->flush_seen ||
                   ftm_atomic_load_relaxed(&ts->xqueued) != 0))
    ftm__safepoint_slow(ts);
}
ftm_internal void ftm__tstate_postfork_child(void);
ftm_internal uint64_t ftm__flush_request(void);
ftm_internal uint64_t ftm__flush_acked(void);
ftm_internal void ftm__deferred_complete(void);
ftm_internal void ftm__merge_for(ftm__tstate *ts);

/* ---- reference counts (refcount.c) ---- */
ftm_internal void ftm__merge_queue(ftm__tstate *ts, bool for_other);
ftm_internal ssize_t ftm__merge(ftm_object *o, ssize_t extra);
ftm_internal void ftm__brc_queue(ftm_object *o);
/* How a try-incref went: failed, counted on ob_ref_shared, or otherwise
 * (owner's local count, immortal, deferred). */
enum { FTM_TRY_FAIL = 0, FTM_TRY_OTHER = 1, FTM_TRY_SHARED = 2 };
ftm_internal int ftm__try_incref(ftm_object *o);
ftm_internal ftm_noreturn void ftm__object_fatal(const char *what, const ftm_object *o);
ftm_internal void ftm__deferred_flush(ftm__tstate *ts);
ftm_internal int ftm__set_local_sentinel(ftm_object *o, uint32_t sentinel, ssize_t extra);
/* The deferred pin: so many references that the per-thread counts not yet
 * flushed (each backed by a real reference) can never take the shared
 * count to zero while a clear is pending. */
#define FTM_DEFERRED_PIN ((ssize_t)1 << 26)
ftm_internal bool ftm__dcounts_grow(ftm__tstate *ts, uint16_t idx);

/* ---- objects (object.c) ---- */
ftm_internal void ftm__dealloc(ftm_object *o);
ftm_internal void ftm__object_free_memory(ftm_object *o);
ftm_internal void ftm__freelists_clear(ftm__tstate *ts);
ftm_internal void ftm__quarantine_flush(ftm__tstate *ts);
ftm_internal void ftm__trash_drain(ftm__tstate *ts);

/* ---- cycle collector (gc.c) ---- */
static inline ftm__gc_head *ftm__gc_head_of(const ftm_object *o) {
  return (ftm__gc_head *)((char *)o - FTM_GC_HEAD);
}
/* the block an object lives in */
static inline void *ftm__obj_block(const ftm_object *o) {
  return (o->ob_type->flags & FTM_TYPE_GC) ? (char *)o - FTM_GC_HEAD : (char *)o;
}
ftm_internal bool ftm__gc_track_new(ftm__tstate *ts, ftm_object *o);
/* Types that passed ftm_type_ready (debug checks of traverse). */
ftm_internal bool ftm__type_known(const ftm_type *t);
ftm_internal void ftm__gc_untrack_dying(ftm__tstate *ts, ftm_object *o);
ftm_internal void ftm__gc_count_flush(ftm__tstate *ts);
ftm_internal void ftm__gc_answer(ftm__tstate *ts, uint64_t seq);
ftm_internal void ftm__gc_park_wait(ftm__tstate *ts, uint64_t seq);
ftm_internal void ftm__gc_thread_leave(ftm__tstate *ts);
ftm_internal extern _Atomic uint64_t ftm__gc_hs_seq;
ftm_internal extern _Atomic int ftm__gc_defer; /* object memory goes through epoch bags */
ftm_internal extern bool ftm__freelist_is_gc[FTM_MAX_FREELIST_TYPES];
/* The type registered n-th (ftm_type_ready), NULL past the end. */
ftm_internal const ftm_type *ftm__type_at(uint32_t n);
ftm_internal uint32_t ftm__type_count(void);
/* Bytes of o's block as ftm_new sized it (GC head included). */
static inline size_t ftm__obj_bytes(const ftm_object *o) {
  const ftm_type *t = o->ob_type;
  size_t n = t->basic_size + ((t->flags & FTM_TYPE_GC) ? FTM_GC_HEAD : 0);
  if (t->item_size) n += t->item_size * ((const ftm_varobject *)o)->ob_size;
  return n;
}
static inline void ftm__census_add(ftm__tstate *ts, const ftm_type *t, int64_t n, int64_t bytes) {
  uint32_t r = t->ftm_type_index < FTM_CENSUS_TYPES ? t->ftm_type_index : FTM_CENSUS_TYPES - 1;
  ftm_counter_add(&ts->census_n[r], (uint64_t)n);
  ftm_counter_add(&ts->census_b[r], (uint64_t)bytes);
}
#define FTM_GC_COUNT_BATCH 64

/* ---- epochs (epoch.c) ---- */
ftm_internal void ftm__defer_free(ftm__tstate *ts, void *block);
ftm_internal void ftm__epoch_poll(ftm__tstate *ts);
ftm_internal void ftm__epoch_barrier(ftm__tstate *ts);
ftm_internal void ftm__epoch_synchronize(ftm__tstate *ts);

/* ---- weak references (weakref.c) ---- */
ftm_internal void ftm__weakrefs_clear(ftm_object *o);
ftm_internal void ftm__weakref_prefork(void);
ftm_internal void ftm__weakref_postfork(void);
ftm_internal void ftm__intern_prefork(void);
ftm_internal void ftm__intern_postfork(void);
ftm_internal void ftm__gc_prefork(void);
ftm_internal void ftm__gc_postfork(bool child);
ftm_internal void ftm__tstate_postfork_merge(ftm__tstate *ts);
ftm_internal extern _Atomic int ftm__fork_merge_pending;

/* Mark o as possibly read optimistically (its memory is then freed after
 * a grace period).  One relaxed load when already marked. */
static inline void ftm__mark_shared(ftm_object *o) {
  if (!(ftm_atomic_load_relaxed(&o->ob_flags) & FTM_OBF_SHARED))
    ftm_atomic_fetch_or_relaxed(&o->ob_flags, FTM_OBF_SHARED);
}

#endif
