/* main.c — ftm-bench: allocator workloads behind one command line.
 *
 *   ftm-bench <workload> [-t threads] [-d ms | -n ops] [-s seed] [--quick]
 *                        [--mib N] [--live N]
 *
 * Each run prints one JSON line (see common.h).  Exit status: 0 ok,
 * 2 usage or setup error, 3 corrupted blocks seen.  The allocator under test
 * is whatever malloc the process resolves (LD_PRELOAD); nothing here links
 * ftmem.
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct workload_s {
    const char *name;
    int (*fn)(const bench_opts_t *);
    const char *what;
} workload_t;

static const workload_t workloads[] = {
    {"churn", wl_churn, "thread-local churn: random 8-512 B malloc/free over a live set (larson-lite)"},
    {"xthread", wl_xthread, "producer/consumer pairs: thread 2k mallocs, thread 2k+1 frees, via an SPSC ring (even -t)"},
    {"fs-active", wl_fs_active, "active false sharing: each thread mallocs 8 B objects and writes them hard (cache-thrash)"},
    {"fs-passive", wl_fs_passive, "passive false sharing: objects malloc'd by main, freed by workers, then worker churn (cache-scratch)"},
    {"thread-churn", wl_thread_churn, "short-lived threads: each mallocs/frees 1000 blocks, hands 10% to the next generation"},
    {"frag", wl_frag, "fragmentation: fill --mib of 16-128 B blocks, free 90% at random, fill 256-1024 B blocks; RSS per phase"},
    {"sizemix", wl_sizemix, "server-like size mix: mostly 16-128 B, some to 8 KiB, rare 64 KiB-1 MiB, realloc growth"},
    {"large", wl_large, "large blocks: 256 KiB-16 MiB malloc/touch every page/free"},
    {"rss-return", wl_rss_return, "RSS return: --mib of 64 B blocks, free all, sample RSS at 0/100/250/500/1000 ms"},
};

#define NWORKLOADS (sizeof workloads / sizeof workloads[0])

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ftm-bench <workload> [options]\n"
            "  -t, --threads N     worker threads (default 2)\n"
            "  -d, --duration MS   time box of throughput workloads (default 1000; --quick 200)\n"
            "  -n, --ops N         fixed ops per thread instead of a time box (deterministic checksum)\n"
            "  -s, --seed S        RNG seed (default 42)\n"
            "  --mib N             heap size of frag (default 300) and rss-return (default 256)\n"
            "  --live N            live-set slots per thread (workload default if 0)\n"
            "  --quick             smoke size (short time boxes, 1/4 heaps)\n"
            "workloads:\n");
    for (size_t i = 0; i < NWORKLOADS; i++)
        fprintf(f, "  %-13s %s\n", workloads[i].name, workloads[i].what);
}

static unsigned long long parse_num(const char *opt, const char *s)
{
    char *end;
    unsigned long long v = strtoull(s ? s : "", &end, 0);
    if (!s || *s == 0 || *end != 0) {
        fprintf(stderr, "ftm-bench: %s needs a number, got '%s'\n", opt, s ? s : "");
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--list")) {
        for (size_t i = 0; i < NWORKLOADS; i++)
            printf("%s\n", workloads[i].name);
        return 0;
    }
    const workload_t *wl = NULL;
    for (size_t i = 0; i < NWORKLOADS; i++)
        if (!strcmp(argv[1], workloads[i].name))
            wl = &workloads[i];
    if (!wl) {
        fprintf(stderr, "ftm-bench: unknown workload '%s'\n", argv[1]);
        usage(stderr);
        return 2;
    }

    bench_opts_t o = {.threads = 2, .duration_ms = -1, .seed = 42};
    long mib = -1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            o.threads = (int)parse_num(a, v), i++;
        else if (!strcmp(a, "-d") || !strcmp(a, "--duration"))
            o.duration_ms = (long)parse_num(a, v), i++;
        else if (!strcmp(a, "-n") || !strcmp(a, "--ops"))
            o.ops = parse_num(a, v), i++;
        else if (!strcmp(a, "-s") || !strcmp(a, "--seed"))
            o.seed = parse_num(a, v), i++;
        else if (!strcmp(a, "--mib"))
            mib = (long)parse_num(a, v), i++;
        else if (!strcmp(a, "--live"))
            o.live = parse_num(a, v), i++;
        else if (!strcmp(a, "--quick"))
            o.quick = true;
        else {
            fprintf(stderr, "ftm-bench: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (o.threads < 1 || o.threads > 1024) {
        fprintf(stderr, "ftm-bench: -t must be 1..1024\n");
        return 2;
    }
    if (o.duration_ms < 0)
        o.duration_ms = o.quick ? 200 : 1000;
    o.mib = mib > 0 ? (size_t)mib : 0; /* 0: the workload picks its default */
    return wl->fn(&o);
}
