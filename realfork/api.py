"""The Python API: ``realfork.boot(**params)`` and the booted system.

    with realfork.boot(nproc=64, deadlock_timeout=5) as system:
        result = system.run("fork1\\n beq rv, 0, child\\n wait\\n exit st\\n child: exit 7")
        assert result.status == 7
        system.check()
"""

from __future__ import annotations

import ctypes
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import BadInput, KernelPanic
from .kernel.kernel import Kernel, layout_for, nsync_needed
from .kernel.main import format_kernel, kernel_main, start_init, sysproc_main
from .kernel.params import KernelParams, make_params
from .kernel.sig import sig_pending_hook, sigtoproc
from .kernel.structs import PROGRAM_BYTES, SIDL, SSYS, SZOMB
from .machine.backend import ThreadsMachine
from .machine.hosts import declare as declare_hosts
from .machine.processes import WANT_IDLE, ProcessesMachine
from .machine.threads import ThreadFactory
from .probes.ring import ProbeEvent
from .shm.segment import Layout
from .sync.condvar import cv_reltimedwait
from .sync.domain import Substrate
from .sync.mutex import mutex_enter, mutex_exit
from .sync.report import WaitReport
from .user.codec import from_msgpack, to_msgpack
from .user.interp import lwp_main
from .user.parser import parse
from .user.program import Program

RUN_POLL_NS = 20_000_000  # the supervisor drains probes at least this often
COUNTERS = ("sysfork", "sysvfork", "sysforkall", "fork_fail", "syscalls", "nexec", "nexit",
            "nlwp_create", "holds", "vfork_waits", "procovf")


@dataclass
class RunResult:
    """What a run produced (a contract: status, probes, counters, report)."""

    status: int | None  # init's exit status (None if it never exited)
    probes: list[ProbeEvent]
    counters: dict[str, int]
    report: WaitReport | None  # the panic or deadlock report, if any
    killed: list[int] = field(default_factory=list)  # pids still alive when init exited
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.report is None

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "ok": self.ok, "elapsed": self.elapsed,
                "counters": self.counters, "killed": self.killed,
                "report": None if self.report is None else self.report.to_dict(),
                "probes": [e.to_dict() for e in self.probes]}


def as_program(program: str | bytes | Program) -> Program:
    if isinstance(program, Program):
        return program
    if isinstance(program, (bytes, bytearray)):
        return from_msgpack(bytes(program))
    if isinstance(program, str):
        return parse(program)
    raise BadInput(f"a program is text, msgpack bytes or a Program, not {type(program).__name__}")


class System:
    """A booted kernel (use ``realfork.boot``)."""

    def __init__(self, params: KernelParams) -> None:
        self.params = params
        kernel_layout = layout_for(params)

        def layout(lay: Layout) -> None:
            kernel_layout(lay)
            if params.backend == "processes":
                declare_hosts(lay, params.nproc + WANT_IDLE + 4)

        self.dom = Substrate.boot(
            maxlwps=params.maxlwps, nsync=nsync_needed(params),
            deadlock_timeout=float(params.deadlock_timeout),
            probe_capacity=params.probe_capacity, lockdep=params.lockdep, noise=params.noise,
            extra_layout=layout, extra_params={"kernel": params.to_dict()})
        try:
            self.K = K = Kernel(self.dom, params)
            self.dom.sig_pending = sig_pending_hook(K)
            format_kernel(K)
            if params.backend == "processes":
                K.machine = ProcessesMachine(K, lwp_main, sysproc_main)
                K.machine.start()  # the fork server, before any lwp exists
            else:
                K.machine = ThreadsMachine(K, lwp_main, sysproc_main)
            with ThreadFactory.adopt(self.dom, "sched") as t:
                kernel_main(K, t)
        except BaseException:
            self.dom.shutdown()
            raise
        self.runs = 0
        self.last_program: bytes | None = None
        self._sched: tuple[Any, Any] | None = None  # the adopted 'sched' thread of a run
        self._t0 = 0.0
        self._close_lock = threading.Lock()
        self._final_report: WaitReport | None = None
        self._final_counters: dict[str, int] = {}
        self._system_threads = self.dom.kthreads.hdr.nused  # pageout, fsflush

    @property
    def name(self) -> str:
        return self.dom.name

    # -- running programs --------------------------------------------------------------

    def run(self, program: str | bytes | Program, timeout: float | None = None) -> RunResult:
        """Boot init with ``program``; wait until it exits; kill and reap the rest."""
        self.start(program)
        probes: list[ProbeEvent] = []
        deadline = None if timeout is None else self._t0 + timeout
        while self.running:
            probes.extend(self.poll(RUN_POLL_NS / 1e9))
            if deadline is not None and time.monotonic() > deadline and self.running:
                self.panic(f"run did not finish within {timeout:g} s", kind="hang")
        result = self.stop()
        result.probes[:0] = probes
        return result

    def start(self, program: str | bytes | Program) -> None:
        """Start init with ``program`` and return at once; ``poll`` while it
        runs, then ``stop`` (from the same OS thread)."""
        prog = as_program(program)
        K = self.K
        self._require_open()
        if self.dom.panicked:
            raise KernelPanic("the kernel has panicked; boot a new one")
        if self._sched is not None:
            raise BadInput("a run is already in progress")
        data = to_msgpack(prog)
        if len(data) > PROGRAM_BYTES:
            raise BadInput("program too large")
        self.last_program = data  # for reproducers
        g = K.g
        ctypes.memmove(self.dom.seg.region_address("program"), data, len(data))
        g.program_len = len(data)
        g.run_seq += 1
        g.init_exited = 0
        K.faults.disarm()
        self.dom.ring.drain()  # probes of earlier runs belong to them
        self._t0 = time.monotonic()
        adopt = ThreadFactory.adopt(self.dom, "sched")
        t = adopt.__enter__()
        self._sched = (adopt, t)
        K.lwps[t.slot].t_procp = 1  # p0
        try:
            err, init = start_init(K, t, prog.entry)
        except KernelPanic:
            return
        except BaseException:
            self._leave_sched()
            raise
        if init is None:
            self._leave_sched()
            raise BadInput(f"cannot create init (errno {err})")

    @property
    def running(self) -> bool:
        """Is the run started by ``start`` still going (init alive, no panic)?"""
        return self._sched is not None and not self.K.g.init_exited and not self.dom.panicked

    def poll(self, wait: float) -> list[ProbeEvent]:
        """Sleep up to ``wait`` seconds (less if init exits); the probes fired since."""
        K = self.K
        self._require_open()
        if self.running:
            # sleep until init's exit broadcasts run_cv (or a while passes)
            try:
                mutex_enter(K.pidlock)
                if not K.g.init_exited:
                    cv_reltimedwait(K.run_cv, K.pidlock, int(wait * 1e9))
                mutex_exit(K.pidlock)
            except KernelPanic:
                pass
        return self.dom.ring.drain()

    def kill(self, pids: list[int] | set[int], sig: int = 9) -> list[int]:
        """Post ``sig`` (SIGKILL by default) to every user process of ``pids``
        that is alive, as kill(2) would, during a run started by ``start``
        (from the same OS thread); the pids it was posted to."""
        from .kernel.pid import prfind

        K = self.K
        self._require_open()
        if self._sched is None or self.dom.panicked:
            return []
        sent: list[int] = []
        try:
            mutex_enter(K.pidlock)
            for pid in sorted(pids):
                p = prfind(K, pid)
                if p is None or p.s.p_flag & SSYS or p.s.p_stat in (SZOMB, SIDL):
                    continue  # gone, a system process, or not yet fully made
                mutex_enter(p.p_lock)
                sigtoproc(K, p, sig)
                mutex_exit(p.p_lock)
                sent.append(pid)
            mutex_exit(K.pidlock)
        except KernelPanic:
            pass  # the caller sees the panic at its next poll
        return sent

    def stop(self) -> RunResult:
        """End the run: SIGKILL every user process still alive, reap them all;
        what the run produced (probes since the last ``poll``)."""
        K = self.K
        self._require_open()
        if self._sched is None:
            raise BadInput("no run in progress")
        killed: list[int] = []
        try:
            if not self.dom.panicked:
                killed = self._end_run(self._sched[1])
        except KernelPanic:
            pass
        self._leave_sched()
        K.faults.disarm()
        probes = self.dom.ring.drain()
        self.runs += 1
        g = K.g
        # a panic in another process (a host, the fork server) may still be
        # writing its report: wait for it rather than report a clean run
        report = self.dom.panic_report(wait=30.0) if self.dom.panicked else None
        status = g.init_status if g.init_exited else None
        return RunResult(status, probes, self.counters(), report, killed,
                         time.monotonic() - self._t0)

    def _leave_sched(self) -> None:
        if self._sched is None:
            return
        adopt, t = self._sched
        self._sched = None
        self.K.lwps[t.slot].t_procp = 0
        adopt.__exit__(None, None, None)

    def _end_run(self, t: Any) -> list[int]:
        """SIGKILL every user process still alive, wait, and reap every zombie."""
        from .kernel.exit import freeproc

        K = self.K
        killed: list[int] = []
        deadline = time.monotonic() + 10 * self.params.deadlock_timeout
        while True:
            alive = []
            mutex_enter(K.pidlock)
            for p in self._practive():
                s = p.s
                if s.p_flag & SSYS or s.p_stat in (SZOMB, SIDL):
                    continue
                alive.append(p)
                mutex_enter(p.p_lock)
                if s.p_pid not in killed:
                    killed.append(s.p_pid)
                sigtoproc(K, p, 9)  # sets /proc-stopped and all-held lwps running
                mutex_exit(p.p_lock)
            if not alive:
                # reap every zombie, init last
                init = K.g.proc_init
                procs = self._practive()
                _unlink_zombies(K, procs)
                for p in procs:
                    if p.s.p_stat == SZOMB and p.id != init:
                        freeproc(K, p)
                if init and K.proc(init).s.p_stat == SZOMB:
                    freeproc(K, K.proc(init))
                K.g.proc_init = 0
                mutex_exit(K.pidlock)
                # Quiescence: every exiting lwp has finished (the tail of
                # proc_exit runs after its parent may have reaped it).
                while self.dom.kthreads.hdr.nused > self._system_threads + 1:
                    if time.monotonic() > deadline:
                        self.dom.panic("exiting lwps did not finish", kind="hang")
                    time.sleep(0.001)
                return killed
            mutex_exit(K.pidlock)
            if time.monotonic() > deadline:
                self.dom.panic(f"processes {[p.s.p_pid for p in alive]} would not die",
                               kind="hang")
            time.sleep(0.002)

    def _practive(self) -> list[Any]:
        K = self.K
        out = []
        q = K.g.practive
        while q:
            p = K.proc(q)
            out.append(p)
            q = p.s.p_next
        return out

    # -- state ------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """The kernel's counters (after ``close``, as they were when it closed)."""
        if self.dom.closed:
            return dict(self._final_counters)
        g = self.K.g
        c = {name: int(getattr(g, name)) for name in COUNTERS}
        c["nproc"] = g.nproc
        c["probes_dropped"] = int(self.dom.ring.dropped)
        c["lockdep_reports"] = len(self.dom.lockdep_reports())
        c["faults_injected"] = sum(v["failures"] for v in self.K.faults.stats().values())
        machine = self.K.machine
        if isinstance(machine, ProcessesMachine):
            pool = machine.hosts.pool
            c["hosts_created"] = int(pool.created)
            c["host_waits"] = int(pool.waits)  # forks that found no idle host
        return c

    def check(self) -> None:
        """Run the invariant checker; raises InvariantViolation listing every problem."""
        from .kernel.check import check_kernel

        self._require_open()
        check_kernel(self.K)

    def check_running(self, timeout: float = 5.0) -> list[str] | None:
        """Pause the running kernel at a quiescent point, run the invariant
        checker, resume: the violations found (empty when all hold), or None
        when no quiescent point came within ``timeout`` seconds.  Call it from
        the thread that drives ``start``/``poll``, or from another thread while
        that one waits in ``run``/``poll`` (``realfork.kernel.pause``)."""
        from .kernel.pause import check_running

        self._require_open()
        return check_running(self.K, timeout)

    @property
    def closed(self) -> bool:
        return self.dom.closed

    def _require_open(self) -> None:
        # every handle over the segment dangles once it is unmapped: refuse
        # rather than let a read of it crash the interpreter
        if self.dom.closed:
            raise BadInput(f"kernel {self.name} is closed")

    def panic_report(self) -> WaitReport | None:
        """The panic or deadlock report, if the kernel panicked (also after close)."""
        with self._close_lock:
            if self.dom.closed:
                return self._final_report
            return self.dom.panic_report() if self.dom.panicked else None

    def panic(self, message: str, kind: str = "panic") -> WaitReport | None:
        """Stop the kernel now with a report (for watchdogs); its report."""
        with self._close_lock:
            if self.dom.closed:
                return self._final_report
            if not self.dom.panicked:
                try:
                    self.dom.panic(message, kind=kind)
                except KernelPanic:
                    pass
            return self.dom.panic_report()

    def close(self) -> None:
        with self._close_lock:
            if self.dom.closed:
                return
            self._final_report = (self.dom.panic_report(wait=30.0) if self.dom.panicked
                                  else None)
            self._final_counters = self.counters()
            if self._sched is not None:  # closed in the middle of a run
                if not self.dom.panicked:
                    self.dom.g.shutting_down = 1
                    self.dom.wake_all_sleepers()
                self._leave_sched()
            self.dom.shutdown()

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def boot(**params: Any) -> System:
    """Boot a kernel; see ``realfork.kernel.params.KernelParams`` for the parameters."""
    return System(make_params(**params))


def _unlink_zombies(K: Kernel, procs: list[Any]) -> None:
    """Take every zombie off the two singly linked lists freeproc unlinks it
    from by walking them, a parent's p_child_ns and a next of kin's p_orphan,
    in one pass over each list.  Freed one by one at the end of a run, 27,000
    zombies took ten minutes (each walk passed most of the others), since
    nothing orders a list the way the reaper goes.  (init, freed last, comes
    off too: freeproc finds it on no list either way.)"""
    for p in procs:
        s = p.s
        for head, link in (("p_child_ns", "p_sibling_ns"), ("p_orphan", "p_nextorph")):
            keep: list[Any] = []
            q = getattr(s, head)
            while q:
                c = K.proc(q)
                q = getattr(c.s, link)
                if c.s.p_stat == SZOMB:
                    setattr(c.s, link, 0)
                else:
                    keep.append(c)
            setattr(s, head, keep[0].id if keep else 0)
            for i, c in enumerate(keep):
                setattr(c.s, link, keep[i + 1].id if i + 1 < len(keep) else 0)

