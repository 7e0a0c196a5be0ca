/* test_object_abort.c — reference counting misuse that must abort with
 * "ftmem: ... (type NAME)": decrefs below zero (always detected where the
 * header says so), and in FTMEM_DEBUG / FTMEM_SECURE builds
 * (FTMEM_TEST_OBJECT_CHECKS=1) increfs and decrefs of freed objects,
 * try-incref without enabling it, and a detached thread touching objects.
 * Each case runs in a forked child whose stderr is captured. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>

#include "ftm_test.h"
#include <ftmem.h>

#ifndef FTMEM_TEST_OBJECT_CHECKS
#error "FTMEM_TEST_OBJECT_CHECKS must be defined (0 or 1) by tests/CMakeLists.txt"
#endif

TestSuite(object_abort, .timeout = 60);

typedef struct {
    ftm_object ob;
    uint64_t payload;
} ab_obj;
static ftm_type ab_type = {.name = "abort_obj", .basic_size = sizeof(ab_obj)};
#define TYPE_TAG "(type abort_obj)"

static ftm_object *g_obj;

typedef void (*case_fn)(void *);

/* The child aborts; its stderr holds `what_msg`, names the object's type
 * and (when known) the object's address. */
static void expect_object_abort(case_fn fn, const char *what, const char *what_msg)
{
    ftt_child_t r;
    char st[128];
    ftt_run_child(fn, NULL, 20, &r);
    cr_assert(r.status != -1, "%s: could not fork", what);
    cr_assert(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT, "%s: child %s, expected SIGABRT; stderr:\n%s",
              what, ftt_status_str(r.status, st, sizeof st), r.err);
    const char *m = strstr(r.err, "ftmem: ");
    cr_assert(m != NULL, "%s: no \"ftmem: \" message:\n%s", what, r.err);
    cr_assert(strstr(m, what_msg) != NULL, "%s: message lacks \"%s\":\n%s", what, what_msg, r.err);
    cr_assert(strstr(m, TYPE_TAG) != NULL, "%s: message does not name the type " TYPE_TAG ":\n%s", what, r.err);
}

/* The child's object address is not known to the parent; the child writes
 * it first ("obj=0x...") so the parent can compare it with the message. */
static void announce(ftm_object *o)
{
    char buf[64];
    int n = snprintf(buf, sizeof buf, "obj=%p\n", (void *)o);
    ssize_t w = write(STDERR_FILENO, buf, (size_t)n);
    (void)w;
}

static void expect_names_object(case_fn fn, const char *what, const char *what_msg)
{
    ftt_child_t r;
    char st[128];
    ftt_run_child(fn, NULL, 20, &r);
    cr_assert(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT, "%s: child %s, expected SIGABRT; stderr:\n%s",
              what, ftt_status_str(r.status, st, sizeof st), r.err);
    const char *a = strstr(r.err, "obj=");
    cr_assert(a != NULL, "%s: the child did not announce its object:\n%s", what, r.err);
    unsigned long long obj = strtoull(a + 4, NULL, 16);
    const char *m = strstr(r.err, what_msg);
    cr_assert(m != NULL, "%s: stderr lacks \"%s\":\n%s", what, what_msg, r.err);
    const char *hex = strstr(m, "0x");
    cr_assert(hex != NULL, "%s: message names no address:\n%s", what, r.err);
    unsigned long long named = strtoull(hex, NULL, 16);
    cr_assert_eq(named, obj, "%s: message names 0x%llx, the object is 0x%llx:\n%s", what, named, obj, r.err);
    cr_assert(strstr(m, TYPE_TAG) != NULL, "%s: message does not name the type:\n%s", what, r.err);
}

static void *run_fn(void *arg)
{
    ((void (*)(void))arg)();
    return NULL;
}
static void in_thread(void (*fn)(void))
{
    pthread_t t;
    pthread_create(&t, NULL, run_fn, (void *)fn);
    pthread_join(t, NULL);
}
static void decref_g(void) { ftm_decref(g_obj); }
static void incref_g(void) { ftm_incref(g_obj); }

/* ---- detected in every build ------------------------------------------------ */

/* An object that was stored in a field (so its memory waits for a grace
 * period) dies by its owner's decref; one decref too many by the owner. */
static void owner_extra_decref_shared(void *arg)
{
    static ftm_field slot;
    ftm_object *o = ftm_new(&ab_type);
    announce(o);
    ftm_field_init(&slot, ftm_newref(o));
    ftm_decref(o);
    ftm_field_clear(&slot); /* the last reference: o dies */
    ftm_decref(o);          /* one too many */
}

Test(object_abort, owner_decref_below_zero)
{
    expect_names_object(owner_extra_decref_shared, "owner decref of a dead (field-stored) object", "ftmem: ");
    expect_object_abort(owner_extra_decref_shared, "owner decref below zero", "decref");
}

/* try-incref enabled: death is a CAS to MERGED|0; one more decref from the
 * owner or another thread goes below zero there. */
static void merged_extra_decref_owner(void *arg)
{
    ftm_object *o = ftm_new(&ab_type);
    ftm_enable_try_incref(o);
    ftm_decref(o);
    ftm_decref(o);
}
/* (the object dies on this thread, which stays alive: its memory waits in
 * this thread's epoch bag, so the late decref reads a valid header) */
static void merged_dead_extra_decref_other(void *arg)
{
    g_obj = ftm_new(&ab_type);
    ftm_enable_try_incref(g_obj);
    ftm_decref(g_obj);   /* dies here, through MERGED|0 */
    in_thread(decref_g); /* one too many, on another thread */
    _exit(0);
}

Test(object_abort, merged_decref_below_zero)
{
    expect_object_abort(merged_extra_decref_owner, "owner decref below zero (merged)", "decref");
    expect_object_abort(merged_dead_extra_decref_other, "other thread's decref below zero (merged)", "decref");
}

/* Another thread drops a reference it never had: the shared count of a
 * live object goes negative; the owner's merge finds the total below zero. */
static void other_thread_extra_decref(void *arg)
{
    g_obj = ftm_new(&ab_type);
    announce(g_obj);
    in_thread(decref_g); /* the owner's reference, handed over: queued */
    in_thread(decref_g); /* one too many */
    ftm_safepoint();     /* merge: count -1 */
    _exit(0);
}

Test(object_abort, other_thread_extra_decref_caught_at_merge)
{
    expect_names_object(other_thread_extra_decref, "extra decref by another thread", "below zero");
}

/* A field that holds an object whose reference the caller dropped. */
static void field_holds_dead_object(void *arg)
{
    static ftm_field slot;
    ftm_object *o = ftm_new(&ab_type);
    ftm_field_init(&slot, o); /* steals the only reference... */
    ftm_decref(o);            /* ...which the caller drops anyway: o dies in the field */
    ftm_object *got = ftm_field_load(&slot);
    (void)got;
    _exit(0);
}

Test(object_abort, field_load_of_dead_object)
{
    expect_object_abort(field_holds_dead_object, "field_load of a dead object", "ftm_field_load");
}

/* ---- debug / secure builds only ------------------------------------------------ */

#if FTMEM_TEST_OBJECT_CHECKS
#define DEBUG_ONLY()
#else
#define DEBUG_ONLY() cr_skip_test("freed-object checks are on in FTMEM_DEBUG / FTMEM_SECURE builds only")
#endif

static void decref_freed(void *arg)
{
    ftm_object *o = ftm_new(&ab_type);
    announce(o);
    ftm_decref(o);
    ftm_decref(o);
    _exit(0);
}
static void incref_freed(void *arg)
{
    ftm_object *o = ftm_new(&ab_type);
    announce(o);
    ftm_decref(o);
    ftm_incref(o);
    _exit(0);
}
static void decref_freed_other_thread(void *arg)
{
    g_obj = ftm_new(&ab_type);
    announce(g_obj);
    ftm_decref(g_obj);
    in_thread(decref_g);
    _exit(0);
}
static void incref_freed_other_thread(void *arg)
{
    g_obj = ftm_new(&ab_type);
    announce(g_obj);
    ftm_decref(g_obj);
    in_thread(incref_g);
    _exit(0);
}
/* objects whose memory waits for a grace period (stored in a field, try-
 * incref enabled) are reported as well */
static void incref_freed_field_object(void *arg)
{
    static ftm_field slot;
    ftm_object *o = ftm_new(&ab_type);
    announce(o);
    ftm_field_init(&slot, o);
    ftm_field_clear(&slot);
    ftm_incref(o);
    _exit(0);
}
static void incref_freed_merged_object(void *arg)
{
    g_obj = ftm_new(&ab_type);
    announce(g_obj);
    ftm_enable_try_incref(g_obj);
    ftm_decref(g_obj);   /* dies here (MERGED|0); memory in our epoch bag */
    in_thread(incref_g); /* another thread's late incref */
    _exit(0);
}
/* a freed object whose quarantine slot has not come round yet: many other
 * frees in between */
static void decref_freed_after_churn(void *arg)
{
    ftm_object *o = ftm_new(&ab_type);
    announce(o);
    ftm_decref(o);
    for (int i = 0; i < 500; i++)
        ftm_decref(ftm_new(&ab_type));
    ftm_decref(o);
    _exit(0);
}

Test(object_abort, decref_of_freed_object)
{
    DEBUG_ONLY();
    expect_names_object(decref_freed, "owner decref of a freed object", "decref of a freed object");
    expect_names_object(decref_freed_other_thread, "other thread's decref of a freed object", "decref of a freed object");
    expect_names_object(decref_freed_after_churn, "decref of a freed object after 500 other frees", "decref of a freed object");
}

Test(object_abort, incref_of_freed_object)
{
    DEBUG_ONLY();
    expect_names_object(incref_freed, "owner incref of a freed object", "incref of a freed object");
    expect_names_object(incref_freed_other_thread, "other thread's incref of a freed object", "incref of a freed object");
}

Test(object_abort, incref_of_freed_shared_object)
{
    DEBUG_ONLY();
    expect_names_object(incref_freed_field_object, "incref of a freed field-stored object", "incref of a freed object");
    expect_names_object(incref_freed_merged_object, "incref of a freed merged object", "incref of a freed object");
}

static void other_try_incref(void) { (void)ftm_try_incref(g_obj); }
static void try_incref_not_enabled(void *arg)
{
    g_obj = ftm_new(&ab_type);
    in_thread(other_try_incref);
    _exit(0);
}

Test(object_abort, try_incref_without_enable)
{
    DEBUG_ONLY();
    expect_object_abort(try_incref_not_enabled, "try_incref without enable", "ftm_enable_try_incref");
}

/* "A detached thread must not touch objects (debug builds check this)." */
static void new_while_detached(void *arg)
{
    ftm_object *o = ftm_new(&ab_type);
    ftm_thread_detach();
    ftm_object *p = ftm_new(&ab_type);
    (void)o;
    (void)p;
    _exit(0);
}
static void field_load_while_detached(void *arg)
{
    static ftm_field slot;
    ftm_field_init(&slot, ftm_new(&ab_type));
    ftm_thread_detach();
    ftm_object *o = ftm_field_load(&slot);
    (void)o;
    _exit(0);
}

Test(object_abort, detached_thread_touching_objects)
{
    DEBUG_ONLY();
    ftt_child_t r;
    char st[128];
    ftt_run_child(new_while_detached, NULL, 20, &r);
    cr_assert(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT && strstr(r.err, "ftmem: ") != NULL,
              "ftm_new on a detached thread: child %s, expected SIGABRT with an ftmem message; stderr:\n%s",
              ftt_status_str(r.status, st, sizeof st), r.err);
    ftt_run_child(field_load_while_detached, NULL, 20, &r);
    cr_assert(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT && strstr(r.err, "ftmem: ") != NULL,
              "ftm_field_load on a detached thread: child %s, expected SIGABRT with an ftmem message; stderr:\n%s",
              ftt_status_str(r.status, st, sizeof st), r.err);
}
