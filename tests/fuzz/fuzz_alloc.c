/* fuzz_alloc.c — libFuzzer harness of the allocator API (include/ftmem.h).
 *
 * The input is a program over FZ_SLOTS block slots: each operation is one
 * byte (op, slot) followed by its arguments (sizes, alignments, counts).
 * Operations: ftm_malloc, calloc, realloc, reallocarray, aligned_alloc,
 * posix_memalign, free, free_sized, usable_size, filling a block up to its
 * usable size, checking a block, one size into several slots at once
 * (filling pools), requests that must fail (overflowing
 * products, sizes beyond the address space, bad alignments), ftm_collect,
 * and running the next few operations on a short-lived thread (its frees of
 * our blocks are remote frees, its blocks are freed later from an
 * abandoned or adopted pool).
 *
 * The model: every live block holds a byte pattern keyed by its seed and
 * position over its first `filled` bytes, checked in full before it is
 * freed or reallocated, by the check operation and at the end.  calloc
 * memory must be zero, realloc keeps the prefix min(old, new size),
 * alignments are honoured, usable_size >= size, failing requests give
 * NULL/ENOMEM or EINVAL (and leave the old block or *out untouched).  At the
 * end every block is freed and ftm_stats_get's live_count must be back at
 * its value before the input.
 *
 * Sizes span small (<= 512), medium (<= 128 KiB) and large (to 6 MiB, both
 * the arena-carved kind <= 2 MiB and mapped ones), under a 48 MiB budget of
 * live bytes so an input cannot run the process out of memory.
 */
#include "fuzz_common.h"

#define FZ_SLOTS 32
#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)
#define FZ_LARGE_CAP (6 * MIB)
#define FZ_BUDGET (48 * MIB)
#define FZ_THREAD_OPS 24

typedef struct slot {
  unsigned char *p;
  size_t size;   /* requested */
  size_t filled; /* bytes [0, filled) hold the pattern */
  size_t align;  /* alignment asked for (16 if none) */
  uint64_t seed;
} slot;

static slot slots[FZ_SLOTS];
static size_t live_bytes;
static uint64_t seed_counter;

/* ---- patterns ------------------------------------------------------------ */
FZ_NO_COVERAGE static inline uint64_t pat_word(uint64_t seed, size_t i) {
  /* cheap, different per seed and per word; words of one block differ */
  uint64_t x = seed ^ ((uint64_t)i * 0x9E3779B97F4A7C15ull);
  return x ^ (x >> 29);
}

/* Bytes [from, to) of a block with this seed: byte j is byte (j % 8) of
 * pat_word(seed, j / 8) (little-endian).  Blocks are 16-byte aligned. */
FZ_NO_COVERAGE static void pat_fill(unsigned char *p, size_t from, size_t to, uint64_t seed) {
  size_t j = from;
  while (j < to && (j & 7) != 0) {
    p[j] = (unsigned char)(pat_word(seed, j >> 3) >> ((j & 7) * 8));
    j++;
  }
  uint64_t *w = (uint64_t *)(void *)p;
  for (; j + 8 <= to; j += 8) w[j >> 3] = pat_word(seed, j >> 3);
  for (; j < to; j++) p[j] = (unsigned char)(pat_word(seed, j >> 3) >> ((j & 7) * 8));
}

FZ_NO_COVERAGE static void pat_check(const unsigned char *p, size_t from, size_t to, uint64_t seed, const char *when,
                      int idx) {
  size_t j = from;
  const uint64_t *w = (const uint64_t *)(const void *)p;
  while (j < to) {
    if ((j & 7) == 0 && j + 8 <= to) {
      if (w[j >> 3] == pat_word(seed, j >> 3)) {
        j += 8;
        continue;
      }
    }
    unsigned char want = (unsigned char)(pat_word(seed, j >> 3) >> ((j & 7) * 8));
    if ((j & 7) != 0 || j + 8 > to) {
      if (p[j] != want)
        FZ_FAIL("%s: slot %d block %p byte %zu is 0x%02x, expected 0x%02x (size %zu)", when, idx,
                (const void *)p, j, p[j], want, slots[idx].size);
      j++;
      continue;
    }
    /* a mismatching word: find the byte */
    for (size_t k = j; k < j + 8; k++) {
      unsigned char wk = (unsigned char)(pat_word(seed, k >> 3) >> ((k & 7) * 8));
      if (p[k] != wk)
        FZ_FAIL("%s: slot %d block %p byte %zu is 0x%02x, expected 0x%02x (size %zu)", when, idx,
                (const void *)p, k, p[k], wk, slots[idx].size);
    }
    j += 8;
  }
}

FZ_NO_COVERAGE static void check_zero(const unsigned char *p, size_t n, const char *when) {
  const uint64_t *w = (const uint64_t *)(const void *)p;
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    if (w[i >> 3] != 0) break;
  for (; i < n; i++)
    if (p[i] != 0) FZ_FAIL("%s: block %p byte %zu of %zu is 0x%02x, not zero", when, (const void *)p, i, n, p[i]);
}

/* ---- sizes --------------------------------------------------------------- */
static const size_t edge_small[] = {0, 1, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65,
                                    100, 127, 128, 129, 255, 256, 257, 384, 511, 512};
static const size_t edge_big[] = {513,          1000,         1024,         1025,
                                  2047,         2048,         4095,         4096,
                                  4097,         8191,         8192,         16384,
                                  32767,        32768,        49152,        65535,
                                  65536,        65537,        98304,        131071,
                                  131072,       131073,       196608,       262144,
                                  2 * MIB - 192, 2 * MIB - 1, 2 * MIB,     2 * MIB + 1,
                                  4 * MIB - 256, 4 * MIB,     4 * MIB + 1, FZ_LARGE_CAP};

static size_t dec_size(fz_in *in) {
  uint8_t k = fz_u8(in);
  size_t s;
  switch (k & 7) {
  case 0:
  case 1:
  case 2: s = fz_u16(in) % 513; break;
  case 3: s = edge_small[fz_u8(in) % (sizeof edge_small / sizeof edge_small[0])]; break;
  case 4:
  case 5: s = 513 + fz_u32(in) % (128 * KIB - 512); break;
  case 6: s = edge_big[fz_u8(in) % (sizeof edge_big / sizeof edge_big[0])]; break;
  default: s = 128 * KIB + fz_u32(in) % (FZ_LARGE_CAP - 128 * KIB + 1); break;
  }
  if (s > FZ_LARGE_CAP) s = FZ_LARGE_CAP;
  if (live_bytes + s > FZ_BUDGET) s %= 513; /* keep the process's memory bounded */
  return s;
}

/* Sizes no allocation can satisfy: beyond the address space (ftmem's
 * large path refuses anything above SIZE_MAX / 4). */
static const size_t huge_sizes[] = {SIZE_MAX,          SIZE_MAX - 1,         SIZE_MAX - 4096,
                                    SIZE_MAX / 2,      SIZE_MAX / 2 + 1,     (SIZE_MAX >> 2) + 1,
                                    PTRDIFF_MAX,       (size_t)PTRDIFF_MAX + 1, (size_t)1 << 62,
                                    ((size_t)1 << 63) + 12345};
static size_t dec_huge(fz_in *in) {
  return fz_hide(huge_sizes[fz_u8(in) % (sizeof huge_sizes / sizeof huge_sizes[0])]);
}

/* A power-of-two alignment, 1 .. 4 MiB (rarely 32 MiB). */
static size_t dec_align(fz_in *in) {
  uint8_t k = fz_u8(in);
  unsigned shift = k % 23;
  if (k == 255) shift = 25;
  return (size_t)1 << shift;
}

/* ---- slot bookkeeping -------------------------------------------------------- */
static void verify(int i, const char *when) {
  slot *s = &slots[i];
  if (s->p == NULL) return;
  pat_check(s->p, 0, s->filled, s->seed, when, i);
}

static void check_block(int i, const char *what) {
  slot *s = &slots[i];
  size_t a = s->align < FTM_MIN_ALIGN ? FTM_MIN_ALIGN : s->align;
  if ((uintptr_t)s->p % a != 0) FZ_FAIL("%s(%zu, align %zu) = %p is misaligned", what, s->size, s->align, (void *)s->p);
  size_t u = ftm_usable_size(s->p);
  if (u < s->size) FZ_FAIL("%s(%zu): usable size %zu < size", what, s->size, u);
  if (ftm_good_size(s->size) < s->size) FZ_FAIL("ftm_good_size(%zu) = %zu", s->size, ftm_good_size(s->size));
}

/* A new block in slot i (which must be empty): check, record, fill. */
static void take(int i, void *p, size_t size, size_t align, bool zero, const char *what) {
  if (p == NULL) FZ_FAIL("%s(%zu, align %zu) returned NULL (errno %d)", what, size, align, errno);
  slot *s = &slots[i];
  for (int j = 0; j < FZ_SLOTS; j++)
    if (slots[j].p == p) FZ_FAIL("%s returned %p, already live in slot %d", what, p, j);
  s->p = fz_launder(p);
  s->size = size;
  s->align = align;
  check_block(i, what);
  if (zero) check_zero(s->p, size, what);
  s->seed = fz_mix(++seed_counter);
  s->filled = size;
  pat_fill(s->p, 0, size, s->seed);
  live_bytes += size;
}

static void drop(int i) {
  live_bytes -= slots[i].size;
  memset(&slots[i], 0, sizeof slots[i]);
}

static void release(int i, bool sized) {
  slot *s = &slots[i];
  if (s->p == NULL) return;
  verify(i, "before free");
  if (sized) {
    size_t u = ftm_usable_size(s->p);
    size_t sz = s->size + (u > s->size ? (size_t)(s->seed % (u - s->size + 1)) : 0);
    ftm_free_sized(s->p, sz);
  } else {
    ftm_free(s->p);
  }
  drop(i);
}

/* ---- operations ----------------------------------------------------------------- */
enum {
  OP_MALLOC,
  OP_CALLOC,
  OP_REALLOC,
  OP_REALLOCARRAY,
  OP_ALIGNED,
  OP_MEMALIGN,
  OP_FREE,
  OP_FREE_SIZED,
  OP_USABLE,
  OP_FILL_USABLE,
  OP_CHECK,
  OP_FAIL,
  OP_COLLECT,
  OP_THREAD,
  OP_BURST,
  OP__COUNT
};

static void run_ops(fz_in *in, int max_ops, bool on_helper);

static void op_realloc(int i, size_t newsize, bool array, size_t count, size_t elem) {
  slot *s = &slots[i];
  verify(i, "before realloc");
  unsigned char *old = s->p;
  size_t oldsize = s->size;
  uint64_t oldseed = s->seed;
  errno = 0;
  void *q = array ? ftm_reallocarray(old, count, elem) : ftm_realloc(old, newsize);
  const char *what = array ? "reallocarray" : "realloc";
  if (old != NULL && newsize == 0) {
    /* as glibc: frees and returns NULL */
    if (q != NULL) FZ_FAIL("%s(%p, 0) returned %p, expected NULL", what, (void *)old, q);
    drop(i);
    return;
  }
  if (old == NULL) {
    take(i, q, newsize, FTM_MIN_ALIGN, false, what);
    return;
  }
  if (q == NULL) FZ_FAIL("%s(%p, %zu) failed (errno %d)", what, (void *)old, newsize, errno);
  q = fz_launder(q);
  size_t keep = oldsize < newsize ? oldsize : newsize;
  pat_check(q, 0, keep, oldseed, "realloc prefix", i);
  s->p = q;
  s->size = newsize;
  s->align = FTM_MIN_ALIGN; /* realloc keeps only the minimum alignment */
  check_block(i, what);
  for (int j = 0; j < FZ_SLOTS; j++)
    if (j != i && slots[j].p == q) FZ_FAIL("%s returned %p, live in slot %d", what, q, j);
  /* the prefix keeps the old pattern; extend it over the rest */
  pat_fill(s->p, keep, newsize, oldseed);
  s->filled = newsize;
  live_bytes = live_bytes - oldsize + newsize;
}

/* Requests that must fail, leaving everything as it was. */
static void op_fail(fz_in *in, int i) {
  uint8_t k = fz_u8(in) % 9;
  slot *s = &slots[i];
  void *r;
  size_t h = dec_huge(in);
  errno = 0;
  switch (k) {
  case 0:
    r = ftm_malloc(h);
    if (r != NULL || errno != ENOMEM) FZ_FAIL("malloc(%zu) = %p errno %d, expected NULL/ENOMEM", h, r, errno);
    break;
  case 1: { /* calloc whose product overflows, or is huge */
    size_t a = 2 + fz_u16(in);
    size_t b = fz_u8(in) & 1 ? SIZE_MAX / a + 1 + fz_u8(in) : h / a;
    b = fz_hide(b);
    r = ftm_calloc(a, b);
    if (r != NULL || errno != ENOMEM) FZ_FAIL("calloc(%zu, %zu) = %p errno %d, expected NULL/ENOMEM", a, b, r, errno);
    r = ftm_calloc(b, a);
    if (r != NULL || errno != ENOMEM) FZ_FAIL("calloc(%zu, %zu) = %p errno %d, expected NULL/ENOMEM", b, a, r, errno);
    break;
  }
  case 2: /* realloc to a huge size: NULL, the block untouched */
    if (s->p == NULL) break;
    r = ftm_realloc(s->p, h);
    if (r != NULL || errno != ENOMEM) FZ_FAIL("realloc(%p, %zu) = %p errno %d, expected NULL/ENOMEM", (void *)s->p, h, r, errno);
    verify(i, "after failed realloc");
    break;
  case 3: { /* reallocarray overflowing */
    size_t a = 2 + fz_u16(in);
    size_t b = fz_hide(SIZE_MAX / a + 1 + fz_u8(in));
    r = ftm_reallocarray(s->p, a, b);
    if (r != NULL || errno != ENOMEM) FZ_FAIL("reallocarray(%p, %zu, %zu) = %p errno %d", (void *)s->p, a, b, r, errno);
    verify(i, "after failed reallocarray");
    break;
  }
  case 4: { /* aligned_alloc of a huge size */
    size_t al = dec_align(in);
    r = ftm_aligned_alloc(al, h);
    if (r != NULL || errno != ENOMEM) FZ_FAIL("aligned_alloc(%zu, %zu) = %p errno %d, expected NULL/ENOMEM", al, h, r, errno);
    break;
  }
  case 5: { /* aligned_alloc with an alignment that is not a power of two */
    size_t al = fz_hide(fz_u8(in) & 1 ? 0 : (size_t)fz_u16(in) * 2 + 3);
    r = ftm_aligned_alloc(al, 64);
    if (r != NULL || errno != EINVAL) FZ_FAIL("aligned_alloc(%zu, 64) = %p errno %d, expected NULL/EINVAL", al, r, errno);
    break;
  }
  case 6: { /* posix_memalign: bad alignment (EINVAL), huge size (ENOMEM); *out untouched */
    void *out = (void *)0x1234;
    size_t al = fz_u8(in) & 1 ? fz_hide(4) : fz_hide((size_t)fz_u16(in) * 2 + 3);
    int rc = ftm_posix_memalign(&out, al, 64);
    if (rc != EINVAL || out != (void *)0x1234) FZ_FAIL("posix_memalign(align %zu) = %d, out %p", al, rc, out);
    al = (size_t)8 << (fz_u8(in) % 16);
    rc = ftm_posix_memalign(&out, al, h);
    if (rc != ENOMEM || out != (void *)0x1234) FZ_FAIL("posix_memalign(%zu, %zu) = %d, out %p", al, h, rc, out);
    break;
  }
  case 7: /* reallocarray to a huge (non-overflowing) product */
    if (s->p == NULL) break;
    r = ftm_reallocarray(s->p, 1, h);
    if (r != NULL || errno != ENOMEM) FZ_FAIL("reallocarray(%p, 1, %zu) = %p errno %d", (void *)s->p, h, r, errno);
    verify(i, "after failed reallocarray");
    break;
  default: /* NULL is fine everywhere it is allowed */
    ftm_free(NULL);
    ftm_free_sized(NULL, fz_u8(in));
    if (ftm_usable_size(NULL) != 0) FZ_FAIL("usable_size(NULL) != 0");
    break;
  }
}

typedef struct helper_arg {
  fz_in *in;
  int ops;
} helper_arg;

static void helper(void *p) {
  helper_arg *a = p;
  run_ops(a->in, a->ops, true);
}

static void run_ops(fz_in *in, int max_ops, bool on_helper) {
  for (int n = 0; n < max_ops && !fz_done(in); n++) {
    uint8_t b = fz_u8(in);
    int op = b % OP__COUNT;
    int i = (b / OP__COUNT + fz_u8(in)) % FZ_SLOTS;
    slot *s = &slots[i];
    switch (op) {
    case OP_MALLOC: {
      release(i, false);
      size_t size = dec_size(in);
      take(i, ftm_malloc(size), size, FTM_MIN_ALIGN, false, "malloc");
      break;
    }
    case OP_CALLOC: {
      release(i, false);
      size_t size = dec_size(in);
      size_t count = 1 + fz_u8(in) % 16, elem = size / count;
      take(i, ftm_calloc(count, elem), count * elem, FTM_MIN_ALIGN, true, "calloc");
      break;
    }
    case OP_REALLOC: {
      size_t size = dec_size(in);
      op_realloc(i, size, false, 0, 0);
      break;
    }
    case OP_REALLOCARRAY: {
      size_t size = dec_size(in);
      size_t count = fz_u8(in) % 16, elem = count ? size / count : size;
      op_realloc(i, count * elem, true, count, elem);
      break;
    }
    case OP_ALIGNED: {
      release(i, false);
      size_t al = dec_align(in), size = dec_size(in);
      errno = 0;
      take(i, ftm_aligned_alloc(al, size), size, al, false, "aligned_alloc");
      break;
    }
    case OP_MEMALIGN: {
      release(i, false);
      size_t al = dec_align(in), size = dec_size(in);
      if (al < sizeof(void *)) al = sizeof(void *);
      void *out = NULL;
      int rc = ftm_posix_memalign(&out, al, size);
      if (rc != 0) FZ_FAIL("posix_memalign(%zu, %zu) = %d", al, size, rc);
      take(i, out, size, al, false, "posix_memalign");
      break;
    }
    case OP_FREE: release(i, false); break;
    case OP_FREE_SIZED: release(i, true); break;
    case OP_USABLE:
      if (s->p != NULL) {
        size_t u = ftm_usable_size(s->p);
        if (u < s->size) FZ_FAIL("usable_size(%p) = %zu < size %zu", (void *)s->p, u, s->size);
      }
      break;
    case OP_FILL_USABLE: /* the contract lets a program use the whole usable size */
      if (s->p != NULL) {
        size_t u = ftm_usable_size(s->p);
        pat_fill(s->p, s->filled, u, s->seed);
        s->filled = u;
      }
      break;
    case OP_CHECK:
      if (fz_u8(in) & 1) {
        for (int j = 0; j < FZ_SLOTS; j++) verify(j, "check all");
      } else {
        verify(i, "check");
      }
      break;
    case OP_FAIL: op_fail(in, i); break;
    case OP_COLLECT:
      if (!on_helper) ftm_collect(fz_u8(in) & 1);
      break;
    case OP_BURST: { /* one size into several slots: fills pools, so frees find them full */
      size_t size = dec_size(in);
      int k = 1 + fz_u8(in) % FZ_SLOTS;
      for (int j = 0; j < k; j++) {
        int t = (i + j) % FZ_SLOTS;
        release(t, false);
        if (live_bytes + size > FZ_BUDGET) size %= 513;
        take(t, ftm_malloc(size), size, FTM_MIN_ALIGN, false, "malloc");
      }
      break;
    }
    case OP_THREAD:
      if (!on_helper) {
        helper_arg a = {in, 1 + fz_u8(in) % FZ_THREAD_OPS};
        fz_run_on_thread(helper, &a, false);
      }
      break;
    }
  }
}

static unsigned long long live_count(void) {
  ftm_stats_t st;
  ftm_stats_get(&st);
  return st.live_count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  unsigned long long live0 = live_count();
  run_ops(&in, 1 << 30, false);
  for (int i = 0; i < FZ_SLOTS; i++) release(i, i & 1);
  if (live_bytes != 0) FZ_FAIL("harness: live_bytes %zu after freeing all", live_bytes);
  unsigned long long live1 = live_count();
  if (live1 != live0) FZ_FAIL("live_count %llu after freeing every block, %llu before the input", live1, live0);
  return 0;
}
