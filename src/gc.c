/* gc.c — the concurrent generational cycle collector (trial deletion with
 * barriers and handshakes).  The algorithm, its phases and why it is sound
 * are in docs/gc.md; this comment is the map.
 *
 * Candidates.  Every tracked object is named by one cell of a candidate
 * list; its GC head (16 bytes before the object) points back at the cell.
 * New objects go into their thread's young list (owner only, no atomics
 * but relaxed stores).  At a collection's start handshake each thread
 * hands its young list to the collector; survivors are compacted into the
 * generation lists, which only the collector (under ftm__gc_lock) touches.
 * A dying object takes its cell back: its head's cell pointer is
 * exchanged for NULL and the cell CAS'd from the object to NULL — the
 * collector moves cells with a CAS on the same head pointer, so one of
 * the two sees the other.  Chunks of cells are never freed, only
 * recycled, so a CAS on a stale cell lands on memory that is still a cell
 * and fails (it holds another object, or NULL).
 *
 * A collection:
 *   1. defer on (object memory freed from now on goes through epoch bags),
 *      barrier on, the collector enters an epoch section; handshake START
 *      (each attached thread hands over its young list and drops its grey
 *      buffer at its next safepoint; detached threads did so at detach).
 *   2. snapshot: each candidate gets CAND and gc_refs = its refcount.
 *   3. subtract: traverse each candidate, gc_refs-- for candidates visited.
 *   4. mark from candidates with gc_refs > 0 (and shaded ones); rounds of
 *      handshake GREY bring in the objects barriers shaded meanwhile.
 *   5. the unmarked candidates are listed (concurrently), then handshake
 *      PARK stops the mutators for the final step only: drain the last
 *      shaded objects, and hold (incref) every listed object still
 *      unmarked and not dying, flagging it UNREACH (weakref gets refuse
 *      it).  Barrier off, mutators released.
 *   6. survivors are compacted into the next generation; defer off.
 *   7. weakrefs to garbage cleared (callbacks run unless the weakref is
 *      garbage itself), finalizers run once; if any ran, a parked recheck
 *      keeps what they resurrected; the rest is cleared (`clear`) and the
 *      holds released, so reference counting frees it.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "object_internal.h"

_Atomic int ftm__gc_barrier;          /* shading on (public: ftm_incref reads it) */
_Atomic int ftm__gc_defer;            /* object memory goes through epoch bags */
_Atomic uint64_t ftm__gc_hs_seq;      /* the newest collector handshake */
static _Atomic uint64_t ftm__gc_park_seq; /* answerers of this handshake wait */
static _Atomic int ftm__gc_hs_kind;   /* of the newest handshake */
static _Atomic(ftm__tstate *) ftm__gc_collector; /* never parks */

enum { FTM_HS_START = 1, FTM_HS_GREY = 2, FTM_HS_PARK = 3 };

/* Serialises collections, introspection and the generation lists. */
static pthread_mutex_t ftm__gc_lock = PTHREAD_MUTEX_INITIALIZER;
/* Guards what threads hand over: young lists, grey buffers; and the chunk pool. */
static pthread_mutex_t ftm__gc_hand_lock = PTHREAD_MUTEX_INITIALIZER;
static ftm__gc_list ftm__gc_pending;  /* handed-over young lists (hand lock) */
static ftm__gc_list ftm__gc_greys;    /* handed-over grey objects (hand lock) */
static _Atomic int ftm__gc_grey_overflow; /* a shaded object could not be listed */
static ftm__gc_chunk *ftm__gc_free_chunks; /* hand lock */
static size_t ftm__gc_pending_compacted;   /* chunks live after the last compaction; hand lock */

/* generation lists: 1, 2, and 3 = permanent (frozen); gc lock */
static ftm__gc_list ftm__gc_gen[4];
static size_t ftm__gc_gen_count[4]; /* live cells after the last compaction */

/* configuration and counts (gc.h) */
static _Atomic int ftm__gc_enabled = 1;
static _Atomic unsigned ftm__gc_threshold[3] = {2000, 10, 10};
static _Atomic int64_t ftm__gc_count0;           /* tracked allocs - deallocs since gen 0 ran */
static _Atomic unsigned long ftm__gc_count12[2]; /* collections of 0 since 1, of 1 since 2 */
static size_t ftm__gc_long_lived_total, ftm__gc_long_lived_pending; /* gc lock */
static _Atomic unsigned ftm__gc_debug;
static _Atomic int64_t ftm__gc_timeout_ms = -1, ftm__gc_auto_timeout_ms = -1;

static struct {
  _Atomic uint64_t collections, collected, uncollectable, candidates, abandoned;
  _Atomic uint64_t duration_ns, duration_max_ns, pause_ns, pause_max_ns;
} ftm__gc_stats[3];

#define FTM_GC_MAX_CALLBACKS 32
static struct {
  ftm_gc_callback cb;
  void *arg;
} ftm__gc_callbacks[FTM_GC_MAX_CALLBACKS];
static unsigned ftm__gc_ncallbacks;
static pthread_mutex_t ftm__gc_cb_lock = PTHREAD_MUTEX_INITIALIZER;

static ftm_object **ftm__gc_saved; /* FTM_GC_DEBUG_SAVEALL garbage; gc lock */
static size_t ftm__gc_nsaved, ftm__gc_saved_cap;

/* background collector threads */
static pthread_mutex_t ftm__gc_bg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ftm__gc_bg_cond = PTHREAD_COND_INITIALIZER;
static _Atomic int ftm__gc_bg_state; /* 0 not started, 1 running, -1 none wanted */
static int ftm__gc_bg_due;            /* bg lock */

#define FTM_CELL_LOCKED(o) ((ftm_object *)((uintptr_t)(o) | 1))

static int64_t ftm__now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int64_t ftm__env_ms(const char *name, int64_t def) {
  const char *s = getenv(name);
  if (s == NULL || *s == '\0') return def;
  char *end;
  long long v = strtoll(s, &end, 10);
  return (*end == '\0' && v >= 0) ? v : def;
}

static int64_t ftm__gc_timeout(bool automatic) {
  _Atomic int64_t *p = automatic ? &ftm__gc_auto_timeout_ms : &ftm__gc_timeout_ms;
  int64_t v = ftm_atomic_load_relaxed(p);
  if (v < 0) {
    v = ftm__env_ms("FTMEM_GC_HANDSHAKE_MS", automatic ? 20 : 1000);
    ftm_atomic_store_relaxed(p, v);
  }
  return v;
}

static void ftm__stat_max(_Atomic uint64_t *m, uint64_t v) {
  uint64_t old = ftm_atomic_load_relaxed(m);
  while (old < v && !atomic_compare_exchange_weak_explicit(m, &old, v, memory_order_relaxed,
                                                           memory_order_relaxed)) {
  }
}

/* ---- object vectors (collector scratch) ---------------------------------- */
typedef struct {
  ftm_object **v;
  size_t n, cap;
} ftm__objvec;

static ftm_noinline bool ftm__vec_grow(ftm__objvec *s) {
  size_t cap = s->cap ? s->cap * 2 : 1024;
  ftm_object **v = ftm_realloc(s->v, cap * sizeof *v);
  if (v == NULL) return false;
  s->v = v;
  s->cap = cap;
  return true;
}

static inline bool ftm__vec_push(ftm__objvec *s, ftm_object *o) {
  if (ftm_unlikely(s->n == s->cap) && !ftm__vec_grow(s)) return false;
  s->v[s->n++] = o;
  return true;
}

static void ftm__vec_free(ftm__objvec *s) {
  ftm_free(s->v);
  s->v = NULL;
  s->n = s->cap = 0;
}

/* ---- chunks ---------------------------------------------------------------- */
/* Chunks come from the OS in slabs, like thread states: they are the
 * collector's metadata, never freed (type-stable, see the file comment),
 * and not blocks of the heap its users' leak checks count. */
#define FTM_GC_SLAB_CHUNKS 32
static ftm__gc_chunk *ftm__chunk_get(void) {
  pthread_mutex_lock(&ftm__gc_hand_lock);
  ftm__gc_chunk *c = ftm__gc_free_chunks;
  if (c == NULL) {
    ftm__gc_chunk *slab = ftm__os_map(FTM_GC_SLAB_CHUNKS * sizeof *slab); /* zeroed: cells NULL */
    if (slab == NULL) {
      pthread_mutex_unlock(&ftm__gc_hand_lock);
      return NULL;
    }
    for (unsigned i = 1; i < FTM_GC_SLAB_CHUNKS; i++) {
      slab[i].next = ftm__gc_free_chunks;
      ftm__gc_free_chunks = &slab[i];
    }
    c = &slab[0];
  } else {
    ftm__gc_free_chunks = c->next;
  }
  pthread_mutex_unlock(&ftm__gc_hand_lock);
  c->next = NULL;
  c->n = 0;
  return c;
}

/* Recycle a chunk whose cells are all NULL or stale (hand lock held). */
static void ftm__chunk_put_locked(ftm__gc_chunk *c) {
  for (unsigned i = 0; i < c->n; i++) ftm_atomic_store_relaxed(&c->cells[i], NULL);
  c->n = 0;
  c->next = ftm__gc_free_chunks;
  ftm__gc_free_chunks = c;
}

static void ftm__chunk_put(ftm__gc_chunk *c, bool locked) {
  if (!locked) pthread_mutex_lock(&ftm__gc_hand_lock);
  ftm__chunk_put_locked(c);
  if (!locked) pthread_mutex_unlock(&ftm__gc_hand_lock);
}

/* Append list b to list a (b emptied). */
static void ftm__list_splice(ftm__gc_list *a, ftm__gc_list *b) {
  if (b->head == NULL) return;
  if (a->head == NULL) {
    *a = *b;
  } else {
    /* b's chunks go after a's: a's head stays the chunk appended to */
    a->tail->next = b->head;
    a->tail = b->tail;
    a->chunks += b->chunks;
  }
  b->head = b->tail = NULL;
  b->chunks = 0;
  b->scanned = 0;
}

/* Put chunk c first (the chunk appended to). */
static void ftm__list_push_chunk(ftm__gc_list *l, ftm__gc_chunk *c) {
  c->next = l->head;
  l->head = c;
  if (l->tail == NULL) l->tail = c;
  l->chunks++;
}

/* Reverse the order of l's chunks. */
static void ftm__list_reverse(ftm__gc_list *l) {
  ftm__gc_chunk *first = NULL, *c = l->head;
  while (c != NULL) {
    ftm__gc_chunk *next = c->next;
    c->next = first;
    first = c;
    c = next;
  }
  l->tail = l->head;
  l->head = first;
}

/* Cells of l that name an object. */
static size_t ftm__list_live(const ftm__gc_list *l) {
  size_t n = 0;
  for (ftm__gc_chunk *c = l->head; c != NULL; c = c->next)
    for (uint32_t i = 0; i < c->n; i++) n += ftm_atomic_load_relaxed(&c->cells[i]) != NULL;
  return n;
}

/* Move the object in cell `from` to cell `to` (to is empty and ours).
 * Returns false if the object died meanwhile.
 *
 * Outside a collection a dying object's memory is freed at once, so the
 * mover must not touch the head of an object that may already be gone:
 * it first locks the cell (object pointer | 1).  A dying thread that
 * finds its cell locked waits for the unlock (a few instructions) before
 * it frees the object (ftm__untrack). */
static bool ftm__cell_move(ftm_field *from, ftm_field *to, ftm_object *o) {
  ftm_object *expect = o;
  /* acquire: nothing to acquire yet; the lock only excludes the free */
  if (!atomic_compare_exchange_strong_explicit(from, &expect, FTM_CELL_LOCKED(o), memory_order_acquire,
                                               memory_order_relaxed))
    return false; /* it died: the cell was emptied */
  ftm_atomic_store_relaxed(to, o);
  ftm_field *ef = from;
  ftm__gc_head *h = ftm__gc_head_of(o);
  /* acq_rel: pairs with the dying thread's exchange of the head */
  bool moved = ftm_atomic_cas_strong_acq_rel(&h->cell, &ef, to);
  if (!moved) ftm_atomic_store_relaxed(to, NULL); /* it is dying: its head already reads NULL */
  /* release: unlock; our head accesses happen before the dying thread's
   * free (pairs with its acq_rel CAS on the cell) */
  ftm_atomic_store_release(from, NULL);
  return moved;
}

/* Compact list l in place: live objects (cell non-NULL, not dying) move
 * down to fill holes; emptied chunks are recycled.  `keep` decides, for
 * each live object, whether it stays (else its cell is dropped — only
 * for objects that are being untracked by the caller).  Returns the live
 * count.  Owner of the list only. */
static size_t ftm__list_compact(ftm__gc_list *l, bool locked) {
  ftm__gc_chunk *wc = l->head, *rc = l->head;
  uint32_t wi = 0;
  size_t live = 0;
  /* chunks in list order; cells written trail cells read */
  while (rc != NULL) {
    for (uint32_t i = 0; i < rc->n; i++) {
      ftm_field *cell = &rc->cells[i];
      ftm_object *o = ftm_atomic_load_relaxed(cell);
      if (o == NULL) continue;
      if (wi == FTM_GC_CHUNK_N) {
        wc->n = wi;
        wc = wc->next;
        wi = 0;
      }
      ftm_field *to = &wc->cells[wi];
      if (to == cell || ftm__cell_move(cell, to, o)) {
        wi++;
        live++;
      }
    }
    rc = rc->next;
  }
  if (wc == NULL) return 0;
  wc->n = wi;
  /* recycle the chunks after wc */
  ftm__gc_chunk *c = wc->next;
  wc->next = NULL;
  l->tail = wc;
  while (c != NULL) {
    ftm__gc_chunk *next = c->next;
    c->n = 0; /* all moved */
    ftm__chunk_put(c, locked);
    l->chunks--;
    c = next;
  }
  if (live == 0) {
    ftm__chunk_put(l->head, locked);
    l->head = l->tail = NULL;
    l->chunks = 0;
  }
  return live;
}

/* Add this thread's unflushed tracked-allocation count to the global one. */
static void ftm__gc_count_give(ftm__tstate *ts) {
  if (ts->gc_count == 0) return;
  ftm_atomic_fetch_add_relaxed(&ftm__gc_count0, ts->gc_count);
  ts->gc_count = 0;
}

/* ---- tracking ----------------------------------------------------------------- */
/* The young list appends at its head chunk. */
static bool ftm__young_grow(ftm__tstate *ts) {
  ftm__gc_list *y = &ts->gc_young;
  size_t cells = y->chunks * FTM_GC_CHUNK_N;
  /* look for holes when the list doubled since the last look: amortised
   * O(1) per cell */
  if (y->chunks >= 2 && y->chunks >= 2 * y->scanned) {
    y->scanned = y->chunks;
    /* compact when at most half the cells are live: amortised O(1) */
    if (ftm__list_live(y) * 2 <= cells) {
      /* compaction writes from the list's first chunk on: oldest first,
       * compact, then newest first again (the partly filled chunk at the
       * head, appended to) */
      ftm__list_reverse(y);
      ftm__list_compact(y, false);
      ftm__list_reverse(y);
      y->scanned = y->chunks;
      if (y->head != NULL && y->head->n < FTM_GC_CHUNK_N) return true;
    }
  }
  ftm__gc_chunk *c = ftm__chunk_get();
  if (c == NULL) return false;
  ftm__list_push_chunk(y, c);
  return true;
}

static inline bool ftm__track(ftm__tstate *ts, ftm_object *o) {
  ftm__gc_chunk *c = ts->gc_young.head;
  if (ftm_unlikely(c == NULL || c->n == FTM_GC_CHUNK_N)) {
    if (!ftm__young_grow(ts)) return false;
    c = ts->gc_young.head;
  }
  ftm_field *cell = &c->cells[c->n++];
  /* relaxed: the collector reads young cells only after the hand-over
   * (hand lock, and the handshake's release/acquire) */
  ftm_atomic_store_relaxed(cell, o);
  ftm_atomic_store_relaxed(&ftm__gc_head_of(o)->cell, cell);
  ftm_atomic_fetch_or_relaxed(&o->ob_gc_bits, FTM_GCB_TRACKED);
  if (ftm_unlikely(++ts->gc_count >= FTM_GC_COUNT_BATCH)) ftm__gc_count_flush(ts);
  return true;
}

bool ftm__gc_track_new(ftm__tstate *ts, ftm_object *o) {
  ftm__gc_head *h = ftm__gc_head_of(o);
  ftm_atomic_store_relaxed(&h->cell, NULL);
  ftm_atomic_store_relaxed(&h->refs, 0);
  return ftm__track(ts, o);
}

/* Take o's cell back (o is dying, or being untracked). */
static void ftm__untrack(ftm__tstate *ts, ftm_object *o) {
  ftm__gc_head *h = ftm__gc_head_of(o);
  ftm__gc_chunk *c = ts->gc_young.head;
  ftm_field *cell = ftm_atomic_load_relaxed(&h->cell);
  if (cell == NULL) return;
  if (c != NULL && cell >= &c->cells[0] && cell < &c->cells[c->n]) {
    /* in the chunk this thread appends to: nobody else moves it */
    ftm_atomic_store_relaxed(&h->cell, NULL);
    ftm_atomic_store_relaxed(cell, NULL);
    if (cell == &c->cells[c->n - 1]) c->n--; /* LIFO deaths reuse the cell */
  } else {
    /* acq_rel: pairs with the collector's CAS in ftm__cell_move */
    cell = ftm_atomic_exchange_acq_rel(&h->cell, NULL);
    if (cell != NULL) {
      for (unsigned spins = 0;; spins++) {
        ftm_object *expect = o;
        /* acq_rel: pairs with a mover's unlock (ftm__cell_move); a stale
         * cell holds another object or NULL, and the CAS fails harmlessly */
        if (ftm_atomic_cas_strong_acq_rel(cell, &expect, NULL)) break;
        if (expect != FTM_CELL_LOCKED(o)) break;
        if (spins < 64) ftm_cpu_relax();
        else sched_yield();
      }
    }
  }
  /* no collection from here: we may be inside a death */
  if (ftm_unlikely(--ts->gc_count <= -FTM_GC_COUNT_BATCH)) ftm__gc_count_give(ts);
}

void ftm__gc_untrack_dying(ftm__tstate *ts, ftm_object *o) {
  uint8_t b = ftm_atomic_load_relaxed(&o->ob_gc_bits);
  if (b & FTM_GCB_TRACKED) ftm__untrack(ts, o);
  /* release: the collector skips it from here (its memory stays valid
   * while a collection runs: deaths are deferred then) */
  ftm_atomic_store_release(&o->ob_gc_bits, (uint8_t)((b & ~FTM_GCB_TRACKED) | FTM_GCB_DEAD));
}

static void ftm__check_attached(ftm__tstate *ts, const char *what) {
  if (ftm_unlikely(ftm_atomic_load_relaxed(&ts->xstate) != FTM_TS_ATTACHED))
    ftm__fatal("ftmem: %s from a detached thread: call ftm_thread_attach first\n", what);
}

void ftm_gc_track(ftm_object *o) {
  if (!(o->ob_type->flags & FTM_TYPE_GC)) return;
  ftm__tstate *ts = ftm__tstate_get();
  ftm__check_attached(ts, "ftm_gc_track");
  uint8_t b = ftm_atomic_load_relaxed(&o->ob_gc_bits);
  if (b & (FTM_GCB_TRACKED | FTM_GCB_DEAD)) return;
  if (!ftm__track(ts, o)) ftm__fatal("ftmem: out of memory tracking an object (type %s)\n", o->ob_type->name);
}

void ftm_gc_untrack(ftm_object *o) {
  if (!(o->ob_type->flags & FTM_TYPE_GC)) return;
  ftm__tstate *ts = ftm__tstate_get();
  ftm__check_attached(ts, "ftm_gc_untrack");
  if (!(ftm_atomic_load_relaxed(&o->ob_gc_bits) & FTM_GCB_TRACKED)) return;
  ftm__untrack(ts, o);
  ftm_atomic_fetch_and_relaxed(&o->ob_gc_bits, (uint8_t)~FTM_GCB_TRACKED);
}

bool ftm_gc_is_tracked(const ftm_object *o) {
  return (ftm_atomic_load_relaxed(&((ftm_object *)o)->ob_gc_bits) & FTM_GCB_TRACKED) != 0;
}

bool ftm_gc_is_finalized(const ftm_object *o) {
  return (ftm_atomic_load_relaxed(&((ftm_object *)o)->ob_flags) & FTM_OBF_FINALIZED) != 0;
}

/* ---- barrier ---------------------------------------------------------------- */
/* Shaded objects are listed in chunks like the candidates (OS memory, so
 * a thread's list is no heap block that leak checks would count). */
static void ftm__grey_push(ftm__tstate *ts, ftm_object *o) {
  ftm__gc_list *g = &ts->gc_greys;
  ftm__gc_chunk *c = g->head;
  if (ftm_unlikely(c == NULL || c->n == FTM_GC_CHUNK_N)) {
    c = ftm__chunk_get();
    if (c == NULL) {
      /* cannot list it: it stays SHADED, and the collector scans every
       * candidate for shaded ones while the threads are parked */
      ftm_atomic_store_relaxed(&ftm__gc_grey_overflow, 1);
      return;
    }
    ftm__list_push_chunk(g, c);
  }
  /* relaxed: handed over under the hand lock */
  ftm_atomic_store_relaxed(&c->cells[c->n++], o);
  ts->gc_ngrey++;
}

/* Recycle a grey list's chunks (hand lock held). */
static void ftm__greys_drop_locked(ftm__gc_list *g) {
  ftm__gc_chunk *c = g->head;
  while (c != NULL) {
    ftm__gc_chunk *next = c->next;
    ftm__chunk_put_locked(c);
    c = next;
  }
  *g = (ftm__gc_list){0};
}

void ftm__gc_shade(ftm_object *o) {
  /* seq_cst fence: our new count (or store) is ordered before the read of
   * the bits; pairs with the snapshot's seq_cst CAND-setting RMW followed
   * by its count loads — one of the two sees the other */
  atomic_thread_fence(memory_order_seq_cst);
  uint8_t b = ftm_atomic_load_relaxed(&o->ob_gc_bits);
  if ((b & (FTM_GCB_CAND | FTM_GCB_SHADED | FTM_GCB_MARKED | FTM_GCB_DEAD)) != FTM_GCB_CAND) return;
  uint8_t old = ftm_atomic_fetch_or_relaxed(&o->ob_gc_bits, FTM_GCB_SHADED);
  if (!(old & FTM_GCB_SHADED)) ftm__grey_push(ftm__tstate_get(), o);
}

/* ---- hand-over and handshakes (thread side) ------------------------------ */
static void ftm__hand_over(ftm__tstate *ts, bool greys) {
  /* shaded objects matter only to a running collection (between its
   * start, which drops older ones, and its park) */
  if (!ftm_atomic_load_relaxed(&ftm__gc_defer)) greys = false;
  if (ts->gc_young.head == NULL && ts->gc_greys.head == NULL) return;
  pthread_mutex_lock(&ftm__gc_hand_lock);
  ftm__list_splice(&ftm__gc_pending, &ts->gc_young);
  /* lists handed over by exiting threads are mostly holes when no
   * collection runs (allocations balanced by deaths): compact them when
   * they doubled since the last compaction (amortised O(1) per cell) */
  if (ftm__gc_pending.chunks > 2 * ftm__gc_pending_compacted + 8)
    ftm__gc_pending_compacted = (ftm__list_compact(&ftm__gc_pending, true) + FTM_GC_CHUNK_N - 1) / FTM_GC_CHUNK_N;
  if (greys) ftm__list_splice(&ftm__gc_greys, &ts->gc_greys);
  else ftm__greys_drop_locked(&ts->gc_greys);
  ts->gc_ngrey = 0;
  pthread_mutex_unlock(&ftm__gc_hand_lock);
}

/* Answer collector handshake `seq` (from a safepoint, attach, or while
 * waiting for an epoch). */
void ftm__gc_answer(ftm__tstate *ts, uint64_t seq) {
  if (seq == ts->gc_seen) return;
  int kind = ftm_atomic_load_relaxed(&ftm__gc_hs_kind);
  ftm__gc_count_give(ts);
  /* START: shades from before it are stale (earlier collections) */
  ftm__hand_over(ts, kind != FTM_HS_START);
  ts->gc_seen = seq;
  /* release: pairs with the collector's acquire of the ack — our hand-over
   * and every increment we made before it are visible */
  ftm_atomic_store_release(&ts->xgc_ack, seq);
  ftm__gc_park_wait(ts, seq);
}

void ftm__gc_park_wait(ftm__tstate *ts, uint64_t seq) {
  if (ts == ftm_atomic_load_relaxed(&ftm__gc_collector)) return;
  /* acquire: pairs with the release that ends the park (the collector's
   * writes during it are visible when we go on) */
  for (unsigned spins = 0; ftm_atomic_load_acquire(&ftm__gc_park_seq) == seq; spins++) {
    if (spins < 64) ftm_cpu_relax();
    else sched_yield();
  }
}

/* Detach and exit: hand everything over; the collector does not wait for
 * threads that are not attached. */
void ftm__gc_thread_leave(ftm__tstate *ts) {
  ftm__gc_count_give(ts);
  ftm__hand_over(ts, true);
}

static void ftm__gc_unpark(void) {
  /* release: pairs with ftm__gc_park_wait's acquire */
  ftm_atomic_store_release(&ftm__gc_park_seq, 0);
}

/* ---- handshakes (collector side) -------------------------------------------- */
static uint64_t ftm__gc_hs_counter; /* gc lock */

/* Ask every attached thread to answer `kind`; true when all did within
 * timeout_ms.  On timeout a park is called off. */
static bool ftm__handshake(ftm__tstate *self, int kind, int64_t timeout_ms) {
  uint64_t seq = ++ftm__gc_hs_counter;
  ftm_atomic_store_relaxed(&ftm__gc_collector, self); /* never parks */
  ftm_atomic_store_relaxed(&ftm__gc_hs_kind, kind);
  if (kind == FTM_HS_PARK) ftm_atomic_store_relaxed(&ftm__gc_park_seq, seq);
  /* seq_cst: the kind and park above are published with it; against
   * attach's seq_cst state store and seq load (tstate.c) */
  ftm_atomic_store_seq_cst(&ftm__gc_hs_seq, seq);
  ftm__flush_request(); /* every attached thread takes its slow safepoint; answers ours */
  ftm__gc_answer(self, seq);
  int64_t deadline = ftm__now_ns() + timeout_ms * 1000000;
  uint32_t n = ftm_atomic_load_acquire(&ftm__tstate_count);
  uint32_t from = 0;
  for (unsigned spins = 0;; spins++) {
    uint32_t i = from;
    for (; i < n && i < FTM_MAX_TSTATES; i++) {
      ftm__tstate *ts = ftm_atomic_load_acquire(&ftm__tstates[i]);
      if (ts == NULL || ts == self) continue;
      /* acquire: pairs with the ack's release */
      if (ftm_atomic_load_acquire(&ts->xgc_ack) >= seq) continue;
      /* seq_cst: see ftm__flush_acked */
      if (ftm_atomic_load_seq_cst(&ts->xstate) != FTM_TS_ATTACHED) continue;
      break;
    }
    if (i >= n || i >= FTM_MAX_TSTATES) {
      /* threads registered after we read n saw the request at attach */
      uint32_t n2 = ftm_atomic_load_acquire(&ftm__tstate_count);
      if (n2 == n) return true;
      from = n;
      n = n2;
      continue;
    }
    from = i;
    if (ftm__now_ns() > deadline) {
      if (kind == FTM_HS_PARK) ftm__gc_unpark();
      return false;
    }
    if (spins < 128) ftm_cpu_relax();
    else sched_yield();
  }
}

/* ---- a collection ------------------------------------------------------------- */
typedef struct {
  ftm__tstate *ts;
  int gen;
  ftm__gc_list young;      /* taken from the pending lists at the start */
  ftm__gc_list *lists[3];  /* candidate lists */
  unsigned nlists;
  ftm__objvec stack;       /* marking */
  ftm__objvec garbage;     /* unmarked candidates, then the garbage held */
  const ftm_object *cur;   /* the object being traversed (debug messages) */
  size_t ncand;
  int64_t pause_ns;
} ftm__gc_run;


#define FTM_FOR_EACH_CELL(run, o, body)                                      \
  for (unsigned li_ = 0; li_ < (run)->nlists; li_++)                          \
    for (ftm__gc_chunk *c_ = (run)->lists[li_]->head; c_ != NULL; c_ = c_->next) \
      for (uint32_t i_ = 0; i_ < c_->n; i_++) {                              \
        ftm_object *o = ftm_atomic_load_relaxed(&c_->cells[i_]);              \
        if (o == NULL) continue;                                             \
        body                                                                 \
      }

/* refcount as trial deletion needs it: local before shared (a merge in
 * between over-counts), deferred and pinned objects are roots. */
static int64_t ftm__gc_refcount(ftm_object *o) {
  /* seq_cst: after the snapshot's seq_cst RMW on the bits (ftm__gc_shade) */
  uint32_t l = ftm_atomic_load_seq_cst(&o->ob_ref_local);
  if (l == FTM_REF_IMMORTAL || l == FTM_REF_DEFERRED) return INT32_MAX;
  if (l == FTM_REF_FREED) return 0;
  int32_t s = ftm_atomic_load_seq_cst(&o->ob_ref_shared);
  if (ftm_atomic_load_relaxed(&o->ob_flags) & FTM_OBF_PINNED) return INT32_MAX;
  int64_t n = ((s & 3) == FTM_REF_MERGED ? 0 : (int64_t)l) + (int64_t)(s >> FTM_REF_SHARED_SHIFT);
  return n;
}

#if defined(FTMEM_DEBUG)
/* Is y an object: where a block starts (after its GC head, for GC
 * types), or outside ftmem's memory with a readied type (a static
 * immortal object)?  Not one freed before the collection started? */
static void ftm__gc_check_visit(const ftm__gc_run *run, ftm_object *y, bool quiescent) {
  ftm__pool *p = ftm__pagemap_lookup(y);
  const char *name = run->cur && run->cur->ob_type ? run->cur->ob_type->name : "?";
  bool ok;
  if (p == NULL)
    ok = ftm__type_known(y->ob_type);
  else if (p->kind == FTM_POOL_LARGE)
    ok = (char *)y == ftm__large_user(p) || (char *)y == ftm__large_user(p) + FTM_GC_HEAD;
  else
    ok = ftm__pool_is_block(p, y) || ftm__pool_is_block(p, (char *)y - FTM_GC_HEAD);
  if (!ok)
    ftm__fatal("ftmem: traverse of %p (type %s) visited %p, which is not an object\n", (const void *)run->cur,
               name, (void *)y);
  /* acquire: pairs with the release store of FREED (object.c) */
  if (ftm_atomic_load_acquire(&y->ob_ref_local) == FTM_REF_FREED &&
      (quiescent || !(ftm_atomic_load_relaxed(&y->ob_gc_bits) & FTM_GCB_FREED_LATE)))
    ftm__fatal("ftmem: traverse of %p (type %s) visited %p, a freed object\n", (const void *)run->cur,
               name, (void *)y);
}
#else
#define ftm__gc_check_visit(run, y, q) ((void)0)
#endif

static int ftm__visit_sub(ftm_object *y, void *arg) {
  ftm__gc_run *run = arg;
  (void)run;
  if (y == NULL) return 0;
  ftm__gc_check_visit(run, y, false);
  uint8_t b = ftm_atomic_load_relaxed(&y->ob_gc_bits);
  /* MARKED too: nothing is marked yet in this collection, and survivors
   * of earlier ones keep CAND|MARKED (ftm__gc_promote) — no write to them */
  if ((b & (FTM_GCB_CAND | FTM_GCB_MARKED | FTM_GCB_DEAD)) == FTM_GCB_CAND) {
    ftm__gc_head *h = ftm__gc_head_of(y);
    /* relaxed: only the collector touches refs */
    ftm_atomic_store_relaxed(&h->refs, ftm_atomic_load_relaxed(&h->refs) - 1);
  }
  return 0;
}

static bool ftm__gc_oom;

static void ftm__mark_one(ftm__gc_run *run, ftm_object *y) {
  uint8_t b = ftm_atomic_load_relaxed(&y->ob_gc_bits);
  if ((b & (FTM_GCB_CAND | FTM_GCB_MARKED | FTM_GCB_DEAD)) != FTM_GCB_CAND) return;
  ftm_atomic_fetch_or_relaxed(&y->ob_gc_bits, FTM_GCB_MARKED);
  if (!ftm__vec_push(&run->stack, y)) ftm__gc_oom = true;
}

static int ftm__visit_mark(ftm_object *y, void *arg) {
  if (y == NULL) return 0;
  ftm__gc_check_visit((ftm__gc_run *)arg, y, false);
  ftm__mark_one(arg, y);
  return 0;
}

static void ftm__mark_drain(ftm__gc_run *run) {
  while (run->stack.n != 0) {
    ftm_object *y = run->stack.v[--run->stack.n];
    if (ftm_atomic_load_relaxed(&y->ob_gc_bits) & FTM_GCB_DEAD) continue;
    run->cur = y;
    y->ob_type->traverse(y, ftm__visit_mark, run);
  }
}

static void ftm__mark_greys(ftm__gc_run *run) {
  pthread_mutex_lock(&ftm__gc_hand_lock);
  ftm__gc_list g = ftm__gc_greys;
  ftm__gc_greys = (ftm__gc_list){0};
  pthread_mutex_unlock(&ftm__gc_hand_lock);
  for (ftm__gc_chunk *c = g.head; c != NULL; c = c->next)
    for (uint32_t i = 0; i < c->n; i++) {
      ftm__mark_one(run, ftm_atomic_load_relaxed(&c->cells[i]));
      ftm__mark_drain(run);
    }
  pthread_mutex_lock(&ftm__gc_hand_lock);
  ftm__greys_drop_locked(&g);
  pthread_mutex_unlock(&ftm__gc_hand_lock);
}

/* Mark from candidates that were shaded but are not marked. */
static void ftm__mark_shaded_scan(ftm__gc_run *run) {
  FTM_FOR_EACH_CELL(run, o, {
    uint8_t b = ftm_atomic_load_relaxed(&o->ob_gc_bits);
    if ((b & (FTM_GCB_CAND | FTM_GCB_SHADED | FTM_GCB_MARKED | FTM_GCB_DEAD)) ==
        (FTM_GCB_CAND | FTM_GCB_SHADED)) {
      ftm__mark_one(run, o);
      ftm__mark_drain(run);
    }
  })
}

/* Clear the collector's bits of every candidate (an abandoned collection). */
static void ftm__gc_reset_bits(ftm__gc_run *run) {
  FTM_FOR_EACH_CELL(run, o, {
    ftm_atomic_fetch_and_relaxed(&o->ob_gc_bits,
                                 (uint8_t) ~(FTM_GCB_CAND | FTM_GCB_MARKED | FTM_GCB_SHADED | FTM_GCB_UNREACH));
  })
}

/* Compact the candidate lists into one; returns the live count.
 * Survivors keep CAND|MARKED (no pass to clear them): the next snapshot
 * resets the bits of its candidates, and until then CAND|MARKED makes
 * barriers and marking leave them alone.  An object left with CAND but
 * not MARKED would only be marked conservatively, so none is. */
static size_t ftm__gc_promote(ftm__gc_run *run, ftm__gc_list *out) {
  ftm__gc_list all = {0};
  for (unsigned i = 0; i < run->nlists; i++) ftm__list_splice(&all, run->lists[i]);
  size_t live = ftm__list_compact(&all, false);
  ftm__list_splice(out, &all);
  return live;
}

static void ftm__gc_run_callbacks(const char *phase, const ftm_gc_info *info) {
  ftm_gc_callback cbs[FTM_GC_MAX_CALLBACKS];
  void *args[FTM_GC_MAX_CALLBACKS];
  pthread_mutex_lock(&ftm__gc_cb_lock);
  unsigned n = ftm__gc_ncallbacks;
  for (unsigned i = 0; i < n; i++) {
    cbs[i] = ftm__gc_callbacks[i].cb;
    args[i] = ftm__gc_callbacks[i].arg;
  }
  pthread_mutex_unlock(&ftm__gc_cb_lock);
  for (unsigned i = 0; i < n; i++) cbs[i](phase, info, args[i]);
}

static int ftm__visit_recheck_sub(ftm_object *y, void *arg) {
  (void)arg;
  if (y == NULL) return 0;
  if (ftm_atomic_load_relaxed(&y->ob_gc_bits) & FTM_GCB_UNREACH) {
    ftm__gc_head *h = ftm__gc_head_of(y);
    ftm_atomic_store_relaxed(&h->refs, ftm_atomic_load_relaxed(&h->refs) - 1);
  }
  return 0;
}

static int ftm__visit_recheck_mark(ftm_object *y, void *arg) {
  ftm__objvec *stack = arg;
  if (y == NULL) return 0;
  uint8_t b = ftm_atomic_load_relaxed(&y->ob_gc_bits);
  if ((b & (FTM_GCB_UNREACH | FTM_GCB_MARKED)) == FTM_GCB_UNREACH) {
    ftm_atomic_fetch_or_relaxed(&y->ob_gc_bits, FTM_GCB_MARKED);
    if (!ftm__vec_push(stack, y)) ftm__gc_oom = true;
  }
  return 0;
}

/* After finalizers ran, with the mutators parked: keep what they
 * resurrected (CPython's handle_resurrected_objects).  Returns false if
 * the park failed: then everything is kept. */
static bool ftm__gc_recheck(ftm__gc_run *run, int64_t timeout_ms) {
  ftm__objvec *g = &run->garbage;
  int64_t t0 = ftm__now_ns();
  if (!ftm__handshake(run->ts, FTM_HS_PARK, timeout_ms)) {
    ftm_atomic_store_relaxed(&ftm__gc_collector, NULL);
    return false;
  }
  for (size_t i = 0; i < g->n; i++) {
    ftm_object *o = g->v[i];
    ftm_atomic_store_relaxed(&ftm__gc_head_of(o)->refs, ftm__gc_refcount(o) - 1); /* minus our hold */
  }
  for (size_t i = 0; i < g->n; i++) g->v[i]->ob_type->traverse(g->v[i], ftm__visit_recheck_sub, NULL);
  ftm__objvec stack = {0};
  for (size_t i = 0; i < g->n; i++) {
    ftm_object *o = g->v[i];
    if (ftm_atomic_load_relaxed(&ftm__gc_head_of(o)->refs) > 0 &&
        !(ftm_atomic_fetch_or_relaxed(&o->ob_gc_bits, FTM_GCB_MARKED) & FTM_GCB_MARKED)) {
      if (!ftm__vec_push(&stack, o)) ftm__gc_oom = true;
      while (stack.n != 0) {
        ftm_object *y = stack.v[--stack.n];
        y->ob_type->traverse(y, ftm__visit_recheck_mark, &stack);
      }
    }
  }
  ftm__vec_free(&stack);
  /* resurrected: no longer garbage */
  for (size_t i = 0; i < g->n; i++) {
    ftm_object *o = g->v[i];
    if (ftm_atomic_load_relaxed(&o->ob_gc_bits) & FTM_GCB_MARKED)
      ftm_atomic_fetch_and_relaxed(&o->ob_gc_bits, (uint8_t)~FTM_GCB_UNREACH); /* MARKED stays: see ftm__gc_promote */
  }
  ftm__gc_unpark();
  ftm_atomic_store_relaxed(&ftm__gc_collector, NULL);
  run->pause_ns += ftm__now_ns() - t0;
  return true;
}

#if defined(FTMEM_DEBUG)
static int ftm__visit_left(ftm_object *y, void *arg) {
  const ftm_object *o = arg;
  if (y != NULL)
    ftm__fatal("ftmem: clear of %p (type %s) left a reference to %p behind\n", (const void *)o,
               o->ob_type->name, (void *)y);
  return 0;
}
#endif

/* The collection proper; gc lock held, ts->gc_busy set.  Returns the
 * unreachable objects found, or -1 (EAGAIN) if abandoned. */
static ssize_t ftm__gc_collect_locked(ftm__tstate *ts, int gen, bool automatic) {
  int64_t timeout = ftm__gc_timeout(automatic);
  int64_t t_start = ftm__now_ns();
  ftm__gc_run run = {.ts = ts, .gen = gen};
  unsigned debug = ftm_atomic_load_relaxed(&ftm__gc_debug);
  ftm_gc_info info = {.generation = gen};
  ftm__gc_run_callbacks("start", &info);

  /* queue entries of detached threads hold references: merge them first,
   * so that what they keep alive can be collected (a background
   * collector's own objects, say, whose thread sleeps detached) */
  uint32_t nts = ftm_atomic_load_acquire(&ftm__tstate_count);
  for (uint32_t i = 0; i < nts && i < FTM_MAX_TSTATES; i++) {
    ftm__tstate *o = ftm_atomic_load_acquire(&ftm__tstates[i]);
    if (o != NULL && o != ts && ftm_atomic_load_relaxed(&o->xqueued) != 0 &&
        ftm_atomic_load_relaxed(&o->xstate) == FTM_TS_DETACHED)
      ftm__merge_for(o);
  }
  ftm_atomic_store_relaxed(&ftm__gc_collector, ts);
  /* 1. our section first: memory retired from here on outlives it */
  ck_epoch_begin(&ts->epoch, NULL);
  ftm_atomic_store_seq_cst(&ftm__gc_defer, 1);
  ftm_atomic_store_seq_cst(&ftm__gc_barrier, 1);
  if (!ftm__handshake(ts, FTM_HS_START, timeout)) goto abandon_early;
  pthread_mutex_lock(&ftm__gc_hand_lock);
  run.young = ftm__gc_pending;
  ftm__gc_pending = (ftm__gc_list){0};
  ftm__gc_pending_compacted = 0;
  ftm__greys_drop_locked(&ftm__gc_greys); /* shaded before the start: stale */
  pthread_mutex_unlock(&ftm__gc_hand_lock);
  ftm_atomic_store_relaxed(&ftm__gc_grey_overflow, 0);
  ftm__gc_oom = false;
  run.lists[run.nlists++] = &run.young;
  if (gen >= 1) run.lists[run.nlists++] = &ftm__gc_gen[1];
  if (gen >= 2) run.lists[run.nlists++] = &ftm__gc_gen[2];

  /* 2. snapshot */
  FTM_FOR_EACH_CELL(&run, o, {
    uint8_t b = ftm_atomic_load_relaxed(&o->ob_gc_bits);
    uint8_t nb;
    bool skip = false;
    do {
      if ((b & FTM_GCB_DEAD) || !(b & FTM_GCB_TRACKED)) {
        skip = true;
        break;
      }
      nb = (uint8_t)((b & ~(FTM_GCB_SHADED | FTM_GCB_MARKED | FTM_GCB_UNREACH)) | FTM_GCB_CAND);
      /* seq_cst: pairs with the fence in ftm__gc_shade (see there) */
    } while (!atomic_compare_exchange_weak_explicit(&o->ob_gc_bits, &b, nb, memory_order_seq_cst,
                                                    memory_order_relaxed));
    if (skip) continue;
    ftm_atomic_store_relaxed(&ftm__gc_head_of(o)->refs, ftm__gc_refcount(o));
    run.ncand++;
  })
  /* 3. subtract internal references */
  FTM_FOR_EACH_CELL(&run, o, {
    if ((ftm_atomic_load_relaxed(&o->ob_gc_bits) & (FTM_GCB_CAND | FTM_GCB_DEAD)) != FTM_GCB_CAND) continue;
    run.cur = o;
    o->ob_type->traverse(o, ftm__visit_sub, &run);
  })
  /* 4. mark from the roots, then from what barriers shaded meanwhile */
  FTM_FOR_EACH_CELL(&run, o, {
    uint8_t b = ftm_atomic_load_relaxed(&o->ob_gc_bits);
    if ((b & (FTM_GCB_CAND | FTM_GCB_MARKED | FTM_GCB_DEAD)) != FTM_GCB_CAND) continue;
    if (ftm_atomic_load_relaxed(&ftm__gc_head_of(o)->refs) > 0 || (b & FTM_GCB_SHADED)) {
      ftm__mark_one(&run, o);
      ftm__mark_drain(&run);
    }
  })
  for (int round = 0; round < 2; round++) {
    if (!ftm__handshake(ts, FTM_HS_GREY, timeout)) goto abandon;
    ftm__mark_greys(&run);
  }
  /* 5. list the unmarked (a shaded one found here is marked from) */
  FTM_FOR_EACH_CELL(&run, o, {
    uint8_t b = ftm_atomic_load_relaxed(&o->ob_gc_bits);
    if ((b & (FTM_GCB_CAND | FTM_GCB_MARKED | FTM_GCB_DEAD)) != FTM_GCB_CAND) continue;
    if (b & FTM_GCB_SHADED) {
      ftm__mark_one(&run, o);
      ftm__mark_drain(&run);
    } else if (!ftm__vec_push(&run.garbage, o)) {
      ftm__gc_oom = true;
    }
  })
  if (ftm__gc_oom) goto abandon; /* an incomplete list or mark stack: unsound to go on */
  {
    int64_t t0 = ftm__now_ns();
    if (!ftm__handshake(ts, FTM_HS_PARK, timeout)) goto abandon;
    /* parked: nobody increfs, stores or frees */
    ftm__mark_greys(&run);
    if (ftm_atomic_load_relaxed(&ftm__gc_grey_overflow)) ftm__mark_shaded_scan(&run);
    ftm_atomic_store_relaxed(&ftm__gc_barrier, 0); /* published by the unpark */
    if (ftm__gc_oom) {
      ftm__gc_unpark();
      goto abandon;
    }
    size_t k = 0;
    for (size_t i = 0; i < run.garbage.n; i++) {
      ftm_object *o = run.garbage.v[i];
      uint8_t b = ftm_atomic_load_relaxed(&o->ob_gc_bits);
      if (b & (FTM_GCB_MARKED | FTM_GCB_DEAD)) continue;
      ftm_atomic_fetch_or_relaxed(&o->ob_gc_bits, FTM_GCB_UNREACH);
      /* the hold, merged: nothing references o from outside the garbage
       * and every thread is parked, so we have its owner's rights over
       * ob_ref_local.  Merged, its deaths below happen on this thread
       * instead of being queued to the owner one by one */
      ftm__merge(o, 1);
      run.garbage.v[k++] = o;
    }
    run.garbage.n = k;
    ftm__gc_unpark();
    run.pause_ns += ftm__now_ns() - t0;
  }
  ftm__vec_free(&run.stack);
  pthread_mutex_lock(&ftm__gc_hand_lock);
  ftm__greys_drop_locked(&ftm__gc_greys); /* handed over after the park: stale */
  pthread_mutex_unlock(&ftm__gc_hand_lock);

  /* 6. survivors (and the held garbage) move to the next generation */
  {
    ftm__gc_list *dest = &ftm__gc_gen[gen == 0 ? 1 : 2];
    size_t before2 = ftm__gc_gen_count[2];
    size_t live = ftm__gc_promote(&run, dest);
    if (gen == 0) {
      ftm__gc_gen_count[1] += live;
    } else {
      ftm__gc_gen_count[1] = 0;
      if (gen == 1) {
        ftm__gc_gen_count[2] = before2 + live;
        ftm__gc_long_lived_pending += live;
      } else {
        ftm__gc_gen_count[2] = live;
        ftm__gc_long_lived_total = live;
        ftm__gc_long_lived_pending = 0;
      }
    }
  }
  ftm_atomic_store_release(&ftm__gc_defer, 0);
  ck_epoch_end(&ts->epoch, NULL);
  ftm_atomic_store_relaxed(&ftm__gc_collector, NULL);

  /* 7. weak references, finalizers, resurrection, clear */
  size_t found = run.garbage.n, saved = 0;
  for (size_t i = 0; i < run.garbage.n; i++) {
    ftm_object *o = run.garbage.v[i];
    if (ftm_atomic_load_relaxed(&o->ob_flags) & FTM_OBF_WEAKREFS) ftm__weakrefs_clear(o);
  }
  size_t finalized = 0;
  for (size_t i = 0; i < run.garbage.n; i++) {
    ftm_object *o = run.garbage.v[i];
    if (o->ob_type->finalize == NULL) continue;
    if (ftm_atomic_fetch_or_relaxed(&o->ob_flags, FTM_OBF_FINALIZED) & FTM_OBF_FINALIZED) continue;
    o->ob_type->finalize(o);
    finalized++;
  }
  if (finalized != 0 && !ftm__gc_recheck(&run, timeout)) {
    /* could not recheck: keep everything (finalizers do not run again) */
    for (size_t i = 0; i < run.garbage.n; i++) {
      ftm_atomic_fetch_and_relaxed(&run.garbage.v[i]->ob_gc_bits, (uint8_t)~FTM_GCB_UNREACH);
      ftm_atomic_fetch_or_relaxed(&run.garbage.v[i]->ob_gc_bits, FTM_GCB_MARKED);
    }
  }
  size_t collected = 0;
  for (size_t i = 0; i < run.garbage.n; i++) {
    ftm_object *o = run.garbage.v[i];
    if (!(ftm_atomic_load_relaxed(&o->ob_gc_bits) & FTM_GCB_UNREACH)) continue;
    if (debug & FTM_GC_DEBUG_COLLECTABLE)
      fprintf(stderr, "ftmem gc: %s <%s %p>\n", (debug & FTM_GC_DEBUG_SAVEALL) ? "saving" : "collectable",
              o->ob_type->name, (void *)o);
    if (debug & FTM_GC_DEBUG_SAVEALL) {
      ftm_atomic_fetch_and_relaxed(&o->ob_gc_bits, (uint8_t)~FTM_GCB_UNREACH);
      ftm_atomic_fetch_or_relaxed(&o->ob_gc_bits, FTM_GCB_MARKED);
      if (ftm__gc_nsaved == ftm__gc_saved_cap) {
        size_t cap = ftm__gc_saved_cap ? ftm__gc_saved_cap * 2 : 64;
        ftm_object **v = ftm_realloc(ftm__gc_saved, cap * sizeof *v);
        if (v == NULL) continue; /* not saved: it lives on, held by nobody but its cycle */
        ftm__gc_saved = v;
        ftm__gc_saved_cap = cap;
      }
      ftm_incref(o); /* the saved list's reference */
      ftm__gc_saved[ftm__gc_nsaved++] = o;
      saved++;
      continue;
    }
    o->ob_type->clear(o);
#if defined(FTMEM_DEBUG)
    o->ob_type->traverse(o, ftm__visit_left, o);
#endif
    collected++;
  }
  (void)found;
  for (size_t i = 0; i < run.garbage.n; i++) ftm_decref(run.garbage.v[i]);
  ftm__vec_free(&run.garbage);

  /* counts and statistics */
  ftm_atomic_store_relaxed(&ftm__gc_count0, 0);
  if (gen >= 1) ftm_atomic_store_relaxed(&ftm__gc_count12[0], 0);
  if (gen >= 2) ftm_atomic_store_relaxed(&ftm__gc_count12[1], 0);
  if (gen <= 1) ftm_atomic_fetch_add_relaxed(&ftm__gc_count12[gen], 1);
  int64_t dur = ftm__now_ns() - t_start;
  ftm_atomic_fetch_add_relaxed(&ftm__gc_stats[gen].collections, 1);
  ftm_atomic_fetch_add_relaxed(&ftm__gc_stats[gen].collected, collected);
  ftm_atomic_fetch_add_relaxed(&ftm__gc_stats[gen].uncollectable, saved);
  ftm_atomic_fetch_add_relaxed(&ftm__gc_stats[gen].candidates, run.ncand);
  ftm_atomic_fetch_add_relaxed(&ftm__gc_stats[gen].duration_ns, (uint64_t)dur);
  ftm__stat_max(&ftm__gc_stats[gen].duration_max_ns, (uint64_t)dur);
  ftm_atomic_fetch_add_relaxed(&ftm__gc_stats[gen].pause_ns, (uint64_t)run.pause_ns);
  ftm__stat_max(&ftm__gc_stats[gen].pause_max_ns, (uint64_t)run.pause_ns);
  if (debug & FTM_GC_DEBUG_STATS)
    fprintf(stderr, "ftmem gc: gen %d: %zu candidates, %zu unreachable, %zu collected, %zu saved; %.3f ms (parked %.3f ms)\n",
            gen, run.ncand, collected + saved, collected, saved, dur / 1e6, run.pause_ns / 1e6);
  info.collected = collected;
  info.uncollectable = saved;
  info.candidates = run.ncand;
  info.duration = dur / 1e9;
  info.pause = run.pause_ns / 1e9;
  ftm__gc_run_callbacks("stop", &info);
  return (ssize_t)(collected + saved);

abandon:
  ftm__gc_reset_bits(&run);
  ftm__vec_free(&run.stack);
  ftm__vec_free(&run.garbage);
  /* the young objects wait for the next collection */
  pthread_mutex_lock(&ftm__gc_hand_lock);
  ftm__list_splice(&run.young, &ftm__gc_pending);
  ftm__gc_pending = run.young;
  ftm__gc_pending_compacted = run.young.chunks;
  pthread_mutex_unlock(&ftm__gc_hand_lock);
abandon_early:
  ftm_atomic_store_relaxed(&ftm__gc_barrier, 0);
  ftm_atomic_store_release(&ftm__gc_defer, 0);
  ck_epoch_end(&ts->epoch, NULL);
  ftm_atomic_store_relaxed(&ftm__gc_collector, NULL);
  ftm_atomic_fetch_add_relaxed(&ftm__gc_stats[gen].abandoned, 1);
  if (debug & FTM_GC_DEBUG_STATS)
    fprintf(stderr, "ftmem gc: gen %d abandoned: a thread did not answer within %lld ms\n", gen,
            (long long)timeout);
  info.duration = (ftm__now_ns() - t_start) / 1e9;
  ftm__gc_run_callbacks("stop", &info);
  errno = EAGAIN;
  return -1;
}

/* ---- choosing and starting collections ------------------------------------------ */
/* CPython's rule: the oldest generation whose count exceeds its
 * threshold, a full collection only when the objects waiting for one
 * exceed 25% of those the last one kept.  gc lock held. */
static int ftm__gc_pick_gen(void) {
  unsigned long count[3] = {(unsigned long)ftm_atomic_load_relaxed(&ftm__gc_count0),
                            ftm_atomic_load_relaxed(&ftm__gc_count12[0]),
                            ftm_atomic_load_relaxed(&ftm__gc_count12[1])};
  for (int i = 2; i >= 0; i--) {
    unsigned t = ftm_atomic_load_relaxed(&ftm__gc_threshold[i]);
    if (count[i] > t) {
      if (i == 2 && ftm__gc_long_lived_pending < ftm__gc_long_lived_total / 4) continue;
      return i;
    }
  }
  return -1;
}

static void ftm__gc_bg_start(void);

/* A collection on this thread if one is due and nothing else collects. */
static void ftm__gc_auto(ftm__tstate *ts) {
  if (ts->gc_busy || ts->dealloc_depth != 0) return;
  if (ftm_atomic_load_relaxed(&ftm__gc_bg_state) >= 0 && ftm__env_ms("FTMEM_GC_THREADS", 0) > 0) {
    ftm__gc_bg_start();
    pthread_mutex_lock(&ftm__gc_bg_lock);
    ftm__gc_bg_due = 1;
    pthread_cond_signal(&ftm__gc_bg_cond);
    pthread_mutex_unlock(&ftm__gc_bg_lock);
    return;
  }
  if (pthread_mutex_trylock(&ftm__gc_lock) != 0) return;
  int gen = ftm__gc_pick_gen();
  if (gen >= 0) {
    ts->gc_busy = 1;
    if (ftm__gc_collect_locked(ts, gen, true) < 0) ftm_atomic_store_relaxed(&ftm__gc_count0, 0); /* back off */
    ts->gc_busy = 0;
  }
  pthread_mutex_unlock(&ftm__gc_lock);
}

/* FTMEM_GC=0 starts with automatic collection disabled (ftm_gc_enable
 * turns it on), like running Python with gc.disable() first;
 * FTMEM_GC_DEBUG=flags sets ftm_gc_set_debug's flags. */
static pthread_once_t ftm__gc_env_once = PTHREAD_ONCE_INIT;
static void ftm__gc_env_init(void) {
  const char *s = getenv("FTMEM_GC");
  if (s != NULL && s[0] == '0' && s[1] == '\0') ftm_atomic_store_relaxed(&ftm__gc_enabled, 0);
  int64_t d = ftm__env_ms("FTMEM_GC_DEBUG", 0); /* gc.set_debug flags, e.g. 1: a line per collection */
  if (d > 0) ftm_atomic_store_relaxed(&ftm__gc_debug, (unsigned)d);
}

void ftm__gc_count_flush(ftm__tstate *ts) {
  pthread_once(&ftm__gc_env_once, ftm__gc_env_init);
  int64_t total = ftm_atomic_fetch_add_relaxed(&ftm__gc_count0, ts->gc_count) + ts->gc_count;
  ts->gc_count = 0;
  unsigned t0 = ftm_atomic_load_relaxed(&ftm__gc_threshold[0]);
  if (t0 != 0 && total > (int64_t)t0 && ftm_atomic_load_relaxed(&ftm__gc_enabled)) ftm__gc_auto(ts);
}

/* Background collectors (FTMEM_GC_THREADS): detached while they wait. */
static void *ftm__gc_bg_main(void *arg) {
  (void)arg;
  ftm__tstate *ts = ftm__tstate_get();
  ftm_thread_detach();
  for (;;) {
    pthread_mutex_lock(&ftm__gc_bg_lock);
    while (!ftm__gc_bg_due) pthread_cond_wait(&ftm__gc_bg_cond, &ftm__gc_bg_lock);
    ftm__gc_bg_due = 0;
    pthread_mutex_unlock(&ftm__gc_bg_lock);
    ftm_thread_attach();
    if (pthread_mutex_trylock(&ftm__gc_lock) == 0) {
      int gen = ftm__gc_pick_gen();
      if (gen >= 0 && ftm_atomic_load_relaxed(&ftm__gc_enabled)) {
        ts->gc_busy = 1;
        /* a background collector may wait as long as an explicit one */
        if (ftm__gc_collect_locked(ts, gen, false) < 0) ftm_atomic_store_relaxed(&ftm__gc_count0, 0);
        ts->gc_busy = 0;
      }
      pthread_mutex_unlock(&ftm__gc_lock);
    }
    /* free what this thread deferred (its epoch bags) before sleeping */
    ftm_thread_flush();
    ftm_thread_detach();
  }
  return NULL;
}

static void ftm__gc_bg_start(void) {
  int st = 0;
  if (!atomic_compare_exchange_strong_explicit(&ftm__gc_bg_state, &st, 1, memory_order_acq_rel,
                                               memory_order_relaxed))
    return;
  long n = (long)ftm__env_ms("FTMEM_GC_THREADS", 0);
  if (n > 16) n = 16;
  int started = 0;
  for (long i = 0; i < n; i++) {
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &a, ftm__gc_bg_main, NULL) == 0) started++;
    pthread_attr_destroy(&a);
  }
  if (started == 0) {
    ftm__warning("ftmem: could not start the collector threads: collecting on mutator threads\n");
    ftm_atomic_store_relaxed(&ftm__gc_bg_state, -1);
  }
}

/* Take the gc lock without blocking handshakes: an attached thread that
 * waited in pthread_mutex_lock would stall the holder's collection. */
static void ftm__gc_lock_spin(ftm__tstate *ts) {
  for (unsigned spins = 0; pthread_mutex_trylock(&ftm__gc_lock) != 0; spins++) {
    ftm__safepoint(ts);
    if (spins < 32) ftm_cpu_relax();
    else sched_yield();
  }
}

/* The API's lock: a finalizer or callback of a running collection on
 * this thread already holds it (and may look at the heap). */
static void ftm__gc_api_lock(ftm__tstate *ts) {
  if (!ts->gc_busy) ftm__gc_lock_spin(ts);
}
static void ftm__gc_api_unlock(ftm__tstate *ts) {
  if (!ts->gc_busy) pthread_mutex_unlock(&ftm__gc_lock);
}

static ftm__tstate *ftm__gc_api_enter(const char *what) {
  ftm__tstate *ts = ftm__tstate_get();
  ftm__check_attached(ts, what);
  return ts;
}

ssize_t ftm_gc_collect(int gen) {
  ftm__tstate *ts = ftm__gc_api_enter("ftm_gc_collect");
  if (gen < 0 || gen > 2) gen = 2;
  if (ts->gc_busy) return 0; /* from a finalizer or callback of our collection */
  ftm__gc_lock_spin(ts);
  ts->gc_busy = 1;
  ssize_t r = ftm__gc_collect_locked(ts, gen, false);
  ts->gc_busy = 0;
  pthread_mutex_unlock(&ftm__gc_lock);
  return r;
}

/* ---- configuration and statistics ------------------------------------------------ */
void ftm_gc_enable(void) { ftm_atomic_store_relaxed(&ftm__gc_enabled, 1); }
void ftm_gc_disable(void) { ftm_atomic_store_relaxed(&ftm__gc_enabled, 0); }
bool ftm_gc_isenabled(void) { return ftm_atomic_load_relaxed(&ftm__gc_enabled) != 0; }

void ftm_gc_set_threshold(unsigned t0, unsigned t1, unsigned t2) {
  ftm_atomic_store_relaxed(&ftm__gc_threshold[0], t0);
  ftm_atomic_store_relaxed(&ftm__gc_threshold[1], t1);
  ftm_atomic_store_relaxed(&ftm__gc_threshold[2], t2);
}

void ftm_gc_get_threshold(unsigned out[FTM_GC_GENERATIONS]) {
  for (int i = 0; i < 3; i++) out[i] = ftm_atomic_load_relaxed(&ftm__gc_threshold[i]);
}

void ftm_gc_get_count(unsigned long out[FTM_GC_GENERATIONS]) {
  ftm__tstate *ts = ftm__ts;
  int64_t c0 = ftm_atomic_load_relaxed(&ftm__gc_count0) + (ts != NULL ? ts->gc_count : 0);
  out[0] = c0 > 0 ? (unsigned long)c0 : 0;
  out[1] = ftm_atomic_load_relaxed(&ftm__gc_count12[0]);
  out[2] = ftm_atomic_load_relaxed(&ftm__gc_count12[1]);
}

void ftm_gc_get_stats(ftm_gc_gen_stats_t out[FTM_GC_GENERATIONS]) {
  for (int i = 0; i < 3; i++) {
    out[i].collections = ftm_atomic_load_relaxed(&ftm__gc_stats[i].collections);
    out[i].collected = ftm_atomic_load_relaxed(&ftm__gc_stats[i].collected);
    out[i].uncollectable = ftm_atomic_load_relaxed(&ftm__gc_stats[i].uncollectable);
    out[i].candidates = ftm_atomic_load_relaxed(&ftm__gc_stats[i].candidates);
    out[i].abandoned = ftm_atomic_load_relaxed(&ftm__gc_stats[i].abandoned);
    out[i].duration_total = ftm_atomic_load_relaxed(&ftm__gc_stats[i].duration_ns) / 1e9;
    out[i].duration_max = ftm_atomic_load_relaxed(&ftm__gc_stats[i].duration_max_ns) / 1e9;
    out[i].pause_total = ftm_atomic_load_relaxed(&ftm__gc_stats[i].pause_ns) / 1e9;
    out[i].pause_max = ftm_atomic_load_relaxed(&ftm__gc_stats[i].pause_max_ns) / 1e9;
  }
}

int ftm_gc_callback_add(ftm_gc_callback cb, void *arg) {
  pthread_mutex_lock(&ftm__gc_cb_lock);
  int r = 0;
  if (ftm__gc_ncallbacks == FTM_GC_MAX_CALLBACKS) {
    errno = ENOMEM;
    r = -1;
  } else {
    ftm__gc_callbacks[ftm__gc_ncallbacks].cb = cb;
    ftm__gc_callbacks[ftm__gc_ncallbacks].arg = arg;
    ftm__gc_ncallbacks++;
  }
  pthread_mutex_unlock(&ftm__gc_cb_lock);
  return r;
}

int ftm_gc_callback_remove(ftm_gc_callback cb, void *arg) {
  pthread_mutex_lock(&ftm__gc_cb_lock);
  int r = -1;
  for (unsigned i = 0; i < ftm__gc_ncallbacks; i++) {
    if (ftm__gc_callbacks[i].cb == cb && ftm__gc_callbacks[i].arg == arg) {
      memmove(&ftm__gc_callbacks[i], &ftm__gc_callbacks[i + 1],
              (ftm__gc_ncallbacks - i - 1) * sizeof ftm__gc_callbacks[0]);
      ftm__gc_ncallbacks--;
      r = 0;
      break;
    }
  }
  pthread_mutex_unlock(&ftm__gc_cb_lock);
  if (r != 0) errno = ENOENT;
  return r;
}

void ftm_gc_set_debug(unsigned flags) { ftm_atomic_store_relaxed(&ftm__gc_debug, flags); }
unsigned ftm_gc_get_debug(void) { return ftm_atomic_load_relaxed(&ftm__gc_debug); }

/* ---- introspection, with the mutators parked ---------------------------------------- */
/* gc lock, and every other attached thread parked; young lists handed over
 * to the pending list.  false (EAGAIN) if a thread did not answer. */
static bool ftm__gc_world_stop(ftm__tstate *ts) {
  ftm__gc_api_lock(ts);
  ftm_atomic_store_relaxed(&ftm__gc_collector, ts);
  if (!ftm__handshake(ts, FTM_HS_PARK, ftm__gc_timeout(false))) {
    ftm_atomic_store_relaxed(&ftm__gc_collector, NULL);
    ftm__gc_api_unlock(ts);
    errno = EAGAIN;
    return false;
  }
  return true;
}

static void ftm__gc_world_start(ftm__tstate *ts) {
  ftm__gc_unpark();
  ftm_atomic_store_relaxed(&ftm__gc_collector, NULL);
  ftm__gc_api_unlock(ts);
}

/* The lists of generation gen (-1: all, frozen included); world stopped. */
static unsigned ftm__gc_lists_of(int gen, ftm__gc_list **out) {
  unsigned n = 0;
  if (gen == 0 || gen < 0) out[n++] = &ftm__gc_pending;
  if (gen == 1 || gen < 0) out[n++] = &ftm__gc_gen[1];
  if (gen == 2 || gen < 0) out[n++] = &ftm__gc_gen[2];
  if (gen < 0) out[n++] = &ftm__gc_gen[3];
  return n;
}

typedef struct {
  ftm_object **out;
  size_t cap, n;
  ftm_object *target;
  bool hit;
} ftm__gc_collect_arg;

static void ftm__gc_out(ftm__gc_collect_arg *a, ftm_object *o) {
  if (a->n < a->cap) {
    ftm_incref(o);
    a->out[a->n] = o;
  }
  a->n++;
}

size_t ftm_gc_get_objects(int gen, ftm_object **out, size_t cap) {
  ftm__tstate *ts = ftm__gc_api_enter("ftm_gc_get_objects");
  if (gen > 2) gen = 2;
  ftm__gc_collect_arg a = {.out = out, .cap = cap};
  if (!ftm__gc_world_stop(ts)) return 0;
  ftm__gc_list *lists[4];
  unsigned nl = ftm__gc_lists_of(gen, lists);
  for (unsigned l = 0; l < nl; l++)
    for (ftm__gc_chunk *c = lists[l]->head; c != NULL; c = c->next)
      for (uint32_t i = 0; i < c->n; i++) {
        ftm_object *o = ftm_atomic_load_relaxed(&c->cells[i]);
        if (o != NULL && !(ftm_atomic_load_relaxed(&o->ob_gc_bits) & FTM_GCB_DEAD)) ftm__gc_out(&a, o);
      }
  ftm__gc_world_start(ts);
  return a.n;
}

static int ftm__visit_find(ftm_object *y, void *arg) {
  ftm__gc_collect_arg *a = arg;
  if (y == a->target) a->hit = true;
  return 0;
}

size_t ftm_gc_get_referrers(ftm_object *target, ftm_object **out, size_t cap) {
  ftm__tstate *ts = ftm__gc_api_enter("ftm_gc_get_referrers");
  ftm__gc_collect_arg a = {.out = out, .cap = cap, .target = target};
  if (!ftm__gc_world_stop(ts)) return 0;
  ftm__gc_list *lists[4];
  unsigned nl = ftm__gc_lists_of(-1, lists);
  for (unsigned l = 0; l < nl; l++)
    for (ftm__gc_chunk *c = lists[l]->head; c != NULL; c = c->next)
      for (uint32_t i = 0; i < c->n; i++) {
        ftm_object *o = ftm_atomic_load_relaxed(&c->cells[i]);
        if (o == NULL || (ftm_atomic_load_relaxed(&o->ob_gc_bits) & FTM_GCB_DEAD)) continue;
        a.hit = false;
        o->ob_type->traverse(o, ftm__visit_find, &a);
        if (a.hit) ftm__gc_out(&a, o);
      }
  ftm__gc_world_start(ts);
  return a.n;
}

typedef struct {
  ftm__gc_collect_arg a;
  ftm__gc_run run; /* for the debug check's message */
} ftm__gc_referents_arg;

static int ftm__visit_referent(ftm_object *y, void *arg) {
  ftm__gc_referents_arg *r = arg;
  if (y == NULL) return 0;
  ftm__gc_check_visit(&r->run, y, true);
  ftm__gc_out(&r->a, y);
  return 0;
}

size_t ftm_gc_get_referents(ftm_object *o, ftm_object **out, size_t cap) {
  ftm__tstate *ts = ftm__gc_api_enter("ftm_gc_get_referents");
  if (o->ob_type->traverse == NULL) return 0;
  ftm__gc_referents_arg r = {.a = {.out = out, .cap = cap}, .run = {.cur = o}};
  if (!ftm__gc_world_stop(ts)) return 0;
  o->ob_type->traverse(o, ftm__visit_referent, &r);
  ftm__gc_world_start(ts);
  return r.a.n;
}

void ftm_gc_freeze(void) {
  ftm__tstate *ts = ftm__gc_api_enter("ftm_gc_freeze");
  if (!ftm__gc_world_stop(ts)) return;
  ftm__list_splice(&ftm__gc_gen[3], &ftm__gc_pending);
  ftm__gc_pending_compacted = 0;
  ftm__list_splice(&ftm__gc_gen[3], &ftm__gc_gen[1]);
  ftm__list_splice(&ftm__gc_gen[3], &ftm__gc_gen[2]);
  ftm__gc_gen_count[1] = ftm__gc_gen_count[2] = 0;
  ftm__gc_long_lived_total = ftm__gc_long_lived_pending = 0;
  ftm_atomic_store_relaxed(&ftm__gc_count0, 0);
  ftm__gc_world_start(ts);
}

void ftm_gc_unfreeze(void) {
  ftm__tstate *ts = ftm__gc_api_enter("ftm_gc_unfreeze");
  ftm__gc_api_lock(ts);
  size_t n = ftm__list_live(&ftm__gc_gen[3]);
  ftm__list_splice(&ftm__gc_gen[2], &ftm__gc_gen[3]);
  ftm__gc_gen_count[2] += n;
  ftm__gc_long_lived_pending += n;
  ftm__gc_api_unlock(ts);
}

size_t ftm_gc_get_freeze_count(void) {
  ftm__tstate *ts = ftm__gc_api_enter("ftm_gc_get_freeze_count");
  ftm__gc_api_lock(ts);
  size_t n = ftm__list_live(&ftm__gc_gen[3]);
  ftm__gc_api_unlock(ts);
  return n;
}

size_t ftm_gc_garbage(ftm_object **out, size_t cap) {
  ftm__tstate *ts = ftm__gc_api_enter("ftm_gc_garbage");
  ftm__gc_api_lock(ts);
  size_t n = ftm__gc_nsaved;
  for (size_t i = 0; i < n && i < cap; i++) out[i] = ftm_newref(ftm__gc_saved[i]);
  ftm__gc_api_unlock(ts);
  return n;
}

void ftm_gc_garbage_clear(void) {
  ftm__tstate *ts = ftm__gc_api_enter("ftm_gc_garbage_clear");
  ftm__gc_api_lock(ts);
  ftm_object **v = ftm__gc_saved;
  size_t n = ftm__gc_nsaved;
  ftm__gc_saved = NULL;
  ftm__gc_nsaved = ftm__gc_saved_cap = 0;
  ftm__gc_api_unlock(ts);
  for (size_t i = 0; i < n; i++) ftm_decref(v[i]);
  ftm_free(v);
}

/* ---- fork ---------------------------------------------------------------------- */
/* No collection is running across fork (we hold its lock), and no
 * hand-over is half done. */
void ftm__gc_prefork(void) {
  ftm__tstate *ts = ftm__ts;
  if (ts != NULL && ftm_atomic_load_relaxed(&ts->xstate) == FTM_TS_ATTACHED)
    ftm__gc_lock_spin(ts); /* keep answering a running collection */
  else
    pthread_mutex_lock(&ftm__gc_lock);
  pthread_mutex_lock(&ftm__gc_cb_lock);
  pthread_mutex_lock(&ftm__gc_bg_lock);
  pthread_mutex_lock(&ftm__gc_hand_lock);
}

void ftm__gc_postfork(bool child) {
  if (child) {
    /* the vanished threads' young objects become the child's; their
     * grey buffers are stale; the collector threads are gone */
    ftm__tstate *self = ftm__ts;
    uint32_t n = ftm_atomic_load_relaxed(&ftm__tstate_count);
    for (uint32_t i = 0; i < n && i < FTM_MAX_TSTATES; i++) {
      ftm__tstate *ts = ftm_atomic_load_relaxed(&ftm__tstates[i]);
      if (ts == NULL || ts == self) continue;
      ftm__list_splice(&ftm__gc_pending, &ts->gc_young);
      ftm__greys_drop_locked(&ts->gc_greys);
      ts->gc_ngrey = 0;
      ts->gc_count = 0;
    }
    ftm_atomic_store_relaxed(&ftm__gc_bg_state, 0);
    ftm__gc_bg_due = 0;
    pthread_cond_init(&ftm__gc_bg_cond, NULL);
  }
  pthread_mutex_unlock(&ftm__gc_hand_lock);
  pthread_mutex_unlock(&ftm__gc_bg_lock);
  pthread_mutex_unlock(&ftm__gc_cb_lock);
  pthread_mutex_unlock(&ftm__gc_lock);
}
