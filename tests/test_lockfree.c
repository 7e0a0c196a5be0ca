/* test_lockfree.c — the lock-free building blocks in lockfree/, each
 * against its contract table: the index-tagged Treiber stack and the
 * flagged remote-free list.  Single-threaded cases pin the semantics
 * (order, flag transitions); the threaded cases check that every node
 * pushed is popped exactly once under contention.  (Internal headers: these
 * are the building blocks' own tests, not the public API's.) */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lockfree/remote_list.h"
#include "lockfree/tagged_stack.h"

/* ---- tagged stack ------------------------------------------------------- */
#define NODES 4096
static _Atomic uint32_t links[NODES + 1];
static _Atomic uint32_t *link_of(uint32_t index, void *ctx) {
  (void)ctx;
  return &links[index];
}

Test(tagged_stack, lifo_and_empty) {
  ftm_tstack_t s = FTM_TSTACK_INIT;
  cr_assert(ftm_tstack_is_empty(&s));
  cr_assert_eq(ftm_tstack_pop_mpmc(&s, link_of, NULL), 0);
  for (uint32_t i = 1; i <= 10; i++) ftm_tstack_push_mpmc(&s, i, &links[i]);
  cr_assert_not(ftm_tstack_is_empty(&s));
  for (uint32_t i = 10; i >= 1; i--) cr_assert_eq(ftm_tstack_pop_mpmc(&s, link_of, NULL), i);
  cr_assert(ftm_tstack_is_empty(&s));
}

Test(tagged_stack, tag_changes_on_every_operation) {
  ftm_tstack_t s = FTM_TSTACK_INIT;
  ftm_tstack_push_mpmc(&s, 7, &links[7]);
  uint64_t h1 = atomic_load(&s.xhead);
  cr_assert_eq(ftm_tstack_pop_mpmc(&s, link_of, NULL), 7);
  ftm_tstack_push_mpmc(&s, 7, &links[7]);
  uint64_t h2 = atomic_load(&s.xhead);
  /* same node on top, different tag: a stale pop's CAS (ABA) must fail */
  cr_assert_eq((uint32_t)h1, (uint32_t)h2);
  cr_assert_neq(h1 >> 32, h2 >> 32);
}

static ftm_tstack_t shared_stack = FTM_TSTACK_INIT;
static _Atomic int popped_count[NODES + 1];

/* Each worker pops nodes and pushes them back many times (the ABA
 * pattern), then pops its share for good. */
static void *stack_worker(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg;
  for (int round = 0; round < 20000; round++) {
    uint32_t a = ftm_tstack_pop_mpmc(&shared_stack, link_of, NULL);
    uint32_t b = ftm_tstack_pop_mpmc(&shared_stack, link_of, NULL);
    if (rand_r(&seed) & 1) {
      if (a) ftm_tstack_push_mpmc(&shared_stack, a, &links[a]);
      if (b) ftm_tstack_push_mpmc(&shared_stack, b, &links[b]);
    } else {
      if (b) ftm_tstack_push_mpmc(&shared_stack, b, &links[b]);
      if (a) ftm_tstack_push_mpmc(&shared_stack, a, &links[a]);
    }
  }
  return NULL;
}

Test(tagged_stack, every_node_exactly_once_under_contention) {
  for (uint32_t i = 1; i <= NODES; i++) ftm_tstack_push_mpmc(&shared_stack, i, &links[i]);
  pthread_t t[4];
  for (uintptr_t i = 0; i < 4; i++) pthread_create(&t[i], NULL, stack_worker, (void *)(i + 1));
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  uint32_t idx, n = 0;
  while ((idx = ftm_tstack_pop_mpmc(&shared_stack, link_of, NULL)) != 0) {
    cr_assert(idx >= 1 && idx <= NODES, "popped index %u out of range", idx);
    cr_assert_eq(atomic_fetch_add(&popped_count[idx], 1), 0, "node %u popped twice", idx);
    n++;
  }
  cr_assert_eq(n, NODES, "%u of %u nodes came back", n, NODES);
}

/* ---- remote-free list ----------------------------------------------------- */
typedef struct {
  ftm_rl_node_t node;
  uint64_t pad; /* 16-byte nodes, as blocks are */
} __attribute__((aligned(16))) rl_block;

Test(remote_list, push_take_keeps_every_node) {
  ftm_remote_list_t l = {0};
  rl_block b[3];
  cr_assert_null(ftm_rl_take_local(&l));
  for (int i = 0; i < 3; i++) cr_assert_not(ftm_rl_push_remote(&l, &b[i].node, NULL, NULL));
  ftm_rl_node_t *n = ftm_rl_take_local(&l);
  cr_assert_eq(n, &b[2].node);
  cr_assert_eq(n->next, &b[1].node);
  cr_assert_eq(n->next->next, &b[0].node);
  cr_assert_null(n->next->next->next);
  cr_assert_null(ftm_rl_take_local(&l));
}

Test(remote_list, full_flag_protocol) {
  ftm_remote_list_t l = {0};
  rl_block b[3];
  /* FULL only on an empty, flag-free word */
  cr_assert(ftm_rl_set_full_local(&l));
  cr_assert_eq(ftm_rl_flags(&l), FTM_RL_FULL);
  cr_assert_not(ftm_rl_set_full_local(&l));
  /* the push that clears FULL must notify, and sets NOTIFYING */
  cr_assert(ftm_rl_push_remote(&l, &b[0].node, NULL, NULL));
  cr_assert_eq(ftm_rl_flags(&l), FTM_RL_NOTIFYING);
  /* later pushes do not notify again and keep the flag */
  cr_assert_not(ftm_rl_push_remote(&l, &b[1].node, NULL, NULL));
  cr_assert_eq(ftm_rl_flags(&l), FTM_RL_NOTIFYING);
  /* taking the list keeps the flag; a flagged word cannot be parked */
  ftm_rl_node_t *n = ftm_rl_take_local(&l);
  cr_assert_eq(n, &b[1].node);
  cr_assert_eq(ftm_rl_flags(&l), FTM_RL_NOTIFYING);
  cr_assert_not(ftm_rl_set_full_local(&l));
  ftm_rl_clear_flags_local(&l, FTM_RL_NOTIFYING);
  cr_assert_eq(ftm_rl_flags(&l), 0);
  cr_assert(ftm_rl_set_full_local(&l));
}

static uintptr_t xor_link(uintptr_t next, void *ctx) { return next ^ (uintptr_t)ctx; }

Test(remote_list, encoded_links) {
  ftm_remote_list_t l = {0};
  rl_block b[2];
  void *key = (void *)(uintptr_t)0x5a5a5a5a0ull;
  ftm_rl_push_remote(&l, &b[0].node, xor_link, key);
  ftm_rl_push_remote(&l, &b[1].node, xor_link, key);
  ftm_rl_node_t *n = ftm_rl_take_local(&l);
  cr_assert_eq(n, &b[1].node);
  cr_assert_eq((uintptr_t)n->next ^ (uintptr_t)key, (uintptr_t)&b[0].node);
}

#define RL_PER_THREAD 50000
static ftm_remote_list_t shared_list;
static rl_block *rl_nodes;
static _Atomic int rl_notifies;

static void *rl_pusher(void *arg) {
  rl_block *mine = &rl_nodes[(uintptr_t)arg * RL_PER_THREAD];
  for (int i = 0; i < RL_PER_THREAD; i++)
    if (ftm_rl_push_remote(&shared_list, &mine[i].node, NULL, NULL)) atomic_fetch_add(&rl_notifies, 1);
  return NULL;
}

Test(remote_list, many_pushers_one_owner) {
  rl_nodes = calloc(4 * RL_PER_THREAD, sizeof *rl_nodes);
  char *seen = calloc(4 * RL_PER_THREAD, 1);
  pthread_t t[4];
  for (uintptr_t i = 0; i < 4; i++) pthread_create(&t[i], NULL, rl_pusher, (void *)i);
  size_t got = 0;
  int parks = 0;
  while (got < 4 * RL_PER_THREAD) {
    ftm_rl_node_t *n = ftm_rl_take_local(&shared_list);
    if (n == NULL) {
      /* the owner parks the list now and then; a pusher must then notify */
      if (ftm_rl_set_full_local(&shared_list)) parks++;
      else if (ftm_rl_flags(&shared_list) & FTM_RL_NOTIFYING)
        ftm_rl_clear_flags_local(&shared_list, FTM_RL_NOTIFYING);
      continue;
    }
    for (; n; n = n->next) {
      size_t k = (size_t)((rl_block *)n - rl_nodes);
      cr_assert(k < 4 * RL_PER_THREAD);
      cr_assert_eq(seen[k], 0, "node %zu taken twice", k);
      seen[k] = 1;
      got++;
    }
  }
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  cr_assert_null(ftm_rl_take_local(&shared_list));
  /* every park was ended by exactly one notifying push (or is still open) */
  int open = (ftm_rl_flags(&shared_list) & FTM_RL_FULL) ? 1 : 0;
  cr_assert_eq(atomic_load(&rl_notifies) + open, parks, "notifies %d + open %d != parks %d",
               atomic_load(&rl_notifies), open, parks);
  free(seen);
  free(rl_nodes);
}
