/* lockfree/remote_list.h — the remote-free list of a pool (MPSC, flagged).
 *
 * Any thread pushes a freed block with one CAS; the owning thread takes the
 * whole list with one exchange.  The two low bits of the head word carry
 * state that must change atomically with a push (blocks are 16-byte aligned
 * so the bits are free):
 *   FULL      — the owner parked the pool as full; the pusher that clears it
 *               must tell the owner (push the pool on the owner's notify list)
 *   NOTIFYING — the pool is on (or being put on) the owner's notify list;
 *               only the owner clears it, after taking the pool off the list
 *
 * Contract:
 * | operation         | callers at once | notes                                     |
 * |-------------------|-----------------|-------------------------------------------|
 * | push_remote       | any             | returns true if it cleared FULL (notify!) |
 * | take_local        | owner only      | keeps the flag bits                       |
 * | set_full_local    | owner only      | only if the list is empty and no flags    |
 * | clear_flags_local | owner only      |                                           |
 * Written by hand: the flag bits must change in the same CAS as the push,
 * which neither ck_stack nor liburcu's wfstack offers.
 */
#ifndef FTM_LOCKFREE_REMOTE_LIST_H
#define FTM_LOCKFREE_REMOTE_LIST_H

#include "lockfree/atomic.h"

#define FTM_RL_FULL ((uintptr_t)1)
#define FTM_RL_NOTIFYING ((uintptr_t)2)
#define FTM_RL_FLAGS ((uintptr_t)3)

typedef struct ftm_rl_node_s {
  struct ftm_rl_node_s *next;
} ftm_rl_node_t;

typedef struct ftm_remote_list_s {
  _Atomic uintptr_t xhead;
} ftm_remote_list_t;

/* Push one node; `encode` lets the caller store an encoded next link. */
static inline bool ftm_rl_push_remote(ftm_remote_list_t *l, ftm_rl_node_t *n,
                                      uintptr_t (*encode)(uintptr_t, void *), void *ctx) {
  uintptr_t head = ftm_atomic_load_relaxed(&l->xhead);
  uintptr_t next;
  do {
    uintptr_t below = head & ~FTM_RL_FLAGS;
    n->next = (ftm_rl_node_t *)(encode ? encode(below, ctx) : below);
    next = (uintptr_t)n | (head & FTM_RL_FLAGS);
    if (head & FTM_RL_FULL) next = (uintptr_t)n | FTM_RL_NOTIFYING;
    /* acq_rel: release makes the node's link and the block's last writes
     * visible to the owner's acquire in take_local; acquire (when FULL is
     * seen) pairs with the owner's set_full_local, so the pusher then reads
     * the owner's heap pointer as the owner wrote it */
  } while (!ftm_atomic_cas_weak_acq_rel(&l->xhead, &head, next));
  return (head & FTM_RL_FULL) != 0;
}

/* Take every pushed node; returns the list (NULL if empty), flags kept. */
static inline ftm_rl_node_t *ftm_rl_take_local(ftm_remote_list_t *l) {
  uintptr_t head = ftm_atomic_load_relaxed(&l->xhead);
  if ((head & ~FTM_RL_FLAGS) == 0) return NULL;
  /* acq_rel CAS: the acquire pairs with the pushers' release CAS */
  while (!ftm_atomic_cas_weak_acq_rel(&l->xhead, &head, head & FTM_RL_FLAGS)) {
  }
  return (ftm_rl_node_t *)(head & ~FTM_RL_FLAGS);
}

/* Mark FULL if the list is empty and carries no flag; false otherwise. */
static inline bool ftm_rl_set_full_local(ftm_remote_list_t *l) {
  uintptr_t expect = 0;
  return ftm_atomic_cas_strong_acq_rel(&l->xhead, &expect, FTM_RL_FULL);
}

static inline void ftm_rl_clear_flags_local(ftm_remote_list_t *l, uintptr_t flags) {
  ftm_atomic_fetch_and_acq_rel(&l->xhead, ~flags);
}

static inline uintptr_t ftm_rl_flags(ftm_remote_list_t *l) {
  return ftm_atomic_load_acquire(&l->xhead) & FTM_RL_FLAGS;
}

#endif
