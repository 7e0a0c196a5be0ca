#!/usr/bin/env bash
# bench/run.sh — run every ftm-bench workload on glibc, jemalloc, tcmalloc,
# mimalloc and ftmem side by side, then tabulate and chart the medians.
#
# Installs missing Debian packages, builds Release into build/ if needed,
# runs each workload config once per allocator per repetition (allocator
# order rotated every repetition to spread machine noise), counts the
# instructions of a malloc(32)/free pair under callgrind, and writes
# bench/results/latest.{json,txt,png}.  The bench programs use plain malloc:
# the allocator is chosen by LD_PRELOAD.  See bench/README.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/run.sh [options]
  --quick              smoke size: 1 repetition, 200 ms time boxes, small heaps (< 2 min)
  --reps N             repetitions per (workload, allocator); the median is reported (default 3)
  --duration MS        time box of throughput workloads (default 1500; --quick 200)
  --only LIST          comma-separated workloads (churn) or configs (churn-2t)
  --allocators LIST    comma-separated subset of: glibc,jemalloc,tcmalloc,mimalloc,ftmem
  --build-dir DIR      CMake build directory (default build)
  --out DIR            where latest.{json,txt,png} go (default bench/results)
  --seed S             base seed; repetition r uses S+r for every allocator (default 42)
  --ftmem-so PATH      benchmark this libftmem.so instead of BUILD_DIR/libftmem.so
  --no-callgrind       skip the instruction count of a malloc/free pair
  --no-install         never call apt-get
  --check              correctness only: run every config with a fixed op count on each
                       allocator and compare the checksums (they must agree); no timing
  --list               list the workload configs and exit
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

orig_args=("$@")
quick=0 reps="" duration="" only="" allocs="glibc,jemalloc,tcmalloc,mimalloc,ftmem"
build_dir="$root/build" out_dir="$here/results" seed=42 do_callgrind=1 do_install=1 list=0 check=0 ftmem_so=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1 ;;
    --reps) reps="$2"; shift ;;
    --duration) duration="$2"; shift ;;
    --only) only="$2"; shift ;;
    --allocators) allocs="$2"; shift ;;
    --build-dir) build_dir=$(realpath -m "$2"); shift ;;
    --out) out_dir=$(realpath -m "$2"); shift ;;
    --seed) seed="$2"; shift ;;
    --ftmem-so) ftmem_so=$(realpath -m "$2"); shift ;;
    --no-callgrind) do_callgrind=0 ;;
    --no-install) do_install=0 ;;
    --list) list=1 ;;
    --check) check=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [[ $quick == 1 ]]; then
  reps=${reps:-1}; duration=${duration:-200}
else
  reps=${reps:-3}; duration=${duration:-1500}
fi
[[ $reps =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --reps must be a positive integer" >&2; exit 2; }
[[ $duration =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --duration must be a positive integer (ms)" >&2; exit 2; }

# ---- Workload configs: name workload threads -------------------------------
# 1-thread variants only where one thread means something: a producer/
# consumer pair, false sharing and thread churn need two.  frag and
# rss-return are single-threaded by design.
configs=(
  "churn-1t churn 1"
  "churn-2t churn 2"
  "xthread-2t xthread 2"
  "fs-active-2t fs-active 2"
  "fs-passive-2t fs-passive 2"
  "thread-churn-2t thread-churn 2"
  "frag-1t frag 1"
  "sizemix-1t sizemix 1"
  "sizemix-2t sizemix 2"
  "large-1t large 1"
  "large-2t large 2"
  "rss-return-1t rss-return 1"
)
if [[ $list == 1 ]]; then
  printf '%s\n' "${configs[@]}" | awk '{printf "%-16s ftm-bench %s -t %s\n", $1, $2, $3}'
  echo "pair             callgrind: instructions per malloc(32)+free (ftm-bench-pair)"
  exit 0
fi
if [[ -n $only ]]; then
  sel=()
  IFS=, read -r -a wanted <<<"$only"
  # 'pair' names the callgrind instruction count; without it --only skips it.
  [[ ",$only," == *,pair,* ]] || do_callgrind=0
  for c in "${configs[@]}"; do
    read -r cname cwl _ <<<"$c"
    for w in "${wanted[@]}"; do
      if [[ $w == "$cname" || $w == "$cwl" ]]; then sel+=("$c"); break; fi
    done
  done
  if [[ ${#sel[@]} -eq 0 && $do_callgrind == 0 ]]; then
    echo "run.sh: --only '$only' matches no config (see --list; 'pair' is the callgrind count)" >&2; exit 2
  fi
  configs=("${sel[@]+"${sel[@]}"}")
fi
IFS=, read -r -a alloc_list <<<"$allocs"
for a in "${alloc_list[@]}"; do
  case "$a" in glibc|jemalloc|tcmalloc|mimalloc|ftmem) ;;
    *) echo "run.sh: unknown allocator '$a'" >&2; exit 2 ;;
  esac
done

log() { printf '[run.sh] %s\n' "$*" >&2; }

# ---- Packages ---------------------------------------------------------------
need_pkgs=(cmake make gcc pkg-config libck-dev libdw-dev time coreutils
           libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0 python3 python3-matplotlib)
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

# matplotlib comes from Debian: prefer the system python that has it (a
# pyenv python3 first on PATH would not).
py=python3
for cand in /usr/bin/python3 python3; do
  if "$cand" -c 'import matplotlib' 2>/dev/null; then py=$cand; break; fi
done

# ---- Build ------------------------------------------------------------------
stamp=$(date +%Y%m%d-%H%M%S)
raw="$build_dir/bench-raw/$stamp"
mkdir -p "$raw" "$out_dir"
ftmem_status="ok"
bench_bin="" pair_bin=""
cache="$build_dir/CMakeCache.txt"
configure_ok=1
if [[ ! -f $cache ]] || ! grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$cache" \
   || grep -q '^FTMEM_BUILD_BENCH:BOOL=OFF$' "$cache"; then
  log "configuring Release in $build_dir"
  if ! cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DFTMEM_BUILD_BENCH=ON \
       >"$raw/configure.log" 2>&1; then
    configure_ok=0
  fi
fi
if [[ $configure_ok == 1 ]] && [[ -f $cache ]]; then
  # Only the targets this suite needs: the bench programs first (they do not
  # depend on the library), then libftmem.so, so a library or a test that
  # does not build yet costs ftmem's column, not the whole run.
  if cmake --build "$build_dir" -j2 --target ftm-bench ftm-bench-pair >"$raw/build-bench.log" 2>&1; then
    bench_bin="$build_dir/bench/ftm-bench"; pair_bin="$build_dir/bench/ftm-bench-pair"
  fi
  if [[ -z $ftmem_so ]] && ! cmake --build "$build_dir" -j2 --target ftmem >"$raw/build-ftmem.log" 2>&1; then
    ftmem_status="build failed (see $raw/build-ftmem.log)"
  fi
elif [[ -z $ftmem_so ]]; then
  ftmem_status="configure failed (see $raw/configure.log)"
fi
if [[ -z $bench_bin ]]; then
  # The top-level project does not configure or build yet: build the bench
  # on its own (it never links ftmem anyway).
  sa="$build_dir/bench-standalone"
  log "top-level build unusable; building the bench alone in $sa"
  cmake -S "$here" -B "$sa" -DCMAKE_BUILD_TYPE=Release >"$raw/configure-standalone.log" 2>&1 \
    && cmake --build "$sa" -j2 >"$raw/build-standalone.log" 2>&1 \
    || { log "bench build failed:"; tail -20 "$raw"/*standalone.log >&2; exit 1; }
  bench_bin="$sa/ftm-bench"; pair_bin="$sa/ftm-bench-pair"
fi
log "bench: $bench_bin"

# ---- Allocators ----------------------------------------------------------------
deb_so() { dpkg -L "$1" 2>/dev/null | grep -E "/$2\$" | head -1; }
deb_ver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }
declare -A so ver status from
for a in "${alloc_list[@]}"; do
  case "$a" in
    glibc)    so[$a]=""; ver[$a]=$(deb_ver libc6) ;;
    jemalloc) so[$a]=$(deb_so libjemalloc2 'libjemalloc\.so\.2'); ver[$a]=$(deb_ver libjemalloc2) ;;
    tcmalloc) so[$a]=$(deb_so libtcmalloc-minimal4 'libtcmalloc_minimal\.so\.4'); ver[$a]=$(deb_ver libtcmalloc-minimal4) ;;
    mimalloc) so[$a]=$(deb_so libmimalloc2.0 'libmimalloc\.so\.2'); ver[$a]=$(deb_ver libmimalloc2.0) ;;
    ftmem)    so[$a]="${ftmem_so:-$build_dir/libftmem.so}"
              ver[$a]="git $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo none)"
              if [[ -n $(git -C "$root" status --porcelain -- src include 2>/dev/null || true) ]]; then
                ver[$a]+="+dirty"
              fi
              [[ -z $ftmem_so ]] || ver[$a]="--ftmem-so" ;;
  esac
  status[$a]="ok"
  if [[ $a == ftmem && $ftmem_status != ok ]]; then status[$a]="$ftmem_status"; continue; fi
  if [[ $a != glibc && ! -f ${so[$a]} ]]; then status[$a]="library not found: ${so[$a]:-?}"; continue; fi
  # Smoke: a tiny run must pass, and malloc must really bind to the library
  # (a preload that fails only warns and falls back to glibc).
  smoke_out="$raw/smoke.$a"
  set +e
  timeout -k 5 30 env LD_DEBUG=bindings LD_DEBUG_OUTPUT="$smoke_out.ld" LD_PRELOAD="${so[$a]}" \
    "$bench_bin" churn -t 2 -n 20000 >"$smoke_out.out" 2>"$smoke_out.err"
  rc=$?
  set -e
  binding=$(cat "$smoke_out".ld.* 2>/dev/null | grep -m1 "to .*normal symbol \`malloc'" | sed -E 's/.* to ([^ ]+) .*/\1/' || true)
  rm -f "$smoke_out".ld.*
  from[$a]=$binding
  if [[ $rc != 0 ]]; then
    status[$a]="smoke run failed (exit $rc): $(tr '\n' ' ' <"$smoke_out.err" | cut -c1-300)"
  elif grep -q 'cannot be preloaded' "$smoke_out.err"; then
    status[$a]="LD_PRELOAD refused: $(head -1 "$smoke_out.err")"
  elif [[ $a != glibc && $binding != *"$(basename "${so[$a]}")"* && $binding != "$(realpath "${so[$a]}")" ]]; then
    status[$a]="malloc binds to '$binding', not ${so[$a]}"
  fi
done
{
  printf 'name\tso\tversion\tstatus\tmalloc_from\n'
  for a in "${alloc_list[@]}"; do
    printf '%s\t%s\t%s\t%s\t%s\n' "$a" "${so[$a]}" "${ver[$a]}" "${status[$a]}" "${from[$a]:-}"
  done
} >"$raw/allocators.tsv"
active=()
for a in "${alloc_list[@]}"; do
  if [[ ${status[$a]} == ok ]]; then active+=("$a"); else log "$a: ${status[$a]} — skipped"; fi
done
[[ ${#active[@]} -gt 0 ]] || { log "no usable allocator"; exit 1; }

# ---- Checksum check (--check) -------------------------------------------------
if [[ $check == 1 ]]; then
  # With a fixed op count the work, and so the checksum over the data read
  # back, is the same on every allocator; a difference (or a tag error, exit
  # 3) means an allocator lost or corrupted data.
  bad=0
  for c in "${configs[@]}"; do
    read -r cname cwl cthreads <<<"$c"
    case "$cwl" in
      thread-churn) fixed=(-n 20) ;;
      large) fixed=(-n 200) ;;
      frag|rss-return) fixed=(--mib 16) ;;
      *) fixed=(-n 200000) ;;
    esac
    sums=""
    for a in "${active[@]}"; do
      set +e
      o=$(timeout -k 5 120 env LD_PRELOAD="${so[$a]}" "$bench_bin" "$cwl" -t "$cthreads" -s "$seed" "${fixed[@]}" 2>"$raw/check.$cname.$a.err")
      rc=$?
      set -e
      sum=$(grep -o '"checksum":"[^"]*"' <<<"$o" | cut -d'"' -f4)
      [[ $rc == 0 ]] || { log "check $cname $a: exit $rc $(tail -c 200 "$raw/check.$cname.$a.err" | tr '\n' ' ')"; bad=1; }
      sums+="$a=${sum:-none} "
    done
    if [[ $(tr ' ' '\n' <<<"$sums" | grep . | cut -d= -f2 | sort -u | wc -l) == 1 ]]; then
      printf 'check %-16s ok    %s\n' "$cname" "$(cut -d' ' -f1 <<<"$sums" | cut -d= -f2)"
    else
      printf 'check %-16s DIFF  %s\n' "$cname" "$sums"; bad=1
    fi
  done
  exit $bad
fi

# ---- Runs -------------------------------------------------------------------
qflag=()
[[ $quick == 1 ]] && qflag=(--quick)
# A run that exceeds its time box this much is hung: killed and recorded.
run_timeout=$(( duration / 1000 + 45 ))
printf 'config\tworkload\tthreads\tallocator\trep\trc\tmaxrss_kib\twall_s\tstdout\tstderr\tload1\n' >"$raw/manifest.tsv"
load1() { cut -d' ' -f1 /proc/loadavg; }
if awk -v l="$(load1)" 'BEGIN { exit !(l > 0.7) }'; then
  log "WARNING: load average $(load1) before the runs: other processes are using the CPU and the figures will be noisy (see 'load' in the report)"
fi
declare -A dead  # config|alloc -> 1 after a failure: later repetitions skip it
nalloc=${#active[@]}
total=$(( reps * ${#configs[@]} * nalloc )) n=0
log "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; ${#configs[@]} configs x ${nalloc} allocators x $reps reps, time box ${duration} ms"
t_start=$(date +%s)
for ((rep = 1; rep <= reps; rep++)); do
  for ci in "${!configs[@]}"; do
    read -r cname cwl cthreads <<<"${configs[$ci]}"
    # Rotate the allocator order by repetition and by config, so no
    # allocator always runs first (cold caches) or right after another.
    off=$(( (rep - 1 + ci) % nalloc ))
    for ((k = 0; k < nalloc; k++)); do
      a=${active[$(( (k + off) % nalloc ))]}
      n=$((n + 1))
      base="$raw/run.$cname.$a.$rep"
      if [[ -n ${dead[$cname|$a]:-} ]]; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\t\t\t\t\t\n' "$cname" "$cwl" "$cthreads" "$a" "$rep" "skipped" >>"$raw/manifest.tsv"
        continue
      fi
      ld=$(load1)
      set +e
      timeout -k 5 "$run_timeout" /usr/bin/time -f '%M %e' -o "$base.time" \
        env LD_PRELOAD="${so[$a]}" "$bench_bin" "$cwl" -t "$cthreads" -d "$duration" \
        -s $((seed + rep)) "${qflag[@]}" >"$base.out" 2>"$base.err"
      rc=$?
      set -e
      maxrss="" wall=""
      if [[ -s $base.time ]]; then read -r maxrss wall < <(grep -E '^[0-9]+ [0-9.]+$' "$base.time" | tail -1) || true; fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$cname" "$cwl" "$cthreads" "$a" "$rep" "$rc" \
        "${maxrss:-}" "${wall:-}" "$base.out" "$base.err" "$ld" >>"$raw/manifest.tsv"
      if [[ $rc != 0 ]]; then
        dead[$cname|$a]=1
        log "FAIL $cname $a rep $rep: exit $rc $( [[ $rc == 124 ]] && echo '(timeout)'; [[ $rc -gt 128 && $rc != 124 ]] && echo "(signal $((rc - 128)))"): $(tail -c 300 "$base.err" | tr '\n' ' ')"
      fi
      printf '\r[run.sh] %d/%d  %-16s %-9s rep %d  ' "$n" "$total" "$cname" "$a" "$rep" >&2
    done
  done
done
printf '\n' >&2
log "runs took $(( $(date +%s) - t_start )) s"

# ---- Instructions per malloc/free pair (callgrind) ----------------------------
if [[ $do_callgrind == 1 ]]; then
  cg_n=1000000
  mkdir -p "$raw/callgrind"
  for a in "${active[@]}"; do
    for mode in pairs empty; do
      # Callgrind does not replace malloc (only memcheck-style tools do), so
      # the LD_PRELOADed allocator is the one measured; report.py lists the
      # objects that carried the cost to prove it.
      set +e
      timeout -k 5 300 env LD_PRELOAD="${so[$a]}" valgrind --tool=callgrind \
        --toggle-collect="run_${mode}*" --callgrind-out-file="$raw/callgrind/$a.$mode.out" \
        "$pair_bin" "$mode" "$cg_n" >"$raw/callgrind/$a.$mode.stdout" 2>"$raw/callgrind/$a.$mode.log"
      rc=$?
      set -e
      [[ $rc == 0 ]] || log "callgrind $a $mode failed (exit $rc): $(tail -c 300 "$raw/callgrind/$a.$mode.log" | tr '\n' ' ')"
      echo "$rc" >"$raw/callgrind/$a.$mode.rc"
    done
  done
  echo "$cg_n" >"$raw/callgrind/N"
fi

# ---- Report -----------------------------------------------------------------
{
  printf 'quick\t%s\nreps\t%s\nduration_ms\t%s\nseed\t%s\n' "$quick" "$reps" "$duration" "$seed"
  printf 'bench\t%s\nbuild_dir\t%s\nraw_dir\t%s\n' "$bench_bin" "$build_dir" "$raw"
  printf 'command\tbench/run.sh'
  [[ ${#orig_args[@]} -eq 0 ]] || printf ' %q' "${orig_args[@]}"
  printf '\n'
} >"$raw/params.tsv"
"$py" "$here/report.py" collect "$raw" -o "$out_dir/latest.json"
"$py" "$here/report.py" show "$out_dir/latest.json" --txt "$out_dir/latest.txt" --png "$out_dir/latest.png"
log "raw output: $raw"

# ---- Object layer (bench/run_objects.sh -> objects.{json,txt}) -----------------
# A full run (no --only) ends with the object-layer benchmarks, same build
# and output directory; their failure leaves the allocator results standing.
if [[ -z $only ]]; then
  obj_args=(--build-dir "$build_dir" --out "$out_dir" --reps "$reps")
  [[ $quick == 1 ]] && obj_args+=(--quick)
  [[ $do_install == 0 ]] && obj_args+=(--no-install)
  if "$here/run_objects.sh" "${obj_args[@]}" >"$raw/objects.log" 2>&1; then
    log "object benchmarks: $out_dir/objects.txt"
  else
    log "object benchmarks failed (see $raw/objects.log)"
  fi
fi

# ---- Cycle collector (bench/run_gc.sh -> gc.{json,txt}) -------------------------
# Likewise after a full run: ftmem's collector beside CPython's gc and the
# Boehm GC (pauses, collection throughput, binary-trees, GCBench).
if [[ -z $only ]]; then
  gc_args=(--build-dir "$build_dir" --out "$out_dir" --reps "$reps")
  [[ $quick == 1 ]] && gc_args+=(--quick)
  [[ $do_install == 0 ]] && gc_args+=(--no-install)
  if "$here/run_gc.sh" "${gc_args[@]}" >"$raw/gc.log" 2>&1; then
    log "collector benchmarks: $out_dir/gc.txt"
  else
    log "collector benchmarks failed (see $raw/gc.log)"
  fi
fi

# ---- The heap report of the example runtime (ftmem/report.h) ------------------
# A workload of examples/runtime runs with tracing and the report sampler
# on; tools/ftmem-report turns the JSON into one HTML page (pools per size
# class, arenas, memory over time, GC pauses, top allocation sites, census).
if cmake --build "$build_dir" -j2 --target rt_demo >"$raw/build-rt_demo.log" 2>&1; then
  FTMEM_REPORT="$out_dir/report.json" FTMEM_REPORT_INTERVAL=2 FTMEM_TRACE=8 \
    "$build_dir/examples/runtime/rt_demo" >"$raw/rt_demo.log" 2>&1 || log "rt_demo failed (see $raw/rt_demo.log)"
  if page=$("$py" "$root/tools/ftmem-report" "$out_dir/report.json" -o "$out_dir/report.html" \
              --massif "$out_dir/report.massif" --collapsed "$out_dir/report.folded"); then
    log "heap report of the example runtime: $page"
    echo "heap report: $page"
  else
    log "ftmem-report failed"
  fi
else
  log "rt_demo did not build (see $raw/build-rt_demo.log): no heap report"
fi
