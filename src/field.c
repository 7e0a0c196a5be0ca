/* field.c — reference fields that other threads read while one replaces
 * them (CPython's _Py_TryIncrefCompare / _Py_XGetRef).
 *
 * ftm_field_load, inside a read section: load the pointer (acquire), try
 * to take a reference, then check the field still holds the pointer.  If it
 * does, the reference is good: the field's own reference kept the object
 * alive at that moment.  If not, the object may have died between the load
 * and the increment — the increment then touched a dead header whose memory
 * the section keeps from reuse (every stored object is FTM_OBF_SHARED, so
 * its memory goes through an epoch bag) — and it is undone and retried.
 *
 * Stores mark the stored object SHARED before publishing it (release).
 * The old value is released after the exchange (acq_rel: the exchange
 * both publishes the new value and acquires the writes of whoever stored
 * the old one).
 */
#include "object_internal.h"

ftm_object *ftm_field_load(ftm_field *slot) {
  ftm__tstate *ts = ftm__tstate_get();
#if FTM_CHECK_OBJECTS
  if (ftm_unlikely(ftm_atomic_load_relaxed(&ts->xstate) != FTM_TS_ATTACHED))
    ftm__fatal("ftmem: ftm_field_load from a detached thread: call ftm_thread_attach first\n");
#endif
  ck_epoch_begin(&ts->epoch, NULL);
  for (;;) {
    /* acquire: pairs with the release of the store that published it */
    ftm_object *o = ftm_atomic_load_acquire(slot);
    if (o == NULL) break;
    int how = ftm__try_incref(o);
    if (how != FTM_TRY_FAIL) {
      if (ftm_likely(ftm_atomic_load_acquire(slot) == o)) {
        ck_epoch_end(&ts->epoch, NULL);
        return o;
      }
      /* the field moved on: our count may be on a dying object, whose
       * ob_ref_local may already read FREED (debug) — undo on the count
       * we added to, with the full decrement logic: if the object lives,
       * ours may now be its last reference */
      if (how == FTM_TRY_SHARED) ftm__decref_shared(o);
      else ftm_decref(o);
    } else if (ftm_atomic_load_acquire(slot) == o) {
      /* the field still holds an object whose death is decided: a store
       * of a dying object (a bug in the caller) */
      ftm__object_fatal("ftm_field_load: the field holds a dead object", o);
    }
  }
  ck_epoch_end(&ts->epoch, NULL);
  return NULL;
}

void ftm_field_init(ftm_field *slot, ftm_object *value) {
  if (value != NULL) {
    ftm__mark_shared(value);
    /* a container moving a reference inside itself writes the new place
     * with init: a traverse already past it would miss the edge (gc.h) */
    if (ftm_unlikely(ftm_atomic_load_relaxed(&ftm__gc_barrier))) ftm__gc_shade(value);
  }
  /* release: the object's initialisation is visible to loaders */
  ftm_atomic_store_release(slot, value);
}

ftm_object *ftm_field_exchange(ftm_field *slot, ftm_object *value) {
  if (value != NULL) {
    ftm__mark_shared(value);
    /* relaxed: a hint, as in ftm_incref */
    if (ftm_unlikely(ftm_atomic_load_relaxed(&ftm__gc_barrier))) ftm__gc_shade(value); /* a new edge */
  }
  /* acq_rel: publish value; acquire the writes made before the old one
   * was stored, since our caller now owns its reference */
  ftm_object *old = ftm_atomic_exchange_acq_rel(slot, value);
  /* the old value's reference passes to the caller without an incref: a
   * reference a thread gains, so it shades like one (docs/gc.md) */
  if (old != NULL && ftm_unlikely(ftm_atomic_load_relaxed(&ftm__gc_barrier))) ftm__gc_shade(old);
  return old;
}

void ftm_field_store(ftm_field *slot, ftm_object *value) {
  ftm_object *old = ftm_field_exchange(slot, value);
  if (old != NULL) ftm_decref(old);
}
