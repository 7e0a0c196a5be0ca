/* ftmem.h — the public allocator API of ftmem.
 *
 * ftmem is a lock-free, per-thread-cached allocator (pools of one size class
 * over shared 4 MiB arenas).  This header declares everything a program
 * needs to allocate through it directly; built with FTMEM_OVERRIDE=ON the
 * shared library also exports the standard malloc family, so
 * `LD_PRELOAD=libftmem.so prog` runs any program on it.
 *
 * Error contract (same as the C library):
 *   - allocation failure, overflow in calloc/reallocarray, or a size beyond
 *     the address space: NULL with errno = ENOMEM;
 *   - invalid alignment: ftm_posix_memalign returns EINVAL, ftm_aligned_alloc
 *     returns NULL with errno = EINVAL;
 *   - freeing a pointer ftmem did not hand out (stack, interior, foreign):
 *     "ftmem: free(): invalid pointer 0x…" on stderr, then abort();
 *   - double free: detected in FTMEM_DEBUG and FTMEM_SECURE builds with
 *     "ftmem: free(): double free 0x…", then abort().
 */
#ifndef FTMEM_H
#define FTMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(FTMEM_STATIC_DEFINE)
#define FTM_API
#elif defined(__GNUC__)
#define FTM_API __attribute__((visibility("default")))
#else
#define FTM_API
#endif

#if defined(__GNUC__)
#define FTM_ATTR_MALLOC __attribute__((malloc))
#define FTM_ATTR_ALLOC_SIZE(n) __attribute__((alloc_size(n)))
#define FTM_ATTR_ALLOC_SIZE2(n, m) __attribute__((alloc_size(n, m)))
#else
#define FTM_ATTR_MALLOC
#define FTM_ATTR_ALLOC_SIZE(n)
#define FTM_ATTR_ALLOC_SIZE2(n, m)
#endif

#define FTMEM_VERSION_MAJOR 0
#define FTMEM_VERSION_MINOR 1
#define FTMEM_VERSION_PATCH 0

/* ---- Allocation --------------------------------------------------------- */

/* Every block is aligned to at least FTM_MIN_ALIGN bytes. */
#define FTM_MIN_ALIGN 16

FTM_API FTM_ATTR_MALLOC FTM_ATTR_ALLOC_SIZE(1) void *ftm_malloc(size_t size);
FTM_API FTM_ATTR_MALLOC FTM_ATTR_ALLOC_SIZE2(1, 2) void *ftm_calloc(size_t count, size_t size);
FTM_API FTM_ATTR_ALLOC_SIZE(2) void *ftm_realloc(void *p, size_t size);
FTM_API FTM_ATTR_ALLOC_SIZE2(2, 3) void *ftm_reallocarray(void *p, size_t count, size_t size);
FTM_API void ftm_free(void *p);
/* Free a block whose requested size is known; `size` must be the size it was
 * allocated with (or any size up to its usable size). */
FTM_API void ftm_free_sized(void *p, size_t size);
/* `alignment` must be a power of two (C11 additionally allows any size). */
FTM_API FTM_ATTR_MALLOC FTM_ATTR_ALLOC_SIZE(2) void *ftm_aligned_alloc(size_t alignment, size_t size);
/* `alignment` must be a power of two multiple of sizeof(void *). */
FTM_API int ftm_posix_memalign(void **out, size_t alignment, size_t size);
/* Bytes usable at p (>= the size asked for); 0 for NULL. */
FTM_API size_t ftm_usable_size(const void *p);

/* ---- Memory returned to the OS ----------------------------------------- */

/* Purge idle memory now: the calling thread's empty pools, empty pools of
 * dead threads, cached large blocks and free arena pages.  With force=false
 * only memory idle for longer than FTMEM_PURGE_DELAY is purged; with
 * force=true all of it. */
FTM_API void ftm_collect(bool force);

/* ---- Statistics and options --------------------------------------------- */

typedef struct ftm_stats_s {
    size_t allocated;      /* bytes in live blocks (block sizes, not requests) */
    size_t requested_live; /* bytes asked for by traced live blocks; 0 unless tracing (ftmem/trace.h) */
    size_t active;         /* bytes in pools and large blocks in use */
    size_t committed;      /* bytes the OS may be backing: active + dirty */
    size_t dirty;          /* free bytes not yet returned to the OS */
    size_t mapped;         /* address space reserved from the OS */
    size_t rss;            /* resident set size of the process (from /proc) */
    size_t peak_rss;       /* peak resident set size of the process */
    unsigned long long malloc_count;  /* blocks handed out since start */
    unsigned long long free_count;    /* blocks freed since start */
    unsigned long long live_count;    /* blocks live now */
    unsigned long long pools;         /* pools in use */
    unsigned long long arenas;        /* arenas reserved */
    unsigned long long large_count;   /* large (directly mapped) blocks live */
    unsigned long long purges;        /* madvise/munmap calls returning memory */
    unsigned long long threads;       /* thread heaps in use */
    unsigned long long abandoned_pools; /* pools left by exited threads, not yet adopted */
} ftm_stats_t;

/* Fill *out with a consistent-at-quiescence snapshot merged over all
 * threads.  Counts taken while other threads allocate are approximate. */
FTM_API void ftm_stats_get(ftm_stats_t *out);
/* Human-readable tables (totals, per size class, arenas). */
FTM_API void ftm_stats_print(FILE *out);
/* The same figures as one JSON object. */
FTM_API void ftm_stats_json(FILE *out);
/* Options (FTMEM_<NAME> environment variables), their values and the build
 * configuration, on stderr. */
FTM_API void ftm_options_print(void);

/* Options are read from the environment once, when the library initialises
 * (at its first use or when it is loaded, whichever is first: before main
 * for a preloaded or linked library); these get and set them by API. */
typedef enum ftm_option_e {
    FTM_OPTION_SHOW_STATS,   /* FTMEM_SHOW_STATS=1: print stats at exit */
    FTM_OPTION_VERBOSE,      /* FTMEM_VERBOSE=1: options at start, warnings, every OS map/unmap/purge */
    FTM_OPTION_PURGE_DELAY,  /* FTMEM_PURGE_DELAY=<ms>: idle time before purge (default 20) */
    FTM_OPTION_PURGE_THREAD, /* FTMEM_PURGE_THREAD=0|1: lazily started purger (default 1) */
    FTM_OPTION_LARGE_CACHE,  /* FTMEM_LARGE_CACHE=<n>: large mappings kept for reuse (default 16) */
    FTM_OPTION_TRACE,        /* FTMEM_TRACE=<nframes>: trace allocations from the start (ftmem/trace.h) */
    FTM_OPTION_TRACE_SAMPLE, /* FTMEM_TRACE_SAMPLE=<bytes>: with FTMEM_TRACE, sample one per <bytes> */
    FTM_OPTION_LEAK_REPORT,  /* FTMEM_LEAK_REPORT=1: print ftm_leak_report on stderr at exit */
    FTM_OPTION_REPORT_INTERVAL, /* FTMEM_REPORT_INTERVAL=<ms>: with FTMEM_REPORT=<path>, sample every <ms> */
    FTM_OPTION__COUNT
} ftm_option_t;

FTM_API long ftm_option_get(ftm_option_t option);
FTM_API void ftm_option_set(ftm_option_t option, long value);

/* Size-class introspection (used by stats and tests). */
FTM_API size_t ftm_good_size(size_t size); /* block size a request gets */

#ifdef __cplusplus
}
#endif

#include "ftmem/object.h" /* managed objects, biased reference counting */
#include "ftmem/gc.h"     /* the cycle collector */
#include "ftmem/trace.h"  /* allocation tracing, snapshots, statistics */
#include "ftmem/inspect.h" /* census, deep sizes, reference graphs, leak report */
#include "ftmem/report.h"  /* the JSON report for tools/ftmem-report */

#endif /* FTMEM_H */
