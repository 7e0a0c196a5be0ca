/* deep_sizeof.c — ftm_deep_sizeof (ftmem/inspect.h): what an object
 * alone keeps alive.
 *
 * 1. R = everything reachable from obj through the types' traverse
 *    (immortal objects left out: nothing owns them).
 * 2. For each member, count the references it gets from inside R.  A
 *    member other than obj whose reference count is higher is also held
 *    from outside: it, and everything reachable from it within R, would
 *    survive obj (the trial deletion the cycle collector does, on R).
 * 3. The answer is ftm_sizeof summed over the rest.
 * Runs inside a read section, so a referent freed meanwhile stays
 * readable (objects ever stored in a field are freed after a grace period).
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"
#include "object_internal.h"

typedef struct {
  ftm_object **obj;   /* open addressing, NULL: empty */
  uint32_t *internal; /* references from inside R */
  uint8_t *held;      /* reachable from a member held from outside */
  size_t cap, n;
  ftm_object **order; /* members in discovery order (BFS queue) */
  size_t nq;
  ftm_object **hq;    /* second pass: the held ones to traverse */
  size_t nh;
  ftm_object *root;
  bool failed;
} ftm__rset;

static size_t ftm__slot(const ftm__rset *r, const ftm_object *o) {
  size_t j = ((uintptr_t)o >> 4) * 0x9e3779b97f4a7c15ull >> 20 & (r->cap - 1);
  while (r->obj[j] != NULL && r->obj[j] != o) j = (j + 1) & (r->cap - 1);
  return j;
}

static bool ftm__rset_grow(ftm__rset *r) {
  size_t cap = r->cap ? r->cap * 2 : 1024;
  ftm__rset n = {.cap = cap};
  n.obj = calloc(cap, sizeof *n.obj);
  n.internal = calloc(cap, sizeof *n.internal);
  n.held = calloc(cap, 1);
  ftm_object **order = realloc(r->order, cap / 2 * sizeof *order);
  if (!n.obj || !n.internal || !n.held || !order) {
    free(n.obj), free(n.internal), free(n.held);
    if (order) r->order = order;
    return false;
  }
  for (size_t i = 0; i < r->cap; i++) {
    if (r->obj[i] == NULL) continue;
    size_t j = ftm__slot(&n, r->obj[i]);
    n.obj[j] = r->obj[i];
    n.internal[j] = r->internal[i];
    n.held[j] = r->held[i];
  }
  free(r->obj), free(r->internal), free(r->held);
  r->obj = n.obj, r->internal = n.internal, r->held = n.held, r->cap = cap;
  r->order = order;
  return true;
}

/* Add o if new; count one reference to it from inside. */
static int ftm__visit_add(ftm_object *o, void *arg) {
  ftm__rset *r = arg;
  if (o == NULL || ftm_is_immortal(o) || r->failed) return 0;
  if ((r->n + 1) * 2 > r->cap && !ftm__rset_grow(r)) {
    r->failed = true;
    return 1;
  }
  size_t j = ftm__slot(r, o);
  if (r->obj[j] == NULL) {
    r->obj[j] = o;
    r->n++;
    r->order[r->nq++] = o;
  }
  r->internal[j]++;
  return 0;
}

/* Mark o and what it reaches within R as held from outside. */
static int ftm__visit_hold(ftm_object *o, void *arg) {
  ftm__rset *r = arg;
  /* the root is what we pretend to delete: what it reaches is not held
   * through it */
  if (o == NULL || o == r->root || ftm_is_immortal(o)) return 0;
  size_t j = ftm__slot(r, o);
  if (r->obj[j] == NULL || r->held[j]) return 0;
  r->held[j] = 1;
  r->hq[r->nh++] = o;
  return 0;
}

size_t ftm_deep_sizeof(ftm_object *obj) {
  if (obj == NULL) {
    errno = EINVAL;
    return 0;
  }
  if (ftm_is_immortal(obj)) return ftm_sizeof(obj);
  ftm__rset r = {0};
  size_t total = 0;
  ftm_read_begin();
  r.root = obj;
  if (!ftm__rset_grow(&r)) goto oom;
  /* obj's own count includes no reference from R unless a cycle leads
   * back: it is the root, never "held from outside" */
  ftm__visit_add(obj, &r);
  r.internal[ftm__slot(&r, obj)] = 0;
  for (size_t q = 0; q < r.nq && !r.failed; q++) {
    ftm_object *o = r.order[q];
    if (o->ob_type->traverse != NULL) o->ob_type->traverse(o, ftm__visit_add, &r);
  }
  if (r.failed) goto oom;
  /* second pass: members referenced from outside R, and what they reach */
  r.hq = malloc((r.nq ? r.nq : 1) * sizeof *r.hq);
  if (r.hq == NULL) goto oom;
  for (size_t q = 0; q < r.nq; q++) {
    ftm_object *o = r.order[q];
    size_t j = ftm__slot(&r, o);
    if (o == obj || r.held[j]) continue;
    ssize_t rc = ftm_refcount(o);
    if (rc > (ssize_t)r.internal[j] || ftm_is_deferred(o)) ftm__visit_hold(o, &r);
  }
  for (size_t q = 0; q < r.nh; q++) {
    ftm_object *o = r.hq[q];
    if (o->ob_type->traverse != NULL) o->ob_type->traverse(o, ftm__visit_hold, &r);
  }
  for (size_t i = 0; i < r.cap; i++)
    if (r.obj[i] != NULL && !r.held[i]) total += ftm_sizeof(r.obj[i]);
  ftm_read_end();
  free(r.obj), free(r.internal), free(r.held), free(r.order), free(r.hq);
  return total;
oom:
  ftm_read_end();
  free(r.obj), free(r.internal), free(r.held), free(r.order), free(r.hq);
  errno = ENOMEM;
  return 0;
}
