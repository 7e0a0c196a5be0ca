/* weakref.c — weak references (CPython's weakref, free-threaded flavour).
 *
 * A weak reference is an object of ftm_weakref_type holding its referent
 * without a count.  The referents' lists of weak references live in a side
 * table (the header has no room for a list pointer): 64 stripes by address,
 * each a lock (lockfree/spinlock.h) and a Concurrency Kit ck_hs from referent to list — the
 * striped-lock scheme CPython's free-threaded build uses for weakref lists.
 *
 * Why a get never returns a half-dead object: creating a weak reference
 * enables try-incref on the referent (MAYBE_WEAKREF), so its death is a
 * CAS to MERGED|0 on ob_ref_shared, after which every try-incref fails.
 * ftm_weakref_get reads the referent inside a read section (its memory,
 * being SHARED, outlives the section) and try-increfs it: it wins the CAS
 * before the death (the object lives on) or fails after it.
 * The dying referent then, under its stripe lock, clears every weak
 * reference to it and takes a reference to each that has a callback (by
 * try-incref: a weak reference that is dying itself gets no callback), and
 * runs the callbacks after unlocking.
 */
#include <ck_hs.h>

#include "lockfree/spinlock.h"
#include "object_internal.h"

struct ftm_weakref {
  ftm_object ob_base;
  _Atomic(ftm_object *) wr_object; /* NULL once the referent is dying */
  ftm_weakref_callback callback;
  void *arg;
  _Atomic int released; /* ftm_weakref_release was called: no callback */
  struct ftm_weakref *prev, *next; /* the referent's list; stripe lock */
};

typedef struct ftm__wrlist_s {
  ftm_object *obj;
  struct ftm_weakref *head;
} ftm__wrlist;

#define FTM_WR_STRIPES 64

static struct ftm__wr_stripe {
  ftm_spinlock_t lock;
  ck_hs_t hs; /* of ftm__wrlist, keyed by obj */
  bool ready; /* hs is built; under lock */
  char pad[64 - (sizeof(ftm_spinlock_t) + sizeof(ck_hs_t) + sizeof(bool)) % 64];
} ftm__wr_stripes[FTM_WR_STRIPES];
static _Atomic int ftm__wr_ready; /* every stripe is built */

static unsigned long ftm__ptr_hash(const void *p) {
  uint64_t x = (uintptr_t)p;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return (unsigned long)x;
}
static unsigned long ftm__wr_hash(const void *key, unsigned long seed) {
  (void)seed;
  return ftm__ptr_hash(((const ftm__wrlist *)key)->obj);
}
static bool ftm__wr_eq(const void *a, const void *b) {
  return ((const ftm__wrlist *)a)->obj == ((const ftm__wrlist *)b)->obj;
}
static void *ftm__ck_malloc(size_t n) { return ftm_malloc(n); }
static void ftm__ck_free(void *p, size_t n, bool defer) {
  (void)n;
  if (defer) ftm_free_deferred(p);
  else ftm_free(p);
}
/* Shared with intern.c: ck_hs allocates through ftmem; a table that
 * lock-free readers may still scan is freed after a grace period. */
struct ck_malloc ftm__ck_allocator = {.malloc = ftm__ck_malloc, .free = ftm__ck_free};

/* Build the side table on first use: false (ENOMEM) if a stripe's table
 * cannot be allocated — then the first ftm_weakref_new fails and a later
 * one tries again (pthread_once could not).  Each stripe is built once,
 * under its own lock: racing initialisers build different stripes or
 * find them ready, and a fork never sees one half built. */
static ftm_cold bool ftm__wr_init(void) {
  for (unsigned i = 0; i < FTM_WR_STRIPES; i++) {
    struct ftm__wr_stripe *s = &ftm__wr_stripes[i];
    ftm_spinlock_lock(&s->lock);
    if (!s->ready)
      s->ready = ck_hs_init(&s->hs, CK_HS_MODE_OBJECT | CK_HS_MODE_SPMC, ftm__wr_hash, ftm__wr_eq,
                            &ftm__ck_allocator, 8, 0x9e3779b9u);
    bool ok = s->ready;
    ftm_spinlock_unlock(&s->lock);
    if (!ok) {
      errno = ENOMEM;
      return false;
    }
  }
  /* release: pairs with the acquire in ftm_weakref_new (every stripe's
   * table, built under locks we took since, is visible with the flag) */
  ftm_atomic_store_release(&ftm__wr_ready, 1);
  return true;
}

/* fork: every stripe locked across it, so none is left held by a thread
 * that does not exist in the child.  The locks work before the tables
 * exist (zero-initialised), so a process that never made a weak reference
 * does not build the table here.  The init takes each stripe's lock while
 * it builds that stripe: a fork never sees one half built, and in the
 * child an init a vanished thread had begun is finished by the next
 * ftm_weakref_new (the stripes it built are ready). */
void ftm__weakref_prefork(void) {
  for (unsigned i = 0; i < FTM_WR_STRIPES; i++) ftm_spinlock_lock(&ftm__wr_stripes[i].lock);
}
void ftm__weakref_postfork(void) {
  for (unsigned i = 0; i < FTM_WR_STRIPES; i++) ftm_spinlock_unlock(&ftm__wr_stripes[i].lock);
}

static struct ftm__wr_stripe *ftm__wr_stripe_of(const ftm_object *o) {
  return &ftm__wr_stripes[ftm__ptr_hash(o) % FTM_WR_STRIPES];
}

static void ftm__weakref_dealloc(ftm_object *self) {
  struct ftm_weakref *wr = (struct ftm_weakref *)self;
  ftm_object *o = ftm_atomic_load_acquire(&wr->wr_object);
  if (o == NULL) return;
  struct ftm__wr_stripe *s = ftm__wr_stripe_of(o);
  ftm_spinlock_lock(&s->lock);
  if (ftm_atomic_load_relaxed(&wr->wr_object) == o) { /* not cleared meanwhile */
    ftm__wrlist probe = {.obj = o};
    ftm__wrlist *l = ck_hs_get(&s->hs, ftm__ptr_hash(o), &probe);
    if (wr->prev) wr->prev->next = wr->next; else l->head = wr->next;
    if (wr->next) wr->next->prev = wr->prev;
    ftm_atomic_store_relaxed(&wr->wr_object, NULL);
    if (l->head == NULL) {
      ck_hs_remove(&s->hs, ftm__ptr_hash(o), &probe);
      ftm_free(l); /* only ever read under the stripe lock */
    }
  }
  ftm_spinlock_unlock(&s->lock);
}

/* Tracked, with no references to visit: so that a weak reference that is
 * itself part of cyclic garbage is found unreachable with it, and gets no
 * callback (CPython's handle_weakrefs). */
static int ftm__weakref_traverse(ftm_object *self, ftm_visitproc visit, void *arg) {
  (void)self;
  (void)visit;
  (void)arg;
  return 0;
}
static void ftm__weakref_clear(ftm_object *self) { (void)self; }

ftm_type ftm_weakref_type = {
    .name = "weakref",
    .basic_size = sizeof(struct ftm_weakref),
    .flags = FTM_TYPE_GC,
    .traverse = ftm__weakref_traverse,
    .clear = ftm__weakref_clear,
    .dealloc = ftm__weakref_dealloc,
};

ftm_weakref *ftm_weakref_new(ftm_object *obj, ftm_weakref_callback callback, void *arg) {
  /* acquire: pairs with the release in ftm__wr_init */
  if (ftm_unlikely(!ftm_atomic_load_acquire(&ftm__wr_ready)) && !ftm__wr_init()) return NULL; /* ENOMEM */
  struct ftm_weakref *wr = (struct ftm_weakref *)ftm_new(&ftm_weakref_type);
  if (wr == NULL) return NULL;
  wr->callback = callback;
  wr->arg = arg;
  ftm_enable_try_incref(&wr->ob_base); /* so a dying referent can keep it for its callback */
  ftm_enable_try_incref(obj);
  ftm_atomic_fetch_or_relaxed(&obj->ob_flags, FTM_OBF_WEAKREFS);
  struct ftm__wr_stripe *s = ftm__wr_stripe_of(obj);
  unsigned long h = ftm__ptr_hash(obj);
  ftm__wrlist probe = {.obj = obj};
  ftm_spinlock_lock(&s->lock);
  ftm__wrlist *l = ck_hs_get(&s->hs, h, &probe);
  if (l == NULL) {
    l = ftm_malloc(sizeof *l);
    if (l == NULL || (l->obj = obj, l->head = NULL, !ck_hs_put(&s->hs, h, l))) {
      ftm_spinlock_unlock(&s->lock);
      ftm_free(l);
      ftm_decref(&wr->ob_base);
      errno = ENOMEM;
      return NULL;
    }
  }
  wr->prev = NULL;
  wr->next = l->head;
  if (l->head) l->head->prev = wr;
  l->head = wr;
  /* release: a get that sees obj also sees it weakly referenced */
  ftm_atomic_store_release(&wr->wr_object, obj);
  ftm_spinlock_unlock(&s->lock);
  return (ftm_weakref *)wr;
}

ftm_object *ftm_weakref_get(ftm_weakref *w) {
  struct ftm_weakref *wr = (struct ftm_weakref *)w;
  ftm__tstate *ts = ftm__tstate_get();
  ftm_object *r = NULL;
  ck_epoch_begin(&ts->epoch, NULL);
  /* acquire: pairs with the release store in ftm_weakref_new */
  ftm_object *o = ftm_atomic_load_acquire(&wr->wr_object);
  /* a referent the collector found unreachable is refused: the bit is
   * set with every attached thread parked, so a get either ran before
   * (its incref shaded o, which the collector then saw) or sees it */
  if (o != NULL && !(ftm_atomic_load_relaxed(&o->ob_gc_bits) & FTM_GCB_UNREACH) && ftm__try_incref(o)) r = o;
  ck_epoch_end(&ts->epoch, NULL);
  return r;
}

void ftm_weakref_release(ftm_weakref *w) {
  struct ftm_weakref *wr = (struct ftm_weakref *)w;
  /* release: pairs with the acquire before a callback starts */
  ftm_atomic_store_release(&wr->released, 1);
  ftm_decref(&wr->ob_base);
}

/* The referent o is dying: clear its weak references, run their callbacks. */
void ftm__weakrefs_clear(ftm_object *o) {
  struct ftm__wr_stripe *s = ftm__wr_stripe_of(o);
  unsigned long h = ftm__ptr_hash(o);
  ftm__wrlist probe = {.obj = o};
  struct ftm_weakref *cbs = NULL; /* those whose callback runs, linked by next */
  ftm_spinlock_lock(&s->lock);
  ftm__wrlist *l = ck_hs_remove(&s->hs, h, &probe);
  struct ftm_weakref *wr = l ? l->head : NULL;
  while (wr != NULL) {
    struct ftm_weakref *next = wr->next;
    wr->prev = NULL;
    /* no callback for a weak reference that is cyclic garbage itself */
    if (wr->callback != NULL && !(ftm_atomic_load_relaxed(&wr->ob_base.ob_gc_bits) & FTM_GCB_UNREACH) &&
        ftm__try_incref(&wr->ob_base)) {
      wr->next = cbs;
      cbs = wr;
    } else {
      wr->next = NULL;
    }
    /* last: a weak reference dying meanwhile takes this stripe lock in its
     * dealloc only while it reads its referent non-NULL — once it reads
     * NULL its memory may go at once.  release: a get that reads NULL
     * needs nothing else */
    ftm_atomic_store_release(&wr->wr_object, NULL);
    wr = next;
  }
  ftm_spinlock_unlock(&s->lock);
  ftm_free(l);
  while (cbs != NULL) {
    struct ftm_weakref *next = cbs->next;
    cbs->next = NULL;
    /* acquire: a release that returned before this point suppresses it */
    if (!ftm_atomic_load_acquire(&cbs->released)) cbs->callback((ftm_weakref *)cbs, cbs->arg);
    ftm_decref(&cbs->ob_base);
    cbs = next;
  }
}
