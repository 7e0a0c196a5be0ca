/* ftmem/inspect.h — looking at the managed heap: a census of live objects
 * by type (objgraph's show_most_common_types), the memory an object alone
 * keeps alive (pympler's asizeof, restricted to what would die with it),
 * reference graphs in Graphviz dot (objgraph's show_refs / show_backrefs)
 * and a leak report at exit.  Included by ftmem.h.
 *
 * Errors: functions returning int give 0 or -1 with errno (EINVAL for bad
 * arguments, ENOMEM, EIO for a failed write); ftm_deep_sizeof returns 0
 * with errno.
 */
#ifndef FTMEM_INSPECT_H
#define FTMEM_INSPECT_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- census ---------------------------------------------------------------- */
typedef struct ftm_census_entry {
  const ftm_type *type; /* NULL for the row shared by types past the 255th */
  const char *name;
  size_t count; /* live objects */
  size_t bytes; /* their blocks, GC heads included (not sizeof_extra) */
} ftm_census_entry;

/* Live managed objects by type, most numerous first: fills out[0..max)
 * and returns how many types have live objects (which may exceed max).
 * Exact when no other thread creates or frees objects meanwhile. */
FTM_API size_t ftm_census(ftm_census_entry *out, size_t max);
/* The census as a table: at most limit rows (0: all). */
FTM_API int ftm_census_print(size_t limit, FILE *f);

/* ---- sizes --------------------------------------------------------------------- */
/* Bytes of obj and of everything reachable from it (through the types'
 * traverse) that nothing outside that set references — what would be
 * freed with obj — each counted once, with ftm_sizeof.  Shared and
 * immortal objects are not counted; cycles are fine.  Read it while the
 * structure is not being changed for an exact answer. */
FTM_API size_t ftm_deep_sizeof(ftm_object *obj);

/* ---- reference graphs ------------------------------------------------------------ */
typedef enum ftm_refgraph_dir {
  FTM_REFGRAPH_REFERENTS, /* what obj references, and so on (show_refs) */
  FTM_REFGRAPH_REFERRERS, /* what references obj (show_backrefs): tracked objects only */
} ftm_refgraph_dir;

/* Graphviz dot of the objects within depth (>= 0) edges of obj, at most
 * 500 nodes: one node per object (type, address, ftm_sizeof), obj
 * highlighted.  Render with `dot -Tsvg`. */
FTM_API int ftm_refgraph_dump(ftm_object *obj, int depth, ftm_refgraph_dir dir, FILE *f);

/* ---- leaks ------------------------------------------------------------------------- */
/* What is still alive: the census, and when tracing the largest
 * allocation sites of the live traces.  FTMEM_LEAK_REPORT=1 prints it on
 * stderr at exit. */
FTM_API int ftm_leak_report(FILE *f);

#ifdef __cplusplus
}
#endif
#endif
