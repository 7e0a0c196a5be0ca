/* options.c — the options table: FTMEM_<NAME> environment variables read
 * lazily on first use, settable by ftm_option_set, shown by
 * ftm_options_print with the build configuration.  One X-macro list feeds
 * all three.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

#define FTM_OPTIONS(X)                                                                   \
  X(SHOW_STATS, "SHOW_STATS", 0, "print statistics on stderr at exit")                   \
  X(VERBOSE, "VERBOSE", 0, "report failed OS calls and warnings on stderr")             \
  X(PURGE_DELAY, "PURGE_DELAY", 20, "ms a free page stays before it is returned to the OS") \
  X(PURGE_THREAD, "PURGE_THREAD", 1, "start a purger thread so idle programs return memory") \
  X(LARGE_CACHE, "LARGE_CACHE", 16, "freed large mappings kept for reuse (max 64)")               \
  X(TRACE, "TRACE", 0, "trace allocations from the start, keeping this many frames (0: off)")  \
  X(TRACE_SAMPLE, "TRACE_SAMPLE", 0, "with TRACE: sample one allocation per this many bytes (0: all)") \
  X(LEAK_REPORT, "LEAK_REPORT", 0, "print what is still alive at exit (census, allocation sites)") \
  X(REPORT_INTERVAL, "REPORT_INTERVAL", 100, "with FTMEM_REPORT=<path>: ms between memory samples")

typedef struct {
  const char *name;
  long def;
  const char *desc;
} ftm__option_desc;

#define FTM_OPT_DESC(id, name, def, desc) [FTM_OPTION_##id] = {name, def, desc},
static const ftm__option_desc ftm__option_table[FTM_OPTION__COUNT] = {FTM_OPTIONS(FTM_OPT_DESC)};
static _Atomic long ftm__option_value[FTM_OPTION__COUNT];
static _Atomic int ftm__options_loaded; /* 0 no, 1 yes */

static long ftm__parse(const char *s, long def) {
  if (s == NULL || *s == 0) return def;
  if (!strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on")) return 1;
  if (!strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcasecmp(s, "off")) return 0;
  char *end;
  long v = strtol(s, &end, 10);
  return end == s ? def : v;
}

static void ftm__options_load(void) {
  char env[64];
  for (int i = 0; i < FTM_OPTION__COUNT; i++) {
    snprintf(env, sizeof env, "FTMEM_%s", ftm__option_table[i].name);
    long v = ftm__parse(getenv(env), ftm__option_table[i].def);
    if (v < 0) v = ftm__option_table[i].def;
    ftm_atomic_store_relaxed(&ftm__option_value[i], v);
  }
  /* release: the values above are visible to whoever sees the flag */
  ftm_atomic_store_release(&ftm__options_loaded, 1);
}

long ftm__option(ftm_option_t o) {
  if (ftm_unlikely(!ftm_atomic_load_acquire(&ftm__options_loaded))) ftm__options_load();
  return ftm_atomic_load_relaxed(&ftm__option_value[o]);
}

FTM_API long ftm_option_get(ftm_option_t o) {
  if ((unsigned)o >= FTM_OPTION__COUNT) return -1;
  return ftm__option(o);
}

FTM_API void ftm_option_set(ftm_option_t o, long value) {
  if ((unsigned)o >= FTM_OPTION__COUNT || value < 0) return;
  ftm__option(o); /* load the others first so this one is not overwritten */
  ftm_atomic_store_relaxed(&ftm__option_value[o], value);
}

FTM_API void ftm_options_print(void) {
  fprintf(stderr, "ftmem %d.%d.%d options (environment FTMEM_<NAME>):\n", FTMEM_VERSION_MAJOR,
          FTMEM_VERSION_MINOR, FTMEM_VERSION_PATCH);
  for (int i = 0; i < FTM_OPTION__COUNT; i++)
    fprintf(stderr, "  FTMEM_%-14s = %-6ld (default %ld) %s\n", ftm__option_table[i].name,
            ftm__option((ftm_option_t)i), ftm__option_table[i].def, ftm__option_table[i].desc);
  fprintf(stderr, "build: debug=%d secure=%d sanitize=%d override=%d stats=on\n",
#ifdef FTMEM_DEBUG
          1,
#else
          0,
#endif
#ifdef FTMEM_SECURE
          1,
#else
          0,
#endif
#ifdef FTMEM_SANITIZE
          1,
#else
          0,
#endif
#ifdef FTMEM_OVERRIDE
          1
#else
          0
#endif
  );
  fprintf(stderr, "geometry: arena %zu KiB, slice %zu KiB, %d size classes up to %zu B, large above\n",
          FTM_ARENA_SIZE >> 10, FTM_SLICE_SIZE >> 10, FTM_CLASSES, FTM_MEDIUM_MAX);
}
