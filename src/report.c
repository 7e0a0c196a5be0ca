/* report.c — the JSON report (ftmem/report.h): statistics, pools per size
 * class, arenas, a memory-over-time series sampled while the program
 * runs, collector pauses, trace statistics and the type census, for
 * tools/ftmem-report to turn into an HTML page.
 *
 * FTMEM_REPORT=<path> starts the sampler at process start and writes the
 * report at exit.  The sampler is one thread that wakes every
 * FTMEM_REPORT_INTERVAL ms; its series and the collection log live in
 * OS memory (never traced, never in the heap being reported on).
 *
 * The file is written to <path>.tmp.<pid> and renamed over <path> only
 * once complete: a reader never sees half a report under the real name.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "object_internal.h"
#include "trace_internal.h"

#define FTM_SERIES_MAX 65536 /* samples kept: past it, every other one is dropped */
#define FTM_GCLOG_MAX 8192   /* collections kept (the latest) */

typedef struct {
  uint32_t t_ms;
  uint64_t rss, allocated, committed, traced;
} ftm__sample;

typedef struct {
  uint32_t t_ms;
  int gen;
  float duration_ms, pause_ms;
  uint32_t collected;
} ftm__gclog;

static pthread_mutex_t ftm__report_lock = PTHREAD_MUTEX_INITIALIZER;
static ftm__sample *ftm__series; /* OS memory, FTM_SERIES_MAX */
static size_t ftm__nseries;
static uint32_t ftm__series_stride = 1; /* ticks per kept sample (doubles when full) */
static uint64_t ftm__ticks;
static ftm__gclog *ftm__gclogs; /* ring, FTM_GCLOG_MAX */
static uint64_t ftm__ngc;
static int64_t ftm__report_t0;
static _Atomic int ftm__report_interval; /* ms; 0: no sampler */
static _Atomic int ftm__report_stop;
static pthread_t ftm__report_thread;
static bool ftm__report_thread_started;

static uint32_t ftm__report_now(void) { return (uint32_t)(ftm__clock_ms() - ftm__report_t0); }

static void ftm__report_sample(void) {
  ftm_stats_t st;
  ftm_stats_get(&st);
  size_t traced = 0;
  ftm_trace_get_traced_memory(&traced, NULL);
  pthread_mutex_lock(&ftm__report_lock);
  if (ftm__series != NULL && ftm__ticks++ % ftm__series_stride == 0) {
    if (ftm__nseries == FTM_SERIES_MAX) { /* keep every other sample, sample half as often */
      for (size_t i = 0; i < FTM_SERIES_MAX / 2; i++) ftm__series[i] = ftm__series[2 * i];
      ftm__nseries = FTM_SERIES_MAX / 2;
      ftm__series_stride *= 2;
    }
    ftm__series[ftm__nseries++] = (ftm__sample){.t_ms = ftm__report_now(), .rss = st.rss,
                                                .allocated = st.allocated, .committed = st.committed,
                                                .traced = traced};
  }
  pthread_mutex_unlock(&ftm__report_lock);
}

static void ftm__report_gc_cb(const char *phase, const ftm_gc_info *info, void *arg) {
  (void)arg;
  if (strcmp(phase, "stop") != 0) return;
  pthread_mutex_lock(&ftm__report_lock);
  if (ftm__gclogs != NULL) {
    ftm__gclogs[ftm__ngc++ % FTM_GCLOG_MAX] =
        (ftm__gclog){.t_ms = ftm__report_now(), .gen = info->generation, .duration_ms = (float)(info->duration * 1e3),
                     .pause_ms = (float)(info->pause * 1e3), .collected = (uint32_t)info->collected};
  }
  pthread_mutex_unlock(&ftm__report_lock);
}

static void *ftm__report_main(void *arg) {
  (void)arg;
  ftm__trace_busy++; /* nothing this thread allocates is the program's */
  while (!ftm_atomic_load_relaxed(&ftm__report_stop)) {
    ftm__report_sample();
    int ms = ftm_atomic_load_relaxed(&ftm__report_interval);
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

int ftm_report_start(int interval_ms) {
  if (interval_ms <= 0) {
    errno = EINVAL;
    return -1;
  }
  ftm__init();
  pthread_mutex_lock(&ftm__report_lock);
  int rc = 0;
  if (ftm__series == NULL) {
    ftm__series = ftm__os_map(FTM_SERIES_MAX * sizeof *ftm__series);
    ftm__gclogs = ftm__os_map(FTM_GCLOG_MAX * sizeof *ftm__gclogs);
    if (ftm__series == NULL || ftm__gclogs == NULL) {
      if (ftm__series) ftm__os_unmap(ftm__series, FTM_SERIES_MAX * sizeof *ftm__series);
      if (ftm__gclogs) ftm__os_unmap(ftm__gclogs, FTM_GCLOG_MAX * sizeof *ftm__gclogs);
      ftm__series = NULL;
      ftm__gclogs = NULL;
      errno = ENOMEM;
      rc = -1;
    } else {
      ftm__report_t0 = ftm__clock_ms();
    }
  }
  ftm_atomic_store_relaxed(&ftm__report_interval, interval_ms);
  bool start = rc == 0 && !ftm__report_thread_started;
  if (start) ftm__report_thread_started = true;
  pthread_mutex_unlock(&ftm__report_lock);
  if (start) {
    ftm_gc_callback_add(ftm__report_gc_cb, NULL);
    if (pthread_create(&ftm__report_thread, NULL, ftm__report_main, NULL) != 0) {
      ftm__report_thread_started = false;
      errno = EAGAIN;
      return -1;
    }
  }
  return rc;
}

void ftm_report_stop(void) {
  if (!ftm__report_thread_started) return;
  ftm_atomic_store_relaxed(&ftm__report_stop, 1);
  pthread_join(ftm__report_thread, NULL);
  ftm__report_thread_started = false;
  ftm_atomic_store_relaxed(&ftm__report_stop, 0);
  ftm_gc_callback_remove(ftm__report_gc_cb, NULL);
}

/* ---- writing ---------------------------------------------------------------- */
static void ftm__json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; s && *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c < 0x20) fprintf(f, "\\u%04x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

static void ftm__json_frames(FILE *f, const ftm_trace_stat *s) {
  fprintf(f, "[");
  for (int k = 0; k < s->nframes; k++) {
    fprintf(f, "%s{\"file\": ", k ? ", " : "");
    ftm__json_str(f, s->frames[k].filename);
    fprintf(f, ", \"line\": %d, \"function\": ", s->frames[k].lineno);
    ftm__json_str(f, s->frames[k].function);
    fprintf(f, "}");
  }
  fprintf(f, "]");
}

static void ftm__json_trace(FILE *f) {
  size_t cur = 0, peak = 0;
  ftm_trace_get_traced_memory(&cur, &peak);
  fprintf(f, "\"trace\": {\"tracing\": %s, \"traceback_limit\": %d, \"sample_rate\": %zu, \"current\": %zu, "
             "\"peak\": %zu, \"tracer_memory\": %zu",
          ftm_trace_is_tracing() ? "true" : "false", ftm_trace_get_traceback_limit(), ftm_trace_get_sample_rate(),
          cur, peak, ftm_trace_get_tracer_memory());
  ftm_trace_snapshot *s = ftm_trace_is_tracing() ? ftm_trace_take_snapshot() : NULL;
  const char *names[2] = {"top_lines", "top_tracebacks"};
  ftm_trace_key keys[2] = {FTM_TRACE_BY_LINENO, FTM_TRACE_BY_TRACEBACK};
  for (int w = 0; w < 2; w++) {
    fprintf(f, ", \"%s\": [", names[w]);
    ftm_trace_stats *st = s ? ftm_trace_statistics(s, keys[w], false) : NULL;
    size_t n = ftm_trace_stats_len(st);
    for (size_t i = 0; i < n && i < 50; i++) {
      const ftm_trace_stat *x = ftm_trace_stats_get(st, i);
      fprintf(f, "%s{\"size\": %zu, \"count\": %zu, \"frames\": ", i ? ", " : "", x->size, x->count);
      ftm__json_frames(f, x);
      fprintf(f, "}");
    }
    fprintf(f, "]");
    ftm_trace_stats_free(st);
  }
  ftm_trace_snapshot_free(s);
  fprintf(f, "}");
}

static void ftm__json_body(FILE *f) {
  ftm_stats_t st;
  ftm_stats_get(&st);
  char cmd[256] = "";
  FILE *c = fopen("/proc/self/cmdline", "r");
  if (c != NULL) {
    size_t n = fread(cmd, 1, sizeof cmd - 1, c);
    fclose(c);
    for (size_t i = 0; i + 1 < n; i++)
      if (cmd[i] == 0) cmd[i] = ' ';
    cmd[n] = 0;
  }
  fprintf(f, "{\"ftmem_report\": 1, \"version\": \"%d.%d.%d\", \"pid\": %d, \"command\": ", FTMEM_VERSION_MAJOR,
          FTMEM_VERSION_MINOR, FTMEM_VERSION_PATCH, (int)getpid());
  ftm__json_str(f, cmd);
  fprintf(f, ", \"written_at\": %lld,\n", (long long)time(NULL));
  fprintf(f, "\"stats\": {\"allocated\": %zu, \"active\": %zu, \"committed\": %zu, \"dirty\": %zu, \"mapped\": %zu, "
             "\"rss\": %zu, \"peak_rss\": %zu, \"malloc_count\": %llu, \"free_count\": %llu, \"live_count\": %llu, "
             "\"arenas\": %llu, \"large_count\": %llu, \"threads\": %llu},\n",
          st.allocated, st.active, st.committed, st.dirty, st.mapped, st.rss, st.peak_rss, st.malloc_count,
          st.free_count, st.live_count, st.arenas, st.large_count, st.threads);
  /* pools per size class: blocks in use of the blocks the pools hold */
  ftm__class_stat cs[FTM_CLASSES];
  ftm__class_stats(cs);
  fprintf(f, "\"size_classes\": [");
  bool first = true;
  for (unsigned k = 0; k < FTM_CLASSES; k++) {
    if (cs[k].pools == 0 && cs[k].mallocs == 0) continue;
    fprintf(f, "%s{\"class\": %u, \"block_size\": %u, \"pools\": %u, \"blocks_total\": %llu, \"blocks_used\": %llu, "
               "\"mallocs\": %llu, \"frees\": %llu}",
            first ? "" : ", ", k, cs[k].block_size, cs[k].pools, (unsigned long long)cs[k].blocks_total,
            (unsigned long long)cs[k].blocks_used, (unsigned long long)cs[k].mallocs, (unsigned long long)cs[k].frees);
    first = false;
  }
  fprintf(f, "],\n\"arenas\": [");
  uint32_t na = ftm_atomic_load_acquire(&ftm__arena_count);
  for (uint32_t a = 0; a < na && a < FTM_MAX_ARENAS; a++) {
    uint64_t fr = ftm_atomic_load_relaxed(&ftm__arenas[a].xfree) & FTM_ARENA_DATA_MASK;
    uint64_t di = ftm_atomic_load_relaxed(&ftm__arenas[a].xdirty) & fr;
    fprintf(f, "%s{\"index\": %u, \"used_slices\": %d, \"free_slices\": %d, \"dirty_slices\": %d}", a ? ", " : "", a,
            FTM_ARENA_SLICES - 1 - __builtin_popcountll(fr), __builtin_popcountll(fr), __builtin_popcountll(di));
  }
  fprintf(f, "],\n");
  /* the series and the collection log, copied under the lock */
  pthread_mutex_lock(&ftm__report_lock);
  fprintf(f, "\"series\": {\"interval_ms\": %d, \"stride\": %u, \"samples\": [",
          ftm_atomic_load_relaxed(&ftm__report_interval), ftm__series_stride);
  for (size_t i = 0; i < ftm__nseries; i++) {
    const ftm__sample *s = &ftm__series[i];
    fprintf(f, "%s[%u, %llu, %llu, %llu, %llu]", i ? ", " : "", s->t_ms, (unsigned long long)s->rss,
            (unsigned long long)s->allocated, (unsigned long long)s->committed, (unsigned long long)s->traced);
  }
  fprintf(f, "], \"columns\": [\"t_ms\", \"rss\", \"allocated\", \"committed\", \"traced\"]},\n");
  ftm_gc_gen_stats_t gs[FTM_GC_GENERATIONS];
  ftm_gc_get_stats(gs);
  fprintf(f, "\"gc\": {\"enabled\": %s, \"generations\": [", ftm_gc_isenabled() ? "true" : "false");
  for (int g = 0; g < FTM_GC_GENERATIONS; g++)
    fprintf(f, "%s{\"collections\": %llu, \"collected\": %llu, \"uncollectable\": %llu, \"duration_max_ms\": %.3f, "
               "\"pause_max_ms\": %.3f, \"duration_total_ms\": %.3f, \"pause_total_ms\": %.3f}",
            g ? ", " : "", (unsigned long long)gs[g].collections, (unsigned long long)gs[g].collected,
            (unsigned long long)gs[g].uncollectable, gs[g].duration_max * 1e3, gs[g].pause_max * 1e3,
            gs[g].duration_total * 1e3, gs[g].pause_total * 1e3);
  fprintf(f, "], \"collections\": [");
  uint64_t from = ftm__ngc > FTM_GCLOG_MAX ? ftm__ngc - FTM_GCLOG_MAX : 0;
  for (uint64_t i = from; i < ftm__ngc; i++) {
    const ftm__gclog *g = &ftm__gclogs[i % FTM_GCLOG_MAX];
    fprintf(f, "%s[%u, %d, %.4f, %.4f, %u]", i > from ? ", " : "", g->t_ms, g->gen, g->duration_ms, g->pause_ms,
            g->collected);
  }
  fprintf(f, "], \"columns\": [\"t_ms\", \"generation\", \"duration_ms\", \"pause_ms\", \"collected\"]},\n");
  pthread_mutex_unlock(&ftm__report_lock);
  ftm__json_trace(f);
  fprintf(f, ",\n\"census\": [");
  ftm_census_entry rows[FTM_CENSUS_TYPES];
  size_t n = ftm_census(rows, FTM_CENSUS_TYPES);
  for (size_t i = 0; i < n && i < FTM_CENSUS_TYPES; i++) {
    fprintf(f, "%s{\"type\": ", i ? ", " : "");
    ftm__json_str(f, rows[i].name);
    fprintf(f, ", \"count\": %zu, \"bytes\": %zu}", rows[i].count, rows[i].bytes);
  }
  fprintf(f, "]}\n");
}

int ftm_report_write(const char *path) {
  if (path == NULL || *path == 0) {
    errno = EINVAL;
    return -1;
  }
  ftm__init();
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp) {
    errno = ENAMETOOLONG;
    return -1;
  }
  ftm__trace_busy++;
  FILE *f = fopen(tmp, "w");
  int rc = -1, err = 0;
  if (f == NULL) {
    err = errno;
  } else {
    ftm__json_body(f);
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) {
      err = errno ? errno : EIO;
      unlink(tmp);
    } else if (rename(tmp, path) != 0) {
      err = errno;
      unlink(tmp);
    } else {
      rc = 0;
    }
  }
  ftm__trace_busy--;
  if (rc != 0) errno = err;
  return rc;
}

/* FTMEM_REPORT=<path>: sample from the start, write at exit.  "%p" in
 * the path is the process id (as in valgrind's --log-file), so programs
 * that run others (a shell, a test runner) get one report each; a forked
 * child that does not exec writes none (its parent's report is the one
 * under that name). */
static char ftm__report_path[4096];
static pid_t ftm__report_pid;

void ftm__report_init_from_env(void) {
  const char *p = getenv("FTMEM_REPORT");
  if (p == NULL || *p == 0) return;
  size_t o = 0;
  for (; *p && o + 24 < sizeof ftm__report_path; p++) {
    if (p[0] == '%' && p[1] == 'p') {
      o += (size_t)snprintf(ftm__report_path + o, sizeof ftm__report_path - o, "%d", (int)getpid());
      p++;
    } else {
      ftm__report_path[o++] = *p;
    }
  }
  ftm__report_path[o] = 0;
  ftm__report_pid = getpid();
  long ms = ftm__option(FTM_OPTION_REPORT_INTERVAL);
  if (ftm_report_start(ms > 0 ? (int)ms : 100) != 0) ftm__warning("FTMEM_REPORT=%s: the sampler did not start", p);
}

void ftm__report_at_exit(void) {
  if (ftm__report_path[0] == 0 || getpid() != ftm__report_pid) return;
  ftm__report_sample(); /* the last moment */
  if (ftm_report_write(ftm__report_path) != 0)
    fprintf(stderr, "ftmem: FTMEM_REPORT=%s: cannot write the report: %s\n", ftm__report_path, strerror(errno));
}
