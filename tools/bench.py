#!/usr/bin/env python3
"""realfork benchmarks: measured side by side in one run, printed with ratios
and as one JSON line (the last line of output).

    python tools/bench.py [--quick]

Each figure is the best of several trials (the least disturbed by the rest of
the machine).  Targets (issue 2, on a 2-core machine): uncontended
mutex_enter+mutex_exit within 10x of raw threading.Lock acquire+release;
cross-process condition-variable handoffs at least 30% of a raw multiprocess
semaphore ping-pong.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import multiprocess

from realfork.machine.threads import ThreadFactory
from realfork.shm.segment import Layout
from realfork.sync.condvar import cv_signal, cv_wait
from realfork.sync.domain import Substrate
from realfork.sync.mutex import mutex_enter, mutex_exit

CTX = multiprocess.get_context("fork")


def best_ns_per_op(fn: Callable[[int], None], n: int, trials: int) -> float:
    best = float("inf")
    for _ in range(trials):
        t0 = time.perf_counter_ns()
        fn(n)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


# -- locks --------------------------------------------------------------------------


def bench_threading_lock(n: int) -> None:
    lk = threading.Lock()
    for _ in range(n):
        lk.acquire()
        lk.release()


def bench_multiprocess_lock(n: int) -> None:
    lk = CTX.Lock()
    for _ in range(n):
        lk.acquire()
        lk.release()


def mutex_bench(dom: Substrate) -> Callable[[int], None]:
    m = dom.new_mutex("bench_lock")

    def run(n: int) -> None:
        for _ in range(n):
            mutex_enter(m)
            mutex_exit(m)

    return run


# -- cross-process handoffs ------------------------------------------------------------


def _sem_peer(a: object, b: object, n: int) -> None:
    for _ in range(n):
        a.acquire()  # type: ignore[attr-defined]
        b.release()  # type: ignore[attr-defined]


def sem_pingpong_rate(rounds: int) -> float:
    """Handoffs per second between two OS processes through two semaphores."""
    a, b = CTX.Semaphore(0), CTX.Semaphore(0)
    p = CTX.Process(target=_sem_peer, args=(a, b, rounds))
    p.start()
    t0 = time.perf_counter()
    for _ in range(rounds):
        a.release()
        b.acquire()
    dt = time.perf_counter() - t0
    p.join()
    return 2 * rounds / dt


def _words(layout: Layout) -> None:
    layout.add("bench_words", ctypes.c_int64, 8)


def _cv_peer(name: str, midx: int, cvidx: int, rounds: int) -> None:
    dom = Substrate.attach(name)
    words = dom.seg.region("bench_words", ctypes.c_int64)
    try:
        with ThreadFactory.adopt(dom, "peer"):
            m, cv = dom.handle(midx), dom.handle(cvidx)
            mutex_enter(m)  # type: ignore[arg-type]
            for _ in range(rounds):
                while words[0] != 1:
                    cv_wait(cv, m)  # type: ignore[arg-type]
                words[0] = 0
                cv_signal(cv)  # type: ignore[arg-type]
            mutex_exit(m)  # type: ignore[arg-type]
    finally:
        dom.shutdown()


def cv_pingpong_rate(rounds: int) -> float:
    """Handoffs per second between threads of two OS processes, each handoff a
    cv_signal answered by the other side's cv_wait returning."""
    with Substrate.boot(maxlwps=8, nsync=8, deadlock_timeout=60.0, extra_layout=_words) as dom:
        m, cv = dom.new_mutex("pingpong_lock"), dom.new_cv("pingpong_cv")
        words = dom.seg.region("bench_words", ctypes.c_int64)
        p = CTX.Process(target=_cv_peer, args=(dom.name, m.idx, cv.idx, rounds))
        p.start()
        with ThreadFactory.adopt(dom, "main"):
            mutex_enter(m)
            t0 = time.perf_counter()
            for _ in range(rounds):
                words[0] = 1
                cv_signal(cv)
                while words[0] != 0:
                    cv_wait(cv, m)
            dt = time.perf_counter() - t0
            mutex_exit(m)
        p.join()
        return 2 * rounds / dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    args = ap.parse_args()
    n, trials, rounds = (20_000, 3, 2_000) if args.quick else (200_000, 7, 20_000)

    results: dict[str, float] = {}
    with Substrate.boot(maxlwps=8, nsync=8) as dom, ThreadFactory.adopt(dom, "bench"):
        mutex_run = mutex_bench(dom)
        # interleave the three so that machine noise hits them alike
        lock_ns, mp_ns, mutex_ns = [], [], []
        for _ in range(trials):
            lock_ns.append(best_ns_per_op(bench_threading_lock, n, 1))
            mp_ns.append(best_ns_per_op(bench_multiprocess_lock, n, 1))
            mutex_ns.append(best_ns_per_op(mutex_run, n, 1))
    results["threading_lock_ns"] = min(lock_ns)
    results["multiprocess_lock_ns"] = min(mp_ns)
    results["mutex_enter_exit_ns"] = min(mutex_ns)
    results["mutex_vs_threading_lock"] = results["mutex_enter_exit_ns"] / results[
        "threading_lock_ns"]

    sem_rates, cv_rates = [], []
    for _ in range(max(3, trials // 2)):
        sem_rates.append(sem_pingpong_rate(rounds))
        cv_rates.append(cv_pingpong_rate(rounds))
    results["sem_pingpong_per_s"] = max(sem_rates)
    results["cv_handoff_per_s"] = max(cv_rates)
    results["cv_vs_sem_pingpong"] = results["cv_handoff_per_s"] / results["sem_pingpong_per_s"]

    r = results
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python "
          f"{platform.python_version()}, {platform.platform()}")
    print("locks, uncontended, one acquire+release (best of "
          f"{trials} x {n:,}):")
    print(f"  threading.Lock              {r['threading_lock_ns']:8.0f} ns")
    print(f"  multiprocess.Lock           {r['multiprocess_lock_ns']:8.0f} ns")
    print(f"  mutex_enter+mutex_exit      {r['mutex_enter_exit_ns']:8.0f} ns   "
          f"{r['mutex_vs_threading_lock']:.1f}x threading.Lock (target <= 10x)")
    print(f"cross-process handoffs (best of {max(3, trials // 2)} x {2 * rounds:,}):")
    print(f"  multiprocess semaphores     {r['sem_pingpong_per_s']:8.0f} /s")
    print(f"  cv_signal -> cv_wait        {r['cv_handoff_per_s']:8.0f} /s   "
          f"{100 * r['cv_vs_sem_pingpong']:.0f}% of the semaphore ping-pong (target >= 30%)")
    print(json.dumps({"bench": "substrate", **{k: round(v, 3) for k, v in r.items()}}))

    from realfork.sync import lockdep

    ld = lockdep.bench()
    print("lock-order validator, ns per uncontended mutex_enter+mutex_exit:")
    for k, v in ld.items():
        print(f"  {k:32s} {v:8.0f}")
    print(json.dumps({"bench": "lockdep", **{k: round(v, 1) for k, v in ld.items()}}))

    from bench_fork import measure, measure_processes

    f = measure(args.quick)
    f.update(measure_processes(args.quick))
    print("fork cycles, threads backend (init's run time; boot excluded):")
    for k, v in f.items():
        print(f"  {k:32s} {v:10.1f}" if v is not None else f"  {k:32s} (not installed)")
    sng = f.get("stress_ng_fork_per_s")
    if sng:
        print(f"  emulated fork1 cycle / stress-ng --fork 1: "
              f"{f['fork1_cycle_per_s'] / sng:.2f} (target >= 1)")
    if f.get("fork1_table_90pct_per_s"):
        print(f"  fork1 cost, table 90% full / empty: "
              f"{f['fork1_table_empty_per_s'] / f['fork1_table_90pct_per_s']:.2f} "
              f"(target <= 1.5)")
    print(json.dumps({"bench": "fork", **{k: (round(v, 1) if v is not None else None)
                                          for k, v in f.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
