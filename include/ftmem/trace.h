/* ftmem/trace.h — where memory goes: allocation tracing after Python's
 * tracemalloc, for malloc (through the override or the ftm_ API) and for
 * managed objects, from every thread.  Included by ftmem.h.
 *
 * Tracing records, for each live block allocated while it is on, its size
 * and the call stack that allocated it (up to `nframes` return addresses,
 * innermost first).  A snapshot copies the live traces and resolves the
 * addresses to function, file and line with elfutils' libdw; statistics
 * group a snapshot by line, by file or by whole traceback, and compare two
 * snapshots.
 *
 * Sampling (ftm_trace_start_sampled, or FTMEM_TRACE_SAMPLE=<bytes> with
 * FTMEM_TRACE=<nframes> in the environment) records about one allocation
 * per `sample_bytes` bytes allocated, as tcmalloc's heap profiler does: a
 * block of size s is sampled with probability 1 - exp(-s / sample_bytes)
 * and stands for 1 / that probability blocks, so sizes and counts are
 * unbiased estimates.  Cheap enough to leave on in production.
 *
 * Error contract: functions returning int give 0 or -1 with errno;
 * functions returning pointers give NULL with errno.  EINVAL for bad
 * arguments (frame counts, patterns, snapshots of different depths),
 * ENOMEM when memory runs out, ENOENT for an untraced block.  Nothing here
 * aborts.
 *
 * Memory the tracer itself uses (its tables) comes straight from the OS
 * and is reported by ftm_trace_get_tracer_memory, not traced.
 */
#ifndef FTMEM_TRACE_H
#define FTMEM_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FTM_TRACE_MAX_FRAMES 128

/* One resolved frame.  Strings belong to the snapshot they came from. */
typedef struct ftm_trace_frame {
  const char *filename; /* "<unknown>" without line information */
  int lineno;           /* 0 when unknown */
  const char *function; /* "<unknown>" without a symbol */
  uintptr_t pc;         /* the return address (0 in grouped statistics) */
} ftm_trace_frame;

/* ---- tracing ------------------------------------------------------------- */
/* Start tracing every allocation, keeping nframes (1..FTM_TRACE_MAX_FRAMES)
 * frames.  Already tracing: the new depth applies to later allocations. */
FTM_API int ftm_trace_start(int nframes);
/* Start tracing a sample: on average one record per sample_bytes (> 0). */
FTM_API int ftm_trace_start_sampled(int nframes, size_t sample_bytes);
/* Stop, and forget every trace (as tracemalloc.stop). */
FTM_API void ftm_trace_stop(void);
FTM_API bool ftm_trace_is_tracing(void);
FTM_API int ftm_trace_get_traceback_limit(void);
FTM_API size_t ftm_trace_get_sample_rate(void); /* 0: every allocation */
/* Bytes in traced blocks now and at most since start/reset_peak (estimates
 * when sampling). */
FTM_API void ftm_trace_get_traced_memory(size_t *current, size_t *peak);
FTM_API void ftm_trace_reset_peak(void);
/* Forget every trace, keep tracing. */
FTM_API void ftm_trace_clear_traces(void);
/* Bytes the tracer's own tables take from the OS. */
FTM_API size_t ftm_trace_get_tracer_memory(void);
/* The stack that allocated the block (or object's block) at p: up to max
 * frames into out, resolved; returns the number of frames, or -1 with
 * ENOENT when p is not traced.  Strings stay valid until ftm_trace_stop. */
FTM_API int ftm_trace_get_object_traceback(const void *p, ftm_trace_frame *out, int max);

/* ---- snapshots ----------------------------------------------------------- */
typedef struct ftm_trace_snapshot ftm_trace_snapshot;

/* The live traces now; NULL with EINVAL when not tracing. */
FTM_API ftm_trace_snapshot *ftm_trace_take_snapshot(void);
FTM_API void ftm_trace_snapshot_free(ftm_trace_snapshot *s);
FTM_API int ftm_trace_snapshot_traceback_limit(const ftm_trace_snapshot *s);
FTM_API size_t ftm_trace_snapshot_sample_rate(const ftm_trace_snapshot *s);
FTM_API size_t ftm_trace_snapshot_count(const ftm_trace_snapshot *s); /* traces */
FTM_API size_t ftm_trace_snapshot_size(const ftm_trace_snapshot *s);  /* bytes (estimate) */

/* tracemalloc.Filter: a trace matches when its most recent frame (any
 * frame with all_frames) has a file name matching the fnmatch(3) pattern
 * and, if lineno > 0, that line.  Inclusive filters keep what matches any
 * of them; exclusive ones drop what matches any of them. */
typedef struct ftm_trace_filter {
  bool inclusive;
  const char *filename_pattern;
  int lineno;
  bool all_frames;
} ftm_trace_filter;

/* A new snapshot of the traces the filters keep; NULL with EINVAL for a
 * NULL, empty or malformed pattern (an unclosed '[' or a trailing '\'). */
FTM_API ftm_trace_snapshot *ftm_trace_snapshot_filter(const ftm_trace_snapshot *s,
                                                      const ftm_trace_filter *filters, size_t n);

/* ---- statistics ----------------------------------------------------------- */
typedef enum ftm_trace_key {
  FTM_TRACE_BY_LINENO,    /* file and line of the most recent frame */
  FTM_TRACE_BY_FILENAME,  /* file of the most recent frame */
  FTM_TRACE_BY_TRACEBACK, /* the whole stack, as (file, line) frames */
} ftm_trace_key;

typedef struct ftm_trace_stat {
  const ftm_trace_frame *frames; /* the key: 1 frame (lineno 0 by file), or the stack */
  int nframes;
  size_t size, count;            /* estimates when sampling */
  long long size_diff, count_diff; /* compare_to only: against the older snapshot */
} ftm_trace_stat;

typedef struct ftm_trace_stats ftm_trace_stats;

/* Grouped by key, largest first.  cumulative (by line or file only):
 * count a trace under every frame of its stack, not only the most recent. */
FTM_API ftm_trace_stats *ftm_trace_statistics(const ftm_trace_snapshot *s, ftm_trace_key key,
                                              bool cumulative);
/* newer against older, largest change first; EINVAL when their traceback
 * limits or sample rates differ. */
FTM_API ftm_trace_stats *ftm_trace_compare_to(const ftm_trace_snapshot *newer,
                                              const ftm_trace_snapshot *older, ftm_trace_key key,
                                              bool cumulative);
FTM_API size_t ftm_trace_stats_len(const ftm_trace_stats *st);
FTM_API const ftm_trace_stat *ftm_trace_stats_get(const ftm_trace_stats *st, size_t i);
FTM_API void ftm_trace_stats_free(ftm_trace_stats *st);
/* tracemalloc's str(Statistic) / str(StatisticDiff), one per line, at most
 * limit lines (0: all). */
FTM_API int ftm_trace_stats_print(const ftm_trace_stats *st, size_t limit, FILE *f);

#ifdef __cplusplus
}
#endif
#endif
