"""Fork benchmarks (issue 3): the emulated fork1, vfork and forkall cycles in
the ``threads`` backend beside Python's os.fork() and, when installed,
stress-ng.  Imported by tools/bench.py; runnable alone:

    python tools/bench_fork.py [--quick]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import realfork

CYCLE = """
    mov r7, {n}
again:
    {call}
    beq rv, 0, child
    wait
    sub r7, 1
    bne r7, 0, again
    exit 0
child:
    exit 0
"""

FORKALL = """
    mov r6, {extra}
spawn:
    beq r6, 0, ready
    lwp_create parked
    sub r6, 1
    jmp spawn
ready:
    mov r7, {n}
again:
    forkall
    beq rv, 0, child
    wait
    sub r7, 1
    bne r7, 0, again
    store 0, 1              ; release the parked lwps
    exit 0
child:
    exit 0
parked:
    load r1, 0
    bne r1, 0, out
    sleep 20                ; interruptible: forkall gives it EINTR, it loops
    jmp parked
out:
    lwp_exit
"""

# The table is filled with zombies that are not the measuring process's: illumos's
# waitid walks the waiter's whole zombie list (p_child_ns) before it sleeps, so
# with the fill as the measurer's own zombies the figure was waitid's scan of
# 27,000 of them, not fork1's cost in a full table.  Here a filler forks them and
# exits (they pass to init); the measurer, another process, then runs its cycles.
FILL = """
    fork1
    beq rv, 0, measurer
    wait rv
    exit 0
measurer:
    fork1
    beq rv, 0, filler
    wait rv                 ; the filler's zombies are init's now
    mov r7, {n}
again:
    fork1
    beq rv, 0, child
    wait rv
    sub r7, 1
    bne r7, 0, again
    exit 0
filler:
    mov r7, {fill}
more:
    fork1
    beq rv, 0, child
    sub r7, 1
    bne r7, 0, more         ; the children stay zombies: the table fills up
    exit 0
child:
    exit 0
"""


def run_rate(program: str, n: int, **params: object) -> float:
    """Cycles per second of ``program`` (init's run time only, boot excluded)."""
    with realfork.boot(**params) as system:
        r = system.run(program, timeout=600)
        if r.report is not None or r.status != 0:
            raise RuntimeError(f"benchmark run failed: status {r.status}\n{r.report}")
        return n / r.elapsed


def python_fork_rate(seconds: float) -> float:
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        n += 1
    return n / (time.perf_counter() - t0)


def stress_ng_rate(stressor: str, seconds: int) -> float | None:
    exe = shutil.which("stress-ng")
    if exe is None:
        return None
    out = subprocess.run([exe, f"--{stressor}", "1", "--timeout", f"{seconds}s",
                          "--metrics-brief"], capture_output=True, text=True)
    for line in (out.stdout + out.stderr).splitlines():
        m = re.search(rf"\b{stressor}\s+(\d+)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)", line)
        if m:
            return float(m.group(2))
    return None


WIDE = """
    mov r7, {procs}
spawn:
    fork1
    beq rv, 0, child
    sub r7, 1
    bne r7, 0, spawn
reap:
    wait
    bne rv, -1, reap
    exit 0
child:
    mov r6, {lwps}
more:
    sub r6, 1
    beq r6, 0, work
    lwp_create worker
    jmp more
work:
    sleep 1500              ; every lwp of every process alive at once
    mov r5, {lwps}
join:
    sub r5, 1
    beq r5, 0, done
    lwp_wait 0
    jmp join
done:
    exit 0
worker:
    sleep 1500
    lwp_exit
"""


def measure_processes(quick: bool = False) -> dict[str, float | None]:
    """The processes backend: fork cycles beside Python's raw fork loop, and a
    run with 1,000 live lwps in 100 emulated processes."""
    n = 100 if quick else 300
    params = {"backend": "processes", "nproc": 128, "maxlwps": 1200, "deadlock_timeout": 30}
    r: dict[str, float | None] = {}
    r["proc_fork1_cycle_per_s"] = run_rate(CYCLE.format(call="fork1", n=n), n, **params)
    r["proc_vfork_cycle_per_s"] = run_rate(CYCLE.format(call="vfork", n=n), n, **params)
    r["python_os_fork_per_s"] = python_fork_rate(1.0 if quick else 3.0)
    procs, lwps = (20, 5) if quick else (100, 10)
    with realfork.boot(**params) as system:
        res = system.run(WIDE.format(procs=procs, lwps=lwps), timeout=600)
        r["wide_run_seconds"] = res.elapsed
        r["wide_run_clean"] = float(res.report is None and res.status == 0)
        r["wide_lwps"] = float(procs * lwps)
    return r


def measure(quick: bool = False) -> dict[str, float | None]:
    n = 100 if quick else 400
    small = {"nproc": 64, "maxlwps": 256, "deadlock_timeout": 30}
    r: dict[str, float | None] = {}
    r["fork1_cycle_per_s"] = run_rate(CYCLE.format(call="fork1", n=n), n, **small)
    r["vfork_cycle_per_s"] = run_rate(CYCLE.format(call="vfork", n=n), n, **small)
    for lwps in (1, 4, 16):
        k = max(n // 4, 20)
        r[f"forkall_{lwps}lwp_per_s"] = run_rate(
            FORKALL.format(extra=lwps - 1, n=k), k, **small)
    r["python_os_fork_per_s"] = python_fork_rate(1.0 if quick else 3.0)
    secs = 2 if quick else 5
    r["stress_ng_fork_per_s"] = stress_ng_rate("fork", secs)
    r["stress_ng_vfork_per_s"] = stress_ng_rate("vfork", secs)
    # the process table empty versus 90% full (nproc = 30,000): the rate of the
    # last m fork1 cycles, from their proc:::create timestamps, in both cases
    if not quick:
        big = {"nproc": 30000, "maxpid": 99999, "maxlwps": 256, "deadlock_timeout": 60}
        m = 1000
        t0 = time.perf_counter()
        for key, fill in (("fork1_table_empty_per_s", 1),
                          ("fork1_table_90pct_per_s", int(30000 * 0.9))):
            with realfork.boot(**big) as system:
                res = system.run(FILL.format(fill=fill, n=m), timeout=1200)
            ts = [e.ts for e in res.probes if e.name == "proc:::create"]
            if res.status == 0 and len(ts) >= m:
                r[key] = (m - 1) / ((ts[-1] - ts[-m]) / 1e9)
        r["fill_seconds"] = time.perf_counter() - t0
    return r


def main() -> int:
    import json

    quick = "--quick" in sys.argv
    r = measure(quick) if "--processes" not in sys.argv else {}
    r.update(measure_processes(quick))
    for k, v in r.items():
        print(f"  {k:32s} {v:10.1f}" if v is not None else f"  {k:32s} (not installed)")
    print(json.dumps({"bench": "fork", **{k: (round(v, 1) if v is not None else None)
                                          for k, v in r.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
