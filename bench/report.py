#!/usr/bin/env python3
"""report.py — turn a bench/run.sh raw directory into JSON, a table and a chart.

    report.py collect RAW_DIR -o latest.json
        Read RAW_DIR/{manifest,allocators,params}.tsv, every run's JSON line and
        the callgrind outputs; write one JSON document with every raw run.
    report.py show latest.json [--txt latest.txt] [--png latest.png]
        Medians per (config, allocator), ratios to mimalloc, summary lines,
        the frag / rss-return / callgrind details, and a grouped-bar chart.

Only the standard library is needed, plus matplotlib for --png.
"""
import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time

ALLOC_ORDER = ["glibc", "jemalloc", "tcmalloc", "mimalloc", "ftmem"]
COLORS = {"glibc": "#7f7f7f", "jemalloc": "#1f77b4", "tcmalloc": "#2ca02c",
          "mimalloc": "#ff7f0e", "ftmem": "#d62728"}


# ---- collect ------------------------------------------------------------------

def read_tsv(path):
    with open(path) as f:
        lines = [l.rstrip("\n").split("\t") for l in f if l.strip()]
    head, rows = lines[0], lines[1:]
    return [dict(zip(head, r + [""] * (len(head) - len(r)))) for r in rows]


def read_kv(path):
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("\t")
                out[k] = v
    return out


def tail(path, n=400):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def run_status(rc, result):
    if rc == "skipped":
        return "skipped (failed in an earlier repetition)"
    rc = int(rc)
    if rc == 0:
        return "ok" if result is not None else "no result line"
    if rc == 124:
        return "timeout (hung past its time box)"
    if rc == 137:
        return "killed by SIGKILL (timeout -k or the OOM killer)"
    if rc == 3:
        return "CORRUPTION (block tags wrong)"
    if rc > 128:
        sig = rc - 128
        names = {6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 11: "SIGSEGV"}
        return f"crashed: signal {sig} {names.get(sig, '')}".strip()
    return f"exit {rc}"


def machine_info():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "mem_mib": mem,
            "kernel": platform.release(), "libc": " ".join(platform.libc_ver())}


def parse_callgrind(raw):
    d = os.path.join(raw, "callgrind")
    if not os.path.isdir(d):
        return None
    n = int(open(os.path.join(d, "N")).read().strip())
    out = {"N": n, "allocators": {}}
    for fn in sorted(os.listdir(d)):
        m = re.match(r"(.+)\.(pairs|empty)\.out$", fn)
        if not m:
            continue
        alloc, mode = m.groups()
        path = os.path.join(d, fn)
        total = None
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith("summary:") or line.startswith("totals:"):
                    total = int(line.split()[1])
        funcs, objects = [], set()
        try:
            ann = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", path],
                                 capture_output=True, text=True, timeout=60).stdout
            for line in ann.splitlines():
                mm = re.match(r"\s*([\d,]+)\s+\([\s\d.]+%\)\s+(.+?):(\S+)\s+\[(.*)\]\s*$", line)
                if mm:
                    ir = int(mm.group(1).replace(",", ""))
                    funcs.append({"ir": ir, "function": mm.group(3), "object": mm.group(4)})
                    objects.add(os.path.basename(mm.group(4)))
        except (OSError, subprocess.SubprocessError):
            pass
        with open(path, errors="replace") as f:
            obs = sorted({os.path.basename(m2.group(1)) for m2 in
                          re.finditer(r"^ob=\(\d+\) (\S+)", f.read(), re.M)})
        rc = tail(os.path.join(d, f"{alloc}.{mode}.rc")).strip()
        own = sum(f["ir"] for f in funcs if os.path.basename(f["object"]).startswith("ftm-bench-pair"))
        out["allocators"].setdefault(alloc, {})[mode] = {
            "total_ir": total, "rc": rc, "functions": funcs[:8],
            "outside_bench_ir": total - own if total is not None and funcs else None,
            "objects_with_cost": sorted(objects), "objects_loaded": obs}
    for alloc, modes in out["allocators"].items():
        p, e = modes.get("pairs", {}).get("total_ir"), modes.get("empty", {}).get("total_ir")
        if p is not None:
            modes["per_pair_incl_loop"] = p / n
        o = modes.get("pairs", {}).get("outside_bench_ir")
        if o is not None:
            modes["per_pair_in_allocator"] = o / n
        if p is not None and e is not None:
            modes["per_pair_net"] = (p - e) / n
            modes["loop_overhead_per_iter"] = e / n
    return out


def collect(raw, out_path):
    runs = []
    for row in read_tsv(os.path.join(raw, "manifest.tsv")):
        result = None
        if row.get("stdout") and os.path.exists(row["stdout"]):
            with open(row["stdout"], errors="replace") as f:
                for line in f:
                    if line.startswith("{"):
                        try:
                            result = json.loads(line)
                        except json.JSONDecodeError:
                            pass
        st = run_status(row["rc"], result)
        runs.append({
            "config": row["config"], "workload": row["workload"], "threads": int(row["threads"]),
            "allocator": row["allocator"], "rep": int(row["rep"]), "rc": row["rc"], "status": st,
            "maxrss_kib": int(row["maxrss_kib"]) if row.get("maxrss_kib") else None,
            "wall_s": float(row["wall_s"]) if row.get("wall_s") else None,
            "load1": float(row["load1"]) if row.get("load1") else None,
            "result": result,
            "stderr_tail": tail(row["stderr"]) if st != "ok" and row.get("stderr") else "",
        })
    doc = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "params": read_kv(os.path.join(raw, "params.tsv")),
        "allocators": read_tsv(os.path.join(raw, "allocators.tsv")),
        "runs": runs,
        "callgrind": parse_callgrind(raw),
    }
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"[report.py] wrote {out_path} ({len(runs)} runs)", file=sys.stderr)


# ---- show ---------------------------------------------------------------------

def si(v, unit=""):
    if v is None:
        return "-"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g} {suf}{unit}"
    return f"{v:.3g} {unit}".rstrip()


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fr(x):
    return "n/a" if x is None else f"{x:.2f}"


def geomean(xs):
    xs = [x for x in xs if x is not None and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def aggregate(doc):
    """{config: {alloc: cell}} with medians over the successful repetitions."""
    cells, order = {}, []
    for r in doc["runs"]:
        if r["config"] not in cells:
            cells[r["config"]] = {}
            order.append(r["config"])
        c = cells[r["config"]].setdefault(r["allocator"], {
            "workload": r["workload"], "threads": r["threads"], "ok": [], "fail": []})
        if r["status"] == "ok":
            c["ok"].append(r)
        elif not r["status"].startswith("skipped"):
            c["fail"].append(r)
    for cfg in cells.values():
        for c in cfg.values():
            ok = c["ok"]
            thr = [r["result"]["ops_per_s"] for r in ok]
            rss = [r["maxrss_kib"] or r["result"].get("maxrss_kib") for r in ok]
            c["thr"] = statistics.median(thr) if thr else None
            c["spread"] = (max(thr) - min(thr)) / c["thr"] if len(thr) > 1 and c["thr"] else None
            c["rss_kib"] = statistics.median(rss) if rss else None
            c["unit"] = ok[0]["result"].get("unit") if ok else ""
            extras = {}
            for r in ok:
                for k, v in r["result"].items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        extras.setdefault(k, []).append(v)
            c["extra"] = {k: statistics.median(v) for k, v in extras.items()}
    return cells, order


def allocs_present(doc, cells):
    seen = {a for cfg in cells.values() for a in cfg}
    seen |= set((doc.get("callgrind") or {}).get("allocators", {}))
    return [a for a in ALLOC_ORDER if a in seen] + sorted(seen - set(ALLOC_ORDER))


def show(doc, txt_path=None, png_path=None):
    cells, order = aggregate(doc)
    allocs = allocs_present(doc, cells)
    m, p = doc["machine"], doc["params"]
    out = []
    w = out.append
    w(f"ftmem allocator benchmarks — {doc['generated']}")
    w(f"machine: {m['cores']} cores ({m['cpu']}), {m['mem_mib'] // 1024} GiB, Linux {m['kernel']}, {m['libc']}")
    w(f"NOTE: this machine has {m['cores']} cores: '-2t' rows use all of them (plus a sleeping "
      f"main thread); no row measures scaling beyond 2 threads.")
    w(f"params: {p.get('command', '')}  | reps={p.get('reps')} (median shown), time box "
      f"{p.get('duration_ms')} ms, seed {p.get('seed')}{', QUICK' if p.get('quick') == '1' else ''}")
    loads = [r["load1"] for r in doc["runs"] if r.get("load1") is not None]
    if loads:
        busy = max(loads) > 1.5
        w(f"load (1-min loadavg before each run): median {statistics.median(loads):.2f}, max "
          f"{max(loads):.2f}" + (f"  -- WARNING: other processes competed for the {m['cores']} "
                                 "cores; treat small differences as noise" if busy else ""))
    w("allocators:")
    for a in doc["allocators"]:
        extra = f"  malloc bound to {a['malloc_from']}" if a.get("malloc_from") else ""
        w(f"  {a['name']:<9} {a['version']:<22} {a['so'] or '(libc)'}  [{a['status']}]{extra}")
    w("")

    hdr = ("workload", "allocator", "median throughput", "spread", "peak RSS",
           "thr/mimalloc", "RSS/mimalloc")
    rows = []
    for cfg in order:
        mi = cells[cfg].get("mimalloc", {})
        for a in allocs:
            c = cells[cfg].get(a)
            if c is None:
                continue
            if c["thr"] is None:
                why = c["fail"][0]["status"] if c["fail"] else "no successful run"
                rows.append((cfg, a, "FAILED: " + why, "", "", "", ""))
                continue
            unit = {"malloc+free": "op/s"}.get(c["unit"], "op/s")
            rows.append((cfg, a, si(c["thr"], unit),
                         f"±{100 * c['spread'] / 2:.0f}%" if c["spread"] is not None else "",
                         f"{c['rss_kib'] / 1024:.1f} MiB" if c["rss_kib"] else "-",
                         fr(ratio(c["thr"], mi.get("thr"))),
                         fr(ratio(c["rss_kib"], mi.get("rss_kib")))))
    if not rows:
        rows.append(("(no workload runs)", "", "", "", "", "", ""))
    widths = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    line = lambda r: " | ".join(str(v).ljust(widths[i]) if i < 2 else str(v).rjust(widths[i])
                                for i, v in enumerate(r))
    w(line(hdr))
    w("-+-".join("-" * x for x in widths))
    prev = None
    for r in rows:
        if prev is not None and r[0] != prev:
            w("")
        w(line(r))
        prev = r[0]
    w("")
    w("throughput: higher is better (units: the op of each workload, see bench/README.md); "
      "spread: ±half the (max-min)/median over repetitions; peak RSS: ru_maxrss of the child "
      "(/usr/bin/time), median.")
    w("")

    # ---- summaries
    def thr_ratios(a, base):
        out_ = {}
        for cfg in order:
            ca, cb = cells[cfg].get(a), cells[cfg].get(base)
            if ca and cb and ca["thr"] and cb["thr"]:
                out_[cfg] = ca["thr"] / cb["thr"]
        return out_

    def rss_ratios(a, base):
        out_ = {}
        for cfg in order:
            ca, cb = cells[cfg].get(a), cells[cfg].get(base)
            if ca and cb and ca["rss_kib"] and cb["rss_kib"] and ca["thr"] and cb["thr"]:
                out_[cfg] = ca["rss_kib"] / cb["rss_kib"]
        return out_

    def minr(d):
        if not d:
            return "n/a"
        k = min(d, key=d.get)
        return f"{d[k]:.2f} ({k})"

    w("summary (per allocator; failed rows left out and listed below):")
    sw = max([len(a) for a in allocs] + [1])
    for a in allocs:
        vm, vg, vj = thr_ratios(a, "mimalloc"), thr_ratios(a, "glibc"), rss_ratios(a, "jemalloc")
        w(f"  {a:<{sw}}  throughput geomean vs mimalloc {fr(geomean(vm.values()))}"
          f"   min vs mimalloc {minr(vm)}   min vs glibc {minr(vg)}"
          f"   peak-RSS geomean vs jemalloc {fr(geomean(vj.values()))}")
    failures = [(cfg, a, c["fail"]) for cfg in order for a, c in cells[cfg].items() if c["fail"]]
    if failures:
        w("")
        w("FAILURES:")
        for cfg, a, fl in failures:
            for r in fl:
                msg = r["stderr_tail"].strip().replace("\n", " | ")[-240:]
                w(f"  {cfg} {a} rep {r['rep']}: {r['status']}  {msg}")
    w("")

    # ---- details
    def detail(cfg_prefix, keys, title):
        cfgs = [c for c in order if c.startswith(cfg_prefix)]
        if not cfgs:
            return
        w(title)
        kw = [max(len(k), 7) for k in keys]
        w("  " + f"{'allocator':<10}" + "  ".join(k.rjust(kw[i]) for i, k in enumerate(keys)))
        for cfg in cfgs:
            for a in allocs:
                c = cells[cfg].get(a)
                if not c or not c["ok"]:
                    continue
                vals = []
                for i, k in enumerate(keys):
                    v = c["extra"].get(k)
                    if v is not None and abs(v) < 0.05:
                        v = 0  # no "-0.0"
                    vals.append(("-" if v is None else f"{v:.1f}" if isinstance(v, float) and v != int(v)
                                 else str(int(v))).rjust(kw[i]))
                w("  " + f"{a:<10}" + "  ".join(vals))
        w("")

    detail("frag", ["rss_start_mib", "rss_after_alloc_mib", "rss_after_free90_mib", "rss_final_mib",
                    "live_final_mib", "final_rss_over_live", "rss_after_free_all_mib"],
           "frag (MiB; 16-128 B blocks, 90% freed at random, then 256-1024 B blocks; "
           "final_rss_over_live = (final - start) / live bytes):")
    detail("rss-return", ["rss_start_mib", "rss_peak_mib", "rss_0ms_mib", "rss_100ms_mib",
                          "rss_250ms_mib", "rss_500ms_mib", "rss_1000ms_mib",
                          "within_10pct_of_start_at_1s", "returned_pct_at_1s"],
           "rss-return (MiB; 64 B blocks all freed at t=0, then idle; within_10pct: 1 = RSS at 1 s "
           "<= 1.1 x start):")
    detail("fs-passive", ["objs_on_first_line"],
           "fs-passive setup (objects the main thread handed out that share one 64 B line; "
           "the test can only catch an allocator if this is > 1):")

    cg = doc.get("callgrind")
    if cg:
        w(f"instructions per malloc(32)+free pair (callgrind, N = {cg['N']:,} pairs after a "
          f"10,000-pair warm-up, 64 blocks live):")
        w("  in alloc = Ir spent outside the bench binary (malloc + free and what they call) / N;")
        w("  net = (Ir of run_pairs - Ir of run_empty) / N (= in alloc + 2 PLT stubs - 3 for the empty "
          "functions' bodies);")
        w("  incl. loop = Ir of run_pairs / N: everything, with the loop, the calls and the PLT stubs.")
        w(f"  {'allocator':<10}{'in alloc':>9}{'net':>8}{'incl.loop':>11}{'run_pairs Ir':>15}"
          f"{'run_empty Ir':>15}  cost carried by (Ir per pair)")
        for a in allocs:
            d = cg["allocators"].get(a)
            if not d:
                continue
            pr, em = d.get("pairs", {}), d.get("empty", {})
            if pr.get("rc") not in ("0", None) or pr.get("total_ir") is None:
                w(f"  {a:<10}FAILED (rc {pr.get('rc')})")
                continue
            top = ", ".join(f"{f['function']}={f['ir'] / cg['N']:.1f}" for f in pr["functions"][:4])
            w(f"  {a:<10}{d.get('per_pair_in_allocator', float('nan')):>9.1f}"
              f"{d.get('per_pair_net', float('nan')):>8.1f}{d['per_pair_incl_loop']:>11.1f}"
              f"{pr['total_ir']:>15,}{em.get('total_ir') or 0:>15,}  "
              f"{'/'.join(pr['objects_with_cost']) or '/'.join(pr['objects_loaded'])}: {top}")
        if any("???" in d.get("pairs", {}).get("objects_with_cost", []) for d in cg["allocators"].values()):
            w("  ??? = code valgrind could not attribute to a file (tcmalloc keeps malloc/free in its own "
              "'google_malloc' section); the LD_DEBUG check under 'allocators' shows where malloc binds.")
        w("")

    text = "\n".join(out)
    print(text)
    if txt_path:
        with open(txt_path, "w") as f:
            f.write(text + "\n")
    if png_path:
        chart(doc, cells, order, allocs, png_path)


def chart(doc, cells, order, allocs, png_path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("[report.py] matplotlib missing: no chart (apt-get install python3-matplotlib)",
              file=sys.stderr)
        return
    if not order:
        return
    if not any("mimalloc" in cells[c] and cells[c]["mimalloc"]["thr"] for c in order):
        print("[report.py] no mimalloc results: chart skipped (ratios are to mimalloc)", file=sys.stderr)
        return
    fig, axes = plt.subplots(2, 1, figsize=(max(10, 1.1 * len(order) + 3), 8.5), sharex=True)
    width = 0.8 / len(allocs)
    xs = range(len(order))
    for ax, key, title in ((axes[0], "thr", "throughput / mimalloc (higher is better)"),
                           (axes[1], "rss_kib", "peak RSS / mimalloc (lower is better)")):
        for i, a in enumerate(allocs):
            vals = []
            for cfg in order:
                c, mi = cells[cfg].get(a), cells[cfg].get("mimalloc")
                v = ratio(c[key], mi[key]) if c and mi and c["thr"] and mi["thr"] else None
                vals.append(v)
            pos = [x - 0.4 + width * (i + 0.5) for x in xs]
            ax.bar([p_ for p_, v in zip(pos, vals) if v], [v for v in vals if v], width,
                   label=a, color=COLORS.get(a))
            for p_, v, cfg in zip(pos, vals, order):
                c = cells[cfg].get(a)
                if v is None and c is not None:
                    ax.text(p_, 1.0, "✗", ha="center", va="center", color=COLORS.get(a), fontsize=11)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        nice = [m_ * 10.0 ** e for e in range(-4, 4) for m_ in (1, 2, 5)]
        ax.set_yticks([t for t in nice if lo <= t <= hi])
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylim(lo, hi)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[1].set_xticks(list(xs))
    axes[1].set_xticklabels(order, rotation=30, ha="right")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, ncol=len(allocs), fontsize=9, loc="upper center",
               bbox_to_anchor=(0.5, 0.955), frameon=False)
    m = doc["machine"]
    loads = [r["load1"] for r in doc["runs"] if r.get("load1") is not None]
    busy = f", BUSY MACHINE (loadavg up to {max(loads):.1f})" if loads and max(loads) > 1.5 else ""
    fig.suptitle(f"ftmem benchmarks — {m['cores']} cores ({m['cpu']}), median of "
                 f"{doc['params'].get('reps')} runs, {doc['generated']}{busy}  (✗ = failed)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(png_path, dpi=110)
    print(f"[report.py] wrote {png_path}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("raw")
    c.add_argument("-o", "--out", required=True)
    s = sub.add_parser("show")
    s.add_argument("json")
    s.add_argument("--txt")
    s.add_argument("--png")
    args = ap.parse_args()
    if args.cmd == "collect":
        collect(args.raw, args.out)
    else:
        with open(args.json) as f:
            show(json.load(f), args.txt, args.png)


if __name__ == "__main__":
    main()
