/* dl_plugin.c — a shared library linked against libftmem, loaded with
 * dlopen() by test_dlopen.c (which does not link ftmem itself): ftmem must
 * work when it arrives after start-up, in threads that existed before. */
#include <stdint.h>
#include <string.h>

#include <ftmem.h>

#define PLUGIN_API __attribute__((visibility("default")))

/* Allocate, verify and free `rounds` batches of mixed sizes; 0 on success,
 * otherwise a code saying what went wrong. */
PLUGIN_API int plugin_run(int rounds)
{
    enum { N = 500 };
    void *p[N];
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < N; i++) {
            size_t n = (i % 50 == 0) ? (size_t)2 << 20 : (size_t)(i % 300) * 8 + 1;
            p[i] = ftm_malloc(n);
            if (!p[i])
                return 1;
            if (ftm_usable_size(p[i]) < n)
                return 2;
            memset(p[i], (i + r) & 0xff, n < 256 ? n : 256);
        }
        for (int i = 0; i < N; i++) {
            size_t n = (i % 50 == 0) ? (size_t)2 << 20 : (size_t)(i % 300) * 8 + 1;
            const unsigned char *c = p[i];
            for (size_t k = 0; k < (n < 256 ? n : 256); k++)
                if (c[k] != ((i + r) & 0xff))
                    return 3;
            if (i % 3 == 0)
                p[i] = ftm_realloc(p[i], n * 2);
            if (!p[i])
                return 4;
            ftm_free(p[i]);
        }
    }
    void *z = ftm_calloc(100, 100);
    if (!z || ((unsigned char *)z)[9999] != 0)
        return 5;
    ftm_free(z);
    return 0;
}

/* Blocks handed across the plugin boundary, freed by another thread. */
PLUGIN_API void *plugin_alloc(size_t n)
{
    return ftm_malloc(n);
}

PLUGIN_API void plugin_free(void *p)
{
    ftm_free(p);
}

PLUGIN_API size_t plugin_usable(const void *p)
{
    return ftm_usable_size(p);
}

PLUGIN_API unsigned long long plugin_live(void)
{
    ftm_stats_t s;
    ftm_stats_get(&s);
    return s.live_count;
}

/* ---- The object API from the plugin (test_dlopen_tls) ---------------------
 * The inline ftm_incref/ftm_decref read libftmem's initial-exec ftm__tid
 * from here, so the plugin itself carries a static-TLS relocation. */
typedef struct pnode_s {
    ftm_object ob;
    ftm_field next;
    uint64_t v;
} pnode_t;

static _Atomic unsigned long plugin_deallocs, plugin_callbacks;

static int pnode_traverse(ftm_object *self, ftm_visitproc visit, void *arg)
{
    ftm_object *n = ftm_field_peek(&((pnode_t *)self)->next);
    return n ? visit(n, arg) : 0;
}
static void pnode_clear(ftm_object *self)
{
    ftm_field_clear(&((pnode_t *)self)->next);
}
static void pnode_dealloc(ftm_object *self)
{
    (void)self;
    atomic_fetch_add_explicit(&plugin_deallocs, 1, memory_order_relaxed);
}
static ftm_type pnode_type = {
    .name = "plugin_node",
    .basic_size = sizeof(pnode_t),
    .flags = FTM_TYPE_FREELIST,
    .traverse = pnode_traverse,
    .clear = pnode_clear,
    .dealloc = pnode_dealloc,
};
static void plugin_cb(ftm_weakref *wr, void *arg)
{
    (void)wr;
    (void)arg;
    atomic_fetch_add_explicit(&plugin_callbacks, 1, memory_order_relaxed);
}

/* A chain of n nodes through fields, loads, a weak reference with a
 * callback, then everything dropped; 0 on success, else a code. */
PLUGIN_API int plugin_objects(int n)
{
    unsigned long d0 = atomic_load(&plugin_deallocs), c0 = atomic_load(&plugin_callbacks);
    ftm_object *head = NULL;
    for (int i = 0; i < n; i++) {
        pnode_t *p = (pnode_t *)ftm_new(&pnode_type);
        if (p == NULL)
            return 10;
        p->v = (uint64_t)i;
        ftm_field_init(&p->next, head);
        head = &p->ob;
    }
    ftm_weakref *w = ftm_weakref_new(head, plugin_cb, NULL);
    if (w == NULL)
        return 11;
    /* walk the chain with loads (new references) */
    ftm_object *cur = ftm_newref(head);
    for (int i = n - 1; i >= 0; i--) {
        if (cur == NULL || ((pnode_t *)cur)->v != (uint64_t)i)
            return 12;
        ftm_object *next = ftm_field_load(&((pnode_t *)cur)->next);
        ftm_decref(cur);
        cur = next;
    }
    if (cur != NULL)
        return 13;
    ftm_object *g = ftm_weakref_get(w);
    if (g != head)
        return 14;
    ftm_decref(g);
    ftm_decref(head); /* the whole chain dies; the callback runs */
    if (ftm_weakref_get(w) != NULL)
        return 15;
    ftm_weakref_release(w);
    ftm_thread_flush();
    if (atomic_load(&plugin_deallocs) - d0 != (unsigned long)n)
        return 16;
    if (atomic_load(&plugin_callbacks) - c0 != 1)
        return 17;
    return 0;
}

/* An object handed across threads: made on one, dropped on another. */
PLUGIN_API void *plugin_obj_new(void)
{
    return ftm_new(&pnode_type);
}

PLUGIN_API void plugin_obj_drop(void *o)
{
    ftm_decref((ftm_object *)o);
}

PLUGIN_API unsigned long plugin_obj_deallocs(void)
{
    ftm_thread_flush();
    return atomic_load(&plugin_deallocs);
}
