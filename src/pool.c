/* pool.c — what a pool holds: the size classes, carving blocks lazily
 * (a few pages at a time, so untouched pages never become resident) and
 * collecting the owner's and other threads' frees back into the free list.
 * Not here: which heap owns a pool (heap.c), where its slices come from
 * (arena.c).
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* 16-byte steps up to 512 (pymalloc's 64-bit model: 8-byte steps cannot
 * keep every block 16-byte aligned), then four classes a doubling. */
#define FTM_MED(i) ((1u << (9 + ((i)-32) / 4)) + ((((i)-32) % 4) + 1) * (1u << (7 + ((i)-32) / 4)))
#define FTM_S4(i) 16 * ((i) + 1), 16 * ((i) + 2), 16 * ((i) + 3), 16 * ((i) + 4)
#define FTM_M4(i) FTM_MED(i), FTM_MED((i) + 1), FTM_MED((i) + 2), FTM_MED((i) + 3)
const uint32_t ftm__class_size[FTM_CLASSES] = {
    FTM_S4(0),  FTM_S4(4),  FTM_S4(8),  FTM_S4(12), FTM_S4(16), FTM_S4(20), FTM_S4(24), FTM_S4(28),
    FTM_M4(32), FTM_M4(36), FTM_M4(40), FTM_M4(44), FTM_M4(48), FTM_M4(52), FTM_M4(56), FTM_M4(60)};
_Static_assert(FTM_MED(32) == 640 && FTM_MED(35) == 1024 && FTM_MED(63) == 131072, "medium classes");

/* Slices per pool: at least 8 blocks per pool up to 32 KiB blocks, at
 * least 4 above (a 512 KiB pool for 128 KiB blocks). */
_Atomic uint32_t ftm__class_pools[FTM_CLASSES];

unsigned ftm__pool_span(unsigned cls) {
  uint32_t bs = ftm__class_size[cls];
  return bs <= 8192 ? 1 : bs <= 32768 ? 4 : 8;
}

void ftm__pool_init(ftm__pool *pool, unsigned cls, uint64_t key) {
  uint32_t bs = ftm__class_size[cls];
  pool->kind = FTM_POOL_SMALL;
  pool->cls = (uint8_t)cls;
  pool->block_size = bs;
  size_t bytes = (size_t)pool->span * FTM_SLICE_SIZE;
#if defined(FTMEM_SECURE)
  /* a guard page at the end: a linear overflow off the last block faults
   * instead of running into the next pool (mimalloc's secure mode does the
   * same per page).  If the kernel refuses, the pool goes unguarded. */
  pool->guarded = ftm__arena_set_guards(pool->index, pool->span, true);
  if (pool->guarded) bytes -= ftm__os_page;
#endif
  pool->reserved = (uint32_t)(bytes / bs);
  unsigned k = (unsigned)__builtin_ctz(bs);
  uint64_t m = bs >> k, inv = m; /* Newton: each step doubles the correct bits */
  for (int i = 0; i < 5; i++) inv *= 2 - m * inv;
  pool->div_inv = inv;
  pool->div_shift = (uint8_t)k;
  ftm_atomic_store_relaxed(&pool->xcapacity, 0);
  pool->free = pool->local_free = NULL;
  pool->used = 0;
  pool->key = key;
  ftm_atomic_store_relaxed(&pool->xtraced, 0);
  ftm_atomic_fetch_add_relaxed(&ftm__class_pools[cls], 1); /* the report's pools per class */
  ftm__track_noaccess(ftm__pool_start(pool), bytes); /* every block, until handed out */
}

/* Carve the next blocks (a page, then 16 KiB worth; at least one) into the empty free
 * list.  False when the pool is fully carved. */
bool ftm__pool_extend(ftm__pool *pool) {
  ftm_assert(pool->free == NULL);
  uint32_t cap = ftm_atomic_load_relaxed(&pool->xcapacity);
  uint32_t left = pool->reserved - cap;
  if (left == 0) return false;
  uint32_t bs = pool->block_size;
  /* a page at first, then 16 KiB at a time: a class used a few times
   * touches one page, a busy one takes the slow path rarely */
  uint32_t n = (cap == 0 ? 4096 : 16384) / bs;
  if (n == 0) n = 1;
  if (n > left) n = left;
  char *first = ftm__pool_start(pool) + (size_t)cap * bs;
  /* before linking: the secure decoder checks links against it */
  ftm_atomic_store_relaxed(&pool->xcapacity, cap + n);
#if defined(FTMEM_SECURE)
  if (n > 1) {
    /* random order (Fisher-Yates over the carved blocks): where the next
     * block lands cannot be predicted from the last one */
    uint16_t order[16384 / 16];
    _Static_assert(16384 / 16 <= UINT16_MAX, "block indexes fit");
    for (uint32_t i = 0; i < n; i++) order[i] = (uint16_t)i;
    for (uint32_t i = n - 1; i > 0; i--) {
      uint32_t j = (uint32_t)(ftm__random_fast() % (i + 1));
      uint16_t t = order[i];
      order[i] = order[j];
      order[j] = t;
    }
    for (uint32_t i = 0; i + 1 < n; i++)
      ftm__block_set_next(pool, (ftm__block *)(first + (size_t)order[i] * bs),
                          (ftm__block *)(first + (size_t)order[i + 1] * bs));
    ftm__block_set_next(pool, (ftm__block *)(first + (size_t)order[n - 1] * bs), NULL);
    pool->free = (ftm__block *)(first + (size_t)order[0] * bs);
    return true;
  }
#endif
  ftm__block *b = (ftm__block *)first;
  for (uint32_t i = 0; i + 1 < n; i++) {
    ftm__block *nb = (ftm__block *)((char *)b + bs);
    ftm__block_set_next(pool, b, nb);
    b = nb;
  }
  ftm__block_set_next(pool, b, NULL);
  pool->free = (ftm__block *)first;
  return true;
}

/* Owner: bring other threads' frees home (they were not yet subtracted from
 * `used`), then refill an empty free list from the owner's frees. */
void ftm__pool_collect(ftm__pool *pool) {
  ftm_rl_node_t *list = ftm_rl_take_local(&pool->thread_free);
  if (list != NULL) {
    ftm__block *head = (ftm__block *)list, *tail = head;
    uint32_t n = 1;
    for (ftm__block *nx; (nx = ftm__block_next(pool, tail)) != NULL; tail = nx) n++;
    ftm_assert(n <= pool->used);
    ftm__block_set_next(pool, tail, pool->local_free);
    pool->local_free = head;
    pool->used -= n;
  }
  if (pool->free == NULL && pool->local_free != NULL) {
    pool->free = pool->local_free;
    pool->local_free = NULL;
  }
}

ftm_noreturn void ftm__invalid_free(const void *p, const char *what) {
  ftm__fatal("ftmem: %s(): invalid pointer %p (not a block ftmem handed out)\n", what, p);
}

ftm_noreturn void ftm__double_free(const void *p, const char *what) {
  ftm__fatal("ftmem: %s(): double free %p\n", what, p);
}
