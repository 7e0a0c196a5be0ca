/* mcclient.c — a checked load for memcached's text protocol.
 *
 *   mcclient HOST PORT THREADS OPS_PER_THREAD [SEED]
 *
 * Each thread opens its own connection and runs a deterministic random
 * sequence of set/add/replace/append/prepend/get/multi-get/delete/touch/
 * incr/decr on keys of its own (so the reply to every command is known in
 * advance from the thread's model, whatever the interleaving), plus incr on
 * a few counters all threads share (each reply must be a number; the final
 * values must equal the sum of every thread's increments).  Every reply is
 * checked; the first mismatches are reported on stderr with the command.
 *
 * stdout: a report that depends only on the arguments (op counts, hits,
 * final values, a few server statistics) — equal under any allocator.
 * stderr: "mcclient-time: SECONDS OPS" and any mismatch.
 * Exit status 0 when every reply matched, 1 otherwise, 2 on I/O errors.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NKEYS 256            /* data keys per thread */
#define NCOUNTERS 16         /* counter keys per thread */
#define NSHARED 4            /* counters every thread increments */
#define MAXVAL (256 * 1024)  /* largest value set (memcached's item limit is 1 MiB) */
#define MAXMISMATCH 10

enum { OP_SET, OP_ADD, OP_REPLACE, OP_APPEND, OP_PREPEND, OP_GET, OP_MGET, OP_DELETE,
       OP_TOUCH, OP_INCR, OP_DECR, OP_CSET, OP_CGET, OP_SHARED, OP__COUNT };
static const char *op_name[OP__COUNT] = {"set", "add", "replace", "append", "prepend", "get",
                                         "mget", "delete", "touch", "incr", "decr", "cset",
                                         "cget", "shared_incr"};

static const char *host;
static const char *port;
static long ops_per_thread;
static uint64_t base_seed;
static atomic_int mismatches;
static atomic_ulong shared_added[NSHARED];

typedef struct {
  int present;
  uint32_t flags;
  size_t len;
  unsigned char *data;
} entry;

typedef struct {
  int present;
  uint64_t value;
} counter;

typedef struct {
  int fd;
  char *buf;      /* received bytes [pos, end) */
  size_t pos, end, cap;
} conn;

typedef struct {
  int id;
  uint64_t rng;
  conn c;
  entry keys[NKEYS];
  counter counters[NCOUNTERS];
  long count[OP__COUNT];
  long hits[OP__COUNT];
  unsigned char *scratch; /* value being sent */
  int failed;             /* I/O failure: stop */
} worker;

static uint64_t next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}
static uint64_t below(uint64_t *s, uint64_t n) { return (next(s) >> 11) % n; }

static void mismatch(worker *w, const char *cmd, const char *fmt, ...) {
  int n = atomic_fetch_add(&mismatches, 1);
  if (n >= MAXMISMATCH) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "mcclient: MISMATCH thread %d, command '%.120s': ", w->id, cmd);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static int conn_open(conn *c) {
  struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
  if (getaddrinfo(host, port, &hints, &res) != 0) return -1;
  /* the server may still be starting: retry for up to 10 s */
  for (int attempt = 0; attempt < 200; attempt++) {
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) break;
    if (connect(c->fd, res->ai_addr, res->ai_addrlen) == 0) {
      int one = 1;
      setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      freeaddrinfo(res);
      c->cap = 1 << 20;
      c->buf = malloc(c->cap);
      c->pos = c->end = 0;
      return c->buf ? 0 : -1;
    }
    close(c->fd);
    usleep(50000);
  }
  freeaddrinfo(res);
  return -1;
}

static int send_all(worker *w, const void *p, size_t n) {
  const char *s = p;
  while (n > 0) {
    ssize_t k = send(w->c.fd, s, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      fprintf(stderr, "mcclient: thread %d: send: %s\n", w->id, strerror(errno));
      w->failed = 1;
      return -1;
    }
    s += k;
    n -= (size_t)k;
  }
  return 0;
}

/* make sure at least n bytes are buffered */
static int fill(worker *w, size_t n) {
  conn *c = &w->c;
  while (c->end - c->pos < n) {
    if (c->pos > 0) {
      memmove(c->buf, c->buf + c->pos, c->end - c->pos);
      c->end -= c->pos;
      c->pos = 0;
    }
    if (c->cap - c->end < 65536 || c->cap < n) {
      size_t cap = c->cap * 2 > n + 65536 ? c->cap * 2 : n + 65536;
      char *b = realloc(c->buf, cap);
      if (!b) { w->failed = 1; return -1; }
      c->buf = b;
      c->cap = cap;
    }
    ssize_t k = recv(c->fd, c->buf + c->end, c->cap - c->end, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      fprintf(stderr, "mcclient: thread %d: recv: %s\n", w->id, k == 0 ? "connection closed" : strerror(errno));
      w->failed = 1;
      return -1;
    }
    c->end += (size_t)k;
  }
  return 0;
}

/* one reply line without its \r\n, NUL-terminated in a static-per-thread copy */
static char *read_line(worker *w, char *line, size_t cap) {
  conn *c = &w->c;
  for (size_t scanned = 0;;) {
    char *nl = memchr(c->buf + c->pos + scanned, '\n', c->end - c->pos - scanned);
    if (nl) {
      size_t len = (size_t)(nl - (c->buf + c->pos));
      if (len > 0 && c->buf[c->pos + len - 1] == '\r') len--;
      size_t n = len < cap - 1 ? len : cap - 1;
      memcpy(line, c->buf + c->pos, n);
      line[n] = 0;
      c->pos = (size_t)(nl - c->buf) + 1;
      return line;
    }
    scanned = c->end - c->pos;
    if (fill(w, scanned + 1) < 0) return NULL;
  }
}

static void make_value(worker *w, unsigned char *dst, size_t len) {
  uint64_t s = next(&w->rng) | 1;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t x = next(&s);
    memcpy(dst + i, &x, 8);
  }
  uint64_t x = next(&s);
  for (; i < len; i++, x >>= 8) dst[i] = (unsigned char)x;
}

static size_t pick_len(worker *w) {
  uint64_t k = below(&w->rng, 100);
  if (k < 70) return below(&w->rng, 100);           /* small, sometimes empty */
  if (k < 95) return 100 + below(&w->rng, 4000);    /* medium */
  return 4096 + below(&w->rng, MAXVAL - 4096);      /* large: chunked items */
}

static int expect_line(worker *w, const char *cmd, const char *want) {
  char line[512];
  if (!read_line(w, line, sizeof line)) return -1;
  if (strcmp(line, want) != 0) {
    mismatch(w, cmd, "expected '%s', got '%s'", want, line);
    return 1;
  }
  return 0;
}

/* read the VALUE blocks of a get reply; check each against the model */
static int read_values(worker *w, const char *cmd, int nk, const int *idx) {
  char line[512];
  int got = 0, bad = 0;
  for (int j = 0; j < nk; j++) {
    const entry *e = &w->keys[idx[j]];
    if (!e->present) continue;
    if (!read_line(w, line, sizeof line)) return -1;
    char key[64];
    unsigned flags;
    size_t len;
    char want_key[64];
    snprintf(want_key, sizeof want_key, "t%d:k%d", w->id, idx[j]);
    if (sscanf(line, "VALUE %63s %u %zu", key, &flags, &len) != 3 || strcmp(key, want_key) != 0) {
      mismatch(w, cmd, "expected 'VALUE %s %u %zu', got '%s'", want_key, e->flags, e->len, line);
      w->failed = 1;
      return 1;
    }
    if (flags != e->flags || len != e->len) {
      mismatch(w, cmd, "%s: flags/length %u/%zu, model %u/%zu", key, flags, len, e->flags, e->len);
      bad = 1;
    }
    if (fill(w, len + 2) < 0) return -1;
    if (!bad && (memcmp(w->c.buf + w->c.pos, e->data, len) != 0 ||
                 memcmp(w->c.buf + w->c.pos + len, "\r\n", 2) != 0)) {
      mismatch(w, cmd, "%s: the %zu bytes of the value differ from the model", key, len);
      bad = 1;
    }
    w->c.pos += len + 2;
    got++;
    if (bad) {
      w->failed = 1; /* the stream may be out of step: stop this thread */
      return 1;
    }
  }
  if (expect_line(w, cmd, "END") != 0) return 1;
  w->hits[nk == 1 ? OP_GET : OP_MGET] += got;
  return 0;
}

static int do_store(worker *w, int op) {
  int i = (int)below(&w->rng, NKEYS);
  entry *e = &w->keys[i];
  size_t len = pick_len(w);
  if ((op == OP_APPEND || op == OP_PREPEND) && e->present && e->len + len > MAXVAL) len = below(&w->rng, 64);
  uint32_t flags = (uint32_t)below(&w->rng, 1u << 16);
  make_value(w, w->scratch, len);
  char cmd[160];
  int n = snprintf(cmd, sizeof cmd, "%s t%d:k%d %u 0 %zu\r\n", op_name[op], w->id, i, flags, len);
  if (send_all(w, cmd, (size_t)n) || send_all(w, w->scratch, len) || send_all(w, "\r\n", 2)) return -1;
  int stored;
  switch (op) {
    case OP_SET: stored = 1; break;
    case OP_ADD: stored = !e->present; break;
    default: stored = e->present; break; /* replace, append, prepend */
  }
  cmd[n - 2] = 0;
  int r = expect_line(w, cmd, stored ? "STORED" : "NOT_STORED");
  if (r < 0) return -1;
  if (stored) {
    w->hits[op]++;
    if (op == OP_APPEND || op == OP_PREPEND) {
      unsigned char *d = malloc(e->len + len + 1);
      if (op == OP_APPEND) {
        memcpy(d, e->data, e->len);
        memcpy(d + e->len, w->scratch, len);
      } else {
        memcpy(d, w->scratch, len);
        memcpy(d + len, e->data, e->len);
      }
      free(e->data);
      e->data = d;
      e->len += len; /* flags unchanged */
    } else {
      free(e->data);
      e->data = malloc(len + 1);
      memcpy(e->data, w->scratch, len);
      e->len = len;
      e->flags = flags;
      e->present = 1;
    }
  }
  return 0;
}

static int do_get(worker *w, int multi) {
  int idx[12];
  int nk = multi ? 2 + (int)below(&w->rng, 10) : 1;
  char cmd[1024];
  int n = snprintf(cmd, sizeof cmd, "get");
  for (int j = 0; j < nk; j++) {
    int i, dup;
    do { /* distinct keys */
      i = (int)below(&w->rng, NKEYS);
      dup = 0;
      for (int k = 0; k < j; k++) dup |= idx[k] == i;
    } while (dup);
    idx[j] = i;
    n += snprintf(cmd + n, sizeof cmd - (size_t)n, " t%d:k%d", w->id, i);
  }
  n += snprintf(cmd + n, sizeof cmd - (size_t)n, "\r\n");
  if (send_all(w, cmd, (size_t)n)) return -1;
  cmd[n - 2] = 0;
  return read_values(w, cmd, nk, idx) < 0 ? -1 : 0;
}

static int do_delete_touch(worker *w, int op) {
  int i = (int)below(&w->rng, NKEYS);
  entry *e = &w->keys[i];
  char cmd[96];
  int n = op == OP_DELETE ? snprintf(cmd, sizeof cmd, "delete t%d:k%d\r\n", w->id, i)
                          : snprintf(cmd, sizeof cmd, "touch t%d:k%d 0\r\n", w->id, i);
  if (send_all(w, cmd, (size_t)n)) return -1;
  cmd[n - 2] = 0;
  const char *want = !e->present ? "NOT_FOUND" : op == OP_DELETE ? "DELETED" : "TOUCHED";
  if (expect_line(w, cmd, want) < 0) return -1;
  if (e->present) {
    w->hits[op]++;
    if (op == OP_DELETE) {
      e->present = 0;
      free(e->data);
      e->data = NULL;
      e->len = 0;
    }
  }
  return 0;
}

static int do_counter(worker *w, int op) {
  int i = (int)below(&w->rng, NCOUNTERS);
  counter *k = &w->counters[i];
  char cmd[128], line[512], want[64];
  int n;
  if (op == OP_CSET) {
    /* below 2^61: memcached 1.6.18 may take a value of 2^63 or more for a
     * negative one (it looks for a '-' past the digits) */
    uint64_t v = below(&w->rng, 4) == 0 ? next(&w->rng) >> 3 : below(&w->rng, 1000);
    int len = snprintf(want, sizeof want, "%" PRIu64, v);
    n = snprintf(cmd, sizeof cmd, "set t%d:c%d 0 0 %d\r\n%s\r\n", w->id, i, len, want);
    if (send_all(w, cmd, (size_t)n)) return -1;
    snprintf(cmd, sizeof cmd, "set t%d:c%d", w->id, i);
    if (expect_line(w, cmd, "STORED") < 0) return -1;
    k->present = 1;
    k->value = v;
    w->hits[op]++;
    return 0;
  }
  if (op == OP_CGET) {
    n = snprintf(cmd, sizeof cmd, "get t%d:c%d\r\n", w->id, i);
    if (send_all(w, cmd, (size_t)n)) return -1;
    cmd[n - 2] = 0;
    if (!read_line(w, line, sizeof line)) return -1;
    if (!k->present) {
      if (strcmp(line, "END") != 0) mismatch(w, cmd, "expected 'END', got '%s'", line);
      return 0;
    }
    size_t len;
    if (sscanf(line, "VALUE %*s %*u %zu", &len) != 1 || len > 40) {
      mismatch(w, cmd, "expected a VALUE line, got '%s'", line);
      return 0;
    }
    if (fill(w, len + 2) < 0) return -1;
    char val[48];
    memcpy(val, w->c.buf + w->c.pos, len);
    val[len] = 0;
    w->c.pos += len + 2;
    /* memcached pads a value that an incr/decr shortened with spaces */
    while (len > 0 && val[len - 1] == ' ') val[--len] = 0;
    snprintf(want, sizeof want, "%" PRIu64, k->value);
    if (strcmp(val, want) != 0) mismatch(w, cmd, "counter value '%s', model %s", val, want);
    if (expect_line(w, cmd, "END") < 0) return -1;
    w->hits[op]++;
    return 0;
  }
  uint64_t delta = below(&w->rng, 8) == 0 ? next(&w->rng) >> 24 : below(&w->rng, 1000);
  n = snprintf(cmd, sizeof cmd, "%s t%d:c%d %" PRIu64 "\r\n", op == OP_INCR ? "incr" : "decr", w->id, i, delta);
  if (send_all(w, cmd, (size_t)n)) return -1;
  cmd[n - 2] = 0;
  if (!k->present) return expect_line(w, cmd, "NOT_FOUND") < 0 ? -1 : 0;
  if (op == OP_INCR) k->value += delta;
  else k->value = k->value < delta ? 0 : k->value - delta;
  snprintf(want, sizeof want, "%" PRIu64, k->value);
  if (expect_line(w, cmd, want) < 0) return -1;
  w->hits[op]++;
  return 0;
}

static int do_shared(worker *w) {
  int i = (int)below(&w->rng, NSHARED);
  uint64_t delta = 1 + below(&w->rng, 100);
  char cmd[96], line[512];
  int n = snprintf(cmd, sizeof cmd, "incr shared:c%d %" PRIu64 "\r\n", i, delta);
  if (send_all(w, cmd, (size_t)n)) return -1;
  cmd[n - 2] = 0;
  if (!read_line(w, line, sizeof line)) return -1;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(line, &end, 10);
  if (*end != 0 || errno || v < delta) mismatch(w, cmd, "expected a number >= %" PRIu64 ", got '%s'", delta, line);
  atomic_fetch_add(&shared_added[i], delta);
  w->hits[OP_SHARED]++;
  return 0;
}

static void *run(void *arg) {
  worker *w = arg;
  if (conn_open(&w->c) < 0) {
    fprintf(stderr, "mcclient: thread %d cannot connect to %s:%s\n", w->id, host, port);
    w->failed = 1;
    return NULL;
  }
  /* start from a clean key space: memcached may be reused between runs */
  for (int i = 0; i < NKEYS + NCOUNTERS && !w->failed; i++) {
    char cmd[64], line[128];
    int n = i < NKEYS ? snprintf(cmd, sizeof cmd, "delete t%d:k%d\r\n", w->id, i)
                      : snprintf(cmd, sizeof cmd, "delete t%d:c%d\r\n", w->id, i - NKEYS);
    if (send_all(w, cmd, (size_t)n) || !read_line(w, line, sizeof line)) break;
  }
  for (long k = 0; k < ops_per_thread && !w->failed; k++) {
    uint64_t r = below(&w->rng, 100);
    int op = r < 22   ? OP_SET
             : r < 26 ? OP_ADD
             : r < 30 ? OP_REPLACE
             : r < 33 ? OP_APPEND
             : r < 35 ? OP_PREPEND
             : r < 57 ? OP_GET
             : r < 65 ? OP_MGET
             : r < 72 ? OP_DELETE
             : r < 74 ? OP_TOUCH
             : r < 81 ? OP_INCR
             : r < 85 ? OP_DECR
             : r < 88 ? OP_CSET
             : r < 93 ? OP_CGET
                      : OP_SHARED;
    w->count[op]++;
    int rc;
    switch (op) {
      case OP_SET: case OP_ADD: case OP_REPLACE: case OP_APPEND: case OP_PREPEND: rc = do_store(w, op); break;
      case OP_GET: rc = do_get(w, 0); break;
      case OP_MGET: rc = do_get(w, 1); break;
      case OP_DELETE: case OP_TOUCH: rc = do_delete_touch(w, op); break;
      case OP_SHARED: rc = do_shared(w); break;
      default: rc = do_counter(w, op); break;
    }
    if (rc < 0) w->failed = 1;
  }
  return NULL;
}

static int simple(worker *w, const char *cmd, char *line, size_t cap) {
  return send_all(w, cmd, strlen(cmd)) || !read_line(w, line, cap) ? -1 : 0;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: mcclient HOST PORT THREADS OPS_PER_THREAD [SEED]\n");
    return 2;
  }
  host = argv[1];
  port = argv[2];
  int nthreads = atoi(argv[3]);
  ops_per_thread = atol(argv[4]);
  base_seed = argc > 5 ? strtoull(argv[5], NULL, 0) : 42;
  if (nthreads < 1 || nthreads > 256 || ops_per_thread < 1) return 2;

  worker ctl = {.id = -1};
  char line[512];
  if (conn_open(&ctl.c) < 0) {
    fprintf(stderr, "mcclient: cannot connect to %s:%s\n", host, port);
    return 2;
  }
  for (int i = 0; i < NSHARED; i++) {
    char cmd[64];
    snprintf(cmd, sizeof cmd, "set shared:c%d 0 0 1\r\n0\r\n", i);
    if (simple(&ctl, cmd, line, sizeof line) || strcmp(line, "STORED") != 0) {
      fprintf(stderr, "mcclient: cannot set shared:c%d: '%s'\n", i, line);
      return 2;
    }
  }

  worker *ws = calloc((size_t)nthreads, sizeof *ws);
  pthread_t *tids = calloc((size_t)nthreads, sizeof *tids);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int t = 0; t < nthreads; t++) {
    ws[t].id = t;
    ws[t].rng = (base_seed + 0x9E3779B97F4A7C15ull * (uint64_t)(t + 1)) | 1;
    ws[t].scratch = malloc(MAXVAL + 1);
    pthread_create(&tids[t], NULL, run, &ws[t]);
  }
  int failed = 0;
  for (int t = 0; t < nthreads; t++) {
    pthread_join(tids[t], NULL);
    failed |= ws[t].failed;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;

  long total[OP__COUNT] = {0}, hits[OP__COUNT] = {0}, ops = 0;
  for (int t = 0; t < nthreads; t++)
    for (int o = 0; o < OP__COUNT; o++) {
      total[o] += ws[t].count[o];
      hits[o] += ws[t].hits[o];
      ops += ws[t].count[o];
    }
  printf("mcclient: %d connections, %ld ops each, seed %" PRIu64 "\n", nthreads, ops_per_thread, base_seed);
  for (int o = 0; o < OP__COUNT; o++) printf("  %-12s %8ld sent %8ld hit\n", op_name[o], total[o], hits[o]);
  for (int t = 0; t < nthreads; t++) {
    uint64_t sum = 0;
    long live = 0;
    for (int i = 0; i < NKEYS; i++)
      if (ws[t].keys[i].present) {
        live++;
        sum += ws[t].keys[i].len;
      }
    printf("  thread %d: %ld live keys, %" PRIu64 " bytes\n", t, live, sum);
  }
  /* shared counters: the server's final value is the sum of all increments */
  for (int i = 0; i < NSHARED && !failed; i++) {
    char cmd[64];
    snprintf(cmd, sizeof cmd, "incr shared:c%d 0\r\n", i);
    if (simple(&ctl, cmd, line, sizeof line)) { failed = 1; break; }
    unsigned long want = atomic_load(&shared_added[i]);
    if (strtoull(line, NULL, 10) != want) {
      fprintf(stderr, "mcclient: MISMATCH shared:c%d is '%s', the threads added %lu\n", i, line, want);
      atomic_fetch_add(&mismatches, 1);
    }
    printf("  shared:c%d = %s\n", i, line);
  }
  /* server statistics that depend only on the commands sent (not total_items:
   * an incr makes a new item or not depending on who else holds the old one) */
  static const char *keep[] = {"curr_items", "cmd_get", "cmd_set", "cmd_touch", "get_hits",
                               "get_misses", "delete_hits", "delete_misses", "incr_hits", "incr_misses",
                               "decr_hits", "decr_misses", "touch_hits", "evictions", "expired_unfetched",
                               NULL};
  if (!failed && send_all(&ctl, "stats\r\n", 7) == 0) {
    while (read_line(&ctl, line, sizeof line) && strcmp(line, "END") != 0) {
      char name[64], val[64];
      if (sscanf(line, "STAT %63s %63s", name, val) != 2) continue;
      for (int k = 0; keep[k]; k++)
        if (strcmp(name, keep[k]) == 0) printf("  stat %s %s\n", name, val);
    }
  }
  int mm = atomic_load(&mismatches);
  printf("mcclient: %d mismatches%s\n", mm, failed ? ", I/O failure" : "");
  fprintf(stderr, "mcclient-time: %.3f %ld\n", secs, ops);
  for (int t = 0; t < nthreads; t++) {
    for (int i = 0; i < NKEYS; i++) free(ws[t].keys[i].data);
    free(ws[t].scratch);
    free(ws[t].c.buf);
    close(ws[t].c.fd);
  }
  free(ws);
  free(tids);
  return failed ? 2 : mm ? 1 : 0;
}
