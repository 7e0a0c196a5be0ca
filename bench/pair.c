/* pair.c — ftm-bench-pair: the instruction cost of one malloc(32)/free pair,
 * to be run under `valgrind --tool=callgrind --toggle-collect=...`.
 *
 *   ftm-bench-pair pairs [N]   warm up, then run_pairs(N): N malloc(32)+free
 *   ftm-bench-pair empty [N]   warm up, then run_empty(N): the same loop
 *                              calling two empty noinline functions instead
 *
 * Only the run_* function is collected (--toggle-collect='run_pairs*'), so
 * the figure excludes start-up and warm-up.  (pairs - empty) / N is the
 * allocator's own cost; pairs / N includes the loop and two calls (and the
 * PLT stubs of malloc and free, which only the pairs loop has).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__clang__)
#define PAIR_NOIPA __attribute__((noinline))
#else
#define PAIR_NOIPA __attribute__((noinline, noipa))
#endif
#define pair_escape(p) __asm__ volatile("" : : "r"(p) : "memory")

static _Alignas(64) char fake_block[64];

PAIR_NOIPA void *fake_malloc(size_t size)
{
    pair_escape(size);
    return fake_block;
}

PAIR_NOIPA void fake_free(void *p)
{
    pair_escape(p);
}

PAIR_NOIPA void run_pairs(size_t n)
{
    for (size_t i = 0; i < n; i++) {
        void *p = malloc(32);
        pair_escape(p);
        free(p);
    }
}

PAIR_NOIPA void run_empty(size_t n)
{
    for (size_t i = 0; i < n; i++) {
        void *p = fake_malloc(32);
        pair_escape(p);
        fake_free(p);
    }
}

#define PAIR_KEEP 64

/* Reach the steady state: thread heap set up, PLT slots bound, the size
 * class's pool current.  Blocks of several sizes, 32 B among them, stay live
 * across the measured loop, as in a real program: otherwise every free
 * would empty the 32 B pool and an allocator would be timed retiring it. */
PAIR_NOIPA void run_warmup(void **keep, size_t n)
{
    for (int i = 0; i < PAIR_KEEP; i++)
        keep[i] = malloc((size_t)(16 + 16 * (i % 8)));
    for (size_t i = 0; i < n; i++) {
        void *p = malloc(32);
        pair_escape(p);
        free(p);
    }
    fake_free(fake_malloc(32));
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "pairs";
    size_t n = argc > 2 ? (size_t)strtoull(argv[2], NULL, 0) : 1000000;
    if (n == 0 || (strcmp(mode, "pairs") && strcmp(mode, "empty"))) {
        fprintf(stderr, "usage: ftm-bench-pair pairs|empty [N>0]\n");
        return 2;
    }
    void *keep[PAIR_KEEP];
    run_warmup(keep, 10000);
    if (!strcmp(mode, "pairs"))
        run_pairs(n);
    else
        run_empty(n);
    for (int i = 0; i < PAIR_KEEP; i++)
        free(keep[i]);
    printf("%s %zu\n", mode, n);
    return 0;
}
