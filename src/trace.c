/* trace.c — recording allocations while tracing is on (ftmem/trace.h):
 * the hooks the allocation entry points call, the table of live traces,
 * the interned tracebacks, traced memory and its peak, sampling.
 * Snapshots and statistics are in trace_snapshot.c, resolving addresses in
 * symbolize.c.
 *
 * Hot-path cost when off: every public allocation entry point tests one
 * global flag (ftm__trace_on, relaxed load), and the free fast path one
 * byte of the pool descriptor it reads anyway (xtraced); nothing else.
 *
 * Concurrency.  Live traces sit in 64 shards (open addressing, linear
 * probing, deletion by backward shift), tracebacks in 16 interning shards;
 * each shard has a spin lock, held only for the table operation (no
 * allocation inside: the tables are OS memory).  tracemalloc holds one
 * global lock for the same work.  ftm__trace_gen, changed only with every
 * shard lock held (clear/stop), tells a recorder that raced a clear to drop
 * its record: it read the generation when it interned its traceback and
 * compares it under the trace shard's lock before inserting.
 *
 * Free path: each pool counts its live traced blocks (xtraced), so a free
 * looks the table up only in pools that have one — which keeps the
 * sampling mode's frees cheap.  Every insert of a new entry raises its
 * pool's count and every removal (a free, or a clear) lowers it, so the
 * counts return to 0 once tracing stops.
 *
 * Reentrancy: a thread inside the tracer (or resolving symbols, whose
 * libraries call malloc) has ftm__trace_busy set; its allocations are not
 * recorded.
 */
#include <errno.h>
#include <execinfo.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "internal.h"
#include "lockfree/spinlock.h"
#include "trace_internal.h"

_Atomic int ftm__trace_on;
static _Atomic int ftm__trace_limit = 1;
static _Atomic size_t ftm__trace_rate; /* 0: every allocation */
static _Atomic uint32_t ftm__trace_rate_epoch;
static uint64_t ftm__trace_gen; /* changed with every shard lock held */
__thread ftm__trace_thread ftm__trace_tls __attribute__((tls_model("initial-exec")));
#define ftm__sample_left (ftm__trace_tls.sample_left)
#define ftm__sample_epoch (ftm__trace_tls.sample_epoch)

/* relaxed counters: exact sums, read as a whole only by get_traced_memory */
static _Atomic int64_t ftm__traced_current, ftm__traced_peak;
static _Atomic uint64_t ftm__tracer_bytes; /* OS memory of the tables */
pthread_mutex_t ftm__trace_api_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- OS memory for the tables ------------------------------------------- */
static void *ftm__trace_map(size_t n) {
  void *p = ftm__os_map(n);
  if (p != NULL) ftm_atomic_fetch_add_relaxed(&ftm__tracer_bytes, n);
  return p;
}
static void ftm__trace_unmap(void *p, size_t n) {
  if (p == NULL) return;
  ftm__os_unmap(p, n);
  ftm_atomic_fetch_sub_relaxed(&ftm__tracer_bytes, n);
}

/* ---- interned tracebacks ---------------------------------------------------- */
#define FTM_TB_SHARDS 16
#define FTM_TB_CHUNK ((size_t)256 << 10)

typedef struct ftm__tb_chunk {
  struct ftm__tb_chunk *next;
  size_t used;
} ftm__tb_chunk;

typedef struct {
  ftm_spinlock_t lock;
  ftm__tb **slot; /* open addressing by hash */
  size_t cap, n;
  ftm__tb_chunk *chunks; /* bump allocation of ftm__tb records */
  char pad[64 - sizeof(ftm_spinlock_t) - 4 * sizeof(void *)];
} ftm__tb_shard;
static ftm__tb_shard ftm__tbs[FTM_TB_SHARDS] __attribute__((aligned(64)));

static uint64_t ftm__tb_hash(const uintptr_t *pc, int n) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t)n;
  for (int i = 0; i < n; i++) h = (h ^ pc[i]) * 0xff51afd7ed558ccdull, h ^= h >> 32;
  return h;
}

static ftm__tb *ftm__tb_alloc(ftm__tb_shard *s, int n) {
  size_t need = (sizeof(ftm__tb) + (size_t)n * sizeof(uintptr_t) + 15) & ~(size_t)15;
  ftm__tb_chunk *c = s->chunks;
  if (c == NULL || c->used + need > FTM_TB_CHUNK) {
    c = ftm__trace_map(FTM_TB_CHUNK);
    if (c == NULL) return NULL;
    c->next = s->chunks;
    c->used = (sizeof(ftm__tb_chunk) + 15) & ~(size_t)15;
    s->chunks = c;
  }
  ftm__tb *t = (ftm__tb *)((char *)c + c->used);
  c->used += need;
  return t;
}

static bool ftm__tb_grow(ftm__tb_shard *s) {
  size_t cap = s->cap ? s->cap * 2 : 256;
  ftm__tb **slot = ftm__trace_map(cap * sizeof *slot);
  if (slot == NULL) return false;
  for (size_t i = 0; i < s->cap; i++) {
    ftm__tb *t = s->slot[i];
    if (t == NULL) continue;
    size_t j = t->hash & (cap - 1);
    while (slot[j] != NULL) j = (j + 1) & (cap - 1);
    slot[j] = t;
  }
  ftm__trace_unmap(s->slot, s->cap * sizeof *s->slot);
  s->slot = slot;
  s->cap = cap;
  return true;
}

/* The interned copy of pc[0..n), and the generation it belongs to. */
static ftm__tb *ftm__tb_intern(const uintptr_t *pc, int n, uint64_t *gen) {
  uint64_t h = ftm__tb_hash(pc, n);
  ftm__tb_shard *s = &ftm__tbs[h >> 60];
  ftm__tb *found = NULL;
  ftm_spinlock_lock(&s->lock);
  *gen = ftm__trace_gen;
  /* stopped meanwhile (the stop clears the flag before taking the locks):
   * nothing to intern, and no table to map after the stop's reset */
  if (!ftm_atomic_load_relaxed(&ftm__trace_on)) goto out;
  if (s->n * 2 >= s->cap && !ftm__tb_grow(s)) goto out;
  size_t j = h & (s->cap - 1);
  for (ftm__tb *t; (t = s->slot[j]) != NULL; j = (j + 1) & (s->cap - 1)) {
    if (t->hash == (uint32_t)h && t->n == n && memcmp(t->pc, pc, (size_t)n * sizeof *pc) == 0) {
      found = t;
      goto out;
    }
  }
  found = ftm__tb_alloc(s, n);
  if (found != NULL) {
    found->hash = (uint32_t)h;
    found->n = (uint16_t)n;
    memcpy(found->pc, pc, (size_t)n * sizeof *pc);
    s->slot[j] = found;
    s->n++;
  }
out:
  ftm_spinlock_unlock(&s->lock);
  return found;
}

/* Every shard lock held. */
static void ftm__tb_reset_locked(void) {
  for (unsigned i = 0; i < FTM_TB_SHARDS; i++) {
    ftm__tb_shard *s = &ftm__tbs[i];
    for (ftm__tb_chunk *c = s->chunks, *nx; c != NULL; c = nx) {
      nx = c->next;
      ftm__trace_unmap(c, FTM_TB_CHUNK);
    }
    ftm__trace_unmap(s->slot, s->cap * sizeof *s->slot);
    s->chunks = NULL;
    s->slot = NULL;
    s->cap = s->n = 0;
  }
}

/* ---- live traces -------------------------------------------------------------- */
#define FTM_TR_SHARDS 64

typedef struct {
  ftm_spinlock_t lock;
  ftm__trace_entry *e; /* ptr 0: empty */
  size_t cap, n;
  char pad[64 - sizeof(ftm_spinlock_t) - 3 * sizeof(void *)];
} ftm__tr_shard;
static ftm__tr_shard ftm__trs[FTM_TR_SHARDS] __attribute__((aligned(64)));

static inline uint64_t ftm__ptr_hash(uintptr_t p) { return (p >> 4) * 0x9e3779b97f4a7c15ull; }

static bool ftm__tr_grow(ftm__tr_shard *s) {
  size_t cap = s->cap ? s->cap * 2 : 256;
  ftm__trace_entry *e = ftm__trace_map(cap * sizeof *e);
  if (e == NULL) return false;
  for (size_t i = 0; i < s->cap; i++) {
    if (s->e[i].ptr == 0) continue;
    size_t j = ftm__ptr_hash(s->e[i].ptr) & (cap - 1);
    while (e[j].ptr != 0) j = (j + 1) & (cap - 1);
    e[j] = s->e[i];
  }
  ftm__trace_unmap(s->e, s->cap * sizeof *s->e);
  s->e = e;
  s->cap = cap;
  return true;
}

static size_t ftm__tr_find(const ftm__tr_shard *s, uintptr_t p) {
  if (s->cap == 0) return SIZE_MAX;
  size_t j = ftm__ptr_hash(p) & (s->cap - 1);
  for (; s->e[j].ptr != 0; j = (j + 1) & (s->cap - 1))
    if (s->e[j].ptr == p) return j;
  return SIZE_MAX;
}

/* Remove slot j, shifting the following run back (no tombstones). */
static void ftm__tr_delete(ftm__tr_shard *s, size_t j) {
  size_t mask = s->cap - 1;
  for (size_t k = (j + 1) & mask; s->e[k].ptr != 0; k = (k + 1) & mask) {
    size_t home = ftm__ptr_hash(s->e[k].ptr) & mask;
    /* move k back to j if its home is not in (j, k] cyclically */
    if (((k - home) & mask) >= ((k - j) & mask)) {
      s->e[j] = s->e[k];
      j = k;
    }
  }
  s->e[j].ptr = 0;
  s->n--;
}

static void ftm__traced_add(int64_t d) {
  int64_t now = ftm_atomic_fetch_add_relaxed(&ftm__traced_current, d) + d;
  int64_t peak = ftm_atomic_load_relaxed(&ftm__traced_peak);
  while (now > peak && !ftm_atomic_cas_weak_relaxed(&ftm__traced_peak, &peak, now)) {
  }
}

static void ftm__pool_traced(uintptr_t p, int d) {
  ftm__pool *pool = ftm__pagemap_lookup((void *)p);
  if (pool != NULL) ftm_atomic_fetch_add_relaxed(&pool->xtraced, (uint16_t)d);
}

/* Insert (or replace) e: 1 inserted, 0 replaced an entry for the same
 * block, -1 dropped (a clear ran since gen, or memory ran out).  A new
 * entry raises its pool's count before the block is handed out. */
static int ftm__tr_insert(const ftm__trace_entry *e, uint64_t gen) {
  ftm__tr_shard *s = &ftm__trs[ftm__ptr_hash(e->ptr) >> 58];
  int64_t d = 0;
  int ok = -1;
  ftm_spinlock_lock(&s->lock);
  /* a stop stores the flag before it takes the locks: a recorder that
   * saw tracing on but gets here after the stop's reset drops its record
   * (and one whose traceback predates a reset has a stale gen) */
  if (gen != ftm__trace_gen || !ftm_atomic_load_relaxed(&ftm__trace_on)) goto out;
  size_t j = ftm__tr_find(s, e->ptr);
  if (j != SIZE_MAX) { /* the same block recorded twice (an object's block) */
    d -= (int64_t)s->e[j].est;
    s->e[j] = *e;
    ok = 0;
  } else {
    if (s->n * 2 >= s->cap && !ftm__tr_grow(s)) goto out;
    j = ftm__ptr_hash(e->ptr) & (s->cap - 1);
    while (s->e[j].ptr != 0) j = (j + 1) & (s->cap - 1);
    s->e[j] = *e;
    s->n++;
    ftm__pool_traced(e->ptr, 1); /* under the lock: a clear sees entry and count together */
    ok = 1;
  }
  d += (int64_t)e->est;
out:
  /* under the lock: a clear (all locks held) zeroes the total with the table */
  if (d != 0) ftm__traced_add(d);
  ftm_spinlock_unlock(&s->lock);
  return ok;
}

/* Remove p's trace; a copy and its generation in *out / *gen if wanted. */
bool ftm__trace_take(const void *p, ftm__trace_entry *out, uint64_t *gen) {
  ftm__tr_shard *s = &ftm__trs[ftm__ptr_hash((uintptr_t)p) >> 58];
  bool found = false;
  int64_t est = 0;
  ftm_spinlock_lock(&s->lock);
  size_t j = ftm__tr_find(s, (uintptr_t)p);
  if (j != SIZE_MAX) {
    found = true;
    if (out != NULL) *out = s->e[j];
    if (gen != NULL) *gen = ftm__trace_gen;
    est = (int64_t)s->e[j].est;
    ftm__pool_traced(s->e[j].ptr, -1);
    ftm__tr_delete(s, j);
    ftm__traced_add(-est); /* under the lock, as in ftm__tr_insert */
  }
  ftm_spinlock_unlock(&s->lock);
  return found;
}

/* Undo a take (a realloc that failed), unless a clear ran since. */
void ftm__trace_put_back(const ftm__trace_entry *e, uint64_t gen) { (void)ftm__tr_insert(e, gen); }

/* A copy of p's entry (under its shard lock); false when untraced. */
bool ftm__trace_lookup(const void *p, ftm__trace_entry *out) {
  ftm__tr_shard *s = &ftm__trs[ftm__ptr_hash((uintptr_t)p) >> 58];
  ftm_spinlock_lock(&s->lock);
  size_t j = ftm__tr_find(s, (uintptr_t)p);
  if (j != SIZE_MAX) *out = s->e[j];
  ftm_spinlock_unlock(&s->lock);
  return j != SIZE_MAX;
}

/* Visit every live entry, shard by shard (each under its lock). */
void ftm__trace_foreach(void (*fn)(const ftm__trace_entry *, void *), void *arg) {
  for (unsigned i = 0; i < FTM_TR_SHARDS; i++) {
    ftm__tr_shard *s = &ftm__trs[i];
    ftm_spinlock_lock(&s->lock);
    for (size_t j = 0; j < s->cap; j++)
      if (s->e[j].ptr != 0) fn(&s->e[j], arg);
    ftm_spinlock_unlock(&s->lock);
  }
}

static void ftm__lock_all(void) {
  for (unsigned i = 0; i < FTM_TR_SHARDS; i++) ftm_spinlock_lock(&ftm__trs[i].lock);
  for (unsigned i = 0; i < FTM_TB_SHARDS; i++) ftm_spinlock_lock(&ftm__tbs[i].lock);
}
static void ftm__unlock_all(void) {
  for (unsigned i = 0; i < FTM_TB_SHARDS; i++) ftm_spinlock_unlock(&ftm__tbs[i].lock);
  for (unsigned i = 0; i < FTM_TR_SHARDS; i++) ftm_spinlock_unlock(&ftm__trs[i].lock);
}

/* Forget every trace and traceback (api lock held). */
static void ftm__trace_reset(void) {
  ftm__lock_all();
  ftm__trace_gen++;
  for (unsigned i = 0; i < FTM_TR_SHARDS; i++) {
    ftm__tr_shard *s = &ftm__trs[i];
    for (size_t j = 0; j < s->cap; j++) /* the blocks are live: their pools are there */
      if (s->e[j].ptr != 0) ftm__pool_traced(s->e[j].ptr, -1);
    ftm__trace_unmap(s->e, s->cap * sizeof *s->e);
    s->e = NULL;
    s->cap = s->n = 0;
  }
  ftm__tb_reset_locked();
  ftm_atomic_store_relaxed(&ftm__traced_current, 0);
  ftm_atomic_store_relaxed(&ftm__traced_peak, 0);
  ftm__unlock_all();
}

/* ---- recording ---------------------------------------------------------------- */
/* Exponential with mean `rate` (bytes until the next sample). */
static int64_t ftm__sample_draw(size_t rate) {
  uint64_t x = ftm__random_fast();
  double u = ((double)(x >> 11) + 0.5) * (1.0 / 9007199254740992.0); /* (0, 1) */
  return (int64_t)(-log(u) * (double)rate) + 1;
}

/* The return addresses from `ra` outwards, at most limit. */
static int ftm__capture(uintptr_t *pc, int limit, void *ra) {
  pc[0] = (uintptr_t)ra;
  if (limit == 1) return 1;
  void *buf[FTM_TRACE_MAX_FRAMES + 16];
  int n = backtrace(buf, limit + 16);
  int i = 0;
  while (i < n && buf[i] != ra) i++; /* skip ftmem's own frames */
  if (i == n) return 1;
  int k = 0;
  for (; i < n && k < limit; i++) pc[k++] = (uintptr_t)buf[i];
  return k;
}

void ftm__trace_record(void *p, size_t size, void *ra) {
  if (p == NULL || ftm__trace_busy) return;
  size_t est = size;
  size_t rate = ftm_atomic_load_relaxed(&ftm__trace_rate);
  if (rate != 0) {
    /* ftm__trace_alloc_hook counted size off already and found the
     * countdown run out — unless it was drawn for other settings (or never:
     * a new thread's is 0), in which case this allocation starts afresh */
    uint32_t ep = ftm_atomic_load_relaxed(&ftm__trace_rate_epoch);
    if (ftm_unlikely(ftm__sample_epoch != ep)) {
      ftm__sample_epoch = ep;
      ftm__sample_left = ftm__sample_draw(rate) - (int64_t)size;
      if (ftm__sample_left > 0) return;
    }
    ftm__sample_left = ftm__sample_draw(rate);
    /* sampled with probability 1 - exp(-size/rate): stands for 1/that */
    double prob = -expm1(-(double)size / (double)rate);
    est = prob > 0 ? (size_t)llround((double)size / prob) : size;
  }
  ftm__trace_busy++;
  uintptr_t pc[FTM_TRACE_MAX_FRAMES];
  int n = ftm__capture(pc, ftm_atomic_load_relaxed(&ftm__trace_limit), ra);
  uint64_t gen;
  ftm__tb *tb = ftm__tb_intern(pc, n, &gen);
  if (tb != NULL) {
    ftm__trace_entry e = {.ptr = (uintptr_t)p, .tb = tb, .size = size, .est = est};
    (void)ftm__tr_insert(&e, gen);
  }
  ftm__trace_busy--;
}

void ftm__trace_forget(const void *p) {
  if (p == NULL) return;
  ftm__pool *pool = ftm__pagemap_lookup(p);
  if (pool == NULL || !ftm_atomic_load_relaxed(&pool->xtraced)) return;
  ftm__trace_take(p, NULL, NULL);
}

/* ---- the API ------------------------------------------------------------------- */
int ftm_trace_start_sampled(int nframes, size_t sample_bytes) {
#if defined(FTMEM_NO_TRACE)
  (void)nframes, (void)sample_bytes;
  errno = ENOSYS;
  return -1;
#else
  if (nframes < 1 || nframes > FTM_TRACE_MAX_FRAMES || sample_bytes > (SIZE_MAX >> 2)) {
    errno = EINVAL;
    return -1;
  }
  ftm__init();
  pthread_mutex_lock(&ftm__trace_api_lock);
  if (!ftm_atomic_load_relaxed(&ftm__trace_on)) {
    ftm__trace_reset();
    /* backtrace() loads libgcc_s on first use (and mallocs): do it now */
    void *warm[2];
    ftm__trace_busy++;
    (void)backtrace(warm, 2);
    ftm__trace_busy--;
  }
  ftm_atomic_store_relaxed(&ftm__trace_limit, nframes);
  ftm_atomic_store_relaxed(&ftm__trace_rate, sample_bytes);
  ftm_atomic_fetch_add_relaxed(&ftm__trace_rate_epoch, 1);
  /* release: the settings above before the flag that makes hooks read
   * them; 2 makes the hook count bytes down inline (sampling) */
  ftm_atomic_store_release(&ftm__trace_on, sample_bytes ? 2 : 1);
  pthread_mutex_unlock(&ftm__trace_api_lock);
  return 0;
#endif
}

int ftm_trace_start(int nframes) { return ftm_trace_start_sampled(nframes, 0); }

void ftm_trace_stop(void) {
  pthread_mutex_lock(&ftm__trace_api_lock);
  if (ftm_atomic_load_relaxed(&ftm__trace_on)) {
    ftm_atomic_store_relaxed(&ftm__trace_on, 0);
    ftm__trace_reset(); /* a hook that still saw the flag drops its record (gen) */
    ftm__symbolize_reset();
  }
  pthread_mutex_unlock(&ftm__trace_api_lock);
}

bool ftm_trace_is_tracing(void) { return ftm_atomic_load_relaxed(&ftm__trace_on) != 0; }
int ftm_trace_get_traceback_limit(void) { return ftm_atomic_load_relaxed(&ftm__trace_limit); }
size_t ftm_trace_get_sample_rate(void) { return ftm_atomic_load_relaxed(&ftm__trace_rate); }

void ftm_trace_get_traced_memory(size_t *current, size_t *peak) {
  int64_t c = ftm_atomic_load_relaxed(&ftm__traced_current);
  int64_t p = ftm_atomic_load_relaxed(&ftm__traced_peak);
  if (c < 0) c = 0;
  if (p < c) p = c;
  if (current) *current = (size_t)c;
  if (peak) *peak = (size_t)p;
}

void ftm_trace_reset_peak(void) {
  pthread_mutex_lock(&ftm__trace_api_lock); /* not across a clear */
  ftm_atomic_store_relaxed(&ftm__traced_peak, ftm_atomic_load_relaxed(&ftm__traced_current));
  pthread_mutex_unlock(&ftm__trace_api_lock);
}

void ftm_trace_clear_traces(void) {
  pthread_mutex_lock(&ftm__trace_api_lock);
  ftm__trace_reset();
  pthread_mutex_unlock(&ftm__trace_api_lock);
}

size_t ftm_trace_get_tracer_memory(void) { return (size_t)ftm_atomic_load_relaxed(&ftm__tracer_bytes); }

int ftm_trace_get_object_traceback(const void *p, ftm_trace_frame *out, int max) {
  if (p == NULL || (out == NULL && max > 0) || max < 0) {
    errno = EINVAL;
    return -1;
  }
  pthread_mutex_lock(&ftm__trace_api_lock);
  ftm__trace_entry e;
  /* an object: its block may start at its GC head, 16 bytes before it —
   * but only a block longer than 16 bytes there covers p (a 16-byte
   * neighbour ends where p starts) */
  bool found = ftm__trace_lookup(p, &e) || (ftm__trace_lookup((const char *)p - 16, &e) && e.size > 16);
  int n = -1;
  if (found) {
    n = e.tb->n < max ? e.tb->n : max;
    ftm__trace_busy++;
    for (int i = 0; i < n; i++) ftm__symbolize(e.tb->pc[i], &out[i]);
    ftm__trace_busy--;
  }
  pthread_mutex_unlock(&ftm__trace_api_lock);
  if (!found) errno = ENOENT;
  return n;
}

/* At process start: FTMEM_TRACE=<nframes> [FTMEM_TRACE_SAMPLE=<bytes>]. */
void ftm__trace_init_from_env(void) {
  long n = ftm__option(FTM_OPTION_TRACE);
  if (n <= 0) return;
  if (n > FTM_TRACE_MAX_FRAMES) n = FTM_TRACE_MAX_FRAMES;
  if (ftm_trace_start_sampled((int)n, (size_t)ftm__option(FTM_OPTION_TRACE_SAMPLE)) != 0)
    ftm__warning("FTMEM_TRACE=%ld: tracing could not start", n);
}

/* fork: a child must not inherit a shard lock another thread held */
void ftm__trace_prefork(void) {
  pthread_mutex_lock(&ftm__trace_api_lock);
  ftm__lock_all();
}
void ftm__trace_postfork(void) {
  ftm__unlock_all();
  pthread_mutex_unlock(&ftm__trace_api_lock);
}
