/* test_inspect.c — ftmem/inspect.h: the census counts exactly, deep sizes
 * of shared and cyclic structures, reference graphs that Graphviz
 * parses, the leak report, bad input.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ftmem.h>

TestSuite(inspect, .timeout = 60);

/* A node with two reference fields, tracked by the collector. */
typedef struct node {
  ftm_object ob;
  ftm_field a, b;
  long payload[4];
} node;

static int node_traverse(ftm_object *self, ftm_visitproc visit, void *arg) {
  node *n = (node *)self;
  ftm_object *x;
  if ((x = ftm_field_peek(&n->a)) && visit(x, arg)) return 1;
  if ((x = ftm_field_peek(&n->b)) && visit(x, arg)) return 1;
  return 0;
}
static void node_clear(ftm_object *self) {
  node *n = (node *)self;
  ftm_field_clear(&n->a);
  ftm_field_clear(&n->b);
}
static ftm_type node_type = {.name = "inspect.node", .basic_size = sizeof(node), .flags = FTM_TYPE_GC,
                             .traverse = node_traverse, .clear = node_clear};
/* A leaf of its own type, so the census can count it apart. */
static ftm_type leaf_type = {.name = "inspect.leaf", .basic_size = sizeof(ftm_object) + 40};

static node *new_node(void) { return (node *)ftm_new(&node_type); }
/* store a new reference to v in f */
static void set_ref(ftm_field *f, void *v) { ftm_field_init(f, ftm_newref((ftm_object *)v)); }

static const ftm_census_entry *census_row(ftm_census_entry *rows, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(rows[i].name, name) == 0) return &rows[i];
  return NULL;
}

Test(inspect, census_counts_exactly) {
  ftm_gc_disable();
  ftm_census_entry rows[64];
  size_t n = ftm_census(rows, 64);
  cr_assert_null(census_row(rows, n, "inspect.leaf"));
  ftm_object *leaves[300];
  node *nodes[120];
  for (int i = 0; i < 300; i++) leaves[i] = ftm_new(&leaf_type);
  for (int i = 0; i < 120; i++) nodes[i] = new_node();
  n = ftm_census(rows, 64);
  const ftm_census_entry *l = census_row(rows, n, "inspect.leaf"), *nd = census_row(rows, n, "inspect.node");
  cr_assert_not_null(l);
  cr_assert_not_null(nd);
  cr_assert_eq(l->count, 300);
  cr_assert_eq(l->bytes, 300 * leaf_type.basic_size);
  cr_assert_eq(l->type, &leaf_type);
  cr_assert_eq(nd->count, 120);
  cr_assert_eq(nd->bytes, 120 * ftm_sizeof(&nodes[0]->ob), "GC heads counted");
  /* most numerous first */
  cr_assert(l < nd, "leaf (300) listed after node (120)");
  for (int i = 0; i < 100; i++) ftm_decref(leaves[i]);
  n = ftm_census(rows, 64);
  cr_assert_eq(census_row(rows, n, "inspect.leaf")->count, 200, "census says %zu",
               census_row(rows, n, "inspect.leaf")->count);
  /* the printed table */
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  cr_assert_eq(ftm_census_print(0, f), 0);
  fclose(f);
  char want[128];
  snprintf(want, sizeof want, "inspect.leaf %12zu %14zu", (size_t)200, 200 * leaf_type.basic_size);
  cr_assert_not_null(strstr(text, "inspect.leaf"), "%s", text);
  cr_assert_not_null(strstr(text, "200"), "%s", text);
  free(text);
  for (int i = 100; i < 300; i++) ftm_decref(leaves[i]);
  for (int i = 0; i < 120; i++) ftm_decref(&nodes[i]->ob);
  n = ftm_census(rows, 64);
  cr_assert_null(census_row(rows, n, "inspect.leaf"));
  cr_assert_null(census_row(rows, n, "inspect.node"));
  errno = 0;
  cr_assert_eq(ftm_census_print(0, NULL), -1);
  cr_assert_eq(errno, EINVAL);
}

Test(inspect, deep_sizeof_shared_and_cyclic) {
  ftm_gc_disable();
  node *probe = new_node();
  size_t ns = ftm_sizeof(&probe->ob); /* a node and its GC head */
  ftm_decref(&probe->ob);
  cr_assert_gt(ns, sizeof(node));
  /* a chain root -> c1 -> c2, while we still hold c1 and c2: they
   * would survive root */
  node *root = new_node(), *c1 = new_node(), *c2 = new_node();
  set_ref(&root->a, c1);
  set_ref(&c1->a, c2);
  cr_assert_eq(ftm_deep_sizeof(&root->ob), ns, "our own references to c1, c2 are external");
  ftm_decref(&c2->ob);
  cr_assert_eq(ftm_deep_sizeof(&root->ob), ns, "c1 is still ours, and c2 only reachable through it");
  /* dropped: all three die with root */
  ftm_decref(&c1->ob);
  cr_assert_eq(ftm_deep_sizeof(&root->ob), 3 * ns);
  /* a shared child: another object references c2 */
  node *other = new_node();
  set_ref(&other->a, c2);
  cr_assert_eq(ftm_deep_sizeof(&root->ob), 2 * ns, "a child shared with another object counted");
  /* what a shared child reaches is shared too */
  node *c3 = new_node();
  set_ref(&c2->b, c3);
  ftm_decref(&c3->ob);
  cr_assert_eq(ftm_deep_sizeof(&root->ob), 2 * ns);
  ftm_decref(&other->ob); /* c2 now only root's (through c1) */
  cr_assert_eq(ftm_deep_sizeof(&root->ob), 4 * ns);
  /* a cycle back to root: counted once, no endless walk */
  set_ref(&c3->a, root);
  cr_assert_eq(ftm_deep_sizeof(&root->ob), 4 * ns);
  /* a diamond: root -> x, root -> y, x -> z, y -> z: z counted once */
  node *d = new_node(), *x = new_node(), *y = new_node(), *z = new_node();
  set_ref(&d->a, x), set_ref(&d->b, y), set_ref(&x->a, z), set_ref(&y->a, z);
  ftm_decref(&x->ob), ftm_decref(&y->ob), ftm_decref(&z->ob);
  cr_assert_eq(ftm_deep_sizeof(&d->ob), 4 * ns);
  /* a leaf: just itself; immortal referents are not counted */
  ftm_object *leaf = ftm_new(&leaf_type);
  cr_assert_eq(ftm_deep_sizeof(leaf), ftm_sizeof(leaf));
  ftm_object *imm = ftm_new(&leaf_type);
  ftm_make_immortal(imm);
  node *e = new_node();
  set_ref(&e->a, imm);
  cr_assert_eq(ftm_deep_sizeof(&e->ob), ns, "an immortal referent counted");
  ftm_decref(&e->ob);
  errno = 0;
  cr_assert_eq(ftm_deep_sizeof(NULL), 0);
  cr_assert_eq(errno, EINVAL);
  ftm_decref(leaf);
  /* break the cycle and drop everything */
  ftm_field_clear(&c3->a);
  ftm_decref(&root->ob);
  ftm_decref(&d->ob);
  ftm_gc_enable();
  ftm_gc_collect(2);
}

/* Graphviz must parse what we write: `dot -Tsvg` on it. */
static void check_dot(const char *text, const char *must_have) {
  char path[] = "/tmp/ftm_refgraph_XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  FILE *f = fdopen(fd, "w");
  fputs(text, f);
  fclose(f);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "dot -Tsvg %s -o %s.svg 2>&1", path, path);
  FILE *p = popen(cmd, "r");
  char out[512] = "";
  size_t got = fread(out, 1, sizeof out - 1, p);
  out[got] = 0;
  int st = pclose(p);
  cr_assert_eq(st, 0, "dot failed (%d): %s\n%s", st, out, text);
  char svg[64];
  snprintf(svg, sizeof svg, "%s.svg", path);
  FILE *s = fopen(svg, "r");
  cr_assert_not_null(s);
  char buf[65536];
  size_t n = fread(buf, 1, sizeof buf - 1, s);
  buf[n] = 0;
  fclose(s);
  cr_assert_not_null(strstr(buf, "<svg"), "no svg");
  cr_assert_not_null(strstr(buf, must_have), "'%s' not in the svg", must_have);
  unlink(path);
  unlink(svg);
}

/* ftm_refgraph_dump into a string (free it) */
static char *dump(void *obj, int depth, ftm_refgraph_dir dir) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  cr_assert_eq(ftm_refgraph_dump((ftm_object *)obj, depth, dir, f), 0);
  fclose(f);
  return text;
}

Test(inspect, refgraph_dot_renders) {
  ftm_gc_disable();
  node *root = new_node(), *c1 = new_node(), *c2 = new_node(), *far = new_node();
  set_ref(&root->a, c1), set_ref(&root->b, c2), set_ref(&c1->a, far), set_ref(&c2->a, root); /* a cycle */
  char *text = dump(root, 1, FTM_REFGRAPH_REFERENTS);
  cr_assert_not_null(strstr(text, "digraph"));
  cr_assert_not_null(strstr(text, "o0 -> o1"), "%s", text);
  cr_assert_not_null(strstr(text, "o0 -> o2"), "%s", text);
  cr_assert_null(strstr(text, "o3"), "depth 1 reached a grandchild:\n%s", text);
  check_dot(text, "inspect.node");
  free(text);
  /* depth 2: the grandchild and the edge back to root */
  text = dump(root, 2, FTM_REFGRAPH_REFERENTS);
  cr_assert_not_null(strstr(text, "o2 -> o0"), "the cycle's edge is missing:\n%s", text);
  cr_assert_not_null(strstr(text, "o1 -> o3"), "%s", text);
  check_dot(text, "inspect.node");
  free(text);
  /* referrers of far: c1, then root */
  text = dump(far, 2, FTM_REFGRAPH_REFERRERS);
  cr_assert_not_null(strstr(text, "o1 -> o0"), "%s", text);
  cr_assert_not_null(strstr(text, "o2 -> o1"), "%s", text);
  check_dot(text, "inspect.node");
  free(text);
  errno = 0;
  cr_assert_eq(ftm_refgraph_dump(NULL, 1, FTM_REFGRAPH_REFERENTS, stdout), -1);
  cr_assert_eq(errno, EINVAL);
  cr_assert_eq(ftm_refgraph_dump(&root->ob, -1, FTM_REFGRAPH_REFERENTS, stdout), -1);
  cr_assert_eq(ftm_refgraph_dump(&root->ob, 1, (ftm_refgraph_dir)7, stdout), -1);
  ftm_decref(&c1->ob), ftm_decref(&c2->ob), ftm_decref(&far->ob);
  ftm_field_clear(&c2->a);
  ftm_decref(&root->ob);
  ftm_gc_enable();
}

static void *volatile leak_sink;
Test(inspect, leak_report_names_types_and_sites) {
  cr_assert_eq(ftm_trace_start(1), 0);
  for (int i = 0; i < 7; i++) leak_sink = ftm_new(&leaf_type); /* leaked on purpose */
  leak_sink = ftm_malloc(12345);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  cr_assert_eq(ftm_leak_report(f), 0);
  fclose(f);
  cr_assert_not_null(strstr(text, "ftmem: leak report:"), "%s", text);
  cr_assert_not_null(strstr(text, "inspect.leaf"), "%s", text);
  cr_assert_not_null(strstr(text, "test_inspect.c:"), "no allocation site:\n%s", text);
  cr_assert_not_null(strstr(text, "size=12.1 KiB, count=1"), "%s", text);
  free(text);
  ftm_trace_stop();
}
