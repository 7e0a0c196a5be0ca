/* lockfree/tagged_stack.h — an index-tagged Treiber stack (MPMC).
 *
 * Nodes are named by a 32-bit index (0 is reserved for "empty") and keep
 * their link in an _Atomic uint32_t that the caller finds for an index.  The
 * head packs {tag:32, index:32} in one 64-bit word; every successful pop or
 * push bumps the tag, so the ABA interleaving (pop A, pop B, push A) makes a
 * stale pop's CAS fail.
 *
 * Why not ck_stack: its MPMC pop (ck_stack_pop_mpmc) needs a double-width
 * CAS (cmpxchg16b via ck_pr_cas_ptr_2), which ThreadSanitizer models poorly
 * and which is absent or slow on some targets.  ftmem's nodes (pools, heaps)
 * live in type-stable, never-unmapped memory and are addressable by a small
 * index, so a single-word tagged CAS suffices.  The stack is off the hot
 * path (pools of dead threads, recycled heaps).
 *
 * Contract:
 * | operation        | callers at once | needs                                  |
 * |------------------|-----------------|----------------------------------------|
 * | push_mpmc        | any             | caller owns the node                   |
 * | pop_mpmc         | any             | node memory stays readable forever     |
 * A popped node is owned by the popper.  A pop may read the link of a node
 * another thread popped meanwhile (the value is ignored when its CAS fails),
 * hence "readable forever": never unmap node memory (zeroing it is fine).
 */
#ifndef FTM_LOCKFREE_TAGGED_STACK_H
#define FTM_LOCKFREE_TAGGED_STACK_H

#include "lockfree/atomic.h"

typedef struct ftm_tstack_s {
  _Atomic uint64_t xhead; /* high 32 bits: tag; low 32 bits: index (0: empty) */
} ftm_tstack_t;

#define FTM_TSTACK_INIT {0}

/* Returns the link cell of node `index`. */
typedef _Atomic uint32_t *(*ftm_tstack_link_fn)(uint32_t index, void *ctx);

static inline void ftm_tstack_push_mpmc(ftm_tstack_t *s, uint32_t index, _Atomic uint32_t *link) {
  uint64_t head = ftm_atomic_load_relaxed(&s->xhead);
  uint64_t next;
  do {
    ftm_atomic_store_relaxed(link, (uint32_t)head);
    next = ((head >> 32) + 1) << 32 | index;
    /* release: pairs with the acquire of pop's load/CAS, so the popper sees
     * the node's contents as the pusher left them */
  } while (!ftm_atomic_cas_weak_acq_rel(&s->xhead, &head, next));
}

static inline uint32_t ftm_tstack_pop_mpmc(ftm_tstack_t *s, ftm_tstack_link_fn link_of, void *ctx) {
  /* acquire: pairs with the release CAS of push */
  uint64_t head = ftm_atomic_load_acquire(&s->xhead);
  for (;;) {
    uint32_t index = (uint32_t)head;
    if (index == 0) return 0;
    uint32_t below = ftm_atomic_load_relaxed(link_of(index, ctx));
    uint64_t next = ((head >> 32) + 1) << 32 | below;
    if (ftm_atomic_cas_weak_acq_rel(&s->xhead, &head, next)) return index;
  }
}

static inline bool ftm_tstack_is_empty(ftm_tstack_t *s) {
  return (uint32_t)ftm_atomic_load_relaxed(&s->xhead) == 0;
}

#endif
