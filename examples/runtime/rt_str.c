/* rt_str.c — immutable byte strings and the process-wide intern table.
 *
 * A str is a variable-size object (item_size 1): header, length (ob_size),
 * a cached hash, then the bytes and a NUL in the same block — one
 * allocation per string, as CPython's compact strings.
 *
 * The hash is computed on first use, not at creation: most strings are
 * never hashed.  Two threads may compute it at once; both get the same
 * value, so whichever store lands is right (the race is benign, and the
 * atomic makes it well-defined).
 *
 * Interning (CPython's sys.intern) goes through ftmem's concurrent intern
 * table: lock-free lookups, and the canonical instance is immortal, so
 * threads comparing interned names by pointer never touch a count.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rt_internal.h"

typedef struct rt_str {
  ftm_varobject ob;      /* ob_size: length in bytes */
  _Atomic uint64_t hash; /* 0 until computed */
  char data[];           /* ob_size bytes, then a NUL */
} rt_str;

ftm_type rt_str_type = {
    .name = "str",
    .basic_size = offsetof(rt_str, data) + 1, /* + 1: the NUL */
    .item_size = 1,
};

ftm_object *rt_str_new(const char *s, size_t len) {
  rt_str *o = (rt_str *)ftm_new_var(&rt_str_type, len);
  if (o == NULL) return NULL;
  memcpy(o->data, s, len);
  o->data[len] = '\0';
  return (ftm_object *)o;
}

ftm_object *rt_str_from_cstr(const char *s) { return rt_str_new(s, strlen(s)); }

const char *rt_str_data(const ftm_object *o) {
  assert(rt_str_check(o));
  return ((const rt_str *)o)->data;
}

size_t rt_str_len(const ftm_object *o) {
  assert(rt_str_check(o));
  return ftm_var_size(o);
}

uint64_t rt__str_hash(ftm_object *o) {
  rt_str *s = (rt_str *)o;
  /* relaxed: the value depends only on the immutable bytes; any thread
   * that stored it stored the same number */
  uint64_t h = atomic_load_explicit(&s->hash, memory_order_relaxed);
  if (h != 0) return h;
  h = 0xcbf29ce484222325ULL; /* FNV-1a, then mixed: FNV's low bits are weak */
  for (size_t i = 0; i < ftm_var_size(o); i++) h = (h ^ (unsigned char)s->data[i]) * 0x100000001b3ULL;
  h = rt__mix64(h);
  if (h == 0) h = 1; /* 0 means "not computed" */
  atomic_store_explicit(&s->hash, h, memory_order_relaxed); /* relaxed: as the load above */
  return h;
}

/* ---- interning ------------------------------------------------------------ */
static ftm_intern_table *interned;
static pthread_once_t interned_once = PTHREAD_ONCE_INIT;

/* the table's callbacks take const objects; the hash cache is not part of
 * a str's value, so writing it through a cast is fine */
static uint64_t intern_hash(const ftm_object *o) { return rt__str_hash((ftm_object *)o); }
static bool intern_eq(const ftm_object *a, const ftm_object *b) {
  return ftm_var_size(a) == ftm_var_size(b) && memcmp(rt_str_data(a), rt_str_data(b), ftm_var_size(a)) == 0;
}

static void interned_init(void) {
  interned = ftm_intern_table_new(intern_hash, intern_eq);
  if (interned == NULL) {
    fprintf(stderr, "rt: out of memory creating the intern table\n");
    abort();
  }
}

static ftm_intern_table *intern_table(void) {
  pthread_once(&interned_once, interned_init); /* also publishes `interned` */
  return interned;
}

ftm_object *rt_str_intern(ftm_object *s) {
  assert(rt_str_check(s));
  ftm_intern_table *t = intern_table();
  /* ftm_intern steals a reference and returns one (to an immortal) */
  ftm_object *c = ftm_intern(t, ftm_newref(s));
  if (c == NULL && errno == EPERM) {
    /* s is new to the table and owned by another live thread: only its
     * owner may make it immortal.  Intern an equal copy that we own. */
    ftm_object *copy = rt_str_new(rt_str_data(s), rt_str_len(s));
    c = copy != NULL ? ftm_intern(t, copy) : NULL;
  }
  return c;
}

ftm_object *rt_str_intern_cstr(const char *s) {
  ftm_object *o = rt_str_from_cstr(s);
  return o != NULL ? ftm_intern(intern_table(), o) : NULL; /* o is ours: never EPERM */
}

size_t rt_str_intern_count(void) { return ftm_intern_count(intern_table()); }
