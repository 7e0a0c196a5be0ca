/* rt_object.c — operations on any runtime object: rt_hash and rt_eq (what
 * dict keys use), rt_repr (Python-like text), rt_immortal_count.
 *
 * Dispatch is a switch on the type pointer: five types do not need a
 * method table.  rt_eq must stay lock-free and free of callbacks — dicts
 * call it under their mutex (rt_dict.c).
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

#include "rt_internal.h"

uint64_t rt_hash(ftm_object *o) {
  if (rt_int_check(o)) return rt__mix64((uint64_t)rt_int_value(o));
  if (rt_str_check(o)) return rt__str_hash(o);
  return rt__mix64((uintptr_t)o); /* identity */
}

bool rt_eq(ftm_object *a, ftm_object *b) {
  if (a == b) return true;
  if (ftm_type_of(a) != ftm_type_of(b)) return false;
  if (rt_int_check(a)) return rt_int_value(a) == rt_int_value(b);
  if (rt_str_check(a))
    return rt_str_len(a) == rt_str_len(b) && memcmp(rt_str_data(a), rt_str_data(b), rt_str_len(a)) == 0;
  return false;
}

size_t rt_immortal_count(void) { return rt__small_int_count() + rt_str_intern_count(); }

/* ---- repr ----------------------------------------------------------------
 * One writer for both destinations: a FILE, or a buffer filled snprintf
 * style (len counts everything, even what did not fit). */
typedef struct sink {
  FILE *f;
  char *buf;
  size_t size, len;
} sink;

__attribute__((format(printf, 2, 3))) static void put(sink *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r;
  if (s->f != NULL) {
    r = vfprintf(s->f, fmt, ap);
  } else {
    size_t room = s->len < s->size ? s->size - s->len : 0;
    r = vsnprintf(room ? s->buf + s->len : NULL, room, fmt, ap);
  }
  va_end(ap);
  if (r > 0) s->len += (size_t)r;
}

static void repr(sink *s, ftm_object *o, int depth);

static void repr_str(sink *s, ftm_object *o) {
  const unsigned char *p = (const unsigned char *)rt_str_data(o);
  put(s, "'");
  for (size_t i = 0; i < rt_str_len(o); i++) {
    if (p[i] == '\'' || p[i] == '\\') put(s, "\\%c", p[i]);
    else if (isprint(p[i])) put(s, "%c", p[i]);
    else put(s, "\\x%02x", p[i]);
  }
  put(s, "'");
}

/* Lists print with rt_list_get, so a list other threads are changing
 * prints without a lock — each item is intact, the whole is no snapshot
 * (as in free-threaded CPython). */
static void repr_seq(sink *s, ftm_object *o, int depth) {
  bool tuple = rt_tuple_check(o);
  put(s, tuple ? "(" : "[");
  size_t i = 0;
  for (ftm_object *x; (x = tuple ? rt_tuple_get(o, i) : rt_list_get(o, i)) != NULL; i++) {
    if (i > 0) put(s, ", ");
    repr(s, x, depth + 1);
    ftm_decref(x);
  }
  put(s, tuple ? (i == 1 ? ",)" : ")") : "]");
}

/* Dicts print from a snapshot: printing a value under the dict's lock
 * would deadlock on a dict that contains itself. */
static void repr_dict(sink *s, ftm_object *o, int depth) {
  ftm_object *items = rt_dict_items(o);
  if (items == NULL) {
    put(s, "{?}"); /* out of memory */
    return;
  }
  put(s, "{");
  ftm_object *pair;
  for (size_t i = 0; (pair = rt_list_get(items, i)) != NULL; i++) {
    ftm_object *k = rt_tuple_get(pair, 0), *v = rt_tuple_get(pair, 1);
    if (i > 0) put(s, ", ");
    repr(s, k, depth + 1);
    put(s, ": ");
    repr(s, v, depth + 1);
    ftm_decref(k);
    ftm_decref(v);
    ftm_decref(pair);
  }
  put(s, "}");
  ftm_decref(items);
}

static void repr(sink *s, ftm_object *o, int depth) {
  if (depth > RT_REPR_DEPTH) put(s, "...");
  else if (rt_int_check(o)) put(s, "%" PRId64, rt_int_value(o));
  else if (rt_str_check(o)) repr_str(s, o);
  else if (rt_tuple_check(o) || rt_list_check(o)) repr_seq(s, o, depth);
  else if (rt_dict_check(o)) repr_dict(s, o, depth);
  else put(s, "<%s object at %p>", ftm_type_of(o)->name, (void *)o);
}

size_t rt_repr(ftm_object *o, char *buf, size_t size) {
  sink s = {.buf = buf, .size = size};
  if (size > 0) buf[0] = '\0';
  repr(&s, o, 0);
  return s.len;
}

void rt_repr_file(ftm_object *o, FILE *f) {
  sink s = {.f = f};
  repr(&s, o, 0);
}
