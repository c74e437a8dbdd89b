#!/usr/bin/env python3
"""Hunting power: how reliably and how fast ``realfork stress`` finds each
seeded bug, and that the clean kernel finds nothing in the same campaigns.

    python tools/hunt.py [--seeds 10] [--budget 60] [--bugs a,b] \\
        [--backends threads,processes] [--noise off,contest] [--clean-seeds 1] \\
        [--json hunt.json]
    python tools/hunt.py --from-json hunt.json [more.json ...]

For every catalogued bug (``realfork.verify.bugs``), backend and noise setting
(off, and ``contest`` at its default settings), the bug's own stress campaign
runs once per seed, for at most ``--budget`` seconds, stopping at the first
finding.  A run *detects* the bug when its first finding has the expected kind
and signature; the time to detection is that finding's ``elapsed``.  Then the
same campaign runs on the clean kernel (the bug off) for the whole budget,
``--clean-seeds`` times per bug, backend and noise setting: any finding there
is a false one.

Printed: one table row per (bug, backend, noise) with the detection rate, the
median and worst time to detection, whether every finding had the expected
signature (``yes``; otherwise the unexpected signatures are listed below the
table), and the clean runs' false findings.  ``--json`` writes every run.
Targets (issue 8): every bug in at least 9 of 10 seeds within 60 s, median at
most 10 s, noise faster for timing-dependent bugs, no false findings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from realfork.stress.config import StressConfig
from realfork.stress.runner import run_stress
from realfork.verify.bugs import BUGS, NAMES, stress_settings

NOISE = {"off": {"mode": "off"}, "contest": {"mode": "contest"}, "pct": {"mode": "pct"}}


def one_run(name: str, seed: int, backend: str, noise: str, budget: float,
            clean: bool) -> dict[str, Any]:
    d = stress_settings(name, seed=seed, backend=backend, noise=NOISE[noise],
                        timeout=budget, bug="" if clean else None)
    t0 = time.monotonic()
    try:
        r = run_stress(StressConfig(**d))
    except Exception as e:  # a broken run is reported, not fatal to the hunt
        return {"bug": name, "seed": seed, "backend": backend, "noise": noise,
                "clean": clean, "error": repr(e), "wall": round(time.monotonic() - t0, 3),
                "findings": [], "detected": False, "elapsed": None}
    bug = BUGS[name]
    fs = [{"kind": f.kind, "signature": f.signature, "elapsed": f.elapsed,
           "expected": bug.matches(f.kind, f.signature)} for f in r.findings]
    fs.sort(key=lambda f: f["elapsed"])
    # found while the campaign ran: a finding made while the run was being torn
    # down after its budget (killing stuck processes) is too late
    detected = bool(fs) and fs[0]["expected"] and fs[0]["elapsed"] <= budget and not clean
    return {"bug": name, "seed": seed, "backend": backend, "noise": noise, "clean": clean,
            "wall": round(time.monotonic() - t0, 3), "findings": fs, "detected": detected,
            "elapsed": fs[0]["elapsed"] if detected else None}


def summarize(runs: list[dict[str, Any]], clean: list[dict[str, Any]]) -> dict[str, Any]:
    times = [r["elapsed"] for r in runs if r["detected"]]
    found = [f for r in runs for f in r["findings"]]
    return {
        "detected": len(times), "seeds": len(runs),
        "median": round(statistics.median(times), 3) if times else None,
        "worst": round(max(times), 3) if times else None,
        "expected": all(f["expected"] for f in found) if found else None,
        "unexpected": sorted({f["signature"] for f in found if not f["expected"]}),
        "errors": [r["error"] for r in runs + clean if "error" in r],
        "clean_runs": len(clean),
        "false_findings": sorted({f["signature"] for r in clean for f in r["findings"]}),
    }


def merge_saved(paths: list[str]) -> dict[str, Any] | None:
    """The saved ``--json`` documents as one: each row's runs and clean runs
    concatenated; None if their budgets differ."""
    docs = []
    for path in paths:
        with open(path) as f:
            docs.append(json.load(f))
    if len({d["settings"]["budget"] for d in docs}) != 1:
        return None
    doc = docs[0]
    rows = {(r["bug"], r["backend"], r["noise"]): r for r in doc["rows"]}
    for other in docs[1:]:
        for r in other["rows"]:
            key = (r["bug"], r["backend"], r["noise"])
            if key in rows:
                rows[key]["runs"] += r["runs"]
                rows[key]["clean"] += r["clean"]
            else:
                rows[key] = r
                doc["rows"].append(r)
        doc["wall_s"] += other["wall_s"]
    st = doc["settings"]
    st["seeds"] = max(len(r["runs"]) for r in doc["rows"])
    st["clean_seeds"] = max(len(r["clean"]) for r in doc["rows"])
    return doc


def table(rows: list[dict[str, Any]], budget: float) -> str:
    head = ("bug", "backend", "noise", "found", "median s", "worst s", "signature",
            "clean")
    lines = []
    for r in rows:
        s = r["summary"]
        sig = {True: "yes", False: "NO", None: "-"}[s["expected"]]
        clean = ("none" if not s["false_findings"] else f"{len(s['false_findings'])} FALSE")
        clean = f"{clean} ({s['clean_runs']}x{budget:g}s)" if s["clean_runs"] else "-"
        lines.append((r["bug"], r["backend"], r["noise"], f"{s['detected']}/{s['seeds']}",
                      "-" if s["median"] is None else f"{s['median']:.2f}",
                      "-" if s["worst"] is None else f"{s['worst']:.2f}", sig, clean))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()

    out = [fmt(head), fmt(tuple("-" * w for w in widths)), *map(fmt, lines)]
    notes = []
    for r in rows:
        s = r["summary"]
        for sig in s["unexpected"]:
            notes.append(f"  {r['bug']} ({r['backend']}, noise {r['noise']}): unexpected {sig}")
        for sig in s["false_findings"]:
            notes.append(f"  {r['bug']} ({r['backend']}, noise {r['noise']}): clean kernel "
                         f"found {sig}")
        for e in s["errors"]:
            notes.append(f"  {r['bug']} ({r['backend']}, noise {r['noise']}): error {e}")
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="seeds per bug, backend, noise")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per run at most")
    ap.add_argument("--bugs", default=",".join(NAMES), help="comma-separated bug names")
    ap.add_argument("--backends", default="threads,processes")
    ap.add_argument("--noise", default="off,contest", help="noise settings: off, contest, pct")
    ap.add_argument("--clean-seeds", type=int, default=1,
                    help="clean-kernel runs (whole budget) per bug, backend, noise")
    ap.add_argument("--json", metavar="FILE", help="write every run and summary as JSON")
    ap.add_argument("--quiet", action="store_true", help="no line per run on stderr")
    ap.add_argument("--from-json", metavar="FILE", nargs="+",
                    help="print the table of saved --json files instead of running (the "
                         "runs of several files, say a detection and a clean-kernel run, "
                         "are merged row by row)")
    args = ap.parse_args(argv)
    if args.from_json:
        try:
            doc = merge_saved(args.from_json)
        except (OSError, ValueError, KeyError) as e:
            ap.error(f"cannot read the saved runs: {e}")
        if doc is None:
            ap.error("the saved runs have different budgets")
        budget = doc["settings"]["budget"]
        for r in doc["rows"]:
            for run in r["runs"]:
                fs = run["findings"]
                run["detected"] = bool(fs) and fs[0]["expected"] and fs[0]["elapsed"] <= budget
                run["elapsed"] = fs[0]["elapsed"] if run["detected"] else None
            r["summary"] = summarize(r["runs"], r["clean"])
        st = doc["settings"]
        print(f"realfork hunt ({', '.join(args.from_json)}): {st['seeds']} seeds, "
              f"budget {budget:g} s, "
              f"backends {st['backends']}, noise {st['noise']}, clean {st['clean_seeds']} "
              f"run(s) each; {doc['wall_s'] / 60:.1f} min on {doc['machine']['cpus']} CPUs")
        print(table(doc["rows"], budget))
        return 0
    # a SIGTERM unwinds like Ctrl-C: every kernel shuts down and leaves nothing behind
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    names = [n for n in args.bugs.split(",") if n]
    for n in names:
        if n not in BUGS:
            ap.error(f"unknown bug {n!r} (known: {', '.join(NAMES)})")
    backends = [b for b in args.backends.split(",") if b]
    noises = [n for n in args.noise.split(",") if n]
    for n in noises:
        if n not in NOISE:
            ap.error(f"unknown noise setting {n!r} (known: {', '.join(NOISE)})")
    t_start = time.monotonic()
    rows: list[dict[str, Any]] = []
    for name in names:
        for backend in backends:
            for noise in noises:
                runs, clean = [], []
                for seed in range(args.seeds):
                    r = one_run(name, seed, backend, noise, args.budget, clean=False)
                    runs.append(r)
                    if not args.quiet:
                        f = r["findings"][0]["signature"] if r["findings"] else "nothing"
                        print(f"{name} {backend} noise={noise} seed {seed}: "
                              f"{'detected' if r['detected'] else 'MISSED'} "
                              f"at {r['elapsed']} s ({f}; {r['wall']:.1f} s)",
                              file=sys.stderr, flush=True)
                for seed in range(args.clean_seeds):
                    r = one_run(name, 1000 + seed, backend, noise, args.budget, clean=True)
                    clean.append(r)
                    if not args.quiet:
                        sigs = [f["signature"] for f in r["findings"]] or "nothing"
                        print(f"{name} {backend} noise={noise} clean seed {1000 + seed}: "
                              f"{sigs} ({r['wall']:.1f} s)", file=sys.stderr, flush=True)
                rows.append({"bug": name, "backend": backend, "noise": noise,
                             "timing": BUGS[name].timing, "runs": runs, "clean": clean,
                             "summary": summarize(runs, clean)})
    wall = time.monotonic() - t_start
    print(f"realfork hunt: {len(names)} bugs, backends {', '.join(backends)}, noise "
          f"{', '.join(noises)}, {args.seeds} seeds, budget {args.budget:g} s, clean "
          f"{args.clean_seeds} run(s) each; {wall / 60:.1f} min on {os.cpu_count()} CPUs")
    print(table(rows, args.budget))
    if args.json:
        doc = {"settings": vars(args), "machine": {"cpus": os.cpu_count(),
                                                    "python": platform.python_version()},
               "wall_s": round(wall, 1), "rows": rows}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
