/* tls_hog.c — a shared library whose only purpose is to take HOG_SIZE
 * bytes of the static TLS surplus when it is dlopen()ed: one initial-exec
 * __thread array (the linker marks the library STATIC_TLS, so glibc must
 * place its block in the surplus reserved at start-up, as for libftmem).
 * Built once per size (tests/CMakeLists.txt); test_dlopen_tls loads
 * copies of it to use up the surplus before it loads the ftmem plugin. */
#include <stddef.h>

#ifndef HOG_SIZE
#error "HOG_SIZE must be defined"
#endif

static __thread unsigned char hog[HOG_SIZE]
    __attribute__((tls_model("initial-exec"), aligned(16)));

/* Touches the block (so the initial-exec access is really emitted) and
 * returns its size. */
__attribute__((visibility("default"))) size_t tls_hog_touch(void)
{
    hog[0]++;
    hog[HOG_SIZE - 1] = hog[0];
    return sizeof hog;
}
