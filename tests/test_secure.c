/* test_secure.c — what FTMEM_SECURE adds beyond double-free detection:
 * a guard page at the end of every pool, and blocks handed out in a
 * random order.  Built in every variant; the cases that need the secure
 * build skip elsewhere. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>

#include "ftmem.h"

#ifdef FTMEM_TEST_SECURE
#define SECURE 1
#else
#define SECURE 0
#endif

#if SECURE
/* 4 KiB blocks come from one 64 KiB slice: 15 blocks and the guard page.
 * Writing one byte past the block that ends at the guard must fault. */
Test(secure, overflow_into_guard_page_faults, .signal = SIGSEGV) {
  char *top = NULL;
  for (int i = 0; i < 15; i++) {
    char *b = ftm_malloc(4096);
    cr_assert_not_null(b);
    if (top == NULL || b > top) top = b;
  }
  /* all 15 came from one fresh pool; the highest ends where the guard
   * page (the slice's last 4 KiB) begins */
  cr_assert_eq(((uintptr_t)top + 2 * 4096) % 65536, 0, "block %p does not end at its pool's guard", (void *)top);
  volatile char *past = top + 4096;
  *past = 1; /* SIGSEGV */
  cr_assert_fail("wrote past the pool's last block without a fault");
}
#else
Test(secure, overflow_into_guard_page_faults) {
  cr_skip_test("guard pages exist in the FTMEM_SECURE build only");
}
#endif

/* 64 blocks of 32 B in a row: in address order with the plain build, in
 * a random order with the secure one (the chance that a shuffle of 128
 * carved blocks hands the first 64 out ascending is nil). */
Test(secure, allocation_order_is_random) {
  void *p[64];
  int ascending = 1;
  for (int i = 0; i < 64; i++) {
    p[i] = ftm_malloc(32);
    if (i > 0 && p[i] < p[i - 1]) ascending = 0;
  }
  if (SECURE)
    cr_assert(!ascending, "secure build handed out 64 fresh blocks in address order");
  else
    cr_assert(ascending, "plain build should carve fresh blocks in address order");
  for (int i = 0; i < 64; i++) ftm_free(p[i]);
}

/* Freed pools lose their guard: the same slices serve a large block that
 * is written end to end. */
Test(secure, guard_lifted_when_pool_is_freed) {
  char *b[15];
  for (int i = 0; i < 15; i++) b[i] = ftm_malloc(4096);
  for (int i = 0; i < 15; i++) ftm_free(b[i]);
  ftm_collect(true);
  for (int round = 0; round < 8; round++) {
    size_t n = (size_t)(round + 1) * 65536;
    char *l = ftm_malloc(n);
    cr_assert_not_null(l);
    for (size_t i = 0; i < n; i += 512) l[i] = (char)i;
    l[n - 1] = 1;
    ftm_free(l);
  }
}
