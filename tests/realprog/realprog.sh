#!/usr/bin/env bash
# realprog.sh — real programs on a malloc loaded with LD_PRELOAD, compared
# with a plain glibc run.  PROG is one of: python sqlite git gcc memcached.
#
#   realprog.sh test PROG LIB [SCALE]       prepare, run PROG plainly and under
#                                           LD_PRELOAD=LIB (at the same time),
#                                           compare; prints "realprog: N passed,
#                                           M failed" last, exit 0 when M is 0
#   realprog.sh prepare PROG DIR [SCALE]    generate PROG's input in DIR
#   realprog.sh run PROG DIR OUT [PRELOAD]  one run on DIR's input; writes
#                                           OUT/result (what must not depend on
#                                           the allocator), OUT/time ("WALL
#                                           MAXRSS_KB"), OUT/stderr, OUT/rc
#   realprog.sh compare PROG GOLD OUT       exit 0 when two runs' results agree
#
# SCALE (default 1) multiplies the workload; bench/realprog.sh uses 2.
# Environment: RP_MCCLIENT (the built mcclient; else prepare compiles it),
# RP_KEEP (where `test` keeps a failed run's files; default
# ./realprog-failed), RP_SEQUENTIAL=1 (run the two sides one after the
# other instead of at the same time), RP_TIMEOUT (seconds one run may take
# before it is killed as hung; by default a little less than ctest allows).
#
# Only the program itself runs with LD_PRELOAD: generators, checksums and
# this script run on glibc.  See README.md.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3 # Debian's python: its test suite is libpython3.11-testsuite
export LC_ALL=C TZ=UTC

die() { echo "realprog: $*" >&2; exit 2; }
scale_int() { awk -v s="$1" -v n="$2" 'BEGIN { printf "%d", s * n }'; }
limit() { echo "${RP_TIMEOUT:-$1}"; } # limit DEFAULT_SECONDS

# timed OUT SECONDS PRELOAD CMD... — run CMD with LD_PRELOAD=PRELOAD (none
# when empty) under a timeout; OUT/time gets "WALL MAXRSS_KB" (the largest
# peak RSS among CMD and its descendants), OUT/rc its exit status (124:
# timed out).  stdin, stdout and stderr are the caller's.
timed() {
  local out=$1 secs=$2 pre=$3
  shift 3
  local envp=(env -u LD_PRELOAD)
  [[ -n $pre ]] && envp=(env "LD_PRELOAD=$pre")
  printf '%q ' "${envp[@]}" "$@" >"$out/cmd"
  echo >>"$out/cmd"
  /usr/bin/time -f '%e %M' -o "$out/time" timeout -k 10 "$secs" "${envp[@]}" "$@"
  local rc=$?
  echo "$rc" >"$out/rc"
  # /usr/bin/time puts "Command exited with non-zero status N" before the figures
  local t
  t=$(tail -n 1 "$out/time" 2>/dev/null)
  echo "$t" >"$out/time"
  return "$rc"
}

# ---- python: its own regression tests ---------------------------------------
py_modules() {
  local m="test_list test_dict test_set test_gc test_weakref test_threading
           test_tuple test_collections test_json test_re test_bytes test_unicode
           test_deque test_struct test_thread test_functools test_heapq test_sort"
  if awk -v s="$1" 'BEGIN { exit !(s >= 2) }'; then
    m+=" test_long test_itertools test_decimal test_descr test_array test_memoryview
        test_hashlib test_zlib test_csv test_enum test_dataclasses test_float test_os"
  fi
  echo $m
}
prep_python() {
  py_modules "$2" >"$1/modules"
}
run_python() { # DIR OUT PRE [MODULES...]
  local dir=$1 out=$2 pre=$3
  shift 3
  local mods=("$@")
  [[ ${#mods[@]} -gt 0 ]] || read -r -a mods <"$dir/modules"
  mkdir -p "$out/tmp"
  rm -f "$out/junit.xml"
  # -j2: worker processes (they inherit LD_PRELOAD); a hung test is dumped
  # by faulthandler after --timeout seconds.
  (cd "$out/tmp" && export TMPDIR=$out/tmp &&
     timed "$out" "$(limit 420)" "$pre" env PYTHONMALLOC=malloc PYTHONHASHSEED=0 \
       "$PY" -m test -j2 --timeout 180 --junit-xml "$out/junit.xml" "${mods[@]}" >"$out/stdout" 2>"$out/stderr")
  local rc=$?
  "$PY" "$here/pyresults.py" "$out/junit.xml" "$out/stdout" >"$out/result"
  rm -rf "$out/tmp"
  return "$rc"
}

# ---- sqlite3: generated database and query set ---------------------------------
prep_sqlite() { "$PY" "$here/gen_sqlite.py" "$(scale_int "$2" 100000)" >"$1/gen.sql"; }
run_sqlite() {
  local dir=$1 out=$2 pre=$3
  rm -f "$out/db.sqlite" "$out/dump.sql"
  printf '.bail on\n.read %s\n.read %s\n.output %s\n.dump\n.output stdout\nSELECT %s;\n' \
    "$dir/gen.sql" "$here/queries.sql" "$out/dump.sql" "'done'" >"$out/script.sql"
  timed "$out" "$(limit 240)" "$pre" sqlite3 "$out/db.sqlite" <"$out/script.sql" >"$out/stdout" 2>"$out/stderr"
  local rc=$?
  {
    cat "$out/stdout"
    if [[ -f $out/dump.sql ]]; then
      echo "dump: $(wc -l <"$out/dump.sql") lines, sha256 $(sha256sum <"$out/dump.sql" | cut -c1-64)"
    else
      echo "dump: missing"
    fi
  } >"$out/result"
  rm -f "$out/db.sqlite" "$out/dump.sql"
  return "$rc"
}

# ---- git: a generated repository -----------------------------------------------
prep_git() { echo "$2" >"$1/scale"; }
run_git() {
  local dir=$1 out=$2 pre=$3
  rm -rf "$out/git"
  mkdir -p "$out/git"
  # the driver runs on glibc and gives LD_PRELOAD to every git it starts;
  # it writes its own git.time (wall time in git, largest git peak RSS)
  timed "$out" "$(limit 240)" "" "$PY" "$here/git_work.py" "$out/git" "$(cat "$dir/scale")" "$pre" \
    >"$out/result" 2>"$out/stderr"
  local rc=$?
  [[ -f $out/git/git.time ]] && cp "$out/git/git.time" "$out/time"
  rm -rf "$out/git"
  return "$rc"
}

# ---- gcc: a generated C file at -O2 ----------------------------------------------
prep_gcc() { "$PY" "$here/gen_c.py" "$(scale_int "$2" 120)" >"$1/prog.c"; }
run_gcc() {
  local dir=$1 out=$2 pre=$3
  rm -rf "$out/cc"
  mkdir -p "$out/cc"
  cp "$dir/prog.c" "$out/cc/prog.c"
  # gcc, cc1 and as all run with LD_PRELOAD
  (cd "$out/cc" && timed "$out" "$(limit 240)" "$pre" gcc -std=c11 -O2 -c prog.c -o prog.o) >"$out/stdout" 2>"$out/stderr"
  local rc=$?
  [[ $rc -eq 0 ]] || { echo "gcc failed: $rc" >"$out/result"; return "$rc"; }
  {
    echo "prog.o sha256 $(sha256sum <"$out/cc/prog.o" | cut -c1-64)"
    echo "disassembly sha256 $(objdump -d --no-show-raw-insn "$out/cc/prog.o" | tail -n +3 | sha256sum | cut -c1-64)"
    if gcc "$out/cc/prog.o" -o "$out/cc/prog" 2>>"$out/stderr"; then
      echo "program output:"
      timeout 60 "$out/cc/prog"
      echo "program exit $?"
    else
      echo "link failed"
    fi
  } >"$out/result"
  rm -f "$out/cc/prog" "$out/cc/prog.c"
  return 0
}

# ---- memcached: a checked load from mcclient ----------------------------------
mc_threads=8
prep_memcached() {
  scale_int "$2" 6000 >"$1/ops"
  if [[ -z ${RP_MCCLIENT:-} ]]; then
    gcc -std=c11 -O2 -pthread "$here/mcclient.c" -o "$1/mcclient" || die "cannot build mcclient"
  fi
}
free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
run_memcached() {
  local dir=$1 out=$2 pre=$3
  local client=${RP_MCCLIENT:-$dir/mcclient} ops port spid="" mpid=""
  ops=$(cat "$dir/ops")
  for _ in 1 2 3; do # a port taken meanwhile: try another
    port=$(free_port)
    local envp=(env -u LD_PRELOAD)
    [[ -n $pre ]] && envp=(env "LD_PRELOAD=$pre")
    printf '%q ' "${envp[@]}" memcached -u root -l 127.0.0.1 -p "$port" -U 0 -t 4 -m 1024 -c 1024 >"$out/cmd"
    /usr/bin/time -f '%e %M' -o "$out/server.time" "${envp[@]}" \
      memcached -u root -l 127.0.0.1 -p "$port" -U 0 -t 4 -m 1024 -c 1024 >"$out/server.out" 2>"$out/stderr" &
    spid=$!
    local up=0
    for _ in $(seq 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
      kill -0 "$spid" 2>/dev/null || break
      sleep 0.1
    done
    [[ $up == 1 ]] && break
    kill -KILL "$spid" 2>/dev/null; wait "$spid" 2>/dev/null
    spid=""
  done
  if [[ -z $spid ]]; then
    echo "memcached did not start" >"$out/result"
    echo 1 >"$out/rc"
    return 1
  fi
  mpid=$(pgrep -P "$spid" memcached | head -1)
  timeout -k 5 "$(limit 180)" "$client" 127.0.0.1 "$port" "$mc_threads" "$ops" >"$out/result" 2>"$out/client.err"
  local crc=$?
  local hwm
  hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$mpid/status" 2>/dev/null)
  # a clean shutdown: memcached exits 0 on SIGTERM
  kill -TERM "$mpid" 2>/dev/null
  local src=""
  for _ in $(seq 100); do
    kill -0 "$spid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$spid" 2>/dev/null; then
    echo "memcached did not stop on SIGTERM within 10 s" >>"$out/stderr"
    kill -KILL "$mpid" 2>/dev/null
    src=137
  fi
  wait "$spid"
  local wrc=$?
  [[ -n $src ]] || src=$wrc
  echo "memcached exit status $src" >>"$out/result"
  cat "$out/client.err" >>"$out/stderr"
  # time: the client's wall time and the server's peak RSS; throughput too
  local wall nops
  read -r wall nops < <(awk '/^mcclient-time:/ { print $2, $3 }' "$out/client.err")
  echo "${wall:-0} ${hwm:-$(tail -n 1 "$out/server.time" 2>/dev/null | awk '{ print $2 }')}" >"$out/time"
  echo "${nops:-0}" >"$out/ops"
  local rc=$crc
  [[ $rc -eq 0 ]] && rc=$src
  echo "$rc" >"$out/rc"
  return "$rc"
}

# ---- comparisons --------------------------------------------------------------
compare() { # PROG GOLD OUT: 0 when alike; the differences on stderr
  local prog=$1 gold=$2 out=$3
  cmp -s "$gold/result" "$out/result" && return 0
  echo "realprog: $prog: results differ (glibc < > preloaded):" >&2
  diff "$gold/result" "$out/result" | head -40 >&2
  return 1
}

# ---- checks that malloc really is the preloaded one's ---------------------------
# bound LIB BINARY_RE CMD...: with LD_BIND_NOW every symbol is bound at load
# time; the dynamic linker's log must show BINARY's malloc and free bound to
# LIB.
bound() {
  local lib=$1 bin=$2 tmp
  shift 2
  tmp=$(mktemp -d) || return 1
  LD_BIND_NOW=1 LD_DEBUG=bindings LD_DEBUG_OUTPUT=$tmp/ld LD_PRELOAD=$lib "$@" >/dev/null 2>&1 </dev/null
  local libname ok=1 sym
  libname=$(basename "$lib" | sed 's/\..*//')
  for sym in malloc free; do
    cat "$tmp"/ld.* 2>/dev/null \
      | grep -E "binding file [^ ]*${bin} [^ ]* to [^ ]*${libname}[^ ]* .*symbol \`$sym'" >/dev/null || ok=0
  done
  rm -rf "$tmp"
  [[ $ok == 1 ]]
}
probe() { # PROG LIB
  case $1 in
    python) bound "$2" 'python3[.0-9]*' "$PY" -c pass ;;
    sqlite) bound "$2" sqlite3 sqlite3 :memory: 'select 1' ;;
    git) bound "$2" git git --version ;;
    gcc) bound "$2" cc1 gcc -O2 -c -x c /dev/null -o /dev/null ;;
    memcached) bound "$2" memcached memcached -h ;;
  esac
}

# ---- test --------------------------------------------------------------------------
# prerequisites PROG: exit 77 (ctest's SKIP_RETURN_CODE) when something PROG
# needs is not installed (.ci/deps.sh installs it all)
prerequisites() {
  local need=(/usr/bin/time timeout "$PY") missing=() x
  case $1 in
    python) need+=(/usr/lib/python3.11/test/support/__init__.py) ;;
    sqlite) need+=(sqlite3) ;;
    git) need+=(git) ;;
    gcc) need+=(gcc objdump) ;;
    memcached) need+=(memcached gcc) ;;
  esac
  for x in "${need[@]}"; do
    if [[ $x == /* ]]; then [[ -e $x ]] || missing+=("$x"); else command -v "$x" >/dev/null || missing+=("$x"); fi
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "realprog: SKIP: $1: not installed: ${missing[*]} (run .ci/deps.sh)"
    exit 77
  fi
}

do_test() {
  local prog=$1 lib=$2 scale=${3:-1}
  [[ -f $lib ]] || die "$lib: no such library"
  prerequisites "$prog"
  lib=$(realpath "$lib")
  local passed=0 failed=0
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/realprog-$prog.XXXXXX") || exit 1 # global: the trap needs it
  trap 'rm -rf "$tmp"' EXIT
  ok() { echo "realprog: $prog: ok: $*"; passed=$((passed + 1)); }
  fail() { echo "realprog: FAIL: $prog: $*"; failed=$((failed + 1)); }

  mkdir -p "$tmp/in" "$tmp/glibc" "$tmp/ftmem"
  "prep_$prog" "$tmp/in" "$scale" || die "$prog: prepare failed"
  if [[ ${RP_SEQUENTIAL:-0} == 1 ]]; then
    "run_$prog" "$tmp/in" "$tmp/glibc" ""
    "run_$prog" "$tmp/in" "$tmp/ftmem" "$lib"
  else
    "run_$prog" "$tmp/in" "$tmp/glibc" "" &
    local gpid=$!
    "run_$prog" "$tmp/in" "$tmp/ftmem" "$lib"
    wait "$gpid"
  fi
  local grc frc
  grc=$(cat "$tmp/glibc/rc" 2>/dev/null || echo 255)
  frc=$(cat "$tmp/ftmem/rc" 2>/dev/null || echo 255)
  local g f
  g=$(awk '{ printf "%.1f s, %.0f MB", $1, $2 / 1024 }' "$tmp/glibc/time" 2>/dev/null)
  f=$(awk '{ printf "%.1f s, %.0f MB", $1, $2 / 1024 }' "$tmp/ftmem/time" 2>/dev/null)
  echo "realprog: $prog: glibc $g (exit $grc); ftmem $f (exit $frc)"

  if [[ $grc -eq 0 ]]; then
    ok "glibc reference run"
  else
    fail "the glibc reference run itself failed (exit $grc): environment?"
    tail -20 "$tmp/glibc/stderr" | sed 's/^/  glibc stderr: /'
  fi
  if [[ $frc -eq $grc ]]; then
    ok "same exit status under ftmem"
  else
    local why="exit status $frc under ftmem, $grc on glibc"
    if [[ $frc -eq 124 || $frc -eq 137 ]]; then
      why+=" (timed out: a hang?)"
    elif [[ $frc -gt 128 ]]; then
      why+=" (signal $((frc - 128))?)"
    fi
    fail "$why"
    tail -30 "$tmp/ftmem/stderr" | sed 's/^/  ftmem stderr: /'
  fi

  local same=0
  if compare "$prog" "$tmp/glibc" "$tmp/ftmem" 2>"$tmp/diff"; then
    same=1
  elif [[ $prog == python ]]; then
    # a timing-sensitive test may fail once by itself, on either side: run
    # the modules whose results differ once more on both sides
    local mods
    mods=$(diff "$tmp/glibc/result" "$tmp/ftmem/result" | grep -E '^[<>] (case|module) ' \
             | sed -E 's/^[<>] case test\.(test_[a-z0-9_]+)\..*/\1/; s/^[<>] module (test_[a-z0-9_]+) .*/\1/' \
             | grep -E '^test_' | sort -u | tr '\n' ' ')
    if [[ -n $mods ]]; then
      echo "realprog: python: results differ for $mods; running them again on both sides"
      sed 's/^/  /' "$tmp/diff" | head -30
      mkdir -p "$tmp/glibc2" "$tmp/ftmem2"
      # shellcheck disable=SC2086
      { run_python "$tmp/in" "$tmp/glibc2" "" $mods & }
      local gpid2=$!
      # shellcheck disable=SC2086
      run_python "$tmp/in" "$tmp/ftmem2" "$lib" $mods
      wait "$gpid2"
      if cmp -s "$tmp/glibc2/result" "$tmp/ftmem2/result"; then
        echo "realprog: python: NOTE: $mods agreed on the second run (flaky under load?)"
        same=1
      else
        diff "$tmp/glibc2/result" "$tmp/ftmem2/result" | head -20 | sed 's/^/  second run: /'
      fi
    fi
  fi
  if [[ $same == 1 ]]; then
    ok "output identical to glibc's ($(wc -l <"$tmp/glibc/result") lines)"
  else
    fail "output differs from glibc's"
    sed 's/^/  /' "$tmp/diff" | head -40
  fi

  if grep -q 'ftmem:' "$tmp/ftmem/stderr" 2>/dev/null; then
    fail "ftmem diagnostics on stderr"
    grep 'ftmem:' "$tmp/ftmem/stderr" | head -20 | sed 's/^/  /'
  else
    ok "no ftmem diagnostics"
  fi
  if probe "$prog" "$lib"; then
    ok "malloc and free bound to $(basename "$lib")"
  else
    fail "malloc/free not bound to $(basename "$lib") (LD_DEBUG=bindings)"
  fi

  if [[ $failed -gt 0 ]]; then
    local keep
    keep=${RP_KEEP:-$PWD/realprog-failed}/$prog-$(date +%Y%m%d-%H%M%S)
    mkdir -p "$keep" && cp -r "$tmp"/. "$keep"/ && echo "realprog: $prog: files kept in $keep (the command lines are in */cmd)"
  fi
  echo "realprog: $passed passed, $failed failed"
  [[ $failed -eq 0 ]]
}

cmd=${1:-}
prog=${2:-}
case $prog in
  python | sqlite | git | gcc | memcached) ;;
  *) die "usage: realprog.sh test|prepare|run|compare PROG ... (PROG: python sqlite git gcc memcached)" ;;
esac
case $cmd in
  test) [[ $# -ge 3 ]] || die "usage: realprog.sh test PROG LIB [SCALE]"; do_test "$prog" "$3" "${4:-1}" ;;
  prepare) [[ $# -ge 3 ]] || die "usage: realprog.sh prepare PROG DIR [SCALE]"; mkdir -p "$3"; "prep_$prog" "$(realpath "$3")" "${4:-1}" ;;
  run)
    [[ $# -ge 4 ]] || die "usage: realprog.sh run PROG DIR OUT [PRELOAD]"
    mkdir -p "$4"
    "run_$prog" "$(realpath "$3")" "$(realpath "$4")" "${5:-}"
    ;;
  compare) [[ $# -ge 4 ]] || die "usage: realprog.sh compare PROG GOLD OUT"; compare "$prog" "$3" "$4" ;;
  *) die "unknown command '$cmd'" ;;
esac
