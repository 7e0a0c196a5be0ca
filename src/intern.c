/* intern.c — concurrent intern tables: one canonical, immortal instance
 * per value (CPython's interned strings, without the global lock).
 *
 * Built on Concurrency Kit's ck_hs in SPMC mode: lookups are lock-free
 * (inside a read section, because a growing table frees its old slot array
 * through ftm_free_deferred), inserts take the shard's lock (lockfree/spinlock.h).  16 shards by
 * the top bits of the hash keep writers of different values apart.
 * Canonical objects are entered, then made immortal (under the shard
 * lock), and lock-free lookups pass over an entry whose object is not
 * immortal yet: a reader that finds one may use it without a reference
 * count race.  Entering first is what lets a failed insert (no memory for
 * the table to grow) release the value: immortality cannot be undone.
 */
#include <ck_hs.h>
#include <pthread.h>
#include <string.h>

#include "lockfree/spinlock.h"
#include "object_internal.h"

#define FTM_INTERN_SHARDS 16

extern struct ck_malloc ftm__ck_allocator; /* weakref.c */

typedef struct ftm__intern_entry_s {
  uint64_t hash;
  ftm_object *obj;
  ftm_intern_table *table;
} ftm__intern_entry;

static pthread_mutex_t ftm__intern_tables_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ftm_intern_table *ftm__intern_tables;

struct ftm_intern_table {
  struct ftm_intern_table *fork_next; /* registry of live tables (fork) */
  ftm_intern_hash hash;
  ftm_intern_eq eq;
  _Atomic size_t count;
  struct {
    ftm_spinlock_t lock;
    ck_hs_t hs;
  } shard[FTM_INTERN_SHARDS];
};

static unsigned long ftm__ie_hash(const void *key, unsigned long seed) {
  (void)seed;
  return (unsigned long)((const ftm__intern_entry *)key)->hash;
}
static bool ftm__ie_eq(const void *a, const void *b) {
  const ftm__intern_entry *x = a, *y = b;
  return x->hash == y->hash && (x->obj == y->obj || x->table->eq(x->obj, y->obj));
}

ftm_intern_table *ftm_intern_table_new(ftm_intern_hash hash, ftm_intern_eq eq) {
  if (hash == NULL || eq == NULL) {
    errno = EINVAL;
    return NULL;
  }
  ftm_intern_table *t = ftm_calloc(1, sizeof *t);
  if (t == NULL) return NULL;
  t->hash = hash;
  t->eq = eq;
  for (unsigned i = 0; i < FTM_INTERN_SHARDS; i++) {
    ftm_atomic_store_relaxed(&t->shard[i].lock.xlocked, 0);
    if (!ck_hs_init(&t->shard[i].hs, CK_HS_MODE_OBJECT | CK_HS_MODE_SPMC, ftm__ie_hash, ftm__ie_eq,
                    &ftm__ck_allocator, 64, 0)) {
      for (unsigned j = 0; j < i; j++) ck_hs_destroy(&t->shard[j].hs);
      ftm_free(t);
      errno = ENOMEM;
      return NULL;
    }
  }
  pthread_mutex_lock(&ftm__intern_tables_lock);
  t->fork_next = ftm__intern_tables;
  ftm__intern_tables = t;
  pthread_mutex_unlock(&ftm__intern_tables_lock);
  return t;
}

/* fork: no shard may be locked by a thread that will not exist in the
 * child.  Lock every shard of every table (the registry lock first), in
 * the same order every time. */
void ftm__intern_prefork(void) {
  pthread_mutex_lock(&ftm__intern_tables_lock);
  for (ftm_intern_table *t = ftm__intern_tables; t != NULL; t = t->fork_next)
    for (unsigned i = 0; i < FTM_INTERN_SHARDS; i++) ftm_spinlock_lock(&t->shard[i].lock);
}

void ftm__intern_postfork(void) {
  for (ftm_intern_table *t = ftm__intern_tables; t != NULL; t = t->fork_next)
    for (unsigned i = 0; i < FTM_INTERN_SHARDS; i++) ftm_spinlock_unlock(&t->shard[i].lock);
  pthread_mutex_unlock(&ftm__intern_tables_lock);
}

/* the top bits of a multiplicative mix: weak user hashes (small ints
 * hashing to themselves) still spread over the shards */
static unsigned ftm__intern_shard(uint64_t h) {
  return (unsigned)((h * 0x9E3779B97F4A7C15ull) >> 60);
}

static ftm_object *ftm__intern_find(ftm_intern_table *t, unsigned s, const ftm__intern_entry *probe) {
  ftm_read_begin();
  const ftm__intern_entry *e = ck_hs_get(&t->shard[s].hs, (unsigned long)probe->hash, probe);
  ftm_object *r = e ? e->obj : NULL;
  /* entered but not made immortal yet (its ftm_intern holds the shard
   * lock): not there yet — or never, if that fails */
  if (r != NULL && !ftm_is_immortal(r)) r = NULL;
  ftm_read_end();
  return r;
}

ftm_object *ftm_intern_lookup(ftm_intern_table *t, const ftm_object *probe_obj) {
  ftm__intern_entry probe = {t->hash(probe_obj), (ftm_object *)probe_obj, t};
  return ftm__intern_find(t, ftm__intern_shard(probe.hash), &probe);
}

ftm_object *ftm_intern(ftm_intern_table *t, ftm_object *obj) {
  ftm__intern_entry probe = {t->hash(obj), obj, t};
  unsigned s = ftm__intern_shard(probe.hash);
  ftm_object *c = ftm__intern_find(t, s, &probe);
  if (c != NULL) {
    if (c != obj) ftm_decref(obj);
    return c;
  }
  ftm_spinlock_lock(&t->shard[s].lock);
  const ftm__intern_entry *e = ck_hs_get(&t->shard[s].hs, (unsigned long)probe.hash, &probe);
  if (e != NULL) {
    c = e->obj;
    ftm_spinlock_unlock(&t->shard[s].lock);
    if (c != obj) ftm_decref(obj);
    return c;
  }
  ftm__intern_entry *ne = ftm_malloc(sizeof *ne);
  /* ck_hs publishes the entry with a store-release fence (SPMC mode) */
  if (ne == NULL || (*ne = probe, !ck_hs_put(&t->shard[s].hs, (unsigned long)probe.hash, ne))) {
    /* out of memory (the table could not grow): nobody saw obj here */
    ftm_spinlock_unlock(&t->shard[s].lock);
    ftm_free(ne);
    ftm_decref(obj);
    errno = ENOMEM;
    return NULL;
  }
  if (ftm_make_immortal(obj) != 0) { /* EPERM: owned by another live thread */
    ck_hs_remove(&t->shard[s].hs, (unsigned long)probe.hash, &probe);
    ftm_spinlock_unlock(&t->shard[s].lock);
    /* lock-free lookups may be comparing against the entry and obj right
     * now (they pass over obj, which is not immortal): both outlive their
     * read sections — the entry through the epoch, obj because SHARED
     * sends its memory there too should our reference be its last */
    ftm_free_deferred(ne);
    ftm__mark_shared(obj);
    ftm_decref(obj);
    errno = EPERM;
    return NULL;
  }
  ftm_atomic_fetch_add_relaxed(&t->count, 1);
  ftm_spinlock_unlock(&t->shard[s].lock);
  return obj;
}

size_t ftm_intern_count(ftm_intern_table *t) { return ftm_atomic_load_relaxed(&t->count); }

void ftm_intern_table_free(ftm_intern_table *t) {
  if (t == NULL) return;
  pthread_mutex_lock(&ftm__intern_tables_lock);
  for (ftm_intern_table **p = &ftm__intern_tables; *p != NULL; p = &(*p)->fork_next)
    if (*p == t) {
      *p = t->fork_next;
      break;
    }
  pthread_mutex_unlock(&ftm__intern_tables_lock);
  for (unsigned i = 0; i < FTM_INTERN_SHARDS; i++) {
    ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
    void *e;
    while (ck_hs_next(&t->shard[i].hs, &it, &e)) ftm_free(e);
    ck_hs_destroy(&t->shard[i].hs);
  }
  ftm_free(t);
}
