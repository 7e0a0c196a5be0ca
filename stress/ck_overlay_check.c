/* ck_overlay_check.c — proof that the ck TSan overlay works
 * (cmake/ck_tsan_overlay.cmake), and a functional check of ck_stack.
 *
 * Each thread has a stack; threads push nodes onto other threads' stacks
 * with ck_stack_push_upmc and take a whole stack (mostly their own) with
 * ck_stack_batch_pop_upmc.  A popper checks each node's payload (written by
 * the thread that pushed it), rewrites it and pushes the node on again,
 * until every node has gone round max_gen times.  The only synchronisation
 * between pusher and popper is the stack itself (the counters below are
 * relaxed, which TSan does not count as synchronisation), so:
 *   - built with the overlay (FTMEM_EXPECT_CK_OVERLAY), TSan must report
 *     nothing: the push's CAS and the pop's exchange are visible builtins;
 *   - built against the stock headers in a TSan build (the _stock target),
 *     TSan reports data races on the payload: ck's inline-asm CAS is
 *     invisible to it.  ctest expects those reports (a negative control:
 *     if it ever stops reporting, this check proves nothing any more).
 * In every build the results are checked: each node popped exactly as many
 * times as it was pushed, each payload intact, the stack empty at the end.
 */
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <ck_pr.h>
#include <ck_stack.h>

#include "stress_util.h"

#ifdef FTMEM_EXPECT_CK_OVERLAY
#ifndef FTMEM_CK_TSAN_OVERLAY
#error "the ck TSan overlay's gcc/ck_pr.h was not the one included"
#endif
#if !CK_USE_CC_BUILTINS
#error "the ck TSan overlay needs CK_USE_CC_BUILTINS=1"
#endif
#define HEADERS "overlay"
#else
#define HEADERS "stock"
#endif

typedef struct node_s {
    ck_stack_entry_t entry; /* first: a node is its entry */
    uint64_t id;
    uint64_t gen;   /* times pushed again; written by the last popper */
    uint64_t value; /* stress_key3(seed, id, gen) */
    int pusher;     /* index of the thread that pushed it last */
} node_t;

typedef struct worker_s {
    int index;
    pthread_t thread;
    uint32_t *pushes, *pops; /* per node, this thread's own counts */
    unsigned long long handoffs; /* pops of a node another thread pushed */
} worker_t;

static stress_opts_t opt = { .name = "ck_overlay_check" };
static ck_stack_t *stacks; /* one per thread, pushed to by all the others */
static node_t *nodes;
static size_t nnodes;
static uint64_t max_gen;
static _Atomic size_t retired; /* relaxed only: must not synchronise */
static pthread_barrier_t start;

/* Pushes n onto another thread's stack (its own only when alone). */
static void push(worker_t *w, node_t *n, stress_rng_t *r)
{
    int to = w->index;
    if (opt.threads > 1)
        to = (w->index + 1 + (int)stress_below(r, (uint64_t)opt.threads - 1)) % opt.threads;
    n->value = stress_key3(opt.seed, n->id, n->gen);
    n->pusher = w->index;
    w->pushes[n->id]++;
    ck_stack_push_upmc(&stacks[to], &n->entry);
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    /* Everyone starts together, and nothing is pushed before the barrier
     * (which synchronises): the stack is the only channel between threads. */
    pthread_barrier_wait(&start);
    stress_rng_t r = stress_rng(opt.seed, (uint64_t)w->index);
    for (size_t i = (size_t)w->index; i < nnodes; i += (size_t)opt.threads)
        push(w, &nodes[i], &r);
    while (atomic_load_explicit(&retired, memory_order_relaxed) < nnodes) {
        /* Mostly our own stack; sometimes another's (several poppers). */
        int from = stress_one_in(&r, 4) ? (int)stress_below(&r, (uint64_t)opt.threads)
                                         : w->index;
        ck_stack_entry_t *e = ck_stack_batch_pop_upmc(&stacks[from]);
        if (e == NULL) {
            sched_yield();
            continue;
        }
        while (e != NULL) {
            node_t *n = (node_t *)e;
            e = e->next; /* before the node is pushed again */
            if (n < nodes || n >= nodes + nnodes)
                stress_fail("popped %p, which is no node", (void *)n);
            w->pops[n->id]++;
            w->handoffs += n->pusher != w->index;
            if (n->value != stress_key3(opt.seed, n->id, n->gen))
                stress_fail("node %llu generation %llu: payload %#llx is wrong",
                            (unsigned long long)n->id, (unsigned long long)n->gen,
                            (unsigned long long)n->value);
            if (n->gen == max_gen) {
                atomic_fetch_add_explicit(&retired, 1, memory_order_relaxed);
            } else {
                n->gen++;
                push(w, n, &r);
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    stress_parse(&opt, argc, argv, 4, NULL);
    nnodes = (size_t)opt.threads * (opt.smoke ? 64 : 512);
    max_gen = opt.smoke ? 100 : 2000;
    nodes = ftm_calloc(nnodes, sizeof *nodes);
    stacks = ftm_calloc((size_t)opt.threads, sizeof *stacks); /* all empty (NULL) */
    worker_t *w = calloc((size_t)opt.threads, sizeof *w);
    if (nodes == NULL || stacks == NULL || w == NULL)
        stress_fail("out of memory");
    for (size_t i = 0; i < nnodes; i++)
        nodes[i].id = i;
    pthread_barrier_init(&start, NULL, (unsigned)opt.threads);
    double t0 = stress_now();
    for (int i = 0; i < opt.threads; i++) {
        w[i].index = i;
        w[i].pushes = calloc(nnodes, sizeof *w[i].pushes);
        w[i].pops = calloc(nnodes, sizeof *w[i].pops);
        if (w[i].pushes == NULL || w[i].pops == NULL)
            stress_fail("out of memory");
    }
    for (int i = 0; i < opt.threads; i++)
        stress_thread_start(&w[i].thread, worker_main, &w[i]);
    for (int i = 0; i < opt.threads; i++)
        stress_thread_join(w[i].thread);

    for (int i = 0; i < opt.threads; i++)
        if (ck_pr_load_ptr(&stacks[i].head) != NULL)
            stress_fail("stack %d is not empty at the end", i);
    if (atomic_load(&retired) != nnodes)
        stress_fail("%zu nodes retired, expected %zu", atomic_load(&retired), nnodes);
    unsigned long long total = 0, handoffs = 0;
    for (int i = 0; i < opt.threads; i++)
        handoffs += w[i].handoffs;
    for (size_t id = 0; id < nnodes; id++) {
        uint64_t pu = 0, po = 0;
        for (int i = 0; i < opt.threads; i++) {
            pu += w[i].pushes[id];
            po += w[i].pops[id];
        }
        if (pu != max_gen + 1 || po != pu)
            stress_fail("node %zu pushed %llu times and popped %llu times, expected %llu "
                        "of each (a node lost or popped twice)",
                        id, (unsigned long long)pu, (unsigned long long)po,
                        (unsigned long long)(max_gen + 1));
        if (nodes[id].gen != max_gen)
            stress_fail("node %zu ended at generation %llu", id,
                        (unsigned long long)nodes[id].gen);
        total += po;
    }
    /* Without handoffs between threads no stack was ever shared and the
     * run proved nothing (neither the overlay nor the negative control). */
    if (opt.threads > 1 && handoffs == 0)
        stress_fail("no node was ever popped by a thread other than its pusher");
    stress_note("OK (%s ck headers): %llu pushes and pops of %zu nodes, %llu of them handed "
                "from one thread to another, %.2f s",
                HEADERS, total, nnodes, handoffs, stress_now() - t0);
    for (int i = 0; i < opt.threads; i++) {
        free(w[i].pushes);
        free(w[i].pops);
    }
    free(w);
    ftm_free(nodes);
    ftm_free(stacks);
    pthread_barrier_destroy(&start);
    return 0;
}
