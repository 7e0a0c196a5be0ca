#!/usr/bin/env bash
# bench/run_gc.sh — the cycle collector's benchmarks, ftmem beside CPython's
# gc and the Boehm GC, side by side in one run; writes the table
# bench/results/gc.txt and gc.json (medians over repetitions, ratios per
# repetition, targets, load average, versions).
#
#   pause       a mutator thread timing every operation (load/store/new on a
#               graph of N live tracked objects) while another thread runs
#               full collections in a loop (ftm-bench-gc-pause: ftmem,
#               ftm-bench-gc-pause-boehm: GC_gcollect), against the same
#               mutator with no collection; ftmem also with its background
#               collector thread (FTMEM_GC_THREADS=1, automatic collections).
#               CPython: gc.collect() on the same graph (gc_py.py full) — with
#               the GIL held throughout, the whole collection is the pause.
#               N = 1M and 10M (the largest that fits in memory: checked).
#   full        full collection of a live graph, ns per object, ftmem
#               (ftm-bench-gc full) vs CPython (gc_py.py full, same shape);
#               and freeing the same graph once dropped (all cyclic garbage)
#   young       ftm_gc_collect(0) with 2000 young objects as the old heap
#               grows 10x (100k -> 1M); CPython's gc.collect(0) beside it
#   binarytrees the Benchmarks Game program; gcbench: Ellis/Kovac/Boehm's
#               GCBench — each on ftmem objects (acyclic; untracked: no
#               collector; cyclic: parent pointers, all garbage cyclic;
#               cyclic with FTMEM_GC_THREADS=1), the Boehm GC (acyclic,
#               cyclic) and malloc/free (acyclic); one process per run, so
#               ru_maxrss is that run's peak RSS
#
# Repetitions: every measurement once per repetition, peers back to back
# (which goes first alternates by repetition); figures are medians over
# repetitions, ratios medians of per-repetition ratios.  The 1-minute load
# average is recorded before every run (the machine may be shared).
# Single-threaded rows use one core; pause rows two threads (mutator +
# collector) — the report says which.  Nothing is asserted: a missed target
# is reported, never fails the run; a crash, hang (timeout) or wrong check
# is reported as such.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/run_gc.sh [options]       (about 4-5 min on 2 cores; FULL=1 about 20 min)
  --quick              smoke: 1 repetition, 1M only, small trees (~1 min)
  --full               longer: 5 repetitions, 5 s mutator phases, binary-trees depth 18,
                       10M in every step, young collections up to 10M (also FULL=1)
  --reps N             repetitions (default 3; --full 5; --quick 1)
  --duration MS        each mutator phase of the pause runs (default 2000; --full 5000; --quick 500)
  --sizes LIST         live objects of the pause runs (default 1000000,10000000)
  --build-dir DIR      CMake build directory (default build)
  --out DIR            where gc.{json,txt} go (default bench/results)
  --no-install         never call apt-get
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

orig_args=("$@")
quick=0 full=${FULL:-0} reps="" duration="" sizes=""
build_dir="$root/build" out_dir="$here/results" do_install=1
[[ $full == 1 ]] || full=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1 ;;
    --full) full=1 ;;
    --reps) reps="$2"; shift ;;
    --duration) duration="$2"; shift ;;
    --sizes) sizes="$2"; shift ;;
    --build-dir) build_dir=$(realpath -m "$2"); shift ;;
    --out) out_dir=$(realpath -m "$2"); shift ;;
    --no-install) do_install=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_gc.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [[ $quick == 1 && $full == 1 ]]; then echo "run_gc.sh: --quick or --full, not both" >&2; exit 2; fi
if [[ $quick == 1 ]]; then
  reps=${reps:-1}; duration=${duration:-500}; sizes=${sizes:-1000000}
  bt_depth=14; gcb_args=(--max-depth 14); young_olds=(100000 1000000); full_sizes=(1000000)
elif [[ $full == 1 ]]; then
  reps=${reps:-5}; duration=${duration:-5000}; sizes=${sizes:-1000000,10000000}
  bt_depth=18; gcb_args=(); young_olds=(100000 1000000 10000000); full_sizes=(1000000 10000000)
else
  reps=${reps:-3}; duration=${duration:-2000}; sizes=${sizes:-1000000,10000000}
  bt_depth=16; gcb_args=(); young_olds=(100000 1000000); full_sizes=(1000000)
fi
[[ $reps =~ ^[1-9][0-9]*$ ]] || { echo "run_gc.sh: --reps must be a positive integer" >&2; exit 2; }
[[ $duration =~ ^[1-9][0-9]*$ ]] || { echo "run_gc.sh: --duration must be a positive integer (ms)" >&2; exit 2; }
IFS=, read -r -a pause_sizes <<<"$sizes"
for s in "${pause_sizes[@]}"; do
  [[ $s =~ ^[1-9][0-9]*$ ]] || { echo "run_gc.sh: --sizes: positive integers" >&2; exit 2; }
done

log() { printf '[run_gc.sh] %s\n' "$*" >&2; }

# ---- Packages ---------------------------------------------------------------
need_pkgs=(cmake make gcc pkg-config libck-dev libgc-dev coreutils python3)
missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $do_install == 0 ]]; then
    log "missing packages (and --no-install): ${missing[*]}"; exit 2
  fi
  sudo=""
  [[ $(id -u) == 0 ]] || sudo="sudo"
  log "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's python3 is the CPython measured (as run_objects.sh); the report
# needs only the standard library.
py=/usr/bin/python3
[[ -x $py ]] || py=python3

# ---- Build ------------------------------------------------------------------
stamp=$(date +%Y%m%d-%H%M%S)
raw="$build_dir/bench-raw/gc-$stamp"
mkdir -p "$raw" "$out_dir"
cache="$build_dir/CMakeCache.txt"
if [[ ! -f $cache ]] || ! grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$cache" \
   || grep -q '^FTMEM_BUILD_BENCH:BOOL=OFF$' "$cache"; then
  log "configuring Release in $build_dir"
  cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DFTMEM_BUILD_BENCH=ON \
    >"$raw/configure.log" 2>&1 || { log "configure failed:"; tail -20 "$raw/configure.log" >&2; exit 1; }
elif ! grep -q '^BDWGC_FOUND:INTERNAL=1$' "$cache"; then
  # libgc-dev was installed after the last configure: look for it again
  cmake "$build_dir" >"$raw/configure.log" 2>&1 || true
fi
bin="$build_dir/bench"
# Each program on its own, so a peer builds even when the ftmem side does not.
declare -A built
for t in ftm-bench-gc-pause ftm-bench-gc ftm-bench-binarytrees ftm-bench-gcbench \
         ftm-bench-gc-pause-boehm ftm-bench-binarytrees-boehm ftm-bench-gcbench-boehm \
         ftm-bench-binarytrees-malloc ftm-bench-gcbench-malloc; do
  if cmake --build "$build_dir" -j2 --target "$t" >"$raw/build.$t.log" 2>&1 && [[ -x $bin/$t ]]; then
    built[$t]=1
  else
    built[$t]=0
    log "build of $t failed: its rows are skipped (see $raw/build.$t.log)"
  fi
done

# ---- Sizes that fit -------------------------------------------------------------
# The most a pause run needs per live object: CPython ~56 B, ftmem ~64 B,
# Boehm ~43 B measured; 200 B leaves room for fragmentation and the
# mutator's garbage.  A size that would take more than half of the memory
# available now is replaced by the largest power of ten that fits.
avail_kib=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
size_note=""
fit=()
for s in "${pause_sizes[@]}"; do
  if (( s * 200 / 1024 > avail_kib / 2 )); then
    f=$s
    while (( f > 1000 && f * 200 / 1024 > avail_kib / 2 )); do f=$(( f / 10 )); done
    size_note+="$s live objects need ~$(( s * 200 / 1048576 )) MiB, more than half of the $(( avail_kib / 1024 )) MiB available: $f used instead. "
    log "WARNING: $s objects do not fit ($(( avail_kib / 1024 )) MiB available): using $f"
    s=$f
  fi
  fit+=("$s")
done
pause_sizes=("${fit[@]}")

# ---- Runs ---------------------------------------------------------------------
load1() { cut -d' ' -f1 /proc/loadavg; }
printf 'step\timpl\tvariant\tsize\tthreads\trep\trc\tstdout\tstderr\tload1\twall_s\n' >"$raw/manifest.tsv"
# run STEP IMPL VARIANT SIZE THREADS REP TIMEOUT_S -- command...
run() {
  local step=$1 impl=$2 variant=$3 size=$4 threads=$5 rep=$6 tmo=$7; shift 8
  local base="$raw/run.$step.$impl.$variant.$size.$rep" ld rc t0 t1
  ld=$(load1); t0=$(date +%s.%N)
  set +e
  timeout -k 5 "$tmo" "$@" >"$base.out" 2>"$base.err"
  rc=$?
  set -e
  t1=$(date +%s.%N)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$step" "$impl" "$variant" "$size" "$threads" "$rep" "$rc" \
    "$base.out" "$base.err" "$ld" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')" >>"$raw/manifest.tsv"
  [[ $rc == 0 ]] || log "FAIL $step $impl $variant $size rep $rep: exit $rc: $(tail -c 300 "$base.err" | tr '\n' ' ')"
  printf '\r[run_gc.sh] rep %d/%d  %-44s ' "$rep" "$reps" "$step $impl $variant $size" >&2
}
have() { [[ ${built[$1]:-0} == 1 ]]; }
# the ftmem rows run single-threaded unless the variant says otherwise
ftm1=(env FTMEM_GC_THREADS=0)
ftm_bg=(env FTMEM_GC_THREADS=1)

if awk -v l="$(load1)" 'BEGIN { exit !(l > 0.7) }'; then
  log "WARNING: load average $(load1) before the runs: other processes use the CPU, figures will be noisy"
fi
ncpu=$(nproc)
loadavg_start=$(cat /proc/loadavg)
log "machine: $ncpu cores, $(( avail_kib / 1024 )) MiB available; $reps reps; pause sizes ${pause_sizes[*]}, phases $duration ms"
t_start=$(date +%s)
dsec=$(( duration / 1000 + 1 ))
for ((rep = 1; rep <= reps; rep++)); do
  first=$(( rep % 2 ))
  # 1. pauses
  for n in "${pause_sizes[@]}"; do
    tmo=$(( 120 + 2 * dsec + n / 50000 ))
    # quiet (nothing else running) full collections before the mutator phases
    qr=3; (( n >= 5000000 )) && qr=1
    for side in $first $(( 1 - first )); do
      if [[ $side == 1 ]]; then
        if have ftm-bench-gc-pause; then
          run pause ftmem loop "$n" 2 "$rep" "$tmo" -- \
            "${ftm1[@]}" "$bin/ftm-bench-gc-pause" -n "$n" -d "$duration" --collector loop -s "$rep" --quiet-reps "$qr"
        fi
        if have ftm-bench-gc-pause && [[ $full == 1 || $n == "${pause_sizes[0]}" ]]; then
          run pause ftmem bg "$n" 2 "$rep" "$tmo" -- \
            "${ftm_bg[@]}" "$bin/ftm-bench-gc-pause" -n "$n" -d "$duration" --collector bg -s "$rep" --quiet-reps 1
        fi
      else
        if have ftm-bench-gc-pause-boehm; then
          run pause boehm loop "$n" 2 "$rep" "$tmo" -- \
            "$bin/ftm-bench-gc-pause-boehm" -n "$n" -d "$duration" --collector loop -s "$rep" --quiet-reps "$qr"
        fi
      fi
    done
    qr=5; (( n >= 5000000 )) && qr=3
    # the dropped-graph figure is section 2's: only at its sizes.  CPython
    # builds 10M objects in ~15 s: beyond 1M only in the first repetition
    # (every repetition with --full); its collection time varies little.
    ng=(--no-garbage); [[ " ${full_sizes[*]} " == *" $n "* ]] && ng=()
    if (( n <= 1000000 || rep == 1 || full == 1 )); then
      run pause cpython collect "$n" 1 "$rep" "$tmo" -- "$py" "$here/gc_py.py" full -n "$n" --reps "$qr" "${ng[@]+"${ng[@]}"}"
    fi
  done
  # 2. full collections per object (CPython's figures come from its pause runs
  #    above when the sizes match; otherwise run here)
  for n in "${full_sizes[@]}"; do
    tmo=$(( 120 + n / 50000 ))
    if have ftm-bench-gc; then
      run full ftmem live "$n" 1 "$rep" "$tmo" -- "${ftm1[@]}" "$bin/ftm-bench-gc" full -n "$n" --reps 5
    fi
    if [[ " ${pause_sizes[*]} " != *" $n "* ]]; then
      run full cpython live "$n" 1 "$rep" "$tmo" -- "$py" "$here/gc_py.py" full -n "$n" --reps 5
    fi
  done
  # 3. young collections as the old heap grows
  #    (gen0: young nodes point anywhere in the old heap; gen0-fixed: at the
  #    same 1000 old nodes whatever the heap's size — see gc_throughput.c)
  for old in "${young_olds[@]}"; do
    tmo=$(( 120 + old / 50000 ))
    for refs in random fixed; do
      v=gen0; [[ $refs == fixed ]] && v=gen0-fixed
      for side in $first $(( 1 - first )); do
        if [[ $side == 1 ]]; then
          if have ftm-bench-gc; then
            run young ftmem "$v" "$old" 1 "$rep" "$tmo" -- \
              "${ftm1[@]}" "$bin/ftm-bench-gc" young --old "$old" --young 2000 --reps 50 --refs "$refs"
          fi
        else
          run young cpython "$v" "$old" 1 "$rep" "$tmo" -- \
            "$py" "$here/gc_py.py" young --old "$old" --young 2000 --reps 50 --refs "$refs"
        fi
      done
    done
  done
  # 4. binary-trees and GCBench
  for prog in binarytrees gcbench; do
    if [[ $prog == binarytrees ]]; then args=(-d "$bt_depth"); size=$bt_depth
    else args=("${gcb_args[@]+"${gcb_args[@]}"}"); size=${gcb_args[1]:-16}; fi
    tmo=600
    for side in $first $(( 1 - first )); do
      if [[ $side == 1 ]]; then
        if have "ftm-bench-$prog"; then
          run "$prog" ftmem acyclic "$size" 1 "$rep" "$tmo" -- "${ftm1[@]}" "$bin/ftm-bench-$prog" "${args[@]}"
          run "$prog" ftmem untracked "$size" 1 "$rep" "$tmo" -- "${ftm1[@]}" "$bin/ftm-bench-$prog" "${args[@]}" --untracked
          run "$prog" ftmem cyclic "$size" 1 "$rep" "$tmo" -- "${ftm1[@]}" "$bin/ftm-bench-$prog" "${args[@]}" --cyclic
          run "$prog" ftmem cyclic-bg "$size" 2 "$rep" "$tmo" -- "${ftm_bg[@]}" "$bin/ftm-bench-$prog" "${args[@]}" --cyclic
        fi
      else
        if have "ftm-bench-$prog-boehm"; then
          run "$prog" boehm acyclic "$size" 1 "$rep" "$tmo" -- "$bin/ftm-bench-$prog-boehm" "${args[@]}"
          run "$prog" boehm cyclic "$size" 1 "$rep" "$tmo" -- "$bin/ftm-bench-$prog-boehm" "${args[@]}" --cyclic
        fi
        if have "ftm-bench-$prog-malloc"; then
          run "$prog" malloc acyclic "$size" 1 "$rep" "$tmo" -- "$bin/ftm-bench-$prog-malloc" "${args[@]}"
        fi
      fi
    done
  done
done
printf '\n' >&2
log "runs took $(( $(date +%s) - t_start )) s"

# ---- Report ---------------------------------------------------------------------------
{
  printf 'quick\t%s\nfull\t%s\nreps\t%s\nduration_ms\t%s\n' "$quick" "$full" "$reps" "$duration"
  printf 'pause_sizes\t%s\nsize_note\t%s\nbt_depth\t%s\ngcbench_args\t%s\n' \
    "${pause_sizes[*]}" "$size_note" "$bt_depth" "${gcb_args[*]:-published sizes}"
  printf 'young_olds\t%s\nfull_sizes\t%s\n' "${young_olds[*]}" "${full_sizes[*]}"
  printf 'raw_dir\t%s\nbuild_dir\t%s\ncores\t%s\nmem_available_mib\t%s\n' "$raw" "$build_dir" "$ncpu" "$(( avail_kib / 1024 ))"
  printf 'loadavg_start\t%s\nloadavg_end\t%s\n' "$loadavg_start" "$(cat /proc/loadavg)"
  printf 'ftmem\tgit %s%s\n' "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo none)" \
    "$( [[ -n $(git -C "$root" status --porcelain -- src include lockfree 2>/dev/null || true) ]] && echo +dirty)"
  printf 'python\t%s (%s)\n' "$("$py" --version 2>&1)" "$py"
  printf 'python3_on_path\t%s (%s)\n' "$(python3 --version 2>&1 || echo none)" "$(command -v python3 || echo none)"
  printf 'boehm\tlibgc-dev %s, libgc1 %s\n' "$(dpkg-query -W -f='${Version}' libgc-dev 2>/dev/null || echo none)" \
    "$(dpkg-query -W -f='${Version}' libgc1 2>/dev/null || echo none)"
  printf 'glibc\t%s\ngcc\t%s\n' "$(dpkg-query -W -f='${Version}' libc6 2>/dev/null || echo '?')" "$(gcc -dumpfullversion 2>/dev/null || echo '?')"
  printf 'command\tbench/run_gc.sh'
  [[ ${#orig_args[@]} -eq 0 ]] || printf ' %q' "${orig_args[@]}"
  [[ ${FULL:-0} == 1 ]] && printf ' (FULL=1)'
  printf '\n'
} >"$raw/params.tsv"
"$py" "$here/report_gc.py" collect "$raw" -o "$out_dir/gc.json"
"$py" "$here/report_gc.py" show "$out_dir/gc.json" --txt "$out_dir/gc.txt"
log "raw output: $raw"
