"""trace_py.py — the CPython anchor of bench/trace_cost.sh: an object
workload like ftm-bench-runtime's (lists of ints, dicts of str keys,
tuples) timed with tracemalloc off, start(1) and start(16).

    python3 bench/trace_py.py off|full1|full16
Prints one JSON line: ops_per_cpu_s of the best of 5 rounds (thread CPU
time, which other load on the machine moves least).
"""
import json
import sys
import time
import tracemalloc

N = 200_000


def work():
    lst = [i * 3 + 1000 for i in range(N)]  # ints above the small-int cache
    d = {}
    for i in range(N // 4):
        d["k%d" % i] = i
    tups = [(x, x, x) for x in lst[: N // 2]]
    total = sum(lst) + len(d) + len(tups)
    del lst, d, tups
    return total


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "off"
    if mode == "full1":
        tracemalloc.start(1)
    elif mode == "full16":
        tracemalloc.start(16)
    elif mode != "off":
        sys.exit("usage: trace_py.py off|full1|full16")
    ops = N + N // 4 + N // 2
    best = 0.0
    for _ in range(5):
        t0 = time.thread_time()
        work()
        dt = time.thread_time() - t0
        best = max(best, ops / dt)
    print(json.dumps({"workload": "python objects", "mode": mode, "ops_per_cpu_s": best, "errors": 0}))


main()
