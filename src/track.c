/* track.c — the out-of-line half of track.h: describing handed-out and
 * freed blocks to Valgrind memcheck or AddressSanitizer (FTMEM_TRACK
 * builds only; the file is empty otherwise).
 */
#include "internal.h"

#if FTM_TRACK

#if defined(FTMEM_TRACK_VALGRIND)

void ftm__track_alloc(void *p, size_t size, size_t usable, int zeroed) {
  if (p == NULL) return;
  if (usable == 0) usable = ftm__block_usable(p);
  /* the slack after the request stays noaccess; MALLOCLIKE makes
   * [p, p + size) undefined (or defined when zeroed) and records the block
   * for the leak checker */
  VALGRIND_MAKE_MEM_NOACCESS(p, usable);
  VALGRIND_MALLOCLIKE_BLOCK(p, size, 0, zeroed);
}

void ftm__track_free(void *p, size_t usable) {
  /* memcheck reports a FREELIKE of a block it does not know (a double or
   * invalid free) with both stacks before ftmem's own check aborts */
  VALGRIND_FREELIKE_BLOCK(p, 0);
  VALGRIND_MAKE_MEM_NOACCESS(p, usable);
}

void ftm__track_noaccess(void *p, size_t n) { VALGRIND_MAKE_MEM_NOACCESS(p, n); }

void ftm__track_forget(void *p, size_t n) { (void)p, (void)n; /* memcheck follows munmap itself */ }

size_t ftm__track_size(const void *p, size_t usable) {
  if (!RUNNING_ON_VALGRIND) return usable;
  /* the first byte memcheck considers noaccess is the end of the request;
   * the check would report an error, so reporting is off around it */
  VALGRIND_DISABLE_ERROR_REPORTING;
  uintptr_t bad = (uintptr_t)VALGRIND_CHECK_MEM_IS_ADDRESSABLE(p, usable);
  VALGRIND_ENABLE_ERROR_REPORTING;
  return bad == 0 ? usable : (size_t)(bad - (uintptr_t)p);
}

#elif defined(FTMEM_TRACK_ASAN)

void ftm__track_alloc(void *p, size_t size, size_t usable, int zeroed) {
  (void)zeroed;
  if (p == NULL) return;
  if (usable == 0) usable = ftm__block_usable(p);
  __asan_poison_memory_region(p, usable);
  __asan_unpoison_memory_region(p, size);
}

void ftm__track_free(void *p, size_t usable) { __asan_poison_memory_region(p, usable); }

void ftm__track_noaccess(void *p, size_t n) { __asan_poison_memory_region(p, n); }

/* munmapped memory must not stay poisoned: the next mapping at that
 * address (a thread stack, the program's own mmap) would fault in ASan */
void ftm__track_forget(void *p, size_t n) { __asan_unpoison_memory_region(p, n); }

size_t ftm__track_size(const void *p, size_t usable) {
  void *bad = __asan_region_is_poisoned((void *)(uintptr_t)p, usable);
  return bad == NULL ? usable : (size_t)((char *)bad - (const char *)p);
}

#endif
#endif
