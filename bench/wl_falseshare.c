/* wl_falseshare.c — false sharing induced by the allocator (after Hoard's
 * cache-thrash and cache-scratch).
 *
 *   fs-active   each thread mallocs small objects and writes them hard; an
 *               allocator that hands neighbouring bytes of one cache line to
 *               different threads makes those writes bounce the line.
 *   fs-passive  the main thread mallocs one small object per worker, back to
 *               back; each worker frees its object, then churns as in
 *               fs-active.  An allocator that recycles a remotely freed
 *               block into the freeing thread's cache hands the workers
 *               blocks on one shared line.
 *
 * One op = malloc, FS_REPS passes of read-modify-write over every byte, free.
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>

#define FS_OBJ 8     /* object size: eight of them fit in a 64 B line */
#define FS_REPS 50   /* write passes over each object per op */

static inline uint64_t fs_scribble(volatile unsigned char *a, uint64_t i)
{
    uint64_t sum = 0;
    for (int r = 0; r < FS_REPS; r++)
        for (int k = 0; k < FS_OBJ; k++) {
            a[k] = (unsigned char)(i + (uint64_t)r);
            sum += a[k];
        }
    return sum;
}

static uint64_t fs_loop(bench_worker_t *w)
{
    uint64_t ops = 0, sum = 0, limit = w->o->ops;
    while (!bench_should_stop(ops, limit)) {
        unsigned char *a = malloc(FS_OBJ);
        if (bench_unlikely(!a)) {
            fprintf(stderr, "ftm-bench: malloc(%d) returned NULL\n", FS_OBJ);
            exit(2);
        }
        sum += fs_scribble(a, ops);
        free(a);
        ops++;
    }
    w->t_end = bench_now();
    w->ops = ops;
    return sum;
}

static void *fs_active_worker(void *arg)
{
    bench_worker_t *w = arg;
    bench_worker_started(w);
    w->sum = fs_loop(w);
    return NULL;
}

static void *fs_passive_worker(void *arg)
{
    bench_worker_t *w = arg;
    void **objs = w->shared;
    bench_worker_started(w);
    /* Write the object the main thread gave us, then free it here: a remote
     * free of a block that shares a line with the other workers' objects. */
    w->sum = fs_scribble(objs[w->id], 0);
    free(objs[w->id]);
    w->sum += fs_loop(w);
    return NULL;
}

static int fs_run(const bench_opts_t *o, const char *name, void *(*fn)(void *), void *shared,
                  int same_line)
{
    bench_worker_t *w = calloc((size_t)o->threads, sizeof *w);
    bench_result_t res;
    bench_result_init(&res, name, o->threads, "malloc+write+free");
    res.seconds = bench_run_workers(o, fn, shared, w);
    bench_result_sum_workers(&res, w, o->threads);
    bench_result_add(&res, "obj_bytes", FS_OBJ);
    bench_result_add(&res, "write_passes", FS_REPS);
    if (same_line >= 0)
        bench_result_add(&res, "objs_on_first_line", same_line);
    bench_result_print(&res);
    free(w);
    return res.errors ? 3 : 0;
}

int wl_fs_active(const bench_opts_t *o)
{
    return fs_run(o, "fs-active", fs_active_worker, NULL, -1);
}

int wl_fs_passive(const bench_opts_t *o)
{
    void **objs = calloc((size_t)o->threads, sizeof *objs);
    for (int i = 0; i < o->threads; i++) /* back to back: likely one line */
        objs[i] = malloc(FS_OBJ);
    int same_line = 0;
    for (int i = 1; i < o->threads; i++)
        same_line += ((uintptr_t)objs[i] >> 6) == ((uintptr_t)objs[0] >> 6);
    /* objs_on_first_line tells whether the setup put the objects on one
     * line at all: if not, the passive test cannot catch this allocator. */
    int rc = fs_run(o, "fs-passive", fs_passive_worker, objs, same_line + 1);
    free(objs);
    return rc;
}
