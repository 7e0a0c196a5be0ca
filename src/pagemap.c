/* pagemap.c — the page map: a two-level radix over the 48-bit address
 * space, one entry per 64 KiB slice, naming the pool descriptor that owns
 * the slice (NULL: not ours).  free() asks it before touching anything, so
 * a stack address or another allocator's pointer is recognised, never
 * taken for ours.  The lookup itself is inline in internal.h.
 *
 * Top-level entries start at a shared all-NULL leaf (so the lookup needs no
 * NULL check); a real leaf (8 MiB of address space, committed only where
 * touched) is installed with a CAS the first time a slice in its range is
 * set.  Leaves are never freed.
 */
#include "internal.h"

#define FTM_PM_LEAF_ENTRIES (1u << FTM_PM_LEAF_BITS)

static ftm__pm_entry ftm__pm_empty_leaf[FTM_PM_LEAF_ENTRIES];

ftm__pm_entry *_Atomic ftm__pagemap_top[1u << FTM_PM_TOP_BITS] = {
    [0 ...(1u << FTM_PM_TOP_BITS) - 1] = ftm__pm_empty_leaf};

static ftm__pm_entry *ftm__pagemap_leaf(size_t top) {
  ftm__pm_entry *leaf = ftm_atomic_load_acquire(&ftm__pagemap_top[top]);
  if (leaf != ftm__pm_empty_leaf) return leaf;
  ftm__pm_entry *fresh = ftm__os_map(FTM_PM_LEAF_ENTRIES * sizeof(ftm__pm_entry));
  if (fresh == NULL) return NULL;
  /* acq_rel: publishes the (zeroed) leaf; pairs with the acquire above */
  if (!ftm_atomic_cas_strong_acq_rel(&ftm__pagemap_top[top], &leaf, fresh)) {
    ftm__os_unmap(fresh, FTM_PM_LEAF_ENTRIES * sizeof(ftm__pm_entry));
    return leaf; /* another thread installed it */
  }
  return fresh;
}

/* Point every slice of [start, start+size) at pool (or clear with NULL).
 * start and size are multiples of the slice size.  False if a leaf could
 * not be mapped (out of memory; only possible when setting): the slices
 * set before the failure are cleared again, so a caller that gives up
 * leaves no entry naming its pool. */
bool ftm__pagemap_set(void *start, size_t size, ftm__pool *pool) {
  uintptr_t a = (uintptr_t)start, end = a + size;
  ftm_assert((a & (FTM_SLICE_SIZE - 1)) == 0 && (size & (FTM_SLICE_SIZE - 1)) == 0);
  if (end >> FTM_PM_ADDR_BITS) return false;
  for (; a < end; a += FTM_SLICE_SIZE) {
    size_t top = a >> (FTM_SLICE_SHIFT + FTM_PM_LEAF_BITS);
    ftm__pm_entry *leaf = pool ? ftm__pagemap_leaf(top) : ftm_atomic_load_acquire(&ftm__pagemap_top[top]);
    if (leaf == NULL) {
      if (a != (uintptr_t)start) ftm__pagemap_set(start, a - (uintptr_t)start, NULL);
      return false;
    }
    if (leaf == ftm__pm_empty_leaf) continue; /* clearing a never-set range */
    ftm_atomic_store_relaxed(&leaf[(a >> FTM_SLICE_SHIFT) & (FTM_PM_LEAF_ENTRIES - 1)], pool);
  }
  return true;
}
