#!/bin/sh
# check_report.sh CASE TOOL PROG WORKDIR — the report tests (tests/report):
#   page      report_prog writes a report; ftmem-report makes the page;
#             headless Chromium renders it: the rendered DOM must show the
#             size classes, arenas, memory series, GC pauses, top sites and
#             census, and a screenshot is saved (WORKDIR/report.png)
#   env       FTMEM_REPORT=<path> writes the report at exit, with samples
#   exports   --massif (ms_print reads it) and --collapsed (flame graphs)
#   bad       missing, empty, truncated, corrupt or foreign reports and an
#             unwritable output: exit 1, a message, no output file
set -u
case_=$1 tool=$2 prog=$3 dir=$4
mkdir -p "$dir"
fail() { echo "check_report: FAIL ($case_): $*"; exit 1; }
report="$dir/report.json"
make_report() { "$prog" write "$report" >/dev/null || fail "report_prog write failed"; }

case $case_ in
page)
  make_report
  python3 "$tool" "$report" -o "$dir/report.html" >/dev/null || fail "ftmem-report failed"
  browser=$(command -v chromium || command -v chromium-browser || true)
  [ -n "$browser" ] || fail "no chromium (Debian package chromium; .ci/deps.sh installs it)"
  flags="--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars"
  # shellcheck disable=SC2086
  timeout 120 "$browser" $flags --dump-dom "file://$dir/report.html" >"$dir/dom.html" 2>"$dir/chromium.log" \
    || fail "chromium --dump-dom failed: $(tail -n 3 "$dir/chromium.log")"
  # which classes have pools at the report's moment varies: any class label
  for want in '<h2>Pools per size class</h2>' 'id="size-classes"' ' B · ' ' pool' 'id="arenas"' \
              'id="memory-over-time"' '<polyline' 'id="gc-pauses"' 'id="gc-pause-histogram"' \
              'id="top-sites"' 'report_prog.c:' 'rt_str_new' 'id="census"' '>str<' '>list<'; do
    grep -qF -- "$want" "$dir/dom.html" || fail "the rendered page lacks: $want"
  done
  # shellcheck disable=SC2086
  timeout 120 "$browser" $flags --window-size=1100,2600 --screenshot="$dir/report.png" \
    "file://$dir/report.html" >/dev/null 2>>"$dir/chromium.log" || fail "chromium --screenshot failed"
  [ "$(head -c 8 "$dir/report.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "the screenshot is not a PNG"
  [ "$(wc -c <"$dir/report.png")" -gt 20000 ] || fail "the screenshot is nearly empty"
  echo "check_report: page ok ($dir/report.html, screenshot $dir/report.png)"
  ;;
env)
  rm -f "$report"
  FTMEM_REPORT="$report" FTMEM_REPORT_INTERVAL=5 FTMEM_TRACE=4 FTMEM_LEAK_REPORT=1 "$prog" env >/dev/null \
    2>"$dir/stderr.txt" || fail "report_prog env failed"
  # the leak report at exit: the census and the live allocation sites
  grep -q '^ftmem: leak report: ' "$dir/stderr.txt" || fail "no leak report at exit"
  grep -q '^list ' "$dir/stderr.txt" || fail "the leak report's census lacks the kept lists"
  grep -q 'report_prog.c:[0-9]*: size=' "$dir/stderr.txt" || fail "the leak report lacks allocation sites"
  python3 - "$report" <<'PY' || fail "the report written at exit is wrong"
import json, sys
d = json.load(open(sys.argv[1]))
s = d["series"]["samples"]
assert len(s) >= 5, f"{len(s)} samples"
assert d["gc"]["collections"], "no collection logged"
assert any(c["type"] == "list" for c in d["census"]), "no list in the census"
assert d["trace"]["tracing"] and d["trace"]["top_lines"], "no trace statistics"
assert any(c["blocks_used"] > 0 for c in d["size_classes"])
print(f"check_report: env ok: {len(s)} samples, {len(d['gc']['collections'])} collections")
PY
  ;;
preload)
  # malloc through the override: a program that knows nothing of ftmem
  lib=$5
  rm -f "$dir"/py-*.json
  # through `sh -c` (forks, then execs python3): %p names each process's report
  FTMEM_REPORT="$dir/py-%p.json" FTMEM_REPORT_INTERVAL=1 FTMEM_TRACE=4 LD_PRELOAD="$lib" PYTHONMALLOC=malloc \
    sh -c 'exec /usr/bin/python3 -c "import time; x = [str(i) * 3 for i in range(50000)]; time.sleep(0.05); print(len(x))"' >"$dir/out.txt" \
    || fail "python3 failed"
  report=$(ls "$dir"/py-*.json 2>/dev/null | head -n 1)
  [ -n "$report" ] || fail "no report written (FTMEM_REPORT with %p)"
  grep -qx 50000 "$dir/out.txt" || fail "python3 printed $(cat "$dir/out.txt")"
  python3 - "$report" <<'PY' || fail "the preloaded program's report is wrong"
import json, sys
d = json.load(open(sys.argv[1]))
tr = d["trace"]
# at exit python3 has freed its objects already: its peak shows the list
assert tr["tracing"] and tr["peak"] > 2_000_000, tr["peak"]
# what is live at exit depends on the interpreter's teardown: only ask for
# some site, and for the sampler to have seen the list while it lived
assert tr["top_lines"], "no live allocation site at exit"
assert max(x[4] for x in d["series"]["samples"]) > 2_000_000, "the series never saw the traced list"
assert sum(c["mallocs"] for c in d["size_classes"]) > 50000
print(f"check_report: preload ok: python3 peaked at {tr['peak']} traced bytes")
PY
  ;;
exports)
  make_report
  python3 "$tool" "$report" -o "$dir/x.html" --massif "$dir/report.massif" --collapsed "$dir/report.folded" >/dev/null \
    || fail "ftmem-report failed"
  ms_print "$dir/report.massif" >"$dir/ms_print.txt" 2>&1 || fail "ms_print refused the massif file: $(head -n 3 "$dir/ms_print.txt")"
  grep -q "Number of snapshots:" "$dir/ms_print.txt" || fail "ms_print printed no snapshot"
  [ -s "$dir/report.folded" ] || fail "no collapsed stacks"
  grep -Evq '^[^ ]+( [^ ]+)* [0-9]+$' "$dir/report.folded" && fail "a collapsed line is not 'stack bytes'"
  grep -q 'worker' "$dir/report.folded" || fail "the collapsed stacks miss the workers"
  echo "check_report: exports ok"
  ;;
bad)
  make_report
  out="$dir/bad.html"
  check_bad() { # input description
    rm -f "$out"
    msg=$(python3 "$tool" "$1" -o "$out" 2>&1 >/dev/null)
    rc=$?
    [ $rc -eq 1 ] || fail "$2: exit status $rc, wanted 1"
    echo "$msg" | grep -q '^ftmem-report: ' || fail "$2: no message ($msg)"
    [ ! -e "$out" ] || fail "$2: an output file was left"
    echo "  $2: $msg"
  }
  check_bad "$dir/does-not-exist.json" "missing file"
  : >"$dir/empty.json"; check_bad "$dir/empty.json" "empty file"
  head -c 700 "$report" >"$dir/truncated.json"; check_bad "$dir/truncated.json" "truncated"
  printf '\001\377garbage{{' >"$dir/corrupt.json"; check_bad "$dir/corrupt.json" "corrupt"
  echo '{"hello": 1}' >"$dir/foreign.json"; check_bad "$dir/foreign.json" "not a report"
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d['size_classes'][0]['pools']='x'; json.dump(d, open(sys.argv[2],'w'))" \
    "$report" "$dir/badtype.json"
  check_bad "$dir/badtype.json" "wrong field type"
  msg=$(python3 "$tool" "$report" -o /nonexistent-dir/x.html 2>&1 >/dev/null); rc=$?
  [ $rc -eq 1 ] && echo "$msg" | grep -q 'cannot write' || fail "unwritable output: $rc $msg"
  echo "check_report: bad input ok"
  ;;
*) fail "unknown case" ;;
esac
