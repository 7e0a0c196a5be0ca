/* report_prog.c — a workload on the example runtime for the report
 * tests: lists, dicts and strings from three threads, garbage cycles the
 * collector reclaims, tracing on; then the JSON report.
 *   report_prog write PATH   trace, work, ftm_report_write(PATH), check the bad paths
 *   report_prog env          work only (FTMEM_REPORT / FTMEM_TRACE from the environment)
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ftmem.h"
#include "rt.h"

#define CHECK(c)                                                              \
  do {                                                                        \
    if (!(c)) {                                                               \
      fprintf(stderr, "report_prog: FAIL %s:%d: %s\n", __FILE__, __LINE__, #c); \
      exit(2);                                                                \
    }                                                                         \
  } while (0)

static ftm_object *volatile kept[3];

static void *worker(void *arg) {
  long id = (long)arg;
  ftm_object *keep = rt_list_new();
  for (int round = 0; round < 40; round++) {
    for (int i = 0; i < 300; i++) {
      ftm_object *d = rt_dict_new(), *l = rt_list_new(), *k = rt_int_new(1000 + i), *s = rt_str_from_cstr("report");
      CHECK(d && l && k && s);
      CHECK(rt_dict_set(d, k, l) == 0);
      CHECK(rt_list_append(l, d) == 0); /* a cycle: the collector's work */
      CHECK(rt_list_append(l, s) == 0);
      if (i % 25 == 0) CHECK(rt_list_append(keep, s) == 0);
      ftm_decref(s), ftm_decref(k), ftm_decref(l), ftm_decref(d);
    }
    void *buf = malloc(4096 + (size_t)round * 512); /* plain malloc too */
    memset(buf, (int)id, 4096);
    free(buf);
    struct timespec ts = {0, 2000000}; /* 2 ms: let the sampler see the heap move */
    nanosleep(&ts, NULL);
  }
  kept[id] = keep;
  return NULL;
}

static void *volatile bufs[8];

static void work(void) {
  for (int i = 0; i < 8; i++) bufs[i] = ftm_malloc(100000); /* live at the report: a top site */
  pthread_t t[3];
  for (long i = 0; i < 3; i++) CHECK(pthread_create(&t[i], NULL, worker, (void *)i) == 0);
  for (int i = 0; i < 3; i++) CHECK(pthread_join(t[i], NULL) == 0);
  CHECK(ftm_gc_collect(2) >= 0);
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "write") == 0) {
    CHECK(ftm_trace_start(6) == 0);
    CHECK(ftm_report_start(5) == 0);
    work();
    errno = 0;
    CHECK(ftm_report_write("") == -1 && errno == EINVAL);
    errno = 0;
    CHECK(ftm_report_write("/nonexistent-dir/ftmem/report.json") == -1 && errno == ENOENT);
    CHECK(ftm_report_write(argv[2]) == 0);
    ftm_report_stop();
    /* written whole under its name, nothing left beside it */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", argv[2], (int)getpid());
    CHECK(access(argv[2], R_OK) == 0);
    CHECK(access(tmp, F_OK) != 0);
    printf("report_prog: wrote %s\n", argv[2]);
    return 0;
  }
  if (argc == 2 && strcmp(argv[1], "env") == 0) {
    work();
    printf("report_prog: done\n");
    return 0;
  }
  fprintf(stderr, "usage: report_prog write PATH | env\n");
  return 2;
}
