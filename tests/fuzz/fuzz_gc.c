/* fuzz_gc.c — libFuzzer harness of the cycle collector (include/ftmem/gc.h):
 * random mutations of a graph of tracked objects, with collections of
 * random generations in between, checked against a shadow reachability
 * model.
 *
 * Types: three GC-flagged ones (a three-field node, a two-field node with
 * a PEP 442 finalizer that resurrects its object when the model says so,
 * a variable-size array of 0..6 fields) and two untracked ones (a
 * two-field box, whose references the collector must count as external,
 * and a leaf), plus weak references.  Automatic collection is disabled
 * (ftm_gc_disable); a gc callback checks that only the harness's own
 * ftm_gc_collect calls run, and that each reports what the model expects.
 *
 * The model keeps per object the references the harness holds (its
 * roots), the total count, each field's target, tracked / deferred state,
 * the generation (new and re-tracked objects are in 0; survivors of a
 * collection of generation g move to g == 0 ? 1 : 2), and finalizer
 * state.  Before each ftm_gc_collect(g) the model computes, as trial
 * deletion does: candidates = tracked objects of generations <= g; a
 * candidate is a root when its count exceeds the references from other
 * candidates' fields, or it is deferred; the garbage is what no root
 * reaches through candidates' fields.  Weak references to all garbage
 * are cleared (callbacks expected), finalizers that have not run run,
 * whatever a resurrected object reaches survives, the rest dies (its
 * fields released, which may free untracked objects it alone held), and
 * ftm_gc_collect must return the number that died.  Then the exact check
 * of every object (canary, fields, refcount, tracked, deaths exactly
 * once, weakref gets and callbacks, finalizer runs) and of every
 * generation's membership through ftm_gc_get_objects.
 *
 * Each input ends by clearing the boxes' fields, re-tracking untracked
 * objects, ending deferred counting, dropping every handle and collecting
 * generation 2 (again while finalizers resurrect): the model says nothing
 * is left, and ftm_object_stats_get's created == freed.
 *
 * FTMEM_FUZZ_GC_STATS=1 prints the collector's line per collection
 * (FTM_GC_DEBUG_STATS) when reproducing an input.
 */
#include "fuzz_common.h"

#define MAXOBJ 200
#define MAXF 6

/* ---- the object types -------------------------------------------------------- */
typedef struct gobj {
  ftm_object ob;
  uint32_t id;
  uint32_t nf;
  uint64_t canary;
  ftm_field f[3]; /* nf of them used */
} gobj;

typedef struct gvar {
  ftm_varobject ob; /* ob_size items */
  uint32_t id;
  uint32_t nf;
  uint64_t canary;
  ftm_field items[];
} gvar;

enum { T_NODE, T_FIN, T_VAR, T_BOX, T_LEAF, T_WEAKREF, NTYPES = T_WEAKREF };

static void obj_clear(ftm_object *self);
static void obj_dealloc(ftm_object *self);
static void obj_finalize(ftm_object *self);
static int obj_traverse(ftm_object *self, ftm_visitproc visit, void *arg);

static ftm_type types[NTYPES] = {
    [T_NODE] = {.name = "gc_node3", .basic_size = sizeof(gobj), .flags = FTM_TYPE_GC,
                .traverse = obj_traverse, .clear = obj_clear, .dealloc = obj_dealloc},
    [T_FIN] = {.name = "gc_fin2", .basic_size = offsetof(gobj, f) + 2 * sizeof(ftm_field), .flags = FTM_TYPE_GC,
               .traverse = obj_traverse, .clear = obj_clear, .finalize = obj_finalize, .dealloc = obj_dealloc},
    [T_VAR] = {.name = "gc_var", .basic_size = sizeof(gvar), .item_size = sizeof(ftm_field), .flags = FTM_TYPE_GC,
               .traverse = obj_traverse, .clear = obj_clear, .dealloc = obj_dealloc},
    [T_BOX] = {.name = "box2", .basic_size = offsetof(gobj, f) + 2 * sizeof(ftm_field),
               .traverse = obj_traverse, .clear = obj_clear, .dealloc = obj_dealloc},
    [T_LEAF] = {.name = "leaf", .basic_size = offsetof(gobj, f), .flags = FTM_TYPE_FREELIST,
                .dealloc = obj_dealloc, .freelist_max = 8},
};

static bool is_var(const ftm_object *o) { return o->ob_type == &types[T_VAR]; }
static ftm_field *fields_of(ftm_object *o, uint32_t *n) {
  if (is_var(o)) {
    *n = (uint32_t)ftm_var_size(o);
    return ((gvar *)o)->items;
  }
  *n = ((gobj *)o)->nf;
  return ((gobj *)o)->f;
}
static uint32_t *id_of(ftm_object *o) { return is_var(o) ? &((gvar *)o)->id : &((gobj *)o)->id; }
static uint64_t *canary_of(ftm_object *o) { return is_var(o) ? &((gvar *)o)->canary : &((gobj *)o)->canary; }

/* ---- the model ------------------------------------------------------------------ */
typedef struct rec {
  ftm_object *o;
  int type;
  int nf;
  int field[MAXF]; /* target id, -1 for NULL */
  long ext;        /* references the harness holds: the roots */
  long rc;         /* ext + fields of live objects pointing here */
  bool alive;
  bool tracked, deferred;
  int gen;         /* generation while tracked */
  int deaths;      /* dealloc callbacks seen */
  /* T_FIN */
  bool resurrect, finalized;
  int fin_expected, fin_seen;
  /* weak references */
  int referent;
  bool has_cb, released;
  int cb_expected, cb_seen;
  /* scratch of model_collect */
  long refs;
  bool cand, mark;
} rec;

static rec R[MAXOBJ];
static int nobj;
static uint64_t input_gen;
static unsigned long gc_starts, gc_expected_starts;
static ssize_t gc_expect_collected;

static bool is_gc_type(int t) { return t == T_NODE || t == T_FIN || t == T_VAR || t == T_WEAKREF; }
static uint64_t canary_for(int id) { return fz_mix(input_gen << 8 ^ (uint64_t)id ^ 0x6C0FFEEull << 40); }

static void model_drop(int id);

/* Weak references to id are cleared: callbacks of live, unreleased ones
 * are expected. */
static void model_clear_weakrefs(int id) {
  for (int w = 0; w < nobj; w++) {
    rec *wr = &R[w];
    if (wr->type != T_WEAKREF || wr->referent != id) continue;
    wr->referent = -1;
    if (wr->alive && wr->has_cb && !wr->released) wr->cb_expected++;
  }
}

static void model_release_fields(int id) {
  rec *r = &R[id];
  for (int s = 0; s < r->nf; s++) {
    int t = r->field[s];
    if (t < 0) continue;
    r->field[s] = -1;
    model_drop(t);
  }
}

static void model_die(int id) {
  rec *r = &R[id];
  r->alive = false;
  model_clear_weakrefs(id);
  if (r->type == T_WEAKREF) {
    r->referent = -1;
    return;
  }
  model_release_fields(id);
}

/* The count reached zero: the finalizer first (once; it may resurrect,
 * then weak references stay), else death. */
static void model_zero(int id) {
  rec *r = &R[id];
  if (r->type == T_FIN && !r->finalized) {
    r->finalized = true;
    r->fin_expected++;
    if (r->resurrect) {
      r->ext++;
      r->rc++;
      return;
    }
  }
  model_die(id);
}

static void model_drop(int id) {
  rec *r = &R[id];
  if (r->rc <= 0) FZ_FAIL("harness: model count of %d below zero", id);
  r->rc--;
  if (r->rc == 0 && r->alive && !r->deferred) model_zero(id);
}

/* Mark from every candidate with refs > 0 (or deferred) through
 * candidates' fields, among the objects with `cand` set. */
static void model_mark(void) {
  int stack[MAXOBJ * MAXF + MAXOBJ];
  int sp = 0;
  for (int id = 0; id < nobj; id++) {
    R[id].mark = false;
    if (R[id].cand && (R[id].refs > 0 || R[id].deferred)) {
      R[id].mark = true;
      stack[sp++] = id;
    }
  }
  while (sp > 0) {
    rec *r = &R[stack[--sp]];
    for (int s = 0; s < r->nf; s++) {
      int t = r->field[s];
      if (t >= 0 && R[t].cand && !R[t].mark) {
        R[t].mark = true;
        stack[sp++] = t;
      }
    }
  }
}

static void model_subtract(void) {
  for (int id = 0; id < nobj; id++)
    if (R[id].cand) R[id].refs = R[id].rc;
  for (int id = 0; id < nobj; id++) {
    if (!R[id].cand) continue;
    for (int s = 0; s < R[id].nf; s++) {
      int t = R[id].field[s];
      if (t >= 0 && R[t].cand) R[t].refs--;
    }
  }
}

/* What ftm_gc_collect(gen) must do; returns the number of objects it frees. */
static ssize_t model_collect(int gen) {
  for (int id = 0; id < nobj; id++) {
    rec *r = &R[id];
    r->cand = r->alive && r->tracked && r->gen <= gen;
  }
  model_subtract();
  model_mark();
  int garbage[MAXOBJ], ng = 0;
  for (int id = 0; id < nobj; id++)
    if (R[id].cand && !R[id].mark) garbage[ng++] = id;
  /* survivors move on; the garbage's weak references are cleared, then
   * its finalizers run */
  for (int id = 0; id < nobj; id++)
    if (R[id].cand) R[id].gen = gen == 0 ? 1 : 2;
  for (int k = 0; k < ng; k++) model_clear_weakrefs(garbage[k]);
  bool finalized = false;
  for (int k = 0; k < ng; k++) {
    rec *r = &R[garbage[k]];
    if (r->type != T_FIN || r->finalized) continue;
    r->finalized = true;
    r->fin_expected++;
    finalized = true;
    if (r->resurrect) {
      r->ext++;
      r->rc++;
    }
  }
  if (finalized) { /* the recheck: within the garbage, what a resurrected object reaches lives */
    for (int id = 0; id < nobj; id++) R[id].cand = false;
    for (int k = 0; k < ng; k++) R[garbage[k]].cand = true;
    model_subtract();
    model_mark();
  } else {
    for (int k = 0; k < ng; k++) R[garbage[k]].mark = false;
  }
  ssize_t died = 0;
  for (int k = 0; k < ng; k++) {
    rec *r = &R[garbage[k]];
    if (r->mark) continue;
    if (r->ext != 0) FZ_FAIL("harness: garbage %d has %ld handles", garbage[k], r->ext);
    r->alive = false;
    if (r->type == T_WEAKREF) r->referent = -1;
    died++;
  }
  for (int k = 0; k < ng; k++)
    if (!R[garbage[k]].mark) model_release_fields(garbage[k]);
  for (int k = 0; k < ng; k++)
    if (!R[garbage[k]].mark && R[garbage[k]].rc != 0)
      FZ_FAIL("harness: garbage %d keeps count %ld after the cycle is cleared", garbage[k], R[garbage[k]].rc);
  for (int id = 0; id < nobj; id++) R[id].cand = R[id].mark = false;
  return died;
}

/* ---- callbacks ------------------------------------------------------------- */
static rec *rec_of(ftm_object *self, const char *what) {
  uint32_t id = *id_of(self);
  if (id >= (uint32_t)nobj || R[id].o != self)
    FZ_FAIL("%s of %p: id %u is not an object of this input (memory reused?)", what, (void *)self, id);
  if (*canary_of(self) != canary_for((int)id))
    FZ_FAIL("%s of object %u (%p): canary %016llx, expected %016llx", what, id, (void *)self,
            (unsigned long long)*canary_of(self), (unsigned long long)canary_for((int)id));
  return &R[id];
}

static void obj_dealloc(ftm_object *self) {
  rec *r = rec_of(self, "dealloc");
  int id = (int)(r - R);
  if (r->alive) FZ_FAIL("object %d (%s) deallocated while the model holds %ld references (%ld handles)", id,
                        types[r->type].name, r->rc, r->ext);
  if (++r->deaths != 1) FZ_FAIL("object %d deallocated %d times", id, r->deaths);
  uint32_t n;
  ftm_field *f = fields_of(self, &n);
  for (uint32_t s = 0; s < n; s++)
    if (ftm_field_peek(&f[s]) != NULL) FZ_FAIL("object %d deallocated with field %u still set", id, s);
  *canary_of(self) = 0xDEADDEADDEADDEADull;
}

static void obj_finalize(ftm_object *self) {
  rec *r = rec_of(self, "finalize");
  int id = (int)(r - R);
  if (++r->fin_seen > r->fin_expected)
    FZ_FAIL("object %d: finalizer ran %d times, %d expected", id, r->fin_seen, r->fin_expected);
  if (!ftm_gc_is_finalized(self)) FZ_FAIL("object %d: ftm_gc_is_finalized false inside its finalizer", id);
  if (r->resurrect) ftm_incref(self); /* the model counts it as a handle */
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

static void gc_callback(const char *phase, const ftm_gc_info *info, void *arg) {
  (void)arg;
  if (strcmp(phase, "start") == 0) {
    if (++gc_starts != gc_expected_starts) FZ_FAIL("a collection (generation %d) the harness did not ask for", info->generation);
    return;
  }
  if ((ssize_t)(info->collected + info->uncollectable) != gc_expect_collected)
    FZ_FAIL("gc callback \"stop\": collected %zu + uncollectable %zu, model %zd", info->collected,
            info->uncollectable, gc_expect_collected);
}

/* ---- checks ------------------------------------------------------------- */
static ftm_object *ptr(int id) { return id < 0 ? NULL : R[id].o; }

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
    for (int s = 0; s < r->nf; s++)
      if (ftm_field_peek(&f[s]) != ptr(r->field[s]))
        FZ_FAIL("object %d field %d holds %p, model %d (%p)", id, s, (void *)ftm_field_peek(&f[s]),
                r->field[s], (void *)ptr(r->field[s]));
    if (ftm_gc_is_finalized(o) != r->finalized)
      FZ_FAIL("object %d: ftm_gc_is_finalized %d, model %d", id, !r->finalized, r->finalized);
  }
  if (ftm_gc_is_tracked(o) != r->tracked)
    FZ_FAIL("object %d (%s): ftm_gc_is_tracked %d, model %d", id,
            r->type == T_WEAKREF ? "weakref" : types[r->type].name, !r->tracked, r->tracked);
  if (r->deferred) {
    if (!ftm_is_deferred(o)) FZ_FAIL("object %d: no longer deferred", id);
  } else {
    ssize_t rc = ftm_refcount(o);
    if (rc != r->rc) FZ_FAIL("object %d (%s): ftm_refcount %zd, model %ld", id,
                             r->type == T_WEAKREF ? "weakref" : types[r->type].name, rc, r->rc);
  }
}

static void verify_all(void) {
  for (int id = 0; id < nobj; id++) {
    rec *r = &R[id];
    if (r->alive) check_alive(id);
    else if (r->type != T_WEAKREF && r->deaths != 1)
      FZ_FAIL("object %d (%s) dead in the model but deallocated %d times", id, types[r->type].name, r->deaths);
    if (r->fin_seen != r->fin_expected)
      FZ_FAIL("object %d: finalizer ran %d times, expected %d", id, r->fin_seen, r->fin_expected);
    if (r->type == T_WEAKREF) {
      if (r->cb_seen != r->cb_expected)
        FZ_FAIL("weakref %d: callback ran %d times, expected %d", id, r->cb_seen, r->cb_expected);
      if (r->alive) {
        ftm_object *g = ftm_weakref_get((ftm_weakref *)r->o);
        int ref = r->referent;
        if (g != ptr(ref)) FZ_FAIL("weakref %d: get returned %p, model %d (%p)", id, (void *)g, ref, (void *)ptr(ref));
        if (g != NULL) ftm_decref(g);
      }
    }
  }
}

/* Each generation holds exactly the tracked objects the model puts there
 * (an input starts with no tracked object alive). */
static void verify_generations(void) {
  static ftm_object *got[MAXOBJ + 1];
  for (int gen = 0; gen < FTM_GC_GENERATIONS; gen++) {
    size_t n = ftm_gc_get_objects(gen, got, MAXOBJ + 1);
    size_t k = n < MAXOBJ + 1 ? n : MAXOBJ + 1;
    int want = 0;
    for (int id = 0; id < nobj; id++) want += R[id].alive && R[id].tracked && R[id].gen == gen;
    for (size_t i = 0; i < k; i++) {
      int found = -1;
      for (int id = 0; id < nobj; id++)
        if (R[id].alive && R[id].o == got[i]) found = id;
      if (found < 0) FZ_FAIL("ftm_gc_get_objects(%d) lists %p, not a live object of the model", gen, (void *)got[i]);
      if (!R[found].tracked || R[found].gen != gen)
        FZ_FAIL("ftm_gc_get_objects(%d) lists object %d, model: %s generation %d", gen, found,
                R[found].tracked ? "tracked," : "untracked,", R[found].gen);
    }
    for (size_t i = 0; i < k; i++) ftm_decref(got[i]);
    if (n != (size_t)want) FZ_FAIL("ftm_gc_get_objects(%d): %zu objects, model %d", gen, n, want);
  }
}

/* ---- picking objects ------------------------------------------------------------ */
enum { P_ALIVE = 1, P_HELD = 2, P_CONTAINER = 4, P_PLAIN = 8, P_WEAKREF = 16, P_GC = 32 };

static bool fits(int id, unsigned want) {
  rec *r = &R[id];
  if (!r->alive) return false;
  if ((want & P_HELD) && r->ext <= 0) return false;
  if ((want & P_CONTAINER) && (r->type == T_WEAKREF || r->nf == 0)) return false;
  if ((want & P_PLAIN) && r->type == T_WEAKREF) return false;
  if ((want & P_WEAKREF) && r->type != T_WEAKREF) return false;
  if ((want & P_GC) && (r->type == T_WEAKREF || !is_gc_type(r->type))) return false;
  return true;
}

static int pick(uint8_t k, unsigned want) {
  int n = 0;
  for (int id = 0; id < nobj; id++) n += fits(id, want);
  if (n == 0) return -1;
  int target = k % n;
  for (int id = 0; id < nobj; id++)
    if (fits(id, want) && target-- == 0) return id;
  return -1;
}

static int pick_value(fz_in *in) {
  uint8_t k = fz_u8(in);
  if (k % 7 == 0) return -1;
  return pick(k / 7, P_HELD | P_PLAIN);
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
  r->tracked = is_gc_type(type);
  r->referent = -1;
  return id;
}

static int make_obj(int type, int nf, bool resurrect) {
  ftm_object *o = type == T_VAR ? ftm_new_var(&types[T_VAR], (size_t)nf) : ftm_new(&types[type]);
  if (o == NULL) FZ_FAIL("ftm_new(%s) failed: errno %d", types[type].name, errno);
  size_t want = types[type].basic_size + (type == T_VAR ? (size_t)nf * sizeof(ftm_field) : 0) +
                ((types[type].flags & FTM_TYPE_GC) ? 16 : 0);
  if (ftm_sizeof(o) != want) FZ_FAIL("ftm_sizeof(%s) %zu, expected %zu", types[type].name, ftm_sizeof(o), want);
  int id = new_rec(o, type, nf);
  *id_of(o) = (uint32_t)id;
  if (type != T_VAR) ((gobj *)o)->nf = (uint32_t)nf;
  *canary_of(o) = canary_for(id);
  R[id].resurrect = resurrect;
  return id;
}

static void op_new(fz_in *in) {
  if (nobj >= MAXOBJ) return;
  uint8_t b = fz_u8(in);
  int type = b % NTYPES;
  int nf = type == T_NODE ? 3 : type == T_FIN || type == T_BOX ? 2 : 0;
  if (type == T_VAR) nf = fz_u8(in) % (MAXF + 1);
  make_obj(type, nf, type == T_FIN && (b & 0x80));
}

/* A ring of k new GC objects (finalizer nodes at even places when bit 3
 * is set, the first resurrecting when bit 4 is), each holding the next in a field; the
 * handles are dropped except the bits of `keep` say otherwise: often
 * garbage at once. */
static void op_ring(fz_in *in) {
  uint8_t b = fz_u8(in), keep = fz_u8(in);
  int k = 1 + b % 8;
  if (nobj + k > MAXOBJ) return;
  int first = nobj;
  for (int i = 0; i < k; i++) {
    int type = (b >> 3) & 1 ? (i & 1 ? T_NODE : T_FIN) : T_NODE;
    make_obj(type, type == T_NODE ? 3 : 2, (b >> 4) & 1 && i == 0);
  }
  for (int i = 0; i < k; i++) {
    int id = first + i, next = first + (i + 1) % k;
    int s = (b >> 5) % R[id].nf;
    R[next].rc++;
    R[id].field[s] = next;
    uint32_t n;
    ftm_incref(R[next].o);
    ftm_field_init(&fields_of(R[id].o, &n)[s], R[next].o);
  }
  for (int i = 0; i < k; i++) {
    if (keep >> i & 1) continue;
    int id = first + i;
    R[id].ext--;
    model_drop(id);
    ftm_decref(R[id].o);
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

static void op_decref(fz_in *in) {
  int a = pick(fz_u8(in), P_HELD | P_PLAIN);
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

static void release_weakref(int w) {
  ftm_object *o = R[w].o;
  R[w].released = true;
  R[w].ext--;
  model_drop(w);
  ftm_weakref_release((ftm_weakref *)o);
}

static void op_weakref_release(fz_in *in) {
  int w = pick(fz_u8(in), P_WEAKREF | P_HELD);
  if (w < 0 || R[w].released) return;
  release_weakref(w);
}

static void op_track(fz_in *in, bool track) {
  int a = pick(fz_u8(in), P_GC);
  if (a < 0) return;
  if (track) {
    if (!R[a].tracked) R[a].gen = 0; /* back into the young generation */
    R[a].tracked = true;
    ftm_gc_track(R[a].o);
  } else {
    R[a].tracked = false;
    ftm_gc_untrack(R[a].o);
  }
}

static void op_set_deferred(fz_in *in) {
  int a = pick(fz_u8(in), P_PLAIN);
  if (a < 0) return;
  R[a].deferred = true;
  if (ftm_set_deferred(R[a].o) != 0) FZ_FAIL("ftm_set_deferred(%d) failed: errno %d", a, errno);
}

static void clear_deferred(int a) {
  rec *r = &R[a];
  ftm_object *o = r->o;
  r->deferred = false;
  /* no other thread is attached: the clear completes at once */
  if (r->rc == 0) model_zero(a);
  if (ftm_clear_deferred(o) != 0) FZ_FAIL("ftm_clear_deferred(%d) failed: errno %d", a, errno);
}

static void op_clear_deferred(fz_in *in) {
  int a = pick(fz_u8(in), P_PLAIN);
  if (a < 0 || !R[a].deferred) return;
  clear_deferred(a);
}

static void collect(int gen) {
  ssize_t want = model_collect(gen);
  gc_expected_starts++;
  gc_expect_collected = want;
  ssize_t got = ftm_gc_collect(gen);
  if (got != want) FZ_FAIL("ftm_gc_collect(%d) = %zd (errno %d), model %zd", gen, got, errno, want);
  if (gc_starts != gc_expected_starts) FZ_FAIL("ftm_gc_collect(%d): no callback", gen);
  verify_all();
  verify_generations();
}

static void op_collect(fz_in *in) {
  int gen = fz_u8(in) % 4;
  collect(gen == 3 ? 2 : gen);
}

enum {
  OP_NEW,
  OP_NEW2,
  OP_RING,
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
  OP_UNTRACK,
  OP_TRACK,
  OP_SET_DEFERRED,
  OP_CLEAR_DEFERRED,
  OP_SAFEPOINT,
  OP_COLLECT,
  OP_COLLECT2,
  OP__COUNT
};

static void run_ops(fz_in *in) {
  while (!fz_done(in)) {
    switch (fz_u8(in) % OP__COUNT) {
    case OP_NEW:
    case OP_NEW2: op_new(in); break;
    case OP_RING: op_ring(in); break;
    case OP_INCREF: op_incref(in); break;
    case OP_DECREF:
    case OP_DECREF2: op_decref(in); break;
    case OP_STORE:
    case OP_STORE2: op_store(in, 0); break;
    case OP_EXCHANGE: op_store(in, 1); break;
    case OP_LOAD: op_load(in); break;
    case OP_CLEAR: op_store(in, 2); break;
    case OP_WR_NEW: op_weakref_new(in); break;
    case OP_WR_GET: op_weakref_get(in); break;
    case OP_WR_RELEASE: op_weakref_release(in); break;
    case OP_UNTRACK: op_track(in, false); break;
    case OP_TRACK: op_track(in, true); break;
    case OP_SET_DEFERRED: op_set_deferred(in); break;
    case OP_CLEAR_DEFERRED: op_clear_deferred(in); break;
    case OP_SAFEPOINT:
      if (fz_u8(in) & 1) ftm_safepoint();
      else ftm_thread_flush();
      break;
    case OP_COLLECT:
    case OP_COLLECT2: op_collect(in); break;
    }
    verify_all();
  }
}

/* The end of an input: break what the collector cannot (references held
 * by untracked boxes, untracked objects), then drop every handle and let
 * full collections free the rest. */
static void release_all(void) {
  for (int id = 0; id < nobj; id++) {
    rec *r = &R[id];
    if (!r->alive || r->type != T_BOX) continue;
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
    if (r->alive && !r->tracked && is_gc_type(r->type)) {
      r->tracked = true;
      r->gen = 0;
      ftm_gc_track(r->o);
    }
  }
  for (int id = 0; id < nobj; id++)
    if (R[id].alive && R[id].deferred) clear_deferred(id);
  verify_all();
  /* A finalizer resurrects once per object, but resurrecting objects
   * reachable only through one another come back one per round (the next
   * is garbage only once the previous one has died): a round without a
   * new resurrection frees everything, so it takes at most one round
   * more than there are resurrecting finalizers yet to run. */
  int rounds = 1;
  for (int id = 0; id < nobj; id++)
    rounds += R[id].alive && R[id].type == T_FIN && R[id].resurrect && !R[id].finalized;
  for (int round = 0; round < rounds; round++) {
    for (int id = 0; id < nobj; id++) {
      rec *r = &R[id];
      while (r->alive && r->ext > 0) {
        if (r->type == T_WEAKREF && !r->released) {
          release_weakref(id);
        } else {
          r->ext--;
          model_drop(id);
          ftm_decref(r->o);
        }
      }
    }
    verify_all();
    collect(2);
    bool left = false;
    for (int id = 0; id < nobj; id++) left |= R[id].alive;
    if (!left) break;
  }
  for (int id = 0; id < nobj; id++)
    if (R[id].alive) FZ_FAIL("object %d still alive after releasing everything", id);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  ftm_gc_disable();
  if (fz_env_flag("FTMEM_FUZZ_GC_STATS")) ftm_gc_set_debug(FTM_GC_DEBUG_STATS); /* a line per collection */
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
  run_ops(&in);
  release_all();
  ftm_thread_flush();
  ftm_object_stats_get(&s1);
  uint64_t created = s1.created - s0.created, freed = s1.freed - s0.freed;
  if (created != (uint64_t)nobj) FZ_FAIL("created %llu objects, the model %d", (unsigned long long)created, nobj);
  if (created != freed)
    FZ_FAIL("created %llu, freed %llu: objects leaked", (unsigned long long)created, (unsigned long long)freed);
  return 0;
}
