/* track_preload.c — a program that knows nothing of ftmem: run with
 * LD_PRELOAD=libftmem.so (an FTMEM_TRACK=valgrind build) under memcheck,
 * its plain malloc/free bugs must be reported on ftmem's blocks.
 *   track_preload uaf | leak
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile char sink;

static __attribute__((noinline)) void leak_one(void) {
  volatile char *q = malloc(40);
  memset((char *)q, 1, 40);
  q = NULL;
}
static __attribute__((noinline)) void scrub_stack(void) {
  volatile char buf[16384];
  memset((char *)buf, 0, sizeof buf);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (!strcmp(mode, "uaf")) {
    char *p = malloc(24);
    strcpy(p, "hello");
    free(p);
    sink = p[0];
  } else if (!strcmp(mode, "leak")) {
    leak_one();
    scrub_stack();
  } else {
    fprintf(stderr, "usage: track_preload uaf|leak\n");
    return 2;
  }
  return 0;
}
