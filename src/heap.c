/* heap.c — the per-thread heap: which pools a thread owns, the malloc slow
 * path that finds or makes a pool with free blocks, frees that miss the
 * fast path (remote, parked pools, bad pointers), and a thread's exit
 * (abandonment) and other threads' adoption of what it left.
 *
 * Ownership protocol (see also lockfree/remote_list.h):
 *  - A pool is in exactly one place: a heap's class queue, that heap's full
 *    queue (in_full), an abandoned stack, or free in its arena.
 *  - The owner parks a pool with nothing free by setting FULL in its
 *    remote-free word (only possible while that word is 0).  The remote
 *    freer whose push clears FULL sets NOTIFYING and pushes the pool on the
 *    owner's notify stack; the owner clears NOTIFYING when it takes the
 *    pool off that stack.  So a pool is on a notify stack at most once, and
 *    a pool with NOTIFYING set is never freed or abandoned.
 *  - On exit a heap clears FULL on all its pools, waits for in-flight
 *    notifications to land, drains them, then frees empty pools and pushes
 *    the rest on per-class abandoned stacks (xheap = NULL).  Remote frees
 *    into abandoned pools go to thread_free as always; the adopter (a heap
 *    needing a pool of that class, or the purger's sweep) collects them.
 * Entry points: ftm__malloc_generic, ftm__free_slow, ftm__heap_retire,
 * ftm__heap_thread_done, ftm__heap_collect, ftm__abandoned_sweep.
 */
#include <sched.h>
#include <string.h>

#include "internal.h"

ftm__pool ftm__pool_empty;
ftm__heap ftm__heap_empty = {.direct = {[0 ... FTM_DIRECT_N - 1] = &ftm__pool_empty},
                              .current = {[0 ... FTM_CLASSES - 1] = &ftm__pool_empty}};
__thread ftm__heap *ftm__heap_tls = &ftm__heap_empty;
static __thread bool ftm__thread_done; /* past this thread's heap destructor */

ftm__heap *_Atomic ftm__heaps[FTM_MAX_HEAPS];
_Atomic uint32_t ftm__heap_count;
static ftm_tstack_t ftm__free_heaps;
ftm_tstack_t ftm__abandoned[FTM_CLASSES];
_Atomic uint64_t ftm__abandoned_count;
/* frees by threads that have no heap (never allocated, or exiting) */
static _Atomic uint64_t ftm__orphan_free[FTM_CLASSES + 1];

/* ---- queues ----------------------------------------------------------------- */
static void ftm__queue_remove(ftm__pool_queue *q, ftm__pool *p) {
  if (p->prev) p->prev->next = p->next; else q->first = p->next;
  if (p->next) p->next->prev = p->prev; else q->last = p->prev;
  p->next = p->prev = NULL;
  q->count--;
}
static void ftm__queue_push_front(ftm__pool_queue *q, ftm__pool *p) {
  p->prev = NULL;
  p->next = q->first;
  if (q->first) q->first->prev = p; else q->last = p;
  q->first = p;
  q->count++;
}
static void ftm__queue_push_back(ftm__pool_queue *q, ftm__pool *p) {
  p->next = NULL;
  p->prev = q->last;
  if (q->last) q->last->next = p; else q->first = p;
  q->last = p;
  q->count++;
}

/* Keep current[] and direct[] == the first pool of each class (or the
 * empty pool). */
static void ftm__heap_update_direct(ftm__heap *heap, unsigned cls) {
  ftm__pool *p = heap->queues[cls].first ? heap->queues[cls].first : &ftm__pool_empty;
  heap->current[cls] = p;
  if (cls >= FTM_SMALL_CLASSES) return;
  if (cls == 0) {
    heap->direct[0] = heap->direct[1] = heap->direct[2] = p;
  } else {
    heap->direct[2 * cls + 1] = heap->direct[2 * cls + 2] = p;
  }
}

static void ftm__heap_make_first(ftm__heap *heap, ftm__pool *pool) {
  ftm__pool_queue *q = &heap->queues[pool->cls];
  if (q->first != pool) {
    ftm__queue_remove(q, pool);
    ftm__queue_push_front(q, pool);
  }
  ftm__heap_update_direct(heap, pool->cls);
}

/* No current pool in any class (a new or abandoned heap). */
static void ftm__heap_clear_current(ftm__heap *heap) {
  for (unsigned w = 0; w < FTM_DIRECT_N; w++) heap->direct[w] = &ftm__pool_empty;
  for (unsigned c = 0; c < FTM_CLASSES; c++) heap->current[c] = &ftm__pool_empty;
}

/* ---- heaps ------------------------------------------------------------------ */
static _Atomic uint32_t *ftm__heap_link(uint32_t index, void *ctx) {
  (void)ctx;
  return &ftm_atomic_load_acquire(&ftm__heaps[index - 1])->xstack_next;
}

static ftm__heap *ftm__heap_acquire(void) {
  ftm__heap *heap;
  uint32_t idx = ftm_tstack_pop_mpmc(&ftm__free_heaps, ftm__heap_link, NULL);
  if (idx != 0) {
    heap = ftm_atomic_load_acquire(&ftm__heaps[idx - 1]);
  } else {
    /* the memory first, then the slot: a failed mmap (out of memory) must
     * not use up a slot, which is never given back */
    size_t sz = (sizeof(ftm__heap) + ftm__os_page - 1) & ~(ftm__os_page - 1);
    if (ftm_atomic_load_relaxed(&ftm__heap_count) >= FTM_MAX_HEAPS) return NULL;
    heap = ftm__os_map(sz);
    if (heap == NULL) return NULL;
    idx = ftm_atomic_fetch_add_relaxed(&ftm__heap_count, 1);
    if (idx >= FTM_MAX_HEAPS) {
      ftm_atomic_fetch_sub_relaxed(&ftm__heap_count, 1);
      ftm__os_unmap(heap, sz);
      return NULL;
    }
    heap->index = idx + 1;
    ck_stack_init(&heap->notify);
    /* release: pairs with the acquire loads of readers of ftm__heaps[] */
    ftm_atomic_store_release(&ftm__heaps[idx], heap);
    idx++;
  }
  ftm__heap_clear_current(heap);
  memset(heap->queues, 0, sizeof heap->queues);
  memset(&heap->full, 0, sizeof heap->full);
  uint32_t na = ftm_atomic_load_relaxed(&ftm__arena_count);
  heap->arena_hint = na ? idx % na : 0;
  heap->key = ftm__random();
  ftm_atomic_store_relaxed(&heap->xlive, 1);
  return heap;
}

static void ftm__heap_release(ftm__heap *heap) {
  ftm_atomic_store_relaxed(&heap->xlive, 0);
  ftm_tstack_push_mpmc(&ftm__free_heaps, heap->index, &heap->xstack_next);
}

static ftm__heap *ftm__heap_init_thread(void) {
  ftm__init();
  if (ftm__thread_done) return NULL;
  ftm__heap *heap = ftm__heap_acquire();
  if (heap == NULL) return NULL;
  ftm__heap_tls = heap;
  /* so that thread exit abandons the heap; may itself call malloc (keys
   * past the first 32), which now finds the heap set up */
  pthread_setspecific(ftm__thread_key, heap);
  return heap;
}

/* ---- parking and unparking full pools -------------------------------------- */
static void ftm__heap_unfull(ftm__heap *heap, ftm__pool *pool) {
  ftm_assert(pool->in_full);
  ftm__queue_remove(&heap->full, pool);
  pool->in_full = 0;
  ftm_rl_clear_flags_local(&pool->thread_free, FTM_RL_FULL);
  ftm_atomic_store_relaxed(&pool->xlocal_owner, heap);
  ftm__pool_queue *q = &heap->queues[pool->cls];
  ftm__queue_push_back(q, pool);
  if (q->first == pool) ftm__heap_update_direct(heap, pool->cls);
}

static void ftm__heap_drain_notify(ftm__heap *heap) {
  /* ck_pr_load: CK_STACK_ISEMPTY is a plain read, racing with pushers */
  if (ck_pr_load_ptr(&heap->notify.head) == NULL) return;
  ck_stack_entry_t *e = ck_stack_batch_pop_upmc(&heap->notify);
  while (e != NULL) {
    ck_stack_entry_t *next = e->next;
    ftm__pool *pool = (ftm__pool *)((char *)e - offsetof(ftm__pool, notify_entry));
    ftm_rl_clear_flags_local(&pool->thread_free, FTM_RL_NOTIFYING);
    if (pool->in_full) ftm__heap_unfull(heap, pool);
    e = next;
  }
}

/* Return a pool whose blocks are all free to its arena. */
static void ftm__heap_pool_free(ftm__heap *heap, ftm__pool *pool) {
  ftm__pool_queue *q = pool->in_full ? &heap->full : &heap->queues[pool->cls];
  ftm__queue_remove(q, pool);
  if (!pool->in_full) ftm__heap_update_direct(heap, pool->cls);
  pool->in_full = 0;
  ftm__arena_pool_free(pool);
}

/* The fast path saw `used` drop to 0 in a pool of a class queue. */
void ftm__heap_retire(ftm__heap *heap, ftm__pool *pool) {
  ftm__pool_queue *q = &heap->queues[pool->cls];
  /* keep the only small pool of a class: a thread that frees its last
   * block and allocates again must not bounce a pool through the arena.
   * If much of it was carved, give its pages back and carve it afresh
   * later: a thread that drained a big pool and went idle must not hold
   * it resident (this happens at most once per drain; the ping-pong case
   * above keeps a barely carved pool and never gets here again). */
  if (q->first == pool && pool->next == NULL && pool->span == 1) {
    if ((size_t)ftm_atomic_load_relaxed(&pool->xcapacity) * pool->block_size > 16384 &&
        ftm_rl_flags(&pool->thread_free) == 0) {
      pool->free = pool->local_free = NULL;
      ftm_atomic_store_relaxed(&pool->xcapacity, 0);
      ftm__os_purge(ftm__pool_start(pool), FTM_SLICE_SIZE);
    }
    return;
  }
  if (ftm_rl_flags(&pool->thread_free) & FTM_RL_NOTIFYING) return; /* on the notify stack */
  ftm__heap_pool_free(heap, pool);
  ftm__purge_maybe_start(); /* a program that only frees from now on still purges */
}

/* ---- abandonment and adoption ----------------------------------------------- */
static _Atomic uint32_t *ftm__pool_link(uint32_t index, void *ctx) {
  (void)ctx;
  return &ftm__pool_of_index(index)->xstack_next;
}

static void ftm__pool_abandon(ftm__pool *pool) {
  ftm_atomic_store_relaxed(&pool->xlocal_owner, NULL);
  pool->in_full = 0;
  pool->next = pool->prev = NULL;
  ftm_atomic_store_relaxed(&pool->xheap, NULL);
  ftm_atomic_fetch_add_relaxed(&ftm__abandoned_count, 1);
  /* the push's release publishes the pool's owner-only fields to the adopter */
  ftm_tstack_push_mpmc(&ftm__abandoned[pool->cls], pool->index, &pool->xstack_next);
}

static void ftm__heap_abandon(ftm__heap *heap) {
  /* 1. no new notifications: clear FULL everywhere (a racing pusher that
   * won sets NOTIFYING instead) */
  for (ftm__pool *p = heap->full.first; p; p = p->next)
    ftm_rl_clear_flags_local(&p->thread_free, FTM_RL_FULL);
  /* 2. wait for in-flight notifications to land, then drain them */
  for (unsigned spins = 0;; spins++) {
    ftm__heap_drain_notify(heap);
    bool pending = false;
    for (unsigned c = 0; c < FTM_CLASSES && !pending; c++)
      for (ftm__pool *p = heap->queues[c].first; p && !pending; p = p->next)
        pending = (ftm_rl_flags(&p->thread_free) & FTM_RL_NOTIFYING) != 0;
    for (ftm__pool *p = heap->full.first; p && !pending; p = p->next)
      pending = (ftm_rl_flags(&p->thread_free) & FTM_RL_NOTIFYING) != 0;
    if (!pending) break;
    if (spins > 64) sched_yield(); else ftm_cpu_relax();
  }
  /* 3. free what is empty, abandon the rest */
  for (unsigned c = 0; c < FTM_CLASSES; c++) {
    ftm__pool *p = heap->queues[c].first;
    while (p) {
      ftm__pool *next = p->next;
      ftm__pool_collect(p);
      if (p->used == 0) ftm__arena_pool_free(p); else ftm__pool_abandon(p);
      p = next;
    }
    memset(&heap->queues[c], 0, sizeof heap->queues[c]);
  }
  for (ftm__pool *p = heap->full.first; p;) {
    ftm__pool *next = p->next;
    ftm__pool_collect(p);
    if (p->used == 0) ftm__arena_pool_free(p); else ftm__pool_abandon(p);
    p = next;
  }
  memset(&heap->full, 0, sizeof heap->full);
  ftm__heap_clear_current(heap);
}

/* Take a pool of class cls that an exited thread left; NULL if none. */
static ftm__pool *ftm__heap_adopt(ftm__heap *heap, unsigned cls) {
  uint32_t idx = ftm_tstack_pop_mpmc(&ftm__abandoned[cls], ftm__pool_link, NULL);
  if (idx == 0) return NULL;
  ftm_atomic_fetch_sub_relaxed(&ftm__abandoned_count, 1);
  ftm__pool *pool = ftm__pool_of_index(idx);
  ftm_assert(pool->cls == cls && ftm_atomic_load_relaxed(&pool->xheap) == NULL);
  /* release: a remote freer that later sees FULL (set by us, acq_rel)
   * reads this owner */
  ftm_atomic_store_release(&pool->xheap, heap);
  ftm_atomic_store_relaxed(&pool->xlocal_owner, heap);
  ftm__queue_push_back(&heap->queues[cls], pool);
  if (heap->queues[cls].first == pool) ftm__heap_update_direct(heap, cls);
  return pool;
}

/* The purger's sweep: pools of exited threads whose blocks have all come
 * back (remote frees) go back to their arenas even if no thread ever
 * allocates that class again.  Returns the pools freed. */
size_t ftm__abandoned_sweep(void) {
  size_t freed = 0;
  for (unsigned c = 0; c < FTM_CLASSES; c++) {
    if (ftm_tstack_is_empty(&ftm__abandoned[c])) continue;
    ftm__pool *keep = NULL;
    uint32_t idx;
    while ((idx = ftm_tstack_pop_mpmc(&ftm__abandoned[c], ftm__pool_link, NULL)) != 0) {
      ftm__pool *pool = ftm__pool_of_index(idx);
      ftm__pool_collect(pool); /* we own it while it is off the stack */
      if (pool->used == 0) {
        ftm_atomic_fetch_sub_relaxed(&ftm__abandoned_count, 1);
        ftm__arena_pool_free(pool);
        freed++;
      } else {
        pool->next = keep;
        keep = pool;
      }
    }
    while (keep) {
      ftm__pool *next = keep->next;
      keep->next = NULL;
      ftm_tstack_push_mpmc(&ftm__abandoned[c], keep->index, &keep->xstack_next);
      keep = next;
    }
  }
  return freed;
}

/* ---- the malloc slow path ---------------------------------------------------- */

/* Can pool (in its class queue) serve a malloc now?  If so it becomes
 * first in its queue; if it has nothing free it is parked on the full
 * queue (unless a remote free just arrived, which makes it usable). */
static bool ftm__heap_try_pool(ftm__heap *heap, ftm__pool *pool) {
  ftm__pool_collect(pool);
  if (pool->free == NULL && !ftm__pool_extend(pool)) {
    if (ftm_rl_set_full_local(&pool->thread_free)) {
      ftm__queue_remove(&heap->queues[pool->cls], pool);
      ftm_atomic_store_relaxed(&pool->xlocal_owner, NULL);
      pool->in_full = 1;
      ftm__queue_push_back(&heap->full, pool);
      ftm__heap_update_direct(heap, pool->cls);
      return false;
    }
    ftm__pool_collect(pool); /* the word was not 0: a remote free arrived */
    if (pool->free == NULL) return false;
  }
  ftm__heap_make_first(heap, pool);
  return true;
}

/* A pool of class cls with a free block, first in its queue; NULL + ENOMEM. */
static ftm__pool *ftm__heap_find_pool(ftm__heap *heap, unsigned cls) {
  ftm__pool_queue *q = &heap->queues[cls];
  for (ftm__pool *pool = q->first; pool != NULL;) {
    ftm__pool *next = pool->next;
    if (ftm__heap_try_pool(heap, pool)) return pool;
    pool = next;
  }
  /* pools exited threads left behind */
  for (int tries = 0; tries < 8; tries++) {
    ftm__pool *pool = ftm__heap_adopt(heap, cls);
    if (pool == NULL) break;
    if (ftm__heap_try_pool(heap, pool)) return pool;
  }
  /* a fresh pool */
  unsigned span = ftm__pool_span(cls);
  ftm__pool *pool = ftm__arena_pool_alloc(span, true, &heap->arena_hint);
  if (pool == NULL) return NULL;
  ftm__pool_init(pool, cls, heap->key ^ ((uint64_t)pool->index * 0x9e3779b97f4a7c15ull));
  if (!ftm__pagemap_set(ftm__pool_start(pool), (size_t)span * FTM_SLICE_SIZE, pool)) {
    ftm__arena_pool_free(pool);
    errno = ENOMEM;
    return NULL;
  }
  ftm_atomic_store_release(&pool->xheap, heap); /* see ftm__heap_adopt */
  ftm_atomic_store_relaxed(&pool->xlocal_owner, heap);
  ftm__pool_extend(pool);
  ftm__queue_push_front(q, pool);
  ftm__heap_update_direct(heap, cls);
  return pool;
}

static void *ftm__heap_malloc(ftm__heap *heap, size_t size, size_t align) {
  if (++heap->ticks % 8 == 0) ftm__purge_tick();
  ftm__heap_drain_notify(heap);
  if (align > FTM_MIN_ALIGN) {
    /* power-of-two blocks are aligned to their size (pools are aligned to
     * their span), so round up to one when it can serve the alignment */
    size_t s = size < align ? align : size;
    if (s > FTM_MEDIUM_MAX) return ftm__large_alloc(heap, size, align);
    size = (size_t)1 << (64 - __builtin_clzll(s - 1));
  }
  if (size > FTM_MEDIUM_MAX) return ftm__large_alloc(heap, size, align);
  unsigned cls = ftm__size_class(size);
  ftm__pool *pool = ftm__heap_find_pool(heap, cls);
  if (ftm_unlikely(pool == NULL)) {
    errno = ENOMEM;
    return NULL;
  }
  return ftm__pool_pop(pool, pool->free, &heap->stats.malloc_n[cls]);
}

/* Allocation by a thread that is past its heap's destructor: borrow a heap,
 * allocate, abandon at once (later frees are then remote frees). */
static ftm_cold void *ftm__malloc_transient(size_t size, size_t align) {
  ftm__heap *heap = ftm__heap_acquire();
  if (heap == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  void *p = ftm__heap_malloc(heap, size, align);
  ftm__heap_abandon(heap);
  ftm__heap_release(heap);
  return p;
}

void *ftm__malloc_generic(ftm__heap *heap, size_t size, size_t align) {
  if (ftm_unlikely(heap == &ftm__heap_empty)) {
    heap = ftm__heap_init_thread();
    if (heap == NULL) return ftm__malloc_transient(size, align);
  }
  return ftm__heap_malloc(heap, size, align);
}

/* ---- the free slow path --------------------------------------------------------- */
#if defined(FTMEM_SECURE)
static uintptr_t ftm__encode_link(uintptr_t next, void *pool) {
  return next ^ ((ftm__pool *)pool)->key;
}
#define FTM_ENCODE_LINK ftm__encode_link
#else
#define FTM_ENCODE_LINK NULL
#endif

void ftm__free_slow(void *p, ftm__pool *pool, ftm__heap *heap) {
  if (pool == NULL) {
    if (p == NULL) return;
    ftm__invalid_free(p, "free");
  }
  if (pool->kind == FTM_POOL_LARGE) {
#if FTM_TRACK
    if (p == ftm__large_user(pool)) ftm__track_free(p, pool->user_size);
#endif
    ftm__large_free(pool, p);
    return;
  }
  if (!ftm__pool_is_block(pool, p)) ftm__invalid_free(p, "free");
  ftm__block *b = (ftm__block *)p;
  ftm__track_free(b, pool->block_size);
  ftm__mark_free(pool, b);
  unsigned cls = pool->cls;
  if (heap != &ftm__heap_empty && ftm_atomic_load_relaxed(&pool->xheap) == heap) {
    /* ours, but parked full (the fast-path gate was closed) */
    ftm__block_set_next(pool, b, pool->local_free);
    pool->local_free = b;
    ftm_counter_add(&heap->stats.free_n[cls], 1);
    if (pool->in_full) ftm__heap_unfull(heap, pool);
    if (--pool->used == 0) ftm__heap_retire(heap, pool);
    return;
  }
  /* another thread's pool (or an abandoned one): one CAS */
  if (heap != &ftm__heap_empty)
    ftm_counter_add(&heap->stats.free_n[cls], 1);
  else
    ftm_atomic_fetch_add_relaxed(&ftm__orphan_free[cls], 1);
  /* the push writes the link: opened here and closed by the owner's walk
   * in ftm__pool_collect (closing it after the CAS would race with that
   * walk's own open) */
  ftm__track_open(b, sizeof(void *));
  if (ftm_rl_push_remote(&pool->thread_free, (ftm_rl_node_t *)b, FTM_ENCODE_LINK, pool)) {
    /* we cleared FULL: the owner must hear of it.  It cannot abandon the
     * heap before this push lands (it waits for NOTIFYING to be drained) */
    ftm__heap *owner = ftm_atomic_load_acquire(&pool->xheap);
    ck_stack_push_upmc(&owner->notify, &pool->notify_entry);
  }
}

/* ---- thread exit, collection, fork ---------------------------------------------- */
void ftm__heap_thread_done(void *arg) {
  ftm__heap *heap = arg;
  if (heap == NULL || heap == &ftm__heap_empty) return;
  ftm__thread_done = true;
  ftm__heap_tls = &ftm__heap_empty;
  ftm__heap_abandon(heap);
  ftm__heap_release(heap);
  ftm__purge_note_dirty(ftm__clock_ms() + ftm__option(FTM_OPTION_PURGE_DELAY)); /* sweep soon */
  ftm__purge_maybe_start();
}

/* Free the calling thread's empty pools (force: also the one kept per class). */
void ftm__heap_collect(ftm__heap *heap, bool force) {
  if (heap == &ftm__heap_empty) return;
  ftm__heap_drain_notify(heap);
  for (unsigned c = 0; c < FTM_CLASSES; c++) {
    for (ftm__pool *p = heap->queues[c].first; p;) {
      ftm__pool *next = p->next;
      ftm__pool_collect(p);
      if (p->used == 0 && (force || heap->queues[c].count > 1) &&
          !(ftm_rl_flags(&p->thread_free) & FTM_RL_NOTIFYING))
        ftm__heap_pool_free(heap, p);
      p = next;
    }
  }
}

/* In the child of a fork only this thread exists: a remote freer that was
 * between its FULL->NOTIFYING CAS and its push onto our notify stack is
 * gone, so its pool would stay NOTIFYING (never reused, and our exit would
 * wait for it for ever).  Finish its work: unpark such pools. */
void ftm__heap_postfork_child(void) {
  ftm__heap *heap = ftm__heap_get();
  if (heap == &ftm__heap_empty) return;
  ftm__heap_drain_notify(heap);
  for (ftm__pool *p = heap->full.first; p;) {
    ftm__pool *next = p->next;
    if (ftm_rl_flags(&p->thread_free) & FTM_RL_NOTIFYING) {
      ftm_rl_clear_flags_local(&p->thread_free, FTM_RL_NOTIFYING);
      ftm__heap_unfull(heap, p);
    }
    p = next;
  }
  for (unsigned c = 0; c < FTM_CLASSES; c++)
    for (ftm__pool *p = heap->queues[c].first; p; p = p->next)
      ftm_rl_clear_flags_local(&p->thread_free, FTM_RL_NOTIFYING);
}

uint64_t ftm__orphan_free_count(unsigned cls) { return ftm_atomic_load_relaxed(&ftm__orphan_free[cls]); }
