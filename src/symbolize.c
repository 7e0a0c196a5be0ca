/* symbolize.c — return addresses to function, file and line, with
 * elfutils' libdw (Dwfl over this process's own modules), cached by
 * address.  Used by the tracer for snapshots and object tracebacks; the
 * caller holds ftm__trace_api_lock and has ftm__trace_busy set (libdw
 * allocates with malloc, which must not be traced).
 */
#include <elfutils/libdwfl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "trace_internal.h"

static const char ftm__unknown[] = "<unknown>";

typedef struct {
  uintptr_t pc; /* 0: empty */
  ftm_trace_frame f;
} ftm__sym;

static Dwfl *ftm__dwfl;
static ftm__sym *ftm__syms;
static size_t ftm__syms_cap, ftm__syms_n;

static const Dwfl_Callbacks ftm__dwfl_cb = {
    .find_elf = dwfl_linux_proc_find_elf,
    .find_debuginfo = dwfl_standard_find_debuginfo,
};

/* (Re)read the process's module list: modules dlopened since appear. */
static void ftm__dwfl_open(void) {
  if (ftm__dwfl != NULL) dwfl_end(ftm__dwfl);
  ftm__dwfl = dwfl_begin(&ftm__dwfl_cb);
  if (ftm__dwfl == NULL) return;
  if (dwfl_linux_proc_report(ftm__dwfl, getpid()) != 0 || dwfl_report_end(ftm__dwfl, NULL, NULL) != 0) {
    dwfl_end(ftm__dwfl);
    ftm__dwfl = NULL;
  }
}

static const char *ftm__dup(const char *s) {
  if (s == NULL) return ftm__unknown;
  char *d = strdup(s);
  return d != NULL ? d : ftm__unknown;
}

static void ftm__resolve(uintptr_t pc, ftm_trace_frame *f) {
  f->pc = pc;
  f->filename = f->function = ftm__unknown;
  f->lineno = 0;
  if (ftm__dwfl == NULL) ftm__dwfl_open();
  if (ftm__dwfl == NULL || pc == 0) return;
  /* a return address points after the call: look the call itself up */
  Dwarf_Addr a = (Dwarf_Addr)pc - 1;
  Dwfl_Module *m = dwfl_addrmodule(ftm__dwfl, a);
  if (m == NULL) { /* a module loaded after we looked */
    ftm__dwfl_open();
    if (ftm__dwfl == NULL || (m = dwfl_addrmodule(ftm__dwfl, a)) == NULL) return;
  }
  f->function = ftm__dup(dwfl_module_addrname(m, a));
  Dwfl_Line *line = dwfl_module_getsrc(m, a);
  int lineno = 0;
  const char *file = line != NULL ? dwfl_lineinfo(line, NULL, &lineno, NULL, NULL, NULL) : NULL;
  if (file != NULL) {
    f->filename = ftm__dup(file);
    f->lineno = lineno;
  } else {
    /* no line table: at least the module (as tracemalloc shows <unknown>) */
    const char *mod = dwfl_module_info(m, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    if (mod != NULL) f->filename = ftm__dup(mod);
  }
}

static bool ftm__syms_grow(void) {
  size_t cap = ftm__syms_cap ? ftm__syms_cap * 2 : 1024;
  ftm__sym *t = calloc(cap, sizeof *t);
  if (t == NULL) return false;
  for (size_t i = 0; i < ftm__syms_cap; i++) {
    if (ftm__syms[i].pc == 0) continue;
    size_t j = (ftm__syms[i].pc * 0x9e3779b97f4a7c15ull) >> 20 & (cap - 1);
    while (t[j].pc != 0) j = (j + 1) & (cap - 1);
    t[j] = ftm__syms[i];
  }
  free(ftm__syms);
  ftm__syms = t;
  ftm__syms_cap = cap;
  return true;
}

void ftm__symbolize(uintptr_t pc, ftm_trace_frame *out) {
  if (pc == 0 || ((ftm__syms_n + 1) * 2 > ftm__syms_cap && !ftm__syms_grow())) {
    ftm__resolve(pc, out); /* uncached (out of memory: strings may leak) */
    return;
  }
  size_t j = (pc * 0x9e3779b97f4a7c15ull) >> 20 & (ftm__syms_cap - 1);
  for (; ftm__syms[j].pc != 0; j = (j + 1) & (ftm__syms_cap - 1)) {
    if (ftm__syms[j].pc == pc) {
      *out = ftm__syms[j].f;
      return;
    }
  }
  ftm__resolve(pc, &ftm__syms[j].f);
  ftm__syms[j].pc = pc;
  ftm__syms_n++;
  *out = ftm__syms[j].f;
}

void ftm__symbolize_reset(void) {
  ftm__trace_busy++;
  for (size_t i = 0; i < ftm__syms_cap; i++) {
    if (ftm__syms[i].pc == 0) continue;
    if (ftm__syms[i].f.filename != ftm__unknown) free((void *)ftm__syms[i].f.filename);
    if (ftm__syms[i].f.function != ftm__unknown) free((void *)ftm__syms[i].f.function);
  }
  free(ftm__syms);
  ftm__syms = NULL;
  ftm__syms_cap = ftm__syms_n = 0;
  if (ftm__dwfl != NULL) dwfl_end(ftm__dwfl);
  ftm__dwfl = NULL;
  ftm__trace_busy--;
}
