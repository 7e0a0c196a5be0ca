/* obj_util.h — what the object-layer stress programs (obj_*.c) share: a
 * registry that gives every test object an id and records its life
 * (alive, freed) outside ftmem's memory, the canary each object carries,
 * and the leak check every program ends with.
 *
 * Test objects embed an obj_stamp_t right after their ftm_object header:
 * {id, canary}.  The canary is keyed by (seed, id) while the object lives;
 * the type's dealloc checks it, moves the registry entry ALIVE -> FREED (a
 * second dealloc of the same object finds FREED and fails) and poisons the
 * canary.  A thread that holds a reference checks both the canary and the
 * registry entry, so an object whose dealloc ran (or whose memory was
 * reused for another object) is caught the moment it is looked at.  The
 * registry is libc memory: it never moves, is never reused, and does not
 * show in ftmem's statistics.
 *
 * Header-only (static inline) so that each program stays one .c file.
 */
#ifndef FTMEM_OBJ_UTIL_H
#define FTMEM_OBJ_UTIL_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stress_util.h"

#define OBJ_UNUSED 0
#define OBJ_ALIVE 1
#define OBJ_FREED 2
#define OBJ_POISON 0xdeadbeefdeadbeefull

typedef struct obj_stamp_s {
    uint64_t id;
    uint64_t canary;
} obj_stamp_t;

typedef struct obj_registry_s {
    _Atomic uint8_t *state; /* per id: OBJ_UNUSED / OBJ_ALIVE / OBJ_FREED */
    uint64_t cap;
    uint64_t seed;
    _Atomic uint64_t next_id;  /* relaxed: hands out ids only */
    _Atomic uint64_t deallocs; /* relaxed: read after every thread is joined */
} obj_registry_t;

static obj_registry_t obj_reg;

static inline void obj_registry_init(uint64_t seed, uint64_t cap)
{
    obj_reg.state = calloc((size_t)cap, sizeof *obj_reg.state);
    if (obj_reg.state == NULL)
        stress_fail("out of memory for the object registry (%llu entries)",
                    (unsigned long long)cap);
    obj_reg.cap = cap;
    obj_reg.seed = seed;
    atomic_init(&obj_reg.next_id, 0);
    atomic_init(&obj_reg.deallocs, 0);
}

static inline uint64_t obj_canary(uint64_t id)
{
    uint64_t c = stress_key3(obj_reg.seed, id, 0xca9a41);
    return c == OBJ_POISON ? c ^ 1 : c;
}

static inline uint64_t obj_ids_used(void)
{
    return atomic_load_explicit(&obj_reg.next_id, memory_order_relaxed);
}

/* A fresh object's stamp: a new id, registered ALIVE. */
static inline uint64_t obj_stamp_init(obj_stamp_t *s)
{
    uint64_t id = atomic_fetch_add_explicit(&obj_reg.next_id, 1, memory_order_relaxed);
    if (id >= obj_reg.cap)
        stress_fail("harness: more than %llu objects (registry too small)",
                    (unsigned long long)obj_reg.cap);
    uint8_t st = atomic_load_explicit(&obj_reg.state[id], memory_order_relaxed);
    if (st != OBJ_UNUSED)
        stress_fail("harness: registry entry %llu in state %u at creation",
                    (unsigned long long)id, st);
    /* relaxed: published with the object itself (queue, field, join) */
    atomic_store_explicit(&obj_reg.state[id], OBJ_ALIVE, memory_order_relaxed);
    s->id = id;
    s->canary = obj_canary(id);
    return id;
}

/* The caller holds a reference: the object must be alive and intact. */
static inline void obj_stamp_check(const obj_stamp_t *s, const char *what)
{
    uint64_t id = s->id;
    if (id >= obj_reg.cap)
        stress_fail("%s: object %p has id %llu beyond every id handed out (memory reused or "
                    "corrupted; canary %016llx)",
                    what, (const void *)s, (unsigned long long)id,
                    (unsigned long long)s->canary);
    if (s->canary != obj_canary(id))
        stress_fail("%s: object %llu at %p: canary %016llx, expected %016llx%s", what,
                    (unsigned long long)id, (const void *)s, (unsigned long long)s->canary,
                    (unsigned long long)obj_canary(id),
                    s->canary == OBJ_POISON ? " (poisoned: its dealloc ran)" : "");
    /* acquire: pairs with the acq_rel CAS in obj_stamp_kill (a freed object
     * shows as FREED here if the dealloc happened before) */
    uint8_t st = atomic_load_explicit(&obj_reg.state[id], memory_order_acquire);
    if (st != OBJ_ALIVE)
        stress_fail("%s: object %llu at %p is %s while a reference to it is held", what,
                    (unsigned long long)id, (const void *)s,
                    st == OBJ_FREED ? "FREED (its dealloc ran)" : "not registered");
}

/* From a type's dealloc: alive and intact, now freed exactly once. */
static inline void obj_stamp_kill(obj_stamp_t *s, const char *what)
{
    uint64_t id = s->id;
    if (id >= obj_reg.cap || s->canary != obj_canary(id))
        stress_fail("%s: dealloc of object %p with id %llu and canary %016llx (expected "
                    "%016llx): a second dealloc, or corrupted memory",
                    what, (void *)s, (unsigned long long)id, (unsigned long long)s->canary,
                    id < obj_reg.cap ? (unsigned long long)obj_canary(id) : 0ull);
    uint8_t exp = OBJ_ALIVE;
    /* acq_rel: orders the poisoning below after every earlier check of a
     * holder (they synchronise with the dealloc through the refcount) and
     * publishes FREED */
    if (!atomic_compare_exchange_strong_explicit(&obj_reg.state[id], &exp, OBJ_FREED,
                                                 memory_order_acq_rel, memory_order_acquire))
        stress_fail("%s: dealloc of object %llu, which is in state %u (freed twice?)", what,
                    (unsigned long long)id, exp);
    s->canary = OBJ_POISON;
    atomic_fetch_add_explicit(&obj_reg.deallocs, 1, memory_order_relaxed);
}

static inline uint8_t obj_state(uint64_t id)
{
    return atomic_load_explicit(&obj_reg.state[id], memory_order_acquire);
}

/* Every id handed out must be FREED, except `keep` of them (immortal
 * objects) which must be ALIVE; deallocs must match. */
static inline void obj_registry_expect_all_freed(uint64_t keep, const char *when)
{
    uint64_t n = obj_ids_used(), alive = 0, freed = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint8_t st = obj_state(i);
        if (st == OBJ_ALIVE)
            alive++;
        else if (st == OBJ_FREED)
            freed++;
        else
            stress_fail("%s: object %llu never registered", when, (unsigned long long)i);
    }
    if (alive != keep)
        stress_fail("%s: %llu of %llu objects never freed (expected %llu to stay)", when,
                    (unsigned long long)alive, (unsigned long long)n, (unsigned long long)keep);
    uint64_t d = atomic_load_explicit(&obj_reg.deallocs, memory_order_relaxed);
    if (d != freed)
        stress_fail("%s: %llu deallocs counted for %llu freed objects", when,
                    (unsigned long long)d, (unsigned long long)freed);
}

/* ---- The leak check --------------------------------------------------------
 * obj_baseline() is taken on the main thread once the object layer is warm
 * (the main thread registered, its lazily created tables made), after
 * ftm_thread_flush() and ftm_collect(true).  obj_leak_check() at the end,
 * after every worker is joined:
 *   - ftm_thread_flush() on the main thread (its queue, deferred counts,
 *     epoch bags), then ftm_object_stats_get: objects created == freed
 *     (+ `immortal`, objects that are never freed by design), nothing
 *     waiting for a grace period, no thread state registered but main's;
 *   - ftm_collect(true), then ftm_stats_get: live_count exactly the
 *     baseline (+ `extra_blocks`: the immortal objects), malloc and free
 *     counts agree, no large block left, no more thread heaps than at the
 *     start, at most `abandoned_allow` pools of exited threads not yet
 *     adopted and at most `slice_allow` 64 KiB slices in use beyond the
 *     baseline.
 * The allowances: after ftm_collect(true) every slice still in use holds a
 * live block (the calling thread's empty pools and the empty pools of dead
 * threads are freed).  The live blocks are the baseline's plus the
 * immortals; but blocks the library keeps for itself can be *replaced*
 * during the run by a thread that then exits — a ck_hs slot array grown by
 * a worker (weakref side table, 64 stripes; intern shards), the main
 * thread's per-thread arrays reallocated — and the new block pins a slice
 * the baseline did not use, in an abandoned pool if its allocator exited.
 * Each program passes what its run can replace; 16 slices (1 MiB: two
 * pools of the largest, 8-slice span) is the slack common to all for the
 * main thread's own arrays. */
typedef struct obj_base_s {
    ftm_stats_t mem;
    ftm_object_stats_t obj;
} obj_base_t;

#define OBJ_SLICE_SLACK 16

static inline void obj_baseline(obj_base_t *b)
{
    ftm_thread_flush();
    ftm_collect(true);
    stress_stats(&b->mem);
    ftm_object_stats_get(&b->obj);
}

static inline void obj_leak_check(const obj_base_t *b, uint64_t immortal,
                                  unsigned long long abandoned_allow,
                                  unsigned long long slice_allow, const char *when)
{
    ftm_thread_flush();
    ftm_object_stats_t os;
    ftm_object_stats_get(&os);
    uint64_t created = os.created - b->obj.created, freed = os.freed - b->obj.freed;
    if (created != freed + immortal)
        stress_fail("%s: ftm_object_stats: %llu objects created, %llu freed since the "
                    "baseline (expected %llu never freed)",
                    when, (unsigned long long)created, (unsigned long long)freed,
                    (unsigned long long)immortal);
    if (os.deferred_pending != 0)
        stress_fail("%s: ftm_object_stats: %llu blocks still waiting for a grace period "
                    "after every thread exited and ftm_thread_flush",
                    when, (unsigned long long)os.deferred_pending);
    if (os.threads != b->obj.threads)
        stress_fail("%s: ftm_object_stats: %llu thread states registered, %llu at the "
                    "baseline (every worker has exited)",
                    when, (unsigned long long)os.threads, (unsigned long long)b->obj.threads);

    ftm_collect(true);
    ftm_stats_t s;
    stress_stats(&s);
    unsigned long long mallocs = s.malloc_count - b->mem.malloc_count;
    unsigned long long frees = s.free_count - b->mem.free_count;
    if (s.live_count != b->mem.live_count + immortal)
        stress_fail("%s: ftm_stats live_count = %llu, expected the baseline %llu + %llu "
                    "immortal objects (%llu blocks handed out and %llu freed since)",
                    when, s.live_count, b->mem.live_count, (unsigned long long)immortal,
                    mallocs, frees);
    if (mallocs != frees + immortal)
        stress_fail("%s: %llu blocks handed out, %llu freed since the baseline", when,
                    mallocs, frees);
    if (s.large_count != b->mem.large_count)
        stress_fail("%s: ftm_stats large_count = %llu, baseline %llu", when, s.large_count,
                    b->mem.large_count);
    if (s.threads > b->mem.threads)
        stress_fail("%s: %llu thread heaps in use after every worker exited (baseline %llu)",
                    when, s.threads, b->mem.threads);
    if (s.abandoned_pools > abandoned_allow || s.pools > b->mem.pools + slice_allow)
        ftm_stats_print(stderr); /* for the report below */
    if (s.abandoned_pools > abandoned_allow)
        stress_fail("%s: %llu abandoned pools left after ftm_collect(true) (allowed %llu)",
                    when, s.abandoned_pools, abandoned_allow);
    if (s.pools > b->mem.pools + slice_allow)
        stress_fail("%s: %llu slices in use by pools after ftm_collect(true), baseline %llu "
                    "+ %llu allowed",
                    when, s.pools, b->mem.pools, slice_allow);
    stress_note("leak check %s: %llu objects created, %llu freed, %llu kept; live blocks "
                "%llu (baseline %llu); slices %llu (baseline %llu); abandoned pools %llu",
                when, (unsigned long long)created, (unsigned long long)freed,
                (unsigned long long)immortal, s.live_count, b->mem.live_count, s.pools,
                b->mem.pools, s.abandoned_pools);
}

/* Main thread: pthread_join is a blocking call, so detach around it (a
 * flush handshake or a merge for us must not wait on a blocked thread). */
static inline void obj_join_detached(pthread_t *t, int n)
{
    ftm_thread_detach();
    for (int i = 0; i < n; i++)
        stress_thread_join(t[i]);
    ftm_thread_attach();
}

#endif /* FTMEM_OBJ_UTIL_H */
