/* demo.c — rt_demo: the example runtime used from several threads.
 *
 * Each worker builds its own list and dict of ints and strs and checks
 * them, interns a handful of names (it must get the very instances main
 * interned), and appends (worker, i, name) tuples to one shared list while
 * reading random items of it without a lock.  At the end main checks the
 * shared list item by item, prints a summary, and checks that every object
 * created was freed except the immortal ones (small ints, interned strs).
 *
 * usage: rt_demo [threads] [items per thread]    (default 4 2000)
 * Exit status 0 and "rt_demo: OK" when every check passed.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

static const char *const NAMES[] = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"};
#define NNAMES (sizeof NAMES / sizeof NAMES[0])

static ftm_object *g_names[NNAMES]; /* interned by main before the workers start */
static ftm_object *g_shared;        /* the list every worker appends to */
static int g_items;
static _Atomic int g_errors;

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      fprintf(stderr, "rt_demo: check failed at line %d: %s\n", __LINE__, #cond);   \
      atomic_fetch_add_explicit(&g_errors, 1, memory_order_relaxed); /* a count */  \
    }                                                                               \
  } while (0)

/* A shared-list item is (worker, i, NAMES[i % NNAMES]) with the name interned. */
static bool item_ok(ftm_object *t) {
  if (!rt_tuple_check(t) || rt_tuple_len(t) != 3) return false;
  ftm_object *w = rt_tuple_get(t, 0), *i = rt_tuple_get(t, 1), *name = rt_tuple_get(t, 2);
  bool ok = rt_int_check(w) && rt_int_check(i) && rt_int_value(i) >= 0 &&
            name == g_names[rt_int_value(i) % NNAMES];
  ftm_decref(w);
  ftm_decref(i);
  ftm_decref(name);
  return ok;
}

static void build_own_containers(int id) {
  ftm_object *list = rt_list_new(), *dict = rt_dict_new();
  char buf[32];
  for (int i = 0; i < g_items; i++) {
    ftm_object *n = rt_int_new(i * 7 - 100), *s;
    snprintf(buf, sizeof buf, "w%d-%d", id, i);
    s = rt_str_from_cstr(buf);
    CHECK(rt_list_append(list, i % 2 ? s : n) == 0);
    CHECK(rt_dict_set(dict, s, n) == 0); /* str -> int */
    CHECK(rt_dict_set(dict, n, s) == 0); /* int -> str */
    ftm_decref(n);
    ftm_decref(s);
  }
  CHECK(rt_list_len(list) == (size_t)g_items && rt_dict_len(dict) == 2 * (size_t)g_items);
  for (int i = 0; i < g_items; i++) {
    /* equal keys built afresh find the stored entries */
    ftm_object *n = rt_int_new(i * 7 - 100), *s, *got;
    snprintf(buf, sizeof buf, "w%d-%d", id, i);
    s = rt_str_from_cstr(buf);
    got = rt_dict_get(dict, s);
    CHECK(got != NULL && rt_eq(got, n));
    ftm_xdecref(got);
    if (i % 2) CHECK(rt_dict_del(dict, n) == 0);
    ftm_decref(n);
    ftm_decref(s);
  }
  CHECK(rt_dict_len(dict) == (size_t)g_items + (size_t)g_items / 2);
  ftm_decref(list);
  ftm_decref(dict);
}

static void *worker(void *arg) {
  int id = (int)(intptr_t)arg;
  uint64_t rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(id + 1);
  build_own_containers(id);
  for (size_t j = 0; j < NNAMES; j++) {
    /* a fresh equal string interns to main's instance */
    ftm_object *s = rt_str_from_cstr(NAMES[j]), *c = rt_str_intern(s);
    CHECK(c == g_names[j]);
    ftm_decref(c);
    ftm_decref(s);
  }
  ftm_object *w = rt_int_new(id);
  for (int i = 0; i < g_items; i++) {
    ftm_object *n = rt_int_new(i), *t = rt_tuple_pack(3, w, n, g_names[i % NNAMES]);
    CHECK(t != NULL && rt_list_append(g_shared, t) == 0);
    ftm_xdecref(t);
    ftm_decref(n);
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17; /* xorshift64 */
    size_t len = rt_list_len(g_shared);
    ftm_object *x = rt_list_get(g_shared, rng % len); /* lock-free, racing appends */
    CHECK(x != NULL && item_ok(x));
    ftm_xdecref(x);
  }
  ftm_decref(w);
  return NULL;
}

static void print_stats(const char *when, const ftm_object_stats_t *s) {
  printf("  %-6s created %" PRIu64 "  freed %" PRIu64 "  freelist hits %" PRIu64 "  queued %" PRIu64
         "  merged %" PRIu64 "  deferred frees %" PRIu64 " (pending %" PRIu64 ")\n",
         when, s->created, s->freed, s->freelist_hits, s->queued, s->merged, s->deferred_frees,
         s->deferred_pending);
}

int main(int argc, char **argv) {
  int nthreads = argc > 1 ? atoi(argv[1]) : 4;
  g_items = argc > 2 ? atoi(argv[2]) : 2000;
  if (nthreads < 1 || nthreads > 256 || g_items < 1) {
    fprintf(stderr, "usage: rt_demo [threads 1..256] [items per thread >= 1]\n");
    return 2;
  }
  ftm_object_stats_t before, after;
  ftm_object_stats_get(&before);
  size_t immortal_before = rt_immortal_count();

  for (size_t j = 0; j < NNAMES; j++) g_names[j] = rt_str_intern_cstr(NAMES[j]);
  g_shared = rt_list_new();
  pthread_t th[256];
  for (int i = 0; i < nthreads; i++) pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
  for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);

  /* every (worker, i) exactly once */
  size_t len = rt_list_len(g_shared);
  CHECK(len == (size_t)nthreads * (size_t)g_items);
  uint64_t sum = 0;
  for (size_t k = 0; k < len; k++) {
    ftm_object *t = rt_list_get(g_shared, k), *w = rt_tuple_get(t, 0), *i = rt_tuple_get(t, 1);
    CHECK(item_ok(t));
    sum += (uint64_t)(rt_int_value(w) * g_items + rt_int_value(i));
    ftm_decref(w);
    ftm_decref(i);
    ftm_decref(t);
  }
  CHECK(sum == (uint64_t)len * (len - 1) / 2);

  printf("rt_demo: %d threads x %d items\n", nthreads, g_items);
  printf("  shared list: %zu items, %zu bytes (ftm_sizeof), first: ", len, ftm_sizeof(g_shared));
  ftm_object *first = rt_list_get(g_shared, 0);
  rt_repr_file(first, stdout);
  ftm_decref(first);
  ftm_object *d = rt_dict_new(), *k = rt_str_from_cstr("items"), *v = rt_int_new((int64_t)len);
  rt_dict_set(d, k, v);
  rt_dict_set(d, v, g_names[0]);
  char buf[80], want1[40], want2[40];
  rt_repr(d, buf, sizeof buf);
  printf("\n  a dict: %s\n", buf);
  snprintf(want1, sizeof want1, "'items': %zu", len); /* entries print in table order */
  snprintf(want2, sizeof want2, "%zu: 'alpha'", len);
  CHECK(strstr(buf, want1) != NULL && strstr(buf, want2) != NULL);
  ftm_decref(k);
  ftm_decref(v);
  ftm_decref(d);
  ftm_decref(g_shared);

  /* objects other threads handed back to this one are merged (and freed)
   * at our next safepoint: take it now, then count */
  ftm_thread_flush();
  ftm_object_stats_get(&after);
  uint64_t created = after.created - before.created, freed = after.freed - before.freed;
  size_t immortal = rt_immortal_count() - immortal_before;
  print_stats("total", &after);
  printf("  immortal: %zu (%zu small ints, %zu interned strs); live: %" PRIu64 "\n", immortal,
         immortal - rt_str_intern_count(), rt_str_intern_count(), created - freed - immortal);
  CHECK(created - freed == immortal);
  CHECK(rt_str_intern_count() == NNAMES);
  int errors = atomic_load_explicit(&g_errors, memory_order_relaxed); /* threads joined */
  printf("rt_demo: %s\n", errors == 0 ? "OK" : "FAIL");
  return errors == 0 ? 0 : 1;
}
