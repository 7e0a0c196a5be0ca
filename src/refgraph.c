/* refgraph.c — ftm_refgraph_dump (ftmem/inspect.h): Graphviz dot of an
 * object's neighbourhood, objgraph's show_refs / show_backrefs.  Referents
 * come from the types' traverse (inside a read section), referrers from
 * ftm_gc_get_referrers (tracked objects only; it parks the threads).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "object_internal.h"

#define FTM_REFGRAPH_MAX 500

typedef struct {
  ftm_object *node[FTM_REFGRAPH_MAX];
  int depth[FTM_REFGRAPH_MAX];
  size_t n;
  FILE *f;
  size_t from;     /* the node whose referents are being visited */
  bool truncated;
} ftm__graph;

static size_t ftm__graph_find(const ftm__graph *g, const ftm_object *o) {
  for (size_t i = 0; i < g->n; i++)
    if (g->node[i] == o) return i;
  return SIZE_MAX;
}

/* The node index of o, added at depth d if new (SIZE_MAX when full). */
static size_t ftm__graph_add(ftm__graph *g, ftm_object *o, int d) {
  size_t i = ftm__graph_find(g, o);
  if (i != SIZE_MAX) return i;
  if (g->n == FTM_REFGRAPH_MAX) {
    g->truncated = true;
    return SIZE_MAX;
  }
  g->node[g->n] = o;
  g->depth[g->n] = d;
  return g->n++;
}

static int ftm__graph_edge(ftm_object *o, void *arg) {
  ftm__graph *g = arg;
  if (o == NULL) return 0;
  size_t i = ftm__graph_add(g, o, g->depth[g->from] + 1);
  if (i != SIZE_MAX) fprintf(g->f, "  o%zu -> o%zu;\n", g->from, i);
  return 0;
}

/* dot strings: quotes and backslashes escaped */
static void ftm__dot_str(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', f);
    fputc(*s, f);
  }
}

int ftm_refgraph_dump(ftm_object *obj, int depth, ftm_refgraph_dir dir, FILE *f) {
  if (obj == NULL || f == NULL || depth < 0 || (dir != FTM_REFGRAPH_REFERENTS && dir != FTM_REFGRAPH_REFERRERS)) {
    errno = EINVAL;
    return -1;
  }
  ftm__graph *g = calloc(1, sizeof *g);
  if (g == NULL) {
    errno = ENOMEM;
    return -1;
  }
  g->f = f;
  fprintf(f, "digraph ftmem_%s {\n  node [shape=box, style=filled, fillcolor=\"#e8eef7\", fontname=\"monospace\"];\n",
          dir == FTM_REFGRAPH_REFERENTS ? "refs" : "backrefs");
  ftm__graph_add(g, obj, 0);
  int rc = 0;
  if (dir == FTM_REFGRAPH_REFERENTS) {
    ftm_read_begin();
    for (size_t i = 0; i < g->n; i++) {
      ftm_object *o = g->node[i];
      if (g->depth[i] >= depth || o->ob_type->traverse == NULL) continue;
      g->from = i;
      o->ob_type->traverse(o, ftm__graph_edge, g);
    }
    /* labels while the section still keeps every node readable */
    for (size_t i = 0; i < g->n; i++) {
      ftm_object *o = g->node[i];
      fprintf(f, "  o%zu [label=\"", i);
      ftm__dot_str(f, o->ob_type->name);
      fprintf(f, "\\n%p\\n%zu B\"%s];\n", (void *)o, ftm_sizeof(o), i == 0 ? ", fillcolor=\"#f6c177\"" : "");
    }
    ftm_read_end();
  } else {
    size_t cap = 64;
    ftm_object **refs = malloc(cap * sizeof *refs);
    for (size_t i = 0; i < g->n && refs != NULL; i++) {
      if (g->depth[i] >= depth) continue;
      size_t k = ftm_gc_get_referrers(g->node[i], refs, cap);
      if (k > cap) { /* more than we had room for: again, larger */
        for (size_t j = 0; j < cap; j++) ftm_decref(refs[j]);
        ftm_object **n = realloc(refs, k * sizeof *n);
        if (n == NULL) break;
        refs = n;
        cap = k;
        k = ftm_gc_get_referrers(g->node[i], refs, cap);
        if (k > cap) k = cap;
      }
      for (size_t j = 0; j < k; j++) {
        size_t r = ftm__graph_add(g, refs[j], g->depth[i] + 1);
        if (r != SIZE_MAX) {
          fprintf(f, "  o%zu -> o%zu;\n", r, i);
          if (r == g->n - 1) continue; /* new node: keep the reference until labelled */
        }
        ftm_decref(refs[j]);
      }
    }
    if (refs == NULL) rc = -1;
    free(refs);
    for (size_t i = 0; i < g->n; i++) {
      ftm_object *o = g->node[i];
      fprintf(f, "  o%zu [label=\"", i);
      ftm__dot_str(f, o->ob_type->name);
      fprintf(f, "\\n%p\\n%zu B\"%s];\n", (void *)o, ftm_sizeof(o), i == 0 ? ", fillcolor=\"#f6c177\"" : "");
      if (i > 0) ftm_decref(o); /* the references the referrer lists gave */
    }
  }
  if (g->truncated) fprintf(f, "  more [label=\"... (over %d objects)\", shape=plaintext];\n", FTM_REFGRAPH_MAX);
  fprintf(f, "}\n");
  free(g);
  if (rc != 0) {
    errno = ENOMEM;
    return -1;
  }
  if (ferror(f)) {
    errno = EIO;
    return -1;
  }
  return 0;
}
