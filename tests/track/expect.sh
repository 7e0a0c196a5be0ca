#!/bin/sh
# expect.sh STATUS REGEX [REGEX...] -- COMMAND...: run COMMAND, then pass
# only if its exit status is STATUS ("nonzero" for any failure) and its
# combined output matches every REGEX (grep -E).  Prints the output.
want=$1; shift
pats=""
while [ "$1" != "--" ]; do
  pats="$pats
$1"
  shift
done
shift
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
case $want in
  nonzero) [ "$rc" -ne 0 ] || { echo "expect: FAIL: exit status 0, wanted a failure"; exit 1; } ;;
  *) [ "$rc" -eq "$want" ] || { echo "expect: FAIL: exit status $rc, wanted $want"; exit 1; } ;;
esac
printf '%s\n' "$pats" | while IFS= read -r p; do
  [ -z "$p" ] && continue
  printf '%s\n' "$out" | grep -Eq -- "$p" || { echo "expect: FAIL: no line matches: $p"; exit 1; }
done || exit 1
echo "expect: ok"
