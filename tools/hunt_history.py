#!/usr/bin/env python3
"""Finding the 2006 kernel's real bugs without being told about them.

    python tools/hunt_history.py [--job examples/hunt-2006.job] [--seeds 10] \\
        [--budget 300] [--parallel 2] [--backend threads] [--clean-seeds 2] \\
        [--json out.json]

Runs one general campaign -- a job file that names no bug (by default
``examples/hunt-2006.job``: the default stressors, every fault site failing
now and then, contest noise, keep-going) -- once per seed on the ``2006``
kernel, for at most ``--budget`` seconds each, and then ``--clean-seeds``
times on the ``fixed`` kernel.  Every finding is matched against the later
illumos fixes (``realfork.verify.history``): a finding whose kind and
signature are a fix's is that historical bug, found; any other finding is
listed as unexpected.  Printed: one row per fix with the seeds that found
it, the median and worst time to detection, and what realfork reported;
then every unexpected finding, and the fixed kernel's findings (false ones:
there should be none).  ``--parallel`` runs that many campaigns at once,
each in its own OS process.
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
from concurrent.futures import ProcessPoolExecutor
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_JOB = os.path.join(HERE, "..", "examples", "hunt-2006.job")


def _config(job: str, seed: int, kernel: str, budget: float, backend: str) -> Any:
    from realfork.stress.command import _stress_parser, apply_job_file, config_from_args

    argv = ["stress", "--job", job, "--seed", str(seed), "--kernel", kernel,
            "--timeout", f"{budget:g}", "--backend", backend]
    args = _stress_parser().parse_args(argv)
    return config_from_args(apply_job_file(args, argv))


def one_campaign(job: str, seed: int, kernel: str, budget: float,
                 backend: str) -> dict[str, Any]:
    from realfork.stress.runner import run_stress
    from realfork.verify.history import HISTORY

    t0 = time.monotonic()
    try:
        r = run_stress(_config(job, seed, kernel, budget, backend))
    except Exception as e:  # a broken campaign is reported, not fatal to the hunt
        return {"seed": seed, "kernel": kernel, "error": repr(e), "findings": [],
                "wall": round(time.monotonic() - t0, 1)}
    found = []
    for f in r.findings:
        fix = next((h.id for h in HISTORY if h.matches(f.kind, f.signature)), None)
        found.append({"kind": f.kind, "signature": f.signature,
                      "elapsed": round(f.elapsed, 2), "fix": fix})
    return {"seed": seed, "kernel": kernel, "findings": found,
            "wall": round(time.monotonic() - t0, 1)}


def table(runs: list[dict[str, Any]], seeds: int) -> str:
    from realfork.verify.history import HISTORY

    rows = [f"{'fix':<9} {'found':>6} {'median s':>9} {'worst s':>8}  reported"]
    old = [r for r in runs if r["kernel"] == "2006"]
    for h in HISTORY:
        if not h.kind:
            rows.append(f"{h.id:<9} {'-':>6} {'-':>9} {'-':>8}  (no bug in the 2006 kernel)")
            continue
        times, sig = [], ""
        for r in old:
            hits = [f for f in r["findings"] if f["fix"] == h.id]
            if hits:
                times.append(min(f["elapsed"] for f in hits))
                sig = sig or hits[0]["signature"]
        med = f"{statistics.median(times):.1f}" if times else "-"
        worst = f"{max(times):.1f}" if times else "-"
        rows.append(f"{h.id:<9} {len(times):>3}/{seeds:<2} {med:>9} {worst:>8}  "
                    f"{sig or 'not found'}")
    odd = sorted({(f["kind"], f["signature"]) for r in old for f in r["findings"]
                  if not f["fix"]})
    if odd:
        rows += ["", "unexpected findings in the 2006 kernel:"]
        rows += [f"  {k}: {s}" for k, s in odd]
    clean = [r for r in runs if r["kernel"] == "fixed"]
    false = sorted({(f["kind"], f["signature"]) for r in clean for f in r["findings"]})
    rows += ["", f"fixed kernel, same campaign ({len(clean)} run(s)): "
             + ("nothing found" if not false else f"{len(false)} finding(s)")]
    rows += [f"  {k}: {s}" for k, s in false]
    errors = [r for r in runs if r.get("error")]
    rows += [f"  error (seed {r['seed']}, {r['kernel']}): {r['error']}" for r in errors]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", default=DEFAULT_JOB, help="the general campaign (a job file)")
    ap.add_argument("--seeds", type=int, default=10, help="2006-kernel campaigns")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--budget", type=float, default=300.0, help="seconds per campaign")
    ap.add_argument("--clean-seeds", type=int, default=2, help="fixed-kernel campaigns")
    ap.add_argument("--backend", choices=("threads", "processes"), default="threads")
    ap.add_argument("--parallel", type=int, default=1, help="campaigns at once")
    ap.add_argument("--json", metavar="FILE", help="write every campaign as JSON")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.job):
        ap.error(f"no job file {args.job!r}")
    if not 1 <= args.seeds <= 1000 or not 0 <= args.clean_seeds <= 1000:
        ap.error("--seeds must be in 1..1000 and --clean-seeds in 0..1000")
    if not 1 <= args.parallel <= 64 or not 0 < args.budget <= 86400:
        ap.error("--parallel must be in 1..64 and --budget in (0, 86400]")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    jobs = [(args.job, args.first_seed + s, "2006", args.budget, args.backend)
            for s in range(args.seeds)]
    jobs += [(args.job, 1000 + s, "fixed", args.budget, args.backend)
             for s in range(args.clean_seeds)]
    t0 = time.monotonic()
    runs: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.parallel) as pool:
        for r in pool.map(one_campaign, *zip(*jobs, strict=True)):
            runs.append(r)
            sigs = ", ".join(f"{f['fix'] or f['signature']} at {f['elapsed']} s"
                             for f in r["findings"]) or "nothing"
            print(f"{r['kernel']} seed {r['seed']}: {sigs} ({r['wall']} s)",
                  file=sys.stderr, flush=True)
    wall = time.monotonic() - t0
    print(f"realfork hunt_history: {os.path.basename(args.job)}, {args.seeds} seeds x "
          f"{args.budget:g} s on the 2006 kernel, {args.clean_seeds} on fixed, backend "
          f"{args.backend}; {wall / 60:.1f} min on {os.cpu_count()} CPUs "
          f"(parallel {args.parallel})")
    print(table(runs, args.seeds))
    if args.json:
        doc = {"settings": vars(args), "machine": {"cpus": os.cpu_count(),
                                                    "python": platform.python_version()},
               "wall_s": round(wall, 1), "runs": runs}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
