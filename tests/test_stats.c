/* test_stats.c — ftm_stats_get counters against known sequences of calls
 * (deltas from a baseline, identities at quiescence, merging of exited
 * threads' counts), and the text and JSON reports (ftm_stats_print,
 * ftm_stats_json). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>

#include "ftm_test.h"
#include <ftmem.h>

TestSuite(stats, .timeout = 60);

static void check_identities(const ftm_stats_t *s, const char *when)
{
    cr_assert_eq(s->malloc_count - s->free_count, s->live_count,
                 "%s: malloc_count %llu - free_count %llu != live_count %llu", when, s->malloc_count, s->free_count,
                 s->live_count);
    cr_assert_eq(s->committed, s->active + s->dirty, "%s: committed %zu != active %zu + dirty %zu", when,
                 s->committed, s->active, s->dirty);
    cr_assert_geq(s->active, s->allocated, "%s: active %zu < allocated %zu", when, s->active, s->allocated);
    cr_assert_geq(s->mapped, s->committed, "%s: mapped %zu < committed %zu", when, s->mapped, s->committed);
    cr_assert_geq(s->peak_rss, s->rss, "%s: peak_rss %zu < rss %zu", when, s->peak_rss, s->rss);
}

Test(stats, counts_track_a_known_sequence)
{
    enum { N = 1000 };
    static void *p[N];
    ftm_stats_t base, s;
    ftm_stats_get(&base);
    check_identities(&base, "baseline");

    size_t requested = 0, usable = 0;
    for (int i = 0; i < N; i++) {
        size_t n = 24 + (size_t)(i % 40) * 8;
        p[i] = ftm_malloc(n);
        cr_assert_not_null(p[i]);
        requested += n;
        usable += ftm_usable_size(p[i]);
    }
    ftm_stats_get(&s);
    check_identities(&s, "after N mallocs");
    cr_assert_eq(s.malloc_count - base.malloc_count, N, "malloc_count rose by %llu for %d mallocs",
                 s.malloc_count - base.malloc_count, N);
    cr_assert_eq(s.live_count - base.live_count, N, "live_count rose by %llu for %d live blocks",
                 s.live_count - base.live_count, N);
    cr_assert_eq(s.free_count, base.free_count);
    cr_assert_geq(s.allocated - base.allocated, requested, "allocated rose by %zu < %zu bytes requested",
                  s.allocated - base.allocated, requested);
    cr_assert_geq(s.allocated - base.allocated, usable, "allocated rose by %zu < %zu usable bytes",
                  s.allocated - base.allocated, usable);
    cr_assert_gt(s.pools, 0);
    cr_assert_gt(s.arenas, 0);
    cr_assert_geq(s.threads, 1);
    cr_assert_gt(s.active, base.active);

    for (int i = 0; i < N; i++)
        ftm_free(p[i]);
    ftm_stats_get(&s);
    check_identities(&s, "after N frees");
    cr_assert_eq(s.free_count - base.free_count, N, "free_count rose by %llu for %d frees",
                 s.free_count - base.free_count, N);
    cr_assert_eq(s.live_count, base.live_count);
    cr_assert_eq(s.allocated, base.allocated, "allocated %zu, baseline %zu after freeing everything", s.allocated,
                 base.allocated);
}

Test(stats, every_allocation_call_counts)
{
    ftm_stats_t base, s;
    ftm_stats_get(&base);
    void *a = ftm_malloc(100);
    void *b = ftm_calloc(10, 10);
    void *c = ftm_realloc(NULL, 100);
    void *d = ftm_reallocarray(NULL, 10, 10);
    void *e = ftm_aligned_alloc(256, 100);
    void *f = NULL;
    cr_assert_eq(ftm_posix_memalign(&f, 64, 100), 0);
    cr_assert(a && b && c && d && e && f);
    ftm_stats_get(&s);
    check_identities(&s, "after one call of each");
    cr_assert_eq(s.live_count - base.live_count, 6, "6 allocation calls made %llu blocks live",
                 s.live_count - base.live_count);
    cr_assert_eq(s.malloc_count - base.malloc_count, 6);
    /* realloc of a live block keeps the live count (whether or not it moves). */
    c = ftm_realloc(c, 20000);
    d = ftm_realloc(d, 10);
    cr_assert(c && d);
    ftm_stats_get(&s);
    check_identities(&s, "after reallocs");
    cr_assert_eq(s.live_count - base.live_count, 6, "realloc changed the live count by %lld",
                 (long long)(s.live_count - base.live_count) - 6);
    ftm_free(a);
    ftm_free_sized(b, 100);
    ftm_free(c);
    ftm_free_sized(d, 10);
    ftm_free(e);
    ftm_free(f);
    ftm_stats_get(&s);
    check_identities(&s, "after freeing all");
    cr_assert_eq(s.live_count, base.live_count);
    cr_assert_eq(s.allocated, base.allocated);
}

Test(stats, large_count_tracks_large_blocks)
{
    ftm_stats_t base, s;
    ftm_stats_get(&base);
    size_t sizes[] = {16 * MiB, 20 * MiB + 1, 64 * MiB};
    void *p[3];
    size_t sum = 0;
    for (int i = 0; i < 3; i++) {
        p[i] = ftm_malloc(sizes[i]);
        cr_assert_not_null(p[i]);
        sum += sizes[i];
    }
    ftm_stats_get(&s);
    check_identities(&s, "with 3 large blocks");
    cr_assert_eq(s.large_count - base.large_count, 3, "large_count rose by %llu for 3 large blocks",
                 s.large_count - base.large_count);
    cr_assert_geq(s.allocated - base.allocated, sum);
    cr_assert_geq(s.active - base.active, sum);
    cr_assert_geq(s.mapped - base.mapped, sum, "mapped rose by %zu < %zu mapped for large blocks",
                  s.mapped - base.mapped, sum);
    ftm_free(p[1]);
    ftm_stats_get(&s);
    cr_assert_eq(s.large_count - base.large_count, 2);
    ftm_free(p[0]);
    ftm_free(p[2]);
    ftm_stats_get(&s);
    check_identities(&s, "after freeing large blocks");
    cr_assert_eq(s.large_count, base.large_count);
    cr_assert_eq(s.allocated, base.allocated);
    /* Small blocks are not large. */
    void *q = ftm_malloc(64);
    ftm_stats_get(&s);
    cr_assert_eq(s.large_count, base.large_count, "a 64-byte block counted as large");
    ftm_free(q);
}

Test(stats, collect_returns_dirty_memory)
{
    enum { N = 20000 };
    static void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = ftm_malloc(256);
        cr_assert_not_null(p[i]);
        memset(p[i], 1, 256);
    }
    for (int i = 0; i < N; i++)
        ftm_free(p[i]);
    void *big = ftm_malloc(32 * MiB);
    memset(ftt_launder(big), 1, 32 * MiB);
    ftm_free(big);
    ftm_collect(true);
    ftm_stats_t s;
    ftm_stats_get(&s);
    check_identities(&s, "after ftm_collect(true)");
    cr_assert_leq(s.dirty, 2 * MiB, "%zu dirty bytes left after ftm_collect(true)", s.dirty);
    cr_assert_gt(s.purges, 0, "no purge counted after ftm_collect(true) on 37 MiB of free memory");
}

Test(stats, rss_matches_proc)
{
    void *p = ftm_malloc(40 * MiB);
    memset(ftt_launder(p), 7, 40 * MiB);
    ftm_stats_t s;
    ftm_stats_get(&s);
    size_t proc = ftt_statm_rss();
    cr_assert_gt(s.rss, 40 * MiB, "rss %zu does not include a touched 40 MiB block", s.rss);
    size_t diff = s.rss > proc ? s.rss - proc : proc - s.rss;
    cr_assert_leq(diff, 4 * MiB, "ftm_stats rss %zu, /proc/self/statm %zu", s.rss, proc);
    cr_assert_geq(s.peak_rss, s.rss);
    ftm_free(p);
}

/* ---- Counts merged over threads ------------------------------------------- */

enum { MT_THREADS = 4, MT_N = 10000 };
static void *g_blocks[MT_THREADS][MT_N];
static pthread_barrier_t g_bar;

static void *mt_worker(void *arg)
{
    int id = (int)(uintptr_t)arg;
    for (int i = 0; i < MT_N; i++) {
        g_blocks[id][i] = ftm_malloc(16 + (size_t)(i % 50) * 16);
        if (!g_blocks[id][i])
            abort();
    }
    pthread_barrier_wait(&g_bar);
    /* Half freed by the owner, half by the next thread. */
    for (int i = 0; i < MT_N; i += 2)
        ftm_free(g_blocks[id][i]);
    int other = (id + 1) % MT_THREADS;
    for (int i = 1; i < MT_N; i += 2)
        ftm_free(g_blocks[other][i]);
    return NULL;
}

Test(stats, counts_merge_over_exited_threads)
{
    ftm_stats_t base, s;
    ftm_stats_get(&base);
    pthread_t t[MT_THREADS];
    pthread_barrier_init(&g_bar, NULL, MT_THREADS);
    for (int i = 0; i < MT_THREADS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, mt_worker, (void *)(uintptr_t)i), 0);
    for (int i = 0; i < MT_THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&g_bar);
    ftm_stats_get(&s);
    check_identities(&s, "after threads exited");
    cr_assert_eq(s.malloc_count - base.malloc_count, (unsigned long long)MT_THREADS * MT_N,
                 "malloc_count rose by %llu, threads made %d allocations", s.malloc_count - base.malloc_count,
                 MT_THREADS * MT_N);
    cr_assert_eq(s.free_count - base.free_count, (unsigned long long)MT_THREADS * MT_N,
                 "free_count rose by %llu, threads made %d frees", s.free_count - base.free_count, MT_THREADS * MT_N);
    cr_assert_eq(s.live_count, base.live_count);
    cr_assert_eq(s.allocated, base.allocated, "allocated %zu != baseline %zu after all threads' blocks were freed",
                 s.allocated, base.allocated);
}

/* ---- Reports --------------------------------------------------------------- */

static char *report(void (*fn)(FILE *), size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    cr_assert_not_null(f);
    fn(f);
    fclose(f);
    *len = n;
    return buf;
}

Test(stats, print_to_memstream_and_tmpfile)
{
    void *p = ftm_malloc(100);
    size_t len;
    char *text = report(ftm_stats_print, &len);
    cr_assert_gt(len, 20, "ftm_stats_print wrote %zu bytes", len);
    cr_assert_eq(strlen(text), len, "ftm_stats_print wrote a NUL byte");
    free(text);

    FILE *t = tmpfile();
    cr_assert_not_null(t);
    ftm_stats_print(t);
    fflush(t);
    long tlen = ftell(t);
    cr_assert_gt(tlen, 20, "ftm_stats_print to a tmpfile wrote %ld bytes", tlen);
    fclose(t);
    ftm_free(p);
}

/* A small JSON validator: one value, strings with valid escapes, numbers,
 * literals, balanced containers, nothing after the value. */
static const char *js_ws(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    return s;
}

static const char *js_value(const char *s, int depth);

static const char *js_string(const char *s)
{
    if (*s != '"')
        return NULL;
    for (s++; *s != '"'; s++) {
        if ((unsigned char)*s < 0x20)
            return NULL;
        if (*s == '\\') {
            s++;
            if (*s == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", s[i]) || !s[i])
                        return NULL;
                s += 4;
            } else if (!*s || !strchr("\"\\/bfnrt", *s)) {
                return NULL;
            }
        }
    }
    return s + 1;
}

static const char *js_number(const char *s)
{
    const char *b = s;
    if (*s == '-')
        s++;
    if (*s == '0')
        s++;
    else if (*s >= '1' && *s <= '9')
        while (*s >= '0' && *s <= '9')
            s++;
    else
        return NULL;
    if (*s == '.') {
        s++;
        if (!(*s >= '0' && *s <= '9'))
            return NULL;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        if (!(*s >= '0' && *s <= '9'))
            return NULL;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    return s > b ? s : NULL;
}

static const char *js_value(const char *s, int depth)
{
    if (depth > 64)
        return NULL;
    s = js_ws(s);
    if (*s == '{' || *s == '[') {
        char close = *s == '{' ? '}' : ']';
        bool obj = *s == '{';
        s = js_ws(s + 1);
        if (*s == close)
            return s + 1;
        for (;;) {
            if (obj) {
                s = js_string(js_ws(s));
                if (!s)
                    return NULL;
                s = js_ws(s);
                if (*s++ != ':')
                    return NULL;
            }
            s = js_value(s, depth + 1);
            if (!s)
                return NULL;
            s = js_ws(s);
            if (*s == ',') {
                s++;
                continue;
            }
            if (*s == close)
                return s + 1;
            return NULL;
        }
    }
    if (*s == '"')
        return js_string(s);
    if (!strncmp(s, "true", 4))
        return s + 4;
    if (!strncmp(s, "false", 5))
        return s + 5;
    if (!strncmp(s, "null", 4))
        return s + 4;
    return js_number(s);
}

static bool json_valid(const char *text)
{
    const char *end = js_value(text, 0);
    return end && *js_ws(end) == '\0';
}

Test(stats, json_validator_self_check)
{
    cr_assert(json_valid("{\"a\": [1, 2.5, -3e2, true, null, \"x\\n\"], \"b\": {}}"));
    cr_assert_not(json_valid("{\"a\": 1,}"));
    cr_assert_not(json_valid("{\"a\": 1"));
    cr_assert_not(json_valid("{\"a\": 01}"));
    cr_assert_not(json_valid("{a: 1}"));
    cr_assert_not(json_valid("{\"a\": 1} x"));
}

Test(stats, json_is_valid_and_has_the_counters)
{
    enum { N = 123 };
    void *p[N];
    for (int i = 0; i < N; i++)
        p[i] = ftm_malloc(64);
    void *big = ftm_malloc(16 * MiB);
    ftm_stats_t s;
    ftm_stats_get(&s);

    size_t len;
    char *text = report(ftm_stats_json, &len);
    cr_assert_gt(len, 2);
    cr_assert(json_valid(text), "ftm_stats_json output is not valid JSON:\n%s", text);
    cr_assert_eq(*js_ws(text), '{', "ftm_stats_json output is not one object");

    /* Cross-check with Python's parser when it is there: one object, and the
     * struct's counters appear (anywhere in it) with the values just read. */
    char path[] = "/tmp/ftmem-json-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    if (system("command -v python3 >/dev/null 2>&1") == 0) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd,
                 "python3 -c '\n"
                 "import json, sys\n"
                 "d = json.load(open(sys.argv[1]))\n"
                 "assert isinstance(d, dict), \"not an object\"\n"
                 "found = {}\n"
                 "def walk(x):\n"
                 "    if isinstance(x, dict):\n"
                 "        for k, v in x.items():\n"
                 "            if isinstance(v, int) and not isinstance(v, bool): found.setdefault(k, v)\n"
                 "            walk(v)\n"
                 "    elif isinstance(x, list):\n"
                 "        for v in x: walk(v)\n"
                 "walk(d)\n"
                 "want = dict(live_count=%llu, large_count=%llu)\n"
                 "for k, v in want.items():\n"
                 "    assert k in found, \"no key %%s in the JSON\" %% k\n"
                 "    assert found[k] == v, \"%%s is %%s in the JSON, %%s from ftm_stats_get\" %% (k, found[k], v)\n"
                 "for k in (\"malloc_count\", \"free_count\", \"allocated\", \"rss\"):\n"
                 "    assert k in found, \"no key %%s in the JSON\" %% k\n"
                 "' %s 2>&1",
                 s.live_count, s.large_count, path);
        FILE *py = popen(cmd, "r");
        cr_assert_not_null(py);
        char out[2048] = "";
        size_t got = fread(out, 1, sizeof out - 1, py);
        out[got] = '\0';
        int rc = pclose(py);
        cr_assert_eq(rc, 0, "python3 rejected ftm_stats_json output: %s\nJSON:\n%s", out, text);
    }
    unlink(path);
    free(text);
    for (int i = 0; i < N; i++)
        ftm_free(p[i]);
    ftm_free(big);
}
