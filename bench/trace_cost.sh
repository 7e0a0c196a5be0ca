#!/usr/bin/env bash
# trace_cost.sh — what allocation tracing (ftmem/trace.h) costs, side by
# side in one run (interleaved, so machine load hits every mode alike):
#
#   notrace   a build without tracing support (FTMEM_TRACE_SUPPORT=OFF)
#   off       the normal build, tracing off        target: within 1% of notrace
#   sample    FTMEM_TRACE=1 FTMEM_TRACE_SAMPLE=524288 (tcmalloc's default
#             rate, 512 KiB)                        target: within 3% of notrace
#   full1     FTMEM_TRACE=1   (every block, 1 frame)
#   full16    FTMEM_TRACE=16  (every block, 16 frames)
#
# on the allocator workloads of ftm-bench (malloc through LD_PRELOAD) and
# the example runtime's (ftm-bench-runtime: objects through ftm_new), and
# beside it CPython's own tracemalloc on a comparable Python workload
# (bench/trace_py.py: off, start(1), start(16)) as the anchor.
#
#   bench/trace_cost.sh [--reps N] [--ms MS]
# Writes bench/results/trace_cost.txt and .json.  Ratios are throughput
# relative to notrace (CPython: relative to tracemalloc off); the runtime
# workloads use ops per CPU second of their best round, which other load
# on the machine moves least.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

reps=5
ms=500
while [ $# -gt 0 ]; do
  case $1 in
    --reps) reps=$2; shift 2 ;;
    --ms) ms=$2; shift 2 ;;
    *) echo "usage: $0 [--reps N] [--ms MS]" >&2; exit 2 ;;
  esac
done

common=(-DCMAKE_BUILD_TYPE=Release -DFTMEM_BUILD_TESTS=OFF -DFTMEM_BUILD_STRESS=OFF -DFTMEM_BUILD_BENCH=ON
        -DFTMEM_SECURE=OFF -DFTMEM_DEBUG=OFF -DFTMEM_SANITIZE= -DFTMEM_TRACK=)
cmake -S . -B build/trace-on "${common[@]}" -DFTMEM_TRACE_SUPPORT=ON >/dev/null
cmake -S . -B build/trace-none "${common[@]}" -DFTMEM_TRACE_SUPPORT=OFF >/dev/null
for d in build/trace-on build/trace-none; do
  cmake --build "$d" -j2 --target ftmem ftm-bench ftm-bench-runtime >/dev/null
done

raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
modes=(notrace off sample full1 full16)
env_of() {
  case $1 in
    sample) echo "FTMEM_TRACE=1 FTMEM_TRACE_SAMPLE=524288" ;;
    full1) echo "FTMEM_TRACE=1" ;;
    full16) echo "FTMEM_TRACE=16" ;;
    *) echo "" ;;
  esac
}
dir_of() { [ "$1" = notrace ] && echo build/trace-none || echo build/trace-on; }

alloc_cfgs=("churn -t 1" "churn -t 2" "xthread -t 2" "sizemix -t 1" "frag -t 1")
rt_cfgs=("list" "dict" "tuples")

for ((r = 0; r < reps; r++)); do
  # rotate the order of the modes from one repetition to the next
  order=("${modes[@]:r % 5}" "${modes[@]:0:r % 5}")
  for c in "${alloc_cfgs[@]}"; do
    for m in "${order[@]}"; do
      d=$(dir_of "$m")
      # shellcheck disable=SC2046,SC2086 # env and config are words
      line=$(env $(env_of "$m") LD_PRELOAD=$(realpath "$d/libftmem.so") "$d/bench/ftm-bench" $c -d "$ms" | tail -n 1)
      echo "$m|alloc $c|$line" >>"$raw"
    done
  done
  for c in "${rt_cfgs[@]}"; do
    for m in "${order[@]}"; do
      d=$(dir_of "$m")
      # shellcheck disable=SC2046 # env is words
      line=$(env $(env_of "$m") "$d/bench/ftm-bench-runtime" "$c" | tail -n 1)
      echo "$m|rt $c|$line" >>"$raw"
    done
  done
  for m in off full1 full16; do
    line=$(python3 bench/trace_py.py "$m")
    echo "py-$m|python objects|$line" >>"$raw"
  done
done

python3 - "$raw" "$reps" <<'PY'
import json, math, statistics, sys, os, subprocess, datetime
raw, reps = sys.argv[1], int(sys.argv[2])
runs = {}
for line in open(raw):
    mode, cfg, js = line.rstrip("\n").split("|", 2)
    d = json.loads(js)
    if d.get("errors"):
        sys.exit(f"trace_cost: {mode} {cfg}: {d['errors']} errors")
    v = d.get("ops_per_cpu_s") or d["ops_per_s"]
    runs.setdefault(cfg, {}).setdefault(mode, []).append(v)
load = os.getloadavg()[0]
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
out = [f"Tracing cost — {datetime.datetime.now().isoformat(timespec='seconds')}, ftmem {rev}",
       f"2 cores; {reps} reps interleaved, median; 1-min loadavg at the end {load:.2f}",
       "throughput relative to a build without tracing support (CPython: to tracemalloc off);",
       "alloc = ftm-bench malloc+free via LD_PRELOAD (ops/s), rt = example runtime objects (ops per CPU s)", "",
       f"{'workload':<22}{'notrace':>11}{'off':>8}{'sample':>8}{'full1':>8}{'full16':>8}"]
res = {}
cols = ["off", "sample", "full1", "full16"]
geo = {c: [] for c in cols}
for cfg, v in runs.items():
    if cfg.startswith("python"):
        continue
    base = statistics.median(v["notrace"])
    row = {c: statistics.median(v[c]) / base for c in cols}
    res[cfg] = {"notrace": base, **row}
    for c in cols:
        geo[c].append(row[c])
    out.append(f"{cfg:<22}{base:>11.3g}" + "".join(f"{row[c]:>8.3f}" for c in cols))
g = {c: math.exp(sum(map(math.log, geo[c])) / len(geo[c])) for c in cols}
out.append(f"{'geomean':<22}{'':>11}" + "".join(f"{g[c]:>8.3f}" for c in cols))
py = runs.get("python objects")
if py:
    base = statistics.median(py["py-off"])
    p1, p16 = statistics.median(py["py-full1"]) / base, statistics.median(py["py-full16"]) / base
    res["python"] = {"off": base, "full1": p1, "full16": p16}
    out += ["", f"CPython {sys.version.split()[0]} tracemalloc (bench/trace_py.py, objects/s relative to off):",
            f"{'python objects':<22}{base:>11.3g}{1.0:>8.3f}{'-':>8}{p1:>8.3f}{p16:>8.3f}"]
out += ["", f"targets: off >= 0.99 ({'met' if g['off'] >= 0.99 else 'MISSED'}: {g['off']:.3f}); "
        f"sample >= 0.97 ({'met' if g['sample'] >= 0.97 else 'MISSED'}: {g['sample']:.3f})"]
text = "\n".join(out) + "\n"
print(text, end="")
os.makedirs("bench/results", exist_ok=True)
open("bench/results/trace_cost.txt", "w").write(text)
json.dump({"geomean": g, "load": load, "rev": rev, "workloads": res}, open("bench/results/trace_cost.json", "w"), indent=1)
PY
