/* rt_int.c — boxed 64-bit integers and the small-int cache.
 *
 * An int is the smallest useful object: a header and a value, fixed size,
 * no references (no traverse/clear).  Ints are created and dropped all the
 * time, so the type keeps a per-thread free list (FTM_TYPE_FREELIST): a
 * dead int's block is handed to the next rt_int_new on the same thread
 * without going through the allocator.
 *
 * Values -5..256 come from a table of immortal objects, as in CPython:
 * rt_int_new(7) from any thread returns the same object, and incref/decref
 * on it store nothing, so threads sharing small ints never contend on a
 * count.  The table is built once, by whichever thread asks first
 * (pthread_once also makes the table's contents visible to every caller).
 */
#include <assert.h>
#include <stdlib.h>

#include "rt_internal.h"

typedef struct rt_int {
  ftm_object ob;
  int64_t value; /* never changes */
} rt_int;

ftm_type rt_int_type = {
    .name = "int",
    .basic_size = sizeof(rt_int),
    .flags = FTM_TYPE_FREELIST,
};

static ftm_object *small_ints[RT_SMALL_INT_COUNT];
static pthread_once_t small_ints_once = PTHREAD_ONCE_INIT;
/* relaxed: only counted by rt_immortal_count; the table itself is
 * published by pthread_once */
static _Atomic size_t small_ints_made;

static ftm_object *int_alloc(int64_t v) {
  rt_int *o = (rt_int *)ftm_new(&rt_int_type);
  if (o != NULL) o->value = v;
  return (ftm_object *)o;
}

static void small_ints_init(void) {
  for (int i = 0; i < RT_SMALL_INT_COUNT; i++) {
    ftm_object *o = int_alloc(RT_SMALL_INT_MIN + i);
    /* pthread_once cannot report failure, and every later rt_int_new
     * relies on the table: give up loudly */
    if (o == NULL) {
      fprintf(stderr, "rt: out of memory building the small-int cache\n");
      abort();
    }
    /* we created o, so we own it: ftm_make_immortal cannot refuse */
    ftm_make_immortal(o);
    small_ints[i] = o;
  }
  atomic_store_explicit(&small_ints_made, RT_SMALL_INT_COUNT, memory_order_relaxed);
}

ftm_object *rt_int_new(int64_t v) {
  if (v >= RT_SMALL_INT_MIN && v <= RT_SMALL_INT_MAX) {
    pthread_once(&small_ints_once, small_ints_init);
    /* immortal: the caller's reference is free, and its decref a no-op */
    return small_ints[v - RT_SMALL_INT_MIN];
  }
  return int_alloc(v);
}

int64_t rt_int_value(const ftm_object *o) {
  assert(rt_int_check(o));
  return ((const rt_int *)o)->value;
}

size_t rt__small_int_count(void) {
  return atomic_load_explicit(&small_ints_made, memory_order_relaxed);
}
