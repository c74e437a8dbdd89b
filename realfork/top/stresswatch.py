"""The dashboard and the report sampler of a stress run.

``realfork stress --dashboard`` and ``--report FILE.html`` start one thread
(``StressWatch``) beside the runner.  It follows the kernel of the current run
(``StressRun.system``; a campaign with ``--keep-going`` boots several) and maps
each one by name on its own, so the runner may shut a kernel down at any time
without pulling memory from under it; like ``realfork top`` it only reads.

Every ``interval`` seconds it takes a full snapshot (``Observer.sample``):
redrawn as the dashboard, and recorded for the report (per-host CPU and RSS
from psutil, processes in vfork waits and holds, forks/s).  With a report it
also scans the thread table for lock waits ``lock_period`` times a second in
between, so the report's lock wait per class over time sees waits shorter
than a second.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from ..errors import BadInput
from .command import LOCK_PERIOD
from .snapshot import Observer, Snapshot


class StressWatch:
    def __init__(self, run: Any, dashboard: bool = False, report: bool = False,
                 console: Any = None, interval: float = 1.0, sort: str = "cpu",
                 lock_period: float = LOCK_PERIOD) -> None:
        self.run = run
        self.dashboard = dashboard
        self.report = report
        self.interval = interval
        self.sort = sort
        self.lock_period = lock_period
        self.console = console
        self.live: Any = None
        self.status = ""
        self.messages: list[str] = []
        self.samples: list[dict[str, Any]] = []  # for the report
        self.frames = 0
        self.errors = 0
        self.cpu_s = 0.0  # CPU time this thread spent looking (its cost to the run)
        self.last: Snapshot | None = None
        self.obs: Observer | None = None
        self._lock_base: dict[str, float] = {}  # lock wait of earlier kernels (ms)
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="realfork-watch", daemon=True)
        self._saved_progress: Any = None

    # -- the runner's side ----------------------------------------------------------

    def progress(self, line: str) -> None:
        """The runner's progress callback under the dashboard: shown in its header."""
        if line.startswith("finding:"):
            self.messages.append(line)
        else:
            self.status = line.strip()

    def __enter__(self) -> StressWatch:
        self._t0 = time.monotonic()
        if self.dashboard:
            from rich.console import Console
            from rich.live import Live

            self.console = self.console or Console()
            self.live = Live(console=self.console, auto_refresh=False,
                             screen=self.console.is_terminal, redirect_stdout=False,
                             redirect_stderr=False)
            self.live.__enter__()
            self._saved_progress = self.run.progress
            self.run.progress = self.progress
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        if self.live is not None:
            self.live.__exit__(None, None, None)
            self.run.progress = self._saved_progress
        self._close_observer()

    # -- the thread --------------------------------------------------------------------

    def _close_observer(self) -> None:
        if self.obs is not None:
            for cls, ms in self.obs.wait_totals().items():
                self._lock_base[cls] = self._lock_base.get(cls, 0.0) + ms
            self.obs.close()
            self.obs = None

    def _observer(self) -> Observer | None:
        system = self.run.system
        name = getattr(system, "name", None)
        if self.obs is not None and name is not None and self.obs.name != name:
            self._close_observer()  # a new run, a new kernel
        if self.obs is None and name is not None:
            with contextlib.suppress(BadInput):  # booting or shutting down: next time
                self.obs = Observer.attach(name)
        return self.obs

    def _main(self) -> None:
        next_full = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            c0 = time.thread_time()
            try:
                obs = self._observer()
                if obs is not None:
                    if now >= next_full:
                        self._full(obs, now)
                        next_full = now + self.interval
                    elif self.report:
                        obs.sample_locks()
            except Exception as e:  # a torn read nobody foresaw: skip this look
                self.errors += 1
                self.status = f"(watch: {type(e).__name__}: {e})"
            self.cpu_s += time.thread_time() - c0
            wait = max(0.0, next_full - time.monotonic())
            if self.report:
                wait = min(wait, self.lock_period)
            self._stop.wait(wait or 0.01)

    def _full(self, obs: Observer, now: float) -> None:
        snap = obs.sample()
        self.last = snap
        timeout = getattr(getattr(self.run, "cfg", None), "timeout", None)
        if self.report and (timeout is None or now - self._t0 <= timeout):
            # (past the campaign's time limit the runner is killing the kernel's
            # processes: that is not the stress load, and not charted)
            self.samples.append(record(snap, now - self._t0, self._lock_base,
                                       obs.wait_totals()))
        if self.live is not None:
            from .dashboard import render, rows_for

            note = self.status + "".join(f"\n{m}" for m in self.messages[-3:])
            self.live.update(render(snap, self.sort, rows_for(self.console), note),
                             refresh=True)
            self.frames += 1

    # -- the report --------------------------------------------------------------------

    def write_report(self, path: str, doc: dict[str, Any], title: str = "") -> None:
        from .report import write_report

        write_report(path, doc, self.samples, title)


def record(snap: Snapshot, t: float, base: dict[str, float],
           totals: dict[str, float]) -> dict[str, Any]:
    """What the report keeps of one snapshot."""
    waits = dict(base)
    for cls, ms in totals.items():
        waits[cls] = waits.get(cls, 0.0) + ms
    return {
        "t": round(t, 3), "kernel": snap.kernel,
        "hosts": [{"pid": h.pid, "role": h.role, "emulated_pid": h.emulated_pid,
                   "cpu_percent": h.cpu_percent, "rss": h.rss, "threads": h.threads}
                  for h in snap.hosts if h.role != "idle host"],
        "lock_wait_ms": {k: round(v, 3) for k, v in waits.items()},
        "vfork_waiting": snap.vfork_waiting, "holds_in_progress": snap.holds_in_progress,
        "nproc": snap.nproc, "nlwps": snap.nlwps, "forks_per_s": snap.forks_per_s,
        "machine_cpu": snap.machine["cpu_percent"],
    }


def watch_stress(run: Any, dashboard: bool, report: bool, **kw: Any) -> Any:
    """A ``StressWatch`` when either is asked for, else a context that does nothing."""
    if not dashboard and not report:
        return contextlib.nullcontext(None)
    return StressWatch(run, dashboard=dashboard, report=report, **kw)
