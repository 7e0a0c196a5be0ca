/* trace_snapshot.c — snapshots of the live traces, filters, statistics by
 * line, file or traceback, comparison of two snapshots, and tracemalloc's
 * text format for them (ftmem/trace.h).  A snapshot owns copies of
 * everything it names (frames, strings), so it outlives ftm_trace_stop.
 * Memory here is ordinary malloc with ftm__trace_busy set: never traced.
 */
#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "trace_internal.h"

typedef struct {
  uint64_t size, est;
  uint32_t tb; /* index into tbs */
} ftm__strace;

typedef struct {
  uint32_t first, n; /* frame indexes in tbf[first .. first + n) */
} ftm__stb;

struct ftm_trace_snapshot {
  int limit;
  size_t rate;
  size_t ntr, ntb, ntbf, nfr, nstr;
  ftm__strace *tr;
  ftm__stb *tb;
  uint32_t *tbf;       /* frame index per traceback position */
  ftm_trace_frame *fr; /* unique frames (by pc) */
  char **str;          /* owned strings */
};

/* Make room for `need` elements of `elem` bytes in *arr (capacity *cap,
 * doubled from `first`); false when out of memory (*arr unchanged). */
static bool ftm__reserve(void *arr, size_t *cap, size_t need, size_t elem, size_t first) {
  if (need <= *cap) return true;
  size_t c = *cap ? *cap : first;
  while (c < need) c *= 2;
  void *n = realloc(*(void **)arr, c * elem);
  if (n == NULL) return false;
  *(void **)arr = n;
  *cap = c;
  return true;
}

/* ---- a small open-addressing map from a 64-bit key to an index ---------- */
typedef struct {
  uint64_t *key;
  uint32_t *val;
  size_t cap, n;
} ftm__map;

static uint64_t ftm__mix(uint64_t x) {
  x ^= x >> 33, x *= 0xff51afd7ed558ccdull, x ^= x >> 33;
  return x;
}
static bool ftm__map_init(ftm__map *m, size_t expect) {
  m->cap = 64;
  while (m->cap < expect * 2) m->cap *= 2;
  m->n = 0;
  m->key = calloc(m->cap, sizeof *m->key);
  m->val = calloc(m->cap, sizeof *m->val);
  return m->key != NULL && m->val != NULL;
}
static void ftm__map_free(ftm__map *m) {
  free(m->key);
  free(m->val);
}
static bool ftm__map_grow(ftm__map *m) {
  ftm__map n = {.cap = m->cap * 2, .n = m->n};
  n.key = calloc(n.cap, sizeof *n.key);
  n.val = calloc(n.cap, sizeof *n.val);
  if (n.key == NULL || n.val == NULL) {
    ftm__map_free(&n);
    return false;
  }
  for (size_t i = 0; i < m->cap; i++) {
    if (m->key[i] == 0) continue;
    size_t j = ftm__mix(m->key[i]) & (n.cap - 1);
    while (n.key[j] != 0) j = (j + 1) & (n.cap - 1);
    n.key[j] = m->key[i];
    n.val[j] = m->val[i];
  }
  ftm__map_free(m);
  *m = n;
  return true;
}
/* key != 0; returns the slot's value pointer (NULL: out of memory);
 * *fresh when just inserted.  Kept at most half full. */
static uint32_t *ftm__map_get(ftm__map *m, uint64_t key, bool *fresh) {
  if ((m->n + 1) * 2 > m->cap && !ftm__map_grow(m)) return NULL;
  size_t j = ftm__mix(key) & (m->cap - 1);
  while (m->key[j] != 0 && m->key[j] != key) j = (j + 1) & (m->cap - 1);
  *fresh = m->key[j] == 0;
  if (*fresh) {
    m->key[j] = key;
    m->n++;
  }
  return &m->val[j];
}

static uint32_t *ftm__map_find(const ftm__map *m, uint64_t key) {
  size_t j = ftm__mix(key) & (m->cap - 1);
  while (m->key[j] != 0 && m->key[j] != key) j = (j + 1) & (m->cap - 1);
  return m->key[j] == 0 ? NULL : &m->val[j];
}

/* ---- taking a snapshot -------------------------------------------------------- */
typedef struct {
  ftm__strace *tr;
  const ftm__tb **tbp;
  size_t n, cap;
  bool failed;
} ftm__collect;

static void ftm__collect_one(const ftm__trace_entry *e, void *arg) {
  ftm__collect *c = arg;
  if (c->failed) return;
  size_t cap = c->cap, cap2 = c->cap;
  if (!ftm__reserve(&c->tr, &cap, c->n + 1, sizeof *c->tr, 4096) ||
      !ftm__reserve(&c->tbp, &cap2, c->n + 1, sizeof *c->tbp, 4096)) {
    c->failed = true;
    return;
  }
  c->cap = cap < cap2 ? cap : cap2;
  c->tr[c->n] = (ftm__strace){.size = e->size, .est = e->est};
  c->tbp[c->n] = e->tb;
  c->n++;
}

static const char *ftm__snap_str(ftm_trace_snapshot *s, const char *x, size_t *cap) {
  if (!ftm__reserve(&s->str, cap, s->nstr + 1, sizeof *s->str, 256)) return NULL;
  char *d = strdup(x);
  if (d != NULL) s->str[s->nstr++] = d;
  return d;
}

void ftm_trace_snapshot_free(ftm_trace_snapshot *s) {
  if (s == NULL) return;
  ftm__trace_busy++;
  for (size_t i = 0; i < s->nstr; i++) free(s->str[i]);
  free(s->str);
  free(s->tr);
  free(s->tb);
  free(s->tbf);
  free(s->fr);
  free(s);
  ftm__trace_busy--;
}

/* With the api lock held: the tracebacks stay put while we copy them. */
static ftm_trace_snapshot *ftm__snapshot_locked(void) {
  ftm_trace_snapshot *s = calloc(1, sizeof *s);
  ftm__collect c = {0};
  ftm__map tbmap = {0}, pcmap = {0}, strmap = {0};
  size_t strcap = 0, tbcap = 0, tbfcap = 0, frcap = 0;
  if (s == NULL) goto fail;
  s->limit = ftm_trace_get_traceback_limit();
  s->rate = ftm_trace_get_sample_rate();
  ftm__trace_foreach(ftm__collect_one, &c);
  if (c.failed) goto fail;
  s->tr = c.tr, c.tr = NULL;
  s->ntr = c.n;
  if (!ftm__map_init(&tbmap, c.n / 4 + 16) || !ftm__map_init(&pcmap, 256) || !ftm__map_init(&strmap, 256))
    goto fail;
  for (size_t i = 0; i < s->ntr; i++) {
    const ftm__tb *t = c.tbp[i];
    bool fresh;
    uint32_t *ti = ftm__map_get(&tbmap, (uint64_t)(uintptr_t)t, &fresh);
    if (ti == NULL) goto fail;
    if (fresh) {
      if (!ftm__reserve(&s->tb, &tbcap, s->ntb + 1, sizeof *s->tb, 256) ||
          !ftm__reserve(&s->tbf, &tbfcap, s->ntbf + t->n, sizeof *s->tbf, 1024))
        goto fail;
      s->tb[s->ntb] = (ftm__stb){.first = (uint32_t)s->ntbf, .n = t->n};
      for (int k = 0; k < t->n; k++) {
        bool pfresh;
        uint32_t *fi = ftm__map_get(&pcmap, t->pc[k] ? t->pc[k] : 1, &pfresh);
        if (fi == NULL) goto fail;
        if (pfresh) {
          if (!ftm__reserve(&s->fr, &frcap, s->nfr + 1, sizeof *s->fr, 256)) goto fail;
          ftm_trace_frame f;
          ftm__symbolize(t->pc[k], &f);
          /* strings: one copy per distinct string in the snapshot */
          const char *names[2] = {f.filename, f.function};
          for (int w = 0; w < 2; w++) {
            bool sfresh;
            uint32_t *si = ftm__map_get(&strmap, (uint64_t)(uintptr_t)names[w], &sfresh);
            if (si == NULL) goto fail;
            if (sfresh) {
              if (ftm__snap_str(s, names[w], &strcap) == NULL) goto fail;
              *si = (uint32_t)(s->nstr - 1);
            }
            names[w] = s->str[*si];
          }
          s->fr[s->nfr] = (ftm_trace_frame){.filename = names[0], .function = names[1], .lineno = f.lineno, .pc = f.pc};
          *fi = (uint32_t)s->nfr++;
        }
        s->tbf[s->ntbf++] = *fi;
      }
      *ti = (uint32_t)s->ntb++;
    }
    s->tr[i].tb = *ti;
  }
  free(c.tbp);
  ftm__map_free(&tbmap);
  ftm__map_free(&pcmap);
  ftm__map_free(&strmap);
  return s;
fail:
  free(c.tr);
  free(c.tbp);
  ftm__map_free(&tbmap);
  ftm__map_free(&pcmap);
  ftm__map_free(&strmap);
  ftm_trace_snapshot_free(s);
  errno = ENOMEM;
  return NULL;
}

ftm_trace_snapshot *ftm_trace_take_snapshot(void) {
  if (!ftm_trace_is_tracing()) {
    errno = EINVAL; /* tracemalloc: "the tracemalloc module must be tracing memory allocations" */
    return NULL;
  }
  pthread_mutex_lock(&ftm__trace_api_lock);
  ftm__trace_busy++;
  ftm_trace_snapshot *s = ftm__snapshot_locked();
  int e = errno;
  ftm__trace_busy--;
  pthread_mutex_unlock(&ftm__trace_api_lock);
  errno = e;
  return s;
}

int ftm_trace_snapshot_traceback_limit(const ftm_trace_snapshot *s) { return s->limit; }
size_t ftm_trace_snapshot_sample_rate(const ftm_trace_snapshot *s) { return s->rate; }
size_t ftm_trace_snapshot_count(const ftm_trace_snapshot *s) { return s->ntr; }
size_t ftm_trace_snapshot_size(const ftm_trace_snapshot *s) {
  size_t n = 0;
  for (size_t i = 0; i < s->ntr; i++) n += s->tr[i].est;
  return n;
}

/* ---- filters --------------------------------------------------------------------- */
/* fnmatch accepts anything; refuse what is surely a mistake */
static bool ftm__pattern_ok(const char *p) {
  if (p == NULL || *p == 0) return false;
  for (const char *c = p; *c; c++) {
    if (*c == '\\') {
      if (c[1] == 0) return false; /* trailing escape */
      c++;
    } else if (*c == '[') {
      const char *e = c + 1;
      if (*e == '!' || *e == '^') e++;
      if (*e == ']') e++; /* a leading ] is a member */
      while (*e && *e != ']') e++;
      if (*e == 0) return false; /* unclosed bracket */
      c = e;
    }
  }
  return true;
}

static bool ftm__frame_match(const ftm_trace_frame *f, const ftm_trace_filter *flt) {
  if (fnmatch(flt->filename_pattern, f->filename, 0) != 0) return false;
  return flt->lineno <= 0 || f->lineno == flt->lineno;
}

static bool ftm__filter_match(const ftm_trace_snapshot *s, const ftm__stb *t, const ftm_trace_filter *flt) {
  uint32_t n = flt->all_frames ? t->n : (t->n > 0 ? 1 : 0);
  for (uint32_t k = 0; k < n; k++)
    if (ftm__frame_match(&s->fr[s->tbf[t->first + k]], flt)) return true;
  return false;
}

ftm_trace_snapshot *ftm_trace_snapshot_filter(const ftm_trace_snapshot *s, const ftm_trace_filter *filters,
                                              size_t n) {
  if (s == NULL || (filters == NULL && n > 0)) {
    errno = EINVAL;
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    if (!ftm__pattern_ok(filters[i].filename_pattern)) {
      errno = EINVAL;
      return NULL;
    }
  }
  ftm__trace_busy++;
  ftm_trace_snapshot *d = calloc(1, sizeof *d);
  if (d == NULL) goto fail;
  *d = (ftm_trace_snapshot){.limit = s->limit, .rate = s->rate, .ntb = s->ntb, .ntbf = s->ntbf, .nfr = s->nfr};
  d->tr = malloc((s->ntr ? s->ntr : 1) * sizeof *d->tr);
  d->tb = malloc((s->ntb ? s->ntb : 1) * sizeof *d->tb);
  d->tbf = malloc((s->ntbf ? s->ntbf : 1) * sizeof *d->tbf);
  d->fr = malloc((s->nfr ? s->nfr : 1) * sizeof *d->fr);
  d->str = malloc((s->nstr ? s->nstr : 1) * sizeof *d->str);
  if (!d->tr || !d->tb || !d->tbf || !d->fr || !d->str) goto fail;
  if (s->ntb) memcpy(d->tb, s->tb, s->ntb * sizeof *d->tb);
  if (s->ntbf) memcpy(d->tbf, s->tbf, s->ntbf * sizeof *d->tbf);
  for (size_t i = 0; i < s->nstr; i++) {
    if ((d->str[i] = strdup(s->str[i])) == NULL) goto fail;
    d->nstr++;
  }
  /* frames point at the new copies: same order, same offsets */
  for (size_t i = 0; i < s->nfr; i++) {
    d->fr[i] = s->fr[i];
    for (size_t k = 0; k < s->nstr; k++) {
      if (s->fr[i].filename == s->str[k]) d->fr[i].filename = d->str[k];
      if (s->fr[i].function == s->str[k]) d->fr[i].function = d->str[k];
    }
  }
  bool any_incl = false;
  for (size_t i = 0; i < n; i++) any_incl |= filters[i].inclusive;
  for (size_t i = 0; i < s->ntr; i++) {
    const ftm__stb *t = &s->tb[s->tr[i].tb];
    bool keep = !any_incl;
    for (size_t f = 0; f < n; f++) {
      bool m = ftm__filter_match(s, t, &filters[f]);
      if (filters[f].inclusive && m) keep = true;
    }
    for (size_t f = 0; f < n && keep; f++)
      if (!filters[f].inclusive && ftm__filter_match(s, t, &filters[f])) keep = false;
    if (keep) d->tr[d->ntr++] = s->tr[i];
  }
  ftm__trace_busy--;
  return d;
fail:
  ftm__trace_busy--;
  ftm_trace_snapshot_free(d);
  errno = ENOMEM;
  return NULL;
}

/* ---- statistics -------------------------------------------------------------------- */
typedef struct {
  ftm_trace_stat st;
  uint64_t key;
  double size, count; /* accumulated estimates */
} ftm__group;

struct ftm_trace_stats {
  size_t n;
  ftm__group *g;
  ftm_trace_stat *out;
  ftm_trace_frame *frames; /* the groups' key frames */
  bool diff;
};

static uint64_t ftm__str_hash(uint64_t h, const char *s) {
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  return h;
}
static uint64_t ftm__frame_key(uint64_t h, const ftm_trace_frame *f, bool with_line) {
  h = ftm__str_hash(h, f->filename);
  if (with_line) h = (h ^ (uint64_t)(unsigned)f->lineno) * 0x100000001b3ull;
  return (h * 0x9e3779b97f4a7c15ull) | 1;
}

typedef struct {
  ftm__map map;
  ftm__group *g;
  size_t n, cap;
  ftm_trace_frame *fr;
  size_t nfr, frcap;
  bool failed;
} ftm__grouping;

static void ftm__group_add(ftm__grouping *G, uint64_t key, const ftm_trace_frame *frames, int nframes,
                           bool with_line, double size, double count) {
  bool fresh;
  uint32_t *gi = ftm__map_get(&G->map, key, &fresh);
  if (gi == NULL) {
    G->failed = true;
    return;
  }
  if (fresh) {
    if (!ftm__reserve(&G->g, &G->cap, G->n + 1, sizeof *G->g, 256) ||
        !ftm__reserve(&G->fr, &G->frcap, G->nfr + (size_t)nframes, sizeof *G->fr, 256)) {
      G->failed = true;
      return;
    }
    for (int k = 0; k < nframes; k++) {
      ftm_trace_frame f = frames[k];
      f.pc = 0;
      if (!with_line) f.lineno = 0;
      G->fr[G->nfr + k] = f;
    }
    /* frames is an offset until the arrays stop moving */
    G->g[G->n] = (ftm__group){.key = key, .st = {.frames = (void *)(uintptr_t)G->nfr, .nframes = nframes}};
    G->nfr += (size_t)nframes;
    *gi = (uint32_t)G->n++;
  }
  G->g[*gi].size += size;
  G->g[*gi].count += count;
}

/* Group s into G (which the caller initialised). */
static void ftm__group_snapshot(ftm__grouping *G, const ftm_trace_snapshot *s, ftm_trace_key key, bool cumulative) {
  for (size_t i = 0; i < s->ntr && !G->failed; i++) {
    const ftm__strace *t = &s->tr[i];
    const ftm__stb *b = &s->tb[t->tb];
    double size = (double)t->est;
    double count = t->size > 0 ? (double)t->est / (double)t->size : 1.0;
    ftm_trace_frame fr[FTM_TRACE_MAX_FRAMES];
    for (uint32_t k = 0; k < b->n; k++) fr[k] = s->fr[s->tbf[b->first + k]];
    if (b->n == 0) continue;
    if (key == FTM_TRACE_BY_TRACEBACK) {
      uint64_t h = 0xcbf29ce484222325ull;
      for (uint32_t k = 0; k < b->n; k++) h = ftm__frame_key(h, &fr[k], true);
      ftm__group_add(G, h, fr, (int)b->n, true, size, count);
      continue;
    }
    bool with_line = key == FTM_TRACE_BY_LINENO;
    uint32_t n = cumulative ? b->n : 1;
    for (uint32_t k = 0; k < n; k++) {
      uint64_t h = ftm__frame_key(0xcbf29ce484222325ull, &fr[k], with_line);
      bool seen = false; /* count a trace once per key (recursion) */
      for (uint32_t q = 0; q < k && !seen; q++) seen = ftm__frame_key(0xcbf29ce484222325ull, &fr[q], with_line) == h;
      if (!seen) ftm__group_add(G, h, &fr[k], 1, with_line, size, count);
    }
  }
}

static int ftm__cmp_stat(const void *a, const void *b) {
  const ftm_trace_stat *x = a, *y = b;
  if (x->size != y->size) return x->size > y->size ? -1 : 1;
  if (x->count != y->count) return x->count > y->count ? -1 : 1;
  int c = strcmp(x->frames[0].filename, y->frames[0].filename);
  return c ? c : x->frames[0].lineno - y->frames[0].lineno;
}
static long long ftm__llabs(long long v) { return v < 0 ? -v : v; }
static int ftm__cmp_diff(const void *a, const void *b) {
  const ftm_trace_stat *x = a, *y = b;
  if (ftm__llabs(x->size_diff) != ftm__llabs(y->size_diff)) return ftm__llabs(x->size_diff) > ftm__llabs(y->size_diff) ? -1 : 1;
  if (x->size != y->size) return x->size > y->size ? -1 : 1;
  if (ftm__llabs(x->count_diff) != ftm__llabs(y->count_diff)) return ftm__llabs(x->count_diff) > ftm__llabs(y->count_diff) ? -1 : 1;
  return ftm__cmp_stat(a, b);
}

static ftm_trace_stats *ftm__stats_build(const ftm_trace_snapshot *newer, const ftm_trace_snapshot *older,
                                         ftm_trace_key key, bool cumulative) {
  if (newer == NULL || key < FTM_TRACE_BY_LINENO || key > FTM_TRACE_BY_TRACEBACK ||
      (cumulative && key == FTM_TRACE_BY_TRACEBACK)) {
    errno = EINVAL;
    return NULL;
  }
  if (older != NULL && (older->limit != newer->limit || older->rate != newer->rate)) {
    errno = EINVAL; /* different depths group differently: not comparable */
    return NULL;
  }
  ftm__trace_busy++;
  ftm_trace_stats *st = calloc(1, sizeof *st);
  ftm__grouping G = {0}, O = {0};
  if (st == NULL || !ftm__map_init(&G.map, newer->ntr / 4 + 16)) goto fail;
  ftm__group_snapshot(&G, newer, key, cumulative);
  if (older != NULL) {
    if (!ftm__map_init(&O.map, older->ntr / 4 + 16)) goto fail;
    ftm__group_snapshot(&O, older, key, cumulative);
    /* older groups: subtract from the matching newer one, or add as gone */
    for (size_t i = 0; i < O.n && !G.failed && !O.failed; i++) {
      ftm__group *og = &O.g[i];
      uint32_t *gi = ftm__map_find(&G.map, og->key);
      if (gi == NULL) { /* gone since: a group of size 0 */
        ftm__group_add(&G, og->key, &O.fr[(uintptr_t)og->st.frames], og->st.nframes, true, 0, 0);
        if (G.failed) break;
        gi = ftm__map_find(&G.map, og->key);
      }
      G.g[*gi].st.size_diff -= (long long)llround(og->size);
      G.g[*gi].st.count_diff -= (long long)llround(og->count);
    }
  }
  if (G.failed || O.failed) goto fail;
  st->n = G.n;
  st->g = G.g, G.g = NULL;
  st->frames = G.fr, G.fr = NULL;
  st->diff = older != NULL;
  st->out = malloc((st->n ? st->n : 1) * sizeof *st->out);
  if (st->out == NULL) goto fail;
  for (size_t i = 0; i < st->n; i++) {
    ftm__group *g = &st->g[i];
    ftm_trace_stat *o = &st->out[i];
    *o = g->st;
    o->frames = &st->frames[(uintptr_t)g->st.frames];
    o->size = (size_t)llround(g->size);
    o->count = (size_t)llround(g->count);
    o->size_diff += (long long)o->size;
    o->count_diff += (long long)o->count;
    if (!st->diff) o->size_diff = o->count_diff = 0;
  }
  qsort(st->out, st->n, sizeof *st->out, st->diff ? ftm__cmp_diff : ftm__cmp_stat);
  ftm__map_free(&G.map);
  ftm__map_free(&O.map);
  free(O.g);
  free(O.fr);
  ftm__trace_busy--;
  return st;
fail:
  ftm__map_free(&G.map);
  ftm__map_free(&O.map);
  free(G.g);
  free(G.fr);
  free(O.g);
  free(O.fr);
  ftm__trace_busy--;
  ftm_trace_stats_free(st);
  errno = ENOMEM;
  return NULL;
}

ftm_trace_stats *ftm_trace_statistics(const ftm_trace_snapshot *s, ftm_trace_key key, bool cumulative) {
  return ftm__stats_build(s, NULL, key, cumulative);
}

ftm_trace_stats *ftm_trace_compare_to(const ftm_trace_snapshot *newer, const ftm_trace_snapshot *older,
                                      ftm_trace_key key, bool cumulative) {
  if (older == NULL) {
    errno = EINVAL;
    return NULL;
  }
  return ftm__stats_build(newer, older, key, cumulative);
}

size_t ftm_trace_stats_len(const ftm_trace_stats *st) { return st ? st->n : 0; }
const ftm_trace_stat *ftm_trace_stats_get(const ftm_trace_stats *st, size_t i) {
  return st && i < st->n ? &st->out[i] : NULL;
}
void ftm_trace_stats_free(ftm_trace_stats *st) {
  if (st == NULL) return;
  ftm__trace_busy++;
  free(st->g);
  free(st->out);
  free(st->frames);
  free(st);
  ftm__trace_busy--;
}

/* tracemalloc's _format_size */
static void ftm__fmt_size(char *buf, size_t n, double size, bool sign) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  for (int u = 0; u < 5; u++) {
    double a = size < 0 ? -size : size;
    if (a < 100 && u != 0) {
      snprintf(buf, n, sign ? "%+.1f %s" : "%.1f %s", size, units[u]);
      return;
    }
    if (a < 10 * 1024 || u == 4) {
      snprintf(buf, n, sign ? "%+.0f %s" : "%.0f %s", size, units[u]);
      return;
    }
    size /= 1024;
  }
}

int ftm_trace_stats_print(const ftm_trace_stats *st, size_t limit, FILE *f) {
  if (st == NULL || f == NULL) {
    errno = EINVAL;
    return -1;
  }
  size_t n = limit && limit < st->n ? limit : st->n;
  for (size_t i = 0; i < n; i++) {
    const ftm_trace_stat *s = &st->out[i];
    char where[1024], size[32], avg[48] = "", sd[32];
    const ftm_trace_frame *fr = &s->frames[0];
    if (fr->lineno > 0 || s->nframes > 1)
      snprintf(where, sizeof where, "%s:%d", fr->filename, fr->lineno);
    else
      snprintf(where, sizeof where, "%s", fr->filename);
    ftm__fmt_size(size, sizeof size, (double)s->size, false);
    if (s->count) {
      char a[24];
      ftm__fmt_size(a, sizeof a, (double)s->size / (double)s->count, false);
      snprintf(avg, sizeof avg, ", average=%s", a);
    }
    int r;
    if (st->diff) {
      ftm__fmt_size(sd, sizeof sd, (double)s->size_diff, true);
      r = fprintf(f, "%s: size=%s (%s), count=%zu (%+lld)%s\n", where, size, sd, s->count, s->count_diff, avg);
    } else {
      r = fprintf(f, "%s: size=%s, count=%zu%s\n", where, size, s->count, avg);
    }
    if (r < 0) return -1;
  }
  return 0;
}
