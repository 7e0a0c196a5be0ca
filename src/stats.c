/* stats.c — statistics merged on read: every heap counts its own mallocs
 * and frees (owner-written relaxed counters, never a lock or RMW), heaps
 * are never freed so exited threads' counts stay, and the arena, large and
 * OS layers keep their own atomics.  One X-macro list of the totals feeds
 * the struct fill, the text table and the JSON.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

typedef struct {
  uint64_t mallocs, frees;
} ftm__class_counts;

/* Per-class malloc/free counts over all heaps (index FTM_CLASSES: large). */
static void ftm__gather(ftm__class_counts counts[FTM_CLASSES + 1], uint64_t *threads) {
  memset(counts, 0, sizeof(ftm__class_counts) * (FTM_CLASSES + 1));
  uint64_t live = 0;
  uint32_t n = ftm_atomic_load_acquire(&ftm__heap_count);
  if (n > FTM_MAX_HEAPS) n = FTM_MAX_HEAPS;
  for (uint32_t i = 0; i < n; i++) {
    ftm__heap *h = ftm_atomic_load_acquire(&ftm__heaps[i]);
    if (h == NULL) continue;
    live += ftm_atomic_load_relaxed(&h->xlive) != 0;
    for (unsigned w = 0; w < FTM_DIRECT_N; w++) {
      unsigned cls = w <= 2 ? 0 : (w - 1) / 2;
      counts[cls].mallocs += ftm_atomic_load_relaxed(&h->stats.malloc_direct[w]);
    }
    for (unsigned c = 0; c < FTM_CLASSES; c++) {
      counts[c].mallocs += ftm_atomic_load_relaxed(&h->stats.malloc_n[c]);
      counts[c].frees += ftm_atomic_load_relaxed(&h->stats.free_n[c]);
    }
  }
  for (unsigned c = 0; c < FTM_CLASSES; c++) counts[c].frees += ftm__orphan_free_count(c);
  uint64_t lb;
  ftm__large_stats(&counts[FTM_CLASSES].mallocs, &counts[FTM_CLASSES].frees, &lb);
  if (threads) *threads = live;
}

void ftm__class_stats(ftm__class_stat out[FTM_CLASSES]) {
  ftm__class_counts counts[FTM_CLASSES + 1];
  ftm__gather(counts, NULL);
  for (unsigned c = 0; c < FTM_CLASSES; c++) {
    uint32_t pools = ftm_atomic_load_relaxed(&ftm__class_pools[c]);
    uint64_t per_pool = (uint64_t)ftm__pool_span(c) * FTM_SLICE_SIZE / ftm__class_size[c];
    out[c] = (ftm__class_stat){.block_size = ftm__class_size[c],
                               .pools = pools,
                               .blocks_total = pools * per_pool,
                               .blocks_used = counts[c].mallocs > counts[c].frees ? counts[c].mallocs - counts[c].frees : 0,
                               .mallocs = counts[c].mallocs,
                               .frees = counts[c].frees};
  }
}

FTM_API void ftm_stats_get(ftm_stats_t *out) {
  ftm__class_counts counts[FTM_CLASSES + 1];
  uint64_t threads;
  memset(out, 0, sizeof *out);
  ftm__gather(counts, &threads);
  for (unsigned c = 0; c <= FTM_CLASSES; c++) {
    out->malloc_count += counts[c].mallocs;
    out->free_count += counts[c].frees;
    uint64_t live = counts[c].mallocs > counts[c].frees ? counts[c].mallocs - counts[c].frees : 0;
    if (c < FTM_CLASSES) out->allocated += live * ftm__class_size[c];
  }
  out->live_count = out->malloc_count > out->free_count ? out->malloc_count - out->free_count : 0;
  uint64_t lm, lf, lbytes, cached, cached_bytes, fr, di, us;
  ftm__large_stats(&lm, &lf, &lbytes);
  ftm__large_counts(&cached, &cached_bytes);
  ftm__arena_counts(&fr, &di, &us);
  out->allocated += lbytes;
  out->large_count = lm > lf ? lm - lf : 0;
  out->pools = us; /* slices in use; a pool is 1, 4 or 8 of them */
  out->active = (size_t)us * FTM_SLICE_SIZE + lbytes;
  out->dirty = (size_t)di * FTM_SLICE_SIZE + cached_bytes;
  out->committed = out->active + out->dirty;
  out->mapped = ftm_atomic_load_relaxed(&ftm__os_mapped);
  out->rss = ftm__os_rss(&out->peak_rss);
  ftm_trace_get_traced_memory(&out->requested_live, NULL); /* 0 unless tracing */
  out->arenas = ftm_atomic_load_relaxed(&ftm__arena_count);
  out->purges = ftm_atomic_load_relaxed(&ftm__os_purges);
  out->threads = threads;
  out->abandoned_pools = ftm_atomic_load_relaxed(&ftm__abandoned_count);
}

#define FTM_STATS_FIELDS(X)                                                 \
  X(allocated, "bytes in live blocks")                                      \
  X(active, "bytes in slices and large blocks in use")                      \
  X(committed, "active + dirty")                                            \
  X(dirty, "free bytes not yet returned to the OS")                         \
  X(mapped, "address space mapped")                                         \
  X(rss, "resident set size of the process")                                \
  X(peak_rss, "peak resident set size")                                     \
  X(malloc_count, "blocks handed out")                                      \
  X(free_count, "blocks freed")                                             \
  X(live_count, "blocks live")                                              \
  X(pools, "64 KiB slices in use by pools")                                 \
  X(arenas, "4 MiB arenas reserved")                                        \
  X(large_count, "large blocks live")                                       \
  X(purges, "purge and unmap calls")                                        \
  X(threads, "thread heaps in use")                                         \
  X(abandoned_pools, "pools of exited threads not yet adopted")

static void ftm__fmt_size(char *buf, size_t n, unsigned long long v) {
  static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double d = (double)v;
  int u = 0;
  while (d >= 1024 && u < 4) d /= 1024, u++;
  if (u == 0) snprintf(buf, n, "%llu B", v);
  else snprintf(buf, n, "%.1f %s", d, unit[u]);
}

FTM_API void ftm_stats_print(FILE *out) {
  if (out == NULL) out = stderr;
  ftm_stats_t s;
  ftm_stats_get(&s);
  char buf[32];
  fprintf(out, "ftmem statistics\n");
#define FTM_PRINT_FIELD(f, desc)                                                     \
  ftm__fmt_size(buf, sizeof buf, (unsigned long long)s.f);                           \
  if (strstr(#f, "count") || !strcmp(#f, "pools") || !strcmp(#f, "arenas") ||       \
      !strcmp(#f, "purges") || !strcmp(#f, "threads") || !strcmp(#f, "abandoned_pools")) \
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)s.f);                      \
  fprintf(out, "  %-16s %14s   %s\n", #f, buf, desc);
  FTM_STATS_FIELDS(FTM_PRINT_FIELD)
#undef FTM_PRINT_FIELD
  ftm__class_counts counts[FTM_CLASSES + 1];
  ftm__gather(counts, NULL);
  fprintf(out, "  %-6s %10s %14s %14s %12s %12s\n", "class", "block", "mallocs", "frees", "live", "live bytes");
  for (unsigned c = 0; c <= FTM_CLASSES; c++) {
    if (counts[c].mallocs == 0 && counts[c].frees == 0) continue;
    uint64_t live = counts[c].mallocs > counts[c].frees ? counts[c].mallocs - counts[c].frees : 0;
    if (c < FTM_CLASSES) {
      ftm__fmt_size(buf, sizeof buf, live * ftm__class_size[c]);
      fprintf(out, "  %-6u %10u %14llu %14llu %12llu %12s\n", c, ftm__class_size[c],
              (unsigned long long)counts[c].mallocs, (unsigned long long)counts[c].frees,
              (unsigned long long)live, buf);
    } else {
      fprintf(out, "  %-6s %10s %14llu %14llu %12llu\n", "large", "-", (unsigned long long)counts[c].mallocs,
              (unsigned long long)counts[c].frees, (unsigned long long)live);
    }
  }
}

FTM_API void ftm_stats_json(FILE *out) {
  if (out == NULL) out = stderr;
  ftm_stats_t s;
  ftm_stats_get(&s);
  fprintf(out, "{");
#define FTM_JSON_FIELD(f, desc) fprintf(out, "\"%s\": %llu, ", #f, (unsigned long long)s.f);
  FTM_STATS_FIELDS(FTM_JSON_FIELD)
#undef FTM_JSON_FIELD
  ftm__class_counts counts[FTM_CLASSES + 1];
  ftm__gather(counts, NULL);
  fprintf(out, "\"classes\": [");
  bool first = true;
  for (unsigned c = 0; c <= FTM_CLASSES; c++) {
    if (counts[c].mallocs == 0 && counts[c].frees == 0) continue;
    fprintf(out, "%s{\"class\": %u, \"block_size\": %u, \"mallocs\": %llu, \"frees\": %llu}", first ? "" : ", ", c,
            c < FTM_CLASSES ? ftm__class_size[c] : 0, (unsigned long long)counts[c].mallocs,
            (unsigned long long)counts[c].frees);
    first = false;
  }
  fprintf(out, "]}\n");
}
