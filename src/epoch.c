/* epoch.c — grace periods for memory that optimistic readers may hold:
 * objects read through ftm_field_load / try-incref / weak references, and
 * blocks given to ftm_free_deferred (list storage, hash tables).
 *
 * Built on Concurrency Kit's ck_epoch: a read section is ck_epoch_begin /
 * ck_epoch_end on the thread's record (an xchg on x86-64, no shared write).
 * Freed blocks are collected in per-thread bags of FTM_BAG_N; a full bag is
 * handed to ck_epoch_call and freed by a later ck_epoch_poll on the same
 * thread once no section that could have seen its blocks is still open.
 * Polls happen when a bag is sealed, at detach and at ftm_thread_flush;
 * exit runs ck_epoch_barrier (waits for open sections — they are short —
 * then frees everything the thread deferred).
 *
 * A bag's blocks are objects (tagged with bit 0) or raw blocks.  Neither
 * is touched until its grace period ends, so a stale reader of an object
 * sees its dead header (refcount.c, object.c).
 */
#include "object_internal.h"

/* While waiting for other threads' sections: a collector's section lasts
 * until every attached thread answered its handshakes — answer them. */
static void ftm__epoch_wait_cb(ck_epoch_t *g, ck_epoch_record_t *r, void *arg) {
  (void)g;
  (void)r;
  ftm__tstate *ts = arg;
  /* acquire: pairs with the collector's seq_cst store of the handshake */
  uint64_t seq = ftm_atomic_load_acquire(&ftm__gc_hs_seq);
  if (seq != ts->gc_seen) ftm__gc_answer(ts, seq);
  ftm_cpu_relax();
}

void ftm__epoch_synchronize(ftm__tstate *ts) {
  ck_epoch_synchronize_wait(&ftm__epoch, ftm__epoch_wait_cb, ts);
}

static void ftm__bag_free(ck_epoch_entry_t *e) {
  ftm__bag *bag = (ftm__bag *)e;
  ftm__tstate *ts = ftm__ts;
  for (uint32_t i = 0; i < bag->n; i++) ftm_free((void *)((uintptr_t)bag->items[i] & ~(uintptr_t)1));
  if (ts != NULL) ftm_counter_add(&ts->deferred_frees, bag->n);
  ftm_free(bag);
}

static void ftm__bag_seal(ftm__tstate *ts) {
  ftm__bag *bag = ts->bag;
  if (bag == NULL || bag->n == 0) return;
  ts->bag = NULL;
  ck_epoch_call(&ts->epoch, &bag->entry, ftm__bag_free);
  ts->bags_sealed++;
}

void ftm__defer_free(ftm__tstate *ts, void *block) {
  ftm__bag *bag = ts->bag;
  if (ftm_unlikely(bag == NULL)) {
    bag = ftm_malloc(sizeof *bag);
    if (bag == NULL) {
      /* no memory for a bag: wait for the readers here instead */
      ftm__epoch_synchronize(ts);
      ftm_free((void *)((uintptr_t)block & ~(uintptr_t)1));
      return;
    }
    bag->n = 0;
    ts->bag = bag;
  }
  bag->items[bag->n++] = block;
  ftm_counter_add(&ts->deferred_queued, 1);
  if (bag->n == FTM_BAG_N) {
    ftm__bag_seal(ts);
    ftm__epoch_poll(ts);
  }
}

void ftm__epoch_poll(ftm__tstate *ts) {
  if (ts->bags_sealed == 0) return;
  /* not inside a read section: polling from one would never see it end */
  if (ts->epoch.active != 0) return;
  ck_epoch_poll(&ts->epoch);
  /* approximate: ck counts what is still pending */
  ts->bags_sealed = ts->epoch.n_pending;
}

void ftm__epoch_barrier(ftm__tstate *ts) {
  ftm__bag_seal(ts);
  if (ts->bags_sealed == 0) return;
  ck_epoch_barrier_wait(&ts->epoch, ftm__epoch_wait_cb, ts);
  ts->bags_sealed = 0;
}

void ftm_read_begin(void) { ck_epoch_begin(&ftm__tstate_get()->epoch, NULL); }

void ftm_read_end(void) {
  ftm__tstate *ts = ftm__ts;
  if (ftm_unlikely(ts == NULL || ts->epoch.active == 0))
    ftm__fatal("ftmem: ftm_read_end without ftm_read_begin\n");
  ck_epoch_end(&ts->epoch, NULL);
}

void ftm_free_deferred(void *p) {
  if (p == NULL) return;
  ftm__defer_free(ftm__tstate_get(), p);
}
