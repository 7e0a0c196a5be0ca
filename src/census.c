/* census.c — live managed objects by type (ftmem/inspect.h), and the leak
 * report built on it.  Each thread counts the objects and bytes it
 * creates and frees per type row (object.c: ftm__census_add); the census
 * sums the rows over every thread state ever registered (slots are never
 * unmapped, so an exited thread's counts stay readable).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "object_internal.h"
#include "trace_internal.h"

static int ftm__cmp_census(const void *a, const void *b) {
  const ftm_census_entry *x = a, *y = b;
  if (x->count != y->count) return x->count > y->count ? -1 : 1;
  if (x->bytes != y->bytes) return x->bytes > y->bytes ? -1 : 1;
  return strcmp(x->name, y->name);
}

size_t ftm_census(ftm_census_entry *out, size_t max) {
  uint64_t n[FTM_CENSUS_TYPES] = {0}, b[FTM_CENSUS_TYPES] = {0};
  uint32_t nts = ftm_atomic_load_acquire(&ftm__tstate_count);
  for (uint32_t i = 0; i < nts && i < FTM_MAX_TSTATES; i++) {
    ftm__tstate *ts = ftm_atomic_load_acquire(&ftm__tstates[i]);
    if (ts == NULL) continue;
    for (unsigned r = 0; r < FTM_CENSUS_TYPES; r++) {
      n[r] += ftm_atomic_load_relaxed(&ts->census_n[r]);
      b[r] += ftm_atomic_load_relaxed(&ts->census_b[r]);
    }
  }
  ftm_census_entry rows[FTM_CENSUS_TYPES];
  size_t k = 0;
  uint32_t ntypes = ftm__type_count();
  for (unsigned r = 0; r < FTM_CENSUS_TYPES; r++) {
    /* a row read while another thread counts may be transiently "negative" */
    if ((int64_t)n[r] <= 0) continue;
    const ftm_type *t = r < FTM_CENSUS_TYPES - 1 || ntypes <= FTM_CENSUS_TYPES ? ftm__type_at(r) : NULL;
    rows[k++] = (ftm_census_entry){.type = t,
                                   .name = t ? t->name : "<other types>",
                                   .count = (size_t)n[r],
                                   .bytes = (int64_t)b[r] > 0 ? (size_t)b[r] : 0};
  }
  qsort(rows, k, sizeof *rows, ftm__cmp_census);
  if (out != NULL) memcpy(out, rows, (k < max ? k : max) * sizeof *rows);
  return k;
}

int ftm_census_print(size_t limit, FILE *f) {
  if (f == NULL) {
    errno = EINVAL;
    return -1;
  }
  ftm_census_entry rows[FTM_CENSUS_TYPES];
  size_t k = ftm_census(rows, FTM_CENSUS_TYPES);
  if (limit != 0 && limit < k) k = limit;
  int r = fprintf(f, "%-28s %12s %14s\n", "type", "objects", "bytes");
  for (size_t i = 0; i < k && r >= 0; i++) r = fprintf(f, "%-28s %12zu %14zu\n", rows[i].name, rows[i].count, rows[i].bytes);
  if (r < 0) {
    errno = EIO;
    return -1;
  }
  return 0;
}

int ftm_leak_report(FILE *f) {
  if (f == NULL) {
    errno = EINVAL;
    return -1;
  }
  ftm_stats_t st;
  ftm_stats_get(&st);
  fprintf(f, "ftmem: leak report: %llu blocks (%zu bytes) still allocated\n", st.live_count, st.allocated);
  fprintf(f, "ftmem: live managed objects by type:\n");
  if (ftm_census_print(20, f) != 0) return -1;
  if (ftm_trace_is_tracing()) {
    ftm_trace_snapshot *s = ftm_trace_take_snapshot();
    ftm_trace_stats *by = s ? ftm_trace_statistics(s, FTM_TRACE_BY_LINENO, false) : NULL;
    if (by != NULL) {
      fprintf(f, "ftmem: live traced blocks by allocation site (largest first):\n");
      ftm_trace_stats_print(by, 20, f);
    }
    ftm_trace_stats_free(by);
    ftm_trace_snapshot_free(s);
  }
  if (ferror(f)) {
    errno = EIO;
    return -1;
  }
  return 0;
}
