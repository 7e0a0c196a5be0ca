/* rt_list.c — mutable lists with lock-free reads: CPython's free-threaded
 * list design (Objects/listobject.c, PEP 703 "Optimistic avoiding of
 * locking"), on ftmem.
 *
 * Layout.  The list object is fixed-size; its items live in a separate
 * array `items` (capacity stored in the array itself) that is replaced,
 * not resized in place, when it is full.  Slots [0, size) hold one
 * reference each; slots [size, cap) are NULL.
 *
 * Writers (append, set, pop) serialise on the list's mutex.
 *
 * Readers (rt_list_get, rt_list_len) take no lock.  rt_list_get, inside a
 * read section (ftm_read_begin/end):
 *   1. loads `size`, then `items` (both acquire): a reader that sees a
 *      size sees an array at least that large, because a writer publishes
 *      a bigger array before a bigger size and arrays never shrink;
 *   2. ftm_field_load(&items->slot[i]): a new reference to what the slot
 *      holds, even while a writer replaces it (field.c: try-incref, then
 *      check the slot still holds the object).
 * Three hazards, three answers:
 *   - the array is replaced and freed while we scan it: the old one goes
 *     to ftm_free_deferred, which frees it only after every read section
 *     open now has ended, so our section keeps it readable;
 *   - an object moved to the new array is overwritten there and dies, but
 *     the stale old slot still names it: ftm_field_load would trust that
 *     slot (it relies on "a slot holds a reference").  So after publishing
 *     the new array the writer NULLs the old slots; a reader that finds
 *     NULL in an array that is no longer current retries with the new one;
 *   - a pop between our size load and slot load: the slot is NULL, and
 *     the list did lose that index while we looked — report "past the end".
 * No item is ever returned without a reference, and no memory is read
 * after it is reused.
 *
 * The cycle collector is a third lock-free reader: it calls list_traverse
 * while writers run (gc.h), in the same order and under the same rules —
 * size, then array, slots peeked atomically, inside a read section.
 */
#include <assert.h>
#include <errno.h>

#include "rt_internal.h"

typedef struct rt_list_items {
  size_t cap;
  ftm_field slot[]; /* cap slots */
} rt_list_items;

typedef struct rt_list {
  ftm_object ob;
  _Atomic(rt_list_items *) items; /* NULL while empty-and-new; written under lock */
  _Atomic size_t size;            /* written under lock */
  pthread_mutex_t lock;           /* serialises writers */
} rt_list;

#define L(o) ((rt_list *)(o))

/* ---- type callbacks --------------------------------------------------------
 * traverse runs while other threads mutate the list: the cycle collector
 * calls it without our lock, inside its read section (gc.h, "Rules for
 * types").  So it reads as rt_list_get does:
 *   - `size` first, then `items`, both acquire.  A writer publishes a
 *     bigger array before a bigger size, and arrays never shrink, so the
 *     array we load has at least `size` slots.  (The other order — the
 *     array, then the size — lets an append that replaces the array in
 *     between hand us a size beyond the old array's end.)  We bound the
 *     scan by the array's own cap all the same: one compare, and no
 *     reasoning about the writers' order is needed to see that every read
 *     is in bounds;
 *   - every slot with ftm_field_peek (an atomic load): set and pop replace
 *     slots while we scan;
 *   - an array replaced while we scan it stays readable: list_grow_locked
 *     retires it with ftm_free_deferred, and the collector's read section
 *     is open (list_dealloc defers it too, for the same reason).  Its
 *     slots are NULLed once the references have moved, so we may miss an
 *     item that moved (the new array has it, and the move shaded it for
 *     a running collection), never read freed memory.
 * A scan under mutation is no snapshot (an item may be missed while it
 * moves, or seen after the list dropped it); gc.h asks traverse for memory
 * safety and atomic reads, and leaves the rest to the collector.
 * clear is called only on a list nobody else can reach (its death, or
 * garbage the collector found), dealloc only on a dead one: no lock —
 * but a traverse may still be scanning a list that dies (list_dealloc). */
static int list_traverse(ftm_object *self, ftm_visitproc visit, void *arg) {
  /* acquire: pairs with the writers' release of size; every array
   * published before that store is visible */
  size_t n = atomic_load_explicit(&L(self)->size, memory_order_acquire);
  if (n == 0) return 0;
  /* acquire: pairs with list_grow_locked's release of the array (its cap
   * and slots are initialised) */
  rt_list_items *a = atomic_load_explicit(&L(self)->items, memory_order_acquire);
  if (a == NULL) return 0; /* not possible once size > 0; cheap to check */
  if (n > a->cap) n = a->cap;
  for (size_t i = 0; i < n; i++) {
    ftm_object *o = ftm_field_peek(&a->slot[i]);
    int r = o != NULL ? visit(o, arg) : 0;
    if (r != 0) return r;
  }
  return 0;
}

static void list_clear(ftm_object *self) {
  size_t n = atomic_load_explicit(&L(self)->size, memory_order_acquire); /* as traverse */
  rt_list_items *a = atomic_load_explicit(&L(self)->items, memory_order_acquire);
  /* relaxed: nobody else mutates a list being cleared, and a concurrent
   * traverse reads every slot atomically whatever size it sees */
  atomic_store_explicit(&L(self)->size, 0, memory_order_relaxed);
  for (size_t i = 0; a != NULL && i < n; i++) ftm_field_clear(&a->slot[i]);
}

static void list_dealloc(ftm_object *self) {
  /* deferred, though the list is dead: the collector may be inside
   * list_traverse on it right now — it skips objects whose death has
   * begun, but the death can begin just after that check, while traverse
   * scans the array it loaded.  ftmem defers the object's own memory
   * during a collection; the array is ours to defer.  relaxed: the decref
   * that killed the list ordered every write */
  ftm_free_deferred(atomic_load_explicit(&L(self)->items, memory_order_relaxed));
  pthread_mutex_destroy(&L(self)->lock);
}

static size_t list_sizeof_extra(const ftm_object *self) {
  /* the array may be replaced and deferred-freed under us: read its
   * capacity inside a section, as rt_list_get does */
  ftm_read_begin();
  /* acquire: pairs with the release that published the array */
  rt_list_items *a = atomic_load_explicit(&L(self)->items, memory_order_acquire);
  size_t n = a != NULL ? sizeof *a + a->cap * sizeof(ftm_field) : 0;
  ftm_read_end();
  return n;
}

ftm_type rt_list_type = {
    .name = "list",
    .basic_size = sizeof(rt_list),
    .flags = FTM_TYPE_GC,
    .traverse = list_traverse,
    .clear = list_clear,
    .dealloc = list_dealloc,
    .sizeof_extra = list_sizeof_extra,
};

ftm_object *rt_list_new(void) {
  ftm_object *l = ftm_new(&rt_list_type); /* items NULL, size 0 */
  if (l != NULL) pthread_mutex_init(&L(l)->lock, NULL);
  return l;
}

/* ---- readers: lock-free --------------------------------------------------- */
size_t rt_list_len(ftm_object *l) {
  assert(rt_list_check(l));
  /* relaxed: a snapshot, used for no memory access */
  return atomic_load_explicit(&L(l)->size, memory_order_relaxed);
}

ftm_object *rt_list_get(ftm_object *l, size_t i) {
  assert(rt_list_check(l));
  ftm_object *o;
  ftm_read_begin(); /* keeps any array we load from being freed */
  for (;;) {
    /* acquire: pairs with the writers' release of size; the slot (and the
     * array holding it) written before that store are visible */
    size_t n = atomic_load_explicit(&L(l)->size, memory_order_acquire);
    if (i >= n) {
      o = NULL;
      break;
    }
    /* acquire: pairs with list_grow's release of the new array */
    rt_list_items *a = atomic_load_explicit(&L(l)->items, memory_order_acquire);
    assert(i < a->cap); /* arrays never shrink, and a bigger size comes after its array */
    o = ftm_field_load(&a->slot[i]);
    if (o != NULL) break;
    /* NULL: popped while we looked, or an old array's cleared slot */
    if (atomic_load_explicit(&L(l)->items, memory_order_acquire) == a) break; /* popped */
  }
  ftm_read_end();
  if (o == NULL) errno = ERANGE;
  return o;
}

/* ---- writers: under the list's mutex -------------------------------------- */
/* Replace the full array `old` (n items) by one twice as large. */
static rt_list_items *list_grow_locked(rt_list *l, rt_list_items *old, size_t n) {
  size_t cap = old != NULL ? old->cap * 2 : 4;
  rt_list_items *a = ftm_malloc(sizeof *a + cap * sizeof(ftm_field));
  if (a == NULL) return NULL;
  a->cap = cap;
  /* the references move from old to a: no count changes.  With
   * ftm_field_init, a move inside the container: a collection's traverse
   * that read the old array may find its slots NULLed below, and the
   * barrier in init shades what moved (gc.h, rules for types) */
  for (size_t i = 0; i < n; i++) ftm_field_init(&a->slot[i], ftm_field_peek(&old->slot[i]));
  for (size_t i = n; i < cap; i++) atomic_init(&a->slot[i], NULL);
  /* release: pairs with the readers' acquire load of items */
  atomic_store_explicit(&l->items, a, memory_order_release);
  if (old != NULL) {
    /* release, as a field store: the old slots no longer hold references,
     * so they must not name objects that a later set() may free */
    for (size_t i = 0; i < n; i++) atomic_store_explicit(&old->slot[i], NULL, memory_order_release);
    ftm_free_deferred(old); /* readers may still be scanning it */
  }
  return a;
}

int rt_list_append(ftm_object *self, ftm_object *item) {
  assert(rt_list_check(self));
  rt_list *l = L(self);
  ftm_incref(item); /* the list's reference; taken before the lock: no work under it */
  rt__lock(&l->lock);
  /* relaxed: only writers store these, and we hold the writers' lock */
  rt_list_items *a = atomic_load_explicit(&l->items, memory_order_relaxed);
  size_t n = atomic_load_explicit(&l->size, memory_order_relaxed);
  if ((a == NULL || n == a->cap) && (a = list_grow_locked(l, a, n)) == NULL) {
    rt__unlock(&l->lock);
    ftm_decref(item);
    errno = ENOMEM;
    return -1;
  }
  /* slot n is past `size`: no reader looks at it yet, so init suffices */
  ftm_field_init(&a->slot[n], item);
  /* release: pairs with rt_list_get's acquire of size (slot n is visible) */
  atomic_store_explicit(&l->size, n + 1, memory_order_release);
  rt__unlock(&l->lock);
  return 0;
}

int rt_list_set(ftm_object *self, size_t i, ftm_object *item) {
  assert(rt_list_check(self));
  rt_list *l = L(self);
  ftm_incref(item);
  rt__lock(&l->lock);
  size_t n = atomic_load_explicit(&l->size, memory_order_relaxed); /* relaxed: under lock */
  if (i >= n) {
    rt__unlock(&l->lock);
    ftm_decref(item);
    errno = ERANGE;
    return -1;
  }
  rt_list_items *a = atomic_load_explicit(&l->items, memory_order_relaxed); /* relaxed: under lock */
  ftm_object *old = ftm_field_exchange(&a->slot[i], item);
  rt__unlock(&l->lock);
  /* after unlocking: the old item may die here, and a death may run code
   * (finalizers, clears) that must not run under our lock */
  ftm_decref(old);
  return 0;
}

ftm_object *rt_list_pop(ftm_object *self) {
  assert(rt_list_check(self));
  rt_list *l = L(self);
  rt__lock(&l->lock);
  size_t n = atomic_load_explicit(&l->size, memory_order_relaxed); /* relaxed: under lock */
  if (n == 0) {
    rt__unlock(&l->lock);
    errno = ERANGE;
    return NULL;
  }
  /* release: pairs with rt_list_get's acquire; a reader that sees this
   * size must also see the array every earlier writer installed */
  atomic_store_explicit(&l->size, n - 1, memory_order_release);
  rt_list_items *a = atomic_load_explicit(&l->items, memory_order_relaxed); /* relaxed: under lock */
  ftm_object *o = ftm_field_exchange(&a->slot[n - 1], NULL);
  rt__unlock(&l->lock);
  return o; /* the list's reference passes to the caller */
}
