#!/usr/bin/env bash
# bench/run_objects.sh — build (Release) and run ftm-bench-objects, the
# object-layer benchmarks, and tabulate the medians as ratios.
#
# Steps: install missing Debian packages (only then), configure a Release
# build in build/ if there is none (or it is not Release), build
# ftm-bench-objects (it links ftmem-static) and libftmem.so (for the
# malloc peer column), then run every measurement once per repetition:
#   pair     owner incref+decref vs plain / CPython-3.12-shaped / atomic counters; immortal
#   churn    ftm_new+ftm_decref of 32 B objects (free list or not), ftm_malloc/ftm_free
#   malloc   malloc(32)+free in a separate process per peer (LD_PRELOAD: glibc,
#            jemalloc, tcmalloc, mimalloc, ftmem), allocator order rotated per repetition
#   hot      one hot object, 1..4 threads (2 cores: 3-4 oversubscribe), atomic vs deferred
#   xthread  one thread creates, K = 1..3 threads release (objects and plain ftm_malloc)
#   rt-*     the example runtime's workloads (ftm-bench-runtime: list, dict, tuples,
#            shared list) and the same code in CPython (runtime_py.py, this python3)
# once: header sizes (ftmem and the machine's CPython), callgrind instruction
# counts.  Writes bench/results/objects.{json,txt}; raw output stays in
# build/bench-raw/objects-<timestamp>/.  No figure is asserted: targets
# missed are reported, never fail the run.  See bench/README.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/run_objects.sh [options]
  --quick              smoke size: 1 repetition, 200 ms time boxes, short loops
  --reps N             repetitions of every measurement; the median is reported (default 5)
  --duration MS        time box of the threaded measurements (default 1000; --quick 200)
  --allocators LIST    malloc peers: comma-separated subset of glibc,jemalloc,tcmalloc,mimalloc,ftmem
  --build-dir DIR      CMake build directory (default build)
  --out DIR            where objects.{json,txt} go (default bench/results)
  --no-callgrind       skip the instruction counts
  --no-install         never call apt-get
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

orig_args=("$@")
quick=0 reps="" duration="" allocs="glibc,jemalloc,tcmalloc,mimalloc,ftmem"
build_dir="$root/build" out_dir="$here/results" do_callgrind=1 do_install=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1 ;;
    --reps) reps="$2"; shift ;;
    --duration) duration="$2"; shift ;;
    --allocators) allocs="$2"; shift ;;
    --build-dir) build_dir=$(realpath -m "$2"); shift ;;
    --out) out_dir=$(realpath -m "$2"); shift ;;
    --no-callgrind) do_callgrind=0 ;;
    --no-install) do_install=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_objects.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [[ $quick == 1 ]]; then
  reps=${reps:-1}; duration=${duration:-200}
else
  reps=${reps:-5}; duration=${duration:-1000}
fi
[[ $reps =~ ^[1-9][0-9]*$ ]] || { echo "run_objects.sh: --reps must be a positive integer" >&2; exit 2; }
[[ $duration =~ ^[1-9][0-9]*$ ]] || { echo "run_objects.sh: --duration must be a positive integer (ms)" >&2; exit 2; }
IFS=, read -r -a alloc_list <<<"$allocs"
for a in "${alloc_list[@]}"; do
  case "$a" in glibc|jemalloc|tcmalloc|mimalloc|ftmem) ;;
    *) echo "run_objects.sh: unknown allocator '$a'" >&2; exit 2 ;;
  esac
done

log() { printf '[run_objects.sh] %s\n' "$*" >&2; }

# ---- Packages ---------------------------------------------------------------
need_pkgs=(cmake make gcc pkg-config libck-dev coreutils
           libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0 python3)
[[ $do_callgrind == 1 ]] && need_pkgs+=(valgrind)
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
# The system python runs the report (a pyenv python3 first on PATH also works:
# only the standard library is needed).
py=/usr/bin/python3
[[ -x $py ]] || py=python3

# ---- Build ------------------------------------------------------------------
stamp=$(date +%Y%m%d-%H%M%S)
raw="$build_dir/bench-raw/objects-$stamp"
mkdir -p "$raw" "$out_dir"
cache="$build_dir/CMakeCache.txt"
if [[ ! -f $cache ]] || ! grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$cache" \
   || grep -q '^FTMEM_BUILD_BENCH:BOOL=OFF$' "$cache"; then
  log "configuring Release in $build_dir"
  cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DFTMEM_BUILD_BENCH=ON \
    >"$raw/configure.log" 2>&1 || { log "configure failed:"; tail -20 "$raw/configure.log" >&2; exit 1; }
fi
# ftm-bench-objects links the library: no library, no object benchmark.
cmake --build "$build_dir" -j2 --target ftm-bench-objects >"$raw/build-objects.log" 2>&1 \
  || { log "build of ftm-bench-objects failed:"; tail -20 "$raw/build-objects.log" >&2; exit 1; }
bin="$build_dir/bench/ftm-bench-objects"
# the example runtime's workloads: optional (no examples/runtime, no runtime rows)
rt_bin="$build_dir/bench/ftm-bench-runtime"
cmake --build "$build_dir" -j2 --target ftm-bench-runtime >"$raw/build-runtime.log" 2>&1 \
  || { log "build of ftm-bench-runtime failed: runtime workloads skipped (see $raw/build-runtime.log)"; rt_bin=""; }
ftmem_so_ok=1
cmake --build "$build_dir" -j2 --target ftmem >"$raw/build-ftmem.log" 2>&1 || ftmem_so_ok=0
log "bench: $bin"

# ---- Malloc peers (same discovery as run.sh) ---------------------------------
deb_so() { dpkg -L "$1" 2>/dev/null | grep -E "/$2\$" | head -1; }
deb_ver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }
declare -A so ver status
for a in "${alloc_list[@]}"; do
  case "$a" in
    glibc)    so[$a]=""; ver[$a]=$(deb_ver libc6) ;;
    jemalloc) so[$a]=$(deb_so libjemalloc2 'libjemalloc\.so\.2'); ver[$a]=$(deb_ver libjemalloc2) ;;
    tcmalloc) so[$a]=$(deb_so libtcmalloc-minimal4 'libtcmalloc_minimal\.so\.4'); ver[$a]=$(deb_ver libtcmalloc-minimal4) ;;
    mimalloc) so[$a]=$(deb_so libmimalloc2.0 'libmimalloc\.so\.2'); ver[$a]=$(deb_ver libmimalloc2.0) ;;
    ftmem)    so[$a]="$build_dir/libftmem.so"
              ver[$a]="git $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo none)"
              if [[ -n $(git -C "$root" status --porcelain -- src include 2>/dev/null || true) ]]; then
                ver[$a]+="+dirty"
              fi ;;
  esac
  status[$a]=ok
  if [[ $a == ftmem && $ftmem_so_ok == 0 ]]; then status[$a]="build failed (see $raw/build-ftmem.log)"
  elif [[ $a != glibc && ! -f ${so[$a]} ]]; then status[$a]="library not found: ${so[$a]:-?}"; fi
done
{
  printf 'name\tso\tversion\tstatus\n'
  for a in "${alloc_list[@]}"; do printf '%s\t%s\t%s\t%s\n' "$a" "${so[$a]}" "${ver[$a]}" "${status[$a]}"; done
} >"$raw/allocators.tsv"
active=()
for a in "${alloc_list[@]}"; do
  if [[ ${status[$a]} == ok ]]; then active+=("$a"); else log "$a: ${status[$a]} — skipped"; fi
done

# ---- Runs ---------------------------------------------------------------------
qflag=()
[[ $quick == 1 ]] && qflag=(--quick)
run_timeout=$(( duration / 1000 + 120 ))
load1() { cut -d' ' -f1 /proc/loadavg; }
printf 'step\tthreads\tallocator\trep\trc\tstdout\tstderr\tload1\twall_s\n' >"$raw/manifest.tsv"
# run STEP THREADS ALLOCATOR REP -- command...
run() {
  local step=$1 threads=$2 alloc=$3 rep=$4; shift 5
  local base="$raw/run.$step.t$threads.$alloc.$rep" ld rc t0 t1
  ld=$(load1); t0=$(date +%s.%N)
  set +e
  timeout -k 5 "$run_timeout" "$@" >"$base.out" 2>"$base.err"
  rc=$?
  set -e
  t1=$(date +%s.%N)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$step" "$threads" "$alloc" "$rep" "$rc" \
    "$base.out" "$base.err" "$ld" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')" >>"$raw/manifest.tsv"
  [[ $rc == 0 ]] || log "FAIL $step t$threads $alloc rep $rep: exit $rc: $(tail -c 300 "$base.err" | tr '\n' ' ')"
  printf '\r[run_objects.sh] rep %d/%d  %-22s ' "$rep" "$reps" "$step t$threads $alloc" >&2
}
if awk -v l="$(load1)" 'BEGIN { exit !(l > 0.7) }'; then
  log "WARNING: load average $(load1) before the runs: other processes use the CPU, figures will be noisy"
fi
ncpu=$(nproc)
log "machine: $ncpu cores; $reps reps, time box $duration ms; malloc peers: ${active[*]:-none}"
t_start=$(date +%s)
for ((rep = 1; rep <= reps; rep++)); do
  run pair 1 ftmem-static "$rep" -- "$bin" pair -s "$rep" "${qflag[@]}"
  run churn 1 ftmem-static "$rep" -- "$bin" churn "${qflag[@]}"
  n=${#active[@]}
  for ((k = 0; k < n; k++)); do
    a=${active[$(( (k + rep - 1) % n ))]}
    run malloc 1 "$a" "$rep" -- env LD_PRELOAD="${so[$a]}" "$bin" malloc "${qflag[@]}"
  done
  for t in 1 2 3 4; do
    for m in atomic deferred; do
      run "hot-$m" "$t" ftmem-static "$rep" -- "$bin" hot -m "$m" -t "$t" -d "$duration"
    done
    [[ $t -le 2 ]] && run hot-private "$t" ftmem-static "$rep" -- "$bin" hot -m private -t "$t" -d "$duration"
  done
  for k in 1 2 3; do
    run xthread-objects "$((k + 1))" ftmem-static "$rep" -- "$bin" xthread -t "$k" -d "$duration"
    run xthread-malloc "$((k + 1))" ftmem-static "$rep" -- "$bin" xthread -t "$k" -d "$duration" --malloc
  done
  # runtime vs CPython: the same workload back to back, which goes first alternating by repetition
  for w in list dict tuples shared; do
    [[ -n $rt_bin ]] || break
    t=1; [[ $w == shared ]] && t=3
    for side in $(( rep % 2 )) $(( (rep + 1) % 2 )); do
      if [[ $side == 1 ]]; then run "rt-$w" "$t" ftmem-rt "$rep" -- "$rt_bin" "$w" -d "$duration" "${qflag[@]}"
      else run "rt-$w" "$t" cpython "$rep" -- "$py" "$here/runtime_py.py" "$w" -d "$duration" "${qflag[@]}"; fi
    done
  done
done
printf '\n' >&2
run sizes 1 ftmem-static 1 -- "$bin" sizes
log "runs took $(( $(date +%s) - t_start )) s"

# ---- CPython's object sizes, measured on this machine ----------------------------
: >"$raw/python_sizes.jsonl"
declare -A seen_py
for cand in /usr/bin/python3 "$(command -v python3 || true)" "$(command -v python3.13t || true)"; do
  [[ -n $cand && -x $cand ]] || continue
  real=$(realpath "$cand")
  [[ -z ${seen_py[$real]:-} ]] || continue
  seen_py[$real]=1
  "$cand" - >>"$raw/python_sizes.jsonl" 2>>"$raw/python_sizes.err" <<'EOF' || true
import json, sys, sysconfig
gil_disabled = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
print(json.dumps({
    "python": sys.executable, "version": sys.version.split()[0],
    "free_threaded": gil_disabled,
    "object_basicsize": object.__basicsize__,
    "getsizeof_object": sys.getsizeof(object()),
    "tuple_basicsize": tuple.__basicsize__, "getsizeof_empty_tuple": sys.getsizeof(()),
    "list_basicsize": list.__basicsize__, "getsizeof_empty_list": sys.getsizeof([]),
    # sys.getsizeof adds the GC pre-header of GC-tracked types
    "gc_head": sys.getsizeof(()) - tuple.__basicsize__,
}))
EOF
done

# ---- Instruction counts (callgrind) -------------------------------------------------
if [[ $do_callgrind == 1 ]]; then
  cg_n=1000000
  mkdir -p "$raw/callgrind"
  echo "$cg_n" >"$raw/callgrind/N"
  # --zero-before: the warm-up call of the same function is not counted.
  # --cache-sim=yes adds the data reads/writes (Dr/Dw): stores per pair.
  cg() {
    local tag=$1 variant=$2; shift 2
    set +e
    timeout -k 5 300 env "$@" valgrind --tool=callgrind --cache-sim=yes \
      --toggle-collect="run_$variant" --zero-before="run_$variant" \
      --callgrind-out-file="$raw/callgrind/$tag.out" "$bin" cg "$variant" -n "$cg_n" \
      >"$raw/callgrind/$tag.stdout" 2>"$raw/callgrind/$tag.log"
    local rc=$?
    set -e
    echo "$rc" >"$raw/callgrind/$tag.rc"
    [[ $rc == 0 ]] || log "callgrind $tag failed (exit $rc)"
  }
  for v in pair_ftm pair_immortal pair_shared pair_deferred pair_plain pair_cpy312 pair_atomic pair_loop \
           new new_fl ftm_malloc calls_empty new_batch ftm_malloc_batch xrelease xmerge; do
    cg "ftmem-static.$v" "$v" LD_PRELOAD=
  done
  for a in "${active[@]}"; do
    cg "$a.malloc" malloc LD_PRELOAD="${so[$a]}"
    cg "$a.malloc_batch" malloc_batch LD_PRELOAD="${so[$a]}"
  done
fi

# ---- Report ---------------------------------------------------------------------------
{
  printf 'quick\t%s\nreps\t%s\nduration_ms\t%s\nbench\t%s\nraw_dir\t%s\ncores\t%s\n' \
    "$quick" "$reps" "$duration" "$bin" "$raw" "$ncpu"
  # the library measured (ftm-bench-objects links it statically at build time)
  printf 'ftmem\tgit %s%s\n' "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo none)" \
    "$( [[ -n $(git -C "$root" status --porcelain -- src include lockfree 2>/dev/null || true) ]] && echo +dirty)"
  printf 'command\tbench/run_objects.sh'
  [[ ${#orig_args[@]} -eq 0 ]] || printf ' %q' "${orig_args[@]}"
  printf '\n'
} >"$raw/params.tsv"
"$py" "$here/report_objects.py" collect "$raw" -o "$out_dir/objects.json"
"$py" "$here/report_objects.py" show "$out_dir/objects.json" --txt "$out_dir/objects.txt"
log "raw output: $raw"
