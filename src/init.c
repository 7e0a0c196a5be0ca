/* init.c — process set-up: the thread-exit key, fork handlers, stats at
 * exit, and the error/warning printers.  Nothing here allocates: it runs
 * inside the first malloc of the process (possibly during the dynamic
 * loader's own start-up) and must not recurse into it.
 */
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "object_internal.h"
#include "trace_internal.h"

_Atomic int ftm__init_state;
pthread_key_t ftm__thread_key;
static __thread bool ftm__in_init;

/* Fork: the object layer's locks are taken in a fixed order (collector,
 * intern tables, weak reference stripes) and released on both sides, so
 * the child finds none held by a thread it does not have. */
static void ftm__prefork(void) {
  ftm__trace_prefork();
  ftm__gc_prefork();
  ftm__intern_prefork();
  ftm__weakref_prefork();
  ftm__purge_prefork();
}
static void ftm__postfork_parent(void) {
  ftm__purge_postfork(false);
  ftm__weakref_postfork();
  ftm__intern_postfork();
  ftm__gc_postfork(false);
  ftm__trace_postfork();
}
static void ftm__postfork_child(void) {
  ftm__heap_postfork_child();
  ftm__tstate_postfork_child();
  ftm__purge_postfork(true);
  ftm__weakref_postfork();
  ftm__intern_postfork();
  ftm__gc_postfork(true);
  ftm__trace_postfork();
}

void ftm__init_slow(void) {
  int expect = 0;
  if (ftm_atomic_cas_strong_acq_rel(&ftm__init_state, &expect, 1)) {
    ftm__in_init = true;
    long pg = sysconf(_SC_PAGESIZE);
    if (pg > 0) ftm__os_page = (size_t)pg;
    (void)ftm__option(FTM_OPTION_VERBOSE);
    if (pthread_key_create(&ftm__thread_key, ftm__heap_thread_done) != 0)
      ftm__fatal("ftmem: pthread_key_create failed\n");
    pthread_atfork(ftm__prefork, ftm__postfork_parent, ftm__postfork_child);
    ftm__in_init = false;
    /* release: pairs with the acquire in ftm__init */
    ftm_atomic_store_release(&ftm__init_state, 2);
    return;
  }
  if (ftm__in_init) return; /* re-entered from inside our own set-up */
  while (ftm_atomic_load_acquire(&ftm__init_state) != 2) sched_yield();
}

__attribute__((constructor(101))) static void ftm__process_init(void) {
  ftm__init();
  if (ftm__option(FTM_OPTION_VERBOSE)) ftm_options_print();
  ftm__trace_init_from_env();
  ftm__report_init_from_env();
}

__attribute__((destructor(101))) static void ftm__process_done(void) {
  ftm__report_at_exit();
  if (ftm__option(FTM_OPTION_SHOW_STATS)) ftm_stats_print(stderr);
  if (ftm__option(FTM_OPTION_LEAK_REPORT)) ftm_leak_report(stderr);
}

static void ftm__vwrite(const char *prefix, const char *fmt, va_list ap) {
  char buf[512];
  int n = 0;
  if (prefix) n = snprintf(buf, sizeof buf, "%s", prefix);
  int m = vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
  size_t len = (size_t)n + (m > 0 ? (size_t)m : 0);
  if (len >= sizeof buf) len = sizeof buf - 1;
  ssize_t w = write(STDERR_FILENO, buf, len);
  (void)w;
}

void ftm__fatal(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  ftm__vwrite(NULL, fmt, ap);
  va_end(ap);
  abort();
}

void ftm__warning(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  ftm__vwrite("ftmem: warning: ", fmt, ap);
  va_end(ap);
  ssize_t w = write(STDERR_FILENO, "\n", 1);
  (void)w;
}

void ftm__assert_fail(const char *expr, const char *file, int line) {
  ftm__fatal("ftmem: internal assertion failed: %s (%s:%d)\n", expr, file, line);
}
