# pyresults.py JUNIT_XML REGRTEST_STDOUT — one line per result of a
# regrtest run, sorted: "case NAME STATUS" for every test case of the JUnit
# file (ok, skipped, failure, error) and "module NAME STATUS" for every test
# module regrtest announced (passed, failed, crashed, skipped, ...).  Two
# runs of the same tests agree line for line when they had the same
# results.  A missing or unreadable XML file yields a "junit missing" line.
import re
import sys
import xml.etree.ElementTree as ET

lines = set()
try:
    root = ET.parse(sys.argv[1]).getroot()
    for tc in root.iter("testcase"):
        status = "ok"
        for child in tc:
            if child.tag in ("skipped", "failure", "error"):
                status = child.tag
                break
        lines.add("case %s %s" % (tc.get("name"), status))
except (OSError, ET.ParseError) as e:
    lines.add("junit missing (%s)" % type(e).__name__)

mod = re.compile(r"\] (test_\w+) (\w+)")
try:
    with open(sys.argv[2], errors="replace") as f:
        for line in f:
            m = mod.search(line)
            if m:
                lines.add("module %s %s" % (m.group(1), m.group(2)))
except OSError:
    pass

sys.stdout.write("".join(l + "\n" for l in sorted(lines)))
