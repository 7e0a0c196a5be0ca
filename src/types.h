/* types.h — every internal structure of ftmem, with the glossary.
 *
 * Glossary
 *   arena   4 MiB of address space aligned to 4 MiB, cut into 64 slices of
 *           64 KiB.  Slice 0 holds the pool descriptors of the arena; the
 *           other 63 are handed out as pools.  Arenas are reserved once and
 *           never unmapped (their free slices are purged instead), so a
 *           descriptor address stays readable forever.
 *   pool    1, 4 or 8 contiguous slices serving blocks of one size class
 *           (pymalloc's pool, mimalloc's page).  Owned by one heap at a time.
 *   block   what malloc returns; a free block's first word links it into
 *           one of its pool's three free lists.
 *   heap    the per-thread cache: per size class a queue of pools, the
 *           current pool of each class in a direct table for the fast path.
 *   large   a block above FTM_MEDIUM_MAX, mapped on its own; its mapping
 *           starts with a pool descriptor (kind LARGE).
 *   page map  two-level radix over the address space at slice granularity:
 *           slice address -> pool descriptor, NULL when not ours.
 *
 * Counter identity of a pool (owner's view, exact when no remote free is in
 * flight):  used + |free| + |local_free| + |thread_free| == xcapacity,
 * where `used` counts blocks handed out whose free the owner has not yet
 * collected.
 */
#ifndef FTM_TYPES_H
#define FTM_TYPES_H

#include <ck_stack.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "lockfree/atomic.h"
#include "lockfree/remote_list.h"
#include "lockfree/tagged_stack.h"

/* ---- Geometry ------------------------------------------------------------ */
#define FTM_SLICE_SHIFT 16
#define FTM_SLICE_SIZE ((size_t)1 << FTM_SLICE_SHIFT) /* 64 KiB */
#define FTM_ARENA_SHIFT 22
#define FTM_ARENA_SIZE ((size_t)1 << FTM_ARENA_SHIFT) /* 4 MiB */
#define FTM_ARENA_SLICES 64
#define FTM_MAX_ARENAS (1u << 14) /* 64 GiB of pools */

#define FTM_SMALL_MAX 512                /* 16-byte steps up to here */
#define FTM_MEDIUM_MAX ((size_t)128 << 10) /* four classes a doubling up to here */
#define FTM_ARENA_LARGE_MAX ((size_t)2 << 20) /* large blocks up to here use arena slices */
#define FTM_SMALL_CLASSES 32
#define FTM_CLASSES 64                   /* 0..31 small, 32..63 medium */
#define FTM_DIRECT_N (FTM_SMALL_MAX / 8 + 1) /* direct table by 8-byte step */
#define FTM_LARGE_CLASS FTM_CLASSES      /* stats index of large blocks */

/* Page map: bits 16..35 index a leaf, bits 36..47 the top level. */
#define FTM_PM_LEAF_BITS 20
#define FTM_PM_TOP_BITS 12
#define FTM_PM_ADDR_BITS (FTM_SLICE_SHIFT + FTM_PM_LEAF_BITS + FTM_PM_TOP_BITS) /* 48 */

#define FTM_MAX_HEAPS (1u << 16)

_Static_assert(FTM_ARENA_SIZE == FTM_SLICE_SIZE * FTM_ARENA_SLICES, "arena geometry");
_Static_assert(FTM_DIRECT_N == 65, "direct table covers 0..512 in 8-byte steps");

/* ---- Blocks and pools ---------------------------------------------------- */
typedef struct ftm__block_s {
  struct ftm__block_s *next; /* encoded in FTMEM_SECURE builds */
} ftm__block;

enum { FTM_POOL_SMALL = 0, FTM_POOL_LARGE = 1 };

struct ftm__heap_s;

typedef struct ftm__pool_s {
  /* -- hot, owner only (the fast paths read these) -- */
  ftm__block *free;       /* blocks to hand out */
  uint32_t used;          /* handed out and not yet collected back */
  ftm__block *local_free; /* the owner's frees */
  uintptr_t hstart;       /* first block, hidden: ftm__pool_start() */
  /* p is a carved block iff rotr((p - start) * div_inv, div_shift) <
   * xcapacity (Granlund-Montgomery exact division: for a multiple of the
   * block size the result is the block index, otherwise it is huge). */
  uint64_t div_inv;       /* inverse of the odd part of block_size mod 2^64 */
  /* blocks carved so far; grows (owner, relaxed store) while remote
   * freers read it in their validity check */
  _Atomic uint32_t xcapacity;
  uint8_t div_shift;      /* trailing zero bits of block_size */
  /* live traced blocks in it (trace.c): a free looks the trace table up
   * only when this is not 0.  In the first cache line, beside what the
   * free fast path reads anyway.  Raised by the allocating thread before
   * the block is handed out, lowered by whoever frees a traced block;
   * relaxed: a freer got its block through the program's own
   * synchronisation with that allocation, so it sees that block's raise.
   * 16 bits: a pool holds at most 32768 blocks */
  _Atomic uint16_t xtraced;
  /* Gate of the local free fast path: the owner heap while the pool sits in
   * one of its class queues, NULL when parked full, abandoned or large.
   * Written by the owner, read by any thread (relaxed). */
  _Atomic(struct ftm__heap_s *) xlocal_owner;
  uint32_t block_size;
  uint8_t cls;        /* size class */
  uint8_t kind;       /* FTM_POOL_SMALL or FTM_POOL_LARGE */
  uint8_t span;       /* slices */
  uint8_t in_full;    /* owner only: parked on the heap's full queue */
  uint8_t fresh;      /* large: the block's memory is known to be zero */
  uint8_t guarded;    /* FTMEM_SECURE: the pool's last page is PROT_NONE */

  /* -- shared -- */
  ftm_remote_list_t thread_free; /* remote frees + FULL/NOTIFYING */
  /* owner heap; NULL when abandoned or free.  Written by the owner (and
   * the adopter), read by remote freers that must notify it. */
  _Atomic(struct ftm__heap_s *) xheap;
  ck_stack_entry_t notify_entry; /* link on the owner's notify stack */
  uint32_t index;                /* arena * 64 + slice, +1 (0 = none) */
  uint32_t reserved;             /* blocks that fit */
  /* -- owner only, cold -- */
  struct ftm__pool_s *next, *prev; /* class or full queue of the owner */
  uint64_t key;                    /* free-list encoding / free marker */
  /* -- large blocks only -- */
  size_t map_size;    /* whole mapping; 0 for a large block in arena slices */
  uintptr_t huser;    /* the block handed out, hidden: ftm__large_user() */
  size_t user_size;   /* usable bytes at user */
  int64_t cached_at;  /* ms, while in the large cache */
  /* last: kept when a descriptor is reset, because a stale pop of an
   * abandoned stack may read it at any time (lockfree/tagged_stack.h) */
  _Atomic uint32_t xstack_next;
} ftm__pool;

_Static_assert(sizeof(ftm__pool) <= 192, "pool descriptor fits 3 cache lines");
#define FTM_POOL_DESC_SIZE 192

/* Valgrind's leak checker scans pool descriptors as roots, so a plain
 * pointer there to a pool's first block (or to a large block) would make
 * that block look reachable when the program leaked it.  FTMEM_TRACK=
 * valgrind builds store these two pointers flipped in their top bits, where
 * no address points; other builds store them as they are. */
#if defined(FTMEM_TRACK_VALGRIND)
#define FTM_HIDE_KEY ((uintptr_t)0xa5a5ull << 48)
#else
#define FTM_HIDE_KEY ((uintptr_t)0)
#endif
static inline char *ftm__pool_start(const ftm__pool *p) { return (char *)(p->hstart ^ FTM_HIDE_KEY); }
static inline void ftm__pool_set_start(ftm__pool *p, char *s) { p->hstart = (uintptr_t)s ^ FTM_HIDE_KEY; }
static inline char *ftm__large_user(const ftm__pool *p) {
  return p->huser == 0 ? NULL : (char *)(p->huser ^ FTM_HIDE_KEY);
}
static inline void ftm__large_set_user(ftm__pool *p, char *u) {
  p->huser = u == NULL ? 0 : (uintptr_t)u ^ FTM_HIDE_KEY;
}
#define FTM_LARGE_HEADER 192 /* user data of a large block starts after it */

typedef struct ftm__pool_queue_s {
  ftm__pool *first, *last;
  uint32_t count;
} ftm__pool_queue;

/* ---- Arenas (metadata kept outside the arena memory) --------------------- */
typedef struct ftm__arena_s {
  _Atomic(char *) xbase;     /* NULL until reserved */
  _Atomic uint64_t xfree;    /* bit i: slice i is free */
  _Atomic uint64_t xdirty;   /* bit i: free slice i may hold resident pages */
  _Atomic uint64_t xdirty_old; /* the dirty slices that were already dirty at the last pass */
  _Atomic int64_t xpurge_at; /* ms: next purge pass of this arena */
  _Atomic int64_t xlast_free; /* ms: when a slice was last freed */
  /* FTMEM_SECURE: bit i — the last page of slice i is a PROT_NONE guard.
   * Guards stay when a pool is freed; the next user of the slices lifts or
   * moves them (ftm__arena_set_guards), so reuse at the same span costs no
   * system call.  Changed only by the owner of the slices (fetch_or/and:
   * other bits of the word belong to other owners). */
  _Atomic uint64_t xguard;
  _Atomic uint32_t xhdr_dirty; /* descriptor slice holds resident pages */
  char pad[64 - 8 * 7 - 4];
} ftm__arena;
_Static_assert(sizeof(ftm__arena) == 64, "one arena record a cache line");

#define FTM_ARENA_DATA_MASK (~(uint64_t)1) /* slice 0 holds descriptors */

/* ---- Per-thread heap ----------------------------------------------------- */
/* Stats of one heap: written by the owner only (ftm_counter_add), read by
 * anyone.  Index FTM_LARGE_CLASS counts large blocks. */
typedef struct ftm__heap_stats_s {
  ftm_counter_t malloc_direct[FTM_DIRECT_N]; /* fast-path mallocs by 8-byte step */
  ftm_counter_t malloc_n[FTM_CLASSES + 1];   /* other mallocs by class */
  ftm_counter_t free_n[FTM_CLASSES + 1];     /* frees by class (any pool) */
  ftm_counter_t large_bytes_in;              /* large bytes handed out */
  ftm_counter_t large_bytes_out;             /* large bytes freed */
} ftm__heap_stats;

typedef struct ftm__heap_s {
  /* current pool of each small class, by (size + 7) / 8 */
  ftm__pool *direct[FTM_DIRECT_N];
  /* current pool of each class (the medium fast path), the empty pool if none */
  ftm__pool *current[FTM_CLASSES];
  ftm__pool_queue queues[FTM_CLASSES];
  ftm__pool_queue full;  /* pools with nothing free, parked */
  ck_stack_t notify;     /* pools a remote free took out of `full` */
  uint32_t index;        /* in ftm__heaps[], +1 */
  uint32_t arena_hint;
  uint32_t ticks;        /* slow-path calls, for periodic work */
  _Atomic uint32_t xstack_next; /* link on the free-heap stack */
  _Atomic int xlive;     /* 1 while a thread owns it */
  uint64_t key;          /* secure/debug key source */
  ftm__heap_stats stats;
} ftm__heap;

#endif
