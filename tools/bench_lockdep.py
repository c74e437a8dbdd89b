#!/usr/bin/env python3
"""The lock-order validator's cost: ns per uncontended mutex_enter+mutex_exit
with lockdep off and on (warn), alone and nested inside one other held lock.
Run by tools/bench.py; runnable alone:

    python tools/bench_lockdep.py [--quick]

Run it in a process with no other kernel: lockdep's fast-path switch is
process-wide.  (It lived in realfork/sync/lockdep.py, which had to import the
machine layer's thread factory for it: benchmark code belongs here.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from realfork.machine.threads import ThreadFactory
from realfork.sync.domain import Substrate
from realfork.sync.mutex import mutex_enter, mutex_exit


def bench(n: int = 100_000, trials: int = 7) -> dict[str, float]:
    """ns per uncontended mutex_enter+mutex_exit pair, best of ``trials``
    (interleaved), with lockdep off and on (warn), alone and nested inside
    one other held lock.

    Run it in a process with no other kernel: the switch is process-wide.
    """
    def run(m: Any, k: int) -> None:
        for _ in range(k):
            mutex_enter(m)
            mutex_exit(m)

    out: dict[str, float] = {}
    for _ in range(trials):
        for mode_name in ("off", "warn"):
            with Substrate.boot(maxlwps=4, nsync=4, lockdep=mode_name) as dom, \
                    ThreadFactory.adopt(dom, "bench"):
                outer, m = dom.new_mutex("bench_outer"), dom.new_mutex("bench_lock")
                for nested in (False, True):
                    if nested:
                        mutex_enter(outer)
                    run(m, 1000)  # the first nested pass learns the edge
                    t0 = time.perf_counter_ns()
                    run(m, n)
                    ns = (time.perf_counter_ns() - t0) / n
                    if nested:
                        mutex_exit(outer)
                    key = f"{mode_name}{'_nested' if nested else ''}_ns"
                    out[key] = min(out.get(key, float("inf")), ns)
    return out


def section(n: int = 100_000, trials: int = 7) -> dict[str, float]:
    """Measure and print the figures, then one JSON line (tools/bench.py's section)."""
    ld = bench(n, trials)
    print("lock-order validator, ns per uncontended mutex_enter+mutex_exit:")
    for k, v in ld.items():
        print(f"  {k:32s} {v:8.0f}")
    print(json.dumps({"bench": "lockdep", **{k: round(v, 1) for k, v in ld.items()}}))
    return ld


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    args = ap.parse_args()
    section(*((20_000, 3) if args.quick else (100_000, 7)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
