/* rt.h — the example runtime: ints, strs, tuples, lists and dicts built on
 * ftmem objects.  It is the how-to for runtime authors (read rt_list.c for
 * lock-free reads of a mutable container) and the object model that the
 * tests, stress programs and benchmarks exercise.
 *
 * Conventions (CPython's C API, without the global lock):
 *   - every value is an ftm_object *; rt_<type>_check(o) tells its type;
 *   - arguments are borrowed: a function that keeps an object takes its own
 *     reference.  Results are new references (ftm_decref them when done);
 *     NULL or -1 on failure with errno set (ENOMEM; ERANGE for an index,
 *     ENOENT for a missing key).
 *     Passing the wrong type is a programming error (assert).
 *   - the calling thread must be attached (ftmem's rule for objects), and
 *     must not be inside ftm_read_begin/end when it calls a list writer or
 *     any dict operation: those may wait for a mutex.
 *
 * Which operations may run at the same time on ONE object:
 *   int, str, tuple   immutable: any operation, from any thread
 *   list              get/len: lock-free, alongside anything;
 *                     append/set/pop: serialised by the list's mutex
 *   dict              every operation takes the dict's mutex
 * Runtime locks never nest, and the runtime never drops a reference while
 * holding one (see rt__lock in rt_internal.h for the one exception).
 *
 * Files: rt_int.c rt_str.c rt_tuple.c rt_list.c rt_dict.c, and rt_object.c
 * for what works on any object (rt_hash, rt_eq, rt_repr).
 */
#ifndef RT_H
#define RT_H

#include <ftmem.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

extern ftm_type rt_int_type, rt_str_type, rt_tuple_type, rt_list_type, rt_dict_type;

/* ---- int: a boxed int64_t ------------------------------------------------ */
/* Values in [RT_SMALL_INT_MIN, RT_SMALL_INT_MAX] are one immortal object
 * each, created on first use (CPython's small-int cache). */
#define RT_SMALL_INT_MIN (-5)
#define RT_SMALL_INT_MAX 256
#define RT_SMALL_INT_COUNT (RT_SMALL_INT_MAX - RT_SMALL_INT_MIN + 1)

ftm_object *rt_int_new(int64_t v);
int64_t rt_int_value(const ftm_object *o);
static inline bool rt_int_check(const ftm_object *o) { return ftm_type_of(o) == &rt_int_type; }

/* ---- str: immutable bytes, NUL-terminated -------------------------------- */
ftm_object *rt_str_new(const char *s, size_t len); /* copies len bytes */
ftm_object *rt_str_from_cstr(const char *s);
const char *rt_str_data(const ftm_object *o);
size_t rt_str_len(const ftm_object *o);
/* The canonical, immortal instance equal to s (s itself if it is the first
 * one interned).  Process-wide table. */
ftm_object *rt_str_intern(ftm_object *s);
ftm_object *rt_str_intern_cstr(const char *s);
size_t rt_str_intern_count(void); /* strings interned so far */
static inline bool rt_str_check(const ftm_object *o) { return ftm_type_of(o) == &rt_str_type; }

/* ---- tuple: immutable, fixed length --------------------------------------- */
ftm_object *rt_tuple_new(size_t n, ftm_object *const items[]); /* items non-NULL */
ftm_object *rt_tuple_pack(size_t n, ...);                      /* n ftm_object * */
size_t rt_tuple_len(const ftm_object *t);
ftm_object *rt_tuple_get(ftm_object *t, size_t i); /* NULL + ERANGE past the end */
static inline bool rt_tuple_check(const ftm_object *o) { return ftm_type_of(o) == &rt_tuple_type; }

/* ---- list: mutable sequence ----------------------------------------------- */
ftm_object *rt_list_new(void);
size_t rt_list_len(ftm_object *l);
/* Lock-free.  NULL + ERANGE if i was past the end when it looked. */
ftm_object *rt_list_get(ftm_object *l, size_t i);
int rt_list_append(ftm_object *l, ftm_object *item);           /* 0, -1 + ENOMEM */
int rt_list_set(ftm_object *l, size_t i, ftm_object *item);    /* 0, -1 + ERANGE */
ftm_object *rt_list_pop(ftm_object *l);                        /* NULL + ERANGE if empty */
static inline bool rt_list_check(const ftm_object *o) { return ftm_type_of(o) == &rt_list_type; }

/* ---- dict: hash map, keys compared with rt_eq ---------------------------- */
ftm_object *rt_dict_new(void);
int rt_dict_set(ftm_object *d, ftm_object *key, ftm_object *value); /* 0, -1 + ENOMEM */
ftm_object *rt_dict_get(ftm_object *d, ftm_object *key); /* NULL + ENOENT if absent */
int rt_dict_del(ftm_object *d, ftm_object *key);         /* 0, -1 + ENOENT */
size_t rt_dict_len(ftm_object *d);
/* A snapshot: a new list of (key, value) tuples, in table order. */
ftm_object *rt_dict_items(ftm_object *d);
static inline bool rt_dict_check(const ftm_object *o) { return ftm_type_of(o) == &rt_dict_type; }

/* ---- any object (rt_object.c) --------------------------------------------- */
/* ints and strs hash and compare by value, everything else by identity
 * (so a list may be a key, found only by itself). */
uint64_t rt_hash(ftm_object *o);
bool rt_eq(ftm_object *a, ftm_object *b);
/* Python-like text: 42, 'abc', (1, 2), [1, 'a'], {1: 'x'}.  rt_repr
 * writes at most size bytes (NUL included) and returns the full length, as
 * snprintf does; rt_repr_file writes to f.  Deeply nested or cyclic
 * containers print "..." past depth RT_REPR_DEPTH. */
#define RT_REPR_DEPTH 16
size_t rt_repr(ftm_object *o, char *buf, size_t size);
void rt_repr_file(ftm_object *o, FILE *f);

/* Objects the runtime made immortal (small ints once created, plus interned
 * strings): they are created and never freed, so a leak check expects
 * ftm_object_stats created - freed to be exactly this. */
size_t rt_immortal_count(void);

#ifdef __cplusplus
}
#endif
#endif
