/* rt_dict.c — hash maps from objects to objects; keys hash with rt_hash
 * and compare with rt_eq (ints and strs by value, the rest by identity).
 *
 * Table: open addressing with linear probing, at most 2/3 full, deletion
 * by backward shift (no tombstones), replaced by one twice as large when
 * full.  The table is one block that carries its own mask, held by one
 * atomic pointer: whoever loads the pointer gets a matching (entries,
 * mask) pair.
 *
 * One mutex per dict, taken by every operation, readers included.  Why
 * not the list's lock-free reads: a lookup is a chain of dependent reads
 * (probe, hash, key, comparison, value) that must all come from one state
 * of the table, and inserts, resizes and backward shifts move entries
 * under a reader's feet.  CPython makes that lock-free with per-table
 * versions, retries and a shared-keys design — far more code than this
 * example should carry.  The mutex is per object, so it is uncontended
 * unless threads really share one dict (then it costs one trylock).
 * Comparing keys under the mutex cannot deadlock because rt_eq takes no
 * lock and runs no user code; and every decref, which may run an object's
 * death, happens after unlocking.
 *
 * One reader takes no lock: the cycle collector's traverse, which runs
 * while other threads insert, delete and resize (gc.h, "Rules for
 * types"); it cannot take the mutex (the collector must not block on a
 * mutator, nor the mutator on the collector).  What makes it safe:
 *   - the table pointer is published with release after the new table is
 *     filled, and traverse loads it with acquire: it sees a complete table
 *     and that table's own mask (reading `table` and `mask` as two fields
 *     could pair a new table with an old mask: an overrun);
 *   - a replaced table goes to ftm_free_deferred, so it stays readable
 *     until the collector's read section ends; so does the table of a
 *     dict that dies, since the collector may be scanning a dict whose
 *     death begins after it checked (dict_dealloc);
 *   - keys and values are ftm_field slots, written with init, exchange or
 *     atomic stores and read with ftm_field_peek; traverse reads no other
 *     entry field (the hash is the writers' alone);
 *   - a retired table is left as it was, not cleared slot by slot.
 *     ftm_free_deferred's rule (object.h) asks for that on arrays read with
 *     ftm_field_load, whose re-check trusts the slot it loaded from (so
 *     rt_list.c, whose rt_list_get uses it, clears its old arrays); here
 *     no one reads a slot without the mutex but traverse, which only
 *     peeks.  A traverse still scanning a retired table sees the dict as
 *     it was at the resize (nobody writes a retired table): it may report
 *     references the dict has dropped since, to objects that may even have
 *     died since — their memory is not reused while the collector's
 *     section is open (an object once stored in a field is freed after a
 *     grace period) and the collector skips dead objects (gc.h).  Clearing
 *     would cost a second pass over the old table on every resize (4% more
 *     instructions per insert in bench/runtime.c's dict) and still give no
 *     snapshot: slots of the live table change under a scan as well — a
 *     traverse racing a backward shift may miss the entry that moves, or
 *     pair a key with the value stored after it.  gc.h asks traverse for
 *     memory safety and atomic reads, and leaves the rest to the collector.
 *     A lock-free lookup (ftm_field_load on the slots) would need the
 *     clearing.
 * Every other access to the table — lookups, inserts, deletes, resizes,
 * items, len — stays under the mutex, so the mutex holder reads the
 * pointer relaxed.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>

#include "rt_internal.h"

typedef struct rt_dict_entry {
  uint64_t hash; /* under the lock only (traverse does not read it) */
  ftm_field key; /* NULL: free slot */
  ftm_field value;
} rt_dict_entry;

typedef struct rt_dict_table {
  size_t mask;        /* mask + 1 entries, a power of two; fixed */
  rt_dict_entry e[];
} rt_dict_table;

typedef struct rt_dict {
  ftm_object ob;
  /* NULL while never used.  Written under lock (release); read under lock
   * (relaxed) or by traverse (acquire) */
  _Atomic(rt_dict_table *) table;
  size_t used; /* under lock */
  pthread_mutex_t lock;
} rt_dict;

#define D(o) ((rt_dict *)(o))

/* The table, for the mutex holder (or a thread that owns the dict
 * exclusively).  relaxed: every store of the pointer happens under the
 * lock, which orders it before us. */
static inline rt_dict_table *table_locked(rt_dict *d) {
  return atomic_load_explicit(&d->table, memory_order_relaxed);
}

/* ---- type callbacks ---------------------------------------------------------
 * traverse: lock-free, concurrent with the mutators (see the top).
 * clear: only on a dict nobody else can reach (its death, or garbage the
 * collector found) — and it must not take the mutex: its decrefs may run
 * other deaths.  dealloc: on a dead dict, which a traverse may still be
 * scanning. */
static int dict_traverse(ftm_object *self, ftm_visitproc visit, void *arg) {
  /* acquire: pairs with grow_locked's release; the table's mask and
   * initial slots are visible.  The collector's read section keeps it
   * allocated even if a resize retires it now. */
  rt_dict_table *t = atomic_load_explicit(&D(self)->table, memory_order_acquire);
  if (t == NULL) return 0;
  for (size_t i = 0; i <= t->mask; i++) {
    ftm_object *k = ftm_field_peek(&t->e[i].key);
    if (k == NULL) continue;
    int r = visit(k, arg);
    /* may belong to a different entry than k if a backward shift ran in
     * between: still an object the dict held */
    ftm_object *v = ftm_field_peek(&t->e[i].value);
    if (r == 0 && v != NULL) r = visit(v, arg);
    if (r != 0) return r;
  }
  return 0;
}

static void dict_clear(ftm_object *self) {
  /* acquire: as traverse (the collector may clear a dict another thread
   * last wrote) */
  rt_dict_table *t = atomic_load_explicit(&D(self)->table, memory_order_acquire);
  for (size_t i = 0; t != NULL && i <= t->mask; i++) {
    ftm_field_clear(&t->e[i].key);
    ftm_field_clear(&t->e[i].value);
  }
  D(self)->used = 0;
}

static void dict_dealloc(ftm_object *self) {
  /* deferred, though the dict is dead: the collector may be inside
   * dict_traverse on it right now (see list_dealloc in rt_list.c).
   * relaxed: the decref that killed the dict ordered every write */
  ftm_free_deferred(atomic_load_explicit(&D(self)->table, memory_order_relaxed));
  pthread_mutex_destroy(&D(self)->lock);
}

static size_t dict_sizeof_extra(const ftm_object *self) {
  /* no lock, as rt_list.c: a resize may retire the table under us, so
   * read its mask inside a read section */
  ftm_read_begin();
  /* acquire: pairs with grow_locked's release (the mask is visible) */
  rt_dict_table *t = atomic_load_explicit(&D((ftm_object *)self)->table, memory_order_acquire);
  size_t n = t != NULL ? sizeof *t + (t->mask + 1) * sizeof(rt_dict_entry) : 0;
  ftm_read_end();
  return n;
}

ftm_type rt_dict_type = {
    .name = "dict",
    .basic_size = sizeof(rt_dict),
    .flags = FTM_TYPE_GC,
    .traverse = dict_traverse,
    .clear = dict_clear,
    .dealloc = dict_dealloc,
    .sizeof_extra = dict_sizeof_extra,
};

ftm_object *rt_dict_new(void) {
  ftm_object *d = ftm_new(&rt_dict_type); /* empty: table NULL */
  if (d != NULL) pthread_mutex_init(&D(d)->lock, NULL);
  return d;
}

/* ---- the table, under the lock ---------------------------------------------- */
/* The slot of t holding key, or the free slot where it would go. */
static size_t find_locked(rt_dict_table *t, ftm_object *key, uint64_t h, bool *found) {
  for (size_t i = h & t->mask;; i = (i + 1) & t->mask) { /* ends: never full */
    rt_dict_entry *e = &t->e[i];
    ftm_object *k = ftm_field_peek(&e->key);
    if (k == NULL || (e->hash == h && rt_eq(k, key))) {
      *found = k != NULL;
      return i;
    }
  }
}

/* Replace d's table by one twice as large (or make the first); returns the
 * new table, or NULL (out of memory; d unchanged). */
static rt_dict_table *grow_locked(rt_dict *d, rt_dict_table *old) {
  size_t ncap = old != NULL ? (old->mask + 1) * 2 : 8;
  if (ncap > (SIZE_MAX - sizeof(rt_dict_table)) / sizeof(rt_dict_entry)) return NULL;
  /* zeroed memory is a NULL ftm_field on every platform ftmem supports */
  rt_dict_table *t = ftm_calloc(1, sizeof *t + ncap * sizeof(rt_dict_entry));
  if (t == NULL) return NULL;
  t->mask = ncap - 1;
  /* copy the references (they move: no count changes).  relaxed: t is
   * not visible until the release store below */
  for (size_t i = 0; old != NULL && i <= old->mask; i++) {
    ftm_object *k = ftm_field_peek(&old->e[i].key);
    if (k == NULL) continue;
    size_t j = old->e[i].hash & t->mask;
    while (atomic_load_explicit(&t->e[j].key, memory_order_relaxed) != NULL) j = (j + 1) & t->mask;
    t->e[j].hash = old->e[i].hash;
    atomic_store_explicit(&t->e[j].key, k, memory_order_relaxed);
    atomic_store_explicit(&t->e[j].value, ftm_field_peek(&old->e[i].value), memory_order_relaxed);
  }
  /* release: pairs with traverse's acquire — a complete table, its mask */
  atomic_store_explicit(&d->table, t, memory_order_release);
  /* the old table keeps its (now stale) slots: see the top */
  ftm_free_deferred(old); /* NULL: nothing; else a traverse may still be scanning it */
  return t;
}

/* Slot i of t was just emptied: pull later entries of its probe run back
 * so every key stays reachable from its home slot without tombstones. */
static void backshift_locked(rt_dict_table *t, size_t i) {
  for (size_t j = (i + 1) & t->mask; ftm_field_peek(&t->e[j].key) != NULL; j = (j + 1) & t->mask) {
    size_t home = t->e[j].hash & t->mask;
    /* the entry at j may fill hole i iff i lies on its probe path [home, j) */
    if (((j - home) & t->mask) >= ((j - i) & t->mask)) {
      /* move j to i: the references move, no count changes.  A traverse
       * scanning meanwhile may see the entry twice or not at all (it read
       * i before, reads j after); writing the new place with
       * ftm_field_init lets a running collection's barrier shade both
       * objects, so a miss costs nothing (gc.h, rules for types).  A lock
       * holder never looks in between */
      rt_dict_entry *dst = &t->e[i], *src = &t->e[j];
      ftm_object *k = ftm_field_peek(&src->key), *v = ftm_field_peek(&src->value);
      /* relaxed: a NULL publishes nothing */
      atomic_store_explicit(&src->key, NULL, memory_order_relaxed);
      atomic_store_explicit(&src->value, NULL, memory_order_relaxed);
      dst->hash = src->hash;
      ftm_field_init(&dst->value, v); /* release, and the barrier */
      ftm_field_init(&dst->key, k);
      i = j;
    }
  }
}

/* ---- operations ----------------------------------------------------------- */
int rt_dict_set(ftm_object *self, ftm_object *key, ftm_object *value) {
  assert(rt_dict_check(self));
  rt_dict *d = D(self);
  uint64_t h = rt_hash(key); /* before locking: may compute a str's hash */
  ftm_incref(key);
  ftm_incref(value);
  ftm_object *drop_key = NULL, *drop_value = NULL;
  rt__lock(&d->lock);
  rt_dict_table *t = table_locked(d);
  if ((t == NULL || (d->used + 1) * 3 > (t->mask + 1) * 2) && (t = grow_locked(d, t)) == NULL) {
    rt__unlock(&d->lock);
    ftm_decref(key);
    ftm_decref(value);
    errno = ENOMEM;
    return -1;
  }
  bool found;
  rt_dict_entry *e = &t->e[find_locked(t, key, h, &found)];
  if (found) {
    drop_value = ftm_field_exchange(&e->value, value);
    drop_key = key; /* the dict keeps the equal key it already has, as Python does */
  } else {
    e->hash = h;
    /* init (a release store): the slot is free and only traverse reads it
     * without our lock; value first, so a traverse that sees the key sees
     * the value too */
    ftm_field_init(&e->value, value);
    ftm_field_init(&e->key, key);
    d->used++;
  }
  rt__unlock(&d->lock);
  ftm_xdecref(drop_key); /* after unlocking: may run deaths */
  ftm_xdecref(drop_value);
  return 0;
}

ftm_object *rt_dict_get(ftm_object *self, ftm_object *key) {
  assert(rt_dict_check(self));
  rt_dict *d = D(self);
  uint64_t h = rt_hash(key);
  ftm_object *v = NULL;
  bool found = false;
  rt__lock(&d->lock);
  rt_dict_table *t = table_locked(d);
  if (t != NULL) {
    size_t i = find_locked(t, key, h, &found);
    /* incref under the lock: after unlocking another thread may replace
     * the value and drop the dict's reference */
    if (found) v = ftm_newref(ftm_field_peek(&t->e[i].value));
  }
  rt__unlock(&d->lock);
  if (v == NULL) errno = ENOENT;
  return v;
}

int rt_dict_del(ftm_object *self, ftm_object *key) {
  assert(rt_dict_check(self));
  rt_dict *d = D(self);
  uint64_t h = rt_hash(key);
  ftm_object *k = NULL, *v = NULL;
  bool found = false;
  rt__lock(&d->lock);
  rt_dict_table *t = table_locked(d);
  if (t != NULL) {
    size_t i = find_locked(t, key, h, &found);
    if (found) {
      k = ftm_field_exchange(&t->e[i].key, NULL);
      v = ftm_field_exchange(&t->e[i].value, NULL);
      backshift_locked(t, i);
      d->used--;
    }
  }
  rt__unlock(&d->lock);
  if (!found) {
    errno = ENOENT;
    return -1;
  }
  ftm_decref(k);
  ftm_decref(v);
  return 0;
}

size_t rt_dict_len(ftm_object *self) {
  assert(rt_dict_check(self));
  rt__lock(&D(self)->lock);
  size_t n = D(self)->used;
  rt__unlock(&D(self)->lock);
  return n;
}

ftm_object *rt_dict_items(ftm_object *self) {
  assert(rt_dict_check(self));
  rt_dict *d = D(self);
  ftm_object *list = rt_list_new();
  if (list == NULL) return NULL;
  /* copy references under the lock, build tuples after it: creating
   * objects reaches a safepoint, which may run deaths */
  rt__lock(&d->lock);
  size_t n = 0, cap = d->used;
  rt_dict_table *t = table_locked(d);
  ftm_object **refs = ftm_malloc((cap ? cap : 1) * 2 * sizeof *refs);
  for (size_t i = 0; refs != NULL && t != NULL && i <= t->mask; i++) {
    ftm_object *k = ftm_field_peek(&t->e[i].key);
    if (k == NULL) continue;
    refs[2 * n] = ftm_newref(k);
    refs[2 * n + 1] = ftm_newref(ftm_field_peek(&t->e[i].value));
    n++;
  }
  rt__unlock(&d->lock);
  bool ok = refs != NULL;
  for (size_t i = 0; i < n; i++) {
    ftm_object *pair = ok ? rt_tuple_new(2, &refs[2 * i]) : NULL;
    ok = pair != NULL && rt_list_append(list, pair) == 0;
    ftm_xdecref(pair);
    ftm_decref(refs[2 * i]);
    ftm_decref(refs[2 * i + 1]);
  }
  ftm_free(refs);
  if (!ok) {
    ftm_decref(list);
    errno = ENOMEM;
    return NULL;
  }
  return list;
}
