/* test_dlopen.c — ftmem loaded at run time: this binary does not link
 * ftmem; it dlopen()s dl_plugin (which does, through libftmem.so) with
 * RTLD_NOW and calls into it from the main thread, from a thread created
 * before the dlopen and from threads created after it. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <pthread.h>

#include <stdint.h>
#include <string.h>

TestSuite(dlopen, .timeout = 60);

typedef int (*run_fn)(int);
typedef void *(*alloc_fn)(size_t);
typedef void (*free_fn)(void *);
typedef size_t (*usable_fn)(const void *);
typedef unsigned long long (*live_fn)(void);

static struct {
    void *h;
    run_fn run;
    alloc_fn alloc;
    free_fn free;
    usable_fn usable;
    live_fn live;
} P;

static void load(void)
{
    P.h = dlopen(FTMEM_TEST_PLUGIN, RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(P.h, "dlopen(%s): %s", FTMEM_TEST_PLUGIN, dlerror());
    P.run = (run_fn)dlsym(P.h, "plugin_run");
    P.alloc = (alloc_fn)dlsym(P.h, "plugin_alloc");
    P.free = (free_fn)dlsym(P.h, "plugin_free");
    P.usable = (usable_fn)dlsym(P.h, "plugin_usable");
    P.live = (live_fn)dlsym(P.h, "plugin_live");
    cr_assert(P.run && P.alloc && P.free && P.usable && P.live, "plugin symbols missing: %s", dlerror());
}

static void *thread_run(void *arg)
{
    return (void *)(intptr_t)P.run(3);
}

Test(dlopen, main_thread_and_new_threads)
{
    load();
    int rc = P.run(5);
    cr_assert_eq(rc, 0, "plugin_run in the main thread failed with code %d", rc);
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, thread_run, NULL), 0);
    for (int i = 0; i < 3; i++) {
        void *res;
        pthread_join(t[i], &res);
        cr_assert_null(res, "plugin_run in new thread %d failed with code %ld", i, (long)(intptr_t)res);
    }
}

/* A thread that already existed when ftmem was loaded. */
static pthread_barrier_t g_bar;
static void *early_thread(void *arg)
{
    pthread_barrier_wait(&g_bar); /* wait for the dlopen */
    return (void *)(intptr_t)P.run(3);
}

Test(dlopen, thread_started_before_dlopen)
{
    pthread_t t;
    pthread_barrier_init(&g_bar, NULL, 2);
    cr_assert_eq(pthread_create(&t, NULL, early_thread, NULL), 0);
    load();
    pthread_barrier_wait(&g_bar);
    void *res;
    pthread_join(t, &res);
    cr_assert_null(res, "plugin_run in a thread older than the dlopen failed with code %ld", (long)(intptr_t)res);
    pthread_barrier_destroy(&g_bar);
}

/* Blocks allocated through the plugin in one thread, freed in another. */
static void *free_them(void *arg)
{
    void **v = arg;
    for (int i = 0; i < 1000; i++) {
        if (P.usable(v[i]) < 40)
            return (void *)1;
        P.free(v[i]);
    }
    return NULL;
}

Test(dlopen, cross_thread_free_through_plugin)
{
    load();
    unsigned long long base = P.live();
    static void *v[1000];
    for (int i = 0; i < 1000; i++) {
        v[i] = P.alloc(40 + (size_t)i);
        cr_assert_not_null(v[i]);
        memset(v[i], 1, 40);
    }
    cr_assert_eq(P.live() - base, 1000ull);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, free_them, v), 0);
    void *res;
    pthread_join(t, &res);
    cr_assert_null(res, "usable size too small for a plugin block");
    cr_assert_eq(P.live(), base, "live_count %llu, baseline %llu after remote frees", P.live(), base);
}
