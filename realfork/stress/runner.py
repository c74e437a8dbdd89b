"""The stress runner: boot, run every stressor instance, watch, check, report.

One campaign is one or more *runs* (more only with ``keep_going``: after a
finding the kernel is shut down and a fresh one boots with the next seed; or
with ``swarm``, below).

Swarm testing (``swarm`` seconds, after Groce et al., "Swarm Testing", 2012):
every run lasts at most ``swarm`` seconds and uses a random half of the
configured stressors and of the fault sites, and of each kept stressor's
features that an option switches off, drawn from the run's seed; then
the next seed boots a fresh kernel with another half.  A bug that one
stressor or fault finds quickly no longer hides, run after run, the bugs that
need the machine without it (with everything on, a fast panic ends every run
before a slower deadlock can form); each run is still exactly reproducible
from its seed.
During a run the supervisor thread polls the kernel every ``POLL`` seconds:

* it drains the probe ring, attributes every event to the stressor instance
  whose process (or descendant) fired it, and feeds the metrics;
* a panic (deadlock, hang, any kernel panic) or a new lock-order report is
  a finding;
* every ``check_interval`` seconds it pauses the machine at a quiescent point,
  runs the invariant checker and resumes; the checker runs again at the end;
* with ``ops``, a stressor that has done that many bogo ops is stopped (its
  processes are sent SIGKILL, like stress-ng's workers ending at their
  ``--ops``; a few more ops may land before they die);
* it stops at the time limit, once every stressor has done its ``ops``, or
  at the first finding (unless ``keep_going``).

SIGINT and SIGTERM never interrupt the supervisor inside a kernel operation
(``realfork.sync.sigdefer``): for the whole campaign they only record
themselves, and the supervisor looks at that record between two kernel
operations, then ends the run as at the time limit (the processes killed and
reaped, the final check, the kernel closed).  Whatever is found on the way
out, a report written by a panic during the shutdown included, is recorded
before anything can unwind past it.  ``StressResult.signal`` says which
signal ended the campaign.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..api import System, boot
from ..errors import BadInput, KernelPanic
from ..sync import lockstat, sigdefer
from ..user.parser import parse
from ..verify.check import InvariantViolation
from .config import StressConfig
from .findings import Finding, FindingStore, from_lockdep, from_violations, from_wait_report
from .metrics import Metrics
from .stressors import STRESSORS, check_options, compose

POLL = 0.05  # seconds between looks at the kernel
PROGRESS_EVERY = 1.0
CHECK_TIMEOUT = 2.0  # how long a quiescent-point check may wait for quiescence


@dataclass
class StressResult:
    config: StressConfig
    metrics: dict[str, Any]
    findings: list[Finding]
    elapsed: float
    runs: int = 1
    checks: int = 0  # invariant checks done while running (at quiescent points)
    checks_skipped: int = 0  # ... that found no quiescent point in time
    interrupted: bool = False
    kernels: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)  # the kernels' counters, summed
    signal: int = 0  # the signal that interrupted the campaign (0: none, or unknown)


class _Attribution:
    """Which stressor instance each pid belongs to (descendants inherit)."""

    def __init__(self, instances: list[tuple[str, dict[str, int]]]) -> None:
        self.instances = instances
        self.owner: dict[int, int] = {}
        self.init_pid = 1
        self.started = 0

    def on_create(self, child: int, parent: int) -> None:
        if parent == self.init_pid:
            if self.started < len(self.instances):
                self.owner[child] = self.started
                self.started += 1
            return
        inst = self.owner.get(parent)
        if inst is None:
            self.owner.pop(child, None)
        else:
            self.owner[child] = inst

    def stressor(self, pid: int) -> str | None:
        i = self.owner.get(pid)
        return None if i is None else self.instances[i][0]

    def pids_of(self, names: set[str]) -> set[int]:
        """The pids attributed to instances of the stressors ``names``."""
        return {pid for pid, i in self.owner.items() if self.instances[i][0] in names}


def swarm_subset(instances: list[tuple[str, dict[str, int]]], faults: dict[str, Any],
                 seed: int) -> tuple[list[tuple[str, dict[str, int]]], dict[str, Any]]:
    """The stressors, options and fault sites one swarm run uses: each stressor
    (all its instances) and each fault site kept with probability 1/2, at
    least one stressor, and within a kept stressor each option that can be 0
    set to 0 with probability 1/2; chosen by ``seed`` alone (a replay of the
    run's seed gets the same subset)."""
    rng = random.Random(f"swarm:{seed}")
    names = list(dict.fromkeys(name for name, _ in instances))
    keep = {n for n in names if rng.random() < 0.5} or {rng.choice(names)}
    sites = {site: knobs for site, knobs in sorted(faults.items()) if rng.random() < 0.5}
    # Within a kept stressor, each of its features that an option can switch
    # off (an option whose range starts at 0: a count or a percentage) is off
    # with probability 1/2, for every instance of it alike.
    off: dict[str, dict[str, int]] = {}
    for name in names:
        if name in keep:
            st = STRESSORS[name]
            off[name] = {k: 0 for k in st.options
                         if st.ranges[k][0] == 0 and rng.random() < 0.5}
    out = []
    for name, opts in instances:
        if name in keep:
            trial = {**opts, **off[name]}
            try:
                opts = check_options(name, trial)
            except BadInput:
                pass  # a combination the stressor refuses: its options as configured
            out.append((name, opts))
    return out, sites


class StressRun:
    """One campaign (see the module docstring)."""

    def __init__(self, cfg: StressConfig, findings_dir: str | None = None,
                 progress: Callable[[str], None] | None = None,
                 on_sample: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cfg = cfg
        self.store = FindingStore(findings_dir)
        self.progress = progress
        self.on_sample = on_sample
        self.instances = cfg.instances()
        self.metrics = Metrics([name for name, _ in self.instances])
        self.checks = 0
        self.checks_skipped = 0
        self.runs = 0
        self.kernels: list[str] = []
        self.counters: Counter[str] = Counter()
        self.system: System | None = None  # the kernel of the current run
        self._signals: sigdefer.Deferral | None = None  # SIGINT/SIGTERM seen (run)

    # -- the campaign -----------------------------------------------------------------

    def run(self) -> StressResult:
        cfg = self.cfg
        t0 = time.monotonic()
        deadline = t0 + cfg.timeout
        interrupted = False
        seed = cfg.seed
        # The campaign handles SIGINT/SIGTERM itself (no replay at the end).
        with sigdefer.deferred(replay=False) as sig:
            self._signals = sig
            try:
                while not sig.signum:
                    found = self._one_run(seed, t0, deadline)
                    if time.monotonic() >= deadline or self.stop_requested():
                        break
                    if not (cfg.keep_going and found) and not cfg.swarm:
                        break
                    seed += 1  # a fresh kernel with the next seed
            except KeyboardInterrupt:
                # raised by code that runs outside the deferral (a campaign
                # driven from another thread than the main one)
                interrupted = True
            signum = sig.signum
        elapsed = time.monotonic() - t0
        doc = self.metrics.finish(elapsed)
        return StressResult(cfg, doc, list(self.store), elapsed, self.runs, self.checks,
                            self.checks_skipped, interrupted or bool(signum), self.kernels,
                            dict(self.counters), signal=signum)

    def stop_requested(self) -> int:
        """The signal that asked the campaign to stop, or 0."""
        sig = self._signals
        return sig.signum if sig is not None else 0

    def _one_run(self, seed: int, t0: float, deadline: float) -> bool:
        cfg = self.cfg
        params = cfg.kernel_params()
        params["seed"] = seed
        instances = self.instances
        if cfg.swarm:
            instances, params["faults"] = swarm_subset(instances, params.get("faults", {}),
                                                       seed)
            deadline = min(deadline, time.monotonic() + cfg.swarm)
        program = parse(compose(instances, seed))
        self.runs += 1
        with boot(**params) as system:
            self.system = system
            self.kernels.append(system.name)
            attr = _Attribution(instances)
            g = system.K.g
            g.sysprobes = 1
            lockstat.enable(system.dom)
            self.metrics.attach(system)
            system.start(program)
            found = False
            try:
                found = self._watch(system, attr, seed, t0, deadline)
            finally:
                # Also on the way out of an exception: what the end of the run
                # finds (a panic while killing and reaping, an invariant
                # violation) goes into the store before anything unwinds.
                found |= self._end(system, attr, seed, t0, found)
            self.system = None
        return found

    def _watch(self, system: System, attr: _Attribution, seed: int, t0: float,
               deadline: float) -> bool:
        """Poll the running kernel until the run should end; was a finding made?"""
        cfg = self.cfg
        found = False
        seen_lockdep = 0
        next_check = time.monotonic() + (cfg.check_interval or float("inf"))
        next_progress = time.monotonic() + PROGRESS_EVERY
        while True:
            events = system.poll(POLL)
            self._feed(events, attr)
            self.metrics.tick(system)  # chains of blocked threads; the series
            now = time.monotonic()
            if system.dom.panicked:
                rep = system.dom.panic_report(wait=30.0)
                if rep is not None:
                    kind, sig = from_wait_report(rep)
                    found |= self._found(kind, sig, str(rep), seed, system, now - t0)
                return found
            reps = system.dom.lockdep_reports()
            for lrep in reps[seen_lockdep:]:
                kind, sig = from_lockdep(lrep)
                found |= self._found(kind, sig, lrep.text, seed, system, now - t0)
            seen_lockdep = len(reps)
            if found:  # stop this run; keep_going boots a fresh kernel
                return found
            if self.stop_requested():  # a safe point: no kernel operation under way
                return found
            if now >= next_check:
                found |= self._check_running(system, seed, now - t0)
                next_check = time.monotonic() + cfg.check_interval
                if found:
                    return found
            if now >= next_progress:
                self._progress(now - t0, deadline - now)
                next_progress = now + PROGRESS_EVERY
            if now >= deadline or not system.running:
                return found
            if cfg.ops:
                done = self.metrics.reached(cfg.ops)
                if len(done) == len(self.metrics.instances):
                    return found
                if done:  # new processes of a done stressor die at the next look
                    system.kill(attr.pids_of(done))

    def _end(self, system: System, attr: _Attribution, seed: int, t0: float,
             found: bool) -> bool:
        """End the run (kill, reap), record what that finds, run the final
        check; was a (further) finding made?"""
        new = False
        try:
            result = system.stop()
            self._feed(result.probes, attr)
            self.counters.update(result.counters)
        finally:
            self.metrics.detach(system)
        if result.report is not None and not found:
            kind, sig = from_wait_report(result.report)
            new |= self._found(kind, sig, str(result.report), seed, system,
                               time.monotonic() - t0)
        if not system.dom.panicked:
            try:
                system.check()  # the final check, everything reaped
            except InvariantViolation as e:
                kind, sig = from_violations(e.violations)
                new |= self._found(kind, sig, str(e), seed, system, time.monotonic() - t0)
        return new

    # -- pieces ------------------------------------------------------------------------

    def _feed(self, events: list[Any], attr: _Attribution) -> None:
        m = self.metrics
        for e in events:
            if e.name == "proc:::create":
                # a creation is the forking process's event (pid is the child's)
                attr.on_create(e.pid, e.args[0])
                st = attr.stressor(e.args[0])
            else:
                st = attr.stressor(e.pid)
            m.event(e, st, st is not None and STRESSORS[st].is_op(e.name, e.args))

    def _check_running(self, system: System, seed: int, at: float) -> bool:
        try:
            problems = system.check_running(timeout=CHECK_TIMEOUT)
        except KernelPanic:
            return False  # the panic is picked up at the next poll
        if problems is None:
            self.checks_skipped += 1
            return False
        self.checks += 1
        if not problems:
            return False
        kind, sig = from_violations(problems)
        text = InvariantViolation(problems).args[0]
        return self._found(kind, sig, text, seed, system, at)

    def _found(self, kind: str, sig: str, text: str, seed: int, system: System,
               at: float) -> bool:
        cfg = self.cfg.to_dict()
        cfg["seed"] = seed
        f = Finding(kind, sig, text, seed, cfg, system.last_program or b"", round(at, 3))
        new = self.store.add(f)
        if new and self.progress is not None:
            self.progress(f"finding: {sig}")
        return True

    def _progress(self, elapsed: float, left: float) -> None:
        if self.progress is None:
            return
        rate = self.metrics.recent_rate()
        self.progress(f"[{elapsed:5.0f} s, {max(left, 0):4.0f} s left] {rate:8,.0f} ops/s  "
                      f"findings {len(self.store)}")
        if self.on_sample is not None:
            self.on_sample(self.metrics.last_sample())


def run_stress(cfg: StressConfig, findings_dir: str | None = None,
               progress: Callable[[str], None] | None = None) -> StressResult:
    return StressRun(cfg, findings_dir, progress).run()


__all__ = ["StressResult", "StressRun", "run_stress"]
