#!/usr/bin/env bash
# bench/realprog.sh — the real programs of tests/realprog (Python's own
# tests, sqlite3, git, gcc, memcached) on glibc, jemalloc, mimalloc and
# ftmem, by LD_PRELOAD, at a somewhat larger size than the tests: wall time
# and peak RSS, median of 3 repetitions, ratios to glibc.  Writes
# bench/results/realprog.{txt,json}.
#
# What is measured, per program (tests/realprog/realprog.sh `run`):
#   python     wall of `python3 -m test -j2 ...` (PYTHONMALLOC=malloc); peak
#              RSS of its largest process (the runner or a worker)
#   sqlite     wall and peak RSS of one sqlite3 loading the generated
#              database, running queries.sql (joins, windows, vacuum) and .dump
#   git        wall summed over every git process of git_work.py (commits,
#              merges, log/diff/blame, gc, repack -f); the largest git's peak RSS
#   gcc        wall of `gcc -O2 -c` on the generated C file (gcc, cc1, as);
#              peak RSS of cc1
#   memcached  the client's wall time for a fixed number of checked ops
#              (throughput = ops / wall); the server's peak RSS (VmHWM)
# Every run's output is compared with the first glibc run's: a difference
# is reported in the table ("DIFF") instead of being timed silently.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/realprog.sh [options]
  --reps N            repetitions (median reported; default 3)
  --scale S           workload size (default 2; the ctest suite uses 1)
  --only LIST         comma-separated subset of: python,sqlite,git,gcc,memcached
  --allocators LIST   comma-separated subset of: glibc,jemalloc,mimalloc,ftmem
  --build-dir DIR     where libftmem.so is (built there if missing; default build)
  --ftmem-so PATH     this libftmem.so instead
  --out DIR           where realprog.{txt,json} go (default bench/results)
  --no-install        never call apt-get
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
rp="$root/tests/realprog/realprog.sh"
reps=3 scale=2 only="python,sqlite,git,gcc,memcached" allocs="glibc,jemalloc,mimalloc,ftmem"
build_dir="$root/build" ftmem_so="" out_dir="$here/results" do_install=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --reps) reps=$2; shift ;;
    --scale) scale=$2; shift ;;
    --only) only=$2; shift ;;
    --allocators) allocs=$2; shift ;;
    --build-dir) build_dir=$(realpath -m "$2"); shift ;;
    --ftmem-so) ftmem_so=$(realpath -m "$2"); shift ;;
    --out) out_dir=$(realpath -m "$2"); shift ;;
    --no-install) do_install=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "realprog.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[[ $reps =~ ^[1-9][0-9]*$ ]] || { echo "realprog.sh: --reps must be a positive integer" >&2; exit 2; }
IFS=, read -r -a progs <<<"$only"
IFS=, read -r -a alloc_list <<<"$allocs"
for p in "${progs[@]}"; do
  case $p in python | sqlite | git | gcc | memcached) ;; *) echo "realprog.sh: unknown program '$p'" >&2; exit 2 ;; esac
done
for a in "${alloc_list[@]}"; do
  case $a in glibc | jemalloc | mimalloc | ftmem) ;; *) echo "realprog.sh: unknown allocator '$a'" >&2; exit 2 ;; esac
done
log() { printf '[realprog.sh] %s\n' "$*" >&2; }

# ---- Packages ------------------------------------------------------------------
need=(time libjemalloc2 libmimalloc2.0 python3 libpython3.11-testsuite sqlite3 git memcached gcc binutils)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  [[ $do_install == 1 ]] || { log "missing packages (and --no-install): ${missing[*]}"; exit 2; }
  sudo=""
  [[ $(id -u) == 0 ]] || sudo="sudo"
  log "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- Allocators ------------------------------------------------------------------
deb_so() { dpkg -L "$1" 2>/dev/null | grep -E "/$2\$" | head -1; }
deb_ver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }
if [[ -z $ftmem_so && " ${alloc_list[*]} " == *" ftmem "* ]]; then
  ftmem_so="$build_dir/libftmem.so"
  if [[ ! -f $ftmem_so ]]; then
    log "building libftmem.so (Release) in $build_dir"
    [[ -f $build_dir/CMakeCache.txt ]] || cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$build_dir" -j2 --target ftmem >/dev/null
  fi
fi
declare -A so ver
for a in "${alloc_list[@]}"; do
  case $a in
    glibc) so[$a]=""; ver[$a]=$(deb_ver libc6) ;;
    jemalloc) so[$a]=$(deb_so libjemalloc2 'libjemalloc\.so\.2'); ver[$a]=$(deb_ver libjemalloc2) ;;
    mimalloc) so[$a]=$(deb_so libmimalloc2.0 'libmimalloc\.so\.2'); ver[$a]=$(deb_ver libmimalloc2.0) ;;
    ftmem)
      so[$a]=$ftmem_so
      ver[$a]="git $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo none)"
      [[ -z $(git -C "$root" status --porcelain -- src include lockfree 2>/dev/null || true) ]] || ver[$a]+="+dirty"
      ;;
  esac
  if [[ $a != glibc && ! -f ${so[$a]} ]]; then log "$a: library not found (${so[$a]:-?})"; exit 1; fi
done

# a run is killed as hung only after this long (the tests' limits are tighter)
export RP_TIMEOUT=${RP_TIMEOUT:-1500}

# ---- Inputs, built once ------------------------------------------------------------
stamp=$(date +%Y%m%d-%H%M%S)
work="${TMPDIR:-/tmp}/realprog-bench-$stamp"
mkdir -p "$work" "$out_dir"
trap 'rm -rf "$work"' EXIT
for p in "${progs[@]}"; do
  log "preparing $p (scale $scale)"
  bash "$rp" prepare "$p" "$work/in-$p" "$scale"
done

# ---- Runs ----------------------------------------------------------------------------
manifest="$work/manifest.tsv"
: >"$manifest"
: >"$manifest.raw"
nalloc=${#alloc_list[@]}
t0=$(date +%s)
for ((rep = 1; rep <= reps; rep++)); do
  for pi in "${!progs[@]}"; do
    p=${progs[$pi]}
    # rotate the allocator order so none always runs first
    off=$(((rep - 1 + pi) % nalloc))
    for ((k = 0; k < nalloc; k++)); do
      a=${alloc_list[$(((k + off) % nalloc))]}
      o="$work/out-$p-$a-$rep"
      load=$(cut -d' ' -f1 /proc/loadavg)
      set +e
      bash "$rp" run "$p" "$work/in-$p" "$o" "${so[$a]}" >/dev/null 2>&1
      rc=$?
      set -e
      wall="" rss="" ops=""
      [[ -f $o/time ]] && read -r wall rss <"$o/time" || true
      [[ -f $o/ops ]] && ops=$(cat "$o/ops")
      cp "$o/result" "$work/result-$p-$a-$rep" 2>/dev/null || : >"$work/result-$p-$a-$rep"
      [[ $rc == 0 ]] || log "FAIL $p $a rep $rep: exit $rc: $(tail -c 300 "$o/stderr" 2>/dev/null | tr '\n' ' ')"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$a" "$rep" "$rc" "${wall:--}" "${rss:--}" "${ops:--}" "$load" >>"$manifest.raw"
      log "$p $a rep $rep: ${wall:-?} s, ${rss:-?} KiB (exit $rc, load $load)"
      rm -rf "$o"
    done
  done
done
log "runs took $(($(date +%s) - t0)) s"

# every output must equal glibc's (its first successful run)
while IFS=$'\t' read -r p a rep rc wall rss ops load; do
  gold=""
  for ((r = 1; r <= reps; r++)); do
    if grep -qP "^$p\tglibc\t$r\t0\t" "$manifest.raw"; then gold="$work/result-$p-glibc-$r"; break; fi
  done
  same=1
  if [[ -n $gold ]] && ! cmp -s "$gold" "$work/result-$p-$a-$rep"; then
    same=0
    log "DIFF $p $a rep $rep: output differs from glibc's"
    diff "$gold" "$work/result-$p-$a-$rep" | head -10 >&2 || true
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$a" "$rep" "$rc" "$wall" "$rss" "$ops" "$same" "$load" >>"$manifest"
done <"$manifest.raw"

{
  printf 'name\tso\tversion\n'
  for a in "${alloc_list[@]}"; do printf '%s\t%s\t%s\n' "$a" "${so[$a]}" "${ver[$a]}"; done
} >"$work/allocators.tsv"

/usr/bin/python3 - "$manifest" "$work/allocators.tsv" "$out_dir" "$reps" "$scale" <<'EOF'
import json, math, os, platform, statistics, sys, time
manifest, allocs_tsv, out_dir, reps, scale = sys.argv[1:6]
rows = []
for line in open(manifest):
    p, a, rep, rc, wall, rss, ops, same, load = [None if x == "-" else x for x in line.rstrip("\n").split("\t")]
    rows.append(dict(program=p, allocator=a, rep=int(rep), rc=int(rc),
                     wall_s=float(wall) if wall else None, maxrss_kib=int(rss) if rss else None,
                     ops=int(ops) if ops else None, same_output=same == "1", load1=float(load)))
allocs = [l.split("\t") for l in open(allocs_tsv).read().splitlines()[1:]]
order = [a[0] for a in allocs]
progs = []
for r in rows:
    if r["program"] not in progs:
        progs.append(r["program"])

def med(xs):
    return statistics.median(xs) if xs else None

summary = {}
for p in progs:
    for a in order:
        rs = [r for r in rows if r["program"] == p and r["allocator"] == a]
        good = [r for r in rs if r["rc"] == 0 and r["same_output"] and r["wall_s"] is not None]
        s = dict(runs=len(rs), ok=len(good),
                 wall_s=med([r["wall_s"] for r in good]),
                 maxrss_kib=med([r["maxrss_kib"] for r in good if r["maxrss_kib"]]),
                 failures=[dict(rep=r["rep"], rc=r["rc"], same_output=r["same_output"]) for r in rs if r not in good])
        if p == "memcached" and good and s["wall_s"]:
            s["ops_per_s"] = med([r["ops"] / r["wall_s"] for r in good if r["ops"] and r["wall_s"]])
        summary.setdefault(p, {})[a] = s
for p in progs:
    g = summary[p].get("glibc", {})
    for a in order:
        s = summary[p][a]
        if g.get("wall_s") and s.get("wall_s"):
            s["wall_ratio"] = s["wall_s"] / g["wall_s"]
        if g.get("maxrss_kib") and s.get("maxrss_kib"):
            s["rss_ratio"] = s["maxrss_kib"] / g["maxrss_kib"]

lines = []
w = lines.append
w("Real programs under LD_PRELOAD (bench/realprog.sh): median of %s repetitions, scale %s" % (reps, scale))
w("%s; %d cores; %s" % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.cpu_count(), platform.platform()))
w("allocators: " + "; ".join("%s %s" % (a[0], a[2]) for a in allocs))
loads = [r["load1"] for r in rows]
w("load average (1 min) before the runs: median %.2f, max %.2f%s" % (
    statistics.median(loads), max(loads),
    "  -- the machine was busy with other work: treat differences below ~20% as noise" if max(loads) > 1.5 else ""))
w("")
w("time: wall seconds (memcached: client wall for a fixed op count, and ops/s); RSS: peak, MiB")
w("ratios: allocator / glibc (lower is better)")
w("")
hdr = "%-10s %-9s %9s %7s %9s %7s %11s  %s" % ("program", "allocator", "time_s", "x_glibc", "rss_MiB", "x_glibc", "ops/s", "runs ok")
w(hdr)
w("-" * len(hdr))
for p in progs:
    for a in order:
        s = summary[p][a]
        def f(x, fmt):
            return fmt % x if x is not None else "-"
        w("%-10s %-9s %9s %7s %9s %7s %11s  %d/%d%s" % (
            p, a, f(s["wall_s"], "%.2f"), f(s.get("wall_ratio"), "%.2f"),
            f(s["maxrss_kib"] / 1024 if s["maxrss_kib"] else None, "%.1f"), f(s.get("rss_ratio"), "%.2f"),
            f(s.get("ops_per_s"), "%.0f"), s["ok"], s["runs"],
            "  FAILED: " + ", ".join("rep %d exit %d%s" % (x["rep"], x["rc"], "" if x["same_output"] else " DIFF")
                                     for x in s["failures"]) if s["failures"] else ""))
    w("")
# geometric means of the ratios over the programs
w("geometric mean over the programs (time ratio, RSS ratio):")
for a in order:
    tr = [summary[p][a].get("wall_ratio") for p in progs]
    rr = [summary[p][a].get("rss_ratio") for p in progs]
    tr = [x for x in tr if x]
    rr = [x for x in rr if x]
    gm = lambda xs: math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None
    w("  %-9s time %s  rss %s" % (a, "%.3f" % gm(tr) if tr else "-", "%.3f" % gm(rr) if rr else "-"))
txt = "\n".join(lines) + "\n"
open(os.path.join(out_dir, "realprog.txt"), "w").write(txt)
json.dump(dict(generated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), reps=int(reps), scale=float(scale),
               machine=dict(cores=os.cpu_count(), platform=platform.platform()),
               allocators=[dict(name=a[0], so=a[1], version=a[2]) for a in allocs],
               measures={"python": "wall of the regrtest run; peak RSS of its largest process",
                         "sqlite": "wall and peak RSS of one sqlite3 process",
                         "git": "wall summed over git processes; largest git peak RSS",
                         "gcc": "wall of gcc -O2 -c; peak RSS of cc1",
                         "memcached": "client wall for a fixed op count (ops_per_s); server VmHWM"},
               summary=summary, runs=rows),
          open(os.path.join(out_dir, "realprog.json"), "w"), indent=1)
sys.stdout.write(txt)
EOF
