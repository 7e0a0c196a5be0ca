#!/usr/bin/env python3
"""runtime_py.py — the workloads of ftm-bench-runtime (bench/runtime.c) in CPython.

    runtime_py.py list|dict|tuples [-n N] [--quick]
    runtime_py.py shared [-d MS] [-n CAP] [--quick]

The same operations in the same order as runtime.c, written as plain Python
(what a program on CPython would do), timed in-process with
time.perf_counter: the one-thread workloads run ROUNDS times and report the
best round with the median beside it, and the rate per second of thread CPU
time (time.thread_time) in the best round as ops_per_cpu_s.  Prints one JSON line per workload in
ftm-bench's format (workload, threads, unit, ops, seconds, ops_per_s,
checksum, errors, maxrss_kib, extras); the checksums of the fixed-work
workloads equal runtime.c's.  Standard library only.
"""
import argparse
import json
import os
import resource
import sys
import sysconfig
import threading
import time

ROUNDS = 5
SCATTER = 2654435761
DICT_PROBES = 10


def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def emit(workload, threads, unit, ops, seconds, checksum, errors, **extra):
    d = {"workload": workload, "threads": threads, "unit": unit, "ops": ops,
         "seconds": round(seconds, 6), "ops_per_s": ops / seconds if seconds > 0 else 0,
         "checksum": "0x%016x" % (checksum & 0xFFFFFFFFFFFFFFFF), "errors": errors,
         "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
         "python": sys.version.split()[0],
         "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED"))}
    d.update(extra)
    print(json.dumps(d), flush=True)
    return 3 if errors else 0


def best(v):
    return min(v)


def median(v):
    return sorted(v)[len(v) // 2]


def wl_list(n):
    build, sum_t, drop, total, cpu = [], [], [], [], []
    rss0 = rss_kib()
    errors = 0
    s = 0
    for _ in range(ROUNDS):
        c0, t0 = time.thread_time(), time.perf_counter()
        l = []
        for i in range(n):
            l.append(i)
        t1 = time.perf_counter()
        s = 0
        for i in range(n):
            s += l[i]
        t2 = time.perf_counter()
        del l
        t3 = time.perf_counter()
        cpu.append(time.thread_time() - c0)
        build.append(t1 - t0)
        sum_t.append(t2 - t1)
        drop.append(t3 - t2)
        total.append(t3 - t0)
        errors += s != n * (n - 1) // 2
    return emit("rt-list", 1, "int appended + read back by index + dropped", n, best(total), s, errors,
                n=n, build_ns_per_item=best(build) * 1e9 / n, sum_ns_per_item=best(sum_t) * 1e9 / n,
                drop_ns_per_item=best(drop) * 1e9 / n, median_round_s=median(total), rss_start_kib=rss0,
                ops_per_cpu_s=n / best(cpu))


def wl_dict(n):
    m = n * DICT_PROBES
    kt, st, gt, dt, total, cpu = [], [], [], [], [], []
    rss0 = rss_kib()
    errors = 0
    s = 0
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        keys = [f"key{i}" for i in range(n)]
        probes = [keys[(j * SCATTER) % n] for j in range(m)]  # untimed, as in runtime.c
        c1, t1 = time.thread_time(), time.perf_counter()
        d = {}
        for i in range(n):
            d[keys[i]] = i
        t2 = time.perf_counter()
        s = 0
        for k in probes:
            s += d[k]
        t3 = time.perf_counter()
        cpu.append(time.thread_time() - c1)
        errors += len(d) != n
        del d, keys, probes
        t4 = time.perf_counter()
        # key creation is timed with the probe list here: reported apart, never in the total
        kt.append(t1 - t0)
        st.append(t2 - t1)
        gt.append(t3 - t2)
        dt.append(t4 - t3)
        total.append(t3 - t1)
    want = sum((j * SCATTER) % n for j in range(m))
    errors += s != want
    return emit("rt-dict", 1, "dict set or lookup (str key -> int)", n + m, best(total), s, errors,
                n=n, lookups=m, set_ns=best(st) * 1e9 / n, get_ns=best(gt) * 1e9 / m,
                key_create_ns=best(kt) * 1e9 / n, drop_ns_per_key=best(dt) * 1e9 / n,
                median_round_s=median(total), rss_start_kib=rss0, ops_per_cpu_s=(n + m) / best(cpu))


def wl_tuples(n):
    a, b, c = 1, "x", 1000000
    total, cpu = [], []
    rss0 = rss_kib()
    for _ in range(ROUNDS):
        c0, t0 = time.thread_time(), time.perf_counter()
        for _i in range(n):
            t = (a, b, c)
        total.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        del t
    errors = sys.getrefcount(c) > 100  # sanity: no tuple kept c alive
    return emit("rt-tuples", 1, "3-tuple made and dropped", n, best(total), n, int(errors),
                n=n, ns_per_tuple=best(total) * 1e9 / n, median_round_s=median(total), rss_start_kib=rss0,
                ops_per_cpu_s=n / best(cpu))


def wl_shared(duration_ms, cap):
    l = list(range(cap // 2))  # untimed prefill
    rss0 = rss_kib()
    stop = False
    start = threading.Barrier(4)
    res = [dict(ops=0, pops=0, misses=0, errors=0, sum=0, t0=0.0, t1=0.0) for _ in range(3)]

    def appender(r):
        start.wait()
        r["t0"] = time.perf_counter()
        ops = pops = 0
        while not stop:
            for _ in range(256):
                n = len(l)
                if n >= cap:
                    while len(l) > cap // 2:
                        l.pop()
                        pops += 1
                else:
                    l.append(n)  # item i always holds i
                    ops += 1
        r.update(ops=ops, pops=pops, t1=time.perf_counter())

    def reader(r, ident):
        start.wait()
        r["t0"] = time.perf_counter()
        k = ident * 12345
        ops = misses = errors = s = 0
        while not stop:
            for _ in range(256):
                n = len(l)
                k += 1
                i = (k * SCATTER) % n
                try:
                    v = l[i]
                except IndexError:  # popped between len and get
                    misses += 1
                    continue
                if v != i:
                    errors += 1
                s += v
                ops += 1
        r.update(ops=ops, misses=misses, errors=errors, sum=s, t1=time.perf_counter())

    th = [threading.Thread(target=appender, args=(res[0],))]
    th += [threading.Thread(target=reader, args=(res[i], i)) for i in (1, 2)]
    for t in th:
        t.start()
    start.wait()
    time.sleep(duration_ms / 1000.0)
    stop = True
    for t in th:
        t.join()
    t0 = min(r["t0"] for r in res)
    t1 = max(r["t1"] for r in res)
    reads = res[1]["ops"] + res[2]["ops"]
    rates = [r["ops"] / (r["t1"] - r["t0"]) for r in res]
    return emit("rt-shared-list", 3, "lock-free get (2 reader threads), 1 thread appending", reads, t1 - t0,
                res[1]["sum"] + res[2]["sum"], res[1]["errors"] + res[2]["errors"],
                readers=2, reader_min_ops_per_s=min(rates[1:]), appends=res[0]["ops"],
                append_ops_per_s=rates[0], pops=res[0]["pops"], misses=res[1]["misses"] + res[2]["misses"],
                cap=cap, final_len=len(l), cores=os.cpu_count(), oversubscribed=int(3 > os.cpu_count()),
                rss_start_kib=rss0, switch_interval_s=sys.getswitchinterval())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["list", "dict", "tuples", "shared"])
    ap.add_argument("-n", type=int, default=0)
    ap.add_argument("-d", type=int, default=0, help="time box of `shared`, ms")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    div = 10 if a.quick else 1
    dur = a.d or (200 if a.quick else 1000)
    if a.mode == "list":
        return wl_list(a.n or 1000000 // div)
    if a.mode == "dict":
        return wl_dict(a.n or 100000 // div)
    if a.mode == "tuples":
        return wl_tuples(a.n or 10000000 // div)
    return wl_shared(dur, a.n or 1000000 // div)


if __name__ == "__main__":
    sys.exit(main())
