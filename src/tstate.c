/* tstate.c — thread states of the object layer: registration on first
 * use, attach/detach around blocking calls, safepoints, the flush
 * handshake of deferred counts, and a thread's exit.
 *
 * Exit protocol (why a queued object is never lost):
 *   1. xtid := 0 (release).  A queuer pushes onto a tstate's queue only
 *      inside an epoch section, after checking xtid == the object's tid.
 *   2. ck_epoch_synchronize: every section that could have seen the old
 *      tid has ended, so no push is in flight and none will come.
 *   3. drain the queue and merge; then the objects the thread still owns
 *      are merged by the first thread that would queue them (it finds no
 *      live tstate for their tid — refcount.c).
 * Detached threads: xstate DETACHED lets another thread take the queue
 * (CAS to HELD), merge it, and give it back; attach waits while HELD.
 *
 * Flush requests (deferred counts): ftm_clear_deferred bumps ftm__flush_seq;
 * every ATTACHED tstate answers at its next safepoint; DETACHED and FREE
 * ones flushed already (detach and exit flush).  Nobody waits: the clear
 * completes when some thread sees every attached one answered
 * (deferred.c).  The seq bump and the state reads are seq_cst, as are
 * attach's state store and seq load, so a thread that attaches after being
 * seen detached sees the bump.
 */
#include <sched.h>
#include <string.h>

#include "object_internal.h"

__thread uint32_t ftm__tid = FTM_TID_NONE;
__thread ftm__tstate *ftm__ts;
static __thread bool ftm__ts_done; /* past this thread's tstate destructor once */

ftm__tstate *_Atomic ftm__tstates[FTM_MAX_TSTATES];
_Atomic uint32_t ftm__tstate_count;
static ftm_tstack_t ftm__free_tstates;
ck_epoch_t ftm__epoch;
_Atomic uint64_t ftm__flush_seq;
static pthread_key_t ftm__ts_key;
static pthread_once_t ftm__ts_once = PTHREAD_ONCE_INIT;

static void ftm__ts_key_init(void) {
  ck_epoch_init(&ftm__epoch);
  if (pthread_key_create(&ftm__ts_key, ftm__tstate_thread_done) != 0)
    ftm__fatal("ftmem: pthread_key_create failed\n");
}

static _Atomic uint32_t *ftm__ts_link(uint32_t index, void *ctx) {
  (void)ctx;
  return &ftm_atomic_load_acquire(&ftm__tstates[index - 1])->xstack_next;
}

/* One tstate's page mapped ahead, for a registration that must not fail
 * when no page can be mapped: a thread whose first use of objects is a
 * read section, a decrement or a death has no error to return.  Filled
 * again by the next registration that can map pages. */
static ftm__tstate *_Atomic ftm__ts_reserve;

static size_t ftm__ts_size(void) { return (sizeof(ftm__tstate) + ftm__os_page - 1) & ~(ftm__os_page - 1); }

static void ftm__ts_reserve_fill(void) {
  if (ftm_atomic_load_relaxed(&ftm__ts_reserve) != NULL) return;
  ftm__tstate *ts = ftm__os_map(ftm__ts_size()); /* untouched: costs address space only */
  if (ts == NULL) return;
  ftm__tstate *empty = NULL;
  /* acq_rel: publishes the (zeroed) page to the thread that takes it */
  if (!ftm_atomic_cas_strong_acq_rel(&ftm__ts_reserve, &empty, ts)) ftm__os_unmap(ts, ftm__ts_size());
}

/* A free tstate, or a new one (NULL if there is no page for it, or no
 * slot).  The page is mapped before the slot is taken, so that a failure
 * (out of memory) does not use up a slot: they are never given back. */
static ftm__tstate *ftm__tstate_acquire(bool use_reserve) {
  uint32_t idx = ftm_tstack_pop_mpmc(&ftm__free_tstates, ftm__ts_link, NULL);
  if (idx != 0) return ftm_atomic_load_acquire(&ftm__tstates[idx - 1]);
  if (ftm_atomic_load_relaxed(&ftm__tstate_count) >= FTM_MAX_TSTATES) return NULL;
  ftm__tstate *ts = ftm__os_map(ftm__ts_size()); /* zeroed, page (so cache-line) aligned */
  bool mapped = ts != NULL;
  /* acq_rel: pairs with the fill's CAS */
  if (ts == NULL && use_reserve) ts = ftm_atomic_exchange_acq_rel(&ftm__ts_reserve, NULL);
  if (ts == NULL) return NULL;
  idx = ftm_atomic_fetch_add_relaxed(&ftm__tstate_count, 1);
  if (idx >= FTM_MAX_TSTATES) {
    ftm_atomic_fetch_sub_relaxed(&ftm__tstate_count, 1);
    ftm__os_unmap(ts, ftm__ts_size());
    return NULL;
  }
  ts->slot = idx;
  ck_stack_init(&ts->queue);
  ck_epoch_register(&ftm__epoch, &ts->epoch, NULL);
  /* release: pairs with the acquire loads of ftm__tstates[] readers */
  ftm_atomic_store_release(&ftm__tstates[idx], ts);
  if (mapped) ftm__ts_reserve_fill(); /* pages can be had: keep one ahead */
  return ts;
}

/* Register the calling thread; NULL + ENOMEM if no tstate can be had. */
static ftm__tstate *ftm__tstate_register_as(bool use_reserve) {
  ftm__init();
  pthread_once(&ftm__ts_once, ftm__ts_key_init);
  ftm__tstate *ts = ftm__tstate_acquire(use_reserve);
  if (ts == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  /* first, while nothing is published: without the key's destructor the
   * thread's exit protocol would never run (the key's second-level array
   * is allocated, for keys past the first 32) */
  if (pthread_setspecific(ftm__ts_key, ts) != 0) {
    ftm_tstack_push_mpmc(&ftm__free_tstates, ts->slot + 1, &ts->xstack_next);
    errno = ENOMEM;
    return NULL;
  }
  ts->gen++;
  uint32_t tid = ((uint32_t)ts->gen << 16) | ts->slot;
  ts->flush_seen = ftm_atomic_load_acquire(&ftm__flush_seq);
  ftm_atomic_store_relaxed(&ts->xflush_ack, ts->flush_seen);
  ftm_atomic_store_seq_cst(&ts->xstate, FTM_TS_ATTACHED);
  /* release: a queuer that reads this tid (acquire) sees the set-up above */
  ftm_atomic_store_release(&ts->xtid, tid);
  ftm__ts = ts;
  ftm__tid = tid;
  /* a collector handshake under way (a park) includes us: seq_cst, after
   * our seq_cst ATTACHED store, as in attach */
  ts->gc_seen = 0;
  ftm__gc_answer(ts, ftm_atomic_load_seq_cst(&ftm__gc_hs_seq));
  (void)ftm__ts_done;
  return ts;
}

ftm__tstate *ftm__tstate_try_register(void) { return ftm__tstate_register_as(false); }

ftm__tstate *ftm__tstate_register(void) {
  ftm__tstate *ts = ftm__tstate_register_as(true);
  if (ftm_unlikely(ts == NULL)) {
    /* a thread's first read section, decrement or death, with no page
     * for its state and the reserved one taken by another such thread:
     * these have no error to return, and cannot be done without a state */
    if (ftm_atomic_load_relaxed(&ftm__tstate_count) >= FTM_MAX_TSTATES)
      ftm__fatal("ftmem: cannot register a thread (more than %u threads)\n", FTM_MAX_TSTATES);
    ftm__fatal("ftmem: out of memory registering a thread (its state needs one page)\n");
  }
  return ts;
}

/* ---- safepoints and the flush handshake -------------------------------- */
/* Answer flush request `seq` if it is new: add our deferred counts to
 * their objects, then say so. */
static void ftm__answer_flush(ftm__tstate *ts, uint64_t seq) {
  if (seq == ts->flush_seen) return;
  ftm__deferred_flush(ts);
  /* a collector handshake bumps the flush seq after publishing its own
   * (acquire: pairs with its seq_cst store) */
  uint64_t g = ftm_atomic_load_acquire(&ftm__gc_hs_seq);
  if (g != ts->gc_seen) ftm__gc_answer(ts, g);
  ts->flush_seen = seq;
  /* release: pairs with the acquire in ftm__flush_acked; our flushed adds
   * precede it */
  ftm_atomic_store_release(&ts->xflush_ack, seq);
  ftm__deferred_complete();
}

void ftm__safepoint_slow(ftm__tstate *ts) {
  if (ftm_unlikely(ftm_atomic_load_relaxed(&ftm__fork_merge_pending))) ftm__tstate_postfork_merge(ts);
  if (ftm_atomic_load_relaxed(&ts->xqueued) != 0) ftm__merge_queue(ts, false);
  /* acquire: pairs with the request's seq_cst bump (after its switch) */
  ftm__answer_flush(ts, ftm_atomic_load_acquire(&ftm__flush_seq));
}

/* Ask every attached thread to flush its deferred counts at its next
 * safepoint; returns the request's number.  Nobody waits for the answers:
 * ftm__flush_acked tells how far every thread has answered. */
uint64_t ftm__flush_request(void) {
  /* a thread that cannot be registered has no counts to flush */
  ftm__tstate *self = ftm__tstate_try_get();
  /* seq_cst: against attach's seq_cst store of ATTACHED then load of the
   * seq, so a thread that attaches after being seen detached flushes */
  uint64_t seq = ftm_atomic_fetch_add_seq_cst(&ftm__flush_seq, 1) + 1;
  if (self != NULL) ftm__safepoint_slow(self);
  return seq;
}

/* The newest request every attached thread has answered.  Detached and
 * free tstates flushed before they left ATTACHED. */
uint64_t ftm__flush_acked(void) {
  uint64_t min = ftm_atomic_load_seq_cst(&ftm__flush_seq);
  uint32_t n = ftm_atomic_load_acquire(&ftm__tstate_count);
  for (uint32_t i = 0; i < n && i < FTM_MAX_TSTATES; i++) {
    ftm__tstate *ts = ftm_atomic_load_acquire(&ftm__tstates[i]);
    if (ts == NULL) continue;
    /* acquire: pairs with the release store of the ack (its flushed adds) */
    uint64_t ack = ftm_atomic_load_acquire(&ts->xflush_ack);
    /* seq_cst: see ftm__flush_request */
    if (ack < min && ftm_atomic_load_seq_cst(&ts->xstate) == FTM_TS_ATTACHED) min = ack;
  }
  return min;
}

/* A thread that cannot be registered (out of memory) holds no per-thread
 * state: safepoints, detach, attach and flush have nothing to do for it. */
void ftm_safepoint(void) {
  ftm__tstate *ts = ftm__tstate_try_get();
  if (ts != NULL) ftm__safepoint(ts);
}

void ftm_thread_detach(void) {
  ftm__tstate *ts = ftm__tstate_try_get();
  if (ts == NULL) return;
  uint32_t st = ftm_atomic_load_relaxed(&ts->xstate);
  if (st != FTM_TS_ATTACHED) ftm__fatal("ftmem: ftm_thread_detach: thread is already detached\n");
  ftm__merge_queue(ts, false);
  ftm__deferred_flush(ts);
  ftm__epoch_poll(ts);
  ftm__gc_thread_leave(ts); /* the collector does not wait for detached threads */
  /* release: our counts and merges are visible to whoever takes our queue
   * or sees us detached in a handshake */
  ftm_atomic_store_seq_cst(&ts->xstate, FTM_TS_DETACHED);
  ftm__deferred_complete();
}

void ftm_thread_attach(void) {
  ftm__tstate *ts = ftm__ts;
  if (ts == NULL) { (void)ftm__tstate_try_get(); return; }
  for (unsigned spins = 0;; spins++) {
    uint32_t st = FTM_TS_DETACHED;
    /* seq_cst: see the flush handshake; acquire side of a HELD merge */
    if (atomic_compare_exchange_weak_explicit(&ts->xstate, &st, FTM_TS_ATTACHED,
                                              memory_order_seq_cst, memory_order_relaxed))
      break;
    if (st == FTM_TS_ATTACHED) ftm__fatal("ftmem: ftm_thread_attach: thread is already attached\n");
    if (spins > 64) sched_yield(); /* HELD: another thread merges our queue for us */
  }
  /* answer a flush request now (it may be why we were waited for), but
   * leave queue merges — which may free objects and run their callbacks —
   * to the next safepoint: the caller may hold a lock it just acquired */
  /* seq_cst: after our seq_cst store of ATTACHED (see the file comment) */
  ftm__answer_flush(ts, ftm_atomic_load_seq_cst(&ftm__flush_seq));
}

/* Merge a detached thread's queue on its behalf, if it is still detached. */
void ftm__merge_for(ftm__tstate *ts) {
  uint32_t st = FTM_TS_DETACHED;
  /* acquire: pairs with detach's store; our merge sees its last counts */
  if (!atomic_compare_exchange_strong_explicit(&ts->xstate, &st, FTM_TS_HELD, memory_order_acquire,
                                               memory_order_relaxed))
    return;
  /* relaxed: only compared with its own tstate by the holder (refcount.c) */
  ftm_atomic_store_relaxed(&ts->xholder, ftm__ts);
  ftm__merge_queue(ts, true);
  ftm_atomic_store_relaxed(&ts->xholder, NULL);
  /* release: pairs with attach's CAS; it sees the merged headers */
  ftm_atomic_store_release(&ts->xstate, FTM_TS_DETACHED);
}

void ftm_thread_flush(void) {
  ftm__tstate *ts = ftm__tstate_try_get();
  if (ts == NULL) return;
  ftm__tstate_postfork_merge(ts);
  ftm__merge_queue(ts, false);
  ftm__deferred_flush(ts);
  ftm__trash_drain(ts);
  ftm__epoch_barrier(ts);
#if FTM_CHECK_OBJECTS
  ftm__quarantine_flush(ts); /* so that a leak check sees the blocks back */
#endif
}

/* ---- exit ---------------------------------------------------------------- */
void ftm__tstate_thread_done(void *arg) {
  ftm__tstate *ts = arg;
  if (ts == NULL) return;
  ftm__ts_done = true;
  /* a thread that exits detached: take the tstate back first */
  uint32_t st = ftm_atomic_load_relaxed(&ts->xstate);
  if (st != FTM_TS_ATTACHED) ftm_thread_attach();
  ftm__deferred_flush(ts);
  /* 0: from here this thread counts like any other thread on the objects
   * it owned: once xtid is 0, others merge those objects' frozen
   * ob_ref_local for us, and an owner-path store of ours would race with
   * that (objects created from here on are born merged, object.c) */
  ftm__tid = FTM_TID_NONE;
  /* 1: no queuer may start pushing to us (refcount.c checks xtid in a section) */
  ftm_atomic_store_release(&ts->xtid, 0);
  /* 2: every section that might have seen our tid is over (answering the
   * collector meanwhile: its section lasts until its handshakes end) */
  ftm__epoch_synchronize(ts);
  /* 3: merge what was queued (may free objects, and queue others) */
  ftm__merge_queue(ts, false);
  ftm__trash_drain(ts);
  ftm__freelists_clear(ts);
  ftm__epoch_barrier(ts);
  /* objects that died in the merges above dropped their references to
   * deferred objects into our counts */
  ftm__deferred_flush(ts);
  ftm_free(ts->dcounts);
  ts->dcounts = NULL;
  ts->dcap = 0;
  ts->dany = false;
  ftm_free(ts->trash);
  ts->trash = NULL;
  ts->ntrash = ts->trash_cap = 0;
#if FTM_CHECK_OBJECTS
  ftm__quarantine_flush(ts);
#endif
  ftm__gc_thread_leave(ts);
  ftm_free(ts->gc_grey);
  ts->gc_grey = NULL;
  ts->gc_grey_cap = 0;
  ftm__ts = NULL;
  ftm_atomic_store_seq_cst(&ts->xstate, FTM_TS_FREE);
  ftm__deferred_complete();
  /* a slot whose generation would wrap is retired: tids are never reused */
  if (ts->gen < 0xFFFE) ftm_tstack_push_mpmc(&ftm__free_tstates, ts->slot + 1, &ts->xstack_next);
}

/* In a fork child only the forking thread exists: the others' tstates hold
 * queues nobody will merge and free lists nobody will use.  Their objects
 * stay valid.  Their queues are merged so no count is lost — but not in
 * the fork handler: a merge may free objects and run their clear and
 * dealloc callbacks, user code that must not run inside fork().  The
 * merges happen at the child's next safepoint (or ftm_thread_flush, or
 * when the forking thread first registers).  The slots are not reused
 * (their epoch records stay registered but idle). */
_Atomic int ftm__fork_merge_pending;

void ftm__tstate_postfork_child(void) {
  uint32_t n = ftm_atomic_load_relaxed(&ftm__tstate_count);
  ftm__tstate *self = ftm__ts;
  bool any = false;
  for (uint32_t i = 0; i < n && i < FTM_MAX_TSTATES; i++) {
    ftm__tstate *ts = ftm_atomic_load_relaxed(&ftm__tstates[i]);
    if (ts == NULL || ts == self || ftm_atomic_load_relaxed(&ts->xstate) == FTM_TS_FREE) continue;
    ftm_atomic_store_relaxed(&ts->xtid, 0);
    ftm_atomic_store_relaxed(&ts->xstate, FTM_TS_DETACHED);
    ts->epoch.active = 0; /* a section of a vanished thread never ends otherwise */
    any = true;
  }
  if (any) {
    ftm_atomic_store_relaxed(&ftm__fork_merge_pending, 1);
    /* our next safepoint takes the slow path */
    ftm_atomic_fetch_add_relaxed(&ftm__flush_seq, 1);
  }
}

/* The merges a fork child owes its vanished threads (see above). */
void ftm__tstate_postfork_merge(ftm__tstate *self) {
  if (!ftm_atomic_exchange_acq_rel(&ftm__fork_merge_pending, 0)) return;
  uint32_t n = ftm_atomic_load_relaxed(&ftm__tstate_count);
  for (uint32_t i = 0; i < n && i < FTM_MAX_TSTATES; i++) {
    ftm__tstate *ts = ftm_atomic_load_acquire(&ftm__tstates[i]);
    if (ts == NULL || ts == self || ftm_atomic_load_relaxed(&ts->xtid) != 0) continue;
    ftm__merge_for(ts); /* DETACHED vanished threads only (CAS inside) */
  }
}
