/* arena.c — the shared arena layer: 4 MiB arenas of 64 slices, handing
 * out runs of slices as pools and taking them back, and purging free slices
 * (madvise) once they have been idle for the purge delay.
 *
 * Lock-free: each arena's free slices are one 64-bit bitmap (`xfree`); a
 * pool is claimed by one CAS that clears its bits and returned by one
 * fetch_or that sets them.  The purger claims free-and-dirty slices the same
 * way, so nobody can hand them out while it purges.  Arena records live in a
 * static array outside arena memory; arenas are never unmapped, so pool
 * descriptors (in slice 0) stay readable for the lock-free stacks.
 * Not here: what a pool holds (pool.c), who owns it (heap.c).
 */
#include <string.h>

#include "internal.h"

ftm__arena ftm__arenas[FTM_MAX_ARENAS];
_Atomic uint32_t ftm__arena_count; /* records handed out; xbase may lag */

static inline uint64_t ftm__run_mask(unsigned span, unsigned first) {
  return (span >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << span) - 1)) << first;
}

static ftm__pool *ftm__arena_desc(char *base, unsigned slice) {
  return (ftm__pool *)(base + (size_t)slice * FTM_POOL_DESC_SIZE);
}

ftm__pool *ftm__pool_of_index(uint32_t index) {
  uint32_t i = index - 1;
  char *base = ftm_atomic_load_acquire(&ftm__arenas[i / FTM_ARENA_SLICES].xbase);
  return ftm__arena_desc(base, i % FTM_ARENA_SLICES);
}

/* Bits where a run of `span` set bits of f starts (aligned to span if asked). */
static uint64_t ftm__run_starts(uint64_t f, unsigned span, bool aligned) {
  uint64_t x = f & FTM_ARENA_DATA_MASK;
  for (unsigned i = 1; i < span && x; i++) x &= f >> i; /* x: starts of runs */
  if (aligned && span > 1) {
    uint64_t starts = 0;
    for (unsigned p = 0; p < FTM_ARENA_SLICES; p += span) starts |= (uint64_t)1 << p;
    x &= starts;
  }
  return x;
}
/* Single slices are taken from the low end of an arena and longer runs
 * from the high end, so scattered small pools do not break up the runs. */
static int ftm__pick(uint64_t x, unsigned span) {
  return span == 1 ? __builtin_ctzll(x) : 63 - __builtin_clzll(x);
}
/* First slice of a run of `span` free slices in bitmap f, preferring a run
 * that is wholly dirty (its pages are still resident: reusing it costs no
 * page faults); -1 if none. */
static int ftm__find_run(uint64_t f, uint64_t dirty, unsigned span, bool aligned) {
  uint64_t warm = ftm__run_starts(f & dirty, span, aligned); /* wholly resident runs */
  if (warm) return ftm__pick(warm, span);
  uint64_t x = ftm__run_starts(f, span, aligned);
  return x ? ftm__pick(x, span) : -1;
}

/* Claim `span` free slices in arena ai; the pool descriptor of the first
 * slice, zeroed apart from its geometry. */
static ftm__pool *ftm__arena_try_claim(uint32_t ai, unsigned span, bool aligned) {
  ftm__arena *a = &ftm__arenas[ai];
  /* acquire: pairs with the release store of xbase when the arena is made */
  char *base = ftm_atomic_load_acquire(&a->xbase);
  if (base == NULL) return NULL;
  uint64_t f = ftm_atomic_load_relaxed(&a->xfree);
  for (;;) {
    int first = ftm__find_run(f, ftm_atomic_load_relaxed(&a->xdirty), span, aligned);
    if (first < 0) return NULL;
    uint64_t m = ftm__run_mask(span, (unsigned)first);
    /* acq_rel: acquire pairs with the release fetch_or of the previous
     * owner's ftm__arena_pool_free, so its writes to the slices and the
     * descriptor happen-before ours */
    if (ftm_atomic_cas_weak_acq_rel(&a->xfree, &f, f & ~m)) {
      ftm_atomic_fetch_and_relaxed(&a->xdirty, ~m);
      ftm_atomic_fetch_and_relaxed(&a->xdirty_old, ~m);
      if (!ftm_atomic_load_relaxed(&a->xhdr_dirty)) ftm_atomic_store_relaxed(&a->xhdr_dirty, 1);
      ftm__pool *pool = ftm__arena_desc(base, (unsigned)first);
      memset(pool, 0, offsetof(ftm__pool, xstack_next));
      pool->index = ai * FTM_ARENA_SLICES + (unsigned)first + 1;
      pool->span = (uint8_t)span;
      ftm__pool_set_start(pool, base + (size_t)first * FTM_SLICE_SIZE);
      return pool;
    }
  }
}

/* Map a new arena, then take a record for it: a failed mmap (out of
 * memory) must not use up a record — records are never given back, and
 * with all of them gone no arena could ever be made again. */
static bool ftm__arena_create(void) {
  if (ftm_atomic_load_relaxed(&ftm__arena_count) >= FTM_MAX_ARENAS) return false;
  char *base = ftm__os_map_aligned(FTM_ARENA_SIZE, FTM_ARENA_SIZE);
  if (base == NULL) return false;
  uint32_t ai = ftm_atomic_fetch_add_relaxed(&ftm__arena_count, 1);
  if (ai >= FTM_MAX_ARENAS) { /* another thread took the last record meanwhile */
    ftm_atomic_fetch_sub_relaxed(&ftm__arena_count, 1);
    ftm__os_unmap(base, FTM_ARENA_SIZE);
    return false;
  }
  ftm__arena *a = &ftm__arenas[ai];
  ftm_atomic_store_relaxed(&a->xfree, FTM_ARENA_DATA_MASK);
  /* release: the bitmap above is visible to whoever sees the base */
  ftm_atomic_store_release(&a->xbase, base);
  return true;
}

/* A fresh pool of `span` slices (aligned to span: pools of power-of-two
 * blocks rely on it), searched from *hint (the heap's last arena) so
 * threads spread over arenas.  NULL with errno = ENOMEM. */
ftm__pool *ftm__arena_pool_alloc(unsigned span, bool aligned, uint32_t *hint) {
  for (int round = 0; round < 8; round++) {
    uint32_t n = ftm_atomic_load_acquire(&ftm__arena_count);
    if (n > FTM_MAX_ARENAS) n = FTM_MAX_ARENAS;
    uint32_t start = (*hint < n) ? *hint : 0;
    for (uint32_t k = 0; k < n; k++) {
      uint32_t ai = (start + k) % n;
      ftm__pool *pool = ftm__arena_try_claim(ai, span, aligned);
      if (pool) {
        *hint = ai;
        return pool;
      }
    }
    if (!ftm__arena_create()) break;
  }
  errno = ENOMEM;
  return NULL;
}

/* Give a pool's slices back to its arena; they become dirty free slices,
 * purged once idle for the purge delay. */
/* Return slices `m` of arena a: they become dirty free slices, purged once
 * idle for the purge delay. */
static void ftm__arena_slices_free(ftm__arena *a, uint64_t m) {
  ftm_atomic_fetch_or_relaxed(&a->xdirty, m);
  int64_t now = ftm__clock_ms(), expire = now + ftm__option(FTM_OPTION_PURGE_DELAY);
  ftm_atomic_store_relaxed(&a->xlast_free, now);
  int64_t cur = ftm_atomic_load_relaxed(&a->xpurge_at);
  if (cur == 0) ftm_atomic_cas_strong_acq_rel(&a->xpurge_at, &cur, expire);
  /* release: pairs with the acquire CAS of the next claimer */
  ftm_atomic_fetch_or_release(&a->xfree, m);
  ftm__purge_note_dirty(expire);
}

/* Give a pool's slices back to its arena. */
void ftm__arena_pool_free(ftm__pool *pool) {
  uint32_t i = pool->index - 1;
  if (pool->kind == FTM_POOL_SMALL) ftm_atomic_fetch_sub_relaxed(&ftm__class_pools[pool->cls], 1);
  pool->guarded = 0; /* the guard page itself stays (see ftm__arena_set_guards) */
  ftm__pagemap_set(ftm__pool_start(pool), (size_t)pool->span * FTM_SLICE_SIZE, NULL);
  ftm_atomic_store_relaxed(&pool->xheap, NULL);
  ftm_atomic_store_relaxed(&pool->xlocal_owner, NULL);
  ftm__arena_slices_free(&ftm__arenas[i / FTM_ARENA_SLICES], ftm__run_mask(pool->span, i % FTM_ARENA_SLICES));
}

/* FTMEM_SECURE: make the run of `span` slices of the pool at `index`
 * (arena * 64 + first slice + 1) accessible, except, if guard_last, the
 * last page of its last slice.  Returns whether that guard is in place.
 * The caller owns the slices. */
bool ftm__arena_set_guards(uint32_t index, unsigned span, bool guard_last) {
  uint32_t i = index - 1;
  unsigned first = i % FTM_ARENA_SLICES;
  ftm__arena *a = &ftm__arenas[i / FTM_ARENA_SLICES];
  char *base = ftm_atomic_load_relaxed(&a->xbase);
  /* relaxed: our own slices' bits, last changed by their previous owner,
   * whose release of the slices (the free bitmap CAS) we acquired */
  uint64_t g = ftm_atomic_load_relaxed(&a->xguard);
  bool ok = false;
  for (unsigned s = first; s < first + span; s++) {
    char *page = base + (size_t)(s + 1) * FTM_SLICE_SIZE - ftm__os_page;
    bool want = guard_last && s == first + span - 1;
    bool has = (g >> s) & 1;
    if (has == want) {
      ok = ok || want;
      continue;
    }
    if (!ftm__os_protect(page, ftm__os_page, want)) {
      if (!want) ftm__fatal("ftmem: cannot lift the guard page at %p\n", (void *)page);
      continue; /* the kernel refused a guard (map count): go unguarded */
    }
    if (want) ftm_atomic_fetch_or_relaxed(&a->xguard, (uint64_t)1 << s);
    else ftm_atomic_fetch_and_relaxed(&a->xguard, ~((uint64_t)1 << s));
    ok = ok || want;
  }
  return ok;
}

/* Resize a pool in place to `span` slices: shrinking returns its tail
 * slices, growing claims the free slices right after it (one CAS).  False
 * if they are not free.  The caller owns the pool (a large block). */
bool ftm__arena_pool_resize(ftm__pool *pool, unsigned span) {
  uint32_t i = pool->index - 1;
  unsigned first = i % FTM_ARENA_SLICES;
  ftm__arena *a = &ftm__arenas[i / FTM_ARENA_SLICES];
  if (span == pool->span) return true;
  if (span < pool->span) {
    ftm__pagemap_set(ftm__pool_start(pool) + (size_t)span * FTM_SLICE_SIZE,
                     (size_t)(pool->span - span) * FTM_SLICE_SIZE, NULL);
    ftm__arena_slices_free(a, ftm__run_mask(pool->span - span, first + span));
    pool->span = (uint8_t)span;
    return true;
  }
  if (first + span > FTM_ARENA_SLICES) return false;
  uint64_t m = ftm__run_mask(span - pool->span, first + pool->span);
  uint64_t f = ftm_atomic_load_relaxed(&a->xfree);
  do {
    if ((f & m) != m) return false;
    /* acq_rel: as in ftm__arena_try_claim */
  } while (!ftm_atomic_cas_weak_acq_rel(&a->xfree, &f, f & ~m));
  ftm_atomic_fetch_and_relaxed(&a->xdirty, ~m);
  ftm_atomic_fetch_and_relaxed(&a->xdirty_old, ~m);
  size_t old = (size_t)pool->span * FTM_SLICE_SIZE;
  /* does not fail in practice: an arena lies inside one page-map leaf,
   * which exists since the pool's first slice is mapped (setting fails
   * only when it has to create a leaf, out of memory).  If it did, the
   * slices go back and the caller copies (or fails with ENOMEM) */
  if (!ftm__pagemap_set(ftm__pool_start(pool) + old, (size_t)span * FTM_SLICE_SIZE - old, pool)) {
    ftm__arena_slices_free(a, m);
    return false;
  }
  pool->span = (uint8_t)span;
  return true;
}

static void ftm__purge_runs(char *base, uint64_t m) {
  while (m) {
    unsigned first = (unsigned)__builtin_ctzll(m);
    unsigned len = (unsigned)__builtin_ctzll(~(m >> first));
    if (first + len > 64) len = 64 - first;
    ftm__os_purge(base + (size_t)first * FTM_SLICE_SIZE, (size_t)len * FTM_SLICE_SIZE);
    m &= ~ftm__run_mask(len, first);
  }
}

/* Descriptor pages are worth a purge pass only when resident and every
 * data slice is free (only then can they be dropped). */
static bool ftm__arena_hdr_purgeable(ftm__arena *a) {
  return ftm_atomic_load_relaxed(&a->xhdr_dirty) != 0 &&
         (ftm_atomic_load_relaxed(&a->xfree) & FTM_ARENA_DATA_MASK) == FTM_ARENA_DATA_MASK;
}

/* Purge passes, at most one per arena per purge delay.  A pass purges the
 * free slices that were already dirty at the previous pass (xdirty_old) —
 * or all dirty slices if the arena saw no free for a whole delay — then
 * ages: what is dirty now becomes old.  So a slice is returned between
 * one and two delays after it was freed, and slices freed just before a
 * pass are not purged by it (a busy arena keeps reusing warm slices).
 * force purges every dirty free slice now.  Returns the earliest pass still
 * pending (0: none). */
size_t ftm__arena_purge(int64_t now, bool force) {
  int64_t next = 0, delay = ftm__option(FTM_OPTION_PURGE_DELAY);
  uint32_t n = ftm_atomic_load_acquire(&ftm__arena_count);
  if (n > FTM_MAX_ARENAS) n = FTM_MAX_ARENAS;
  for (uint32_t ai = 0; ai < n; ai++) {
    ftm__arena *a = &ftm__arenas[ai];
    char *base = ftm_atomic_load_acquire(&a->xbase);
    if (base == NULL) continue;
    uint64_t dirty = ftm_atomic_load_relaxed(&a->xdirty) & FTM_ARENA_DATA_MASK;
    bool hdr = ftm__arena_hdr_purgeable(a);
    if (dirty == 0 && !hdr) continue;
    int64_t at = ftm_atomic_load_relaxed(&a->xpurge_at);
    if (at == 0) { /* dirty but unscheduled (a race with a reset): schedule */
      at = now + delay;
      ftm_atomic_store_relaxed(&a->xpurge_at, at);
    }
    if (!force && at > now) {
      if (next == 0 || at < next) next = at;
      continue;
    }
    /* claim the old dirty free slices (all of them if nothing was freed
     * for a whole delay), purge, give back */
    bool idle = now >= ftm_atomic_load_relaxed(&a->xlast_free) + delay;
    uint64_t target = force || idle ? dirty : ftm_atomic_load_relaxed(&a->xdirty_old);
    uint64_t f = ftm_atomic_load_relaxed(&a->xfree);
    uint64_t m;
    do {
      m = f & target & FTM_ARENA_DATA_MASK;
      if (m == 0) break;
      /* acq_rel: acquire pairs with the release fetch_or of pool_free */
    } while (!ftm_atomic_cas_weak_acq_rel(&a->xfree, &f, f & ~m));
    if (m) {
      ftm__purge_runs(base, m);
      ftm_atomic_fetch_and_relaxed(&a->xdirty, ~m);
      ftm_atomic_fetch_and_relaxed(&a->xdirty_old, ~m);
      ftm_atomic_fetch_or_release(&a->xfree, m); /* pairs with claimers' acquire */
    }
    /* an arena with every data slice free and clean also drops its
     * descriptor pages */
    if (hdr && (ftm_atomic_load_relaxed(&a->xdirty) & FTM_ARENA_DATA_MASK) == 0) {
      uint64_t all = FTM_ARENA_DATA_MASK;
      if (ftm_atomic_cas_strong_acq_rel(&a->xfree, &all, 0)) {
        ftm_atomic_store_relaxed(&a->xhdr_dirty, 0);
        size_t hdr_bytes = (FTM_ARENA_SLICES * FTM_POOL_DESC_SIZE + ftm__os_page - 1) & ~(ftm__os_page - 1);
        ftm__os_purge(base, hdr_bytes);
        ftm_atomic_fetch_or_release(&a->xfree, FTM_ARENA_DATA_MASK);
      }
    }
    /* age what is left; a stale old bit on a slice claimed meanwhile only
     * makes that slice's next purge early */
    uint64_t left = ftm_atomic_load_relaxed(&a->xdirty) & ftm_atomic_load_relaxed(&a->xfree);
    ftm_atomic_store_relaxed(&a->xdirty_old, left);
    /* come back while dirty slices remain, or while the descriptor pages
     * could be dropped (every data slice free) — not merely because they
     * are resident under pools in use: that would wake the purger every
     * delay for ever in an idle process */
    bool again = left != 0 || ftm__arena_hdr_purgeable(a);
    ftm_atomic_store_relaxed(&a->xpurge_at, again ? now + delay : 0);
    if (again && (next == 0 || now + delay < next)) next = now + delay;
  }
  return (size_t)next;
}

void ftm__arena_counts(uint64_t *free_slices, uint64_t *dirty_slices, uint64_t *used_slices) {
  uint64_t fr = 0, di = 0, us = 0;
  uint32_t n = ftm_atomic_load_acquire(&ftm__arena_count);
  if (n > FTM_MAX_ARENAS) n = FTM_MAX_ARENAS;
  for (uint32_t ai = 0; ai < n; ai++) {
    ftm__arena *a = &ftm__arenas[ai];
    if (ftm_atomic_load_acquire(&a->xbase) == NULL) continue;
    uint64_t f = ftm_atomic_load_relaxed(&a->xfree) & FTM_ARENA_DATA_MASK;
    uint64_t d = ftm_atomic_load_relaxed(&a->xdirty) & f;
    fr += (uint64_t)__builtin_popcountll(f);
    di += (uint64_t)__builtin_popcountll(d);
    us += (uint64_t)(FTM_ARENA_SLICES - 1 - __builtin_popcountll(f));
  }
  *free_slices = fr;
  *dirty_slices = di;
  *used_slices = us;
}
