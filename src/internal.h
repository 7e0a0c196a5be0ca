/* internal.h — internal API of ftmem: the inline fast paths (size classes,
 * page-map lookup, malloc and free of small blocks) and the declarations of
 * the out-of-line slow paths they fall into.  Nothing here is installed.
 */
#ifndef FTM_INTERNAL_H
#define FTM_INTERNAL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftmem.h"
#include "track.h"
#include "types.h"

#define ftm_likely(x) __builtin_expect(!!(x), 1)
#define ftm_unlikely(x) __builtin_expect(!!(x), 0)
#define ftm_noinline __attribute__((noinline))
#define ftm_cold __attribute__((cold, noinline))
#define ftm_internal __attribute__((visibility("hidden")))
#define ftm_noreturn __attribute__((noreturn))

#if defined(FTMEM_DEBUG) || defined(FTMEM_SECURE) || FTM_TRACK
#define FTM_CHECK_DOUBLE_FREE 1
#else
#define FTM_CHECK_DOUBLE_FREE 0
#endif

/* ---- Errors and assertions ---------------------------------------------- */
ftm_internal ftm_noreturn void ftm__fatal(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), cold));
ftm_internal void ftm__warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
ftm_internal ftm_noreturn void ftm__assert_fail(const char *expr, const char *file, int line);

#if defined(FTMEM_DEBUG)
#define ftm_assert(x) ((x) ? (void)0 : ftm__assert_fail(#x, __FILE__, __LINE__))
#else
#define ftm_assert(x) ((void)0)
#endif

/* ---- Options ------------------------------------------------------------- */
ftm_internal long ftm__option(ftm_option_t o);

/* ---- OS layer (os.c) ----------------------------------------------------- */
ftm_internal void *ftm__os_map(size_t size);
ftm_internal void *ftm__os_map_aligned(size_t size, size_t align);
ftm_internal void ftm__os_unmap(void *p, size_t size);
ftm_internal void ftm__os_purge(void *p, size_t size);
ftm_internal bool ftm__os_protect(void *p, size_t size, bool guard);
ftm_internal int64_t ftm__clock_ms(void);
ftm_internal size_t ftm__os_rss(size_t *peak);
ftm_internal uint64_t ftm__random(void);
ftm_internal uint64_t ftm__random_fast(void);
ftm_internal extern size_t ftm__os_page;
ftm_internal extern _Atomic uint64_t ftm__os_mapped;  /* bytes currently mapped */
ftm_internal extern _Atomic uint64_t ftm__os_purges;  /* purge/unmap calls */

/* ---- Page map (pagemap.c) ------------------------------------------------ */
typedef _Atomic(ftm__pool *) ftm__pm_entry;
ftm_internal extern ftm__pm_entry *_Atomic ftm__pagemap_top[1u << FTM_PM_TOP_BITS];

/* The pool descriptor covering p, or NULL if p is not in memory ftmem
 * handed out.  Relaxed: a pointer being freed was obtained from malloc,
 * which happens-before the free through the program's own ordering. */
static inline ftm__pool *ftm__pagemap_lookup(const void *p) {
  uintptr_t a = (uintptr_t)p;
  /* the top index is masked, not range-checked: an address above 2^48
   * aliases a lower one, whose pool then fails ftm__pool_is_block */
  ftm__pm_entry *leaf = ftm_atomic_load_relaxed(
      &ftm__pagemap_top[(a >> (FTM_SLICE_SHIFT + FTM_PM_LEAF_BITS)) & ((1u << FTM_PM_TOP_BITS) - 1)]);
  return ftm_atomic_load_relaxed(&leaf[(a >> FTM_SLICE_SHIFT) & ((1u << FTM_PM_LEAF_BITS) - 1)]);
}
ftm_internal bool ftm__pagemap_set(void *start, size_t size, ftm__pool *pool);

/* ---- Size classes -------------------------------------------------------- */
ftm_internal extern const uint32_t ftm__class_size[FTM_CLASSES];

static inline unsigned ftm__size_class(size_t size) {
  if (size <= FTM_SMALL_MAX) return size <= 16 ? 0 : (unsigned)((size - 1) >> 4);
  size_t s1 = size - 1;
  unsigned b = 63u - (unsigned)__builtin_clzll(s1); /* floor(log2(size-1)) >= 9 */
  unsigned q = (unsigned)(s1 >> (b - 2)) & 3u;
  return FTM_SMALL_CLASSES + (b - 9) * 4 + q;
}

/* ---- Arena layer (arena.c) ----------------------------------------------- */
ftm_internal extern ftm__arena ftm__arenas[FTM_MAX_ARENAS];
ftm_internal extern _Atomic uint32_t ftm__arena_count;
ftm_internal ftm__pool *ftm__arena_pool_alloc(unsigned span, bool aligned, uint32_t *hint);
ftm_internal void ftm__arena_pool_free(ftm__pool *pool);
ftm_internal bool ftm__arena_pool_resize(ftm__pool *pool, unsigned span);
ftm_internal bool ftm__arena_set_guards(uint32_t index, unsigned span, bool guard_last);
ftm_internal ftm__pool *ftm__pool_of_index(uint32_t index);
ftm_internal size_t ftm__arena_purge(int64_t now, bool force);
ftm_internal void ftm__arena_counts(uint64_t *free_slices, uint64_t *dirty_slices, uint64_t *used_slices);

/* ---- Pools (pool.c) ------------------------------------------------------ */
ftm_internal void ftm__pool_init(ftm__pool *pool, unsigned cls, uint64_t key);
ftm_internal bool ftm__pool_extend(ftm__pool *pool);
ftm_internal void ftm__pool_collect(ftm__pool *pool);
ftm_internal unsigned ftm__pool_span(unsigned cls);
ftm_internal extern _Atomic uint32_t ftm__class_pools[FTM_CLASSES]; /* pools initialised, not yet freed */
ftm_internal ftm_noreturn void ftm__invalid_free(const void *p, const char *what);
ftm_internal ftm_noreturn void ftm__double_free(const void *p, const char *what);

/* ---- Heaps (heap.c) ------------------------------------------------------ */
ftm_internal extern ftm__heap ftm__heap_empty;
ftm_internal extern ftm__pool ftm__pool_empty;
ftm_internal extern __thread ftm__heap *ftm__heap_tls __attribute__((tls_model("initial-exec")));
ftm_internal extern ftm__heap *_Atomic ftm__heaps[FTM_MAX_HEAPS];
ftm_internal extern _Atomic uint32_t ftm__heap_count;
ftm_internal extern ftm_tstack_t ftm__abandoned[FTM_CLASSES];
ftm_internal extern _Atomic uint64_t ftm__abandoned_count;

static inline ftm__heap *ftm__heap_get(void) { return ftm__heap_tls; }

ftm_internal void *ftm__malloc_generic(ftm__heap *heap, size_t size, size_t align);
ftm_internal void ftm__free_slow(void *p, ftm__pool *pool, ftm__heap *heap);
ftm_internal void *ftm__malloc_untraced(size_t size); /* ftm_malloc without the tracing hook */
ftm_internal void ftm__heap_retire(ftm__heap *heap, ftm__pool *pool);
ftm_internal void ftm__heap_collect(ftm__heap *heap, bool force);
ftm_internal void ftm__heap_thread_done(void *heap);
ftm_internal size_t ftm__abandoned_sweep(void);
ftm_internal uint64_t ftm__orphan_free_count(unsigned cls);
ftm_internal void ftm__heap_postfork_child(void);

/* ---- Large blocks (large.c) ---------------------------------------------- */
ftm_internal void *ftm__large_alloc(ftm__heap *heap, size_t size, size_t align);
ftm_internal void ftm__large_free(ftm__pool *desc, void *p);
ftm_internal void *ftm__large_realloc(ftm__pool *desc, void *p, size_t size);
ftm_internal size_t ftm__large_purge(int64_t now, bool force);
ftm_internal void ftm__large_counts(uint64_t *cached, uint64_t *cached_bytes);
ftm_internal void ftm__large_stats(uint64_t *nmalloc, uint64_t *nfree, uint64_t *live_bytes);
ftm_internal size_t ftm__large_usable(ftm__pool *d, const void *p);
/* The size of the block at p (aborts naming `what` if p is not one). */
ftm_internal size_t ftm__block_usable(const void *p);

/* ---- Purging (purge.c) --------------------------------------------------- */
ftm_internal void ftm__purge_note_dirty(int64_t expire);
ftm_internal void ftm__purge_tick(void);
ftm_internal void ftm__purge_maybe_start(void);
ftm_internal void ftm__purge_now(bool force);
ftm_internal void ftm__purge_prefork(void);
ftm_internal void ftm__purge_postfork(bool child);

/* ---- Statistics per size class (stats.c), for the report (report.c) ---- */
typedef struct {
  uint32_t block_size, pools;
  uint64_t blocks_total, blocks_used, mallocs, frees;
} ftm__class_stat;
ftm_internal void ftm__class_stats(ftm__class_stat out[FTM_CLASSES]);
ftm_internal void ftm__report_init_from_env(void);
ftm_internal void ftm__report_at_exit(void);

/* ---- Process set-up (init.c) --------------------------------------------- */
ftm_internal extern _Atomic int ftm__init_state; /* 0 none, 1 running, 2 done */
ftm_internal void ftm__init_slow(void);
static inline void ftm__init(void) {
  if (ftm_unlikely(ftm_atomic_load_acquire(&ftm__init_state) != 2)) ftm__init_slow();
}
ftm_internal extern pthread_key_t ftm__thread_key;

/* Is p the start of a block carved in pool?  Exact division by
 * multiplying with the inverse (Granlund & Montgomery 1994): with
 * block_size = m * 2^k (m odd), off * m^-1 rotated right by k equals
 * off / block_size when block_size divides off, and is larger than any
 * block index otherwise; one compare then also checks off < capacity. */
static inline bool ftm__pool_is_block(const ftm__pool *pool, const void *p) {
  uint64_t x = ((uintptr_t)p - (uintptr_t)ftm__pool_start(pool)) * pool->div_inv;
  unsigned k = pool->div_shift;
  x = (x >> k) | (x << ((64 - k) & 63));
  return x < ftm_atomic_load_relaxed(&pool->xcapacity);
}

/* ---- Free-list encoding and the double-free marker ------------------------ */
/* The link and the mark live inside free blocks, which FTMEM_TRACK builds
 * keep noaccess: each access opens its word just around itself (track.h). */
static inline ftm__block *ftm__block_next(const ftm__pool *pool, const ftm__block *b) {
  ftm__track_open(b, sizeof(void *));
  ftm__block *n = b->next;
  ftm__track_close(b, sizeof(void *));
#if defined(FTMEM_SECURE)
  n = (ftm__block *)((uintptr_t)n ^ pool->key);
  if (ftm_unlikely(n != NULL && !ftm__pool_is_block(pool, n)))
    ftm__fatal("ftmem: corrupted free list in pool %p (block %p links to %p)\n",
               (void *)ftm__pool_start(pool), (void *)b, (void *)n);
#else
  (void)pool;
#endif
  return n;
}
static inline void ftm__block_set_next(const ftm__pool *pool, ftm__block *b, ftm__block *n) {
  ftm__track_open(b, sizeof(void *));
#if defined(FTMEM_SECURE)
  b->next = (ftm__block *)((uintptr_t)n ^ pool->key);
#else
  (void)pool;
  b->next = n;
#endif
  ftm__track_close(b, sizeof(void *));
}
/* The second word of a free block holds key ^ address while it is free, so
 * freeing it again is recognised (blocks are at least 16 bytes). */
static inline uintptr_t ftm__free_mark(const ftm__pool *pool, const void *b) {
  return (uintptr_t)pool->key ^ (uintptr_t)b ^ (uintptr_t)0x5bd1e995u;
}
/* Freeing b: abort if it carries the free mark already, else set it. */
static inline void ftm__mark_free(const ftm__pool *pool, void *b) {
#if FTM_CHECK_DOUBLE_FREE
  uintptr_t *w = (uintptr_t *)b + 1;
  ftm__track_open(w, sizeof *w);
  if (ftm_unlikely(*w == ftm__free_mark(pool, b))) ftm__double_free(b, "free");
  *w = ftm__free_mark(pool, b);
  ftm__track_close(w, sizeof *w);
#else
  (void)pool, (void)b;
#endif
}
/* Handing b out: clear the mark. */
static inline void ftm__mark_used(void *b) {
#if FTM_CHECK_DOUBLE_FREE
  uintptr_t *w = (uintptr_t *)b + 1;
  ftm__track_open(w, sizeof *w);
  *w = 0;
  ftm__track_close(w, sizeof *w);
#else
  (void)b;
#endif
}

/* ---- Fast paths ---------------------------------------------------------- */
/* Hand out b, the head of pool's free list (owner only), counting it. */
static inline void *ftm__pool_pop(ftm__pool *pool, ftm__block *b, ftm_counter_t *count) {
  pool->free = ftm__block_next(pool, b);
  pool->used++;
  ftm_counter_add(count, 1);
  ftm__mark_used(b);
  return b;
}

static inline void *ftm__malloc_small(ftm__heap *heap, size_t size) {
  size_t w = (size + 7) >> 3;
  ftm__pool *pool = heap->direct[w];
  ftm__block *b = pool->free;
  if (ftm_unlikely(b == NULL)) return ftm__malloc_generic(heap, size, 0);
  return ftm__pool_pop(pool, b, &heap->stats.malloc_direct[w]);
}

/* Blocks of 513 B .. 128 KiB: the class by a bit scan, then the same pop
 * from the class's current pool. */
static inline void *ftm__malloc_medium(ftm__heap *heap, size_t size) {
  unsigned cls = ftm__size_class(size);
  ftm__pool *pool = heap->current[cls];
  ftm__block *b = pool->free;
  if (ftm_unlikely(b == NULL)) return ftm__malloc_generic(heap, size, 0);
  return ftm__pool_pop(pool, b, &heap->stats.malloc_n[cls]);
}

ftm_internal void ftm__trace_forget(const void *p);

static inline void ftm__free_fast(void *p) {
  ftm__pool *pool = ftm__pagemap_lookup(p);
  ftm__heap *heap = ftm__heap_get();
  /* tracing: forget the trace before the block can be reused (only pools
   * with live traced blocks are looked up) */
  if (ftm_unlikely(pool != NULL && ftm_atomic_load_relaxed(&pool->xtraced))) ftm__trace_forget(p);
  if (ftm_likely(pool != NULL && ftm_atomic_load_relaxed(&pool->xlocal_owner) == heap &&
                 ftm__pool_is_block(pool, p))) {
    ftm__block *b = (ftm__block *)p;
    ftm__track_free(b, pool->block_size);
    ftm__mark_free(pool, b);
    ftm__block_set_next(pool, b, pool->local_free);
    pool->local_free = b;
    ftm_counter_add(&heap->stats.free_n[pool->cls], 1);
    if (ftm_unlikely(--pool->used == 0)) ftm__heap_retire(heap, pool);
    return;
  }
  ftm__free_slow(p, pool, heap);
}

#endif
