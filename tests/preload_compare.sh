#!/bin/sh
# preload_compare.sh LIB CMD [ARG...] — run CMD plainly and under
# LD_PRELOAD=LIB; pass when both exit alike with the same stdout and the
# preloaded run really bound malloc/free to LIB (checked with LD_DEBUG).
# $FTT_INPUT names a file of 300,000 generated lines CMD may read.
# Prints "preload: N passed, N failed" as its closing line.
lib=$1
shift
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
FTT_INPUT=$tmp/input
export FTT_INPUT
awk 'BEGIN { srand(7); for (i = 0; i < 300000; i++)
       printf "%d %s%d\n", int(rand() * 1000000000), substr("qwertyuiopasdfgh", i % 16 + 1), i % 977 }' >"$FTT_INPUT"

passed=0
failed=0
fail() { echo "preload: FAIL: $*" >&2; failed=$((failed + 1)); }

"$@" >"$tmp/plain" 2>"$tmp/plain.err"
rc_plain=$?
LD_PRELOAD=$lib "$@" >"$tmp/pre" 2>"$tmp/pre.err"
rc_pre=$?
if [ "$rc_plain" -ne "$rc_pre" ]; then
    fail "exit status $rc_pre under LD_PRELOAD, $rc_plain without"
    sed 's/^/  stderr: /' "$tmp/pre.err" | head -40 >&2
else
    passed=$((passed + 1))
fi
if ! cmp -s "$tmp/plain" "$tmp/pre"; then
    # Output that changes between runs by itself (directory times) is not
    # the allocator's fault: compare with a second plain run.
    "$@" >"$tmp/plain2" 2>/dev/null
    if cmp -s "$tmp/plain2" "$tmp/pre"; then
        passed=$((passed + 1))
    else
        fail "stdout differs under LD_PRELOAD ($(wc -l <"$tmp/pre") vs $(wc -l <"$tmp/plain") lines)"
        diff "$tmp/plain" "$tmp/pre" | head -20 >&2
        sed 's/^/  stderr: /' "$tmp/pre.err" | head -20 >&2
    fi
else
    passed=$((passed + 1))
fi
if grep -q 'ftmem:' "$tmp/pre.err"; then
    fail "ftmem diagnostics under LD_PRELOAD"
    grep 'ftmem:' "$tmp/pre.err" | head -20 >&2
else
    passed=$((passed + 1))
fi

# Was malloc really ftmem's?  The dynamic linker reports each binding.
LD_DEBUG=bindings LD_DEBUG_OUTPUT=$tmp/ld LD_PRELOAD=$lib "$@" >/dev/null 2>&1
libname=$(basename "$lib" | sed 's/\..*//')
if cat "$tmp"/ld.* 2>/dev/null | grep -E "to [^ ]*$libname[^ ]* .*symbol \`(malloc|free)'" >/dev/null; then
    passed=$((passed + 1))
else
    fail "no binding of malloc/free to $lib found with LD_DEBUG=bindings"
fi

echo "preload: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
