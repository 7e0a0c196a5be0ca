/* test_dlopen_tls.c — dlopen of a library that links ftmem when the static
 * TLS surplus is nearly used up (issue 6, "Process life").
 *
 * libftmem uses initial-exec TLS (src/tstate.c, src/heap.c, src/init.c;
 * ftm__tid is read by the inline refcount functions of every user): a
 * dlopen()ed libftmem must get its TLS block from the small surplus glibc
 * reserves for that at start-up, and fails with "cannot allocate memory in
 * static TLS block" when the surplus is gone.  This binary does not link
 * ftmem.
 *
 *   - tls_segment: libftmem's PT_TLS segment (read from the loaded library
 *     with dl_iterate_phdr) is small: at most 64 bytes (it is 32).
 *   - surplus_nearly_full: in a forked child, copies of the tls_hog
 *     libraries (1024/256/64/16 bytes of initial-exec TLS each) are loaded
 *     greedily until not even a 16-byte one fits: that is the surplus left
 *     to this process; the plugin must then fail to load (the control:
 *     the surplus really is used up, and ftmem really needs it).  Then, in
 *     the test process, the same hogs are loaded up to all but 64 bytes of
 *     that surplus, and the plugin must load and work: allocation and the
 *     object API (fields, weak references, cross-thread decref) from the
 *     main thread and from threads started after the dlopen.
 *
 * Plain builds only (the plugin links the shared libftmem, see
 * test_dlopen.c).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(dlopen_tls, .timeout = 120);

static const size_t kHogSize[] = {1024, 256, 64, 16};
static const char *const kHogPath[] = {FTMEM_TEST_HOG_1024, FTMEM_TEST_HOG_256,
                                       FTMEM_TEST_HOG_64, FTMEM_TEST_HOG_16};
#define NHOG 4
#define RESERVE 64 /* bytes of surplus left free for the plugin */

static char g_dir[64];
static int g_copies;

static void copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    cr_assert_geq(in, 0, "open(%s): %s", from, strerror(errno));
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0700);
    cr_assert_geq(out, 0, "open(%s): %s", to, strerror(errno));
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        cr_assert_eq(write(out, buf, (size_t)n), n);
    close(in);
    close(out);
}

/* dlopen a fresh copy of hog k (a copy: glibc loads a file once per inode).
 * NULL when it does not fit; *err gets dlerror(). */
static void *load_hog(int k, const char **err)
{
    if (g_dir[0] == '\0') {
        strcpy(g_dir, "/tmp/ftmem-tls-XXXXXX");
        cr_assert_not_null(mkdtemp(g_dir));
    }
    char path[128];
    snprintf(path, sizeof path, "%s/hog%zu_%d.so", g_dir, kHogSize[k], g_copies++);
    copy_file(kHogPath[k], path);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    unlink(path); /* mapped already, or not needed */
    *err = h ? NULL : dlerror();
    if (h) {
        size_t (*touch)(void) = (size_t (*)(void))dlsym(h, "tls_hog_touch");
        cr_assert_not_null(touch);
        cr_assert_eq(touch(), kHogSize[k]);
    }
    return h;
}

static bool is_static_tls_error(const char *e)
{
    return e != NULL && strstr(e, "static TLS") != NULL;
}

/* Load hogs greedily (largest first) while total + size <= limit; returns
 * the bytes taken.  Stops at the first failure of a size (not fitting). */
static size_t fill(size_t limit)
{
    size_t total = 0;
    for (int k = 0; k < NHOG; k++) {
        while (total + kHogSize[k] <= limit) {
            const char *err;
            void *h = load_hog(k, &err);
            if (h == NULL) {
                cr_assert(is_static_tls_error(err), "dlopen of a TLS hog failed otherwise: %s", err);
                break;
            }
            total += kHogSize[k];
        }
    }
    return total;
}

/* ---- libftmem's TLS segment ---------------------------------------------------- */

static size_t g_tls_memsz, g_tls_align;
static int find_tls(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    (void)arg;
    if (strstr(info->dlpi_name, "libftmem.so") == NULL)
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_TLS) {
            g_tls_memsz = info->dlpi_phdr[i].p_memsz;
            g_tls_align = info->dlpi_phdr[i].p_align;
        }
    return 1;
}

Test(dlopen_tls, tls_segment)
{
    void *h = dlopen(FTMEM_TEST_PLUGIN, RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(h, "dlopen(%s): %s", FTMEM_TEST_PLUGIN, dlerror());
    cr_assert_eq(dl_iterate_phdr(find_tls, NULL), 1, "libftmem.so is not loaded");
    cr_log_info("libftmem.so: PT_TLS memsz %zu bytes, align %zu", g_tls_memsz, g_tls_align);
    cr_assert_gt(g_tls_memsz, 0);
    cr_assert_leq(g_tls_memsz, 64, "libftmem.so has %zu bytes of initial-exec TLS", g_tls_memsz);
}

/* ---- the plugin, loaded with the surplus nearly gone ------------------------------ */

typedef int (*run_fn)(int);
static run_fn p_run, p_objects;
static void *(*p_obj_new)(void);
static void (*p_obj_drop)(void *);
static unsigned long (*p_deallocs)(void);

static void *plugin_thread(void *arg)
{
    (void)arg;
    int rc = p_run(2);
    if (rc)
        return (void *)(intptr_t)rc;
    return (void *)(intptr_t)p_objects(200);
}

static void *drop_thread(void *arg)
{
    p_obj_drop(arg);
    return NULL;
}

Test(dlopen_tls, surplus_nearly_full)
{
    /* 1. in a child: how much surplus is left, and the control */
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        close(fds[0]);
        size_t cap = fill(SIZE_MAX);
        void *h = dlopen(FTMEM_TEST_PLUGIN, RTLD_NOW | RTLD_LOCAL);
        const char *err = h ? "" : dlerror();
        char msg[512];
        int len = snprintf(msg, sizeof msg, "%zu %d %s", cap, h != NULL, err ? err : "");
        if (write(fds[1], msg, (size_t)len) != len)
            _exit(2);
        _exit(0);
    }
    close(fds[1]);
    char msg[512] = {0};
    ssize_t got = 0, n;
    while ((n = read(fds[0], msg + got, sizeof msg - 1 - (size_t)got)) > 0)
        got += n;
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the measuring child failed (status %#x)", st);
    size_t cap = 0;
    int loaded = -1, off = 0;
    cr_assert_eq(sscanf(msg, "%zu %d %n", &cap, &loaded, &off), 2, "child said: %s", msg);
    cr_log_info("static TLS surplus left to this process: %zu bytes (in 16-byte steps); with it "
                "used up the plugin %s%s",
                cap, loaded ? "loaded" : "failed: ", loaded ? "" : msg + off);
    cr_assert_geq(cap, 256, "only %zu bytes of static TLS surplus left at start", cap);
    cr_assert_eq(loaded, 0,
                 "control: the plugin loaded although no 16-byte TLS block fit any more (does "
                 "libftmem still use initial-exec TLS?)");
    cr_assert(is_static_tls_error(msg + off), "control: the plugin failed otherwise: %s", msg + off);

    /* 2. here: all but RESERVE bytes of it used, then the plugin */
    size_t used = fill(cap - RESERVE);
    cr_assert_eq(used, cap - RESERVE);
    void *h = dlopen(FTMEM_TEST_PLUGIN, RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(h,
                       "dlopen of the ftmem plugin with %zu of %zu bytes of the static TLS "
                       "surplus used by other libraries: %s",
                       used, cap, dlerror());
    cr_log_info("the plugin loaded with %zu of %zu bytes of the static TLS surplus taken by "
                "other libraries (%.1f%%)",
                used, cap, 100.0 * (double)used / (double)cap);
    p_run = (run_fn)dlsym(h, "plugin_run");
    p_objects = (run_fn)dlsym(h, "plugin_objects");
    p_obj_new = (void *(*)(void))dlsym(h, "plugin_obj_new");
    p_obj_drop = (void (*)(void *))dlsym(h, "plugin_obj_drop");
    p_deallocs = (unsigned long (*)(void))dlsym(h, "plugin_obj_deallocs");
    cr_assert(p_run && p_objects && p_obj_new && p_obj_drop && p_deallocs, "plugin symbols: %s",
              dlerror());

    /* 3. it works: main thread, new threads, an object dropped by another thread */
    cr_assert_eq(p_run(3), 0);
    cr_assert_eq(p_objects(500), 0, "plugin_objects in the main thread");
    /* one at a time: plugin_objects counts deallocations in a process-wide
     * counter, so threads running it at once would see each other's */
    for (int i = 0; i < 3; i++) {
        pthread_t t;
        void *res;
        cr_assert_eq(pthread_create(&t, NULL, plugin_thread, NULL), 0);
        pthread_join(t, &res);
        cr_assert_null(res, "plugin in a new thread failed with code %ld", (long)(intptr_t)res);
    }
    unsigned long d0 = p_deallocs();
    void *o = p_obj_new();
    cr_assert_not_null(o);
    pthread_t d;
    cr_assert_eq(pthread_create(&d, NULL, drop_thread, o), 0);
    pthread_join(d, NULL);
    /* the drop was a shared decref: the owner (us) merges and frees it */
    cr_assert_eq(p_deallocs() - d0, 1ul, "an object dropped by another thread was not freed");
    rmdir(g_dir);
}
