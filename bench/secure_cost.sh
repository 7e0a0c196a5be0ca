#!/usr/bin/env bash
# secure_cost.sh — what FTMEM_SECURE costs: the allocator workloads of
# ftm-bench under the plain and the secure libftmem.so, side by side in one
# run (interleaved, so machine load hits both alike), as throughput ratios.
# Target (issue 6): secure >= 0.90x plain (at most 10% slower).
#
#   bench/secure_cost.sh [--reps N] [--ms MS]
# Writes bench/results/secure_cost.txt and .json.  Needs the Release build
# in build/ (bench/run.sh makes it) and builds build/secure (FTMEM_SECURE=ON).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

reps=3
ms=1000
while [ $# -gt 0 ]; do
  case $1 in
    --reps) reps=$2; shift 2 ;;
    --ms) ms=$2; shift 2 ;;
    *) echo "usage: $0 [--reps N] [--ms MS]" >&2; exit 2 ;;
  esac
done

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j2 --target ftmem ftm-bench >/dev/null
cmake -S . -B build/secure -DCMAKE_BUILD_TYPE=Release -DFTMEM_SECURE=ON -DFTMEM_BUILD_TESTS=OFF \
  -DFTMEM_BUILD_STRESS=OFF -DFTMEM_BUILD_BENCH=OFF >/dev/null
cmake --build build/secure -j2 --target ftmem >/dev/null

plain=$(realpath build/libftmem.so)
secure=$(realpath build/secure/libftmem.so)
bench=build/bench/ftm-bench
configs=("churn -t 1" "churn -t 2" "xthread -t 2" "fs-active -t 2" "thread-churn -t 2" "frag -t 1"
         "sizemix -t 1" "sizemix -t 2" "large -t 1")
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT

for ((r = 0; r < reps; r++)); do
  for c in "${configs[@]}"; do
    # alternate which build runs first
    if (( r % 2 == 0 )); then order=("plain:$plain" "secure:$secure"); else order=("secure:$secure" "plain:$plain"); fi
    for o in "${order[@]}"; do
      name=${o%%:*} lib=${o#*:}
      # shellcheck disable=SC2086 # the config is words
      line=$(LD_PRELOAD=$lib $bench $c -d "$ms" | tail -n 1)
      echo "$name|$c|$line" >>"$raw"
    done
  done
done

python3 - "$raw" "$reps" <<'EOF'
import json, math, statistics, sys, os, subprocess, datetime
raw, reps = sys.argv[1], int(sys.argv[2])
runs = {}
for line in open(raw):
    name, cfg, js = line.rstrip("\n").split("|", 2)
    d = json.loads(js)
    if d.get("errors"):
        sys.exit(f"secure_cost: {name} {cfg}: {d['errors']} corrupted blocks")
    runs.setdefault(cfg, {}).setdefault(name, []).append(d["ops_per_s"])
load = os.getloadavg()[0]
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
out = [f"FTMEM_SECURE cost — {datetime.datetime.now().isoformat(timespec='seconds')}, ftmem {rev}",
       f"2 cores; {reps} reps interleaved, median; 1-min loadavg at the end {load:.2f}",
       "secure = encoded free lists, double-free marks, a guard page per pool, shuffled carving", "",
       f"{'workload':<20}{'plain op/s':>14}{'secure op/s':>14}{'secure/plain':>14}"]
ratios = []
res = {}
for cfg, v in runs.items():
    p, s = statistics.median(v["plain"]), statistics.median(v["secure"])
    ratios.append(s / p)
    res[cfg] = {"plain": p, "secure": s, "ratio": s / p}
    out.append(f"{cfg:<20}{p:>14.3g}{s:>14.3g}{s / p:>14.3f}")
g = math.exp(sum(map(math.log, ratios)) / len(ratios))
out += ["", f"geomean secure/plain = {g:.3f}  (target >= 0.90: {'met' if g >= 0.9 else 'MISSED'}); "
        f"worst {min(ratios):.3f}"]
text = "\n".join(out) + "\n"
print(text, end="")
open("bench/results/secure_cost.txt", "w").write(text)
json.dump({"geomean": g, "load": load, "rev": rev, "workloads": res}, open("bench/results/secure_cost.json", "w"), indent=1)
EOF
