/* rt_tuple.c — immutable, fixed-length sequences.
 *
 * A tuple is a variable-size object whose items are ftm_field slots in the
 * same block.  Items are written once, with ftm_field_init, before the
 * tuple is returned (so before any other thread can see it) and never
 * replaced; a reader holding the tuple therefore reads an item with a plain
 * peek plus incref — no ftm_field_load retry loop, no read section: the
 * tuple's own reference keeps every item alive.
 *
 * Tuples can hold lists that hold the tuple, so the type is FTM_TYPE_GC
 * with traverse and clear.  traverse needs no care for the concurrent
 * collector (gc.h): the item count is fixed, the items live in the
 * object's own block and are never replaced while it is reachable (only
 * clear, on garbage, NULLs them), and a tuple the collector scans while
 * rt_tuple_new still fills it (it is tracked from ftm_new_var on) has
 * zeroed slots (NULL, skipped) or items that ftm_field_init published with
 * a release store, which traverse's peek (acquire) pairs with.
 *
 * No free list: FTM_TYPE_FREELIST is for fixed-size types (CPython keeps
 * one per length; ftmem does not).
 */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>

#include "rt_internal.h"

typedef struct rt_tuple {
  ftm_varobject ob; /* ob_size: number of items */
  ftm_field items[];
} rt_tuple;

static int tuple_traverse(ftm_object *self, ftm_visitproc visit, void *arg) {
  rt_tuple *t = (rt_tuple *)self;
  for (size_t i = 0; i < ftm_var_size(self); i++) {
    ftm_object *o = ftm_field_peek(&t->items[i]);
    int r = o != NULL ? visit(o, arg) : 0; /* NULL once cleared */
    if (r != 0) return r;
  }
  return 0;
}

static void tuple_clear(ftm_object *self) {
  rt_tuple *t = (rt_tuple *)self;
  for (size_t i = 0; i < ftm_var_size(self); i++) ftm_field_clear(&t->items[i]);
}

ftm_type rt_tuple_type = {
    .name = "tuple",
    .basic_size = sizeof(rt_tuple),
    .item_size = sizeof(ftm_field),
    .flags = FTM_TYPE_GC,
    .traverse = tuple_traverse,
    .clear = tuple_clear,
};

ftm_object *rt_tuple_new(size_t n, ftm_object *const items[]) {
  rt_tuple *t = (rt_tuple *)ftm_new_var(&rt_tuple_type, n);
  if (t == NULL) return NULL;
  for (size_t i = 0; i < n; i++) ftm_field_init(&t->items[i], ftm_newref(items[i]));
  return (ftm_object *)t;
}

ftm_object *rt_tuple_pack(size_t n, ...) {
  rt_tuple *t = (rt_tuple *)ftm_new_var(&rt_tuple_type, n);
  va_list ap;
  va_start(ap, n);
  /* consume the arguments even on failure: nothing was borrowed yet */
  for (size_t i = 0; i < n; i++) {
    ftm_object *o = va_arg(ap, ftm_object *);
    if (t != NULL) ftm_field_init(&t->items[i], ftm_newref(o));
  }
  va_end(ap);
  return (ftm_object *)t;
}

size_t rt_tuple_len(const ftm_object *t) {
  assert(rt_tuple_check(t));
  return ftm_var_size(t);
}

ftm_object *rt_tuple_get(ftm_object *self, size_t i) {
  assert(rt_tuple_check(self));
  if (i >= ftm_var_size(self)) {
    errno = ERANGE;
    return NULL;
  }
  /* the caller's reference to the tuple keeps the item alive */
  return ftm_newref(ftm_field_peek(&((rt_tuple *)self)->items[i]));
}
