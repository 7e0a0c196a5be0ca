/* track.h — telling Valgrind memcheck or AddressSanitizer which bytes of
 * pool memory the program may touch (FTMEM_TRACK builds).
 *
 * ftmem carves blocks out of pools it mapped itself, so neither tool sees
 * a malloc or a free: a use after free, an overflow into the rest of a
 * block or a leak goes unreported.  A build with -DFTMEM_TRACK=valgrind
 * describes every block with memcheck's client requests (MALLOCLIKE /
 * FREELIKE, the way mimalloc's MI_TRACK_VALGRIND does), one with
 * -DFTMEM_TRACK=asan poisons what the program must not touch
 * (__asan_poison_memory_region, as mimalloc's MI_TRACK_ASAN).  Other builds
 * compile every hook here to nothing.
 *
 * The states of a small block's bytes in a tracked build:
 *   free        all noaccess (poisoned), pool-wide from ftm__pool_init on
 *   handed out  [p, p + size) accessible (undefined for memcheck unless
 *               zeroed), [p + size, p + block_size) noaccess
 * The allocator's own words inside a free block (the free-list link, and
 * the double-free mark at offset 8) are opened just around each access
 * (ftm__track_open / ftm__track_close), as mimalloc's mi_track_mem_defined.
 *
 * Requested sizes are not stored anywhere: the tool itself remembers them
 * (memcheck's block table, ASan's shadow), and ftm__track_size asks it —
 * which is what realloc and malloc_usable_size need.
 */
#ifndef FTM_TRACK_H
#define FTM_TRACK_H

#include <stddef.h>

#if defined(FTMEM_TRACK_VALGRIND)
#include <valgrind/memcheck.h>
#define FTM_TRACK 1
#define ftm__track_open(p, n) ((void)VALGRIND_MAKE_MEM_DEFINED((p), (n)))
#define ftm__track_close(p, n) ((void)VALGRIND_MAKE_MEM_NOACCESS((p), (n)))
#define ftm__track_defined(p, n) ((void)VALGRIND_MAKE_MEM_DEFINED((p), (n)))
#elif defined(FTMEM_TRACK_ASAN)
#include <sanitizer/asan_interface.h>
#define FTM_TRACK 1
#define ftm__track_open(p, n) __asan_unpoison_memory_region((p), (n))
#define ftm__track_close(p, n) __asan_poison_memory_region((p), (n))
#define ftm__track_defined(p, n) ((void)0)
#else
#define FTM_TRACK 0
#define ftm__track_open(p, n) ((void)0)
#define ftm__track_close(p, n) ((void)0)
#define ftm__track_defined(p, n) ((void)0)
#endif

#if FTM_TRACK
/* Out of line in track.c.  p may be NULL (a failed allocation): nothing
 * happens.  `usable` is the block's size (0: look it up). */
__attribute__((visibility("hidden"))) void ftm__track_alloc(void *p, size_t size, size_t usable, int zeroed);
/* Before the allocator takes a handed-out block back: all noaccess. */
__attribute__((visibility("hidden"))) void ftm__track_free(void *p, size_t usable);
/* A whole region the program must not touch (a new pool's blocks). */
__attribute__((visibility("hidden"))) void ftm__track_noaccess(void *p, size_t n);
/* Before memory leaves ftmem (munmap): the tool forgets it. */
__attribute__((visibility("hidden"))) void ftm__track_forget(void *p, size_t n);
/* The size the program asked for when p (of block size `usable`) was
 * handed out; `usable` when the tool cannot tell (not running under it). */
__attribute__((visibility("hidden"))) size_t ftm__track_size(const void *p, size_t usable);
#else
#define ftm__track_alloc(p, size, usable, zeroed) ((void)0)
#define ftm__track_free(p, usable) ((void)0)
#define ftm__track_noaccess(p, n) ((void)0)
#define ftm__track_forget(p, n) ((void)0)
#define ftm__track_size(p, usable) (usable)
#endif

#endif
