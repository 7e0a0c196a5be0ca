/* fuzz_objects.c — libFuzzer harness of the object layer
 * (include/ftmem/object.h): random mutations of an object graph checked
 * against a shadow model of reference counts.
 *
 * Objects of four types (a leaf, a two-field GC-flagged node, a four-field
 * node with a free list, a variable-size array of fields) carry their model
 * id and a canary.  The model keeps, per object, the references the harness
 * holds ("handles"), the total count (handles + fields of live objects
 * pointing at it), each field's target, immortal / deferred / try-incref
 * state, and for weak references their referent, callback and release.
 * Every operation updates the model first, then calls the library: when
 * the model drops an object's last reference it marks it dead and runs the
 * cascade (weakref callbacks expected, then its fields released in order),
 * so the dealloc callback can check at the moment it runs that the model
 * agrees the object is dead.  After each operation on the main thread:
 * every object the model says alive has its canary, its fields and
 * ftm_refcount as modelled; every dead one was deallocated exactly once;
 * weak references to dead objects return NULL and their callbacks ran
 * exactly once (or never, when released first).
 *
 * One operation builds a chain of up to 100 nodes holding only its head,
 * so that dropping it nests deaths past the trashcan depth.
 *
 * Some operations run the next few operations on a short-lived thread
 * (the main thread optionally detached around the join): its decrefs of
 * the main thread's objects are queued to it and merged at its next
 * safepoint, where the model must again match exactly.  The thread uses a
 * subset of operations whose outcome does not depend on when a queued
 * object is merged (no weakref, try-incref, immortal or deferred calls).
 *
 * Every input ends with everything released (cycles broken by clearing
 * fields), ftm_thread_flush(), and ftm_object_stats_get's created - freed
 * equal to the objects made immortal.
 *
 * The GC-flagged node type is tracked by the cycle collector (its objects
 * carry the 16-byte GC head that ftm_sizeof counts).  Automatic
 * collections are disabled at start (ftm_gc_disable): this model does not
 * predict when they would run, and the helper thread's queued decrefs make
 * the counts exact only at the main thread's next safepoint.  Cycle
 * collection is fuzzed against a reachability model in fuzz_gc.c; a gc
 * callback here checks that no collection runs.
 */
#include "fuzz_common.h"

#define MAXOBJ 160
#define MAXF 8
#define FZ_THREAD_OPS 24
#define MAX_IMMORTAL 2 /* per input: immortal objects are never freed */

/* ---- the object types -------------------------------------------------------- */
typedef struct fobj {
  ftm_object ob;
  uint32_t id;
  uint32_t nf;
  uint64_t canary;
  ftm_field f[4]; /* nf of them used */
} fobj;

typedef struct fvar {
  ftm_varobject ob; /* ob_size items */
  uint32_t id;
  uint32_t nf;
  uint64_t canary;
  ftm_field items[];
} fvar;

enum { T_LEAF, T_NODE2, T_NODE4, T_VAR, T_WEAKREF, NTYPES = T_WEAKREF };

static void obj_clear(ftm_object *self);
static void obj_dealloc(ftm_object *self);
static int obj_traverse(ftm_object *self, ftm_visitproc visit, void *arg);

static ftm_type types[NTYPES] = {
    [T_LEAF] = {.name = "fz_leaf", .basic_size = offsetof(fobj, f), .flags = FTM_TYPE_FREELIST,
                .dealloc = obj_dealloc, .freelist_max = 8},
    [T_NODE2] = {.name = "fz_node2", .basic_size = offsetof(fobj, f) + 2 * sizeof(ftm_field),
                 .flags = FTM_TYPE_GC, .traverse = obj_traverse, .clear = obj_clear, .dealloc = obj_dealloc},
    [T_NODE4] = {.name = "fz_node4", .basic_size = sizeof(fobj), .flags = FTM_TYPE_FREELIST,
                 .traverse = obj_traverse, .clear = obj_clear, .dealloc = obj_dealloc},
    [T_VAR] = {.name = "fz_var", .basic_size = sizeof(fvar), .item_size = sizeof(ftm_field),
               .traverse = obj_traverse, .clear = obj_clear, .dealloc = obj_dealloc},
};

static ftm_field *fields_of(ftm_object *o, uint32_t *n) {
  if (o->ob_type == &types[T_VAR]) {
    *n = (uint32_t)ftm_var_size(o);
    return ((fvar *)o)->items;
  }
  *n = ((fobj *)o)->nf;
  return ((fobj *)o)->f;
}
static uint32_t *id_of(ftm_object *o) {
  return o->ob_type == &types[T_VAR] ? &((fvar *)o)->id : &((fobj *)o)->id;
}
static uint64_t *canary_of(ftm_object *o) {
  return o->ob_type == &types[T_VAR] ? &((fvar *)o)->canary : &((fobj *)o)->canary;
}

/* ---- the model ------------------------------------------------------------------ */
typedef struct rec {
  ftm_object *o;
  int type;
  int nf;
  int field[MAXF]; /* target id, -1 for NULL */
  long ext;        /* references the harness holds */
  long rc;         /* ext + fields of live objects pointing here */
  bool alive;      /* in the model */
  bool immortal, deferred, try_enabled;
  int deaths;      /* dealloc callbacks seen */
  /* weak references */
  int referent;    /* id, -1 once cleared (the referent died) */
  bool has_cb, released;
  int cb_expected, cb_seen;
} rec;

static rec R[MAXOBJ];
static int nobj;
static int nimmortal;
static uint64_t input_gen;
static bool on_helper;  /* the helper thread is running operations */
static unsigned long gc_runs; /* collections seen by gc_callback: must stay 0 */

static uint64_t canary_for(int id) { return fz_mix(input_gen << 8 ^ (uint64_t)id ^ 0xC0FFEEull << 40); }

static void model_drop(int id);

/* The model's death of id: weak references cleared (callbacks of live,
 * unreleased ones expected), then its fields released in order — as
 * ftm__dealloc_now does it. */
static void model_die(int id) {
  rec *r = &R[id];
  r->alive = false;
  for (int w = 0; w < nobj; w++) {
    rec *wr = &R[w];
    if (wr->type != T_WEAKREF || wr->referent != id) continue;
    wr->referent = -1;
    if (wr->alive && wr->has_cb && !wr->released) wr->cb_expected++;
  }
  if (r->type == T_WEAKREF) { /* unlinked from its referent: no callback any more */
    r->referent = -1;
    return;
  }
  for (int s = 0; s < r->nf; s++) {
    int t = r->field[s];
    if (t < 0) continue;
    r->field[s] = -1;
    model_drop(t);
  }
}

static void model_drop(int id) {
  rec *r = &R[id];
  if (r->rc <= 0) FZ_FAIL("harness: model count of %d below zero", id);
  r->rc--;
  if (r->rc == 0 && !r->immortal && !r->deferred) model_die(id);
}

/* ---- callbacks ------------------------------------------------------------- */
static void obj_dealloc(ftm_object *self) {
  uint32_t id = *id_of(self);
  if (id >= (uint32_t)nobj || R[id].o != self)
    FZ_FAIL("dealloc of %p: id %u is not a live object of this input (memory reused?)", (void *)self, id);
  rec *r = &R[id];
  if (*canary_of(self) != canary_for((int)id))
    FZ_FAIL("dealloc of object %u (%p): canary %016llx, expected %016llx", id, (void *)self,
            (unsigned long long)*canary_of(self), (unsigned long long)canary_for((int)id));
  if (r->alive) FZ_FAIL("object %u (%s) deallocated while the model holds %ld references to it", id,
                        types[r->type].name, r->rc);
  if (++r->deaths != 1) FZ_FAIL("object %u deallocated %d times", id, r->deaths);
  uint32_t n;
  ftm_field *f = fields_of(self, &n);
  for (uint32_t s = 0; s < n; s++)
    if (ftm_field_peek(&f[s]) != NULL) FZ_FAIL("object %u deallocated with field %u still set", id, s);
  *canary_of(self) = 0xDEADDEADDEADDEADull;
}

static void obj_clear(ftm_object *self) {
  uint32_t n;
  ftm_field *f = fields_of(self, &n);
  for (uint32_t s = 0; s < n; s++) ftm_field_clear(&f[s]);
}

static int obj_traverse(ftm_object *self, ftm_visitproc visit, void *arg) {
  uint32_t n;
  ftm_field *f = fields_of(self, &n);
  for (uint32_t s = 0; s < n; s++) {
    ftm_object *t = ftm_field_peek(&f[s]);
    if (t != NULL) {
      int rc = visit(t, arg);
      if (rc) return rc;
    }
  }
  return 0;
}

static void wr_callback(ftm_weakref *wr, void *arg) {
  rec *r = arg;
  int id = (int)(r - R);
  if (id < 0 || id >= nobj || (ftm_weakref *)r->o != wr) FZ_FAIL("weakref callback with a stale argument");
  if (!r->alive || r->released) FZ_FAIL("callback of weakref %d, which the model has %s", id,
                                        r->alive ? "released" : "dead");
  if (++r->cb_seen > r->cb_expected)
    FZ_FAIL("weakref %d: callback %d times, %d expected", id, r->cb_seen, r->cb_expected);
  ftm_object *o = ftm_weakref_get(wr);
  if (o != NULL) FZ_FAIL("weakref %d: get returns %p inside its callback", id, (void *)o);
}

/* ---- checks ------------------------------------------------------------- */
static ftm_object *ptr(int id) { return id < 0 ? NULL : R[id].o; }

static int count_visit(ftm_object *o, void *arg) {
  (void)o;
  (*(int *)arg)++;
  return 0;
}

static void check_alive(int id) {
  rec *r = &R[id];
  ftm_object *o = r->o;
  if (r->deaths != 0) FZ_FAIL("object %d deallocated, but the model has %ld references to it", id, r->rc);
  if (r->type == T_WEAKREF) {
    if (o->ob_type != &ftm_weakref_type) FZ_FAIL("weakref %d: type overwritten", id);
  } else {
    if (o->ob_type != &types[r->type] || *id_of(o) != (uint32_t)id || *canary_of(o) != canary_for(id))
      FZ_FAIL("object %d (%s, %p): header or canary overwritten", id, types[r->type].name, (void *)o);
    uint32_t n;
    ftm_field *f = fields_of(o, &n);
    if ((int)n != r->nf) FZ_FAIL("object %d: %u fields, model %d", id, n, r->nf);
    int set = 0;
    for (int s = 0; s < r->nf; s++) {
      if (ftm_field_peek(&f[s]) != ptr(r->field[s]))
        FZ_FAIL("object %d field %d holds %p, model %d (%p)", id, s, (void *)ftm_field_peek(&f[s]),
                r->field[s], (void *)ptr(r->field[s]));
      set += r->field[s] >= 0;
    }
    if (types[r->type].traverse != NULL) {
      int visited = 0;
      types[r->type].traverse(o, count_visit, &visited);
      if (visited != set) FZ_FAIL("object %d: traverse visits %d, %d fields set", id, visited, set);
    }
  }
  if (r->immortal) {
    if (!ftm_is_immortal(o)) FZ_FAIL("object %d: no longer immortal", id);
  } else if (r->deferred) {
    if (!ftm_is_deferred(o)) FZ_FAIL("object %d: no longer deferred", id);
  } else {
    ssize_t rc = ftm_refcount(o);
    if (rc != r->rc) FZ_FAIL("object %d (%s): ftm_refcount %zd, model %ld", id,
                             r->type == T_WEAKREF ? "weakref" : types[r->type].name, rc, r->rc);
  }
}

/* The exact check: the model and the library agree on every object. */
static void verify_all(void) {
  for (int id = 0; id < nobj; id++) {
    rec *r = &R[id];
    if (r->alive) {
      check_alive(id);
    } else if (r->type != T_WEAKREF && r->deaths != 1) {
      /* (a weak reference's own dealloc is the library's: its deaths are
       * counted by the created == freed check at the end of the input) */
      FZ_FAIL("object %d (%s) dead in the model but deallocated %d times", id,
              r->type == T_WEAKREF ? "weakref" : types[r->type].name, r->deaths);
    }
    if (r->type == T_WEAKREF) {
      if (r->cb_seen != r->cb_expected)
        FZ_FAIL("weakref %d: callback ran %d times, expected %d", id, r->cb_seen, r->cb_expected);
      if (r->alive) {
        ftm_object *g = ftm_weakref_get((ftm_weakref *)r->o);
        int ref = r->referent;
        if (ref < 0 && g != NULL) FZ_FAIL("weakref %d: referent dead, get returned %p", id, (void *)g);
        if (ref >= 0 && g != R[ref].o)
          FZ_FAIL("weakref %d: referent %d alive, get returned %p", id, ref, (void *)g);
        if (g != NULL) ftm_decref(g);
      }
    }
  }
}

/* ---- picking objects ------------------------------------------------------------ */
enum { P_ALIVE = 1, P_HELD = 2, P_CONTAINER = 4, P_PLAIN = 8, P_WEAKREF = 16 };

static bool fits(int id, unsigned want) {
  rec *r = &R[id];
  if (!r->alive) return false;
  if ((want & P_HELD) && r->ext <= 0) return false;
  if ((want & P_CONTAINER) && (r->type == T_WEAKREF || r->nf == 0)) return false;
  if ((want & P_PLAIN) && r->type == T_WEAKREF) return false;
  if ((want & P_WEAKREF) && r->type != T_WEAKREF) return false;
  return true;
}

/* The k-th (mod their number) object matching `want`, or -1. */
static int pick(uint8_t k, unsigned want) {
  int n = 0;
  for (int id = 0; id < nobj; id++) n += fits(id, want);
  if (n == 0) return -1;
  int target = k % n;
  for (int id = 0; id < nobj; id++)
    if (fits(id, want) && target-- == 0) return id;
  return -1;
}

/* A held non-weakref object to store, or -1 (NULL) when the byte says so
 * or there is none. */
static int pick_value(fz_in *in) {
  uint8_t k = fz_u8(in);
  if (k % 5 == 0) return -1;
  return pick(k / 5, P_HELD | P_PLAIN);
}

/* ---- operations --------------------------------------------------------------- */
static int new_rec(ftm_object *o, int type, int nf) {
  int id = nobj++;
  rec *r = &R[id];
  memset(r, 0, sizeof *r);
  r->o = o;
  r->type = type;
  r->nf = nf;
  for (int s = 0; s < MAXF; s++) r->field[s] = -1;
  r->ext = r->rc = 1;
  r->alive = true;
  r->referent = -1;
  return id;
}

static void op_new(fz_in *in) {
  if (nobj >= MAXOBJ) return;
  int type = fz_u8(in) % NTYPES;
  ftm_object *o;
  int nf;
  if (type == T_VAR) {
    nf = fz_u8(in) % (MAXF + 1);
    o = ftm_new_var(&types[T_VAR], (size_t)nf);
  } else {
    nf = type == T_LEAF ? 0 : type == T_NODE2 ? 2 : 4;
    o = ftm_new(&types[type]);
  }
  if (o == NULL) FZ_FAIL("ftm_new(%s) failed: errno %d", types[type].name, errno);
  if (ftm_type_of(o) != &types[type]) FZ_FAIL("ftm_new: wrong type");
  size_t want = types[type].basic_size + (type == T_VAR ? (size_t)nf * sizeof(ftm_field) : 0);
  size_t head = (types[type].flags & FTM_TYPE_GC) ? 16 : 0; /* the GC head, as sys.getsizeof */
  if (ftm_sizeof(o) != want + head) FZ_FAIL("ftm_sizeof %zu, expected %zu", ftm_sizeof(o), want + head);
  if (ftm_gc_is_tracked(o) != (head != 0)) FZ_FAIL("new %s: ftm_gc_is_tracked %d", types[type].name, !head);
  if (ftm_refcount(o) != 1) FZ_FAIL("new object: refcount %zd", ftm_refcount(o));
  /* the body after the header (and ob_size) is zero */
  size_t hdr = type == T_VAR ? sizeof(ftm_varobject) : sizeof(ftm_object);
  if (type == T_VAR && ftm_var_size(o) != (size_t)nf) FZ_FAIL("new_var: ob_size %zu, asked %d", ftm_var_size(o), nf);
  const unsigned char *b = (const unsigned char *)o;
  for (size_t i = hdr; i < want; i++)
    if (b[i] != 0) FZ_FAIL("new %s: byte %zu of the body not zero", types[type].name, i);
  int id = new_rec(o, type, nf);
  *id_of(o) = (uint32_t)id;
  if (type != T_VAR) ((fobj *)o)->nf = (uint32_t)nf;
  *canary_of(o) = canary_for(id);
  /* ftm_field_init of a field of the new object, before anyone sees it */
  if (nf > 0 && (fz_u8(in) & 3) == 0) {
    int s = fz_u8(in) % nf;
    int v = pick_value(in);
    if (v >= 0) {
      R[v].ext--; /* stolen by the field */
      R[id].field[s] = v;
      uint32_t n;
      ftm_field_init(&fields_of(o, &n)[s], R[v].o);
    }
  }
}

static void op_store(fz_in *in, int how) {
  int c = pick(fz_u8(in), P_CONTAINER);
  if (c < 0) return;
  int s = fz_u8(in) % R[c].nf;
  int v = how == 2 ? -1 : pick_value(in);
  uint32_t n;
  ftm_field *slot = &fields_of(R[c].o, &n)[s];
  int old = R[c].field[s];
  if (v >= 0) R[v].ext--; /* the field takes the handle's reference */
  R[c].field[s] = v;
  if (how == 1) { /* exchange: the old reference comes back to us */
    if (old >= 0) R[old].ext++;
    ftm_object *got = ftm_field_exchange(slot, ptr(v));
    if (got != ptr(old)) FZ_FAIL("field_exchange returned %p, model %d (%p)", (void *)got, old, (void *)ptr(old));
    return;
  }
  if (old >= 0) model_drop(old);
  if (how == 2) ftm_field_clear(slot);
  else ftm_field_store(slot, ptr(v));
}

static void op_load(fz_in *in) {
  int c = pick(fz_u8(in), P_CONTAINER);
  if (c < 0) return;
  int s = fz_u8(in) % R[c].nf;
  uint32_t n;
  ftm_object *got = ftm_field_load(&fields_of(R[c].o, &n)[s]);
  int t = R[c].field[s];
  if (got != ptr(t)) FZ_FAIL("field_load returned %p, model %d (%p)", (void *)got, t, (void *)ptr(t));
  if (t >= 0) {
    R[t].ext++;
    R[t].rc++;
  }
}

static void op_incref(fz_in *in) {
  int a = pick(fz_u8(in), P_ALIVE);
  if (a < 0) return;
  R[a].ext++;
  R[a].rc++;
  ftm_incref(R[a].o);
}

static void op_decref(fz_in *in, unsigned want) {
  int a = pick(fz_u8(in), P_HELD | want);
  if (a < 0) return;
  ftm_object *o = R[a].o;
  R[a].ext--;
  model_drop(a);
  ftm_decref(o);
}

static void op_weakref_new(fz_in *in) {
  if (nobj >= MAXOBJ) return;
  int a = pick(fz_u8(in), P_PLAIN);
  if (a < 0) return;
  bool cb = fz_u8(in) & 1;
  int id = new_rec(NULL, T_WEAKREF, 0);
  rec *w = &R[id];
  w->referent = a;
  w->has_cb = cb;
  ftm_weakref *wr = ftm_weakref_new(R[a].o, cb ? wr_callback : NULL, w);
  if (wr == NULL) FZ_FAIL("ftm_weakref_new failed: errno %d", errno);
  w->o = ftm_weakref_as_object(wr);
  R[a].try_enabled = true; /* a weak reference enables try-incref */
}

static void op_weakref_get(fz_in *in) {
  int w = pick(fz_u8(in), P_WEAKREF);
  if (w < 0) return;
  int ref = R[w].referent;
  ftm_object *g = ftm_weakref_get((ftm_weakref *)R[w].o);
  if (g != ptr(ref)) FZ_FAIL("weakref_get of %d returned %p, model %d (%p)", w, (void *)g, ref, (void *)ptr(ref));
  if (ref >= 0) {
    R[ref].ext++;
    R[ref].rc++;
  }
}

static void op_weakref_release(fz_in *in) {
  int w = pick(fz_u8(in), P_WEAKREF | P_HELD);
  if (w < 0 || R[w].released) return; /* once per weak reference */
  ftm_object *o = R[w].o;
  R[w].released = true;
  R[w].ext--;
  model_drop(w);
  ftm_weakref_release((ftm_weakref *)o);
}

static void op_immortal(fz_in *in) {
  int a = pick(fz_u8(in), P_PLAIN);
  if (a < 0 || nimmortal >= MAX_IMMORTAL) return;
  if (R[a].deferred) { /* object.h: EINVAL, clear deferred counting first */
    errno = 0;
    int rc = ftm_make_immortal(R[a].o);
    if (rc != -1 || errno != EINVAL) FZ_FAIL("ftm_make_immortal of deferred %d: %d errno %d", a, rc, errno);
    if (!ftm_is_deferred(R[a].o)) FZ_FAIL("ftm_make_immortal of deferred %d: no longer deferred", a);
    return;
  }
  if (!R[a].immortal) nimmortal++;
  R[a].immortal = true;
  R[a].deferred = false;
  if (ftm_make_immortal(R[a].o) != 0) FZ_FAIL("ftm_make_immortal(%d) failed: errno %d", a, errno);
}

static void op_set_deferred(fz_in *in) {
  int a = pick(fz_u8(in), P_PLAIN);
  if (a < 0) return;
  if (!R[a].immortal) R[a].deferred = true; /* immortal: returns 0 and stays immortal */
  if (ftm_set_deferred(R[a].o) != 0) FZ_FAIL("ftm_set_deferred(%d) failed: errno %d", a, errno);
}

static void op_clear_deferred(fz_in *in) {
  int a = pick(fz_u8(in), P_PLAIN);
  if (a < 0) return;
  rec *r = &R[a];
  ftm_object *o = r->o;
  if (!r->deferred) {
    errno = 0;
    int rc = ftm_clear_deferred(o);
    if (rc != -1 || errno != EINVAL) FZ_FAIL("clear_deferred of a non-deferred object: %d errno %d", rc, errno);
    return;
  }
  r->deferred = false;
  /* no other thread is attached: the clear completes at once, and frees
   * the object if nothing else holds it */
  if (r->rc == 0) model_die(a);
  if (ftm_clear_deferred(o) != 0) FZ_FAIL("ftm_clear_deferred(%d) failed: errno %d", a, errno);
}

static void op_try_incref(fz_in *in) {
  int a = pick(fz_u8(in), P_PLAIN);
  if (a < 0) return;
  if (!R[a].try_enabled) {
    ftm_enable_try_incref(R[a].o);
    R[a].try_enabled = true;
    return;
  }
  if (!ftm_try_incref(R[a].o)) FZ_FAIL("ftm_try_incref of live object %d failed", a);
  R[a].ext++;
  R[a].rc++;
}

/* Inside a read section: drop every handle of an object only handles
 * hold, so it dies; its memory is not reused before the section ends, and
 * ftm_try_incref on it must now fail. */
static void op_read_death(fz_in *in) {
  int a = pick(fz_u8(in), P_PLAIN | P_HELD);
  if (a < 0) return;
  rec *r = &R[a];
  if (!r->try_enabled || r->immortal || r->deferred || r->rc != r->ext) return;
  ftm_object *o = r->o;
  ftm_read_begin();
  while (r->ext > 0) {
    r->ext--;
    model_drop(a);
    ftm_decref(o);
  }
  if (r->deaths != 1) FZ_FAIL("object %d not deallocated after its last reference", a);
  if (ftm_try_incref(o)) FZ_FAIL("ftm_try_incref succeeded on dead object %d", a);
  ftm_read_end();
}

/* A chain of new two-field nodes, each holding the next in field 0; only
 * the head's handle is kept.  Dropping the head of a long chain nests
 * deaths past FTM_TRASH_DEPTH (64), where they are postponed. */
static void op_chain(fz_in *in) {
  int len = 1 + fz_u8(in) % 100;
  int prev = -1;
  for (int k = 0; k < len && nobj < MAXOBJ; k++) {
    ftm_object *o = ftm_new(&types[T_NODE2]);
    if (o == NULL) FZ_FAIL("ftm_new failed: errno %d", errno);
    int id = new_rec(o, T_NODE2, 2);
    ((fobj *)o)->id = (uint32_t)id;
    ((fobj *)o)->nf = 2;
    ((fobj *)o)->canary = canary_for(id);
    if (prev >= 0) { /* the new node takes over the handle of the previous one */
      R[prev].ext--;
      R[id].field[0] = prev;
      ftm_field_store(&((fobj *)o)->f[0], R[prev].o);
    }
    prev = id;
  }
}

static void op_new_overflow(fz_in *in) {
  size_t n = fz_hide(SIZE_MAX / sizeof(ftm_field) - fz_u8(in));
  errno = 0;
  ftm_object *o = ftm_new_var(&types[T_VAR], n);
  if (o != NULL || errno != ENOMEM) FZ_FAIL("ftm_new_var(%zu items) = %p errno %d", n, (void *)o, errno);
}

enum {
  OP_NEW,
  OP_NEW2,
  OP_INCREF,
  OP_DECREF,
  OP_DECREF2,
  OP_STORE,
  OP_STORE2,
  OP_EXCHANGE,
  OP_LOAD,
  OP_CLEAR,
  OP_WR_NEW,
  OP_WR_GET,
  OP_WR_RELEASE,
  OP_IMMORTAL,
  OP_SET_DEFERRED,
  OP_CLEAR_DEFERRED,
  OP_TRY_INCREF,
  OP_READ_DEATH,
  OP_SAFEPOINT,
  OP_NEW_OVERFLOW,
  OP_THREAD,
  OP_CHAIN,
  OP__COUNT
};

static void run_ops(fz_in *in, int max_ops);

typedef struct helper_arg {
  fz_in *in;
  int ops;
} helper_arg;

static void helper(void *p) {
  helper_arg *a = p;
  on_helper = true;
  run_ops(a->in, a->ops);
  on_helper = false;
}

static void run_ops(fz_in *in, int max_ops) {
  for (int n = 0; n < max_ops && !fz_done(in); n++) {
    int op = fz_u8(in) % OP__COUNT;
    if (on_helper) {
      /* operations whose outcome does not depend on when queued objects
       * are merged; everything else becomes a decref */
      switch (op) {
      case OP_NEW: case OP_NEW2: case OP_INCREF: case OP_DECREF: case OP_DECREF2: case OP_STORE:
      case OP_STORE2: case OP_EXCHANGE: case OP_LOAD: case OP_CLEAR: case OP_SAFEPOINT: break;
      default: op = OP_DECREF; break;
      }
    }
    switch (op) {
    case OP_NEW:
    case OP_NEW2: op_new(in); break;
    case OP_INCREF: op_incref(in); break;
    case OP_DECREF:
    case OP_DECREF2: op_decref(in, on_helper ? P_PLAIN : 0); break;
    case OP_STORE:
    case OP_STORE2: op_store(in, 0); break;
    case OP_EXCHANGE: op_store(in, 1); break;
    case OP_LOAD: op_load(in); break;
    case OP_CLEAR: op_store(in, 2); break;
    case OP_WR_NEW: op_weakref_new(in); break;
    case OP_WR_GET: op_weakref_get(in); break;
    case OP_WR_RELEASE: op_weakref_release(in); break;
    case OP_IMMORTAL: op_immortal(in); break;
    case OP_SET_DEFERRED: op_set_deferred(in); break;
    case OP_CLEAR_DEFERRED: op_clear_deferred(in); break;
    case OP_TRY_INCREF: op_try_incref(in); break;
    case OP_READ_DEATH: op_read_death(in); break;
    case OP_SAFEPOINT:
      if (fz_u8(in) & 1) ftm_safepoint();
      else ftm_thread_flush();
      break;
    case OP_NEW_OVERFLOW: op_new_overflow(in); break;
    case OP_CHAIN: op_chain(in); break;
    case OP_THREAD: {
      uint8_t k = fz_u8(in);
      helper_arg a = {in, 1 + k % FZ_THREAD_OPS};
      fz_run_on_thread(helper, &a, k & 0x80);
      ftm_safepoint(); /* merge what the thread queued to us */
      break;
    }
    }
    if (!on_helper) verify_all();
  }
}

/* Release everything: take a reference to every live object (so nothing
 * dies while fields are cleared), clear every field (breaking cycles and
 * releasing immortal objects' references), end deferred counting, then
 * drop every handle. */
static void release_all(void) {
  for (int id = 0; id < nobj; id++) {
    rec *r = &R[id];
    if (!r->alive) continue;
    r->ext++;
    r->rc++;
    ftm_incref(r->o);
  }
  for (int id = 0; id < nobj; id++) {
    rec *r = &R[id];
    if (!r->alive || r->type == T_WEAKREF) continue;
    uint32_t n;
    ftm_field *f = fields_of(r->o, &n);
    for (int s = 0; s < r->nf; s++) {
      int t = r->field[s];
      if (t < 0) continue;
      r->field[s] = -1;
      model_drop(t);
      ftm_field_clear(&f[s]);
    }
  }
  for (int id = 0; id < nobj; id++) {
    rec *r = &R[id];
    if (r->alive && r->deferred) {
      r->deferred = false;
      if (ftm_clear_deferred(r->o) != 0) FZ_FAIL("ftm_clear_deferred(%d) failed: errno %d", id, errno);
    }
  }
  verify_all();
  for (int id = 0; id < nobj; id++) {
    rec *r = &R[id];
    while (r->alive && r->ext > 0) {
      ftm_object *o = r->o;
      r->ext--;
      if (r->type == T_WEAKREF && !r->released) {
        r->released = true;
        model_drop(id);
        ftm_weakref_release((ftm_weakref *)o);
      } else {
        model_drop(id);
        ftm_decref(o);
      }
    }
  }
  verify_all();
  for (int id = 0; id < nobj; id++)
    if (R[id].alive && !R[id].immortal) FZ_FAIL("object %d still alive after releasing everything", id);
}

static void gc_callback(const char *phase, const ftm_gc_info *info, void *arg) {
  (void)info;
  (void)arg;
  if (strcmp(phase, "start") == 0) gc_runs++;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  ftm_gc_disable();
  if (ftm_gc_callback_add(gc_callback, NULL) != 0) FZ_FAIL("ftm_gc_callback_add: errno %d", errno);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  ftm_thread_flush();
  ftm_object_stats_t s0, s1;
  ftm_object_stats_get(&s0);
  input_gen++;
  nobj = 0;
  nimmortal = 0;
  run_ops(&in, 1 << 30);
  release_all();
  ftm_thread_flush();
  ftm_object_stats_get(&s1);
  uint64_t created = s1.created - s0.created, freed = s1.freed - s0.freed;
  if (created != (uint64_t)nobj) FZ_FAIL("created %llu objects, the model %d", (unsigned long long)created, nobj);
  if (created != freed + (uint64_t)nimmortal)
    FZ_FAIL("created %llu, freed %llu, immortal %d: objects leaked", (unsigned long long)created,
            (unsigned long long)freed, nimmortal);
  if (gc_runs != 0) FZ_FAIL("%lu collections ran with automatic collection disabled", gc_runs);
  if (s1.deferred_pending != 0)
    FZ_FAIL("%llu deferred frees still pending after ftm_thread_flush", (unsigned long long)s1.deferred_pending);
  return 0;
}
