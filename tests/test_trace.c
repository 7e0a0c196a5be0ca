/* test_trace.c — allocation tracing (ftmem/trace.h), after Python's
 * test_tracemalloc: traced memory exact, statistics attributed to the
 * right file and line (compiled with -O0 -g so lines are exact), snapshot
 * comparison, filters, object tracebacks, sampling estimates, bad input.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <ftmem.h>

static void stop_after(void) { ftm_trace_stop(); }
TestSuite(trace, .timeout = 120, .fini = stop_after);

static void *volatile sink;

/* Each helper allocates on one known line, which it records. */
static int line_of_alloc_a;
static int line_of_alloc_b;
static __attribute__((noinline)) void *alloc_b(size_t n) {
  line_of_alloc_b = __LINE__ + 1;
  void *p = ftm_malloc(n);
  sink = p;
  return p;
}
static __attribute__((noinline)) void *alloc_a2(size_t n) {
  line_of_alloc_a = __LINE__ + 1;
  void *p = ftm_malloc(n);
  sink = p;
  return p;
}
static int line_of_caller;
static __attribute__((noinline)) void *caller_of_a2(size_t n) {
  line_of_caller = __LINE__ + 1;
  void *p = alloc_a2(n);
  sink = p;
  return p;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The statistic of file test_trace.c, line `line`, or NULL. */
static const ftm_trace_stat *find_line(const ftm_trace_stats *st, int line) {
  for (size_t i = 0; i < ftm_trace_stats_len(st); i++) {
    const ftm_trace_stat *s = ftm_trace_stats_get(st, i);
    if (ends_with(s->frames[0].filename, "test_trace.c") && s->frames[0].lineno == line) return s;
  }
  return NULL;
}

Test(trace, start_stop_and_bad_arguments) {
  cr_assert(!ftm_trace_is_tracing());
  errno = 0;
  cr_assert_eq(ftm_trace_start(0), -1);
  cr_assert_eq(errno, EINVAL);
  cr_assert_eq(ftm_trace_start(FTM_TRACE_MAX_FRAMES + 1), -1);
  cr_assert_eq(errno, EINVAL);
  errno = 0;
  cr_assert_null(ftm_trace_take_snapshot(), "a snapshot while not tracing");
  cr_assert_eq(errno, EINVAL);
  cr_assert_eq(ftm_trace_start(5), 0);
  cr_assert(ftm_trace_is_tracing());
  cr_assert_eq(ftm_trace_get_traceback_limit(), 5);
  cr_assert_eq(ftm_trace_get_sample_rate(), 0);
  ftm_trace_stop();
  cr_assert(!ftm_trace_is_tracing());
  size_t cur, peak;
  ftm_trace_get_traced_memory(&cur, &peak);
  cr_assert_eq(cur, 0);
  cr_assert_eq(peak, 0);
}

Test(trace, traced_memory_is_exact) {
  static const size_t sizes[] = {1, 24, 100, 512, 513, 4000, 70000, 300000, 3u << 20};
  const size_t n = sizeof sizes / sizeof *sizes;
  void *p[16];
  cr_assert_eq(ftm_trace_start(1), 0);
  size_t cur, peak, total = 0;
  for (size_t i = 0; i < n; i++) {
    p[i] = ftm_malloc(sizes[i]);
    total += sizes[i];
    ftm_trace_get_traced_memory(&cur, &peak);
    cr_assert_eq(cur, total, "after malloc(%zu): current %zu, expected %zu", sizes[i], cur, total);
  }
  cr_assert_eq(peak, total);
  /* calloc, realloc (moves the trace), aligned */
  void *c = ftm_calloc(10, 30);
  void *r = ftm_realloc(ftm_malloc(10), 5000);
  void *a = ftm_aligned_alloc(256, 777);
  total += 300 + 5000 + 777;
  ftm_trace_get_traced_memory(&cur, &peak);
  cr_assert_eq(cur, total);
  ftm_free(c);
  ftm_free(r);
  ftm_free(a);
  total -= 300 + 5000 + 777;
  for (size_t i = 0; i < n; i += 2) {
    ftm_free(p[i]);
    total -= sizes[i];
  }
  ftm_trace_get_traced_memory(&cur, &peak);
  cr_assert_eq(cur, total);
  cr_assert_geq(peak, total + 300 + 5000 + 777);
  ftm_trace_reset_peak();
  ftm_trace_get_traced_memory(&cur, &peak);
  cr_assert_eq(peak, cur);
  /* a block allocated before tracing started is not traced; its free
   * changes nothing */
  ftm_trace_stop();
  void *before = ftm_malloc(1000);
  cr_assert_eq(ftm_trace_start(1), 0);
  ftm_free(before);
  ftm_trace_get_traced_memory(&cur, &peak);
  cr_assert_eq(cur, 0);
  for (size_t i = 1; i < n; i += 2) ftm_free(p[i]);
  ftm_trace_clear_traces();
  ftm_trace_get_traced_memory(&cur, &peak);
  cr_assert_eq(cur, 0);
  cr_assert(ftm_trace_is_tracing());
}

Test(trace, statistics_attribute_lines_and_files) {
  cr_assert_eq(ftm_trace_start(4), 0);
  void *v[300];
  for (int i = 0; i < 100; i++) v[i] = alloc_b(48);
  for (int i = 100; i < 300; i++) v[i] = caller_of_a2(1000);
  ftm_trace_snapshot *s = ftm_trace_take_snapshot();
  cr_assert_not_null(s);
  cr_assert_eq(ftm_trace_snapshot_traceback_limit(s), 4);
  cr_assert_geq(ftm_trace_snapshot_count(s), 300);

  ftm_trace_stats *st = ftm_trace_statistics(s, FTM_TRACE_BY_LINENO, false);
  cr_assert_not_null(st);
  const ftm_trace_stat *b = find_line(st, line_of_alloc_b);
  cr_assert_not_null(b, "no statistic for test_trace.c:%d", line_of_alloc_b);
  cr_assert_eq(b->size, 100 * 48);
  cr_assert_eq(b->count, 100);
  cr_assert_str_eq(b->frames[0].function, "alloc_b");
  const ftm_trace_stat *a = find_line(st, line_of_alloc_a);
  cr_assert_not_null(a, "no statistic for test_trace.c:%d", line_of_alloc_a);
  cr_assert_eq(a->size, 200 * 1000);
  cr_assert_eq(a->count, 200);
  /* largest first */
  cr_assert_geq(ftm_trace_stats_get(st, 0)->size, a->size);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  cr_assert_eq(ftm_trace_stats_print(st, 0, f), 0);
  fclose(f);
  char want[128];
  snprintf(want, sizeof want, "test_trace.c:%d: size=195 KiB, count=200, average=1000 B", line_of_alloc_a);
  cr_assert_not_null(strstr(text, want), "'%s' not in:\n%s", want, text);
  free(text);
  ftm_trace_stats_free(st);

  /* by file: both lines together */
  st = ftm_trace_statistics(s, FTM_TRACE_BY_FILENAME, false);
  cr_assert_not_null(st);
  bool found = false;
  for (size_t i = 0; i < ftm_trace_stats_len(st); i++) {
    const ftm_trace_stat *x = ftm_trace_stats_get(st, i);
    if (!ends_with(x->frames[0].filename, "test_trace.c")) continue;
    found = true;
    cr_assert_eq(x->frames[0].lineno, 0);
    cr_assert_geq(x->size, 100 * 48 + 200 * 1000);
    cr_assert_geq(x->count, 300);
  }
  cr_assert(found);
  ftm_trace_stats_free(st);

  /* by traceback: the caller's line is the second frame */
  st = ftm_trace_statistics(s, FTM_TRACE_BY_TRACEBACK, false);
  cr_assert_not_null(st);
  found = false;
  for (size_t i = 0; i < ftm_trace_stats_len(st); i++) {
    const ftm_trace_stat *x = ftm_trace_stats_get(st, i);
    if (x->frames[0].lineno != line_of_alloc_a || !ends_with(x->frames[0].filename, "test_trace.c")) continue;
    found = true;
    cr_assert_geq(x->nframes, 2);
    cr_assert_eq(x->frames[1].lineno, line_of_caller);
    cr_assert_str_eq(x->frames[1].function, "caller_of_a2");
    cr_assert_eq(x->count, 200);
  }
  cr_assert(found);
  ftm_trace_stats_free(st);

  /* cumulative by line: the caller's line counts the 200 too */
  st = ftm_trace_statistics(s, FTM_TRACE_BY_LINENO, true);
  cr_assert_not_null(st);
  const ftm_trace_stat *c = find_line(st, line_of_caller);
  cr_assert_not_null(c);
  cr_assert_eq(c->size, 200 * 1000);
  ftm_trace_stats_free(st);
  errno = 0;
  cr_assert_null(ftm_trace_statistics(s, FTM_TRACE_BY_TRACEBACK, true));
  cr_assert_eq(errno, EINVAL);

  ftm_trace_snapshot_free(s);
  for (int i = 0; i < 300; i++) ftm_free(v[i]);
}

Test(trace, compare_to_older_snapshot) {
  cr_assert_eq(ftm_trace_start(1), 0);
  void *v[50], *w[30];
  for (int i = 0; i < 50; i++) v[i] = alloc_b(64);
  ftm_trace_snapshot *s1 = ftm_trace_take_snapshot();
  for (int i = 0; i < 30; i++) w[i] = alloc_a2(128);
  for (int i = 0; i < 20; i++) ftm_free(v[i]);
  ftm_trace_snapshot *s2 = ftm_trace_take_snapshot();
  cr_assert_not_null(s1);
  cr_assert_not_null(s2);
  ftm_trace_stats *d = ftm_trace_compare_to(s2, s1, FTM_TRACE_BY_LINENO, false);
  cr_assert_not_null(d);
  const ftm_trace_stat *a = find_line(d, line_of_alloc_a);
  const ftm_trace_stat *b = find_line(d, line_of_alloc_b);
  cr_assert_not_null(a);
  cr_assert_not_null(b);
  cr_assert_eq(a->size, 30 * 128);
  cr_assert_eq(a->size_diff, 30 * 128);
  cr_assert_eq(a->count_diff, 30);
  cr_assert_eq(b->size, 30 * 64);
  cr_assert_eq(b->size_diff, -20 * 64);
  cr_assert_eq(b->count_diff, -20);
  /* largest change first */
  cr_assert_geq(llabs(ftm_trace_stats_get(d, 0)->size_diff), 30 * 128);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  ftm_trace_stats_print(d, 0, f);
  fclose(f);
  char want[128];
  snprintf(want, sizeof want, "test_trace.c:%d: size=1920 B (-1280 B), count=30 (-20), average=64 B", line_of_alloc_b);
  cr_assert_not_null(strstr(text, want), "'%s' not in:\n%s", want, text);
  free(text);
  ftm_trace_stats_free(d);
  /* everything freed since: a group of size 0 with the whole loss */
  for (int i = 20; i < 50; i++) ftm_free(v[i]);
  ftm_trace_snapshot *s3 = ftm_trace_take_snapshot();
  d = ftm_trace_compare_to(s3, s2, FTM_TRACE_BY_LINENO, false);
  b = find_line(d, line_of_alloc_b);
  cr_assert_not_null(b);
  cr_assert_eq(b->size, 0);
  cr_assert_eq(b->size_diff, -30 * 64);
  ftm_trace_stats_free(d);
  /* snapshots of different depths cannot be compared */
  ftm_trace_stop();
  cr_assert_eq(ftm_trace_start(3), 0);
  ftm_trace_snapshot *s4 = ftm_trace_take_snapshot();
  errno = 0;
  cr_assert_null(ftm_trace_compare_to(s4, s3, FTM_TRACE_BY_LINENO, false));
  cr_assert_eq(errno, EINVAL);
  ftm_trace_snapshot_free(s1);
  ftm_trace_snapshot_free(s2);
  ftm_trace_snapshot_free(s3);
  ftm_trace_snapshot_free(s4);
  for (int i = 0; i < 30; i++) ftm_free(w[i]);
}

Test(trace, filters) {
  cr_assert_eq(ftm_trace_start(4), 0);
  void *v[40];
  for (int i = 0; i < 20; i++) v[i] = alloc_b(32);
  for (int i = 20; i < 40; i++) v[i] = caller_of_a2(32);
  ftm_trace_snapshot *s = ftm_trace_take_snapshot();
  cr_assert_not_null(s);
  /* exclude this file: nothing of ours is left */
  ftm_trace_filter ex = {.inclusive = false, .filename_pattern = "*test_trace.c"};
  ftm_trace_snapshot *f1 = ftm_trace_snapshot_filter(s, &ex, 1);
  cr_assert_not_null(f1);
  ftm_trace_stats *st = ftm_trace_statistics(f1, FTM_TRACE_BY_LINENO, false);
  cr_assert_null(find_line(st, line_of_alloc_b));
  cr_assert_null(find_line(st, line_of_alloc_a));
  ftm_trace_stats_free(st);
  /* include one line only */
  ftm_trace_filter in = {.inclusive = true, .filename_pattern = "*/test_trace.c", .lineno = line_of_alloc_b};
  ftm_trace_snapshot *f2 = ftm_trace_snapshot_filter(s, &in, 1);
  cr_assert_not_null(f2);
  cr_assert_eq(ftm_trace_snapshot_count(f2), 20);
  cr_assert_eq(ftm_trace_snapshot_size(f2), 20 * 32);
  /* the caller's line matches only with all_frames */
  ftm_trace_filter byc = {.inclusive = true, .filename_pattern = "*test_trace.c", .lineno = line_of_caller};
  ftm_trace_snapshot *f3 = ftm_trace_snapshot_filter(s, &byc, 1);
  cr_assert_eq(ftm_trace_snapshot_count(f3), 0);
  byc.all_frames = true;
  ftm_trace_snapshot *f4 = ftm_trace_snapshot_filter(s, &byc, 1);
  cr_assert_eq(ftm_trace_snapshot_count(f4), 20);
  /* inclusive and exclusive together: file included, one line excluded */
  ftm_trace_filter two[2] = {{.inclusive = true, .filename_pattern = "*test_trace.c"},
                             {.inclusive = false, .filename_pattern = "*test_trace.c", .lineno = line_of_alloc_b}};
  ftm_trace_snapshot *f5 = ftm_trace_snapshot_filter(s, two, 2);
  cr_assert_eq(ftm_trace_snapshot_count(f5), 20);
  /* bad patterns */
  const char *bad[] = {"", "[abc", "trailing\\"};
  for (size_t i = 0; i < 3; i++) {
    ftm_trace_filter b = {.inclusive = true, .filename_pattern = bad[i]};
    errno = 0;
    cr_assert_null(ftm_trace_snapshot_filter(s, &b, 1), "pattern '%s' accepted", bad[i]);
    cr_assert_eq(errno, EINVAL);
  }
  ftm_trace_filter nul = {.inclusive = true, .filename_pattern = NULL};
  cr_assert_null(ftm_trace_snapshot_filter(s, &nul, 1));
  ftm_trace_snapshot *snaps[] = {s, f1, f2, f3, f4, f5};
  for (int i = 0; i < 6; i++) ftm_trace_snapshot_free(snaps[i]);
  for (int i = 0; i < 40; i++) ftm_free(v[i]);
}

static ftm_type box_type = {.name = "box", .basic_size = sizeof(ftm_object) + 16};
static int line_of_new;
static __attribute__((noinline)) ftm_object *new_box(void) {
  line_of_new = __LINE__ + 1;
  ftm_object *o = ftm_new(&box_type);
  sink = o;
  return o;
}

Test(trace, object_traceback) {
  cr_assert_eq(ftm_trace_start(2), 0);
  void *p = alloc_b(200);
  ftm_trace_frame fr[4];
  int n = ftm_trace_get_object_traceback(p, fr, 4);
  cr_assert_geq(n, 1);
  cr_assert(ends_with(fr[0].filename, "test_trace.c"));
  cr_assert_eq(fr[0].lineno, line_of_alloc_b);
  cr_assert_str_eq(fr[0].function, "alloc_b");
  ftm_free(p);
  errno = 0;
  cr_assert_eq(ftm_trace_get_object_traceback(p, fr, 4), -1, "a freed block still has a traceback");
  cr_assert_eq(errno, ENOENT);
  int local;
  cr_assert_eq(ftm_trace_get_object_traceback(&local, fr, 4), -1);
  /* managed objects: traced at ftm_new, forgotten at death.  One death
   * first: debug builds then allocate their quarantine (traced too) */
  ftm_decref(new_box());
  size_t cur0, cur, peak;
  ftm_trace_get_traced_memory(&cur0, &peak);
  ftm_object *o = new_box();
  ftm_trace_get_traced_memory(&cur, &peak);
  cr_assert_eq(cur, cur0 + box_type.basic_size);
  n = ftm_trace_get_object_traceback(o, fr, 4);
  cr_assert_geq(n, 1);
  cr_assert_eq(fr[0].lineno, line_of_new);
  ftm_decref(o);
  cr_assert_eq(ftm_trace_get_object_traceback(o, fr, 4), -1);
  ftm_trace_get_traced_memory(&cur, &peak);
  cr_assert_eq(cur, cur0);
}

/* Sampling, one sample per 16 KiB on average: 200,000 blocks of 64 B
 * (about 780 samples expected: a standard deviation of 3.6%) and 20,000 of
 * 4 KiB (about 5,000 samples, 1.4%) on two lines.  Stated error: each
 * line's estimated bytes and count within 20% for the small blocks and
 * 10% for the large ones (over 5 standard deviations each), the traced
 * total within 10%. */
Test(trace, sampling_estimates_are_unbiased) {
  enum { NS = 200000, NB = 20000 };
  void **small = malloc(NS * sizeof *small), **big = malloc(NB * sizeof *big);
  cr_assert_eq(ftm_trace_start_sampled(1, 16 << 10), 0);
  cr_assert_eq(ftm_trace_get_sample_rate(), 16 << 10);
  for (int i = 0; i < NS; i++) {
    small[i] = alloc_b(64);
    if (i % 10 == 0) big[i / 10] = alloc_a2(4096);
  }
  ftm_trace_snapshot *s = ftm_trace_take_snapshot();
  cr_assert_not_null(s);
  cr_assert_lt(ftm_trace_snapshot_count(s), 20000, "sampling recorded %zu of %d", ftm_trace_snapshot_count(s), NS + NB);
  ftm_trace_stats *st = ftm_trace_statistics(s, FTM_TRACE_BY_LINENO, false);
  const ftm_trace_stat *b = find_line(st, line_of_alloc_b), *a = find_line(st, line_of_alloc_a);
  cr_assert_not_null(b);
  cr_assert_not_null(a);
  double eb = (double)b->size / (64.0 * NS), ea = (double)a->size / (4096.0 * NB);
  double cb = (double)b->count / NS, ca = (double)a->count / NB;
  cr_log_info("sampling: 64 B line estimated %.3f of the truth (count %.3f), 4 KiB line %.3f (count %.3f)", eb, cb, ea, ca);
  cr_assert(eb > 0.80 && eb < 1.20, "64 B line: estimate %.3f of the truth", eb);
  cr_assert(cb > 0.80 && cb < 1.20, "64 B line: count estimate %.3f of the truth", cb);
  cr_assert(ea > 0.90 && ea < 1.10, "4 KiB line: estimate %.3f of the truth", ea);
  cr_assert(ca > 0.90 && ca < 1.10, "4 KiB line: count estimate %.3f of the truth", ca);
  size_t cur, peak;
  ftm_trace_get_traced_memory(&cur, &peak);
  double ec = (double)cur / (64.0 * NS + 4096.0 * NB);
  cr_assert(ec > 0.90 && ec < 1.10, "traced memory estimate %.3f of the truth", ec);
  ftm_trace_stats_free(st);
  ftm_trace_snapshot_free(s);
  for (int i = 0; i < NS; i++) ftm_free(small[i]);
  for (int i = 0; i < NB; i++) ftm_free(big[i]);
  ftm_trace_get_traced_memory(&cur, &peak);
  cr_assert_eq(cur, 0, "every sampled block freed, %zu bytes still traced", cur);
  free(small);
  free(big);
}

/* Four threads allocate and free across each other while tracing: the
 * traced total is exact at the end. */
static void *volatile shared[4][1000];
static void *thread_work(void *arg) {
  long t = (long)arg;
  for (int r = 0; r < 20; r++) {
    for (int i = 0; i < 1000; i++) /* the old block, if the neighbour left it, is freed here */
      ftm_free(__atomic_exchange_n(&shared[t][i], ftm_malloc(16 + (size_t)(i % 64) * 8), __ATOMIC_ACQ_REL));
    /* free the neighbour's previous round: remote frees of traced blocks */
    for (int i = 0; i < 1000; i++) {
      void *p = __atomic_exchange_n(&shared[(t + 1) % 4][i], NULL, __ATOMIC_ACQ_REL);
      ftm_free(p);
    }
  }
  return NULL;
}

Test(trace, threads_exact_total) {
  cr_assert_eq(ftm_trace_start(2), 0);
  pthread_t th[4];
  for (long t = 0; t < 4; t++) pthread_create(&th[t], NULL, thread_work, (void *)t);
  for (int t = 0; t < 4; t++) pthread_join(th[t], NULL);
  size_t live = 0;
  for (int t = 0; t < 4; t++)
    for (int i = 0; i < 1000; i++)
      if (shared[t][i] != NULL) live += 16 + (size_t)(i % 64) * 8;
  size_t cur, peak;
  ftm_trace_get_traced_memory(&cur, &peak);
  cr_assert_eq(cur, live, "traced %zu, live %zu", cur, live);
  for (int t = 0; t < 4; t++)
    for (int i = 0; i < 1000; i++) ftm_free(shared[t][i]);
  ftm_trace_get_traced_memory(&cur, &peak);
  cr_assert_eq(cur, 0);
  cr_assert_gt(ftm_trace_get_tracer_memory(), 0);
}

/* 1,000 distinct call sites (return addresses): the snapshot's tables
 * must grow past their first size.  (They did not: a
 * snapshot of a program with over 512 sites spun for ever.) */
#define SITE(i) v[n++] = ftm_malloc(16 + (i));
#define SITES10(i) SITE(i) SITE(i + 1) SITE(i + 2) SITE(i + 3) SITE(i + 4) SITE(i + 5) SITE(i + 6) SITE(i + 7) SITE(i + 8) SITE(i + 9)
#define SITES100(i) SITES10(i) SITES10(i + 10) SITES10(i + 20) SITES10(i + 30) SITES10(i + 40) \
  SITES10(i + 50) SITES10(i + 60) SITES10(i + 70) SITES10(i + 80) SITES10(i + 90)

Test(trace, many_sites_in_one_snapshot) {
  static void *v[1000];
  size_t n = 0;
  cr_assert_eq(ftm_trace_start(1), 0);
  SITES100(0) SITES100(100) SITES100(200) SITES100(300) SITES100(400)
  SITES100(500) SITES100(600) SITES100(700) SITES100(800) SITES100(900)
  ftm_trace_snapshot *s = ftm_trace_take_snapshot();
  cr_assert_not_null(s);
  cr_assert_geq(ftm_trace_snapshot_count(s), 1000);
  /* the sites share one source line (one macro expansion): grouped, they
   * are one statistic of 1,000 blocks */
  ftm_trace_stats *st = ftm_trace_statistics(s, FTM_TRACE_BY_TRACEBACK, false);
  cr_assert_not_null(st);
  size_t blocks = 0;
  for (size_t i = 0; i < ftm_trace_stats_len(st); i++)
    if (ends_with(ftm_trace_stats_get(st, i)->frames[0].filename, "test_trace.c")) blocks += ftm_trace_stats_get(st, i)->count;
  cr_assert_eq(blocks, 1000);
  ftm_trace_stats_free(st);
  ftm_trace_snapshot_free(s);
  for (size_t i = 0; i < n; i++) ftm_free(v[i]);
}
