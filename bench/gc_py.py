#!/usr/bin/env python3
"""gc_py.py — CPython's cycle collector on the graphs of ftm-bench-gc (bench/gc_throughput.c).

    gc_py.py full  -n N [--reps K] [--no-garbage]
    gc_py.py young --old N [--young Y] [--reps K] [--refs random|fixed]

The graph is gc_common.h's: N nodes (a class with __slots__ ('a', 'b'):
two references, GC-tracked, 48 bytes with CPython's GC head) held by one
list; node i references nodes (i * 2654435761 + 12345) % N and
(i * 40503 + 977) % N.  It is built with the collector disabled, as the C
side does.

full:  one gc.collect() to settle, then K timed ones of the live graph
       (ns per object); CPython holds the GIL for the whole collection, so
       each one is a pause of every thread.  Then the list is dropped and
       one gc.collect() frees the graph (ns per object found).
young: the graph as the old heap (two full collections move it to the
       oldest generation), then K times: Y new nodes pointing at old ones
       (anywhere, or --refs fixed: among the first 1000), held by a new
       list; gc.collect(0) timed, the young objects dropped.

One JSON line per figure in ftm-bench's format (workload, threads, unit,
ops, seconds, ops_per_s, checksum, errors, maxrss_kib, extras).  Standard
library only.
"""
import argparse
import gc
import json
import os
import resource
import sys
import sysconfig
import time


class Node:
    __slots__ = ("a", "b")


def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def emit(workload, unit, ops, seconds, errors=0, **extra):
    d = {"workload": workload, "threads": 1, "unit": unit, "ops": ops, "seconds": round(seconds, 9),
         "ops_per_s": ops / seconds if seconds > 0 else 0, "checksum": "0x%016x" % 0, "errors": errors,
         "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
         "python": sys.version.split()[0], "python_executable": sys.executable,
         "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED"))}
    d.update(extra)
    print(json.dumps(d), flush=True)


def build(n):
    nodes = [Node() for _ in range(n)]
    for i, x in enumerate(nodes):
        x.a = nodes[(i * 2654435761 + 12345) % n]
        x.b = nodes[(i * 40503 + 977) % n]
    return nodes


def median(v):
    v = sorted(v)
    k = len(v)
    return v[k // 2] if k % 2 else (v[k // 2 - 1] + v[k // 2]) / 2


def full(n, reps, garbage=True):
    gc.disable()
    base = len(gc.get_objects())
    rss0 = rss_kib()
    t0 = time.perf_counter()
    g = build(n)
    build_s = time.perf_counter() - t0
    rss1 = rss_kib()
    t0 = time.perf_counter()
    gc.collect()
    settle = time.perf_counter() - t0
    ts, cpu, found_live = [], [], 0
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        found_live += gc.collect()
        ts.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    med = median(ts)
    tracked = n + 1 + base  # the nodes, the list, what the interpreter had
    emit("gc-full-live", "full collection of a live graph", reps, med, errors=found_live,
         n=n, ns_per_object=med * 1e9 / (n + 1), ns_per_tracked_object=med * 1e9 / tracked,
         cpu_ns_per_object=median(cpu) * 1e9 / (n + 1), median_ms=med * 1e3, max_ms=max(ts) * 1e3,
         settle_ms=settle * 1e3, build_s=build_s, bytes_per_object=(rss1 - rss0) * 1024 / n,
         tracked_before_build=base)
    if not garbage:
        return
    t0 = time.perf_counter()
    del g
    drop = time.perf_counter() - t0
    c0, t0 = time.process_time(), time.perf_counter()
    found = gc.collect()
    tg = time.perf_counter() - t0
    cg = time.process_time() - c0
    emit("gc-full-garbage", "full collection freeing a dropped graph", 1, tg, n=n, found=found,
         drop_ms=drop * 1e3, ms=tg * 1e3, ns_per_object=tg * 1e9 / found if found else 0,
         cpu_ns_per_object=cg * 1e9 / found if found else 0, ns_per_graph_object=tg * 1e9 / (n + 1))


def young(old, ny, reps, fixed=False):
    gc.disable()
    g = build(old)
    gc.collect()
    gc.collect()
    ts, cpu, found = [], [], 0
    x = 7
    span = 1000 if fixed and old > 1000 else old
    for k in range(-3, reps):
        y = []
        for i in range(ny):
            x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
            z = Node()
            z.a = g[x % span]
            z.b = g[(x >> 32) % span]
            y.append(z)
        c0, t0 = time.process_time(), time.perf_counter()
        f = gc.collect(0)
        d = time.perf_counter() - t0
        c = time.process_time() - c0
        if k >= 0:
            ts.append(d)
            cpu.append(c)
            found += f
        del y
    med = median(ts)
    emit("gc-young", "collection of generation 0", reps, med, old=old, young=ny, refs_span=span, median_us=med * 1e6,
         cpu_median_us=median(cpu) * 1e6, max_us=max(ts) * 1e6, ns_per_young_object=med * 1e9 / (ny + 1),
         found=found)
    del g


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["full", "young"])
    ap.add_argument("-n", type=float, default=1e6)
    ap.add_argument("--old", type=float, default=1e5)
    ap.add_argument("--young", type=int, default=2000)
    ap.add_argument("--reps", "-r", type=int)
    ap.add_argument("--refs", choices=["random", "fixed"], default="random",
                    help="young: old nodes pointed at anywhere (random) or among the first 1000 (fixed)")
    ap.add_argument("--no-garbage", action="store_true", help="full: skip the dropped-graph collection")
    a = ap.parse_args()
    if a.mode == "full":
        full(int(a.n), a.reps or 5, not a.no_garbage)
    else:
        young(int(a.old), a.young, a.reps or 50, a.refs == "fixed")


if __name__ == "__main__":
    main()
