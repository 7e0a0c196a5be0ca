/* purge.c — when idle memory goes back to the OS.  Freed slices, cached
 * large mappings and pools left by exited threads carry an expiry (now +
 * FTMEM_PURGE_DELAY); ftm__purge_note_dirty keeps the earliest one.  Slow
 * paths tick (ftm__purge_tick) and purge what has expired, so no thread is
 * needed; because an idle program never ticks, a purger thread is also
 * started lazily the first time memory becomes dirty (FTMEM_PURGE_THREAD,
 * default on).  It sleeps on a futex while nothing is dirty.
 * One purge runs at a time (a try-flag, not a lock: others skip it).
 */
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static _Atomic int64_t ftm__purge_next;   /* earliest pending expiry, ms (0: none) */
static _Atomic int ftm__purging;          /* 1 while one thread purges */
static _Atomic uint32_t ftm__purge_seq;   /* futex word: bumped when dirt appears */
static _Atomic int ftm__purger_state;     /* 0 none, 1 wanted, 2 running, 3 never (fork child) */

static void ftm__futex_wait(_Atomic uint32_t *addr, uint32_t val, int64_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, ms >= 0 ? &ts : NULL, NULL, 0);
}

static void ftm__futex_wake(_Atomic uint32_t *addr) {
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void ftm__purge_next_min(int64_t at) {
  int64_t cur = ftm_atomic_load_relaxed(&ftm__purge_next);
  while ((cur == 0 || at < cur) && !ftm_atomic_cas_weak_acq_rel(&ftm__purge_next, &cur, at)) {
  }
}

void ftm__purge_note_dirty(int64_t expire) {
  int64_t before = ftm_atomic_load_relaxed(&ftm__purge_next);
  bool was_clean = before == 0;
  ftm__purge_next_min(expire);
  /* wake the purger if the schedule was empty or just moved earlier: it
   * may be asleep until a later expiry */
  if (was_clean || expire < before) {
    ftm_atomic_fetch_add_acq_rel(&ftm__purge_seq, 1);
    int st = ftm_atomic_load_relaxed(&ftm__purger_state);
    if (st == 2) ftm__futex_wake(&ftm__purge_seq);
    else if (st == 0 && ftm__option(FTM_OPTION_PURGE_THREAD)) ftm_atomic_store_relaxed(&ftm__purger_state, 1);
  }
}

static bool ftm__purge_trylock(void) {
  int z = 0;
  /* acq_rel: pairs with the release store in ftm__purge_unlock */
  return ftm_atomic_cas_strong_acq_rel(&ftm__purging, &z, 1);
}
static void ftm__purge_unlock(void) { ftm_atomic_store_release(&ftm__purging, 0); }

static void ftm__purge_locked(bool force) {
  int64_t now = ftm__clock_ms();
  /* take the schedule; what stays pending is merged back below, and a
   * note_dirty meanwhile merges its own expiry */
  ftm_atomic_exchange_acq_rel(&ftm__purge_next, 0);
  if (ftm_atomic_load_relaxed(&ftm__abandoned_count) != 0) ftm__abandoned_sweep();
  int64_t a = (int64_t)ftm__arena_purge(now, force);
  int64_t l = (int64_t)ftm__large_purge(now, force);
  /* note_dirty, not next_min: the exchange above may have let the purger
   * go to sleep without a timeout, and note_dirty wakes it */
  if (a) ftm__purge_note_dirty(a);
  if (l) ftm__purge_note_dirty(l);
}

void ftm__purge_now(bool force) {
  if (force) {
    while (!ftm__purge_trylock()) sched_yield();
  } else if (!ftm__purge_trylock()) {
    return;
  }
  ftm__purge_locked(force);
  ftm__purge_unlock();
}

static void *ftm__purger_main(void *arg) {
  (void)arg;
  for (;;) {
    uint32_t seq = ftm_atomic_load_acquire(&ftm__purge_seq);
    int64_t next = ftm_atomic_load_relaxed(&ftm__purge_next);
    int64_t now = ftm__clock_ms();
    if (next != 0 && next <= now) {
      if (!ftm__purge_trylock()) { /* another purge (or a fork) holds it */
        sched_yield();
        continue;
      }
      ftm__purge_locked(false);
      ftm__purge_unlock();
      continue;
    }
    /* nothing due: sleep until the earliest expiry, or until dirt appears */
    ftm__futex_wait(&ftm__purge_seq, seq, next == 0 ? -1 : next - now);
  }
  return NULL;
}

static void ftm__purger_start(void) {
  int want = 1;
  if (!ftm_atomic_cas_strong_acq_rel(&ftm__purger_state, &want, 2)) return;
  pthread_attr_t attr;
  pthread_t tid;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* the purger takes no signals */
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  int rc = pthread_create(&tid, &attr, ftm__purger_main, NULL);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    ftm_atomic_store_relaxed(&ftm__purger_state, 0);
    if (ftm__option(FTM_OPTION_VERBOSE)) ftm__warning("could not start the purger thread (%d)", rc);
    return;
  }
  pthread_setname_np(tid, "ftmem-purge");
}

/* Start the purger if memory became dirty since.  Only where the caller's
 * heap is consistent: pthread_create may call malloc. */
void ftm__purge_maybe_start(void) {
  if (ftm_unlikely(ftm_atomic_load_relaxed(&ftm__purger_state) == 1)) ftm__purger_start();
}

/* Called where the caller's heap is consistent (a malloc may re-enter). */
void ftm__purge_tick(void) {
  ftm__purge_maybe_start();
  int64_t next = ftm_atomic_load_relaxed(&ftm__purge_next);
  if (next != 0 && ftm__clock_ms() >= next) ftm__purge_now(false);
}

/* fork: no purge may be half done in the child */
void ftm__purge_prefork(void) {
  while (!ftm__purge_trylock()) sched_yield();
}
/* The child of a fork gets no purger: it would be a thread nobody asked
 * for in a process that often only execs (and starting threads in the
 * child of a multithreaded parent is what ThreadSanitizer refuses).  Slow
 * paths still tick the purge in the child; ftm_collect purges on demand. */
void ftm__purge_postfork(bool child) {
  if (child) ftm_atomic_store_relaxed(&ftm__purger_state, 3);
  ftm__purge_unlock();
}
