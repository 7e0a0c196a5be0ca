/* large.c — blocks above FTM_MEDIUM_MAX, one block per descriptor of kind
 * LARGE.  Up to FTM_ARENA_LARGE_MAX a block is a run of arena slices (its
 * descriptor in the arena's slice 0, map_size 0): freed, the slices go back
 * to the arena and are reused warm or purged after the delay, like pools.
 * Above that each block is its own mapping, aligned to 64 KiB (so the page
 * map can name it slice by slice), starting with its descriptor; freed
 * mappings wait in a small lock-free cache (one atomic slot each) for reuse
 * and are unmapped once idle for the purge delay; realloc moves their pages
 * with mremap instead of copying.
 */
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define FTM_LARGE_SLOTS 64

static _Atomic(ftm__pool *) ftm__large_cache[FTM_LARGE_SLOTS];
static _Atomic size_t ftm__large_cache_len[FTM_LARGE_SLOTS]; /* a hint, read before claiming */

static _Atomic uint64_t ftm__large_nmalloc, ftm__large_nfree, ftm__large_live_bytes;

void ftm__large_stats(uint64_t *nmalloc, uint64_t *nfree, uint64_t *live_bytes) {
  *nmalloc = ftm_atomic_load_relaxed(&ftm__large_nmalloc);
  *nfree = ftm_atomic_load_relaxed(&ftm__large_nfree);
  *live_bytes = ftm_atomic_load_relaxed(&ftm__large_live_bytes);
}

static size_t ftm__align_up(size_t x, size_t a) { return (x + a - 1) & ~(a - 1); }

static void ftm__large_unmap(ftm__pool *d) {
  size_t len = d->map_size;
  ftm__pagemap_set(d, len, NULL);
  ftm__os_unmap(d, len);
  ftm_atomic_fetch_add_relaxed(&ftm__os_purges, 1);
}

/* Resize mapping d to len bytes: shrink by unmapping its tail, grow by
 * moving its pages (mremap) into a fresh reservation aligned like the old
 * one, so resident pages stay resident.  Returns the (possibly moved)
 * descriptor, or NULL with d unchanged. */
static ftm__pool *ftm__large_remap(ftm__pool *d, size_t len, size_t base_align) {
  size_t old_len = d->map_size;
  if (len == old_len) return d;
  if (len < old_len) {
    char *tail = (char *)d + len;
    ftm__pagemap_set(tail, old_len - len, NULL);
    ftm__os_unmap(tail, old_len - len);
    d->map_size = len;
    return d;
  }
  void *dst = ftm__os_map_aligned(len, base_align);
  if (dst == NULL) return NULL;
  /* name the new range before the move, while failing is still harmless:
   * the page map may need a new leaf for it (out of memory: NULL, d
   * unchanged).  Nobody holds a pointer into dst yet, and the descriptor
   * is there once mremap returns */
  if (!ftm__pagemap_set(dst, len, (ftm__pool *)dst)) {
    ftm__os_unmap(dst, len);
    return NULL;
  }
  /* clear our entries first: once mremap returns, another thread may map
   * the old range and set entries there that we must not wipe */
  ftm__pagemap_set(d, old_len, NULL);
  /* tracked builds: the old range leaves ftmem (its cached block was
   * noaccess), and the pages arrive at dst as ASan last saw dst */
  ftm__track_forget(d, old_len);
  void *r = mremap(d, old_len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
  if (r == MAP_FAILED) {
    ftm__track_noaccess((char *)d + FTM_LARGE_HEADER, old_len - FTM_LARGE_HEADER);
    ftm__pagemap_set(dst, len, NULL);
    ftm__pagemap_set(d, old_len, d); /* cannot fail: the leaves exist */
    ftm__os_unmap(dst, len);
    return NULL;
  }
  ftm_atomic_fetch_sub_relaxed(&ftm__os_mapped, old_len); /* the old range is gone */
  d = r;
  d->map_size = len;
  return d;
}

static ftm__pool *ftm__large_cache_claim(unsigned i) {
  /* acquire: pairs with the release CAS that cached it */
  return ftm_atomic_exchange_acq_rel(&ftm__large_cache[i], NULL);
}

static void ftm__large_cache_return(unsigned i, ftm__pool *d) {
  ftm__pool *empty = NULL;
  if (!ftm_atomic_cas_strong_acq_rel(&ftm__large_cache[i], &empty, d)) ftm__large_unmap(d);
}

/* A cached mapping of at least `len` bytes: the best fit at least that
 * large (kept whole unless it is over 8 times larger: unmapping resident
 * pages only to fault them in again later costs more), else the largest
 * smaller one grown by moving its pages.  Either way most of its pages are still resident, so
 * the block costs no page faults for them.  NULL if the cache is empty. */
static ftm__pool *ftm__large_cache_take(size_t len) {
  for (int attempt = 0; attempt < 4; attempt++) {
    int fit = -1, grow = -1;
    size_t fit_len = SIZE_MAX, grow_len = 0;
    for (unsigned i = 0; i < FTM_LARGE_SLOTS; i++) {
      if (ftm_atomic_load_relaxed(&ftm__large_cache[i]) == NULL) continue;
      size_t have = ftm_atomic_load_relaxed(&ftm__large_cache_len[i]); /* a hint */
      if (have >= len && have < fit_len) fit = (int)i, fit_len = have;
      if (have < len && have > grow_len) grow = (int)i, grow_len = have;
    }
    int pick = fit >= 0 ? fit : grow;
    if (pick < 0) return NULL;
    ftm__pool *d = ftm__large_cache_claim((unsigned)pick);
    if (d == NULL) continue; /* another thread took it */
    if (d->map_size > 8 * len) {
      d = ftm__large_remap(d, 8 * len, FTM_SLICE_SIZE); /* bound the waste */
    } else if (d->map_size < len) {
      ftm__pool *g = ftm__large_remap(d, len, FTM_SLICE_SIZE);
      if (g == NULL) {
        ftm__large_cache_return((unsigned)pick, d);
        return NULL;
      }
      d = g;
    }
    return d;
  }
  return NULL;
}

static bool ftm__large_cache_put(ftm__pool *d) {
  unsigned slots = (unsigned)ftm__option(FTM_OPTION_LARGE_CACHE);
  if (slots > FTM_LARGE_SLOTS) slots = FTM_LARGE_SLOTS;
  for (unsigned i = 0; i < slots; i++) {
    if (ftm_atomic_load_relaxed(&ftm__large_cache[i]) != NULL) continue;
    ftm__pool *empty = NULL;
    size_t len = d->map_size; /* read before publishing: d is the taker's after */
    /* release: the descriptor's fields are visible to the taker */
    if (ftm_atomic_cas_strong_acq_rel(&ftm__large_cache[i], &empty, d)) {
      ftm_atomic_store_relaxed(&ftm__large_cache_len[i], len); /* a hint; takers re-check */
      return true;
    }
  }
  return false;
}

/* A large block in arena slices: the block is the run itself. */
static void *ftm__large_alloc_arena(ftm__heap *heap, size_t size) {
  unsigned span = (unsigned)((size + FTM_SLICE_SIZE - 1) >> FTM_SLICE_SHIFT);
  uint32_t hint = heap->arena_hint;
  ftm__pool *d = ftm__arena_pool_alloc(span, false, &hint);
  if (d == NULL) return NULL;
#if defined(FTMEM_SECURE)
  ftm__arena_set_guards(d->index, span, false); /* guards left by earlier pools */
#endif
  d->kind = FTM_POOL_LARGE;
  d->cls = FTM_LARGE_CLASS;
  ftm__large_set_user(d, ftm__pool_start(d));
  d->user_size = (size_t)span * FTM_SLICE_SIZE;
  if (!ftm__pagemap_set(ftm__pool_start(d), d->user_size, d)) {
    ftm__arena_pool_free(d);
    errno = ENOMEM;
    return NULL;
  }
  ftm_atomic_fetch_add_relaxed(&ftm__large_nmalloc, 1);
  ftm_atomic_fetch_add_relaxed(&ftm__large_live_bytes, d->user_size);
  return ftm__large_user(d);
}

void *ftm__large_alloc(ftm__heap *heap, size_t size, size_t align) {
  /* a zero-size request still gets a byte: with a big alignment the user
   * pointer would otherwise sit just past the mapping (found by fuzz_alloc) */
  if (size == 0) size = 1;
  if (size <= FTM_ARENA_LARGE_MAX && align <= FTM_SLICE_SIZE && heap != &ftm__heap_empty) {
    void *p = ftm__large_alloc_arena(heap, size);
    if (p != NULL) return p;
  }
  if (align < 64) align = 64;
  size_t offset = ftm__align_up(FTM_LARGE_HEADER, align);
  size_t base_align = align > FTM_SLICE_SIZE ? align : FTM_SLICE_SIZE;
  if (size > (SIZE_MAX >> 2) - offset - base_align) {
    errno = ENOMEM;
    return NULL;
  }
  size_t len = ftm__align_up(offset + size, FTM_SLICE_SIZE);
  ftm__pool *d = NULL;
  if (base_align == FTM_SLICE_SIZE) d = ftm__large_cache_take(len);
  if (d == NULL) {
    d = ftm__os_map_aligned(len, base_align);
    if (d == NULL) {
      errno = ENOMEM;
      return NULL;
    }
    memset(d, 0, sizeof *d);
    d->fresh = 1; /* a new mapping reads as zero (calloc skips its memset) */
    d->map_size = len;
    d->kind = FTM_POOL_LARGE;
    d->cls = FTM_LARGE_CLASS;
    if (!ftm__pagemap_set(d, len, d)) { /* a new leaf, out of memory (cleared again) */
      ftm__os_unmap(d, len);
      errno = ENOMEM;
      return NULL;
    }
  }
  ftm__large_set_user(d, (char *)d + offset);
  d->user_size = d->map_size - offset;
  ftm__pool_set_start(d, ftm__large_user(d));
  ftm_atomic_fetch_add_relaxed(&ftm__large_nmalloc, 1);
  ftm_atomic_fetch_add_relaxed(&ftm__large_live_bytes, d->user_size);
  return ftm__large_user(d);
}

static void ftm__large_check(ftm__pool *d, const void *p, const char *what) {
  if (ftm__large_user(d) == NULL && p != NULL && (char *)p > (char *)d && (char *)p < (char *)d + d->map_size &&
      ((uintptr_t)p & 63) == 0)
    ftm__double_free(p, what);
  if (p != ftm__large_user(d)) ftm__invalid_free(p, what);
}

void ftm__large_free(ftm__pool *d, void *p) {
  ftm__large_check(d, p, "free");
  ftm_atomic_fetch_add_relaxed(&ftm__large_nfree, 1);
  ftm_atomic_fetch_sub_relaxed(&ftm__large_live_bytes, d->user_size);
  if (d->map_size == 0) { /* slices of an arena: back to it (clears the page map) */
    ftm__arena_pool_free(d);
    ftm__purge_maybe_start();
    return;
  }
  d->fresh = 0; /* reused from the cache, its pages are dirty */
  ftm__large_set_user(d, NULL); /* freed: a second free is recognised */
  d->user_size = 0;
  int64_t now = ftm__clock_ms();
  d->cached_at = now;
  if (ftm__large_cache_put(d)) {
    ftm__purge_note_dirty(now + ftm__option(FTM_OPTION_PURGE_DELAY));
    ftm__purge_maybe_start();
  } else {
    ftm__large_unmap(d);
  }
}

size_t ftm__large_usable(ftm__pool *d, const void *p) {
  ftm__large_check(d, p, "malloc_usable_size");
  return d->user_size;
}

/* Resize in place or by moving the pages (mremap); NULL if neither worked
 * (the caller then copies).  The block stays valid on NULL. */
void *ftm__large_realloc(ftm__pool *d, void *p, size_t size) {
  ftm__large_check(d, p, "realloc");
  if (d->map_size == 0) { /* in arena slices: resize the run in place if we can */
    if (size > FTM_ARENA_LARGE_MAX) return NULL;
    unsigned span = (unsigned)((size + FTM_SLICE_SIZE - 1) >> FTM_SLICE_SHIFT);
    size_t old_user = d->user_size;
    if (!ftm__arena_pool_resize(d, span)) return NULL;
#if defined(FTMEM_SECURE)
    ftm__arena_set_guards(d->index, span, false); /* the slices it grew into */
#endif
    d->user_size = (size_t)span * FTM_SLICE_SIZE;
    /* unsigned wrap-around makes a shrink a subtraction, as below */
    ftm_atomic_fetch_add_relaxed(&ftm__large_live_bytes, d->user_size - old_user);
    return p;
  }
  size_t offset = (size_t)((char *)p - (char *)d);
  if (size > (SIZE_MAX >> 2) - offset) return NULL;
  size_t len = ftm__align_up(offset + size, FTM_SLICE_SIZE);
  size_t old_user = d->user_size;
  if (len == d->map_size) return p;
  size_t base_align = offset > FTM_SLICE_SIZE ? offset & -offset : FTM_SLICE_SIZE;
  if (base_align < FTM_SLICE_SIZE) base_align = FTM_SLICE_SIZE;
  ftm__pool *g = ftm__large_remap(d, len, base_align); /* shrink or move */
  if (g == NULL) return NULL;
  d = g;
  ftm__large_set_user(d, (char *)d + offset);
  d->user_size = d->map_size - offset;
  ftm__pool_set_start(d, ftm__large_user(d));
  ftm_atomic_fetch_add_relaxed(&ftm__large_live_bytes, d->user_size - old_user);
  return ftm__large_user(d);
}

/* Unmap cached mappings idle past the delay (all if force); returns the
 * earliest pending expiry (0: none). */
size_t ftm__large_purge(int64_t now, bool force) {
  int64_t next = 0, delay = ftm__option(FTM_OPTION_PURGE_DELAY);
  for (unsigned i = 0; i < FTM_LARGE_SLOTS; i++) {
    if (ftm_atomic_load_relaxed(&ftm__large_cache[i]) == NULL) continue;
    ftm__pool *d = ftm_atomic_exchange_acq_rel(&ftm__large_cache[i], NULL);
    if (d == NULL) continue;
    if (force || d->cached_at + delay <= now) {
      ftm__large_unmap(d);
      continue;
    }
    int64_t at = d->cached_at + delay; /* read while d is still ours */
    ftm__pool *empty = NULL;
    if (!ftm_atomic_cas_strong_acq_rel(&ftm__large_cache[i], &empty, d)) {
      ftm__large_unmap(d);
      continue;
    }
    if (next == 0 || at < next) next = at;
  }
  return (size_t)next;
}

void ftm__large_counts(uint64_t *cached, uint64_t *cached_bytes) {
  uint64_t n = 0, b = 0;
  for (unsigned i = 0; i < FTM_LARGE_SLOTS; i++) {
    size_t len = ftm_atomic_load_relaxed(&ftm__large_cache_len[i]);
    if (ftm_atomic_load_relaxed(&ftm__large_cache[i]) != NULL) {
      n++;
      b += len;
    }
  }
  *cached = n;
  *cached_bytes = b;
}
