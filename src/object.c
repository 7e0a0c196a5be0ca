/* object.c — types, object creation, per-thread free lists, and an
 * object's death (weakrefs, PEP 442 finalizer, clear, dealloc, memory).
 *
 * Memory: an object is one block from the calling thread's heap.  It goes
 * back (a) to the thread's free list of its type, (b) to the heap, or (c)
 * if it may be read optimistically (FTM_OBF_SHARED: stored in a field,
 * try-incref enabled, weakly referenced), into an epoch bag, freed after a
 * grace period (epoch.c).  A stale reader may then still load the header
 * and even add and remove a transient count (field.c), so the header of a
 * dead object in a bag is left as it was at death: MERGED|0 (which every
 * try-incref refuses) if it died through ob_ref_shared, else 0 with its
 * owner's tid and ob_ref_local 0.
 *
 * Deep structures: a death that happens while FTM_TRASH_DEPTH deaths are
 * already on the stack is postponed to a per-thread list and done when the
 * outermost finishes (CPython's trashcan), so freeing a million-long chain
 * does not overflow the stack.  The list's first entries live in the
 * tstate, so a chain needs no memory to be freed; past them, out of
 * memory, a death runs at once instead (deeper on the stack).
 */
#include <string.h>

#include "object_internal.h"
#include "trace_internal.h"

static _Atomic uint32_t ftm__freelist_types;
static void ftm__type_register(ftm_type *t);
/* written once per index before the type is published (release below) */
bool ftm__freelist_is_gc[FTM_MAX_FREELIST_TYPES];

int ftm_type_ready(ftm_type *t) {
  for (;;) {
    uint32_t r = ftm_atomic_load_acquire(&t->ftm_ready);
    if (r == 1) return 0;
    if (r == 2) {
      errno = EINVAL;
      return -1;
    }
    if (r == 0 && ftm_atomic_cas_strong_acq_rel(&t->ftm_ready, &r, 3)) break;
    ftm_cpu_relax(); /* 3: another thread is checking it */
  }
  const char *why = NULL;
  if (t->name == NULL) why = "it has no name";
  else if (t->basic_size < sizeof(ftm_object)) why = "basic_size is smaller than the ftm_object header";
  else if (t->basic_size > ((size_t)1 << 40)) why = "basic_size is absurd";
  else if (t->item_size != 0 && t->basic_size < sizeof(ftm_varobject))
    why = "item_size is set but basic_size does not hold ftm_varobject";
  else if ((t->flags & FTM_TYPE_GC) && (t->traverse == NULL || t->clear == NULL))
    why = "FTM_TYPE_GC needs traverse and clear";
  else if (t->traverse != NULL && t->clear == NULL)
    why = "it has traverse but no clear (its references would never be dropped)";
  else if ((t->flags & FTM_TYPE_FREELIST) && t->item_size != 0)
    why = "FTM_TYPE_FREELIST needs a fixed-size type";
  else if (t->flags & ~(unsigned)(FTM_TYPE_GC | FTM_TYPE_FREELIST)) why = "unknown flags";
  if (why != NULL) {
    ftm__warning("type %s refused: %s\n", t->name ? t->name : "(unnamed)", why);
    ftm_atomic_store_release(&t->ftm_ready, 2);
    errno = EINVAL;
    return -1;
  }
  t->ftm_freelist_index = UINT32_MAX;
  if (t->freelist_max == 0) t->freelist_max = FTM_FREELIST_DEFAULT; /* as documented: 0 means 80 */
  if (t->flags & FTM_TYPE_FREELIST) {
    uint32_t i = ftm_atomic_fetch_add_relaxed(&ftm__freelist_types, 1);
    if (i < FTM_MAX_FREELIST_TYPES) {
      t->ftm_freelist_index = i;
      ftm__freelist_is_gc[i] = (t->flags & FTM_TYPE_GC) != 0;
    }
  }
  ftm__type_register(t);
  /* release: pairs with the acquire above; the index is published */
  ftm_atomic_store_release(&t->ftm_ready, 1);
  return 0;
}

/* ---- the known types (debug checks) ---- */
/* Every readied type, so a debug check can tell whether a pointer's
 * ob_type names a type without dereferencing it.  Lock-free append:
 * slots are claimed with a fetch_add and published with release; past
 * the table's end the check is skipped (ftm__types_overflow). */
#define FTM_MAX_KNOWN_TYPES 4096
static const ftm_type *_Atomic ftm__types[FTM_MAX_KNOWN_TYPES];
static _Atomic uint32_t ftm__ntypes;

static void ftm__type_register(ftm_type *t) {
  uint32_t i = ftm_atomic_fetch_add_relaxed(&ftm__ntypes, 1);
  t->ftm_type_index = i; /* published with ftm_ready below */
  /* release: pairs with the acquire in ftm__type_known */
  if (i < FTM_MAX_KNOWN_TYPES) ftm_atomic_store_release(&ftm__types[i], t);
}

const ftm_type *ftm__type_at(uint32_t n) {
  return n < FTM_MAX_KNOWN_TYPES ? ftm_atomic_load_acquire(&ftm__types[n]) : NULL;
}
uint32_t ftm__type_count(void) {
  uint32_t n = ftm_atomic_load_relaxed(&ftm__ntypes);
  return n < FTM_MAX_KNOWN_TYPES ? n : FTM_MAX_KNOWN_TYPES;
}

bool ftm__type_known(const ftm_type *t) {
  uint32_t n = ftm_atomic_load_relaxed(&ftm__ntypes);
  if (n > FTM_MAX_KNOWN_TYPES) return true; /* overflow: cannot tell */
  for (uint32_t i = 0; i < n; i++)
    if (ftm_atomic_load_acquire(&ftm__types[i]) == t) return true;
  return false;
}

static inline void ftm__header_init(ftm_object *o, ftm_type *t, uint32_t tid) {
  /* the block is not visible to any other thread yet (a free-list block
   * was never SHARED; a bag's block outlived its grace period), so the
   * header is written as plain bytes: three stores instead of seven */
  _Static_assert(offsetof(ftm_object, ob_ref_local) == 4 && offsetof(ftm_object, ob_ref_shared) == 8 &&
                     offsetof(ftm_object, ob_type) == 16 && sizeof(ftm_object) == 24,
                 "the header layout the words below assume");
  _Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "header words are little-endian");
  /* words in the header's little-endian layout: tid | local << 32, then
   * shared | gc_bits, flags, deferred (all 0), then the type */
  uint64_t w0 = tid | (uint64_t)1 << 32, w1 = 0;
  if (ftm_unlikely(tid == FTM_TID_NONE)) { /* a thread tearing down its state: no owner, born merged */
    w0 = 0;
    w1 = (1 << FTM_REF_SHARED_SHIFT) | FTM_REF_MERGED;
  }
  memcpy((char *)o, &w0, 8);
  memcpy((char *)o + 8, &w1, 8);
  memcpy((char *)o + 16, &t, sizeof t);
}

/* Zero the body: blocks are multiples of 16 bytes, so whole words past
 * the object's end are still inside its block.  Small bodies by hand: a
 * memset call costs more than the stores. */
static inline void ftm__zero_body(ftm_object *o, size_t size) {
  uint64_t *w = (uint64_t *)(o + 1);
  size_t n = (size - sizeof(ftm_object) + 7) / 8;
  switch (n) {
  case 5: w[4] = 0; /* fall through */
  case 4: w[3] = 0; /* fall through */
  case 3: w[2] = 0; /* fall through */
  case 2: w[1] = 0; /* fall through */
  case 1: w[0] = 0; /* fall through */
  case 0: return;
  default: memset(w, 0, n * 8);
  }
}

static inline ftm_object *ftm__new(ftm_type *t, size_t size) {
  if (ftm_unlikely(ftm_atomic_load_acquire(&t->ftm_ready) != 1) && ftm_type_ready(t) != 0) return NULL;
  ftm__tstate *ts = ftm__tstate_try_get();
  if (ftm_unlikely(ts == NULL)) return NULL; /* ENOMEM: the thread cannot be registered */
#if FTM_CHECK_OBJECTS
  if (ftm_unlikely(ftm_atomic_load_relaxed(&ts->xstate) != FTM_TS_ATTACHED))
    ftm__fatal("ftmem: ftm_new (type %s) from a detached thread: call ftm_thread_attach first\n", t->name);
#endif
  ftm__safepoint(ts);
  ftm_object *o;
  uint32_t fi = t->ftm_freelist_index;
  if (fi < FTM_MAX_FREELIST_TYPES && (o = ts->freelists[fi].head) != NULL) {
    ts->freelists[fi].head = (ftm_object *)(uintptr_t)o->ob_type;
    ts->freelists[fi].n--;
    ftm_counter_add(&ts->freelist_hits, 1);
  } else {
    ftm__heap *heap = ftm__heap_get();
    size_t bsize = size + ((t->flags & FTM_TYPE_GC) ? FTM_GC_HEAD : 0); /* the GC head first */
    char *b;
    if (ftm_likely(bsize <= FTM_SMALL_MAX)) {
      b = ftm__malloc_small(heap, bsize);
      ftm__track_alloc(b, (bsize + 7) & ~(size_t)7, 0, 0); /* ftm__zero_body stores words */
    } else {
      b = ftm__malloc_untraced((bsize + 7) & ~(size_t)7); /* ftm_new records it */
    }
    if (ftm_unlikely(b == NULL)) return NULL;
    o = (ftm_object *)(b + (bsize - size));
  }
  ftm__header_init(o, t, ftm__tid);
  ftm__zero_body(o, size);
  ftm_counter_add(&ts->created, 1);
  ftm__census_add(ts, t, 1, (int64_t)(size + ((t->flags & FTM_TYPE_GC) ? FTM_GC_HEAD : 0)));
  if ((t->flags & FTM_TYPE_GC) && ftm_unlikely(!ftm__gc_track_new(ts, o))) {
    ftm_free(ftm__obj_block(o));
    errno = ENOMEM;
    return NULL;
  }
  return o;
}

/* Tracing: the object's block, under the caller of ftm_new. */
static inline void ftm__new_traced(ftm_object *o, size_t size, void *ra) {
  if (o == NULL) return;
  size_t gc = (o->ob_type->flags & FTM_TYPE_GC) ? FTM_GC_HEAD : 0;
  ftm__trace_alloc_hook(ftm__obj_block(o), size + gc, ra);
}

ftm_object *ftm_new(ftm_type *t) {
  ftm_object *o = ftm__new(t, t->basic_size);
  ftm__new_traced(o, t->basic_size, __builtin_return_address(0));
  return o;
}

ftm_object *ftm_new_var(ftm_type *t, size_t nitems) {
  size_t items, size;
  if (__builtin_mul_overflow(nitems, t->item_size, &items) ||
      __builtin_add_overflow(items, t->basic_size, &size) || size > PTRDIFF_MAX) {
    errno = ENOMEM;
    return NULL;
  }
  ftm_varobject *v = (ftm_varobject *)ftm__new(t, size);
  if (v != NULL) v->ob_size = nitems;
  ftm__new_traced((ftm_object *)v, size, __builtin_return_address(0));
  return (ftm_object *)v;
}

size_t ftm_sizeof(const ftm_object *o) {
  const ftm_type *t = o->ob_type;
  size_t n = t->basic_size;
  if (t->item_size) n += t->item_size * ((const ftm_varobject *)o)->ob_size;
  if (t->sizeof_extra) n += t->sizeof_extra(o);
  if (t->flags & FTM_TYPE_GC) n += FTM_GC_HEAD; /* as sys.getsizeof counts PyGC_Head */
  return n;
}

/* ---- death ------------------------------------------------------------------ */
/* Give the memory back: free list, epoch bag or heap. */
void ftm__object_free_memory(ftm_object *o) {
  ftm__tstate *ts = ftm__tstate_get();
  uint8_t flags = ftm_atomic_load_relaxed(&o->ob_flags);
  const ftm_type *t = o->ob_type;
  ftm_counter_add(&ts->freed, 1);
  ftm__census_add(ts, t, -1, -(int64_t)ftm__obj_bytes(o));
  /* dead now, whether the block goes to a free list, a grace period or
   * the heap */
  if (ftm__tracing()) ftm__trace_forget(ftm__obj_block(o));
  /* relaxed: set before the collector's start handshake, which this
   * thread answered before it could free anything the collector reads */
  if ((flags & FTM_OBF_SHARED) || ftm_atomic_load_relaxed(&ftm__gc_defer)) {
    /* stale readers may still look at the header: it stays dead-looking
     * until the grace period ends */
#if FTM_CHECK_OBJECTS
    /* a traverse that loaded it before its death may still visit it
     * (gc.c's debug check tells this from a visit of a long-dead object) */
    if (ftm_atomic_load_relaxed(&ftm__gc_defer)) ftm_atomic_fetch_or_relaxed(&o->ob_gc_bits, FTM_GCB_FREED_LATE);
    /* a stale try-incref fails on it; a late incref/decref is reported.
     * release: the collector that reads FREED (acquire) sees the bit */
    ftm_atomic_store_release(&o->ob_ref_local, FTM_REF_FREED);
#endif
    ftm__defer_free(ts, ftm__obj_block(o));
    return;
  }
#if FTM_CHECK_OBJECTS
  /* keep the header readable for a while so a late incref/decref is caught */
  ftm_atomic_store_relaxed(&o->ob_ref_local, FTM_REF_FREED);
  {
    if (ts->quarantine == NULL) ts->quarantine = ftm_calloc(FTM_QUARANTINE, sizeof(void *));
    if (ts->quarantine != NULL) {
      ftm_object *old = ts->quarantine[ts->qpos];
      ts->quarantine[ts->qpos] = o;
      ts->qpos = (ts->qpos + 1) % FTM_QUARANTINE;
      if (old != NULL) ftm_free(ftm__obj_block(old));
      return;
    }
  }
#elif !FTM_TRACK /* tracked builds free to the allocator, so the tool sees each death */
  uint32_t fi = t->ftm_freelist_index;
  if (fi < FTM_MAX_FREELIST_TYPES && ts->freelists[fi].n < t->freelist_max) {
    o->ob_type = (const ftm_type *)(uintptr_t)ts->freelists[fi].head;
    ts->freelists[fi].head = o;
    ts->freelists[fi].n++;
    return;
  }
#endif
  (void)t;
  ftm_free(ftm__obj_block(o));
}

#if FTM_CHECK_OBJECTS
/* Free what the quarantine holds, and the quarantine itself (it comes
 * back on the next death): after a flush the thread holds no block. */
void ftm__quarantine_flush(ftm__tstate *ts) {
  ftm_object **q = ts->quarantine;
  if (q == NULL) return;
  ts->quarantine = NULL;
  ts->qpos = 0;
  for (uint32_t i = 0; i < FTM_QUARANTINE; i++)
    if (q[i] != NULL) ftm_free(ftm__obj_block(q[i]));
  ftm_free(q);
}
#endif

void ftm__freelists_clear(ftm__tstate *ts) {
  for (unsigned i = 0; i < FTM_MAX_FREELIST_TYPES; i++) {
    ftm_object *o = ts->freelists[i].head;
    while (o != NULL) {
      ftm_object *next = (ftm_object *)(uintptr_t)o->ob_type;
      ftm_free(ftm__freelist_is_gc[i] ? (char *)o - FTM_GC_HEAD : (char *)o);
      o = next;
    }
    ts->freelists[i].head = NULL;
    ts->freelists[i].n = 0;
  }
}

/* PEP 442 from a refcount death: resurrect o with one reference held
 * here, run finalize once, and drop that reference again — which frees o
 * (re-entering ftm__dealloc, now FINALIZED) unless the finalizer stored
 * new references to it. */
static void ftm__finalize(ftm_object *o) {
  ftm_atomic_fetch_or_relaxed(&o->ob_flags, FTM_OBF_FINALIZED);
  int32_t shared = ftm_atomic_load_relaxed(&o->ob_ref_shared);
  if ((shared & 3) == FTM_REF_MERGED) {
    /* died through ob_ref_shared: count it there again.  MERGED|0 refuses
     * every try-incref, so nothing races with this CAS */
    while (!ftm_atomic_cas_weak_acq_rel(&o->ob_ref_shared, &shared, shared + (1 << FTM_REF_SHARED_SHIFT))) {
    }
  } else {
    /* died by its owner's (our) decrement: ob_tid is still ours */
    ftm_atomic_store_relaxed(&o->ob_ref_local, 1);
  }
  /* a running collection must not take it for garbage while its
   * finalizer holds it (the count above was not an incref) */
  if (ftm_unlikely(ftm_atomic_load_relaxed(&ftm__gc_barrier))) ftm__gc_shade(o);
  o->ob_type->finalize(o);
  ftm_decref(o);
}

static void ftm__dealloc_now(ftm__tstate *ts, ftm_object *o) {
  const ftm_type *t = o->ob_type;
  if (ts != NULL) ts->dealloc_depth++;
  /* as CPython's subtype_dealloc: the finalizer first (it may resurrect,
   * and weak references still work inside it), then weakrefs are cleared */
  if (t->finalize != NULL && !(ftm_atomic_load_relaxed(&o->ob_flags) & FTM_OBF_FINALIZED)) {
    ftm__finalize(o); /* dies (again) or lives on in there */
    if (ts != NULL) ts->dealloc_depth--;
    return;
  }
  if (t->flags & FTM_TYPE_GC) ftm__gc_untrack_dying(ts, o); /* past the point of no return */
  if (ftm_atomic_load_relaxed(&o->ob_flags) & FTM_OBF_WEAKREFS) ftm__weakrefs_clear(o);
  /* ob_ref_shared is left alone: a stale field_load may be adding and
   * removing a transient count on it right now (field.c) */
  if (t->clear != NULL) t->clear(o);
  if (t->dealloc != NULL) t->dealloc(o);
  ftm__object_free_memory(o);
  if (ts != NULL) ts->dealloc_depth--;
}

/* Postponed death i: the first FTM_TRASH_FIRST are kept in the tstate,
 * so postponing needs no memory until that many wait at once — a chain,
 * which the outermost death drains one postponed link at a time, never
 * needs more than one; the rest in an array that grows. */
static inline ftm_object **ftm__trash_at(ftm__tstate *ts, size_t i) {
  return i < FTM_TRASH_FIRST ? &ts->trash_first[i] : &ts->trash[i - FTM_TRASH_FIRST];
}

void ftm__dealloc(ftm_object *o) {
  ftm__tstate *ts = ftm__tstate_get();
  const ftm_type *t = o->ob_type;
  /* the common death: no weakrefs, never shared or finalized, no
   * finalizer, not nested deep — straight to clear, dealloc and the free
   * list, without the general path's checks */
  if (ftm_likely(ftm_atomic_load_relaxed(&o->ob_flags) == 0 && t->finalize == NULL &&
                 ts->dealloc_depth < FTM_TRASH_DEPTH && !FTM_CHECK_OBJECTS &&
                 !ftm_atomic_load_relaxed(&ftm__gc_defer))) {
    if (t->flags & FTM_TYPE_GC) ftm__gc_untrack_dying(ts, o);
    size_t bytes = ftm__obj_bytes(o); /* before clear/dealloc touch the object */
    bool callbacks = t->clear != NULL || t->dealloc != NULL;
    if (callbacks) {
      ts->dealloc_depth++;
      if (t->clear != NULL) t->clear(o);
      if (t->dealloc != NULL) t->dealloc(o);
      ts->dealloc_depth--;
    }
    ftm_counter_add(&ts->freed, 1);
    ftm__census_add(ts, t, -1, -(int64_t)bytes);
    if (ftm__tracing()) ftm__trace_forget(ftm__obj_block(o));
    uint32_t fi = FTM_TRACK ? UINT32_MAX : t->ftm_freelist_index; /* tracked: the tool sees each death */
    ftm__freelist *fl = fi < FTM_MAX_FREELIST_TYPES ? &ts->freelists[fi] : NULL;
    if (fl != NULL && fl->n < t->freelist_max) { /* freelist_max set by ftm_type_ready */
      o->ob_type = (const ftm_type *)(uintptr_t)fl->head;
      fl->head = o;
      fl->n++;
    } else {
      ftm_free(ftm__obj_block(o));
    }
    if (callbacks && ftm_unlikely(ts->dealloc_depth == 0 && ts->ntrash != 0)) ftm__trash_drain(ts);
    return;
  }
  if (ts->dealloc_depth >= FTM_TRASH_DEPTH) {
    if (ts->ntrash == FTM_TRASH_FIRST + ts->trash_cap) {
      size_t cap = ts->trash_cap ? ts->trash_cap * 2 : 256;
      ftm_object **n = ftm_realloc(ts->trash, cap * sizeof *n);
      if (n != NULL) {
        ts->trash = n;
        ts->trash_cap = cap;
      }
    }
    if (ftm_likely(ts->ntrash < FTM_TRASH_FIRST + ts->trash_cap)) {
      *ftm__trash_at(ts, ts->ntrash++) = o;
      return;
    }
    /* no memory to postpone it: it dies now, one level deeper — the stack
     * grows with the structure from here, as it would without a trashcan */
  }
  ftm__dealloc_now(ts, o);
  if (ts->dealloc_depth == 0 && ts->ntrash != 0) ftm__trash_drain(ts);
}

void ftm__trash_drain(ftm__tstate *ts) {
  while (ts->ntrash != 0) ftm__dealloc_now(ts, *ftm__trash_at(ts, --ts->ntrash));
}

void ftm_object_stats_get(ftm_object_stats_t *out) {
  memset(out, 0, sizeof *out);
  uint32_t n = ftm_atomic_load_acquire(&ftm__tstate_count);
  for (uint32_t i = 0; i < n && i < FTM_MAX_TSTATES; i++) {
    ftm__tstate *ts = ftm_atomic_load_acquire(&ftm__tstates[i]);
    if (ts == NULL) continue;
    out->created += ftm_atomic_load_relaxed(&ts->created);
    out->freed += ftm_atomic_load_relaxed(&ts->freed);
    out->freelist_hits += ftm_atomic_load_relaxed(&ts->freelist_hits);
    out->queued += ftm_atomic_load_relaxed(&ts->queued);
    out->merged += ftm_atomic_load_relaxed(&ts->merged) + ftm_atomic_load_relaxed(&ts->merged_for_others);
    out->merged_for_others += ftm_atomic_load_relaxed(&ts->merged_for_others);
    out->deferred_frees += ftm_atomic_load_relaxed(&ts->deferred_frees);
    uint64_t q = ftm_atomic_load_relaxed(&ts->deferred_queued);
    uint64_t f = ftm_atomic_load_relaxed(&ts->deferred_frees);
    out->deferred_pending += q > f ? q - f : 0;
    if (ftm_atomic_load_relaxed(&ts->xstate) != FTM_TS_FREE) out->threads++;
  }
}
