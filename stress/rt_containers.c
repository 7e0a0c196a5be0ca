/* rt_containers.c — the example runtime's containers (examples/runtime:
 * ints, strs, tuples, lists, dicts) shared by more threads than cores.
 *
 * Shared: NL lists, NMB mailbox lists and ND dicts, made by a setup thread
 * that exits (so the main thread owns, and frees, nothing after the
 * baseline).  --threads slots each run `gens` threads one after the other:
 * a thread does its operations, then starts its successor, hands it its
 * log and the objects it holds (its stash), and exits — so objects outlive
 * their creators and are released by threads that never owned them.
 * Each operation, picked at random:
 *   lists     append (bounded length), pop (sometimes a run of pops), set at
 *             a random index, lock-free get (also past the end), repr;
 *   dicts     set / del / get of the slot's own keys (int keys and fresh
 *             str keys, found by value), get of other slots' keys, set /
 *             get / del of shared keys (interned names — canonical instance
 *             or a fresh equal str — and small ints), len, items snapshots;
 *   tuples    made of what the thread read (list gets, dict gets, its
 *             stash), nested up to MAXDEPTH, then stored in a list, a dict,
 *             the stash or a mailbox;
 *   mailboxes a message (tag, id, payload) posted to a mailbox list and
 *             popped by whichever thread comes next;
 *   interning the same names interned by every thread at once, strs read
 *             from the containers interned (a bounded number);
 *   detach, sleep, attach while holding the stash; safepoints.
 * Values carry their identity: an int is (serial, seq, 12-bit check), a
 * str's every byte is a function of (seed, serial, seq), a tuple is (id
 * int, item count, depth, items...).  `serial` names the thread that made
 * the value and seq the operation.
 *
 * Checks:
 *   - every object read (list get/pop, dict get, items, tuple items, stash
 *     after a detached sleep) is intact: its type is a runtime type, its
 *     check bits, bytes, item count and depth are right, small ints are the
 *     cached instances;
 *   - a slot's own dict keys are changed only by the slot's threads, so a
 *     get returns the very value (identity) the slot's log says, or ENOENT,
 *     and a del succeeds exactly when the log says the key is present;
 *     items snapshots agree with the log;
 *   - every message is received exactly once or is still in a mailbox;
 *   - interned strs: one instance per value (a CAS table of canonical
 *     names; strs interned from the containers checked against fresh equal
 *     copies and, at the end, against each other), immortal;
 *   - at the end (on a last thread, which then exits): each list's length is
 *     what the logs' appends minus pops say, each dict's size the logged
 *     own keys plus the shared keys found, every item intact,
 *     rt_str_intern_count grew by exactly the values interned;
 *   - after that thread dropped every container and every thread has
 *     exited or called ftm_thread_flush: ftm_object_stats created == freed
 *     + the objects made immortal (rt_immortal_count()), nothing waiting
 *     for a grace period, live blocks == baseline + immortal objects + their
 *     intern-table entries, no large block, no extra thread heap, abandoned
 *     pools and slices within what the immortal objects pin (obj_util.h's
 *     leak check, with objects and blocks counted apart).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "obj_util.h"
#include "rt.h"

#define NL 6          /* shared lists */
#define NMB 3         /* mailbox lists */
#define ND 4          /* shared dicts */
#define NK 32         /* own keys per slot per dict (even: int, odd: str) */
#define NNAMES 32     /* interned names, shared dict keys */
#define NSMALLKEYS 16 /* small ints 0..15, shared dict keys */
#define STASH 16      /* objects a thread holds */
#define LIST_MAX 160  /* appends turn into pops beyond this length */
#define MBOX_MAX 256  /* posts turn into receives beyond this length */
#define TUP_ITEMS 3   /* items of a tuple besides (id, n, depth) */
#define MAXDEPTH 4    /* tuple nesting */
#define VINT_MAX 96   /* strs from the containers that may be interned */
#define MSG_SERIAL ((1ull << 22) - 1)
#define SEQ_BITS 28

/* identities: kind, serial, seq */
enum { K_INT = 1, K_STR, K_TUP, K_SMALL, K_NAME };
#define IDENT(k, ser, seq) ((uint64_t)(k) << 56 | (uint64_t)(ser) << SEQ_BITS | (uint64_t)(seq))
#define ID_KIND(id) ((unsigned)((id) >> 56))
#define ID_SER(id) ((uint64_t)(((id) >> SEQ_BITS) & ((1ull << 28) - 1)))

enum { MSG_NONE = 0, MSG_POSTED, MSG_RECEIVED, MSG_FOUND };

typedef struct slot_s {
    int slot, gen;                 /* gen: the generation now running */
    pthread_t th[64];              /* th[g] written by generation g-1 before it exits */
    uint64_t expect[ND][NK];       /* identity of the value under own key k, 0: absent */
    long long app[NL], pops[NL];   /* successful appends / pops by this slot's threads */
    long long mb_app[NMB], mb_pop[NMB];
    ftm_object *stash[STASH];      /* references, handed to the successor */
    int nstash;
} slot_t;

typedef struct ctx_s {
    slot_t *s;
    uint64_t serial, seq;
    stress_rng_t r;
} ctx_t;

static stress_opts_t opt = { .name = "rt_containers" };
static int nslots, gens, ops_per_thread;
static uint64_t max_serial;
static slot_t *slots;
static ftm_object *lists[NL], *mboxes[NMB], *dicts[ND];
static ftm_object *msgtag;                     /* interned "msg" */
static ftm_object *small[RT_SMALL_INT_COUNT];  /* the cached instances */
static _Atomic(ftm_object *) canon_name[NNAMES];
static _Atomic uint64_t canon_ser[NNAMES];     /* serial of the thread whose str won (0: main) */
static _Atomic uint8_t *msg_state;
static uint64_t msg_cap;
static _Atomic uint64_t msg_next;
static _Atomic(ftm_object *) vint_rec[VINT_MAX]; /* strs interned from the containers */
static _Atomic uint64_t vint_ser[VINT_MAX];
static _Atomic uint64_t vint_n;

enum {
    C_APPEND, C_POP, C_SET, C_GET, C_GET_MISS, C_REPR, C_DSET, C_DDEL, C_DGET, C_DOTHER, C_DSHARED,
    C_ITEMS, C_TUPLE, C_POST, C_RECV, C_PEEK, C_INTERN, C_VINTERN, C_SLEEP, C_NEW, C_NCOUNT
};
static const char *const cnames[C_NCOUNT] = {
    "appends", "pops", "sets", "gets", "gets past the end", "reprs", "own-key sets",
    "own-key dels", "own-key gets", "other-key gets", "shared-key ops", "items snapshots",
    "tuples of reads", "messages posted", "received", "mailbox peeks", "name interns",
    "str interns", "detached sleeps", "values made"
};
static _Atomic unsigned long long counts[C_NCOUNT];

/* ---- values ----------------------------------------------------------------- */

static uint64_t int_chk(uint64_t serial, uint64_t seq)
{
    return stress_key3(opt.seed, serial, seq) & 0xfff;
}

static int64_t int_enc(uint64_t serial, uint64_t seq)
{
    return (int64_t)(serial << 40 | seq << 12 | int_chk(serial, seq));
}

/* "v<serial>.<seq>:" + filler + "#": every byte from (seed, serial, seq) */
static size_t vstr_build(char *buf, uint64_t serial, uint64_t seq)
{
    int n = snprintf(buf, 40, "v%" PRIx64 ".%" PRIx64 ":", serial, seq);
    uint64_t h = stress_key3(opt.seed, serial, seq ^ 0x5757);
    size_t fill = (size_t)(h % 97);
    for (size_t i = 0; i < fill; i++) {
        h = h * 6364136223846793005ull + 1442695040888963407ull;
        buf[(size_t)n + i] = (char)('a' + (h >> 58) % 26);
    }
    buf[(size_t)n + fill] = '#';
    return (size_t)n + fill + 1;
}

static void name_of(char *buf, int k)
{
    snprintf(buf, 16, "name-%02d", k);
}

static ftm_object *checked(ftm_object *o, const char *what)
{
    if (o == NULL)
        stress_fail("%s returned NULL (errno %d)", what, errno);
    return o;
}

static void type_check(ftm_object *o, const char *what)
{
    const ftm_type *t = ftm_type_of(o);
    if (t != &rt_int_type && t != &rt_str_type && t != &rt_tuple_type)
        stress_fail("%s: object %p has type %p, not int/str/tuple (freed and reused?)", what,
                    (void *)o, (const void *)t);
}

static void canon_note(int k, ftm_object *c, const char *what)
{
    ftm_object *expect = NULL;
    /* acq_rel: the first to see a canonical instance publishes it */
    if (!atomic_compare_exchange_strong_explicit(&canon_name[k], &expect, c, memory_order_acq_rel,
                                                 memory_order_acquire) &&
        expect != c)
        stress_fail("%s: name-%02d has two interned instances, %p and %p", what, k,
                    (void *)expect, (void *)c);
}

static uint64_t check_obj(ftm_object *o, const char *what);

static uint64_t check_int(ftm_object *o, const char *what)
{
    int64_t v = rt_int_value(o);
    if (v >= RT_SMALL_INT_MIN && v <= RT_SMALL_INT_MAX) {
        if (o != small[v - RT_SMALL_INT_MIN] || !ftm_is_immortal(o))
            stress_fail("%s: int %" PRId64 " at %p is not the cached immortal instance %p", what,
                        v, (void *)o, (void *)small[v - RT_SMALL_INT_MIN]);
        return IDENT(K_SMALL, 0, (uint64_t)(v - RT_SMALL_INT_MIN));
    }
    uint64_t u = (uint64_t)v, ser = u >> 40, seq = (u >> 12) & ((1ull << SEQ_BITS) - 1);
    if (v < 0 || ser == 0 || (ser > max_serial && ser != MSG_SERIAL) ||
        (u & 0xfff) != int_chk(ser, seq))
        stress_fail("%s: int %p holds %" PRId64 " (%#" PRIx64 "): not a value any thread made "
                    "(serial %" PRIu64 ", seq %" PRIu64 ", check %#" PRIx64 ")",
                    what, (void *)o, v, u, ser, seq, u & 0xfff);
    return IDENT(K_INT, ser, seq);
}

static uint64_t parse_hex(const char **p)
{
    uint64_t v = 0;
    int n = 0;
    for (;; (*p)++, n++) {
        char c = **p;
        if (c >= '0' && c <= '9')
            v = v * 16 + (uint64_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v = v * 16 + (uint64_t)(c - 'a' + 10);
        else
            break;
        if (n > 16)
            break;
    }
    return v;
}

static uint64_t check_str(ftm_object *o, const char *what)
{
    const char *p = rt_str_data(o);
    size_t n = rt_str_len(o);
    if (p[n] != '\0')
        stress_fail("%s: str %p of length %zu is not NUL-terminated", what, (void *)o, n);
    if (n == 7 && memcmp(p, "name-", 5) == 0 && p[5] >= '0' && p[5] <= '9' && p[6] >= '0' &&
        p[6] <= '9') {
        int k = (p[5] - '0') * 10 + (p[6] - '0');
        if (k >= NNAMES)
            stress_fail("%s: str '%s' is no name in use", what, p);
        /* an immortal name is an interned one: it must be the canonical one */
        if (ftm_is_immortal(o))
            canon_note(k, o, what);
        return IDENT(K_NAME, 0, (uint64_t)k);
    }
    if (n > 1 && p[0] == 'v') {
        const char *q = p + 1;
        uint64_t ser = parse_hex(&q);
        uint64_t seq = *q == '.' ? (q++, parse_hex(&q)) : UINT64_MAX;
        char buf[160];
        if (ser == 0 || ser > max_serial || seq >= (1ull << SEQ_BITS))
            stress_fail("%s: str %p '%.60s' (length %zu) names no value made", what, (void *)o,
                        p, n);
        size_t m = vstr_build(buf, ser, seq);
        if (m != n || memcmp(buf, p, n) != 0)
            stress_fail("%s: str %p (length %zu, expected %zu) differs from the value %" PRIu64
                        ".%" PRIu64 " it claims to be: '%.80s'",
                        what, (void *)o, n, m, ser, seq, p);
        return IDENT(K_STR, ser, seq);
    }
    stress_fail("%s: str %p holds '%.60s' (length %zu): no value any thread made", what,
                (void *)o, p, n);
}

/* A small int, checked: its value. */
static int64_t small_value(ftm_object *o, const char *what)
{
    if (!rt_int_check(o))
        stress_fail("%s: tuple header item %p is a %s, not an int", what, (void *)o,
                    ftm_type_of(o) == &rt_str_type ? "str" : "non-int");
    check_int(o, what);
    return rt_int_value(o);
}

static uint64_t check_tuple(ftm_object *t, const char *what, int64_t *depth_out)
{
    size_t n = rt_tuple_len(t);
    if (n < 4 || n > 3 + TUP_ITEMS)
        stress_fail("%s: tuple %p has %zu items (4..%d expected)", what, (void *)t, n,
                    3 + TUP_ITEMS);
    ftm_object *a0 = checked(rt_tuple_get(t, 0), "rt_tuple_get");
    if (a0 == msgtag)
        stress_fail("%s: tuple %p is a message, outside every mailbox", what, (void *)t);
    if (!rt_int_check(a0))
        stress_fail("%s: tuple %p: item 0 is not an int", what, (void *)t);
    uint64_t id = check_int(a0, what);
    if (ID_KIND(id) != K_INT || ID_SER(id) == MSG_SERIAL)
        stress_fail("%s: tuple %p: item 0 is no tuple id", what, (void *)t);
    ftm_object *a1 = checked(rt_tuple_get(t, 1), "rt_tuple_get");
    ftm_object *a2 = checked(rt_tuple_get(t, 2), "rt_tuple_get");
    int64_t cnt = small_value(a1, what), depth = small_value(a2, what);
    if (cnt != (int64_t)n - 3 || depth < 1 || depth > MAXDEPTH)
        stress_fail("%s: tuple %p of %zu items says %" PRId64 " items, depth %" PRId64, what,
                    (void *)t, n, cnt, depth);
    int64_t maxd = 0;
    for (size_t i = 3; i < n; i++) {
        ftm_object *x = checked(rt_tuple_get(t, i), "rt_tuple_get");
        type_check(x, what);
        if (rt_tuple_check(x)) {
            int64_t d;
            check_tuple(x, what, &d);
            if (d > maxd)
                maxd = d;
        } else {
            check_obj(x, what);
        }
        ftm_decref(x);
    }
    if (depth != maxd + 1)
        stress_fail("%s: tuple %p says depth %" PRId64 ", its items %" PRId64, what, (void *)t,
                    depth, maxd + 1);
    ftm_decref(a0);
    ftm_decref(a1);
    ftm_decref(a2);
    if (depth_out)
        *depth_out = depth;
    return IDENT(K_TUP, ID_SER(id), id & ((1ull << SEQ_BITS) - 1));
}

/* Any value (int, str, tuple) the caller holds a reference to: intact.
 * Returns its identity. */
static uint64_t check_obj(ftm_object *o, const char *what)
{
    type_check(o, what);
    if (rt_int_check(o)) {
        uint64_t id = check_int(o, what);
        if (ID_SER(id) == MSG_SERIAL && ID_KIND(id) == K_INT)
            stress_fail("%s: a message id %p outside its message", what, (void *)o);
        return id;
    }
    if (rt_str_check(o))
        return check_str(o, what);
    return check_tuple(o, what, NULL);
}

static int64_t tuple_depth(ftm_object *t)
{
    if (!rt_tuple_check(t))
        return 0;
    ftm_object *a2 = rt_tuple_get(t, 2);
    int64_t d = rt_int_value(a2);
    ftm_decref(a2);
    return d;
}

/* A message (tag, id int, payload): its id; *payload gets a reference. */
static uint64_t check_msg(ftm_object *m, ftm_object **payload, const char *what)
{
    if (!rt_tuple_check(m) || rt_tuple_len(m) != 3)
        stress_fail("%s: mailbox item %p is not a message", what, (void *)m);
    ftm_object *a0 = rt_tuple_get(m, 0), *a1 = rt_tuple_get(m, 1), *p = rt_tuple_get(m, 2);
    if (a0 != msgtag || !rt_int_check(a1))
        stress_fail("%s: message %p: bad tag %p or id", what, (void *)m, (void *)a0);
    uint64_t id = check_int(a1, what);
    if (ID_SER(id) != MSG_SERIAL)
        stress_fail("%s: message %p: id int of serial %" PRIu64, what, (void *)m, ID_SER(id));
    uint64_t mid = id & ((1ull << SEQ_BITS) - 1);
    if (mid >= atomic_load_explicit(&msg_next, memory_order_relaxed))
        stress_fail("%s: message id %" PRIu64 " was never handed out", what, mid);
    check_obj(p, what);
    ftm_decref(a0);
    ftm_decref(a1);
    if (payload)
        *payload = p;
    else
        ftm_decref(p);
    return mid;
}

/* ---- a thread's operations ---------------------------------------------------- */

static uint64_t below(ctx_t *c, uint64_t n)
{
    return stress_below(&c->r, n);
}

static void count(int k)
{
    atomic_fetch_add_explicit(&counts[k], 1, memory_order_relaxed);
}

static uint64_t next_seq(ctx_t *c)
{
    if (++c->seq >= (1ull << SEQ_BITS))
        stress_fail("harness: more than 2^28 values in one thread");
    return c->seq;
}

static ftm_object *new_int(ctx_t *c)
{
    return checked(rt_int_new(int_enc(c->serial, next_seq(c))), "rt_int_new");
}

/* The canonical instance of name k (a reference); interns it if needed. */
static ftm_object *get_name(ctx_t *c, int k, bool force_intern)
{
    ftm_object *cn = atomic_load_explicit(&canon_name[k], memory_order_acquire);
    if (cn != NULL && !force_intern)
        return ftm_newref(cn);
    char nm[16];
    name_of(nm, k);
    ftm_object *s = checked(rt_str_from_cstr(nm), "rt_str_from_cstr");
    ftm_object *ci = checked(rt_str_intern(s), "rt_str_intern");
    if (ci == s) /* ours won: this thread allocated its table entry */
        atomic_store_explicit(&canon_ser[k], c->serial, memory_order_relaxed);
    if (!rt_str_check(ci) || strcmp(rt_str_data(ci), nm) != 0 || !ftm_is_immortal(ci))
        stress_fail("rt_str_intern('%s') gave %p: not an immortal str of that value", nm,
                    (void *)ci);
    canon_note(k, ci, "rt_str_intern (name)");
    if (rt_str_intern(ci) != ci)
        stress_fail("rt_str_intern of the canonical '%s' is not itself", nm);
    ftm_decref(s);
    count(C_INTERN);
    return ci;
}

static void stash_put(ctx_t *c, ftm_object *o) /* steals o */
{
    slot_t *s = c->s;
    if (s->nstash < STASH) {
        s->stash[s->nstash++] = o;
        return;
    }
    int k = (int)below(c, STASH);
    ftm_object *old = s->stash[k];
    s->stash[k] = o;
    ftm_decref(old);
}

static void stash_check(ctx_t *c, const char *what)
{
    for (int i = 0; i < c->s->nstash; i++)
        check_obj(c->s->stash[i], what);
}

static ftm_object *new_tuple_of(ctx_t *c, ftm_object **items, int n) /* borrows items */
{
    int64_t maxd = 0;
    for (int i = 0; i < n; i++) {
        int64_t d = tuple_depth(items[i]);
        if (d > maxd)
            maxd = d;
    }
    ftm_object *arr[3 + TUP_ITEMS];
    arr[0] = new_int(c);
    arr[1] = small[n - RT_SMALL_INT_MIN];
    arr[2] = small[maxd + 1 - RT_SMALL_INT_MIN];
    for (int i = 0; i < n; i++)
        arr[3 + i] = items[i];
    ftm_object *t = checked(rt_tuple_new((size_t)n + 3, arr), "rt_tuple_new");
    ftm_decref(arr[0]);
    return t;
}

/* A reference to a value made now: an int, a str, or a tuple of stashed
 * objects, small ints and fresh ints. */
static ftm_object *new_value(ctx_t *c)
{
    count(C_NEW);
    unsigned k = (unsigned)below(c, 10);
    if (k < 4)
        return new_int(c);
    if (k < 7) {
        char buf[160];
        uint64_t seq = next_seq(c);
        size_t n = vstr_build(buf, c->serial, seq);
        return checked(rt_str_new(buf, n), "rt_str_new");
    }
    ftm_object *items[TUP_ITEMS];
    int n = 1 + (int)below(c, TUP_ITEMS);
    for (int i = 0; i < n; i++) {
        unsigned w = (unsigned)below(c, 3);
        if (w == 0 && c->s->nstash > 0 &&
            tuple_depth(c->s->stash[i % c->s->nstash]) < MAXDEPTH)
            items[i] = ftm_newref(c->s->stash[i % c->s->nstash]);
        else if (w == 1)
            items[i] = new_int(c);
        else
            items[i] = small[below(c, RT_SMALL_INT_COUNT)];
    }
    ftm_object *t = new_tuple_of(c, items, n);
    for (int i = 0; i < n; i++)
        ftm_decref(items[i]);
    return t;
}

/* A reference to something to store: new, stashed, a small int or a name. */
static ftm_object *pick_value(ctx_t *c)
{
    unsigned w = (unsigned)below(c, 20);
    if (w < 10)
        return new_value(c);
    if (w < 15 && c->s->nstash > 0)
        return ftm_newref(c->s->stash[below(c, (uint64_t)c->s->nstash)]);
    if (w < 18)
        return small[below(c, RT_SMALL_INT_COUNT)];
    return get_name(c, (int)below(c, NNAMES), false);
}

/* Own key k of slot sl: even k an int, odd k a str, made afresh. */
static ftm_object *own_key(int sl, int k)
{
    if (k % 2 == 0)
        return checked(rt_int_new(-(((int64_t)sl + 1) << 20 | k)), "rt_int_new");
    char buf[32];
    snprintf(buf, sizeof buf, "k%d.%d", sl, k);
    return checked(rt_str_from_cstr(buf), "rt_str_from_cstr");
}

/* Classify a dict key: 1 own key of slot *sl (index *k), 2 shared. */
static int key_class(ftm_object *key, int *sl, int *k, const char *what)
{
    if (rt_int_check(key)) {
        int64_t v = rt_int_value(key);
        if (v >= 0 && v < NSMALLKEYS && key == small[v - RT_SMALL_INT_MIN])
            return 2;
        uint64_t u = v < 0 ? (uint64_t)(-v) : 0;
        if (v < 0 && (u >> 20) >= 1 && (u >> 20) <= (uint64_t)nslots && (u & 0xfffff) < NK &&
            (u & 1) == 0) {
            *sl = (int)(u >> 20) - 1;
            *k = (int)(u & 0xfffff);
            return 1;
        }
        stress_fail("%s: dict key int %" PRId64 " is no key any thread used", what, v);
    }
    if (rt_str_check(key)) {
        const char *p = rt_str_data(key);
        int a, b, used = 0;
        if (rt_str_len(key) == 7 && memcmp(p, "name-", 5) == 0 &&
            ID_KIND(check_str(key, what)) == K_NAME)
            return 2;
        if (sscanf(p, "k%d.%d%n", &a, &b, &used) == 2 && (size_t)used == rt_str_len(key) &&
            a >= 0 && a < nslots && b >= 0 && b < NK && b % 2 == 1) {
            *sl = a;
            *k = b;
            return 1;
        }
        stress_fail("%s: dict key str '%.60s' is no key any thread used", what, p);
    }
    stress_fail("%s: dict key %p is neither int nor str", what, (void *)key);
}

static ftm_object *random_list(ctx_t *c, int *idx)
{
    int i = (int)below(c, NL);
    if (idx)
        *idx = i;
    return lists[i];
}

/* A list item read lock-free, checked (a reference), or NULL. */
static ftm_object *list_read(ctx_t *c)
{
    ftm_object *l = random_list(c, NULL);
    size_t n = rt_list_len(l);
    size_t i = (size_t)below(c, n + 2);
    errno = 0;
    ftm_object *v = rt_list_get(l, i);
    if (v == NULL) {
        if (errno != ERANGE)
            stress_fail("rt_list_get(%zu) of a list of %zu: NULL with errno %d, not ERANGE", i,
                        n, errno);
        count(C_GET_MISS);
        return NULL;
    }
    count(C_GET);
    check_obj(v, "rt_list_get");
    return v;
}

static void op_append(ctx_t *c, ftm_object *v) /* steals v */
{
    int li;
    ftm_object *l = random_list(c, &li);
    if (rt_list_append(l, v) != 0)
        stress_fail("rt_list_append: errno %d", errno);
    c->s->app[li]++;
    ftm_decref(v);
    count(C_APPEND);
}

static void op_pop(ctx_t *c)
{
    int li;
    ftm_object *l = random_list(c, &li);
    int runs = stress_one_in(&c->r, 16) ? 1 + (int)below(c, 48) : 1;
    for (int j = 0; j < runs; j++) {
        errno = 0;
        ftm_object *v = rt_list_pop(l);
        if (v == NULL) {
            if (errno != ERANGE)
                stress_fail("rt_list_pop: NULL with errno %d, not ERANGE", errno);
            return;
        }
        c->s->pops[li]++;
        count(C_POP);
        check_obj(v, "rt_list_pop");
        if (j == 0 && stress_one_in(&c->r, 3))
            stash_put(c, v);
        else
            ftm_decref(v);
    }
}

static void op_set(ctx_t *c)
{
    ftm_object *l = random_list(c, NULL);
    size_t n = rt_list_len(l);
    if (n == 0)
        return;
    size_t i = (size_t)below(c, n);
    ftm_object *v = pick_value(c);
    errno = 0;
    if (rt_list_set(l, i, v) != 0 && errno != ERANGE)
        stress_fail("rt_list_set(%zu): errno %d", i, errno);
    ftm_decref(v);
    count(C_SET);
}

static void op_dict_own(ctx_t *c, unsigned how)
{
    int di = (int)below(c, ND), k = (int)below(c, NK);
    ftm_object *d = dicts[di];
    ftm_object *key = own_key(c->s->slot, k);
    uint64_t *e = &c->s->expect[di][k];
    if (how == 0) { /* set */
        ftm_object *v = pick_value(c);
        uint64_t id = check_obj(v, "own-key value");
        if (rt_dict_set(d, key, v) != 0)
            stress_fail("rt_dict_set: errno %d", errno);
        *e = id;
        ftm_decref(v);
        count(C_DSET);
    } else if (how == 1) { /* del */
        errno = 0;
        int rc = rt_dict_del(d, key);
        if (*e != 0 && rc != 0)
            stress_fail("rt_dict_del of slot %d's key %d in dict %d: -1 (errno %d), but the key "
                        "holds value %#" PRIx64 " by the log",
                        c->s->slot, k, di, errno, *e);
        if (*e == 0 && (rc != -1 || errno != ENOENT))
            stress_fail("rt_dict_del of slot %d's absent key %d in dict %d: %d (errno %d)",
                        c->s->slot, k, di, rc, errno);
        *e = 0;
        count(C_DDEL);
    } else { /* get */
        errno = 0;
        ftm_object *v = rt_dict_get(d, key);
        if (*e == 0) {
            if (v != NULL || errno != ENOENT)
                stress_fail("rt_dict_get of slot %d's absent key %d in dict %d: %p (errno %d)",
                            c->s->slot, k, di, (void *)v, errno);
        } else {
            if (v == NULL)
                stress_fail("rt_dict_get of slot %d's key %d in dict %d: NULL (errno %d), the "
                            "log says %#" PRIx64,
                            c->s->slot, k, di, errno, *e);
            uint64_t id = check_obj(v, "rt_dict_get (own key)");
            if (id != *e)
                stress_fail("rt_dict_get of slot %d's key %d in dict %d: value %#" PRIx64
                            ", the log says %#" PRIx64,
                            c->s->slot, k, di, id, *e);
            if (stress_one_in(&c->r, 4))
                stash_put(c, v);
            else
                ftm_decref(v);
        }
        count(C_DGET);
    }
    ftm_decref(key);
}

/* A dict value read by a key the thread does not control (a reference), or NULL. */
static ftm_object *dict_read(ctx_t *c)
{
    ftm_object *d = dicts[below(c, ND)], *key;
    if (stress_one_in(&c->r, 2)) {
        key = own_key((int)below(c, (uint64_t)nslots), (int)below(c, NK));
        count(C_DOTHER);
    } else {
        unsigned u = (unsigned)below(c, NNAMES + NSMALLKEYS);
        if (u >= NNAMES) {
            key = small[u - NNAMES - RT_SMALL_INT_MIN];
        } else if (stress_one_in(&c->r, 2)) {
            key = get_name(c, (int)u, false);
        } else {
            char nm[16];
            name_of(nm, (int)u);
            key = checked(rt_str_from_cstr(nm), "rt_str_from_cstr");
        }
        count(C_DSHARED);
    }
    errno = 0;
    ftm_object *v = rt_dict_get(d, key);
    if (v == NULL && errno != ENOENT)
        stress_fail("rt_dict_get: NULL with errno %d", errno);
    if (v != NULL)
        check_obj(v, "rt_dict_get");
    ftm_decref(key);
    return v;
}

static void op_dict_shared(ctx_t *c)
{
    ftm_object *d = dicts[below(c, ND)], *key;
    unsigned u = (unsigned)below(c, NNAMES + NSMALLKEYS);
    if (u >= NNAMES) {
        key = small[u - NNAMES - RT_SMALL_INT_MIN];
    } else if (stress_one_in(&c->r, 2)) {
        key = get_name(c, (int)u, false);
    } else {
        char nm[16];
        name_of(nm, (int)u);
        key = checked(rt_str_from_cstr(nm), "rt_str_from_cstr");
    }
    unsigned how = (unsigned)below(c, 3);
    if (how == 0) {
        ftm_object *v = pick_value(c);
        if (rt_dict_set(d, key, v) != 0)
            stress_fail("rt_dict_set (shared key): errno %d", errno);
        ftm_decref(v);
    } else if (how == 1) {
        errno = 0;
        if (rt_dict_del(d, key) != 0 && errno != ENOENT)
            stress_fail("rt_dict_del (shared key): errno %d", errno);
    } else {
        errno = 0;
        ftm_object *v = rt_dict_get(d, key);
        if (v == NULL && errno != ENOENT)
            stress_fail("rt_dict_get (shared key): errno %d", errno);
        if (v != NULL) {
            check_obj(v, "rt_dict_get (shared key)");
            ftm_decref(v);
        }
    }
    ftm_decref(key);
    count(C_DSHARED);
}

/* An items snapshot: every pair intact; this slot's keys exactly as logged.
 * Returns the number of pairs; *own_out / *shared_out count the key kinds
 * (own keys of every slot). */
static size_t check_items(ftm_object *d, int di, int only_slot, size_t *own_out,
                          size_t *shared_out, const char *what)
{
    ftm_object *items = checked(rt_dict_items(d), "rt_dict_items");
    size_t n = rt_list_len(items), own = 0, shared = 0, mine = 0;
    for (size_t i = 0; i < n; i++) {
        ftm_object *pair = checked(rt_list_get(items, i), "rt_list_get (items)");
        if (!rt_tuple_check(pair) || rt_tuple_len(pair) != 2)
            stress_fail("%s: item %zu of an items snapshot is not a pair", what, i);
        ftm_object *key = rt_tuple_get(pair, 0), *v = rt_tuple_get(pair, 1);
        uint64_t id = check_obj(v, what);
        int sl = -1, k = -1;
        if (key_class(key, &sl, &k, what) == 1) {
            own++;
            /* another slot's log is its running thread's alone: read ours,
             * or every slot's once they have all exited */
            uint64_t e = only_slot < 0 || sl == only_slot ? slots[sl].expect[di][k] : id;
            if ((only_slot < 0 || sl == only_slot) && (mine++, e != id))
                stress_fail("%s: dict %d, slot %d's key %d holds %#" PRIx64 ", the log says "
                            "%#" PRIx64,
                            what, di, sl, k, id, e);
        } else {
            shared++;
        }
        ftm_decref(key);
        ftm_decref(v);
        ftm_decref(pair);
    }
    ftm_decref(items);
    size_t logged = 0;
    for (int s0 = 0; s0 < nslots; s0++) {
        if (only_slot >= 0 && s0 != only_slot)
            continue;
        for (int k = 0; k < NK; k++)
            logged += slots[s0].expect[di][k] != 0;
    }
    if (mine != logged)
        stress_fail("%s: dict %d: %zu of the logged keys in a snapshot, %zu logged", what, di,
                    mine, logged);
    if (own_out)
        *own_out = own;
    if (shared_out)
        *shared_out = shared;
    return n;
}

static void op_items(ctx_t *c)
{
    int di = (int)below(c, ND);
    size_t own = 0;
    for (int k = 0; k < NK; k++)
        own += c->s->expect[di][k] != 0;
    size_t len = rt_dict_len(dicts[di]);
    if (len < own)
        stress_fail("rt_dict_len = %zu, below the %zu keys slot %d keeps in it", len, own,
                    c->s->slot);
    check_items(dicts[di], di, c->s->slot, NULL, NULL, "rt_dict_items");
    count(C_ITEMS);
}

static void post(ctx_t *c, ftm_object *payload) /* borrows payload */
{
    uint64_t id = atomic_fetch_add_explicit(&msg_next, 1, memory_order_relaxed);
    if (id >= msg_cap)
        stress_fail("harness: more than %" PRIu64 " messages", msg_cap);
    ftm_object *idint = checked(rt_int_new(int_enc(MSG_SERIAL, id)), "rt_int_new");
    ftm_object *m = checked(rt_tuple_pack(3, msgtag, idint, payload), "rt_tuple_pack");
    /* release: with the list's own ordering, a receiver sees POSTED */
    atomic_store_explicit(&msg_state[id], MSG_POSTED, memory_order_release);
    int mb = (int)below(c, NMB);
    if (rt_list_append(mboxes[mb], m) != 0)
        stress_fail("rt_list_append (mailbox): errno %d", errno);
    c->s->mb_app[mb]++;
    ftm_decref(idint);
    ftm_decref(m);
    count(C_POST);
}

static void receive(ctx_t *c)
{
    int mb = (int)below(c, NMB);
    if (stress_one_in(&c->r, 4)) { /* a lock-free peek */
        size_t n = rt_list_len(mboxes[mb]);
        ftm_object *m = n ? rt_list_get(mboxes[mb], (size_t)below(c, n)) : NULL;
        if (m != NULL) {
            uint64_t id = check_msg(m, NULL, "mailbox peek");
            uint8_t st = atomic_load_explicit(&msg_state[id], memory_order_acquire);
            if (st != MSG_POSTED && st != MSG_RECEIVED)
                stress_fail("mailbox peek: message %" PRIu64 " in state %u", id, st);
            ftm_decref(m);
        }
        count(C_PEEK);
        return;
    }
    errno = 0;
    ftm_object *m = rt_list_pop(mboxes[mb]);
    if (m == NULL) {
        if (errno != ERANGE)
            stress_fail("rt_list_pop (mailbox): errno %d", errno);
        return;
    }
    c->s->mb_pop[mb]++;
    ftm_object *payload;
    uint64_t id = check_msg(m, &payload, "received message");
    uint8_t st = MSG_POSTED;
    /* acq_rel: exactly one receiver per message */
    if (!atomic_compare_exchange_strong_explicit(&msg_state[id], &st, MSG_RECEIVED,
                                                 memory_order_acq_rel, memory_order_acquire))
        stress_fail("message %" PRIu64 " received while in state %u (twice?)", id, st);
    ftm_decref(m);
    if (stress_one_in(&c->r, 2))
        stash_put(c, payload);
    else
        ftm_decref(payload);
    count(C_RECV);
}

/* Intern a str read from the containers (or stashed): bounded in number. */
static void intern_value(ctx_t *c, ftm_object *s) /* borrows s */
{
    uint64_t n = atomic_fetch_add_explicit(&vint_n, 1, memory_order_relaxed);
    if (n >= VINT_MAX)
        return;
    bool was = ftm_is_immortal(s);
    ftm_object *ci = checked(rt_str_intern(s), "rt_str_intern");
    if (!rt_str_check(ci) || rt_str_len(ci) != rt_str_len(s) ||
        memcmp(rt_str_data(ci), rt_str_data(s), rt_str_len(s)) != 0 || !ftm_is_immortal(ci))
        stress_fail("rt_str_intern(%p '%.40s') gave %p: not an immortal equal str", (void *)s,
                    rt_str_data(s), (void *)ci);
    if (was && ci != s)
        stress_fail("rt_str_intern of an interned (immortal) str %p gave another, %p",
                    (void *)s, (void *)ci);
    ftm_object *copy = checked(rt_str_new(rt_str_data(s), rt_str_len(s)), "rt_str_new");
    ftm_object *c2 = checked(rt_str_intern(copy), "rt_str_intern");
    if (c2 != ci)
        stress_fail("str '%.40s' interned as %p and as %p", rt_str_data(s), (void *)ci,
                    (void *)c2);
    ftm_decref(c2);
    ftm_decref(copy);
    atomic_store_explicit(&vint_ser[n], c->serial, memory_order_relaxed);
    atomic_store_explicit(&vint_rec[n], ci, memory_order_release);
    ftm_decref(ci);
    count(C_VINTERN);
}

static void op_tuple_of_reads(ctx_t *c)
{
    ftm_object *items[TUP_ITEMS];
    int n = 1 + (int)below(c, TUP_ITEMS);
    for (int i = 0; i < n; i++) {
        unsigned w = (unsigned)below(c, 3);
        ftm_object *x = NULL;
        if (w == 0)
            x = list_read(c);
        else if (w == 1)
            x = dict_read(c);
        else if (c->s->nstash > 0)
            x = ftm_newref(c->s->stash[below(c, (uint64_t)c->s->nstash)]);
        if (x != NULL && tuple_depth(x) >= MAXDEPTH) {
            ftm_decref(x);
            x = NULL;
        }
        items[i] = x != NULL ? x : small[i];
    }
    ftm_object *t = new_tuple_of(c, items, n);
    for (int i = 0; i < n; i++)
        ftm_decref(items[i]);
    check_obj(t, "new tuple of reads");
    count(C_TUPLE);
    switch (below(c, 4)) {
    case 0:
        op_append(c, t);
        break;
    case 1: {
        int di = (int)below(c, ND), k = (int)below(c, NK);
        ftm_object *key = own_key(c->s->slot, k);
        if (rt_dict_set(dicts[di], key, t) != 0)
            stress_fail("rt_dict_set: errno %d", errno);
        c->s->expect[di][k] = check_obj(t, "tuple stored");
        ftm_decref(key);
        ftm_decref(t);
        break;
    }
    case 2:
        stash_put(c, t);
        break;
    default:
        post(c, t);
        ftm_decref(t);
    }
}

static void op_misc(ctx_t *c)
{
    unsigned w = (unsigned)below(c, 16);
    if (w < 4) { /* a name, interned by every thread at once */
        ftm_decref(get_name(c, (int)below(c, NNAMES), true));
    } else if (w < 6) { /* a str from the stash or a list */
        ftm_object *s = NULL;
        for (int i = 0; i < c->s->nstash && s == NULL; i++)
            if (rt_str_check(c->s->stash[i]))
                s = ftm_newref(c->s->stash[i]);
        if (s == NULL)
            s = list_read(c);
        if (s != NULL && rt_str_check(s) && ID_KIND(check_obj(s, "to intern")) == K_STR)
            intern_value(c, s);
        ftm_xdecref(s);
    } else if (w < 8) { /* hash and equality of a fresh equal str */
        ftm_object *s = list_read(c);
        if (s != NULL && rt_str_check(s)) {
            ftm_object *copy = checked(rt_str_new(rt_str_data(s), rt_str_len(s)), "rt_str_new");
            if (!rt_eq(s, copy) || rt_hash(s) != rt_hash(copy))
                stress_fail("str %p and an equal copy: rt_eq %d, hashes %#" PRIx64 " %#" PRIx64,
                            (void *)s, rt_eq(s, copy), rt_hash(s), rt_hash(copy));
            ftm_decref(copy);
        }
        ftm_xdecref(s);
    } else if (w < 9) { /* repr of a list other threads are changing */
        char buf[256];
        size_t n = rt_repr(random_list(c, NULL), buf, sizeof buf);
        if (n < 2 || buf[0] != '[')
            stress_fail("rt_repr of a list: '%.60s' (%zu)", buf, n);
        count(C_REPR);
    } else if (w < 11) {
        /* a blocking call, detached, holding the stash.  Rare and short:
         * under TSan every blocking call costs far more than its length on
         * a loaded machine (a 100 us sleep took ~100 ms at loadavg 15) */
        if (!stress_one_in(&c->r, 4)) {
            ftm_safepoint();
            return;
        }
        ftm_thread_detach();
        struct timespec ts = { 0, 10000 + (long)below(c, 50000) };
        nanosleep(&ts, NULL);
        ftm_thread_attach();
        stash_check(c, "stash after a detached sleep");
        count(C_SLEEP);
    } else if (w < 13) {
        stash_check(c, "stash");
        if (c->s->nstash > 0 && stress_one_in(&c->r, 2))
            ftm_decref(c->s->stash[--c->s->nstash]);
    } else if (w < 14) {
        op_items(c);
    } else {
        ftm_safepoint();
    }
}

static void *worker_main(void *arg)
{
    slot_t *s = arg;
    ctx_t c = { .s = s, .serial = (uint64_t)s->gen * (uint64_t)nslots + (uint64_t)s->slot + 1 };
    c.r = stress_rng(opt.seed, c.serial);
    stash_check(&c, "stash handed over by the predecessor");
    for (int op = 0; op < ops_per_thread; op++) {
        unsigned w = (unsigned)below(&c, 100);
        if (w < 12) {
            ftm_object *l = lists[below(&c, NL)];
            if (rt_list_len(l) >= LIST_MAX)
                op_pop(&c);
            else
                op_append(&c, pick_value(&c));
        } else if (w < 20) {
            op_pop(&c);
        } else if (w < 25) {
            op_set(&c);
        } else if (w < 38) {
            ftm_object *v = list_read(&c);
            if (v != NULL && stress_one_in(&c.r, 5))
                stash_put(&c, v);
            else
                ftm_xdecref(v);
        } else if (w < 62) {
            op_dict_own(&c, w < 46 ? 0 : w < 51 ? 1 : 2);
        } else if (w < 68) {
            ftm_xdecref(dict_read(&c));
        } else if (w < 72) {
            op_dict_shared(&c);
        } else if (w < 80) {
            op_tuple_of_reads(&c);
        } else if (w < 86) {
            if (rt_list_len(mboxes[below(&c, NMB)]) >= MBOX_MAX) {
                receive(&c);
                continue;
            }
            ftm_object *p = pick_value(&c);
            post(&c, p);
            ftm_decref(p);
        } else if (w < 93) {
            receive(&c);
        } else {
            op_misc(&c);
        }
    }
    if (s->gen + 1 < gens) {
        /* the successor gets the log and the stash (our references) */
        s->gen++;
        stress_thread_start(&s->th[s->gen], worker_main, s);
        return NULL; /* s is the successor's now */
    }
    for (int i = 0; i < s->nstash; i++) {
        if (i % 2)
            op_append(&c, s->stash[i]);
        else
            ftm_decref(s->stash[i]);
    }
    s->nstash = 0;
    ftm_thread_flush();
    return NULL;
}

/* ---- setup, the final checks, the leak check ------------------------------------ */

static void *setup_main(void *arg)
{
    (void)arg;
    /* the containers are owned by this thread, which exits: every thread
     * (main too) counts on them as a non-owner; the final thread drops the
     * references made here */
    for (int i = 0; i < NL; i++)
        lists[i] = checked(rt_list_new(), "rt_list_new");
    for (int i = 0; i < NMB; i++)
        mboxes[i] = checked(rt_list_new(), "rt_list_new");
    for (int i = 0; i < ND; i++)
        dicts[i] = checked(rt_dict_new(), "rt_dict_new");
    return NULL;
}

static int cmp_str_obj(const void *a, const void *b)
{
    ftm_object *x = *(ftm_object *const *)a, *y = *(ftm_object *const *)b;
    size_t lx = rt_str_len(x), ly = rt_str_len(y);
    int r = memcmp(rt_str_data(x), rt_str_data(y), lx < ly ? lx : ly);
    if (r == 0)
        r = lx < ly ? -1 : lx > ly;
    if (r == 0)
        r = (uintptr_t)x < (uintptr_t)y ? -1 : (uintptr_t)x > (uintptr_t)y;
    return r;
}

static struct {
    uint64_t names, vints, list_items, dict_items, msgs_left, msgs;
} fin;

/* Everything, from one thread after every worker exited; then drop the
 * containers, so that every death happens here (and this thread's free
 * lists and quarantine go at its exit). */
static void *final_main(void *arg)
{
    (void)arg;
    /* lists: appends - pops, every item intact */
    for (int li = 0; li < NL; li++) {
        long long want = 0;
        for (int s = 0; s < nslots; s++)
            want += slots[s].app[li] - slots[s].pops[li];
        size_t n = rt_list_len(lists[li]);
        if ((long long)n != want)
            stress_fail("list %d has %zu items, the logs' appends - pops say %lld", li, n, want);
        for (size_t i = 0; i < n; i++) {
            ftm_object *v = checked(rt_list_get(lists[li], i), "rt_list_get");
            check_obj(v, "list item at the end");
            ftm_decref(v);
        }
        fin.list_items += n;
    }
    /* mailboxes: every message received once or still there */
    for (int mb = 0; mb < NMB; mb++) {
        long long want = 0;
        for (int s = 0; s < nslots; s++)
            want += slots[s].mb_app[mb] - slots[s].mb_pop[mb];
        size_t n = rt_list_len(mboxes[mb]);
        if ((long long)n != want)
            stress_fail("mailbox %d has %zu messages, the logs say %lld", mb, n, want);
        for (size_t i = 0; i < n; i++) {
            ftm_object *m = checked(rt_list_get(mboxes[mb], i), "rt_list_get");
            uint64_t id = check_msg(m, NULL, "message at the end");
            uint8_t st = MSG_POSTED;
            if (!atomic_compare_exchange_strong_explicit(&msg_state[id], &st, MSG_FOUND,
                                                         memory_order_acq_rel,
                                                         memory_order_acquire))
                stress_fail("message %" PRIu64 " in a mailbox at the end is in state %u", id, st);
            ftm_decref(m);
        }
        fin.msgs_left += n;
    }
    fin.msgs = atomic_load_explicit(&msg_next, memory_order_relaxed);
    for (uint64_t id = 0; id < fin.msgs; id++) {
        uint8_t st = atomic_load_explicit(&msg_state[id], memory_order_acquire);
        if (st != MSG_RECEIVED && st != MSG_FOUND)
            stress_fail("message %" PRIu64 " was posted, never received and is in no mailbox "
                        "(state %u)",
                        id, st);
    }
    /* dicts: own keys as logged, shared keys counted; len and items agree */
    for (int di = 0; di < ND; di++) {
        size_t own = 0, shared = 0;
        for (int s = 0; s < nslots; s++) {
            for (int k = 0; k < NK; k++) {
                ftm_object *key = own_key(s, k);
                uint64_t e = slots[s].expect[di][k];
                errno = 0;
                ftm_object *v = rt_dict_get(dicts[di], key);
                if ((v == NULL) != (e == 0) || (v == NULL && errno != ENOENT))
                    stress_fail("dict %d at the end: slot %d's key %d: %p (errno %d), the log "
                                "says %#" PRIx64,
                                di, s, k, (void *)v, errno, e);
                if (v != NULL) {
                    if (check_obj(v, "dict value at the end") != e)
                        stress_fail("dict %d at the end: slot %d's key %d holds another value",
                                    di, s, k);
                    ftm_decref(v);
                    own++;
                }
                ftm_decref(key);
            }
        }
        for (int u = 0; u < NNAMES + NSMALLKEYS; u++) {
            ftm_object *key;
            if (u < NNAMES) {
                char nm[16];
                name_of(nm, u);
                key = checked(rt_str_from_cstr(nm), "rt_str_from_cstr");
            } else {
                key = small[u - NNAMES - RT_SMALL_INT_MIN];
            }
            ftm_object *v = rt_dict_get(dicts[di], key);
            if (v != NULL) {
                check_obj(v, "dict value at the end");
                ftm_decref(v);
                shared++;
            }
            ftm_decref(key);
        }
        size_t len = rt_dict_len(dicts[di]);
        if (len != own + shared)
            stress_fail("dict %d at the end: rt_dict_len = %zu, but %zu logged own keys + %zu "
                        "shared keys are in it",
                        di, len, own, shared);
        size_t iown = 0, ishared = 0;
        size_t ni = check_items(dicts[di], di, -1, &iown, &ishared, "items at the end");
        if (ni != len || iown != own || ishared != shared)
            stress_fail("dict %d at the end: items has %zu pairs (%zu own, %zu shared keys), "
                        "len %zu (%zu own, %zu shared)",
                        di, ni, iown, ishared, len, own, shared);
        fin.dict_items += len;
    }
    /* names: one canonical instance each */
    for (int k = 0; k < NNAMES; k++) {
        ftm_object *cn = atomic_load_explicit(&canon_name[k], memory_order_acquire);
        if (cn == NULL)
            continue;
        char nm[16];
        name_of(nm, k);
        ftm_object *again = checked(rt_str_intern_cstr(nm), "rt_str_intern_cstr");
        if (again != cn)
            stress_fail("name-%02d interned again at the end gave %p, not %p", k, (void *)again,
                        (void *)cn);
        fin.names++;
    }
    /* strs interned from the containers: equal values, one instance */
    uint64_t nv = atomic_load_explicit(&vint_n, memory_order_relaxed);
    if (nv > VINT_MAX)
        nv = VINT_MAX;
    ftm_object *recs[VINT_MAX];
    size_t nr = 0;
    for (uint64_t i = 0; i < nv; i++) {
        ftm_object *v = atomic_load_explicit(&vint_rec[i], memory_order_acquire);
        if (v == NULL)
            stress_fail("harness: interned record %" PRIu64 " empty", i);
        check_obj(v, "interned str at the end");
        recs[nr++] = v;
    }
    qsort(recs, nr, sizeof *recs, cmp_str_obj);
    for (size_t i = 0; i < nr; i++) {
        if (i > 0 && rt_eq(recs[i], recs[i - 1]) && recs[i] != recs[i - 1])
            stress_fail("str '%.40s' has two interned instances, %p and %p", rt_str_data(recs[i]),
                        (void *)recs[i - 1], (void *)recs[i]);
        if (i == 0 || recs[i] != recs[i - 1])
            fin.vints++;
    }
    /* drop every container: all but the immortal objects die, here */
    for (int i = 0; i < NL; i++)
        ftm_decref(lists[i]);
    for (int i = 0; i < NMB; i++)
        ftm_decref(mboxes[i]);
    for (int i = 0; i < ND; i++)
        ftm_decref(dicts[i]);
    ftm_thread_flush();
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t distinct(uint64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_u64);
    uint64_t d = 0;
    for (size_t i = 0; i < n; i++)
        d += i == 0 || v[i] != v[i - 1];
    return d;
}

/* obj_leak_check (obj_util.h) with the kept objects and the kept blocks
 * counted apart: an interned str keeps its object and its table entry. */
static void leak_check(const obj_base_t *b, uint64_t kept_objects, uint64_t kept_blocks,
                       unsigned long long abandoned_allow, unsigned long long slice_allow)
{
    ftm_thread_flush();
    ftm_object_stats_t os;
    ftm_object_stats_get(&os);
    uint64_t created = os.created - b->obj.created, freed = os.freed - b->obj.freed;
    if (created != freed + kept_objects)
        stress_fail("at the end: ftm_object_stats: %" PRIu64 " objects created, %" PRIu64
                    " freed since the baseline (expected %" PRIu64 " never freed: "
                    "rt_immortal_count grew by that much)",
                    created, freed, kept_objects);
    if (os.deferred_pending != 0)
        stress_fail("at the end: %" PRIu64 " blocks still waiting for a grace period",
                    os.deferred_pending);
    if (os.threads != b->obj.threads)
        stress_fail("at the end: %" PRIu64 " thread states registered, %" PRIu64 " at the baseline",
                    os.threads, b->obj.threads);
    ftm_collect(true);
    ftm_stats_t s;
    stress_stats(&s);
    unsigned long long mallocs = s.malloc_count - b->mem.malloc_count;
    unsigned long long frees = s.free_count - b->mem.free_count;
    if (s.live_count != b->mem.live_count + kept_blocks || mallocs != frees + kept_blocks)
        stress_fail("at the end: live_count %llu, baseline %llu + %llu kept blocks (%llu handed "
                    "out, %llu freed since)",
                    s.live_count, b->mem.live_count, (unsigned long long)kept_blocks, mallocs,
                    frees);
    if (s.large_count != b->mem.large_count)
        stress_fail("at the end: large_count %llu, baseline %llu", s.large_count,
                    b->mem.large_count);
    if (s.threads > b->mem.threads)
        stress_fail("at the end: %llu thread heaps (baseline %llu)", s.threads, b->mem.threads);
    if (s.abandoned_pools > abandoned_allow || s.pools > b->mem.pools + slice_allow) {
        ftm_stats_print(stderr);
        stress_fail("at the end: %llu abandoned pools (allowed %llu), %llu slices in pools "
                    "(baseline %llu + %llu allowed)",
                    s.abandoned_pools, abandoned_allow, s.pools, b->mem.pools, slice_allow);
    }
    stress_note("leak check: %" PRIu64 " objects created, %" PRIu64 " freed, %" PRIu64
                " immortal; live blocks %llu (baseline %llu + %" PRIu64 "); slices %llu "
                "(baseline %llu); abandoned pools %llu (allowed %llu)",
                created, freed, kept_objects, s.live_count, b->mem.live_count, kept_blocks,
                s.pools, b->mem.pools, s.abandoned_pools, abandoned_allow);
}

int main(int argc, char **argv)
{
    stress_parse(&opt, argc, argv, 6, NULL);
    nslots = opt.threads;
    gens = opt.smoke ? 4 : 8;
    ops_per_thread = opt.smoke ? 7000 : 320000;
    max_serial = (uint64_t)nslots * (uint64_t)gens;
    if (gens > 64 || max_serial >= MSG_SERIAL)
        stress_fail("harness: too many threads");
    msg_cap = max_serial * (uint64_t)ops_per_thread + 16;
    msg_state = calloc((size_t)msg_cap, sizeof *msg_state);
    slots = calloc((size_t)nslots, sizeof *slots);
    if (msg_state == NULL || slots == NULL)
        stress_fail("out of memory for the harness");

    /* warm-up: the small-int cache and the intern table exist, this
     * thread's object state (epoch record, bags) is made */
    for (int v = RT_SMALL_INT_MIN; v <= RT_SMALL_INT_MAX; v++)
        small[v - RT_SMALL_INT_MIN] = rt_int_new(v);
    if (rt_str_intern_cstr("rt_containers: warm-up") == NULL)
        stress_fail("rt_str_intern_cstr failed");
    {
        ftm_object *l = checked(rt_list_new(), "rt_list_new");
        for (int i = 0; i < 100; i++)
            rt_list_append(l, small[i]);
        ftm_decref(checked(rt_list_get(l, 7), "rt_list_get"));
        ftm_decref(l);
    }
    obj_base_t base;
    obj_baseline(&base);
    size_t imm_base = rt_immortal_count(), intern_base = rt_str_intern_count();

    /* the first half of the names and the message tag: interned by main
     * (immortal, so main frees nothing from here on) */
    msgtag = checked(rt_str_intern_cstr("msg"), "rt_str_intern_cstr");
    for (int k = 0; k < NNAMES / 2; k++) {
        char nm[16];
        name_of(nm, k);
        canon_note(k, checked(rt_str_intern_cstr(nm), "rt_str_intern_cstr"), "main");
    }

    double t0 = stress_now();
    ftm_thread_detach(); /* main only blocks in joins from here */
    pthread_t th;
    stress_thread_start(&th, setup_main, NULL);
    stress_thread_join(th);
    for (int i = 0; i < nslots; i++) {
        slots[i].slot = i;
        stress_thread_start(&slots[i].th[0], worker_main, &slots[i]);
    }
    for (int i = 0; i < nslots; i++)
        for (int g = 0; g < gens; g++) /* th[g] is set before generation g-1 exits */
            stress_thread_join(slots[i].th[g]);
    double t_run = stress_now() - t0;
    stress_thread_start(&th, final_main, NULL);
    stress_thread_join(th);
    ftm_thread_attach();

    /* what stays: the interned strs (objects + table entries) */
    size_t interned = rt_str_intern_count() - intern_base;
    uint64_t kept = rt_immortal_count() - imm_base;
    if (interned != fin.names + fin.vints + 1)
        stress_fail("rt_str_intern_count grew by %zu: %" PRIu64 " names + %" PRIu64
                    " strs + the tag were interned",
                    interned, fin.names, fin.vints);
    if (kept != interned)
        stress_fail("rt_immortal_count grew by %" PRIu64 ", the intern table by %zu", kept,
                    interned);
    /* the pools they pin (of threads that have exited): their slices, and
     * one pool of table entries per thread that interned */
    uint64_t addr[NNAMES + VINT_MAX], sers[NNAMES + VINT_MAX];
    size_t na = 0, ns = 0;
    for (int k = 0; k < NNAMES; k++) {
        ftm_object *cn = atomic_load_explicit(&canon_name[k], memory_order_acquire);
        if (cn != NULL && atomic_load_explicit(&canon_ser[k], memory_order_relaxed) != 0) {
            addr[na++] = (uint64_t)(uintptr_t)cn >> 16;
            sers[ns++] = atomic_load_explicit(&canon_ser[k], memory_order_relaxed);
        }
    }
    uint64_t nv = atomic_load_explicit(&vint_n, memory_order_relaxed);
    for (uint64_t i = 0; i < nv && i < VINT_MAX; i++) {
        addr[na++] = (uint64_t)(uintptr_t)atomic_load_explicit(&vint_rec[i], memory_order_relaxed) >> 16;
        sers[ns++] = atomic_load_explicit(&vint_ser[i], memory_order_relaxed);
    }
    unsigned long long pin_slices = distinct(addr, na), pin_threads = distinct(sers, ns);
    unsigned long long pin = pin_slices + pin_threads;
    stress_note("immortal objects made by workers: on %llu slices; %llu threads made table "
                "entries", pin_slices, pin_threads);
    leak_check(&base, kept, 2 * kept, pin, pin + OBJ_SLICE_SLACK);

    unsigned long long cnt[C_NCOUNT];
    for (int i = 0; i < C_NCOUNT; i++)
        cnt[i] = atomic_load_explicit(&counts[i], memory_order_relaxed);
    char line[1024];
    size_t off = 0;
    for (int i = 0; i < C_NCOUNT; i++)
        off += (size_t)snprintf(line + off, sizeof line - off, "%s%llu %s", i ? ", " : "", cnt[i],
                                cnames[i]);
    stress_note("OK: %d slots x %d threads in turn x %d ops, %d lists, %d mailboxes, %d dicts; "
                "%.2f s", nslots, gens, ops_per_thread, NL, NMB, ND, t_run);
    stress_note("ops: %s", line);
    stress_note("at the end: %" PRIu64 " list items, %" PRIu64 " dict entries, %" PRIu64
                " of %" PRIu64 " messages in mailboxes; interned: %" PRIu64 " names, %" PRIu64
                " strs from the containers",
                fin.list_items, fin.dict_items, fin.msgs_left, fin.msgs, fin.names, fin.vints);
    free(msg_state);
    free(slots);
    return 0;
}
