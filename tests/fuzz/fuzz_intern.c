/* fuzz_intern.c — libFuzzer harness of the intern tables
 * (ftm_intern_table_new / ftm_intern / ftm_intern_lookup / ftm_intern_count
 * / ftm_intern_table_free) with a small string-like variable-size type.
 *
 * The input is text: lines.  A line that starts with one of the operation
 * characters below is an operation; any other line (the empty one too) is
 * a value to intern into the current table.
 *   ?value   look value up (a fresh probe object, released after)
 *   #        check counts and every canonical object of every table
 *   >c       make table (c % 4) current, creating it with hash mode
 *            (c / 4) % 5 if it does not exist
 *   !        free the current table (its canonical objects stay)
 *   *cvalue  intern value0 .. valueN, N = c % 64 (grows the table)
 *   @value   intern an object owned by another live thread: NULL + EPERM
 *            if value is new to the table, else the canonical; either way
 *            the object is released (queued to its owner, freed at its exit)
 *   &c       intern the next (c % 16) + 1 lines from the main thread and a
 *            helper thread at once: both must get the same instance
 * Hash modes (to force collisions in ck_hs and shards): full FNV-1a, its
 * low 4 bits, a constant, the length, its top 16 bits.
 *
 * The model per table: value -> canonical instance.  Interning a value the
 * table has must return that instance and release (free) the new object;
 * a new value's object comes back immortal and becomes the instance; a
 * lookup returns the instance or NULL; ftm_intern_count matches.  Every
 * input ends with its tables freed, ftm_thread_flush(), and ftm_object_stats
 * created - freed equal to the objects made immortal, and ftm_stats live
 * blocks up by exactly those.
 *
 * Canonical objects are immortal and never freed.  To keep a long run's
 * memory bounded, a process-wide pool remembers one immortal instance per
 * value ever interned, and the first intern of a value into a table uses
 * the pooled instance when there is one (interning an immortal object).
 * So an input's behaviour depends on earlier inputs; FTMEM_FUZZ_INTERN_NO_POOL=1
 * turns the pool off (exact reproduction of a saved crash input).
 */
#include "fuzz_common.h"

#define NTABLES 4
#define MAXVAL 64   /* bytes of a value */
#define MAXCANON 1024 /* instances per table per input; new values beyond are skipped */
#define BUDGET 4096   /* work units per input (an intern is 1), to bound a run's time */
#define MAXLINES 1024
#define MAXCONC 16

/* ---- the string type ------------------------------------------------------------- */
typedef struct fstr {
  ftm_varobject ob; /* ob_size: length */
  uint64_t fnv;
  uint64_t canary;
  char data[]; /* ob_size bytes and a NUL */
} fstr;

static _Atomic long n_dead;
static ftm_object *_Atomic last_dead;
#define CANARY_LIVE 0x5354524C49564521ull
#define CANARY_DEAD 0xDEADDEADDEADDEADull

static void str_dealloc(ftm_object *self) {
  fstr *s = (fstr *)self;
  if (s->canary != CANARY_LIVE) FZ_FAIL("str %p deallocated with canary %016llx", (void *)self, (unsigned long long)s->canary);
  s->canary = CANARY_DEAD;
  atomic_store(&last_dead, self);
  atomic_fetch_add(&n_dead, 1);
}

static ftm_type str_type = {.name = "fz_str", .basic_size = sizeof(fstr) + 1, .item_size = 1,
                            .dealloc = str_dealloc};

FZ_NO_COVERAGE static uint64_t fnv1a(const char *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
  return h;
}

static fstr *new_str(const char *p, size_t n) {
  fstr *s = (fstr *)ftm_new_var(&str_type, n);
  if (s == NULL) FZ_FAIL("ftm_new_var(str, %zu) failed: errno %d", n, errno);
  memcpy(s->data, p, n);
  s->data[n] = '\0';
  s->fnv = fnv1a(p, n);
  s->canary = CANARY_LIVE;
  return s;
}

static bool str_is(const fstr *s, const char *p, size_t n) {
  return ftm_type_of(&s->ob.ob_base) == &str_type && ftm_var_size(&s->ob.ob_base) == n &&
         memcmp(s->data, p, n) == 0 && s->data[n] == '\0' && s->fnv == fnv1a(p, n) && s->canary == CANARY_LIVE;
}

static uint64_t h_full(const ftm_object *o) { return ((const fstr *)o)->fnv; }
static uint64_t h_low4(const ftm_object *o) { return ((const fstr *)o)->fnv & 0xF; }
static uint64_t h_const(const ftm_object *o) { (void)o; return 42; }
static uint64_t h_len(const ftm_object *o) { return ftm_var_size(o); }
static uint64_t h_top16(const ftm_object *o) { return ((const fstr *)o)->fnv & 0xFFFF000000000000ull; }
static ftm_intern_hash const hashes[] = {h_full, h_low4, h_const, h_len, h_top16};
#define NHASH (sizeof hashes / sizeof hashes[0])

static bool str_eq(const ftm_object *a, const ftm_object *b) {
  const fstr *x = (const fstr *)a, *y = (const fstr *)b;
  if (x->canary != CANARY_LIVE || y->canary != CANARY_LIVE) FZ_FAIL("eq called on a dead str");
  return ftm_var_size(a) == ftm_var_size(b) && memcmp(x->data, y->data, ftm_var_size(a)) == 0;
}

/* ---- the process-wide pool of immortal instances ---------------------------------- */
static fstr **pool;
static size_t pool_cap, pool_n;
static bool pool_off;

FZ_NO_COVERAGE static fstr *pool_find(const char *p, size_t n) {
  if (pool_cap == 0) return NULL;
  uint64_t h = fnv1a(p, n);
  for (size_t i = h & (pool_cap - 1);; i = (i + 1) & (pool_cap - 1)) {
    fstr *s = pool[i];
    if (s == NULL) return NULL;
    if (s->fnv == h && ftm_var_size(&s->ob.ob_base) == n && memcmp(s->data, p, n) == 0) return s;
  }
}

static void pool_put_raw(fstr *s) {
  for (size_t i = s->fnv & (pool_cap - 1);; i = (i + 1) & (pool_cap - 1))
    if (pool[i] == NULL) {
      pool[i] = s;
      return;
    }
}

static void pool_add(fstr *s) {
  if (pool_off || pool_find(s->data, ftm_var_size(&s->ob.ob_base)) != NULL) return;
  if (2 * (pool_n + 1) > pool_cap) {
    size_t old_cap = pool_cap;
    fstr **old = pool;
    pool_cap = pool_cap ? pool_cap * 2 : 1024;
    pool = calloc(pool_cap, sizeof *pool);
    if (pool == NULL) FZ_FAIL("harness: out of memory");
    for (size_t i = 0; i < old_cap; i++)
      if (old[i] != NULL) pool_put_raw(old[i]);
    free(old);
  }
  pool_put_raw(s);
  pool_n++;
}

/* ---- tables and their model ----------------------------------------------------- */
typedef struct table {
  ftm_intern_table *t;
  int hash_mode;
  fstr **canon; /* the instances, in order of interning */
  size_t n;
} table;

static table tables[NTABLES];
static int cur;
static long made_immortal; /* objects this input made immortal (never freed) */
static long budget;        /* work left for this input */

FZ_NO_COVERAGE static fstr *model_find(table *tb, const char *p, size_t n) {
  for (size_t i = 0; i < tb->n; i++) {
    fstr *s = tb->canon[i];
    if (ftm_var_size(&s->ob.ob_base) == n && memcmp(s->data, p, n) == 0) return s;
  }
  return NULL;
}

static void model_add(table *tb, fstr *s) {
  if (tb->n >= MAXCANON) FZ_FAIL("harness: table model full");
  tb->canon[tb->n++] = s;
}

static table *current(void) {
  table *tb = &tables[cur];
  if (tb->t == NULL) {
    tb->t = ftm_intern_table_new(hashes[tb->hash_mode], str_eq);
    if (tb->t == NULL) FZ_FAIL("ftm_intern_table_new failed: errno %d", errno);
    if (tb->canon == NULL) tb->canon = malloc(MAXCANON * sizeof *tb->canon);
    if (tb->canon == NULL) FZ_FAIL("harness: out of memory");
    tb->n = 0;
  }
  return tb;
}

static void table_free(table *tb) {
  if (tb->t == NULL) return;
  ftm_intern_table_free(tb->t);
  tb->t = NULL;
  /* the instances stay: immortal, intact */
  for (size_t i = 0; i < tb->n; i++)
    if (tb->canon[i]->canary != CANARY_LIVE || !ftm_is_immortal(&tb->canon[i]->ob.ob_base))
      FZ_FAIL("instance %zu damaged by freeing its table", i);
  tb->n = 0;
}

static void check_tables(void) {
  for (int k = 0; k < NTABLES; k++) {
    table *tb = &tables[k];
    if (tb->t == NULL) continue;
    size_t c = ftm_intern_count(tb->t);
    if (c != tb->n) FZ_FAIL("table %d: ftm_intern_count %zu, model %zu", k, c, tb->n);
    for (size_t i = 0; i < tb->n; i++) {
      fstr *s = tb->canon[i];
      if (s->canary != CANARY_LIVE || !ftm_is_immortal(&s->ob.ob_base))
        FZ_FAIL("table %d instance %zu (%p): canary %016llx immortal %d", k, i, (void *)s,
                (unsigned long long)s->canary, ftm_is_immortal(&s->ob.ob_base));
      ftm_object *l = ftm_intern_lookup(tb->t, &s->ob.ob_base);
      if (l != &s->ob.ob_base) FZ_FAIL("table %d: lookup of instance %zu gives %p, not %p", k, i, (void *)l, (void *)s);
    }
  }
}

/* ---- operations --------------------------------------------------------------- */
static void expect_dead(long before, ftm_object *o, const char *what) {
  long now = atomic_load(&n_dead);
  if (now != before + 1 || atomic_load(&last_dead) != o)
    FZ_FAIL("%s: the released object %p was not freed (%ld deaths, expected %ld)", what, (void *)o, now - before, 1L);
}

static void do_intern(const char *p, size_t n) {
  table *tb = current();
  fstr *c = model_find(tb, p, n);
  if (c == NULL && tb->n >= MAXCANON) return;
  fstr *pooled = c == NULL && !pool_off ? pool_find(p, n) : NULL;
  fstr *obj = pooled ? pooled : new_str(p, n);
  long d0 = atomic_load(&n_dead);
  ftm_object *r = ftm_intern(tb->t, &obj->ob.ob_base);
  if (r == NULL) FZ_FAIL("ftm_intern(\"%.*s\") failed: errno %d", (int)n, p, errno);
  if (c != NULL) {
    if (r != &c->ob.ob_base) FZ_FAIL("intern of a known value returned %p, instance %p", (void *)r, (void *)c);
    expect_dead(d0, &obj->ob.ob_base, "intern of a known value");
    return;
  }
  if (r != &obj->ob.ob_base) FZ_FAIL("intern of a new value returned %p, not its object %p", (void *)r, (void *)obj);
  if (atomic_load(&n_dead) != d0) FZ_FAIL("intern of a new value freed something");
  if (!ftm_is_immortal(r)) FZ_FAIL("interned instance not immortal");
  if (!str_is(obj, p, n)) FZ_FAIL("interned instance changed");
  if (!pooled) {
    made_immortal++;
    pool_add(obj);
  }
  model_add(tb, obj);
}

static void do_lookup(const char *p, size_t n) {
  table *tb = current();
  fstr *c = model_find(tb, p, n);
  fstr *probe = new_str(p, n);
  ftm_object *r = ftm_intern_lookup(tb->t, &probe->ob.ob_base);
  if (r != (c ? &c->ob.ob_base : NULL)) FZ_FAIL("lookup(\"%.*s\") = %p, model %p", (int)n, p, (void *)r, (void *)c);
  long d0 = atomic_load(&n_dead);
  ftm_decref(&probe->ob.ob_base);
  expect_dead(d0, &probe->ob.ob_base, "lookup probe");
}

/* @value: the object belongs to a thread that is still running. */
typedef struct foreign {
  const char *p;
  size_t n;
  fstr *obj;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int stage; /* 1: obj made, 2: main is done with it */
} foreign;

static void *foreign_main(void *arg) {
  foreign *f = arg;
  fstr *o = new_str(f->p, f->n);
  pthread_mutex_lock(&f->lock);
  f->obj = o;
  f->stage = 1;
  pthread_cond_broadcast(&f->cond);
  while (f->stage != 2) pthread_cond_wait(&f->cond, &f->lock);
  pthread_mutex_unlock(&f->lock);
  return NULL; /* exit merges the queue: the released object dies here */
}

static void do_foreign(const char *p, size_t n) {
  table *tb = current();
  fstr *c = model_find(tb, p, n);
  foreign f = {.p = p, .n = n};
  pthread_mutex_init(&f.lock, NULL);
  pthread_cond_init(&f.cond, NULL);
  pthread_t th;
  if (pthread_create(&th, NULL, foreign_main, &f) != 0) FZ_FAIL("pthread_create");
  pthread_mutex_lock(&f.lock);
  while (f.stage != 1) pthread_cond_wait(&f.cond, &f.lock);
  pthread_mutex_unlock(&f.lock);
  long d0 = atomic_load(&n_dead);
  errno = 0;
  ftm_object *r = ftm_intern(tb->t, &f.obj->ob.ob_base);
  if (c != NULL) {
    if (r != &c->ob.ob_base) FZ_FAIL("foreign intern of a known value returned %p, instance %p", (void *)r, (void *)c);
  } else if (r != NULL || errno != EPERM) {
    FZ_FAIL("foreign intern of a new value returned %p errno %d, expected NULL/EPERM", (void *)r, errno);
  }
  pthread_mutex_lock(&f.lock);
  f.stage = 2;
  pthread_cond_broadcast(&f.cond);
  pthread_mutex_unlock(&f.lock);
  pthread_join(th, NULL);
  ftm_safepoint();
  expect_dead(d0, &f.obj->ob.ob_base, "foreign intern");
  pthread_mutex_destroy(&f.lock);
  pthread_cond_destroy(&f.cond);
  if (ftm_intern_count(tb->t) != tb->n) FZ_FAIL("foreign intern changed the count");
}

/* &c: the same values interned from two threads at once. */
typedef struct conc {
  const char *p[MAXCONC];
  size_t n[MAXCONC];
  int k;
  ftm_intern_table *t;
  ftm_object *got[2][MAXCONC];
  fstr *made[2][MAXCONC];
  _Atomic int go;
} conc;

static void conc_run(conc *c, int side) {
  for (int j = 0; j < c->k; j++) {
    int i = side ? c->k - 1 - j : j; /* opposite orders */
    fstr *o = new_str(c->p[i], c->n[i]);
    c->made[side][i] = o;
    c->got[side][i] = ftm_intern(c->t, &o->ob.ob_base);
    if (c->got[side][i] == NULL) FZ_FAIL("concurrent intern failed: errno %d", errno);
  }
}

static void *conc_main(void *arg) {
  conc *c = arg;
  atomic_store(&c->go, 1);
  conc_run(c, 1);
  return NULL;
}

static void do_concurrent(conc *c) {
  table *tb = current();
  c->t = tb->t;
  fstr *before[MAXCONC];
  for (int i = 0; i < c->k; i++) before[i] = model_find(tb, c->p[i], c->n[i]);
  ftm_object_stats_t s0, s1;
  ftm_thread_flush();
  ftm_object_stats_get(&s0);
  pthread_t th;
  if (pthread_create(&th, NULL, conc_main, c) != 0) FZ_FAIL("pthread_create");
  while (!atomic_load(&c->go)) {
  }
  conc_run(c, 0);
  pthread_join(th, NULL);
  ftm_thread_flush();
  ftm_object_stats_get(&s1);
  long fresh_canon = 0;
  for (int i = 0; i < c->k; i++) {
    ftm_object *a = c->got[0][i], *b = c->got[1][i];
    if (a != b) FZ_FAIL("value \"%.*s\": thread A got %p, thread B %p", (int)c->n[i], c->p[i], (void *)a, (void *)b);
    fstr *s = (fstr *)a;
    if (!str_is(s, c->p[i], c->n[i]) || !ftm_is_immortal(a)) FZ_FAIL("concurrent intern: bad instance");
    fstr *known = before[i] ? before[i] : model_find(tb, c->p[i], c->n[i]);
    if (known != NULL) {
      if (a != &known->ob.ob_base) FZ_FAIL("concurrent intern of a known value: %p, instance %p", (void *)a, (void *)known);
      continue;
    }
    bool ours = false; /* one of the objects made for this value (it may repeat) */
    for (int j = 0; j < c->k; j++)
      ours |= a == &c->made[0][j]->ob.ob_base || a == &c->made[1][j]->ob.ob_base;
    if (!ours) FZ_FAIL("concurrent intern: instance %p is neither thread's object", (void *)a);
    model_add(tb, s);
    pool_add(s);
    made_immortal++;
    fresh_canon++;
  }
  uint64_t created = s1.created - s0.created, freed = s1.freed - s0.freed;
  if (created != (uint64_t)(2 * c->k) || freed != created - (uint64_t)fresh_canon)
    FZ_FAIL("concurrent intern: created %llu, freed %llu, new instances %ld", (unsigned long long)created,
            (unsigned long long)freed, fresh_canon);
  if (ftm_intern_count(tb->t) != tb->n) FZ_FAIL("concurrent intern: count %zu, model %zu", ftm_intern_count(tb->t), tb->n);
}

/* ---- the input ----------------------------------------------------------------- */
typedef struct line {
  const char *p;
  size_t n;
} line;

FZ_NO_COVERAGE static size_t split(const uint8_t *data, size_t size, line *out) {
  size_t k = 0, start = 0;
  for (size_t i = 0; i <= size && k < MAXLINES; i++) {
    if (i == size || data[i] == '\n') {
      if (i == size && i == start && k > 0) break; /* no empty last line after a final newline */
      out[k].p = (const char *)data + start;
      out[k].n = i - start > MAXVAL ? MAXVAL : i - start;
      k++;
      start = i + 1;
    }
  }
  return k;
}

static unsigned long long live_blocks(void) {
  ftm_stats_t st;
  ftm_stats_get(&st);
  return st.live_count;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  pool_off = fz_env_flag("FTMEM_FUZZ_INTERN_NO_POOL");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static line lines[MAXLINES];
  size_t nl = split(data, size, lines);
  ftm_thread_flush();
  ftm_object_stats_t s0, s1;
  ftm_object_stats_get(&s0);
  unsigned long long live0 = live_blocks();
  made_immortal = 0;
  cur = 0;
  for (int k = 0; k < NTABLES; k++) tables[k].hash_mode = k % (int)NHASH;

  budget = BUDGET;
  for (size_t i = 0; i < nl && budget > 0; i++) {
    const char *p = lines[i].p;
    size_t n = lines[i].n;
    char op = n ? p[0] : 0;
    switch (op) {
    case '?': do_lookup(p + 1, n - 1); break;
    case '#':
      check_tables();
      for (int k = 0; k < NTABLES; k++) budget -= (long)tables[k].n / 16;
      break;
    case '>': {
      unsigned c = n > 1 ? (unsigned char)p[1] : 0;
      cur = (int)(c % NTABLES);
      if (tables[cur].t == NULL) tables[cur].hash_mode = (int)((c / NTABLES) % NHASH);
      (void)current();
      break;
    }
    case '!': table_free(&tables[cur]); break;
    case '*': {
      unsigned c = n > 1 ? (unsigned char)p[1] : 0;
      char buf[MAXVAL + 8];
      size_t vn = n > 2 ? n - 2 : 0;
      memcpy(buf, p + 2, vn);
      for (unsigned j = 0; j <= c % 64 && budget > 0; j++, budget--) {
        int w = snprintf(buf + vn, sizeof buf - vn, "%u", j);
        do_intern(buf, vn + (size_t)w);
      }
      break;
    }
    case '@':
      do_foreign(p + 1, n - 1);
      budget -= 16;
      break;
    case '&': {
      static conc c;
      memset(&c, 0, sizeof c);
      unsigned k = n > 1 ? (unsigned char)p[1] % MAXCONC + 1 : 1;
      for (unsigned j = 0; j < k && i + 1 < nl; j++) {
        i++;
        c.p[c.k] = lines[i].p;
        c.n[c.k] = lines[i].n;
        c.k++;
      }
      if (c.k > 0 && current()->n + (size_t)c.k <= MAXCANON) do_concurrent(&c);
      budget -= 16 + 2 * c.k;
      break;
    }
    default: do_intern(p, n); break;
    }
    budget--;
  }
  check_tables();
  for (int k = 0; k < NTABLES; k++) table_free(&tables[k]);
  ftm_thread_flush();
  ftm_object_stats_get(&s1);
  uint64_t created = s1.created - s0.created, freed = s1.freed - s0.freed;
  if (created != freed + (uint64_t)made_immortal)
    FZ_FAIL("created %llu objects, freed %llu, made immortal %ld", (unsigned long long)created,
            (unsigned long long)freed, made_immortal);
  unsigned long long live1 = live_blocks();
  if (live1 != live0 + (unsigned long long)made_immortal)
    FZ_FAIL("live blocks %llu, were %llu before the input, + %ld immortal instances", live1, live0, made_immortal);
  return 0;
}
