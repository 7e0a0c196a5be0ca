/* alloc.c — the public allocation API (ftm_malloc ... ftm_usable_size) and,
 * in FTMEM_OVERRIDE builds, the standard malloc family exported as aliases
 * of it (aliases must sit in the defining translation unit).  The fast
 * paths are inline in internal.h; everything here is argument checking and
 * dispatch.
 */
#include <string.h>

#include "internal.h"
#include "trace_internal.h"

/* The caller of the public entry point: the innermost traced frame. */
#define FTM_RA __builtin_return_address(0)

static inline bool ftm__is_pow2(size_t x) { return x != 0 && (x & (x - 1)) == 0; }

static inline void *ftm__malloc(size_t size) {
  ftm__heap *heap = ftm__heap_get();
  if (ftm_likely(size <= FTM_SMALL_MAX)) return ftm__malloc_small(heap, size);
  if (ftm_likely(size <= FTM_MEDIUM_MAX)) return ftm__malloc_medium(heap, size);
  return ftm__malloc_generic(heap, size, 0);
}

/* malloc while tracing: out of line, so that the untraced path below
 * keeps its tail calls and needs no stack frame (the hook after the
 * allocation would cost ftm_malloc a frame: 9 instructions per call) */
static ftm_noinline void *ftm__malloc_traced(size_t size, void *ra) {
  void *p = ftm__malloc(size);
  ftm__track_alloc(p, size, 0, 0);
  ftm__trace_record(p, size, ra);
  return p;
}

/* For ftm_new, which records the object itself under its own caller. */
void *ftm__malloc_untraced(size_t size) {
  void *p = ftm__malloc(size);
  ftm__track_alloc(p, size, 0, 0);
  return p;
}

FTM_API void *ftm_malloc(size_t size) {
  if (ftm__trace_wants(size)) return ftm__malloc_traced(size, FTM_RA);
  void *p = ftm__malloc(size);
  ftm__track_alloc(p, size, 0, 0); /* nothing unless FTMEM_TRACK */
  return p;
}

FTM_API void ftm_free(void *p) { ftm__free_fast(p); /* forgets a traced block */ }

FTM_API void ftm_free_sized(void *p, size_t size) {
#if defined(FTMEM_DEBUG)
  if (p != NULL && size > ftm_usable_size(p))
    ftm__fatal("ftmem: free_sized(): size %zu larger than block %p\n", size, p);
#else
  (void)size;
#endif
  ftm__free_fast(p);
}

FTM_API void *ftm_calloc(size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  void *p = ftm__malloc(total);
  if (p == NULL) return NULL;
  ftm__track_alloc(p, total, 0, 0);
  ftm__trace_alloc_hook(p, total, FTM_RA);
  ftm__pool *pool = ftm__pagemap_lookup(p);
  /* a large block just mapped is zero already; don't touch its pages */
  if (pool->kind == FTM_POOL_LARGE && pool->fresh) {
    ftm__track_defined(p, total);
    return p;
  }
  memset(p, 0, total);
  return p;
}

static void *ftm__realloc(void *p, size_t size) {
  ftm__pool *pool = ftm__pagemap_lookup(p);
  if (pool == NULL) ftm__invalid_free(p, "realloc");
  size_t usable;
  if (pool->kind == FTM_POOL_LARGE) {
    /* tracked builds always move, as memcheck's own realloc does: the
     * tools have no way to resize a block in place with its old size */
    if (size > FTM_MEDIUM_MAX && !FTM_TRACK) {
      void *r = ftm__large_realloc(pool, p, size);
      if (r != NULL) return r;
    }
    usable = ftm__large_usable(pool, p);
  } else {
    if (!ftm__pool_is_block(pool, p)) ftm__invalid_free(p, "realloc");
    usable = pool->block_size;
    /* fits, and would not fit a class less than half the size */
    if (size <= usable && size > usable / 2 && !FTM_TRACK) return p;
  }
  usable = ftm__track_size(p, usable); /* tracked: what the program may read */
  void *q = ftm__malloc(size);
  if (q == NULL) return NULL; /* errno set; p stays valid */
  ftm__track_alloc(q, size, 0, 0);
  memcpy(q, p, size < usable ? size : usable);
  ftm__free_fast(p);
  return q;
}

FTM_API void *ftm_realloc(void *p, size_t size) {
  if (p == NULL) {
    p = ftm__malloc(size);
    ftm__track_alloc(p, size, 0, 0);
    ftm__trace_alloc_hook(p, size, FTM_RA);
    return p;
  }
  if (size == 0) { /* as glibc: free and return NULL */
    ftm__free_fast(p);
    return NULL;
  }
  if (ftm_likely(!ftm__tracing())) return ftm__realloc(p, size);
  /* the old trace goes first: once freed, p may be another thread's new
   * block, traced under the same address */
  ftm__trace_entry old;
  uint64_t gen;
  bool had = ftm__trace_take(p, &old, &gen);
  void *q = ftm__realloc(p, size);
  if (q == NULL && had) ftm__trace_put_back(&old, gen);
  ftm__trace_alloc_hook(q, size, FTM_RA);
  return q;
}

FTM_API void *ftm_reallocarray(void *p, size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  return ftm_realloc(p, total);
}

static void *ftm__aligned(size_t alignment, size_t size, void *ra) {
  if (!ftm__is_pow2(alignment)) {
    errno = EINVAL;
    return NULL;
  }
  void *p = alignment <= FTM_MIN_ALIGN ? ftm__malloc(size)
                                       : ftm__malloc_generic(ftm__heap_get(), size, alignment);
  ftm__track_alloc(p, size, 0, 0);
  ftm__trace_alloc_hook(p, size, ra);
  return p;
}

FTM_API void *ftm_aligned_alloc(size_t alignment, size_t size) { return ftm__aligned(alignment, size, FTM_RA); }

FTM_API int ftm_posix_memalign(void **out, size_t alignment, size_t size) {
  if (!ftm__is_pow2(alignment) || alignment % sizeof(void *) != 0) return EINVAL;
  int saved = errno;
  void *p = ftm__aligned(alignment, size, FTM_RA);
  if (p == NULL) {
    errno = saved; /* posix_memalign reports through its result */
    return ENOMEM;
  }
  *out = p;
  return 0;
}

size_t ftm__block_usable(const void *p) {
  ftm__pool *pool = ftm__pagemap_lookup(p);
  if (pool == NULL) ftm__invalid_free(p, "malloc_usable_size");
  if (pool->kind == FTM_POOL_LARGE) return ftm__large_usable(pool, p);
  if (!ftm__pool_is_block(pool, p)) ftm__invalid_free(p, "malloc_usable_size");
  return pool->block_size;
}

/* Tracked builds answer the requested size, as memcheck's and ASan's own
 * malloc_usable_size do: the bytes after it are reported if touched. */
FTM_API size_t ftm_usable_size(const void *p) {
  if (p == NULL) return 0;
  return ftm__track_size(p, ftm__block_usable(p));
}

FTM_API size_t ftm_good_size(size_t size) {
  if (size <= FTM_MEDIUM_MAX) return ftm__class_size[ftm__size_class(size)];
  if (size <= FTM_ARENA_LARGE_MAX) return (size + FTM_SLICE_SIZE - 1) & ~(FTM_SLICE_SIZE - 1);
  if (size > (SIZE_MAX >> 2)) return size;
  return ((size + FTM_LARGE_HEADER + FTM_SLICE_SIZE - 1) & ~(FTM_SLICE_SIZE - 1)) - FTM_LARGE_HEADER;
}

FTM_API void ftm_collect(bool force) {
  ftm__init();
  ftm__heap_collect(ftm__heap_get(), force);
  ftm__purge_now(force);
}

/* ---- the drop-in malloc family ---------------------------------------------- */
#if defined(FTMEM_OVERRIDE)
/* glibc declares malloc without alloc_size/malloc attributes */
#pragma GCC diagnostic ignored "-Wmissing-attributes"
#define FTM_ALIAS(fn) __attribute__((alias(#fn), visibility("default")))
void *malloc(size_t size) FTM_ALIAS(ftm_malloc);
void free(void *p) FTM_ALIAS(ftm_free);
void *calloc(size_t count, size_t size) FTM_ALIAS(ftm_calloc);
void *realloc(void *p, size_t size) FTM_ALIAS(ftm_realloc);
void *reallocarray(void *p, size_t count, size_t size) FTM_ALIAS(ftm_reallocarray);
int posix_memalign(void **out, size_t alignment, size_t size) FTM_ALIAS(ftm_posix_memalign);
void *aligned_alloc(size_t alignment, size_t size) FTM_ALIAS(ftm_aligned_alloc);
size_t malloc_usable_size(void *p) FTM_ALIAS(ftm_usable_size);
void free_sized(void *p, size_t size) FTM_ALIAS(ftm_free_sized);
void cfree(void *p) FTM_ALIAS(ftm_free);

__attribute__((visibility("default"))) void *memalign(size_t alignment, size_t size);
void *memalign(size_t alignment, size_t size) {
  /* glibc rounds a non-power-of-two alignment up rather than failing */
  if (!ftm__is_pow2(alignment)) {
    size_t a = FTM_MIN_ALIGN;
    while (a < alignment && a != 0) a <<= 1;
    if (a == 0) {
      errno = EINVAL;
      return NULL;
    }
    alignment = a;
  }
  return ftm__aligned(alignment, size, FTM_RA);
}

__attribute__((visibility("default"))) void *valloc(size_t size);
void *valloc(size_t size) { return ftm__aligned(ftm__os_page, size, FTM_RA); }

__attribute__((visibility("default"))) void *pvalloc(size_t size);
void *pvalloc(size_t size) {
  size_t rounded = (size + ftm__os_page - 1) & ~(ftm__os_page - 1);
  if (rounded < size) {
    errno = ENOMEM;
    return NULL;
  }
  return ftm__aligned(ftm__os_page, rounded ? rounded : ftm__os_page, FTM_RA);
}
#endif
