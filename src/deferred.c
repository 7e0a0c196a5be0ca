/* deferred.c — deferred reference counting for hot shared objects (types,
 * functions, module constants of a runtime).
 *
 * A deferred object has ob_ref_local == FTM_REF_DEFERRED and a slot number
 * in ob_deferred.  Every thread counts its increments and decrements of it
 * in its own array (tstate->dcounts[slot]: a plain add, no shared cache
 * line), and adds them to ob_ref_shared when it flushes: at detach, at
 * exit, at ftm_thread_flush, and at a safepoint after a flush request.
 * While deferred, and until its clear completes, the object holds a "pin"
 * of FTM_DEFERRED_PIN (2^26) references in ob_ref_shared: a thread's
 * unflushed increments are each backed by a real reference, so no run of
 * decrements that reach ob_ref_shared before those increments are flushed
 * can take it to zero.  A single-reference pin could: T increfs (unflushed),
 * the owner drops and clears, T decrefs on the shared count — death, then
 * T's late flush and the pin drop free it twice.
 *
 * ftm_clear_deferred: (1) ob_ref_local := 0 (the object is MERGED since
 * ftm_set_deferred, so new increments go to ob_ref_shared); (2) a flush
 * request (tstate.c) asks every thread to add what it counted for the slot
 * — including increments by threads that read FTM_REF_DEFERRED just before
 * (1); (3) once every attached thread has answered (detached and exited
 * ones flushed before leaving), whichever thread notices drops the pin and
 * frees the slot.  ftm_set_deferred refuses (EBUSY) while the pin of an
 * earlier clear is still held.  Nobody waits: the requester returns at once, and the
 * object dies at the last answer if nothing else holds it.
 */
#include <string.h>

#include "object_internal.h"

#define FTM_DEFERRED_SLOTS 65536u

_Atomic(ftm_object *) ftm__deferred_objs[FTM_DEFERRED_SLOTS];
static _Atomic uint32_t ftm__deferred_next = 1; /* slot 0 = not deferred */
static _Atomic uint32_t ftm__deferred_link[FTM_DEFERRED_SLOTS];
static ftm_tstack_t ftm__deferred_free;

static _Atomic uint32_t *ftm__deferred_link_of(uint32_t index, void *ctx) {
  (void)ctx;
  return &ftm__deferred_link[index];
}

static uint32_t ftm__deferred_slot_alloc(void) {
  uint32_t idx = ftm_tstack_pop_mpmc(&ftm__deferred_free, ftm__deferred_link_of, NULL);
  if (idx != 0) return idx;
  idx = ftm_atomic_fetch_add_relaxed(&ftm__deferred_next, 1);
  if (idx >= FTM_DEFERRED_SLOTS) {
    ftm_atomic_fetch_sub_relaxed(&ftm__deferred_next, 1);
    return 0;
  }
  return idx;
}

/* Make room for slot idx in ts's counts; false if there is no memory
 * (the caller then counts on ob_ref_shared: refcount.c, ftm__dcount). */
bool ftm__dcounts_grow(ftm__tstate *ts, uint16_t idx) {
  uint32_t cap = ts->dcap ? ts->dcap : 64;
  while (cap <= idx) cap *= 2;
  if (cap > FTM_DEFERRED_SLOTS) cap = FTM_DEFERRED_SLOTS;
  int64_t *n = ftm_realloc(ts->dcounts, cap * sizeof *n);
  if (n == NULL) return false; /* the old array is intact */
  memset(n + ts->dcap, 0, (cap - ts->dcap) * sizeof *n);
  ts->dcounts = n;
  ts->dcap = cap;
  return true;
}

/* Add this thread's counts to their objects. */
void ftm__deferred_flush(ftm__tstate *ts) {
  if (!ts->dany) return;
  ts->dany = false;
  for (uint32_t i = 1; i < ts->dcap; i++) {
    int64_t d = ts->dcounts[i];
    if (d == 0) continue;
    ts->dcounts[i] = 0;
    /* acquire: pairs with ftm_set_deferred's release store of the slot */
    ftm_object *o = ftm_atomic_load_acquire(&ftm__deferred_objs[i]);
    if (o == NULL) ftm__fatal("ftmem: deferred count for an unused slot %u\n", i);
    /* acq_rel: as every change of ob_ref_shared (refcount.c); the pin
     * keeps the count positive, so this never frees */
    ftm_atomic_fetch_add_acq_rel(&o->ob_ref_shared, (int32_t)(d * (1 << FTM_REF_SHARED_SHIFT)));
  }
}

int ftm_set_deferred(ftm_object *o) {
  uint32_t l = ftm_atomic_load_relaxed(&o->ob_ref_local);
  if (l == FTM_REF_DEFERRED || l == FTM_REF_IMMORTAL) return 0;
  if (ftm_atomic_load_relaxed(&o->ob_flags) & FTM_OBF_PINNED) {
    errno = EBUSY; /* a clear is still waiting for other threads' counts */
    return -1;
  }
  if (ftm__tstate_try_get() == NULL) return -1; /* ENOMEM: cannot register the thread */
  uint32_t idx = ftm__deferred_slot_alloc();
  if (idx == 0) {
    errno = ENOSPC;
    return -1;
  }
  /* release: flushes by other threads (acquire) find the object */
  ftm_atomic_store_release(&ftm__deferred_objs[idx], o);
  ftm_atomic_store_relaxed(&o->ob_deferred, (uint16_t)idx);
  ftm_atomic_fetch_or_relaxed(&o->ob_flags, FTM_OBF_PINNED);
  /* fold the owner's count in, plus the pin; then the sentinel (release:
   * a thread that reads DEFERRED also reads ob_deferred) */
  if (ftm__set_local_sentinel(o, FTM_REF_DEFERRED, FTM_DEFERRED_PIN) != 0) {
    ftm_atomic_fetch_and_relaxed(&o->ob_flags, (uint8_t)~FTM_OBF_PINNED);
    ftm_atomic_store_relaxed(&o->ob_deferred, 0);
    ftm_atomic_store_relaxed(&ftm__deferred_objs[idx], NULL);
    ftm_tstack_push_mpmc(&ftm__deferred_free, idx, &ftm__deferred_link[idx]);
    return -1; /* EPERM */
  }
  return 0;
}

/* A clear waiting for every thread to flush the slot. */
typedef struct ftm__dclear_s {
  ck_stack_entry_t link;
  ftm_object *obj;
  uint64_t seq; /* flush request every thread must have answered */
  uint16_t idx;
} ftm__dclear;
static ck_stack_t ftm__dclears = CK_STACK_INITIALIZER;

int ftm_clear_deferred(ftm_object *o) {
  if (ftm_atomic_load_relaxed(&o->ob_ref_local) != FTM_REF_DEFERRED) {
    errno = EINVAL;
    return -1;
  }
  ftm__dclear *c = ftm_malloc(sizeof *c);
  if (c == NULL) return -1; /* ENOMEM; o stays deferred */
  c->obj = o;
  c->idx = ftm_atomic_load_relaxed(&o->ob_deferred);
  /* o is MERGED (tid 0) since ftm_set_deferred: from here on increments
   * go to ob_ref_shared.  release: before the request below (seq_cst) */
  ftm_atomic_store_release(&o->ob_ref_local, 0);
  c->seq = ftm__flush_request();
  ck_stack_push_upmc(&ftm__dclears, &c->link);
  ftm__deferred_complete(); /* at once if no other thread is attached */
  return 0;
}

/* Finish the clears every attached thread has flushed for: called after a
 * thread answers a flush request, detaches or exits. */
void ftm__deferred_complete(void) {
  /* ck_pr_load: CK_STACK_ISEMPTY is a plain read, racing with pushers */
  if (ck_pr_load_ptr(&ftm__dclears.head) == NULL) return;
  uint64_t done = ftm__flush_acked();
  ck_stack_entry_t *e = ck_stack_batch_pop_upmc(&ftm__dclears);
  while (e != NULL) {
    ftm__dclear *c = (ftm__dclear *)e;
    e = e->next;
    if (c->seq > done) { /* some thread still owes its counts */
      ck_stack_push_upmc(&ftm__dclears, &c->link);
      continue;
    }
    ftm_object *o = c->obj;
    ftm_atomic_store_relaxed(&o->ob_deferred, 0);
    ftm_atomic_store_relaxed(&ftm__deferred_objs[c->idx], NULL);
    ftm_tstack_push_mpmc(&ftm__deferred_free, c->idx, &ftm__deferred_link[c->idx]);
    ftm_free(c);
    ftm_atomic_fetch_and_relaxed(&o->ob_flags, (uint8_t)~FTM_OBF_PINNED);
    /* drop the pin; acq_rel as every change of ob_ref_shared */
    int32_t nshared = ftm_atomic_fetch_sub_acq_rel(&o->ob_ref_shared,
                                                   (int32_t)(FTM_DEFERRED_PIN << FTM_REF_SHARED_SHIFT)) -
                      (int32_t)(FTM_DEFERRED_PIN << FTM_REF_SHARED_SHIFT);
    if (nshared == FTM_REF_MERGED) ftm__dealloc(o);
    else if (ftm_unlikely(nshared < FTM_REF_MERGED))
      ftm__object_fatal("reference count below zero (deferred) on", o);
  }
}
