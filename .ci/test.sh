#!/usr/bin/env bash
# test.sh — ftmem's CI: dependencies, then configure, build and ctest in six
# variants, stopping at the first that fails.
#
#   build/ci-release  Release, malloc override on: unit, stress, override
#                     tests, and the stress programs at full size too (about a
#                     minute; they caught a bug the smoke size missed); the
#                     benchmarks are built to catch breakage (they register no
#                     tests)
#   build/ci-debug    Debug with FTMEM_DEBUG=ON (assertions, double-free checks)
#                     and FTMEM_TRACK=valgrind: the tests run with memcheck's
#                     client requests compiled in, and tests/track runs bug
#                     programs (and python3 on the preloaded malloc) under
#                     memcheck
#   build/ci-secure   Release with FTMEM_SECURE=ON (encoded free lists,
#                     double-free checks): unit and stress
#   build/ci-asan     FTMEM_SANITIZE=address (ASan + UBSan) with FTMEM_TRACK=asan
#                     (pool blocks poisoned until handed out): unit, stress
#                     and tests/track
#   build/ci-tsan     FTMEM_SANITIZE=thread: stress programs only (Criterion
#                     cannot run under TSan, shared TSAN.md)
#   build/ci-fuzz     CC=clang, FTMEM_SANITIZE=address, FTMEM_BUILD_FUZZ=ON:
#                     the libFuzzer harnesses, 20 s each on their seed
#                     corpora (ctest -L fuzz; tests/fuzz/README.md)
#
# Ends with one line per variant and a last line "N passed, N failed" (tests
# over all variants, from ctest's summaries; a variant that does not
# configure or build counts as one failure).  Exit status 0 only if every
# variant passed.
#
# Environment: JOBS (build and ctest parallelism, default 2); VARIANTS (a
# subset, e.g. "debug tsan"); CI=true starts every variant from an empty
# build directory.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
jobs=${JOBS:-2}

bash .ci/deps.sh || { echo "ci: installing dependencies failed"; echo "0 passed, 1 failed"; exit 1; }

common=(-DFTMEM_BUILD_STRESS=ON -DFTMEM_STRESS_FULL=OFF)
declare -A args=(
  [release]="-DCMAKE_BUILD_TYPE=Release -DFTMEM_SECURE=OFF -DFTMEM_OVERRIDE=ON -DFTMEM_DEBUG=OFF -DFTMEM_SANITIZE= -DFTMEM_TRACK= -DFTMEM_BUILD_TESTS=ON -DFTMEM_BUILD_BENCH=ON -DFTMEM_STRESS_FULL=ON"
  [debug]="-DCMAKE_BUILD_TYPE=Debug -DFTMEM_SECURE=OFF -DFTMEM_DEBUG=ON -DFTMEM_SANITIZE= -DFTMEM_TRACK=valgrind -DFTMEM_BUILD_TESTS=ON -DFTMEM_BUILD_BENCH=OFF"
  [secure]="-DCMAKE_BUILD_TYPE=Release -DFTMEM_SECURE=ON -DFTMEM_DEBUG=OFF -DFTMEM_SANITIZE= -DFTMEM_TRACK= -DFTMEM_BUILD_TESTS=ON -DFTMEM_BUILD_BENCH=OFF"
  [asan]="-DCMAKE_BUILD_TYPE=RelWithDebInfo -DFTMEM_SECURE=OFF -DFTMEM_DEBUG=OFF -DFTMEM_SANITIZE=address -DFTMEM_TRACK=asan -DFTMEM_BUILD_TESTS=ON -DFTMEM_BUILD_BENCH=OFF"
  [tsan]="-DCMAKE_BUILD_TYPE=RelWithDebInfo -DFTMEM_SECURE=OFF -DFTMEM_DEBUG=OFF -DFTMEM_SANITIZE=thread -DFTMEM_TRACK= -DFTMEM_BUILD_TESTS=OFF -DFTMEM_BUILD_BENCH=OFF"
  [fuzz]="-DCMAKE_BUILD_TYPE=RelWithDebInfo -DFTMEM_SECURE=OFF -DFTMEM_DEBUG=OFF -DFTMEM_SANITIZE=address -DFTMEM_TRACK= -DFTMEM_BUILD_FUZZ=ON -DFTMEM_BUILD_TESTS=OFF -DFTMEM_BUILD_STRESS=OFF -DFTMEM_BUILD_BENCH=OFF"
)
# Environment of a variant's configure step (CC takes effect in a fresh
# build directory only), and extra ctest arguments.
declare -A env_of=([fuzz]="CC=clang")
declare -A ctest_of=([fuzz]="-L fuzz")
read -r -a variants <<<"${VARIANTS:-release debug secure asan tsan fuzz}"

echo "ci: $(uname -srm), $(nproc) cores; $(gcc --version | head -n 1); $(cmake --version | head -n 1)"

total_passed=0
total_failed=0
summary=()
status=0

fmt_time() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# Runs one variant; sets v_passed, v_failed and v_note.  Returns non-zero
# when the variant failed (a configure or build failure counts as one
# failed test, and so does a ctest run that fails without failing a test).
run_variant() {
  local v=$1 dir=build/ci-$1 log rc line total
  v_passed=0 v_failed=0 v_note=""
  echo
  echo "==== ci-$v: configure ($dir)"
  [ "${CI:-}" != "true" ] || rm -rf "$dir"
  # shellcheck disable=SC2086 # the variant's arguments are words
  if ! env ${env_of[$v]:-} cmake -S . -B "$dir" "${common[@]}" ${args[$v]}; then
    v_failed=1 v_note="configure failed"
    return 1
  fi
  echo "==== ci-$v: build"
  if ! cmake --build "$dir" -j "$jobs"; then
    v_failed=1 v_note="build failed"
    return 1
  fi
  echo "==== ci-$v: test"
  log=$dir/ci-ctest.log
  # shellcheck disable=SC2086 # the variant's ctest arguments are words
  ctest --test-dir "$dir" --output-on-failure -j "$jobs" --timeout 900 ${ctest_of[$v]:-} 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)
  total=0
  if [ -n "$line" ]; then
    v_failed=$(sed -E 's/.* ([0-9]+) tests? failed out of .*/\1/' <<<"$line")
    total=$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$line")
    v_passed=$((total - v_failed))
  fi
  v_note="$total tests, $v_failed failing"
  if [ "$total" -eq 0 ]; then
    v_failed=1 v_note="no test ran (ctest exit $rc)"
    return 1
  fi
  if [ "$rc" -ne 0 ]; then
    [ "$v_failed" -gt 0 ] || v_failed=1
    v_note="$v_note (ctest exit $rc)"
    return 1
  fi
  [ "$v_failed" -eq 0 ]
}

for v in "${variants[@]}"; do
  start=$SECONDS
  if [ -z "${args[$v]+x}" ]; then
    ok=false v_passed=0 v_failed=1 v_note="unknown variant"
  elif run_variant "$v"; then
    ok=true
  else
    ok=false
  fi
  total_passed=$((total_passed + v_passed))
  total_failed=$((total_failed + v_failed))
  summary+=("$(printf '%-12s %-6s %-40s %s' "ci-$v" "$($ok && echo OK || echo FAILED)" \
    "$v_note" "$(fmt_time $((SECONDS - start)))")")
  if ! $ok; then
    status=1
    echo "ci: ci-$v failed ($v_note); stopping"
    break
  fi
done

echo
echo "==== summary"
for s in "${summary[@]}"; do
  echo "$s"
done
echo "$total_passed passed, $total_failed failed"
exit $status
