/* os.c — the OS layer: reserving, returning and purging address space,
 * the clock, RSS and randomness.  Everything that makes a system call for
 * memory lives here; libc's mmap/munmap/madvise are used (not raw syscalls)
 * so ThreadSanitizer sees memory being recycled.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

size_t ftm__os_page = 4096;
_Atomic uint64_t ftm__os_mapped;
_Atomic uint64_t ftm__os_purges;

void *ftm__os_map(size_t size) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    if (ftm__option(FTM_OPTION_VERBOSE)) ftm__warning("mmap of %zu bytes failed: %s", size, strerror(errno));
    return NULL;
  }
  ftm_atomic_fetch_add_relaxed(&ftm__os_mapped, size);
  if (ftm__option(FTM_OPTION_VERBOSE)) ftm__warning("mmap %zu bytes at %p", size, p);
  return p;
}

/* Map `size` bytes aligned to `align` (a power of two >= the page size) by
 * over-mapping and trimming both ends. */
void *ftm__os_map_aligned(size_t size, size_t align) {
  if (size + align < size) return NULL;
  char *p = ftm__os_map(size + align);
  if (p == NULL) return NULL;
  char *a = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
  size_t head = (size_t)(a - p), tail = align - head;
  if (head) ftm__os_unmap(p, head);
  if (tail) ftm__os_unmap(a + size, tail);
  return a;
}

void ftm__os_unmap(void *p, size_t size) {
  ftm__track_forget(p, size);
  if (munmap(p, size) != 0) {
    ftm__warning("munmap(%p, %zu) failed: %s", p, size, strerror(errno));
    return;
  }
  ftm_atomic_fetch_sub_relaxed(&ftm__os_mapped, size);
  if (ftm__option(FTM_OPTION_VERBOSE)) ftm__warning("munmap %zu bytes at %p", size, p);
}

/* Make [p, p+size) inaccessible (a guard) or accessible again; false if
 * the kernel refused (e.g. vm.max_map_count reached: each guard splits a
 * mapping). */
bool ftm__os_protect(void *p, size_t size, bool guard) {
  if (mprotect(p, size, guard ? PROT_NONE : PROT_READ | PROT_WRITE) == 0) return true;
  if (ftm__option(FTM_OPTION_VERBOSE))
    ftm__warning("mprotect(%p, %zu, %s) failed: %s", p, size, guard ? "none" : "rw", strerror(errno));
  return false;
}

/* Give the pages back; the range stays mapped and reads as zero. */
void ftm__os_purge(void *p, size_t size) {
  ftm_atomic_fetch_add_relaxed(&ftm__os_purges, 1);
  int rc = madvise(p, size, MADV_DONTNEED);
  if (ftm__option(FTM_OPTION_VERBOSE))
    ftm__warning("purge %zu bytes at %p%s%s", size, p, rc ? ": " : "", rc ? strerror(errno) : "");
}

int64_t ftm__clock_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Resident and peak resident bytes, from /proc/self/status (no allocation). */
size_t ftm__os_rss(size_t *peak) {
  char buf[4096];
  size_t rss = 0, hwm = 0;
  int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n > 0) {
      buf[n] = 0;
      char *s = strstr(buf, "VmHWM:");
      if (s) hwm = (size_t)strtoull(s + 6, NULL, 10) * 1024;
      s = strstr(buf, "VmRSS:");
      if (s) rss = (size_t)strtoull(s + 6, NULL, 10) * 1024;
    }
  }
  if (peak) *peak = hwm;
  return rss;
}

/* A fast per-thread generator (xorshift64*) seeded from ftm__random: for
 * secure mode's shuffles, where a system call per number would be ruinous. */
uint64_t ftm__random_fast(void) {
  static __thread uint64_t state;
  uint64_t x = state;
  if (ftm_unlikely(x == 0)) x = ftm__random();
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  state = x;
  return x * 0x2545F4914F6CDD1Dull;
}

uint64_t ftm__random(void) {
  uint64_t r = 0;
  if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    r = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)&r;
  }
  return r | 1;
}
