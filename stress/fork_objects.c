/* fork_objects.c — fork while other threads create, share and drop
 * objects; the child must find the object layer usable (DESIGN.md §4,
 * docs/objects.md "In a fork child").
 *
 * Parent: the main thread makes a shared array of containers ("cells",
 * four ftm_field slots each) and keeps nodes of its own.  Worker threads
 * create nodes (some holding a reference to another node, so deaths
 * cascade through clear), store, load and exchange them in the cells'
 * fields (the displaced value's reference is dropped by whichever thread
 * displaced it: cross-thread decrefs, queued merges), keep loaded nodes a
 * while and drop them later, make weak references to nodes they hold (half
 * with a callback), get through them and release them.  The main thread
 * replaces some of its nodes and forks, again and again, in the middle of
 * that.
 *
 * Each child (only the forking thread survives in it), under alarm():
 *   1. checks every node it inherited through its own references and the
 *      cells (canary, registry entry ALIVE);
 *   2. own work: makes cells, nodes and weak references of its own, with
 *      fields, exchanges, weakref gets, callbacks (weak references kept
 *      past their referent's death: callback exactly once, get NULL;
 *      released while the referent lives: never), ftm_malloc/ftm_free;
 *      drops everything, ftm_thread_flush(); then ftm_object_stats must
 *      show created == freed for exactly what it made (objects + weak
 *      references), and every object it made is FREED in the registry;
 *   3. forks a grandchild (single-threaded now) that does 2 and 4 on a
 *      smaller scale, and waits for it;
 *   4. drops what it inherited (the main thread's nodes, every cell slot),
 *      ftm_thread_flush(): created += 0 and freed += exactly the number of
 *      deallocs the registry saw (inherited nodes may stay alive: vanished
 *      workers still hold references nobody will ever drop);
 *   5. ftm_collect(true); ftm_stats live_count == malloc_count -
 *      free_count; _exit(0).
 * The parent checks each child's exit status with a deadline of its own
 * (a child stuck on a lock a vanished thread held is killed and reported).
 * At the end the workers exit, the main thread drops everything, and the
 * object leak check of obj_util.h runs (created == freed, no thread state
 * but main's, live blocks back to the baseline).
 *
 * It found a hang (fixed): the weakref stripe mutexes and intern shard
 * mutexes were not taken across fork, so a worker holding one left it
 * locked forever in the child.  FORK_OBJECTS_NO_WEAKREFS=1 still runs
 * everything else without weak references.
 *
 * Sanitizers: the child creates no threads and calls no libc malloc (the
 * harness's records are calloc'd before the workers start; see
 * fork_alloc.c for why a TSan child must not use libc malloc), and leaves
 * by _exit.  TSan's die_after_fork only concerns threads created in the
 * child, so fork under TSan is fine here.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "obj_util.h"

#define NF 4          /* fields per cell */
#define STASH 24      /* nodes a worker holds */
#define WSTASH 16     /* weak references a worker holds */
#define LOCAL_BLOCKS 16
#define MAX_DEPTH 48  /* node chains are kept shorter than this */

typedef struct node_s {
    ftm_object ob;
    obj_stamp_t st;
    ftm_field next; /* set before publication, never changed, cleared at death */
    uint32_t depth;
    uint32_t pad;
    uint64_t tail; /* ~canary */
} node_t;

typedef struct cell_s {
    ftm_object ob;
    obj_stamp_t st;
    ftm_field f[NF];
} cell_t;

/* A weak reference's record, in libc memory (parent: calloc'd before the
 * workers start; child: a static array). */
typedef struct wrec_s {
    uint64_t referent; /* registry id */
    _Atomic int cb_runs;
    int has_cb;
} wrec_t;

static stress_opts_t opt = { .name = "fork_objects" };
static cell_t **cells;
static int ncells;
static ftm_object **mine; /* the main thread's own nodes (one reference each) */
static int nmine;
static _Atomic bool stop_workers;
static _Atomic unsigned long long n_ops, n_made, n_wr, n_cb, n_get_hit;
static wrec_t *wrecs;
static uint64_t wrec_cap;
static _Atomic uint64_t wrec_next;
static uint64_t create_limit; /* workers make no more objects past this id */
static int child_ops;
static double child_deadline_s;
static bool use_weakrefs = true; /* FORK_OBJECTS_NO_WEAKREFS=1: none (diagnosis) */

/* ---- types ------------------------------------------------------------------ */

static int node_traverse(ftm_object *self, ftm_visitproc visit, void *arg)
{
    ftm_object *n = ftm_field_peek(&((node_t *)self)->next);
    return n ? visit(n, arg) : 0;
}
static void node_clear(ftm_object *self)
{
    ftm_field_clear(&((node_t *)self)->next);
}
static void node_dealloc(ftm_object *self)
{
    node_t *v = (node_t *)self;
    if (v->tail != ~v->st.canary)
        stress_fail("node dealloc: object %llu: tail %016llx, canary %016llx",
                    (unsigned long long)v->st.id, (unsigned long long)v->tail,
                    (unsigned long long)v->st.canary);
    obj_stamp_kill(&v->st, "node dealloc");
    v->tail = 0;
}
static ftm_type node_type = {
    .name = "fork_node",
    .basic_size = sizeof(node_t),
    .flags = FTM_TYPE_FREELIST,
    .traverse = node_traverse,
    .clear = node_clear,
    .dealloc = node_dealloc,
};
/* The main thread's own nodes: no free list, so that those it drops (never
 * shared: no grace period) do not stay in its free list as live blocks at
 * the leak check (free lists are emptied at thread exit only). */
static ftm_type main_node_type = {
    .name = "fork_main_node",
    .basic_size = sizeof(node_t),
    .traverse = node_traverse,
    .clear = node_clear,
    .dealloc = node_dealloc,
};

static int cell_traverse(ftm_object *self, ftm_visitproc visit, void *arg)
{
    cell_t *c = (cell_t *)self;
    for (int i = 0; i < NF; i++) {
        ftm_object *o = ftm_field_peek(&c->f[i]);
        int r = o ? visit(o, arg) : 0;
        if (r)
            return r;
    }
    return 0;
}
static void cell_clear(ftm_object *self)
{
    cell_t *c = (cell_t *)self;
    for (int i = 0; i < NF; i++)
        ftm_field_clear(&c->f[i]);
}
static void cell_dealloc(ftm_object *self)
{
    obj_stamp_kill(&((cell_t *)self)->st, "cell dealloc");
}
static ftm_type cell_type = {
    .name = "fork_cell",
    .basic_size = sizeof(cell_t),
    .flags = FTM_TYPE_GC,
    .traverse = cell_traverse,
    .clear = cell_clear,
    .dealloc = cell_dealloc,
};

/* A node we hold a reference to: it and its chain are alive and intact. */
static void node_check(ftm_object *p, const char *what)
{
    for (int k = 0; p != NULL && k < 8; k++) {
        if (ftm_type_of(p) != &node_type && ftm_type_of(p) != &main_node_type)
            stress_fail("%s: object %p (link %d) has type %p, not a node type", what,
                        (void *)p, k, (const void *)ftm_type_of(p));
        node_t *v = (node_t *)p;
        obj_stamp_check(&v->st, what);
        if (v->tail != ~v->st.canary)
            stress_fail("%s: node %llu (link %d): tail %016llx, expected %016llx", what,
                        (unsigned long long)v->st.id, k, (unsigned long long)v->tail,
                        (unsigned long long)~v->st.canary);
        ftm_object *n = ftm_field_peek(&v->next);
        uint32_t want = n ? ((node_t *)n)->depth + 1 : 0;
        if (v->depth != want)
            stress_fail("%s: node %llu has depth %u, its next says %u", what,
                        (unsigned long long)v->st.id, v->depth, want);
        p = n;
    }
}

/* A new node of type t holding `next` (stolen; may be NULL). */
static ftm_object *node_new_t(ftm_type *t, ftm_object *next)
{
    node_t *v = (node_t *)ftm_new(t);
    if (v == NULL)
        stress_fail("ftm_new(node): %s", strerror(errno));
    obj_stamp_init(&v->st);
    v->tail = ~v->st.canary;
    if (next != NULL) {
        v->depth = ((node_t *)next)->depth + 1;
        ftm_field_init(&v->next, next);
    }
    return &v->ob;
}

static ftm_object *node_new(ftm_object *next)
{
    return node_new_t(&node_type, next);
}

static cell_t *cell_new(void)
{
    cell_t *c = (cell_t *)ftm_new(&cell_type);
    if (c == NULL)
        stress_fail("ftm_new(cell): %s", strerror(errno));
    obj_stamp_init(&c->st);
    return c;
}

static void wr_callback(ftm_weakref *wr, void *arg)
{
    (void)wr;
    wrec_t *rec = arg;
    if (atomic_fetch_add_explicit(&rec->cb_runs, 1, memory_order_relaxed) != 0)
        stress_fail("weakref callback for referent %llu ran twice",
                    (unsigned long long)rec->referent);
    atomic_fetch_add_explicit(&n_cb, 1, memory_order_relaxed);
}

/* A get through a weak reference to `rec->referent`: NULL or that node. */
static void wr_get_check(ftm_weakref *w, const wrec_t *rec, const char *what)
{
    ftm_object *o = ftm_weakref_get(w);
    if (o == NULL)
        return;
    node_check(o, what);
    if (((node_t *)o)->st.id != rec->referent)
        stress_fail("%s: weakref to node %llu returned node %llu", what,
                    (unsigned long long)rec->referent,
                    (unsigned long long)((node_t *)o)->st.id);
    atomic_fetch_add_explicit(&n_get_hit, 1, memory_order_relaxed);
    ftm_decref(o);
}

/* ---- workers ---------------------------------------------------------------- */

static ftm_field *random_field(stress_rng_t *r)
{
    cell_t *c = cells[stress_below(r, (uint64_t)ncells)];
    return &c->f[stress_below(r, NF)];
}

static bool may_create(void)
{
    return obj_ids_used() < create_limit;
}

static void *worker_main(void *arg)
{
    uint64_t index = (uint64_t)(uintptr_t)arg;
    stress_rng_t r = stress_rng(opt.seed, 100 + index);
    ftm_object *stash[STASH];
    int nstash = 0;
    struct { ftm_weakref *w; wrec_t *rec; } ws[WSTASH];
    int nws = 0;
    stress_hdr_t *blocks[LOCAL_BLOCKS] = { 0 };
    uint64_t next_block_id = (index + 1) << 40;
    unsigned long long ops = 0, made = 0, wrs = 0;

    while (!atomic_load_explicit(&stop_workers, memory_order_acquire)) {
        unsigned what = (unsigned)stress_below(&r, 100);
        ops++;
        if (what < 22) { /* a new node into a field; the old value dropped here */
            if (!may_create())
                continue;
            ftm_object *next = NULL;
            if (nstash > 0 && stress_one_in(&r, 3)) {
                next = stash[stress_below(&r, (uint64_t)nstash)];
                if (((node_t *)next)->depth < MAX_DEPTH)
                    ftm_incref(next);
                else
                    next = NULL;
            }
            made++;
            ftm_field_store(random_field(&r), node_new(next));
        } else if (what < 42) { /* load, keep or drop */
            ftm_object *v = ftm_field_load(random_field(&r));
            if (v != NULL) {
                node_check(v, "ftm_field_load");
                if (nstash < STASH)
                    stash[nstash++] = v;
                else
                    ftm_decref(v);
            }
        } else if (what < 52) { /* exchange: a stashed node (or NULL) in, the old one out */
            ftm_object *v = nstash > 0 && stress_one_in(&r, 2) ? stash[--nstash] : NULL;
            ftm_object *old = ftm_field_exchange(random_field(&r), v);
            if (old != NULL) {
                node_check(old, "ftm_field_exchange (old value)");
                if (nstash < STASH)
                    stash[nstash++] = old;
                else
                    ftm_decref(old);
            }
        } else if (what < 62) { /* drop a held node (maybe its last reference) */
            if (nstash > 0) {
                int k = (int)stress_below(&r, (uint64_t)nstash);
                ftm_object *v = stash[k];
                node_check(v, "held node");
                stash[k] = stash[--nstash];
                ftm_decref(v);
            }
        } else if (what < 70) { /* a weak reference to a held node */
            if (nstash == 0 || !use_weakrefs)
                continue;
            uint64_t ri = atomic_fetch_add_explicit(&wrec_next, 1, memory_order_relaxed);
            if (ri >= wrec_cap)
                continue;
            if (nws == WSTASH) {
                ftm_weakref_release(ws[0].w);
                ws[0] = ws[--nws];
            }
            ftm_object *p = stash[stress_below(&r, (uint64_t)nstash)];
            wrec_t *rec = &wrecs[ri];
            rec->referent = ((node_t *)p)->st.id;
            rec->has_cb = stress_one_in(&r, 2);
            ftm_weakref *w = ftm_weakref_new(p, rec->has_cb ? wr_callback : NULL, rec);
            if (w == NULL)
                stress_fail("ftm_weakref_new: %s", strerror(errno));
            wr_get_check(w, rec, "get of a fresh weakref");
            ws[nws].w = w;
            ws[nws].rec = rec;
            nws++;
            wrs++;
        } else if (what < 80) { /* get through a weak reference */
            if (nws > 0) {
                int k = (int)stress_below(&r, (uint64_t)nws);
                wr_get_check(ws[k].w, ws[k].rec, "ftm_weakref_get");
            }
        } else if (what < 84) { /* release a weak reference */
            if (nws > 0) {
                int k = (int)stress_below(&r, (uint64_t)nws);
                ftm_weakref_release(ws[k].w);
                ws[k] = ws[--nws];
            }
        } else if (what < 94) { /* plain blocks beside the objects */
            int k = (int)stress_below(&r, LOCAL_BLOCKS);
            if (blocks[k] != NULL) {
                stress_hblock_free(blocks[k], "worker block");
                blocks[k] = NULL;
            } else {
                blocks[k] = stress_hblock_new(next_block_id++,
                                              stress_size(&r, sizeof(stress_hdr_t), 8192));
            }
        } else if (what < 97) {
            ftm_safepoint();
        } else if (what < 99) {
            ftm_thread_flush();
        } else { /* a blocking call, detached, holding references */
            ftm_thread_detach();
            struct timespec ts = { 0, 50000 };
            nanosleep(&ts, NULL);
            ftm_thread_attach();
        }
    }
    for (int k = 0; k < nws; k++)
        ftm_weakref_release(ws[k].w);
    for (int k = 0; k < nstash; k++) {
        node_check(stash[k], "held node at exit");
        ftm_decref(stash[k]);
    }
    for (int k = 0; k < LOCAL_BLOCKS; k++)
        if (blocks[k] != NULL)
            stress_hblock_free(blocks[k], "worker block at exit");
    atomic_fetch_add_explicit(&n_ops, ops, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_made, made, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_wr, wrs, memory_order_relaxed);
    return NULL;
}

/* ---- the child -------------------------------------------------------------- */

#define CHILD_CELLS 8
#define CHILD_STASH 32
#define CHILD_WR 48
#define CHILD_WREC_MAX 4096

static wrec_t child_wrecs[CHILD_WREC_MAX]; /* a child's records: no libc malloc there */
static char child_name[64];

static void waitpid_deadline(pid_t pid, double deadline_s, const char *what)
{
    double deadline = stress_now() + deadline_s;
    int status = 0;
    for (;;) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid)
            break;
        if (got < 0 && errno != EINTR)
            stress_fail("waitpid(%s %d): %s", what, (int)pid, strerror(errno));
        if (stress_now() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            stress_fail("%s %d did not finish in %.0f s: deadlock after fork (a lock held "
                        "across fork by a thread that does not exist in the child)?",
                        what, (int)pid, deadline_s);
        }
        struct timespec ts = { 0, 2 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    if (WIFSIGNALED(status))
        stress_fail("%s %d killed by signal %d (%s)%s", what, (int)pid, WTERMSIG(status),
                    strsignal(WTERMSIG(status)),
                    WTERMSIG(status) == SIGALRM
                        ? ": its deadline passed — deadlock after fork (a lock held across "
                          "fork by a thread that does not exist in the child)?"
                        : "");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        stress_fail("%s %d exited with status %d", what, (int)pid, WEXITSTATUS(status));
}

/* Step 1: what the child inherited is intact. */
static void child_check_inherited(void)
{
    for (int i = 0; i < nmine; i++)
        if (mine[i] != NULL)
            node_check(mine[i], "inherited main-thread node");
    for (int c = 0; c < ncells; c++) {
        obj_stamp_check(&cells[c]->st, "inherited cell");
        for (int f = 0; f < NF; f++) {
            ftm_object *v = ftm_field_load(&cells[c]->f[f]);
            if (v != NULL) {
                node_check(v, "inherited node in a cell");
                ftm_decref(v);
            }
        }
    }
}

/* Step 2: own objects, all dropped; created == freed for exactly them. */
static void child_own_work(stress_rng_t *r, int ops)
{
    ftm_thread_flush();
    ftm_object_stats_t s0;
    ftm_object_stats_get(&s0);
    uint64_t id0 = obj_ids_used();
    uint64_t d0 = atomic_load_explicit(&obj_reg.deallocs, memory_order_relaxed);
    ftm_stats_t m0;
    stress_stats(&m0);

    cell_t *cc[CHILD_CELLS];
    ftm_object *stash[CHILD_STASH];
    int nstash = 0;
    struct { ftm_weakref *w; wrec_t *rec; bool pinned; bool released_alive; } ws[CHILD_WR];
    int nws = 0, nwrec = 0;
    unsigned long long made_obj = 0, made_wr = 0;
    void *blk[16] = { 0 };
    size_t blk_size[16] = { 0 };
    uint64_t blk_key[16] = { 0 };

    for (int i = 0; i < CHILD_CELLS; i++) {
        cc[i] = cell_new();
        made_obj++;
    }
    /* released weak references whose record is checked at the end */
    static wrec_t *released_alive[CHILD_WREC_MAX];
    int nreleased_alive = 0;

    for (int op = 0; op < ops; op++) {
        unsigned what = (unsigned)stress_below(r, 100);
        ftm_field *fld = &cc[stress_below(r, CHILD_CELLS)]->f[stress_below(r, NF)];
        if (what < 25) {
            ftm_object *next = NULL;
            if (nstash > 0 && stress_one_in(r, 2)) {
                next = stash[stress_below(r, (uint64_t)nstash)];
                if (((node_t *)next)->depth < MAX_DEPTH)
                    ftm_incref(next);
                else
                    next = NULL;
            }
            ftm_field_store(fld, node_new(next));
            made_obj++;
        } else if (what < 40) {
            ftm_object *v = ftm_field_load(fld);
            if (v != NULL) {
                node_check(v, "child: ftm_field_load");
                if (nstash < CHILD_STASH)
                    stash[nstash++] = v;
                else
                    ftm_decref(v);
            }
        } else if (what < 50) {
            ftm_object *v = nstash > 0 ? stash[--nstash] : NULL;
            ftm_object *old = ftm_field_exchange(fld, v);
            if (old != NULL) {
                node_check(old, "child: ftm_field_exchange");
                ftm_decref(old);
            }
        } else if (what < 60) {
            if (nstash > 0) {
                int k = (int)stress_below(r, (uint64_t)nstash);
                ftm_object *v = stash[k];
                stash[k] = stash[--nstash];
                node_check(v, "child: held node");
                ftm_decref(v);
            }
        } else if (what < 72) {
            if (nstash == 0 || nws == CHILD_WR || nwrec == CHILD_WREC_MAX || !use_weakrefs)
                continue;
            ftm_object *p = stash[stress_below(r, (uint64_t)nstash)];
            wrec_t *rec = &child_wrecs[nwrec++];
            rec->referent = ((node_t *)p)->st.id;
            rec->has_cb = stress_one_in(r, 2) ? 1 : 0;
            atomic_store_explicit(&rec->cb_runs, 0, memory_order_relaxed);
            ftm_weakref *w = ftm_weakref_new(p, rec->has_cb ? wr_callback : NULL, rec);
            if (w == NULL)
                stress_fail("child: ftm_weakref_new: %s", strerror(errno));
            made_wr++;
            wr_get_check(w, rec, "child: get of a fresh weakref");
            ws[nws].w = w;
            ws[nws].rec = rec;
            ws[nws].pinned = stress_one_in(r, 3); /* kept until every node is dead */
            ws[nws].released_alive = false;
            nws++;
        } else if (what < 80) {
            if (nws > 0) {
                int k = (int)stress_below(r, (uint64_t)nws);
                wr_get_check(ws[k].w, ws[k].rec, "child: ftm_weakref_get");
            }
        } else if (what < 86) {
            /* release an unpinned weak reference; if we hold its referent,
             * its callback must never run */
            if (nws > 0) {
                int k = (int)stress_below(r, (uint64_t)nws);
                if (ws[k].pinned)
                    continue;
                bool held = false;
                for (int i = 0; i < nstash && !held; i++)
                    held = ((node_t *)stash[i])->st.id == ws[k].rec->referent;
                if (held && atomic_load_explicit(&ws[k].rec->cb_runs, memory_order_relaxed) == 0)
                    released_alive[nreleased_alive++] = ws[k].rec;
                ftm_weakref_release(ws[k].w);
                ws[k] = ws[--nws];
            }
        } else if (what < 96) {
            int k = (int)stress_below(r, 16);
            if (blk[k] != NULL) {
                stress_verify(blk[k], 0, blk_size[k], blk_key[k], "child block",
                              (unsigned long long)k);
                if (stress_one_in(r, 2)) {
                    size_t n = stress_size(r, 16, 32 * STRESS_KIB);
                    void *q = ftm_realloc(blk[k], n);
                    if (q == NULL)
                        stress_fail("child: ftm_realloc(%zu) returned NULL", n);
                    size_t keep = blk_size[k] < n ? blk_size[k] : n;
                    stress_verify(q, 0, keep, blk_key[k], "child block after realloc",
                                  (unsigned long long)k);
                    stress_fill(q, keep, n, blk_key[k]);
                    blk[k] = q;
                    blk_size[k] = n;
                } else {
                    ftm_free(blk[k]);
                    blk[k] = NULL;
                }
            } else {
                blk_size[k] = stress_size(r, 16, 32 * STRESS_KIB);
                blk_key[k] = stress_next(r);
                blk[k] = ftm_malloc(blk_size[k]);
                if (blk[k] == NULL)
                    stress_fail("child: ftm_malloc(%zu) returned NULL", blk_size[k]);
                stress_fill(blk[k], 0, blk_size[k], blk_key[k]);
            }
        } else {
            ftm_safepoint();
        }
    }
    /* unpinned weak references go first */
    for (int k = 0; k < nws;) {
        if (!ws[k].pinned) {
            ftm_weakref_release(ws[k].w);
            ws[k] = ws[--nws];
        } else {
            k++;
        }
    }
    /* every node dies: held ones and the cells' (cascading through clear) */
    for (int k = 0; k < nstash; k++)
        ftm_decref(stash[k]);
    for (int i = 0; i < CHILD_CELLS; i++)
        ftm_decref(&cc[i]->ob);
    for (int k = 0; k < 16; k++)
        if (blk[k] != NULL) {
            stress_verify(blk[k], 0, blk_size[k], blk_key[k], "child block at the end",
                          (unsigned long long)k);
            ftm_free(blk[k]);
        }
    /* pinned weak references outlived their referents: callback exactly
     * once (if it has one), get NULL */
    for (int k = 0; k < nws; k++) {
        wrec_t *rec = ws[k].rec;
        if (ftm_weakref_get(ws[k].w) != NULL)
            stress_fail("child: weakref get returned an object after every node was dropped");
        int runs = atomic_load_explicit(&rec->cb_runs, memory_order_relaxed);
        if (runs != rec->has_cb)
            stress_fail("child: weakref to node %llu (callback: %s) saw %d callback runs after "
                        "its referent died",
                        (unsigned long long)rec->referent, rec->has_cb ? "yes" : "no", runs);
        ftm_weakref_release(ws[k].w);
    }
    for (int i = 0; i < nreleased_alive; i++)
        if (atomic_load_explicit(&released_alive[i]->cb_runs, memory_order_relaxed) != 0)
            stress_fail("child: the callback of a weakref released while its referent lived "
                        "ran (referent %llu)",
                        (unsigned long long)released_alive[i]->referent);
    ftm_thread_flush();

    ftm_object_stats_t s1;
    ftm_object_stats_get(&s1);
    uint64_t created = s1.created - s0.created, freed = s1.freed - s0.freed;
    if (created != made_obj + made_wr)
        stress_fail("child: ftm_object_stats created +%llu, but it made %llu objects and %llu "
                    "weak references",
                    (unsigned long long)created, made_obj, made_wr);
    if (freed != created)
        stress_fail("child: ftm_object_stats created +%llu, freed +%llu after dropping "
                    "everything it made and ftm_thread_flush",
                    (unsigned long long)created, (unsigned long long)freed);
    if (s1.deferred_pending != s0.deferred_pending)
        stress_fail("child: %llu blocks waiting for a grace period after ftm_thread_flush "
                    "(%llu before its own work)",
                    (unsigned long long)s1.deferred_pending,
                    (unsigned long long)s0.deferred_pending);
    uint64_t id1 = obj_ids_used();
    if (id1 - id0 != made_obj)
        stress_fail("harness: %llu ids for %llu objects", (unsigned long long)(id1 - id0),
                    made_obj);
    for (uint64_t id = id0; id < id1; id++)
        if (obj_state(id) != OBJ_FREED)
            stress_fail("child: its object %llu was never freed", (unsigned long long)id);
    uint64_t d1 = atomic_load_explicit(&obj_reg.deallocs, memory_order_relaxed);
    if (d1 - d0 != made_obj)
        stress_fail("child: %llu deallocs for the %llu objects it made",
                    (unsigned long long)(d1 - d0), made_obj);
    ftm_stats_t m1;
    stress_stats(&m1);
    if (m1.large_count != m0.large_count)
        stress_fail("child: large_count %llu -> %llu", m0.large_count, m1.large_count);
}

/* Step 4: drop what was inherited. */
static void child_drop_inherited(void)
{
    ftm_thread_flush();
    ftm_object_stats_t s0;
    ftm_object_stats_get(&s0);
    uint64_t d0 = atomic_load_explicit(&obj_reg.deallocs, memory_order_relaxed);
    for (int i = 0; i < nmine; i++)
        if (mine[i] != NULL) {
            node_check(mine[i], "inherited main-thread node");
            ftm_decref(mine[i]);
            mine[i] = NULL;
        }
    for (int c = 0; c < ncells; c++)
        for (int f = 0; f < NF; f++) {
            ftm_object *v = ftm_field_exchange(&cells[c]->f[f], NULL);
            if (v != NULL) {
                node_check(v, "inherited node taken out of a cell");
                ftm_decref(v);
            }
        }
    ftm_thread_flush();
    ftm_object_stats_t s1;
    ftm_object_stats_get(&s1);
    uint64_t d1 = atomic_load_explicit(&obj_reg.deallocs, memory_order_relaxed);
    if (s1.created != s0.created)
        stress_fail("child: %llu objects created while only dropping",
                    (unsigned long long)(s1.created - s0.created));
    if (s1.freed - s0.freed != d1 - d0)
        stress_fail("child: ftm_object_stats freed +%llu, but %llu nodes were deallocated "
                    "while dropping the inherited references",
                    (unsigned long long)(s1.freed - s0.freed), (unsigned long long)(d1 - d0));
}

static void child_run(int n, int depth)
{
    snprintf(child_name, sizeof child_name, "fork_objects[%s %d]",
             depth ? "grandchild" : "child", n);
    stress_set_name(child_name);
    alarm((unsigned)child_deadline_s);
    stress_rng_t r = stress_rng(opt.seed, 0xf0f0 + (uint64_t)n * 2 + (uint64_t)depth);
    child_check_inherited();
    child_own_work(&r, depth ? child_ops / 4 : child_ops);
    if (depth == 0) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0)
            stress_fail("fork (grandchild): %s", strerror(errno));
        if (pid == 0) {
            child_run(n, 1);
            _exit(0);
        }
        waitpid_deadline(pid, child_deadline_s + 5, "grandchild");
    }
    child_drop_inherited();
    ftm_collect(true);
    ftm_stats_t s;
    stress_stats(&s);
    if (s.malloc_count - s.free_count != s.live_count)
        stress_fail("child: live_count %llu, but %llu handed out and %llu freed",
                    s.live_count, s.malloc_count, s.free_count);
    fflush(NULL);
}

/* ---- main ------------------------------------------------------------------- */

static void sleep_detached(long ns)
{
    ftm_thread_detach();
    struct timespec ts = { 0, ns };
    nanosleep(&ts, NULL);
    ftm_thread_attach();
}

int main(int argc, char **argv)
{
    stress_parse(&opt, argc, argv, 6,
                 "  environment FORK_OBJECTS_NO_WEAKREFS=1: no weak references (to tell a\n"
                 "  deadlock on the weak reference table's stripe locks from others)\n");
    const char *nw = getenv("FORK_OBJECTS_NO_WEAKREFS");
    use_weakrefs = !(nw != NULL && nw[0] == '1');
    int nworkers = opt.threads > 1 ? opt.threads - 1 : 1;
    int forks = opt.smoke ? 8 : 40;
    child_ops = opt.smoke ? 4000 : 30000;
    ncells = opt.smoke ? 64 : 256;
    nmine = opt.smoke ? 64 : 256;
    /* generous: TSan makes fork of a multithreaded process slow */
    child_deadline_s = STRESS_SANITIZED ? 240 : 60;
    uint64_t cap = opt.smoke ? (uint64_t)4 << 20 : (uint64_t)32 << 20;
    /* each child continues the ids from where the parent was */
    uint64_t child_reserve = (uint64_t)child_ops * 2 + 4096;
    obj_registry_init(opt.seed, cap);
    create_limit = cap - child_reserve - (uint64_t)nmine * (uint64_t)forks - 1024;
    wrec_cap = cap / 4;
    wrecs = calloc((size_t)wrec_cap, sizeof *wrecs);
    cells = calloc((size_t)ncells, sizeof *cells);
    mine = calloc((size_t)nmine, sizeof *mine);
    pthread_t *th = calloc((size_t)nworkers, sizeof *th);
    if (wrecs == NULL || cells == NULL || mine == NULL || th == NULL)
        stress_fail("out of memory for the harness");

    /* warm up: the weak reference side table and the main thread's state */
    {
        ftm_object *p = node_new_t(&main_node_type, NULL);
        ftm_weakref *w = ftm_weakref_new(p, NULL, NULL);
        if (w == NULL)
            stress_fail("warm-up: ftm_weakref_new: %s", strerror(errno));
        ftm_weakref_release(w);
        ftm_decref(p);
    }
    obj_base_t base;
    obj_baseline(&base);

    for (int i = 0; i < ncells; i++)
        cells[i] = cell_new();
    stress_rng_t r = stress_rng(opt.seed, 0);
    double t0 = stress_now();
    for (int i = 0; i < nworkers; i++)
        stress_thread_start(&th[i], worker_main, (void *)(uintptr_t)i);

    for (int n = 0; n < forks; n++) {
        /* the main thread's nodes: some dropped, some made, some shared */
        for (int i = 0; i < nmine; i++) {
            if (mine[i] != NULL && stress_one_in(&r, 2)) {
                node_check(mine[i], "main-thread node");
                ftm_decref(mine[i]);
                mine[i] = NULL;
            }
            if (mine[i] == NULL) {
                mine[i] = node_new_t(&main_node_type, NULL);
                if (stress_one_in(&r, 4))
                    ftm_field_store(random_field(&r), ftm_newref(mine[i]));
            }
        }
        ftm_safepoint();
        sleep_detached((long)stress_below(&r, 10) * 1000 * 1000 + 100000);
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0)
            stress_fail("fork: %s", strerror(errno));
        if (pid == 0) {
            child_run(n, 0);
            _exit(0);
        }
        ftm_thread_detach();
        waitpid_deadline(pid, child_deadline_s + 10, "child");
        ftm_thread_attach();
    }

    atomic_store_explicit(&stop_workers, true, memory_order_release);
    obj_join_detached(th, nworkers);
    double t_run = stress_now() - t0;
    for (int i = 0; i < nmine; i++)
        if (mine[i] != NULL) {
            node_check(mine[i], "main-thread node at the end");
            ftm_decref(mine[i]);
        }
    for (int i = 0; i < ncells; i++)
        ftm_decref(&cells[i]->ob); /* clears the fields: every node dies */
    ftm_thread_flush();
    obj_registry_expect_all_freed(0, "after every worker exited and the cells were dropped");
    /* the weak reference side table's stripes may have grown on workers */
    obj_leak_check(&base, 0, 64, OBJ_SLICE_SLACK + 64 * 8, "at the end");
    stress_note("OK: %d forks (each child forked once more) beside %d workers: %llu ops, %llu "
                "nodes, %llu weakrefs, %llu callbacks, %llu weakref hits; %.2f s",
                forks, nworkers, atomic_load(&n_ops), atomic_load(&n_made), atomic_load(&n_wr),
                atomic_load(&n_cb), atomic_load(&n_get_hit), t_run);
    free(wrecs);
    free(cells);
    free(mine);
    free(th);
    return 0;
}
