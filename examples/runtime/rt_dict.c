/* rt_dict.c — hash maps from objects to objects; keys hash with rt_hash
 * and compare with rt_eq (ints and strs by value, the rest by identity).
 *
 * Table: open addressing with linear probing, at most 2/3 full, deletion
 * by backward shift (no tombstones), held by pointer and replaced by one
 * twice as large when full.
 *
 * One mutex per dict, taken by every operation, readers included.  Why
 * not the list's lock-free reads: a lookup is a chain of dependent reads
 * (probe, hash, key, comparison, value) that must all come from one state
 * of the table, and inserts, resizes and backward shifts move entries
 * under a reader's feet.  CPython makes that lock-free with per-table
 * versions, retries and a shared-keys design — far more code than this
 * example should carry.  The mutex is per object, so it is uncontended
 * unless threads really share one dict (then it costs one trylock), and it
 * buys simplicity: an old table is freed at once on resize (no reader can
 * be inside it, no ftm_free_deferred).  Comparing keys under the mutex
 * cannot deadlock because rt_eq takes no lock and runs no user code; and
 * every decref, which may run an object's death, happens after unlocking.
 */
#include <assert.h>
#include <errno.h>

#include "rt_internal.h"

typedef struct rt_dict_entry {
  uint64_t hash;
  ftm_field key; /* NULL: free slot */
  ftm_field value;
} rt_dict_entry;

typedef struct rt_dict {
  ftm_object ob;
  /* all protected by lock */
  rt_dict_entry *table; /* mask + 1 entries, or NULL while never used */
  size_t mask;
  size_t used;
  pthread_mutex_t lock;
} rt_dict;

#define D(o) ((rt_dict *)(o))

/* ---- type callbacks: on a dict nobody else touches (its death, or the
 * collector with the world stopped), so no lock — and clear must not take
 * it: the decrefs in clear may run other deaths ---- */
static int dict_traverse(ftm_object *self, ftm_visitproc visit, void *arg) {
  rt_dict *d = D(self);
  for (size_t i = 0; d->table != NULL && i <= d->mask; i++) {
    ftm_object *k = ftm_field_peek(&d->table[i].key);
    if (k == NULL) continue;
    int r = visit(k, arg);
    ftm_object *v = ftm_field_peek(&d->table[i].value);
    if (r == 0 && v != NULL) r = visit(v, arg);
    if (r != 0) return r;
  }
  return 0;
}

static void dict_clear(ftm_object *self) {
  rt_dict *d = D(self);
  for (size_t i = 0; d->table != NULL && i <= d->mask; i++) {
    ftm_field_clear(&d->table[i].key);
    ftm_field_clear(&d->table[i].value);
  }
  d->used = 0;
}

static void dict_dealloc(ftm_object *self) {
  ftm_free(D(self)->table);
  pthread_mutex_destroy(&D(self)->lock);
}

static size_t dict_sizeof_extra(const ftm_object *self) {
  rt_dict *d = D((ftm_object *)self); /* the lock is not part of the value */
  rt__lock(&d->lock);
  size_t n = d->table != NULL ? (d->mask + 1) * sizeof(rt_dict_entry) : 0;
  rt__unlock(&d->lock);
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
/* The slot holding key, or the free slot where it would go. */
static size_t find_locked(rt_dict *d, ftm_object *key, uint64_t h, bool *found) {
  for (size_t i = h & d->mask;; i = (i + 1) & d->mask) { /* ends: never full */
    rt_dict_entry *e = &d->table[i];
    ftm_object *k = ftm_field_peek(&e->key);
    if (k == NULL || (e->hash == h && rt_eq(k, key))) {
      *found = k != NULL;
      return i;
    }
  }
}

/* Move an entry's references to another slot (no count changes).
 * relaxed: the slots are only read under the lock we hold. */
static void entry_move(rt_dict_entry *dst, rt_dict_entry *src) {
  dst->hash = src->hash;
  atomic_store_explicit(&dst->key, ftm_field_peek(&src->key), memory_order_relaxed);
  atomic_store_explicit(&dst->value, ftm_field_peek(&src->value), memory_order_relaxed);
  atomic_store_explicit(&src->key, NULL, memory_order_relaxed);
  atomic_store_explicit(&src->value, NULL, memory_order_relaxed);
}

static int grow_locked(rt_dict *d) {
  size_t ncap = d->table != NULL ? (d->mask + 1) * 2 : 8;
  /* zeroed memory is a NULL ftm_field on every platform ftmem supports */
  rt_dict_entry *t = ftm_calloc(ncap, sizeof *t);
  if (t == NULL) return -1;
  rt_dict_entry *old = d->table;
  size_t ocap = old != NULL ? d->mask + 1 : 0;
  d->table = t;
  d->mask = ncap - 1;
  for (size_t i = 0; i < ocap; i++) {
    if (ftm_field_peek(&old[i].key) == NULL) continue;
    size_t j = old[i].hash & d->mask;
    while (ftm_field_peek(&t[j].key) != NULL) j = (j + 1) & d->mask;
    entry_move(&t[j], &old[i]);
  }
  ftm_free(old); /* at once: nobody reads a table without the lock */
  return 0;
}

/* Slot i was just emptied: pull later entries of its probe run back so
 * every key stays reachable from its home slot without tombstones. */
static void backshift_locked(rt_dict *d, size_t i) {
  for (size_t j = (i + 1) & d->mask; ftm_field_peek(&d->table[j].key) != NULL; j = (j + 1) & d->mask) {
    size_t home = d->table[j].hash & d->mask;
    /* the entry at j may fill hole i iff i lies on its probe path [home, j) */
    if (((j - home) & d->mask) >= ((j - i) & d->mask)) {
      entry_move(&d->table[i], &d->table[j]);
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
  if ((d->table == NULL || (d->used + 1) * 3 > (d->mask + 1) * 2) && grow_locked(d) != 0) {
    rt__unlock(&d->lock);
    ftm_decref(key);
    ftm_decref(value);
    errno = ENOMEM;
    return -1;
  }
  bool found;
  rt_dict_entry *e = &d->table[find_locked(d, key, h, &found)];
  if (found) {
    drop_value = ftm_field_exchange(&e->value, value);
    drop_key = key; /* the dict keeps the equal key it already has, as Python does */
  } else {
    e->hash = h;
    /* init: the slot is free, and nobody reads it without our lock */
    ftm_field_init(&e->key, key);
    ftm_field_init(&e->value, value);
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
  if (d->table != NULL) {
    size_t i = find_locked(d, key, h, &found);
    /* incref under the lock: after unlocking another thread may replace
     * the value and drop the dict's reference */
    if (found) v = ftm_newref(ftm_field_peek(&d->table[i].value));
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
  if (d->table != NULL) {
    size_t i = find_locked(d, key, h, &found);
    if (found) {
      k = ftm_field_exchange(&d->table[i].key, NULL);
      v = ftm_field_exchange(&d->table[i].value, NULL);
      backshift_locked(d, i);
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
  ftm_object **refs = ftm_malloc((cap ? cap : 1) * 2 * sizeof *refs);
  for (size_t i = 0; refs != NULL && d->table != NULL && i <= d->mask; i++) {
    ftm_object *k = ftm_field_peek(&d->table[i].key);
    if (k == NULL) continue;
    refs[2 * n] = ftm_newref(k);
    refs[2 * n + 1] = ftm_newref(ftm_field_peek(&d->table[i].value));
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
