/* track_prog.c — a program with one memory bug per mode, for the
 * FTMEM_TRACK builds: run under Valgrind memcheck (FTMEM_TRACK=valgrind) or
 * built with ASan (FTMEM_TRACK=asan), the tool must report the bug even
 * though the memory is ftmem's.  Mode `clean` does a bit of everything
 * correctly — from two threads, through malloc, objects and the collector —
 * and the tool must report nothing: that checks ftmem's own accesses to
 * the blocks it keeps noaccess.
 *
 *   track_prog clean | uaf | overflow | leak | uninit | object_uaf |
 *              double_free | realloc_uaf | usable
 * Prints "track: <mode> done" when it reaches its end.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftmem.h"
#include "rt.h"

static volatile uint8_t sink; /* keeps the faulting loads */

#define CHECK(c)                                                      \
  do {                                                                \
    if (!(c)) {                                                       \
      fprintf(stderr, "track: FAIL %s:%d: %s\n", __FILE__, __LINE__, #c); \
      exit(2);                                                        \
    }                                                                 \
  } while (0)

/* ---- clean: everything correct, the tool must stay silent ---------------- */
#define SLOTS 64
static void *remote_blocks[SLOTS];
static size_t remote_sizes[SLOTS];

static void *remote_freer(void *arg) {
  (void)arg;
  for (int i = 0; i < SLOTS; i++) {
    uint8_t *p = remote_blocks[i];
    for (size_t j = 0; j < remote_sizes[i]; j++) CHECK(p[j] == (uint8_t)(i + j));
    ftm_free(p); /* a remote free: ftmem writes the link of a poisoned block */
  }
  /* and blocks of this thread's own, freed by main after it exits */
  for (int i = 0; i < SLOTS; i++) {
    remote_sizes[i] = 1 + (size_t)i * 37 % 700;
    remote_blocks[i] = ftm_malloc(remote_sizes[i]);
    CHECK(remote_blocks[i] != NULL);
    memset(remote_blocks[i], 0x5a, remote_sizes[i]);
  }
  return NULL;
}

static void clean(void) {
  /* sizes across small, medium and large; contents checked (a branch on
   * a byte memcheck thinks undefined would be reported) */
  static const size_t sizes[] = {1, 7, 16, 24, 100, 512, 513, 4000, 70000, 300000, 3 << 20};
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
    size_t n = sizes[k];
    uint8_t *p = ftm_malloc(n);
    CHECK(p != NULL);
    memset(p, (int)k, n);
    CHECK(ftm_usable_size(p) >= n);
    uint8_t *z = ftm_calloc(n, 1);
    CHECK(z != NULL);
    for (size_t j = 0; j < n; j += 97) CHECK(z[j] == 0);
    /* realloc up and down keeps the prefix */
    uint8_t *q = ftm_realloc(p, n * 2 + 5);
    CHECK(q != NULL);
    for (size_t j = 0; j < n; j += 31) CHECK(q[j] == (uint8_t)k);
    q = ftm_realloc(q, n / 2 + 1);
    CHECK(q != NULL);
    for (size_t j = 0; j < n / 2 + 1; j += 31) CHECK(q[j] == (uint8_t)k);
    ftm_free(q);
    ftm_free(z);
    void *a = ftm_aligned_alloc(4096, n);
    CHECK(a != NULL && ((uintptr_t)a & 4095) == 0);
    memset(a, 1, n);
    ftm_free(a);
  }
  /* many blocks of one class: carving, free lists, reuse */
  void *v[2000];
  for (int r = 0; r < 3; r++) {
    for (int i = 0; i < 2000; i++) {
      v[i] = ftm_malloc(48);
      CHECK(v[i] != NULL);
      memset(v[i], i, 48);
    }
    for (int i = 0; i < 2000; i += 2) ftm_free(v[i]);
    for (int i = 1; i < 2000; i += 2) {
      CHECK(((uint8_t *)v[i])[47] == (uint8_t)i);
      ftm_free(v[i]);
    }
  }
  /* cross-thread frees both ways */
  for (int i = 0; i < SLOTS; i++) {
    remote_sizes[i] = 1 + (size_t)i * 53 % 2000;
    uint8_t *p = ftm_malloc(remote_sizes[i]);
    CHECK(p != NULL);
    for (size_t j = 0; j < remote_sizes[i]; j++) p[j] = (uint8_t)(i + j);
    remote_blocks[i] = p;
  }
  pthread_t t;
  CHECK(pthread_create(&t, NULL, remote_freer, NULL) == 0);
  CHECK(pthread_join(t, NULL) == 0);
  for (int i = 0; i < SLOTS; i++) {
    CHECK(((uint8_t *)remote_blocks[i])[remote_sizes[i] - 1] == 0x5a);
    ftm_free(remote_blocks[i]);
  }
  /* objects: containers, cycles, the collector, weak references */
  ftm_object *keep = rt_list_new();
  CHECK(keep != NULL);
  for (int i = 0; i < 500; i++) {
    ftm_object *d = rt_dict_new();
    ftm_object *l = rt_list_new();
    ftm_object *k = rt_int_new(1000 + i);
    CHECK(d && l && k);
    CHECK(rt_dict_set(d, k, l) == 0);
    CHECK(rt_list_append(l, d) == 0); /* a cycle */
    ftm_object *s = rt_str_from_cstr("tracked");
    CHECK(rt_list_append(l, s) == 0);
    if (i % 10 == 0) CHECK(rt_list_append(keep, l) == 0);
    ftm_decref(s);
    ftm_decref(k);
    ftm_decref(l);
    ftm_decref(d);
  }
  CHECK(ftm_gc_collect(2) >= 0);
  CHECK(rt_list_len(keep) == 50);
  ftm_decref(keep);
  CHECK(ftm_gc_collect(2) >= 0);
  ftm_thread_flush();
  ftm_collect(true);
}

/* ---- one bug each -------------------------------------------------------- */
static void uaf(void) {
  uint8_t *p = ftm_malloc(24);
  memset(p, 1, 24);
  ftm_free(p);
  sink = p[0]; /* read after free */
}

static void overflow(void) {
  uint8_t *p = ftm_malloc(13); /* a 16-byte block: 3 bytes of slack */
  memset(p, 1, 13);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds" /* the bug on purpose */
#pragma GCC diagnostic ignored "-Wstringop-overflow"
  p[13] = 2; /* one past the request, inside the block */
#pragma GCC diagnostic pop
  ftm_free(p);
}

/* no copy of the pointer may survive on the stack or in a register for
 * the leak checker to find: allocate in a frame of its own, then scrub */
static __attribute__((noinline)) void leak_one(void) {
  volatile uintptr_t p = (uintptr_t)ftm_malloc(40);
  memset((void *)p, 3, 40);
  p = 0;
}
static __attribute__((noinline)) void scrub_stack(void) {
  volatile char buf[16384];
  memset((char *)buf, 0, sizeof buf);
}
static void leak(void) {
  leak_one();
  scrub_stack();
}

static void uninit(void) {
  uint8_t *p = ftm_malloc(32);
  if (p[5] == 7) sink = 1; /* a branch on a byte never written */
  ftm_free(p);
}

/* 200 bytes: a size class ftmem's own bookkeeping does not use, so the
 * dead object's block is not handed out again before the bad read */
typedef struct big {
  ftm_object ob;
  int64_t value[22];
} big;
static ftm_type big_type = {.name = "big", .basic_size = sizeof(big)};

static void object_uaf(void) {
  big *o = (big *)ftm_new(&big_type);
  CHECK(o != NULL);
  o->value[0] = 42;
  volatile int64_t *body = &o->value[0];
  ftm_decref(&o->ob);  /* dies */
  ftm_thread_flush(); /* debug builds keep dead objects in a quarantine first */
  sink = (uint8_t)*body;
}

static void double_free(void) {
  void *p = ftm_malloc(64);
  ftm_free(p);
  ftm_free(p);
}

static void realloc_uaf(void) {
  uint8_t *p = ftm_malloc(20);
  memset(p, 1, 20);
  uint8_t *q = ftm_realloc(p, 24); /* tracked builds always move */
  CHECK(q != NULL && q[19] == 1);
  sink = p[0]; /* the old block is freed */
  ftm_free(q);
}

static void usable(void) {
  /* tracked builds answer the requested size, and the bytes up to it
   * are the program's (no report); the next byte is reported */
  uint8_t *p = ftm_malloc(100);
  size_t n = ftm_usable_size(p);
  fprintf(stderr, "track: usable_size(malloc(100)) = %zu\n", n); /* unbuffered: ASan aborts below */
  memset(p, 0, n);
  sink = p[n]; /* past the usable size */
  ftm_free(p);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "clean";
  if (!strcmp(mode, "clean")) clean();
  else if (!strcmp(mode, "uaf")) uaf();
  else if (!strcmp(mode, "overflow")) overflow();
  else if (!strcmp(mode, "leak")) leak();
  else if (!strcmp(mode, "uninit")) uninit();
  else if (!strcmp(mode, "object_uaf")) object_uaf();
  else if (!strcmp(mode, "double_free")) double_free();
  else if (!strcmp(mode, "realloc_uaf")) realloc_uaf();
  else if (!strcmp(mode, "usable")) usable();
  else {
    fprintf(stderr, "track: unknown mode %s\n", mode);
    return 2;
  }
  printf("track: %s done\n", mode);
  return 0;
}
