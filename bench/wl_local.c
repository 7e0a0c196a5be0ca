/* wl_local.c — thread-local workloads: every block is freed by the thread
 * that allocated it.
 *
 *   churn    random 8–512 B over a live set (larson-lite / xmalloc-style)
 *   sizemix  server/interpreter-like size mix with temporaries and realloc growth
 *   large    256 KiB–16 MiB blocks, every page touched
 *
 * Each op frees a slot's block (checking its tags) and puts a new one there.
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct slots_s {
    void **p;
    size_t *size;
    uint64_t *tag;
    size_t n;
} slots_t;

static void slots_init(slots_t *s, size_t n)
{
    s->n = n;
    s->p = calloc(n, sizeof *s->p);
    s->size = calloc(n, sizeof *s->size);
    s->tag = calloc(n, sizeof *s->tag);
    if (!s->p || !s->size || !s->tag) {
        fprintf(stderr, "ftm-bench: out of memory for the live set\n");
        exit(2);
    }
}

/* Frees every live block (after the timed region), checking tags. */
static void slots_drain(slots_t *s, bench_worker_t *w)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->p[i]) {
            w->errors += (uint64_t)bench_tag_bad(s->p[i], s->size[i], s->tag[i]);
            w->sum += s->tag[i];
            free(s->p[i]);
        }
    free(s->p);
    free(s->size);
    free(s->tag);
}

static void *alloc_or_die(size_t size)
{
    void *p = malloc(size);
    if (bench_unlikely(!p)) {
        fprintf(stderr, "ftm-bench: malloc(%zu) returned NULL\n", size);
        exit(2);
    }
    return p;
}

/* ---- churn ------------------------------------------------------------- */

static void *churn_worker(void *arg)
{
    bench_worker_t *w = arg;
    bench_rng_t r;
    bench_rng_init(&r, w->o->seed, (uint64_t)w->id);
    slots_t s;
    slots_init(&s, w->o->live ? w->o->live : 2000);
    for (size_t i = 0; i < s.n; i++) { /* fill the live set before timing */
        s.size[i] = bench_rng_range(&r, 8, 512);
        s.tag[i] = bench_rng_next(&r);
        s.p[i] = alloc_or_die(s.size[i]);
        bench_tag_write(s.p[i], s.size[i], s.tag[i]);
    }
    bench_worker_started(w);

    uint64_t ops = 0, sum = 0, errors = 0, limit = w->o->ops;
    while (!bench_should_stop(ops, limit)) {
        uint64_t x = bench_rng_next(&r);
        size_t i = (size_t)(x % s.n);
        errors += (uint64_t)bench_tag_bad(s.p[i], s.size[i], s.tag[i]);
        sum += s.tag[i];
        free(s.p[i]);
        size_t size = 8 + (size_t)((x >> 32) % 505); /* 8..512 */
        void *p = alloc_or_die(size);
        s.p[i] = p;
        s.size[i] = size;
        s.tag[i] = x;
        bench_tag_write(p, size, x);
        ops++;
    }
    w->t_end = bench_now();
    w->ops = ops;
    w->sum = sum;
    w->errors = errors;
    slots_drain(&s, w);
    return NULL;
}

int wl_churn(const bench_opts_t *o)
{
    bench_worker_t *w = calloc((size_t)o->threads, sizeof *w);
    bench_result_t res;
    bench_result_init(&res, "churn", o->threads, "malloc+free");
    res.seconds = bench_run_workers(o, churn_worker, NULL, w);
    bench_result_sum_workers(&res, w, o->threads);
    bench_result_add(&res, "live_slots", (double)(o->live ? o->live : 2000));
    bench_result_print(&res);
    free(w);
    return res.errors ? 3 : 0;
}

/* ---- sizemix ----------------------------------------------------------- */

/* Request sizes as seen by a server or interpreter: 80% 16–128 B, 12%
 * 129–1024 B, 7.95% 1–8 KiB, 0.05% 64 KiB–1 MiB (log-uniform). */
static size_t sizemix_size(bench_rng_t *r)
{
    uint64_t u = bench_rng_next(r) % 10000;
    if (u < 8000)
        return bench_rng_range(r, 16, 128);
    if (u < 9200)
        return bench_rng_range(r, 129, 1024);
    if (u < 9995)
        return bench_rng_range(r, 1025, 8 * KiB);
    return bench_rng_log_range(r, 64 * KiB, 1 * MiB);
}

/* The program uses what it gets: the first 256 bytes are written, and one
 * word in every page beyond. */
static void sizemix_touch(void *p, size_t size, uint64_t tag)
{
    memset(p, (int)(tag & 0xff), size < 256 ? size : 256);
    if (size > 4096)
        bench_touch_pages((char *)p + 4096, size - 4096, tag);
    bench_tag_write(p, size, tag);
}

#define SIZEMIX_GROW_CAP (1 * MiB)

static void *sizemix_worker(void *arg)
{
    bench_worker_t *w = arg;
    bench_rng_t r;
    bench_rng_init(&r, w->o->seed, (uint64_t)w->id + 100);
    slots_t s;
    slots_init(&s, w->o->live ? w->o->live : 4096);
    for (size_t i = 0; i < s.n; i++) {
        s.size[i] = sizemix_size(&r);
        s.tag[i] = bench_rng_next(&r);
        s.p[i] = alloc_or_die(s.size[i]);
        sizemix_touch(s.p[i], s.size[i], s.tag[i]);
    }
    bench_worker_started(w);

    uint64_t ops = 0, sum = 0, errors = 0, reallocs = 0, limit = w->o->ops;
    while (!bench_should_stop(ops, limit)) {
        uint64_t x = bench_rng_next(&r);
        size_t i = (size_t)(x % s.n);
        unsigned kind = (unsigned)((x >> 40) % 100);
        if (kind < 30) {
            /* A temporary: allocated, used, freed at once. */
            size_t size = sizemix_size(&r);
            void *t = alloc_or_die(size);
            sizemix_touch(t, size, x);
            errors += (uint64_t)bench_tag_bad(t, size, x);
            sum += (uint64_t)((unsigned char *)t)[(size < 256 ? size : 256) / 2]; /* written */
            free(t);
        } else if (kind < 37 && s.size[i] < SIZEMIX_GROW_CAP) {
            /* A growing buffer (string builder, vector): realloc 1.5–2x.
             * realloc must keep the old bytes: the tags must survive. */
            size_t old = s.size[i];
            size_t size = old + old / 2 + (size_t)((x >> 8) % (old / 2 + 1)) + 8;
            void *p = realloc(s.p[i], size);
            if (bench_unlikely(!p)) {
                fprintf(stderr, "ftm-bench: realloc(%zu) returned NULL\n", size);
                exit(2);
            }
            errors += (uint64_t)bench_tag_bad(p, old, s.tag[i]);
            s.p[i] = p;
            s.size[i] = size;
            if (size > 4096)
                bench_touch_pages((char *)p + 4096, size - 4096, x);
            bench_tag_write(p, size, s.tag[i]);
            reallocs++;
        } else {
            errors += (uint64_t)bench_tag_bad(s.p[i], s.size[i], s.tag[i]);
            sum += s.tag[i];
            free(s.p[i]);
            size_t size = sizemix_size(&r);
            void *p = alloc_or_die(size);
            s.p[i] = p;
            s.size[i] = size;
            s.tag[i] = x;
            sizemix_touch(p, size, x);
        }
        ops++;
    }
    w->t_end = bench_now();
    w->ops = ops;
    w->sum = sum;
    w->errors = errors;
    w->extra = reallocs;
    slots_drain(&s, w);
    return NULL;
}

int wl_sizemix(const bench_opts_t *o)
{
    bench_worker_t *w = calloc((size_t)o->threads, sizeof *w);
    bench_result_t res;
    bench_result_init(&res, "sizemix", o->threads, "op (malloc+free, temp or realloc)");
    res.seconds = bench_run_workers(o, sizemix_worker, NULL, w);
    bench_result_sum_workers(&res, w, o->threads);
    uint64_t reallocs = 0;
    for (int i = 0; i < o->threads; i++)
        reallocs += w[i].extra;
    bench_result_add(&res, "reallocs", (double)reallocs);
    bench_result_print(&res);
    free(w);
    return res.errors ? 3 : 0;
}

/* ---- large ------------------------------------------------------------- */

static void *large_worker(void *arg)
{
    bench_worker_t *w = arg;
    bench_rng_t r;
    bench_rng_init(&r, w->o->seed, (uint64_t)w->id + 200);
    slots_t s;
    slots_init(&s, w->o->live ? w->o->live : 4);
    bench_worker_started(w);

    uint64_t ops = 0, sum = 0, errors = 0, bytes = 0, limit = w->o->ops;
    while (!bench_should_stop(ops, limit)) {
        uint64_t x = bench_rng_next(&r);
        size_t i = (size_t)(x % s.n);
        if (s.p[i]) {
            errors += (uint64_t)bench_tag_bad(s.p[i], s.size[i], s.tag[i]);
            sum += s.tag[i] + ((uint64_t *)s.p[i])[4096 / 8]; /* a touched page word */
            free(s.p[i]);
        }
        size_t size = bench_rng_log_range(&r, 256 * KiB, 16 * MiB);
        void *p = alloc_or_die(size);
        bench_touch_pages(p, size, x);
        bench_tag_write(p, size, x);
        s.p[i] = p;
        s.size[i] = size;
        s.tag[i] = x;
        bytes += size;
        ops++;
    }
    w->t_end = bench_now();
    w->ops = ops;
    w->sum = sum;
    w->errors = errors;
    w->extra = bytes;
    slots_drain(&s, w);
    return NULL;
}

int wl_large(const bench_opts_t *o)
{
    bench_worker_t *w = calloc((size_t)o->threads, sizeof *w);
    bench_result_t res;
    bench_result_init(&res, "large", o->threads, "malloc+touch+free");
    res.seconds = bench_run_workers(o, large_worker, NULL, w);
    bench_result_sum_workers(&res, w, o->threads);
    uint64_t bytes = 0;
    for (int i = 0; i < o->threads; i++)
        bytes += w[i].extra;
    bench_result_add(&res, "gib_per_s", res.seconds > 0 ? (double)bytes / (double)(1024 * MiB) / res.seconds : 0);
    bench_result_print(&res);
    free(w);
    return res.errors ? 3 : 0;
}
