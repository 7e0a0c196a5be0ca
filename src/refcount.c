/* refcount.c — the slow paths of biased reference counting (PEP 703; Choi,
 * Shull and Torrellas, PACT 2018): shared decrements, queueing an object to
 * its owner, merging, try-incref, immortal objects.
 *
 * ob_ref_shared = count << 2 | state.  States only increase:
 *   0 (none) -> MAYBE_WEAKREF -> QUEUED -> MERGED.
 * The true count is ob_ref_local + count while unmerged, count once MERGED.
 * A queued object's queue entry holds one reference (the decrement that
 * queued it is applied at the merge), so a queued object cannot be freed
 * before its owner (or a thread merging for it) takes it off the queue.
 *
 * Death is decided in exactly one place per object:
 *   - its owner's decrement takes ob_ref_local to 0 and ob_ref_shared is 0
 *     (no other thread holds a reference, and no try-incref can race:
 *     try-incref needs MAYBE_WEAKREF, which makes ob_ref_shared non-zero);
 *   - otherwise whoever makes ob_ref_shared exactly MERGED|0 by a CAS.
 * Orders: every CAS on ob_ref_shared is acq_rel — the release publishes the
 * decrementing thread's writes to the object, the acquire gives them to the
 * thread that frees it (TSan does not model the fetch_sub+fence idiom).
 */
#include <sched.h>
#include <stdio.h>

#include "object_internal.h"

#define SHIFT FTM_REF_SHARED_SHIFT
#define STATE(s) ((s) & 3)
#define COUNT(s) ((s) >> SHIFT) /* arithmetic: may be negative */

void ftm__object_fatal(const char *what, const ftm_object *o) {
  const ftm_type *t = o ? o->ob_type : NULL;
  /* the type may be gone with the object: only print a name that is ours */
  const char *name = "?";
  if (t != NULL && ftm__pagemap_lookup(t) == NULL && t->name != NULL) name = t->name;
  ftm__fatal("ftmem: %s %p (type %s)\n", what, (const void *)o, name);
}

/* Fold the owner's count into the shared one; ob_ref_local and ob_tid are
 * then dead.  Caller has the owner's rights over ob_ref_local (it is the
 * owner, the owner is dead, or the owner is detached and held).  Returns
 * the merged count; `extra` is added to it (-1: a queue entry's reference). */
static ssize_t ftm__merge_keep(ftm_object *o, ssize_t extra);

ssize_t ftm__merge(ftm_object *o, ssize_t extra) {
  if (extra >= 0) return ftm__merge_keep(o, extra);
  /* giving up a reference (a queue entry's): merge while it still holds o,
   * so that the header stores after the merge CAS cannot land on memory
   * another thread's decrement has already freed; then drop it */
  ssize_t count = ftm__merge_keep(o, 0);
  if (ftm_unlikely(ftm_atomic_load_relaxed(&o->ob_ref_local) == FTM_REF_IMMORTAL)) return count;
  int32_t shared = ftm_atomic_load_relaxed(&o->ob_ref_shared);
  int32_t nshared;
  do {
    nshared = shared + (int32_t)(extra * (1 << SHIFT));
  } while (!ftm_atomic_cas_weak_acq_rel(&o->ob_ref_shared, &shared, nshared));
  if (ftm_unlikely(COUNT(nshared) < 0)) ftm__object_fatal("reference count below zero on", o);
  return COUNT(nshared);
}

static ssize_t ftm__merge_keep(ftm_object *o, ssize_t extra) {
  uint32_t local = ftm_atomic_load_relaxed(&o->ob_ref_local);
  if (ftm_unlikely(local == FTM_REF_IMMORTAL)) return 1; /* made immortal while queued */
  int32_t shared = ftm_atomic_load_relaxed(&o->ob_ref_shared);
  int32_t nshared;
  ssize_t count;
  bool was_merged;
  do {
    /* merged before (a deferred object's queue entry, say): ob_ref_local
     * is no longer a count and must be left alone */
    was_merged = STATE(shared) == FTM_REF_MERGED;
    count = (ssize_t)COUNT(shared) + (was_merged ? 0 : (ssize_t)local) + extra;
    nshared = (int32_t)((uint32_t)count << SHIFT) | FTM_REF_MERGED;
  } while (!ftm_atomic_cas_weak_acq_rel(&o->ob_ref_shared, &shared, nshared));
  if (!was_merged) {
    /* after the CAS: a concurrent reader of local then shared (the
     * collector) over-counts, never under-counts */
    ftm_atomic_store_release(&o->ob_ref_local, 0);
    ftm_atomic_store_relaxed(&o->ob_tid, 0);
  }
  if (ftm_unlikely(count < 0)) ftm__object_fatal("reference count below zero on", o);
  return count;
}

/* Owner: ob_ref_local was `l` <= 1 and is now to drop to 0. */
void ftm__local_zero(ftm_object *o) {
  uint32_t l = ftm_atomic_load_relaxed(&o->ob_ref_local);
  if (ftm_unlikely(l == 0)) ftm__object_fatal("decref below zero (or of a freed object) of", o);
  ftm_atomic_store_relaxed(&o->ob_ref_local, 0);
  /* acquire: pairs with the acq_rel CASes of other threads' decrements */
  int32_t shared = ftm_atomic_load_acquire(&o->ob_ref_shared);
  if (shared == 0) {
    ftm__dealloc(o);
    return;
  }
  /* others hold references, or a try-incref may race: merge by CAS */
  ftm_atomic_store_relaxed(&o->ob_tid, 0);
  int32_t nshared;
  do {
    nshared = shared | FTM_REF_MERGED;
  } while (!ftm_atomic_cas_weak_acq_rel(&o->ob_ref_shared, &shared, nshared));
  if (nshared == FTM_REF_MERGED) ftm__dealloc(o);
  else if (ftm_unlikely(COUNT(nshared) < 0)) ftm__object_fatal("reference count below zero on", o);
}

/* Another thread's decrement. */
void ftm__decref_shared(ftm_object *o) {
  int32_t shared = ftm_atomic_load_relaxed(&o->ob_ref_shared);
  int32_t nshared;
  bool queue;
  do {
    /* count 0, not queued or merged: the queue entry takes over our
     * reference (its decrement happens at the merge) */
    queue = shared == 0 || shared == FTM_REF_MAYBE_WEAKREF;
    nshared = queue ? FTM_REF_QUEUED : shared - (1 << SHIFT);
  } while (!ftm_atomic_cas_weak_acq_rel(&o->ob_ref_shared, &shared, nshared));
  if (queue) {
    ftm__brc_queue(o);
  } else if (nshared == FTM_REF_MERGED) {
    ftm__dealloc(o);
  } else if (ftm_unlikely(STATE(nshared) == FTM_REF_MERGED && COUNT(nshared) < 0)) {
    ftm__object_fatal("decref below zero (or of a freed object) of", o);
  }
}

/* Out of memory for a queue node.  The entry must still reach the owner
 * (its reference is what the owner's merge gives up; without the merge an
 * object whose count reached zero this way would never die), and nobody
 * but the owner may merge an object it owns: the owner counts on
 * ob_ref_local with plain stores.  So, in this order:
 *   1. a spare slot in the owner's tstate (xspare, CAS from NULL) holds
 *      the entry exactly as a node would — same epoch section, same xtid
 *      check, drained with the queue by every merge of it (safepoints,
 *      detach, exit, merges for a detached or vanished thread);
 *   2. all slots taken and the owner detached: hold it (DETACHED -> HELD,
 *      as ftm__merge_for) and merge o ourselves — while HELD the owner
 *      does not touch objects and cannot exit, so we have its rights;
 *   3. all slots taken and the owner attached: wait for its next
 *      safepoint to empty them (or for it to detach or exit, or for
 *      memory), and take our own safepoints meanwhile — two threads
 *      waiting on each other's slots then empty each other's.  Only an
 *      owner that never reaches a safepoint (docs/objects.md: "Limits")
 *      keeps a decrement waiting here; it never aborts.
 * The owner's exit protocol is unchanged: slots are filled inside the
 * queuer's epoch section after the xtid check, like pushes. */
enum { FTM_BRC_PUSHED, FTM_BRC_GONE, FTM_BRC_FULL };

static int ftm__brc_push(ftm__tstate *self, ftm__tstate *owner, uint32_t tid, ftm_object *o) {
  int how = FTM_BRC_GONE;
  ck_epoch_begin(&self->epoch, NULL);
  /* acquire: pairs with register's release store of xtid.  The owner's
   * exit clears xtid, then synchronizes the epoch before draining: a push
   * made after seeing the tid inside this section is drained. */
  if (tid != 0 && owner != NULL && ftm_atomic_load_acquire(&owner->xtid) == tid) {
    how = FTM_BRC_FULL;
    ftm__brc_node *node = ftm_malloc(sizeof *node);
    if (ftm_likely(node != NULL)) {
      node->obj = o;
      ck_stack_push_upmc(&owner->queue, &node->link);
      how = FTM_BRC_PUSHED;
    } else {
      for (unsigned i = 0; i < FTM_BRC_SPARE; i++) {
        ftm_object *empty = NULL;
        /* acq_rel: the release pairs with the drain's exchange (acquire) */
        if (ftm_atomic_load_relaxed(&owner->xspare[i]) == NULL &&
            ftm_atomic_cas_strong_acq_rel(&owner->xspare[i], &empty, o)) {
          /* relaxed: a hint for the drain; the slots are the truth */
          ftm_atomic_fetch_add_relaxed(&owner->xnspare, 1);
          how = FTM_BRC_PUSHED;
          break;
        }
      }
    }
    /* relaxed: a hint for the owner's safepoint; the stack is the truth */
    if (how == FTM_BRC_PUSHED) ftm_atomic_fetch_add_relaxed(&owner->xqueued, 1);
  }
  ck_epoch_end(&self->epoch, NULL);
  return how;
}

/* Step 2 above: GONE if owner no longer runs thread tid (merge o as for
 * an exited owner), FULL if it is not detached, PUSHED once o is merged.
 * We may hold it already: a death in our merge of its queue (HELD) that
 * queues to it again — then waiting for it would wait for ourselves. */
static int ftm__brc_merge_held(ftm__tstate *self, ftm__tstate *owner, uint32_t tid, ftm_object *o) {
  /* relaxed: only we store self there (and clear it before letting go) */
  bool ours = ftm_atomic_load_relaxed(&owner->xstate) == FTM_TS_HELD &&
              ftm_atomic_load_relaxed(&owner->xholder) == self;
  if (!ours) {
    uint32_t st = FTM_TS_DETACHED;
    /* acquire: pairs with detach's store; we see the owner's last counts */
    if (!atomic_compare_exchange_strong_explicit(&owner->xstate, &st, FTM_TS_HELD, memory_order_acquire,
                                                 memory_order_relaxed))
      return FTM_BRC_FULL;
    ftm_atomic_store_relaxed(&owner->xholder, self);
  }
  /* HELD: the thread cannot attach or exit, so xtid stays; acquire pairs
   * with register's release store */
  bool same = ftm_atomic_load_acquire(&owner->xtid) == tid;
  ssize_t count = 1;
  if (same) {
    if (!ours) ftm__merge_queue(owner, true); /* its slots are free again, for others */
    count = ftm__merge(o, -1);
  }
  if (!ours) {
    ftm_atomic_store_relaxed(&owner->xholder, NULL);
    /* release: pairs with attach's CAS; it sees the merged headers */
    ftm_atomic_store_release(&owner->xstate, FTM_TS_DETACHED);
  }
  if (!same) return FTM_BRC_GONE;
  ftm_counter_add(&self->merged_for_others, 1);
  if (count == 0) ftm__dealloc(o);
  return FTM_BRC_PUSHED;
}

/* Hand o (state QUEUED, one reference held by the entry) to its owner, or
 * merge it here if the owner has exited. */
void ftm__brc_queue(ftm_object *o) {
  ftm__tstate *self = ftm__tstate_get();
  uint32_t tid = ftm_atomic_load_relaxed(&o->ob_tid);
  ftm__tstate *owner = ftm_atomic_load_acquire(&ftm__tstates[tid & 0xFFFFu]);
  for (unsigned spins = 0;; spins++) {
    int how = ftm__brc_push(self, owner, tid, o);
    if (ftm_likely(how == FTM_BRC_PUSHED)) {
      ftm_counter_add(&self->queued, 1);
      /* an owner blocked in a system call must not hold memory hostage */
      if (ftm_atomic_load_relaxed(&owner->xqueued) >= FTM_BRC_BACKLOG &&
          ftm_atomic_load_relaxed(&owner->xstate) == FTM_TS_DETACHED)
        ftm__merge_for(owner);
      return;
    }
    if (how == FTM_BRC_GONE) break;
    /* out of memory and every spare slot taken (see above) */
    how = ftm__brc_merge_held(self, owner, tid, o);
    if (how == FTM_BRC_PUSHED) return;
    if (how == FTM_BRC_GONE) break;
    ftm__safepoint_slow(self);
    if (spins < 64) ftm_cpu_relax();
    else sched_yield();
  }
  /* the owner is gone: its ob_ref_local is frozen, merge it ourselves */
  ftm_counter_add(&self->merged_for_others, 1);
  if (ftm__merge(o, -1) == 0) ftm__dealloc(o);
}

/* Owner (or holder of a detached owner): merge every queued object. */
void ftm__merge_queue(ftm__tstate *ts, bool for_other) {
  ftm__tstate *self = ftm__ts;
  do {
    /* ck_pr_load: CK_STACK_ISEMPTY is a plain read, racing with pushers */
    while (ck_pr_load_ptr(&ts->queue.head) != NULL) {
      ck_stack_entry_t *e = ck_stack_batch_pop_upmc(&ts->queue);
      while (e != NULL) {
        ftm__brc_node *node = (ftm__brc_node *)e;
        e = e->next;
        ftm_object *o = node->obj;
        ftm_free(node);
        ftm_atomic_fetch_sub_relaxed(&ts->xqueued, 1);
        if (self) ftm_counter_add(for_other ? &self->merged_for_others : &self->merged, 1);
        if (ftm__merge(o, -1) == 0) ftm__dealloc(o);
      }
    }
    /* entries queued without a node (out of memory): rare, so looked for
     * only when the count says so */
    if (ftm_likely(ftm_atomic_load_relaxed(&ts->xnspare) == 0)) break;
    for (unsigned i = 0; i < FTM_BRC_SPARE; i++) {
      if (ftm_atomic_load_relaxed(&ts->xspare[i]) == NULL) continue;
      /* acq_rel: acquire pairs with the queuer's CAS */
      ftm_object *o = ftm_atomic_exchange_acq_rel(&ts->xspare[i], NULL);
      if (o == NULL) continue;
      ftm_atomic_fetch_sub_relaxed(&ts->xnspare, 1);
      ftm_atomic_fetch_sub_relaxed(&ts->xqueued, 1);
      if (self) ftm_counter_add(for_other ? &self->merged_for_others : &self->merged, 1);
      if (ftm__merge(o, -1) == 0) ftm__dealloc(o);
    }
  } while (ck_pr_load_ptr(&ts->queue.head) != NULL);
}

/* ---- slow paths of the inline incref/decref ------------------------------ */
/* Out of memory for this thread's counts (the array cannot grow to o's
 * slot, or the thread cannot be registered), a deferred object is counted
 * on ob_ref_shared instead, atomically — as a thread that is not the
 * owner counts on a merged object.  Why that is correct:
 *   - A deferred object is MERGED (ftm_set_deferred merges it), so its
 *     count is ob_ref_shared - pin + the counts not yet flushed.  Adding
 *     one there at once is a flush of that one count, and a flush may
 *     happen at any time (deferred.c adds counts with the same atomic).
 *   - An increment there is the caller's reference, now counted, so it
 *     can take nothing below zero (relaxed, as ftm_incref's shared add).
 *   - A decrement there is ftm__decref_shared: a CAS, acq_rel, never a
 *     queue (MERGED).  While the pin is held it cannot reach zero, just as
 *     a flushed decrement cannot (the pin, 2^26, outweighs every count not
 *     yet flushed).  The pin is dropped only after every attached thread
 *     answered the flush request of the clear, and this thread answers
 *     only at a safepoint — after this decrement; a thread that is not
 *     registered keeps no counts to flush, and its references are all
 *     counted in ob_ref_shared.  Once the pin is dropped the object is an
 *     ordinary merged object, and this is its ordinary decrement (the
 *     last one frees it).
 * Mixing the two for one object is fine: only their sum matters. */
static int64_t ftm__dcount_shared; /* its address: "count on ob_ref_shared" */

/* This thread's count for deferred object o; NULL if o is no longer
 * deferred; &ftm__dcount_shared if there is no memory for it. */
static int64_t *ftm__dcount(ftm_object *o) {
  ftm__tstate *ts = ftm__tstate_try_get();
  /* acquire: pairs with ftm_set_deferred's release store, for ob_deferred */
  if (ftm_atomic_load_acquire(&o->ob_ref_local) != FTM_REF_DEFERRED) return NULL;
  if (ftm_unlikely(ts == NULL)) return &ftm__dcount_shared;
  uint16_t idx = ftm_atomic_load_relaxed(&o->ob_deferred);
  if (ftm_unlikely(idx >= ts->dcap) && !ftm__dcounts_grow(ts, idx)) return &ftm__dcount_shared;
  ts->dany = true;
  return &ts->dcounts[idx];
}

void ftm__incref_slow(ftm_object *o, uint32_t local) {
  if (local == FTM_REF_DEFERRED) {
    int64_t *c = ftm__dcount(o);
    if (c == NULL) { ftm_incref(o); return; } /* no longer deferred */
    if (ftm_unlikely(c == &ftm__dcount_shared)) {
      /* relaxed: an increment orders nothing (see above) */
      ftm_atomic_fetch_add_relaxed(&o->ob_ref_shared, 1 << SHIFT);
      return;
    }
    (*c)++;
    return;
  }
  ftm__object_fatal("incref of a freed object", o);
}

void ftm__decref_slow(ftm_object *o, uint32_t local) {
  if (local == FTM_REF_DEFERRED) {
    int64_t *c = ftm__dcount(o);
    if (c == NULL) { ftm_decref(o); return; } /* no longer deferred */
    if (ftm_unlikely(c == &ftm__dcount_shared)) {
      ftm__decref_shared(o); /* see above */
      return;
    }
    (*c)--;
    return;
  }
  ftm__object_fatal("decref of a freed object", o);
}

/* ---- try-incref ------------------------------------------------------------ */
int ftm__try_incref(ftm_object *o) {
  uint32_t l = ftm_atomic_load_relaxed(&o->ob_ref_local);
  if (l == FTM_REF_IMMORTAL) return FTM_TRY_OTHER;
  if (l == FTM_REF_DEFERRED) {
    ftm__incref_slow(o, l);
    return FTM_TRY_OTHER;
  }
  if (l == FTM_REF_FREED) return FTM_TRY_FAIL;
  if (ftm_atomic_load_relaxed(&o->ob_tid) == ftm__tid) {
    if (l == 0) return FTM_TRY_FAIL; /* we are freeing it */
    ftm_atomic_store_relaxed(&o->ob_ref_local, l + 1);
    if (ftm_unlikely(ftm_atomic_load_relaxed(&ftm__gc_barrier))) ftm__gc_shade(o);
    return FTM_TRY_OTHER;
  }
  /* acquire: a refusal must order the caller's re-check of the field
   * after the death it saw (pairs with the dying CAS's release) */
  int32_t shared = ftm_atomic_load_acquire(&o->ob_ref_shared);
  do {
    /* merged with count 0 (or less): its death is decided */
    if (STATE(shared) == FTM_REF_MERGED && COUNT(shared) <= 0) return FTM_TRY_FAIL;
  } while (!ftm_atomic_cas_weak_acq_rel(&o->ob_ref_shared, &shared, shared + (1 << SHIFT)));
  /* relaxed: a hint, as in ftm_incref */
  if (ftm_unlikely(ftm_atomic_load_relaxed(&ftm__gc_barrier))) ftm__gc_shade(o);
  return FTM_TRY_SHARED;
}

bool ftm_try_incref(ftm_object *o) {
#if FTM_CHECK_OBJECTS
  uint32_t l = ftm_atomic_load_relaxed(&o->ob_ref_local);
  if (l < FTM_REF_SPECIAL && ftm_atomic_load_relaxed(&o->ob_ref_shared) == 0 &&
      ftm_atomic_load_relaxed(&o->ob_tid) != ftm__tid)
    ftm__object_fatal("ftm_try_incref without ftm_enable_try_incref on", o);
#endif
  return ftm__try_incref(o) != FTM_TRY_FAIL;
}

void ftm_enable_try_incref(ftm_object *o) {
  ftm__mark_shared(o);
  int32_t shared = ftm_atomic_load_relaxed(&o->ob_ref_shared);
  while (STATE(shared) == 0 &&
         !ftm_atomic_cas_weak_acq_rel(&o->ob_ref_shared, &shared, shared | FTM_REF_MAYBE_WEAKREF)) {
  }
}

ssize_t ftm_refcount(const ftm_object *co) {
  ftm_object *o = (ftm_object *)co;
  /* local before shared: a merge in between is over-counted, not lost */
  uint32_t l = ftm_atomic_load_acquire(&o->ob_ref_local);
  if (l == FTM_REF_IMMORTAL) return (ssize_t)FTM_REF_IMMORTAL;
  int32_t shared = ftm_atomic_load_acquire(&o->ob_ref_shared);
  if (l >= FTM_REF_SPECIAL || STATE(shared) == FTM_REF_MERGED) l = 0;
  ssize_t n = (ssize_t)l + COUNT(shared);
  if (ftm_atomic_load_relaxed(&o->ob_flags) & FTM_OBF_PINNED) n -= FTM_DEFERRED_PIN;
  return n;
}

/* Is tid a thread other than the caller that is still alive? */
static bool ftm__other_owner_alive(uint32_t tid) {
  if (tid == 0 || tid == ftm__tid) return false;
  ftm__tstate *owner = ftm_atomic_load_acquire(&ftm__tstates[tid & 0xFFFFu]);
  /* acquire: pairs with register's release store of xtid */
  return owner != NULL && ftm_atomic_load_acquire(&owner->xtid) == tid;
}

/* Set ob_ref_local to a sentinel (IMMORTAL, DEFERRED) from its owner, or
 * from any thread if the owner is gone; -1 + EPERM if another live thread
 * owns o.  `extra` references are added to the count when o is merged
 * first (the deferred pin).  The owner's ob_ref_local is its own to store;
 * otherwise o is merged first and the sentinel goes in by CAS from 0, since
 * a thread that merged o for its dead owner may not have stored its 0 yet. */
int ftm__set_local_sentinel(ftm_object *o, uint32_t sentinel, ssize_t extra) {
  uint32_t l = ftm_atomic_load_relaxed(&o->ob_ref_local);
  if (l == sentinel) return 0;
  if (l >= FTM_REF_SPECIAL) { /* immortal, deferred or dead: no change of kind */
    errno = EINVAL;
    return -1;
  }
  uint32_t tid = ftm_atomic_load_relaxed(&o->ob_tid);
  if (ftm__other_owner_alive(tid)) {
    errno = EPERM;
    return -1;
  }
  if (extra != 0 || tid != ftm__tid) ftm__merge(o, extra);
  if (tid != 0 && tid == ftm__tid && extra == 0) {
    /* relaxed: published to other threads by whatever hands them o */
    ftm_atomic_store_relaxed(&o->ob_ref_local, sentinel);
    return 0;
  }
  for (;;) {
    uint32_t expect = 0;
    /* release: a thread that reads the sentinel (acquire) sees ob_deferred */
    if (atomic_compare_exchange_weak_explicit(&o->ob_ref_local, &expect, sentinel, memory_order_release,
                                              memory_order_relaxed))
      return 0;
    if (expect == sentinel) return 0;
    if (expect >= FTM_REF_SPECIAL) { /* made immortal/deferred meanwhile */
      errno = EINVAL;
      return -1;
    }
    ftm_cpu_relax(); /* another merger's store of 0 is on its way */
  }
}

int ftm_make_immortal(ftm_object *o) { return ftm__set_local_sentinel(o, FTM_REF_IMMORTAL, 0); }
