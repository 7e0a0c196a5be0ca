#!/usr/bin/env python3
"""report_objects.py — tabulate a bench/run_objects.sh raw directory.

    report_objects.py collect RAW_DIR -o objects.json
        Read RAW_DIR/{manifest,allocators,params}.tsv, every run's JSON lines,
        python_sizes.jsonl and the callgrind outputs; compute medians, ratios
        and the targets; write one JSON document (raw runs included).
    report_objects.py show objects.json [--txt objects.txt]
        The tables, ratios against the targets, and the instruction counts.

Ratios between two measurements are taken per repetition (the two ran in the
same repetition, close in time) and the median of those is reported; single
figures are medians over the repetitions.  Standard library only.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # importing report.py must not leave bench/__pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import machine_info, read_kv, read_tsv, run_status, tail  # noqa: E402

CALLERS = {"__libc_start_main@@GLIBC_2.34", "__libc_start_main", "main", "mode_cg", "mode_cg_cross",
           "clone", "clone3", "start_thread", "xcg_owner"}

PEERS = ["glibc", "jemalloc", "tcmalloc", "mimalloc", "ftmem"]

TARGETS = {
    "owner_vs_plain": ("owner incref+decref / plain counter (time)", "<=", 1.2),
    "atomic_vs_owner": ("atomic counter / owner incref+decref (time)", ">=", 4.0),
    "deferred_2t_scaling": ("deferred, 2 threads: per-thread rate / 1-thread rate", ">=", 0.8),
    "new_vs_mimalloc": ("ftm_new+ftm_decref throughput / mimalloc malloc+free", ">=", 1.0),
    "new_fl_vs_mimalloc": ("same, FTM_TYPE_FREELIST type / mimalloc malloc+free", ">=", 1.0),
}


# ---- collect ------------------------------------------------------------------

def parse_lines(path):
    out = []
    if path and os.path.exists(path):
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    return out


def parse_callgrind(raw):
    d = os.path.join(raw, "callgrind")
    if not os.path.isdir(d):
        return None
    n = int(open(os.path.join(d, "N")).read().strip())
    out = {"N": n, "runs": {}}
    for fn in sorted(os.listdir(d)):
        m = re.match(r"(.+)\.([a-z0-9_]+)\.out$", fn)
        if not m:
            continue
        alloc, variant = m.groups()
        path = os.path.join(d, fn)
        events, summary = None, None
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith("events:"):
                    events = line.split()[1:]
                elif line.startswith("summary:"):
                    summary = [int(x) for x in line.split()[1:]]
        if not events or summary is None:
            continue
        counts = dict(zip(events, summary + [0] * (len(events) - len(summary))))
        funcs, objects = [], set()
        try:
            ann = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", path],
                                 capture_output=True, text=True, timeout=60,
                                 stdin=subprocess.DEVNULL).stdout
            for line in ann.splitlines():
                mm = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s.*?(\S+):(\S+)\s+\[(.*)\]\s*$", line)
                # --zero-before leaves the callers of the measured loop with
                # its whole cost: keep the functions that did the work
                if mm and not (mm.group(3) in CALLERS or mm.group(3).startswith("0x")
                               or mm.group(3).startswith("(below")):
                    funcs.append({"ir": int(mm.group(1).replace(",", "")), "function": mm.group(3),
                                  "object": os.path.basename(mm.group(4))})
                    objects.add(os.path.basename(mm.group(4)))
        except (OSError, subprocess.TimeoutExpired):
            pass
        rc_path = os.path.join(d, f"{alloc}.{variant}.rc")
        rc = open(rc_path).read().strip() if os.path.exists(rc_path) else "?"
        out["runs"].setdefault(variant, {})[alloc] = {
            "counts": counts, "rc": rc, "top": funcs[:12], "objects": sorted(objects)}
    return out


def collect(raw, out_path):
    runs = []
    for row in read_tsv(os.path.join(raw, "manifest.tsv")):
        results = parse_lines(row.get("stdout"))
        st = run_status(row["rc"], results[0] if results else None)
        if row["rc"] == "3":  # ftm-bench-objects: a count or payload was wrong after the run
            st = "WRONG COUNTS (exit 3: a reference count or payload check failed)"
        info = next((r for r in results if r.get("workload") == "malloc-info"), None)
        if info and row["allocator"] not in ("glibc", "ftmem-static"):
            # the preload must have taken: malloc resolves to the peer's library
            lib = {"jemalloc": "libjemalloc", "tcmalloc": "libtcmalloc", "mimalloc": "libmimalloc",
                   "ftmem": "libftmem"}.get(row["allocator"], "?")
            if lib not in info.get("malloc_from", ""):
                st = f"malloc resolves to {info.get('malloc_from')}, not {row['allocator']}"
        runs.append({
            "step": row["step"], "threads": int(row["threads"]), "allocator": row["allocator"],
            "rep": int(row["rep"]), "rc": row["rc"], "status": st,
            "load1": float(row["load1"]) if row.get("load1") else None,
            "wall_s": float(row["wall_s"]) if row.get("wall_s") else None,
            "results": [r for r in results if "ops" in r],
            "malloc_from": info.get("malloc_from") if info else None,
            "stderr_tail": tail(row["stderr"]) if st != "ok" else "",
        })
    doc = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "params": read_kv(os.path.join(raw, "params.tsv")),
        "allocators": read_tsv(os.path.join(raw, "allocators.tsv")),
        "python": parse_lines(os.path.join(raw, "python_sizes.jsonl")),
        "callgrind": parse_callgrind(raw),
        "runs": runs,
    }
    doc["summary"] = summarize(doc)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"[report_objects.py] wrote {out_path} ({len(runs)} runs)", file=sys.stderr)


# ---- summary ------------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def index(doc):
    """{(workload, threads, allocator): {rep: result}} over successful runs."""
    idx = {}
    for r in doc["runs"]:
        if r["status"] != "ok":
            continue
        for res in r["results"]:
            idx.setdefault((res["workload"], res["threads"], r["allocator"]), {})[r["rep"]] = res
    return idx


def field(idx, key, name):
    reps = idx.get(key, {})
    vals = [reps[k].get(name) for k in sorted(reps)]
    vals = [v for v in vals if isinstance(v, (int, float))]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def paired_ratio(idx, ka, fa, kb, fb, fn=lambda a, b: a / b):
    """median over repetitions of fn(a_rep, b_rep)."""
    ra, rb = idx.get(ka, {}), idx.get(kb, {})
    vals = []
    for rep in sorted(set(ra) & set(rb)):
        a, b = ra[rep].get(fa), rb[rep].get(fb)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
            vals.append(fn(a, b))
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def verdict(key, value):
    if value is None:
        return "n/a"
    _, op, t = TARGETS[key]
    ok = value <= t if op == "<=" else value >= t
    return "met" if ok else "MISSED"


def summarize(doc):
    idx = index(doc)
    S = "ftmem-static"
    s = {"targets": {}}

    # 1-2. pairs
    pair = {}
    for wl in ("pair-ftm-owner", "pair-plain", "pair-cpy312", "pair-atomic", "pair-loop",
               "pair-ftm-immortal", "pair-ftm-immortal-ro", "pair-ftm-shared", "pair-ftm-deferred"):
        pair[wl] = field(idx, (wl, 1, S), "ns_per_op")
    k = lambda wl: (wl, 1, S)  # noqa: E731
    net = lambda a, b: a - b  # noqa: E731
    pair["ratio_owner_vs_plain"] = paired_ratio(idx, k("pair-ftm-owner"), "ns_per_op", k("pair-plain"), "ns_per_op")
    pair["ratio_atomic_vs_owner"] = paired_ratio(idx, k("pair-atomic"), "ns_per_op", k("pair-ftm-owner"), "ns_per_op")
    pair["ratio_cpy312_vs_plain"] = paired_ratio(idx, k("pair-cpy312"), "ns_per_op", k("pair-plain"), "ns_per_op")
    pair["ratio_immortal_vs_owner"] = paired_ratio(idx, k("pair-ftm-immortal"), "ns_per_op", k("pair-ftm-owner"), "ns_per_op")
    for wl in ("pair-ftm-owner", "pair-plain", "pair-cpy312", "pair-atomic", "pair-ftm-immortal",
               "pair-ftm-shared", "pair-ftm-deferred"):
        pair[f"net_{wl}"] = paired_ratio(idx, k(wl), "ns_per_op", k("pair-loop"), "ns_per_op", net)
    imm = idx.get(k("pair-ftm-immortal"), {})
    ro = idx.get(k("pair-ftm-immortal-ro"), {})
    pair["immortal_headers_changed_max"] = max((r.get("headers_changed", 0) for r in imm.values()), default=None)
    pair["immortal_ro_store_faulted_max"] = max((r.get("store_faulted", 0) for r in ro.values()), default=None)
    s["pair"] = pair
    for tk, cell in (("owner_vs_plain", pair["ratio_owner_vs_plain"]),
                     ("atomic_vs_owner", pair["ratio_atomic_vs_owner"])):
        v = (cell or {}).get("median")
        s["targets"][tk] = {"value": v, "verdict": verdict(tk, v), "min": (cell or {}).get("min"),
                            "max": (cell or {}).get("max"), "n": (cell or {}).get("n")}

    # 3. cross-thread release
    xt = []
    for kk in (1, 2, 3):
        ko, km = ("xthread-objects", kk + 1, S), ("xthread-malloc", kk + 1, S)
        row = {"releasers": kk, "threads": kk + 1}
        for f in ("ops_per_s", "peak_backlog", "mean_backlog", "peak_backlog_bytes", "backlog_at_stop",
                  "queued", "merged", "merged_for_others", "peak_rss_growth_kib", "peak_rss_kib",
                  "oversubscribed", "cores"):
            row[f] = field(idx, ko, f)
        row["malloc_ops_per_s"] = field(idx, km, "ops_per_s")
        row["malloc_peak_rss_growth_kib"] = field(idx, km, "peak_rss_growth_kib")
        row["ratio_objects_vs_malloc"] = paired_ratio(idx, ko, "ops_per_s", km, "ops_per_s")
        xt.append(row)
    s["xthread"] = xt

    # 4. hot object
    hot = {}
    for mode in ("atomic", "deferred", "private"):
        rows = []
        for t in (1, 2, 3, 4):
            key = (f"hot-{mode}", t, S)
            if key not in idx:
                continue
            rows.append({
                "threads": t,
                "per_thread_ops_per_s": field(idx, key, "per_thread_ops_per_s"),
                "per_thread_cpu_ops_per_s": field(idx, key, "per_thread_cpu_ops_per_s"),
                "ops_per_s": field(idx, key, "ops_per_s"),
                "ns_per_op_per_thread": field(idx, key, "ns_per_op_per_thread"),
                "cpu_util": field(idx, key, "cpu_util"),
                "oversubscribed": field(idx, key, "oversubscribed"),
                "scaling_vs_1t": paired_ratio(idx, key, "per_thread_ops_per_s",
                                              (f"hot-{mode}", 1, S), "per_thread_ops_per_s"),
                "cpu_scaling_vs_1t": paired_ratio(idx, key, "per_thread_cpu_ops_per_s",
                                                  (f"hot-{mode}", 1, S), "per_thread_cpu_ops_per_s"),
                "vs_atomic": paired_ratio(idx, key, "per_thread_ops_per_s",
                                          ("hot-atomic", t, S), "per_thread_ops_per_s"),
            })
        hot[mode] = rows
    s["hot"] = hot
    d2 = next((r for r in hot.get("deferred", []) if r["threads"] == 2), None)
    v = (d2["scaling_vs_1t"] or {}).get("median") if d2 and d2["scaling_vs_1t"] else None
    util = g(d2["cpu_util"]) if d2 else None
    vd = verdict("deferred_2t_scaling", v)
    if util is not None and util < 0.8 and vd != "n/a":
        # the two threads did not get a core each (other load on the machine):
        # the wall-clock per-thread rate then measures time-sharing, not contention
        vd = f"inconclusive (threads got {util:.2f} of a core each; {vd.lower()} on wall clock)"
    cpu_v = (d2["cpu_scaling_vs_1t"] or {}).get("median") if d2 and d2["cpu_scaling_vs_1t"] else None
    sc = (d2 or {}).get("scaling_vs_1t") or {}
    s["targets"]["deferred_2t_scaling"] = {"value": v, "verdict": vd, "cpu_time_value": cpu_v,
                                           "cpu_util": util, "min": sc.get("min"), "max": sc.get("max"),
                                           "n": sc.get("n")}

    # 5. churn
    churn = {"ftm": {}, "peers": {}, "vs_mimalloc": {}, "vs_peers": {}}
    for wl in ("churn-ftm-new", "churn-ftm-new-freelist", "churn-ftm-malloc", "churn-ftm-new-batch",
               "churn-ftm-new-freelist-batch", "churn-ftm-malloc-batch"):
        churn["ftm"][wl] = field(idx, (wl, 1, S), "ns_per_op")
    for a in PEERS:
        churn["peers"][a] = {wl: field(idx, (wl, 1, a), "ns_per_op")
                             for wl in ("churn-malloc", "churn-malloc-init", "churn-malloc-batch")}
    # throughput ratio = peer ns / ftm ns (> 1: ftm faster)
    inv = lambda ftm_ns, peer_ns: peer_ns / ftm_ns  # noqa: E731
    pairs = [("churn-ftm-new", "churn-malloc"), ("churn-ftm-new-freelist", "churn-malloc"),
             ("churn-ftm-malloc", "churn-malloc"), ("churn-ftm-new-batch", "churn-malloc-batch"),
             ("churn-ftm-new-freelist-batch", "churn-malloc-batch"),
             ("churn-ftm-malloc-batch", "churn-malloc-batch"), ("churn-ftm-new", "churn-malloc-init"),
             ("churn-ftm-new-freelist", "churn-malloc-init")]
    for a in PEERS:
        churn["vs_peers"][a] = {f"{f}|{p}": paired_ratio(idx, (f, 1, S), "ns_per_op", (p, 1, a), "ns_per_op", inv)
                                for f, p in pairs}
    churn["vs_mimalloc"] = churn["vs_peers"]["mimalloc"]
    s["churn"] = churn
    for tk, f in (("new_vs_mimalloc", "churn-ftm-new"), ("new_fl_vs_mimalloc", "churn-ftm-new-freelist")):
        r = churn["vs_mimalloc"].get(f"{f}|churn-malloc")
        v = r["median"] if r else None
        s["targets"][tk] = {"value": v, "verdict": verdict(tk, v), "min": (r or {}).get("min"),
                            "max": (r or {}).get("max"), "n": (r or {}).get("n")}

    # 6. sizes
    sz = next((res for r in doc["runs"] if r["step"] == "sizes" for res in r["results"]
               if res.get("workload") == "sizes"), None)
    s["sizes"] = {"ftmem": sz, "cpython": doc.get("python") or []}

    # callgrind: per iteration, net of the loop baseline
    cg = doc.get("callgrind")
    if cg:
        n = cg["N"]
        base_of = {"pair_ftm": "pair_loop", "pair_immortal": "pair_loop", "pair_plain": "pair_loop",
                   "pair_shared": "pair_loop", "pair_deferred": "pair_loop",
                   "pair_cpy312": "pair_loop", "pair_atomic": "pair_loop", "new": "calls_empty",
                   "new_fl": "calls_empty", "ftm_malloc": "calls_empty", "malloc": "calls_empty"}
        rows = []
        for variant, by_alloc in cg["runs"].items():
            for alloc, r in by_alloc.items():
                c = r["counts"]
                b = cg["runs"].get(base_of.get(variant, ""), {}).get("ftmem-static")
                bc = b["counts"] if b else None
                row = {"variant": variant, "allocator": alloc, "rc": r["rc"],
                       "ir": c.get("Ir", 0) / n, "dr": c.get("Dr", 0) / n, "dw": c.get("Dw", 0) / n,
                       "baseline": base_of.get(variant), "objects": r["objects"],
                       "top": [{"function": t["function"], "object": t["object"], "ir_per_iter": t["ir"] / n}
                               for t in r["top"]]}
                if bc:
                    row["ir_net"] = (c.get("Ir", 0) - bc.get("Ir", 0)) / n
                    row["dr_net"] = (c.get("Dr", 0) - bc.get("Dr", 0)) / n
                    row["dw_net"] = (c.get("Dw", 0) - bc.get("Dw", 0)) / n
                rows.append(row)
        s["callgrind"] = rows

    # 7. the example runtime vs CPython (ftm-bench-runtime / runtime_py.py)
    rt = []
    for wl, t in (("rt-list", 1), ("rt-dict", 1), ("rt-tuples", 1), ("rt-shared-list", 3)):
        kr, kp = (wl, t, "ftmem-rt"), (wl, t, "cpython")
        if kr not in idx and kp not in idx:
            continue
        row = {"workload": wl, "threads": t,
               "unit": next((x.get("unit") for x in idx.get(kr, idx.get(kp, {})).values()), ""),
               "ratio_ops": paired_ratio(idx, kr, "ops_per_s", kp, "ops_per_s"),
               "ratio_peak_rss": paired_ratio(idx, kr, "maxrss_kib", kp, "maxrss_kib"),
               "ratio_cpu": paired_ratio(idx, kr, "ops_per_cpu_s", kp, "ops_per_cpu_s"),
               "python": next((x.get("python") for x in idx.get(kp, {}).values()), None)}
        for side, key in (("rt", kr), ("py", kp)):
            row[side] = {f: field(idx, key, f) for f in (
                "ops_per_s", "ops_per_cpu_s", "maxrss_kib", "rss_start_kib", "build_ns_per_item", "sum_ns_per_item",
                "drop_ns_per_item", "set_ns", "get_ns", "ns_per_tuple", "reader_min_ops_per_s",
                "append_ops_per_s", "misses", "n", "lookups", "cap")}
            row[side]["checksums"] = sorted({x.get("checksum") for x in idx.get(key, {}).values()})
        rt.append(row)
    s["runtime"] = rt

    loads = [r["load1"] for r in doc["runs"] if r.get("load1") is not None]
    s["load1"] = {"median": med(loads), "max": max(loads) if loads else None}
    s["failures"] = [{"step": r["step"], "threads": r["threads"], "allocator": r["allocator"], "rep": r["rep"],
                      "status": r["status"], "stderr_tail": r["stderr_tail"]}
                     for r in doc["runs"] if r["status"] != "ok"]
    return s


# ---- show ---------------------------------------------------------------------

def g(cell, key="median"):
    return None if not cell else cell.get(key)


def f2(x, fmt="{:.2f}"):
    return "-" if x is None else fmt.format(x)


def si(v, unit=""):
    if v is None:
        return "-"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g} {suf}{unit}"
    return f"{v:.3g} {unit}".rstrip()


def spread(cell):
    if not cell or not cell.get("median") or cell.get("n", 0) < 2:
        return ""
    return f" ±{100 * (cell['max'] - cell['min']) / 2 / cell['median']:.0f}%"


def show(doc, txt_path=None):
    s = doc["summary"]
    m, p = doc["machine"], doc["params"]
    out = []
    w = out.append
    cores = m["cores"]
    w(f"ftmem object-layer benchmarks — {doc['generated']}")
    w(f"machine: {cores} cores ({m['cpu']}), {m['mem_mib'] // 1024} GiB, Linux {m['kernel']}, {m['libc']}")
    w(f"NOTE: {cores} cores — every figure below comes from a {cores}-core machine; rows with more "
      f"threads than cores are oversubscribed (marked).")
    w(f"library: ftmem {p.get('ftmem', '?')} (ftmem-static, Release)")
    w(f"params: {p.get('command', '')} | reps={p.get('reps')} (median shown; ratios are the median of "
      f"per-repetition ratios), time box {p.get('duration_ms')} ms{', QUICK' if p.get('quick') == '1' else ''}")
    ld = s["load1"]
    if ld["median"] is not None:
        busy = ld["max"] > 1.5
        w(f"load (1-min loadavg before each run): median {ld['median']:.2f}, max {ld['max']:.2f}"
          + ("  — BUSY MACHINE: differences of tens of percent are noise" if busy else ""))
    if s["failures"]:
        w("FAILED RUNS:")
        for fl in s["failures"]:
            w(f"  {fl['step']} t{fl['threads']} {fl['allocator']} rep {fl['rep']}: {fl['status']}")
    w("")
    w("Targets")
    for key, (desc, op, t) in TARGETS.items():
        tv = s["targets"].get(key, {})
        rng = (f" (reps: {f2(tv.get('min'))}-{f2(tv.get('max'))})" if tv.get("n", 0) and tv["n"] > 1 else "")
        w(f"  {desc:<58} {op} {t:<4}  measured {f2(tv.get('value'))}{rng}  {tv.get('verdict', 'n/a')}")
    w("")

    cgrows = {(r["variant"], r["allocator"]): r for r in s.get("callgrind", [])}

    def cgv(variant, key="ir_net", alloc="ftmem-static"):
        r = cgrows.get((variant, alloc))
        return None if not r else r.get(key)

    # 1-2
    P = s["pair"]
    w("1. incref+decref pair, owner thread, 1 thread (64 objects cycled through a volatile array,")
    w("   an empty asm barrier between incref and decref; ns per pair, median)")
    w(f"   {'variant':<34}{'ns/pair':>9}{'net ns':>9}{'Ir/pair':>9}{'Dw/pair':>9}  note")
    rows = [("ftm owner (biased, plain ld/st)", "pair-ftm-owner", "pair_ftm", ""),
            ("plain non-atomic counter", "pair-plain", "pair_plain", "baseline"),
            ("CPython 3.12 shape (imm. check)", "pair-cpy312", "pair_cpy312", "context, see note"),
            ("atomic counter (lock add/sub)", "pair-atomic", "pair_atomic", ""),
            ("ftm immortal", "pair-ftm-immortal", "pair_immortal", ""),
            ("ftm non-owner (shared, atomic)", "pair-ftm-shared", "pair_shared", "owner exited; uncontended"),
            ("ftm deferred (per-thread count)", "pair-ftm-deferred", "pair_deferred", "uncontended"),
            ("ftm immortal, read-only page", "pair-ftm-immortal-ro", None, ""),
            ("loop only (pointer load+barrier)", "pair-loop", "pair_loop", "Ir: total per iteration")]
    for label, wl, cgk, note in rows:
        cell = P.get(wl)
        netc = P.get(f"net_{wl}")
        ir = cgv(cgk) if cgk and cgk != "pair_loop" else (cgv(cgk, "ir") if cgk else None)
        dw = cgv(cgk, "dw_net") if cgk and cgk != "pair_loop" else (cgv(cgk, "dw") if cgk else None)
        w(f"   {label:<34}{f2(g(cell)):>9}{f2(g(netc)):>9}{f2(ir, '{:.1f}'):>9}{f2(dw, '{:.1f}'):>9}  "
          f"{note}{spread(cell)}")
    ro = P.get("ratio_owner_vs_plain")
    ra = P.get("ratio_atomic_vs_owner")
    w(f"   owner / plain  = {f2(g(ro))}x (target <= 1.2: {s['targets']['owner_vs_plain']['verdict']}; "
      f"range {f2(g(ro, 'min'))}-{f2(g(ro, 'max'))})")
    w(f"   atomic / owner = {f2(g(ra))}x (target >= 4: {s['targets']['atomic_vs_owner']['verdict']}; "
      f"range {f2(g(ra, 'min'))}-{f2(g(ra, 'max'))})")
    w(f"   net ns = ns/pair minus the loop-only ns of the same repetition; Ir/Dw = callgrind, minus the "
      f"loop-only loop (Ir {f2(cgv('pair_loop', 'ir'), '{:.0f}')}/iteration)")
    w("   CPython 3.12 shape: Py_INCREF stores the low 32 bits, Py_DECREF reloads all 64: the reload")
    w("   cannot be forwarded from the narrower store (a store-forwarding stall on this CPU).")
    w("")
    w("2. immortal objects: incref+decref must store nothing")
    w(f"   header bytes changed after the timed loop (64 heap objects): "
      f"{P.get('immortal_headers_changed_max')} (max over repetitions)")
    w(f"   64 hand-built immortal objects on a read-only page: store faulted = "
      f"{P.get('immortal_ro_store_faulted_max')} (a single store would SIGSEGV)")
    w(f"   callgrind data writes per immortal pair, net of the loop: {f2(cgv('pair_immortal', 'dw_net'), '{:.2f}')}"
      f" (owner pair: {f2(cgv('pair_ftm', 'dw_net'), '{:.2f}')})")
    w(f"   ns/pair {f2(g(P.get('pair-ftm-immortal')))} (immortal / owner = "
      f"{f2(g(P.get('ratio_immortal_vs_owner')))}x)")
    w("")

    # 3
    w("3. cross-thread release: 1 thread creates 32 B objects (ftm_new), K threads release them")
    w("   (ftm_decref from a non-owner: queued to the owner, merged at its safepoints); baseline: the")
    w("   same pipeline with ftm_malloc(32)/ftm_free (a remote free).  Backlog = queued - merged,")
    w("   sampled every 1 ms; bytes = backlog x (32 B object + 16 B queue node).")
    w(f"   {'K':>2}{'thr':>4}{'oversub':>8}{'objects/s':>12}{'malloc/s':>11}{'obj/mal':>8}"
      f"{'peak backlog':>13}{'(bytes)':>10}{'mean':>8}{'queued':>10}{'merged(oth)':>14}{'RSS+ KiB':>10}")
    for r in s["xthread"]:
        ov = g(r["oversubscribed"])
        merged = f"{si(g(r['merged']))} ({si(g(r['merged_for_others']))})"
        w(f"   {r['releasers']:>2}{r['threads']:>4}{('yes' if ov else 'no'):>8}{si(g(r['ops_per_s'])):>12}"
          f"{si(g(r['malloc_ops_per_s'])):>11}{f2(g(r['ratio_objects_vs_malloc'])):>8}"
          f"{f2(g(r['peak_backlog']), '{:.0f}'):>13}{si(g(r['peak_backlog_bytes']), 'B'):>10}"
          f"{f2(g(r['mean_backlog']), '{:.0f}'):>8}{si(g(r['queued'])):>10}{merged:>14}"
          f"{f2(g(r['peak_rss_growth_kib']), '{:.0f}'):>10}")
    w("")

    # 4
    w(f"4. one hot shared object, T threads incref+decref it; its owner (main) only sleeps.  Per-thread")
    w(f"   rate = ops / wall time of that thread; cpu = ops / its CPU time (rate while it runs).")
    w(f"   {cores} cores: T > {cores} is oversubscribed (threads time-share a core).")
    w(f"   Thread i is pinned to CPU i mod {cores}.  util = CPU time / (wall x T): below ~0.9 other")
    w(f"   processes took part of the cores, and a per-thread wall rate then shows time-sharing.")
    w(f"   {'mode':<10}{'T':>2}{'oversub':>8}{'util':>6}{'per-thread/s':>14}{'x 1T':>7}{'cpu/s':>11}{'x 1T':>7}"
      f"{'total/s':>11}{'ns/pair':>9}{'vs atomic':>10}")
    for mode in ("atomic", "deferred", "private"):
        for r in s["hot"].get(mode, []):
            ov = g(r["oversubscribed"])
            w(f"   {mode:<10}{r['threads']:>2}{('yes' if ov else 'no'):>8}{f2(g(r['cpu_util'])):>6}"
              f"{si(g(r['per_thread_ops_per_s'])):>14}"
              f"{f2(g(r['scaling_vs_1t'])):>7}{si(g(r['per_thread_cpu_ops_per_s'])):>11}"
              f"{f2(g(r['cpu_scaling_vs_1t'])):>7}{si(g(r['ops_per_s'])):>11}"
              f"{f2(g(r['ns_per_op_per_thread'])):>9}{f2(g(r['vs_atomic'])):>10}")
    t = s["targets"]["deferred_2t_scaling"]
    w(f"   deferred, 2 threads: per-thread rate {f2(t['value'])}x the 1-thread rate (target >= 0.8: {t['verdict']});")
    w(f"   per second of CPU time: {f2(t.get('cpu_time_value'))}x")
    w("   private = each thread increfs its own object (the owner fast path): the no-sharing ceiling.")
    w("")

    # 5
    C = s["churn"]
    w("5. object churn, 1 thread: ftm_new+ftm_decref of a 32 B object (basic_size 32) vs malloc(32)+free")
    w("   of each peer in its own process (LD_PRELOAD).  64 blocks stay live so no pool empties.")
    w("   single = allocate, free, repeat; batch = allocate 256, free 256.  ns per pair, median.")
    w(f"   {'ftmem (linked, ftm_ API)':<34}{'single':>9}{'batch':>9}")
    for label, a, b in (("ftm_new+ftm_decref", "churn-ftm-new", "churn-ftm-new-batch"),
                        ("  same, FTM_TYPE_FREELIST", "churn-ftm-new-freelist", "churn-ftm-new-freelist-batch"),
                        ("ftm_malloc+ftm_free (no object)", "churn-ftm-malloc", "churn-ftm-malloc-batch")):
        w(f"   {label:<34}{f2(g(C['ftm'][a])):>9}{f2(g(C['ftm'][b])):>9}")
    w(f"   {'malloc+free (LD_PRELOAD)':<34}{'single':>9}{'batch':>9}{'+init32':>9}   "
      f"{'new/peer':>9}{'new-fl/peer':>12}{'batch':>7}{'fl-batch':>9}  (throughput ratios)")
    for a in PEERS:
        pc = C["peers"].get(a, {})
        if not any(pc.values()):
            continue
        vp = C["vs_peers"][a]
        w(f"   {a:<34}{f2(g(pc.get('churn-malloc'))):>9}{f2(g(pc.get('churn-malloc-batch'))):>9}"
          f"{f2(g(pc.get('churn-malloc-init'))):>9}   "
          f"{f2(g(vp.get('churn-ftm-new|churn-malloc'))):>9}{f2(g(vp.get('churn-ftm-new-freelist|churn-malloc'))):>12}"
          f"{f2(g(vp.get('churn-ftm-new-batch|churn-malloc-batch'))):>7}"
          f"{f2(g(vp.get('churn-ftm-new-freelist-batch|churn-malloc-batch'))):>9}")
    for tk in ("new_vs_mimalloc", "new_fl_vs_mimalloc"):
        t = s["targets"][tk]
        w(f"   {TARGETS[tk][0]}: {f2(t['value'])} (target >= 1.0: {t['verdict']})")
    vm = C["vs_mimalloc"]
    w(f"   against mimalloc malloc+memset(32)+free (initialisation included on both sides): "
      f"new {f2(g(vm.get('churn-ftm-new|churn-malloc-init')))}, "
      f"new-freelist {f2(g(vm.get('churn-ftm-new-freelist|churn-malloc-init')))}")
    w("")

    # 6
    Z = s["sizes"]
    fz = Z["ftmem"] or {}
    w("6. header bytes per object (sizeof / sys.getsizeof-style, block handed out in brackets)")
    cp = [c for c in Z["cpython"] if not c.get("free_threaded")]
    hdr = f"   {'':<40}{'ftmem':>12}"
    for c in cp:
        hdr += f"{'CPython ' + c['version']:>16}"
    hdr += f"{'CPython 3.13t':>16}"
    w(hdr)

    def rowz(label, fv, key, ft):
        line = f"   {label:<40}{fv:>12}"
        for c in cp:
            line += f"{str(c.get(key, '-')) if key else '-':>16}"
        line += f"{ft:>16}"
        w(line)
    rowz("object header (object())", f"{fz.get('sizeof_ftm_object', '-')} [{fz.get('object_block', '-')}]",
         "getsizeof_object", "32 (doc)")
    rowz("GC pre-header of containers", f"{fz.get('gc_head', '-')}", "gc_head", "0 (doc)")
    line = f"   {'GC-tracked object: header + GC head':<40}{fz.get('sizeof_ftm_object', '-'):>12}"
    for c in cp:
        line += f"{c['getsizeof_object'] + c['gc_head']:>16}"
    w(line + f"{'32 (doc)':>16}")
    rowz("empty tuple (var header, 0 items)",
         f"{fz.get('empty_tuple_sizeof', '-')} [{fz.get('empty_tuple_block', '-')}]", "getsizeof_empty_tuple",
         "40 (doc)")
    rowz("empty list (var header+items+allocated)",
         f"{fz.get('empty_list_sizeof', '-')} [{fz.get('empty_list_block', '-')}]", "getsizeof_empty_list",
         "56 (doc)")
    w("   ftmem keeps the collector's bits in the header (ob_gc_bits): no pre-header.  CPython figures")
    w("   are measured with each python3 found here (default builds); no free-threaded build is")
    w("   installed, so the 3.13t column is from its headers (32 B PyObject, no GC pre-header for")
    w("   tuples/lists), not measured.")
    w("")

    # 7
    R = s.get("runtime") or []
    if R:
        pyv = next((r["python"] for r in R if r.get("python")), "?")
        w(f"7. the example runtime (examples/runtime, ftm-bench-runtime) vs CPython {pyv} running the same")
        w("   code (bench/runtime_py.py, timed in-process with time.perf_counter).  One process per workload")
        w("   and side; one-thread workloads: best of 5 rounds in the process, median over repetitions.")
        w("   rt/CPy = throughput ratio (> 1: the runtime is faster), median of per-repetition ratios;")
        w("   cpu = the same per second of thread CPU time (time.thread_time), which other load barely moves.")
        w("   Peak RSS = ru_maxrss of the process; growth = peak - RSS when the workload started.")
        w(f"   {'workload':<16}{'runtime/s':>11}{'CPython/s':>11}{'rt/CPy':>8}{'range':>12}{'cpu':>6}"
          f"{'peak RSS MiB rt':>17}{'CPy':>7}{'growth rt':>11}{'CPy':>7}  checksums")
        label = {"rt-list": "list of ints", "rt-dict": "dict str->int", "rt-tuples": "tuple churn",
                 "rt-shared-list": "shared list 3t"}
        mib = lambda kib: None if kib is None else kib / 1024  # noqa: E731
        for r in R:
            a, b = r["rt"], r["py"]
            ra = r["ratio_ops"]
            grow = lambda x: (None if g(x["maxrss_kib"]) is None or g(x["rss_start_kib"]) is None  # noqa: E731
                              else max(0.0, mib(g(x["maxrss_kib"]) - g(x["rss_start_kib"]))))
            same = ("same" if a["checksums"] and a["checksums"] == b["checksums"] and len(a["checksums"]) == 1
                    else "differ" if a["checksums"] and b["checksums"] else "-")
            if r["workload"] == "rt-shared-list":
                same = "n/a (time box)"
            rng = f"{f2(g(ra, 'min'))}-{f2(g(ra, 'max'))}" if ra and ra.get("n", 0) > 1 else ""
            w(f"   {label.get(r['workload'], r['workload']):<16}{si(g(a['ops_per_s'])):>11}{si(g(b['ops_per_s'])):>11}"
              f"{f2(g(ra)):>8}{rng:>12}{f2(g(r['ratio_cpu'])):>6}{f2(mib(g(a['maxrss_kib'])), '{:.1f}'):>17}"
              f"{f2(mib(g(b['maxrss_kib'])), '{:.1f}'):>7}{f2(grow(a), '{:.1f}'):>11}{f2(grow(b), '{:.1f}'):>7}  {same}")
        for r in R:
            a, b = r["rt"], r["py"]
            wl = r["workload"]
            if wl == "rt-list":
                w(f"   list: op = one int appended, read back by index and dropped (N = {f2(g(a['n']), '{:.0f}')}); ns per item "
                  f"rt / CPython: build {f2(g(a['build_ns_per_item']), '{:.1f}')} / {f2(g(b['build_ns_per_item']), '{:.1f}')}, "
                  f"sum {f2(g(a['sum_ns_per_item']), '{:.1f}')} / {f2(g(b['sum_ns_per_item']), '{:.1f}')}, "
                  f"drop {f2(g(a['drop_ns_per_item']), '{:.1f}')} / {f2(g(b['drop_ns_per_item']), '{:.1f}')}")
            elif wl == "rt-dict":
                w(f"   dict: op = one set or one lookup ({f2(g(a['n']), '{:.0f}')} sets, {f2(g(a['lookups']), '{:.0f}')} lookups "
                  f"of the same key objects in scattered order); ns rt / CPython: set {f2(g(a['set_ns']), '{:.1f}')} / "
                  f"{f2(g(b['set_ns']), '{:.1f}')}, lookup {f2(g(a['get_ns']), '{:.1f}')} / {f2(g(b['get_ns']), '{:.1f}')}")
            elif wl == "rt-tuples":
                w(f"   tuples: op = (a, b, c) of existing objects made and dropped; ns rt / CPython: "
                  f"{f2(g(a['ns_per_tuple']), '{:.1f}')} / {f2(g(b['ns_per_tuple']), '{:.1f}')}")
            elif wl == "rt-shared-list":
                w(f"   shared list: op = one read by 2 reader threads (rt_list_get, lock-free) while a 3rd appends (cap "
                  f"{f2(g(a['cap']), '{:.0f}')}, then pops back to half); slowest reader/s rt {si(g(a['reader_min_ops_per_s']))}, "
                  f"CPython {si(g(b['reader_min_ops_per_s']))}; appends/s rt {si(g(a['append_ops_per_s']))}, "
                  f"CPython {si(g(b['append_ops_per_s']))}.")
                w(f"     3 threads on {cores} cores: oversubscribed.  CPython {pyv} has the GIL (its threads take turns);"
                  " the runtime's threads run in parallel.")
        w("")

    # callgrind
    cg = doc.get("callgrind")
    if cg:
        w(f"Instructions (callgrind, N = {cg['N']:,} iterations after a 10,000-iteration warm-up that is not counted;")
        w("net = minus the baseline loop: pairs - the loop-only loop, churn - the same loop calling two")
        w("empty noinline functions; malloc's net includes its two PLT stubs; batch: allocate 256, free 256,")
        w("no baseline; xrelease = one non-owner ftm_decref that queues the object to its live owner,")
        w("xmerge = the owner's merge of one queued object (both per object))")
        w(f"   {'variant':<18}{'allocator':<14}{'Ir/iter':>9}{'net Ir':>9}{'net Dr':>8}{'net Dw':>8}  top functions (self Ir/iter)")
        order = ["pair_ftm", "pair_immortal", "pair_shared", "pair_deferred", "pair_plain", "pair_cpy312",
                 "pair_atomic", "pair_loop", "new", "new_fl", "ftm_malloc", "calls_empty", "malloc",
                 "new_batch", "ftm_malloc_batch", "malloc_batch", "xrelease", "xmerge"]
        rows = sorted(s.get("callgrind", []), key=lambda r: (order.index(r["variant"]) if r["variant"] in order else 99,
                                                              PEERS.index(r["allocator"]) if r["allocator"] in PEERS else -1))
        for r in rows:
            top = ", ".join(f"{t['function']} {t['ir_per_iter']:.0f}" for t in r["top"][:6]
                            if t["ir_per_iter"] >= 1) if not r["variant"].startswith("pair") else ""
            w(f"   {r['variant']:<18}{r['allocator']:<14}{r['ir']:>9.1f}{f2(r.get('ir_net'), '{:.1f}'):>9}"
              f"{f2(r.get('dr_net'), '{:.1f}'):>8}{f2(r.get('dw_net'), '{:.1f}'):>8}  {top}"
              + (f"  [rc {r['rc']}]" if r["rc"] != "0" else ""))
    text = "\n".join(out) + "\n"
    if txt_path:
        with open(txt_path, "w") as f:
            f.write(text)
        print(f"[report_objects.py] wrote {txt_path}", file=sys.stderr)
    sys.stdout.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("raw")
    c.add_argument("-o", "--out", required=True)
    sh = sub.add_parser("show")
    sh.add_argument("json")
    sh.add_argument("--txt")
    args = ap.parse_args()
    if args.cmd == "collect":
        collect(args.raw, args.out)
    else:
        with open(args.json) as f:
            show(json.load(f), args.txt)


if __name__ == "__main__":
    main()
