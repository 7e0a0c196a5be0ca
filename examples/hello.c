/* hello.c — the smallest program on ftmem: allocate through the ftm_ API,
 * check the block, free it, and print the statistics.  Built by
 * examples/consumer against an installed ftmem (find_package) and by the
 * install test through pkg-config. */
#include <ftmem.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  char *s = ftm_malloc(64);
  if (s == NULL) return 1;
  strcpy(s, "hello from ftmem");
  size_t usable = ftm_usable_size(s);
  printf("%s (usable %zu bytes)\n", s, usable);
  ftm_free(s);
  ftm_stats_t st;
  ftm_stats_get(&st);
  printf("mallocs %llu frees %llu\n", st.malloc_count, st.free_count);
  return usable >= 64 && st.malloc_count >= 1 && st.free_count >= 1 ? 0 : 1;
}
