"""The Python API: ``realfork.boot(**params)`` and the booted system.

    with realfork.boot(nproc=64, deadlock_timeout=5) as system:
        result = system.run("fork1\\n beq rv, 0, child\\n wait\\n exit st\\n child: exit 7")
        assert result.status == 7
        system.check()
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterator
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
from .shm.segment import Layout, remove_name, segment_path
from .shm.turnstile import ChainLocks
from .sync import sigdefer
from .sync.condvar import cv_reltimedwait
from .sync.domain import Substrate
from .sync.mutex import mutex_enter, mutex_exit
from .sync.report import WaitReport
from .user.codec import from_msgpack, to_msgpack
from .user.interp import lwp_main
from .user.parser import parse
from .user.program import Program

RUN_POLL_NS = 20_000_000  # the supervisor drains probes at least this often
# How long ``close`` waits for calls in flight in other threads (woken by the
# shutdown) to leave the segment before it returns with the unmapping left to
# the last of them; the names in /dev/shm are removed at once either way.
CLOSE_WAIT_S = 10.0
# How long a call that finds the kernel closing waits for the closer to record
# the last counters and report (the closer waits up to 30 s for a report that
# another process is still writing).
FINALS_WAIT_S = 60.0
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


_OPEN, _CLOSING, _CLOSED = "open", "closing", "closed"


class System:
    """A booted kernel (use ``realfork.boot``).

    Every method that reads the kernel's shared-memory segment does so inside
    ``_reading``, which refuses a kernel that is closing and counts the calls
    in flight; ``close`` (from any thread, a watchdog's included) refuses new
    calls, wakes the kernel's sleepers so the calls in flight return, and
    unmaps the segment only once none is left: the last call out unmaps it if
    ``close`` stopped waiting for it.  A read of an unmapped segment would
    crash the interpreter, so checking ``closed`` before reading is not
    enough: the check and the read must not let a close in between.
    """

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
        self._gate = threading.Condition(threading.Lock())
        self._state = _OPEN
        self._readers = 0  # calls inside _reading, all threads together
        self._depth = threading.local()  # this thread's nesting of _reading
        self._unmap_by_last_reader = False
        self._finals = threading.Event()  # the last counters and report are recorded
        self._final_report: WaitReport | None = None
        self._final_panicked = False
        self._final_counters: dict[str, int] = {}
        self._close_lock = threading.Lock()
        self.runs = 0
        self.last_program: bytes | None = None
        self._sched: tuple[Any, Any] | None = None  # the adopted 'sched' thread of a run
        self._t0 = 0.0
        _remember(self)
        try:
            self.K = K = Kernel(self.dom, params)
            self.dom.sig_pending = sig_pending_hook(K)
            format_kernel(K)
            if params.backend == "processes":
                K.machine = ProcessesMachine(K, lwp_main, sysproc_main)
                K.machine.start()  # the fork server, before any lwp exists
                _remember_forkserver(self.dom.name, K.machine)
            else:
                K.machine = ThreadsMachine(K, lwp_main, sysproc_main)
            with ThreadFactory.adopt(self.dom, "sched") as t:
                kernel_main(K, t)
        except BaseException:
            _forget(self.dom.name)
            self.dom.shutdown()
            raise
        self._system_threads = self.dom.kthreads.hdr.nused  # pageout, fsflush

    @property
    def name(self) -> str:
        return self.dom.name

    # -- keeping the segment mapped while it is read -----------------------------------

    def _try_enter(self) -> bool:
        """Count this thread in as a reader; False if the kernel is closing
        (a call nested in one already in flight is always let in: the outer
        one keeps the segment mapped)."""
        depth = getattr(self._depth, "n", 0)
        with self._gate:
            if depth == 0 and self._state != _OPEN:
                return False
            self._readers += 1
        self._depth.n = depth + 1
        return True

    def _leave(self) -> None:
        self._depth.n -= 1
        with self._gate:
            self._readers -= 1
            if self._readers:
                return
            self._gate.notify_all()
            last = self._unmap_by_last_reader
            self._unmap_by_last_reader = False
        if last:  # close gave up waiting for this call: finish it now
            self._finish_close()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """A block that reads the segment; BadInput if the kernel is closed."""
        if not self._try_enter():
            raise BadInput(f"kernel {self.name} is closed")
        try:
            # A stop signal's exception must not land inside a kernel operation
            # (it would leave a chain lock held or a lock's words half updated,
            # and the close after it would wait on them): within the call it is
            # only recorded, and it is raised when the call returns.
            with sigdefer.deferred():
                yield
        finally:
            self._leave()

    def _final(self) -> None:
        """Wait for a closer in another thread to record the last state."""
        self._finals.wait(FINALS_WAIT_S)

    # -- running programs --------------------------------------------------------------

    def run(self, program: str | bytes | Program, timeout: float | None = None) -> RunResult:
        """Boot init with ``program``; wait until it exits; kill and reap the rest.

        A SIGINT or SIGTERM during the run ends it as a finished run ends
        (every process killed and reaped), then reaches its handler as usual
        (KeyboardInterrupt, or the command line's exit)."""
        with sigdefer.deferred() as stop_signal:
            self.start(program)
            probes: list[ProbeEvent] = []
            deadline = None if timeout is None else self._t0 + timeout
            while self.running and not stop_signal.signum:
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
        with self._reading():
            self._start(prog)

    def _start(self, prog: Program) -> None:
        K = self.K
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
        if not self._try_enter():
            return False
        try:
            return (self._sched is not None and not self.K.g.init_exited
                    and not self.dom.panicked)
        finally:
            self._leave()

    @property
    def panicked(self) -> bool:
        """Has the kernel panicked (also after close)?"""
        if not self._try_enter():
            self._final()
            return self._final_panicked
        try:
            return self.dom.panicked
        finally:
            self._leave()

    def poll(self, wait: float) -> list[ProbeEvent]:
        """Sleep up to ``wait`` seconds (less if init exits); the probes fired since."""
        K = self.K
        with self._reading():
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
        with self._reading():
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
        with self._reading():
            return self._stop()

    def _stop(self) -> RunResult:
        K = self.K
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
        return RunResult(status, probes, self._counters(), report, killed,
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
        if not self._try_enter():
            self._final()
            return dict(self._final_counters)
        try:
            return self._counters()
        finally:
            self._leave()

    def _counters(self) -> dict[str, int]:
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
        from .verify.check import check_kernel

        with self._reading():
            check_kernel(self.K)

    def check_running(self, timeout: float = 5.0) -> list[str] | None:
        """Pause the running kernel at a quiescent point, run the invariant
        checker, resume: the violations found (empty when all hold), or None
        when no quiescent point came within ``timeout`` seconds.  Call it from
        the thread that drives ``start``/``poll``, or from another thread while
        that one waits in ``run``/``poll`` (``realfork.verify.quiesce``)."""
        from .verify.quiesce import check_running

        with self._reading():
            return check_running(self.K, timeout)

    @property
    def closed(self) -> bool:
        """Has ``close`` begun (from any thread)?  Then nothing reads the segment."""
        return self._state != _OPEN

    def panic_report(self) -> WaitReport | None:
        """The panic or deadlock report, if the kernel panicked (also after close)."""
        if not self._try_enter():
            self._final()
            return self._final_report
        try:
            return self.dom.panic_report() if self.dom.panicked else None
        finally:
            self._leave()

    def panic(self, message: str, kind: str = "panic") -> WaitReport | None:
        """Stop the kernel now with a report (for watchdogs); its report."""
        if not self._try_enter():
            self._final()
            return self._final_report
        try:
            if not self.dom.panicked:
                try:
                    self.dom.panic(message, kind=kind)
                except KernelPanic:
                    pass
            return self.dom.panic_report()
        finally:
            self._leave()

    def close(self, wait: float | None = None) -> None:
        """Shut the kernel down and release every OS object it holds.

        Safe from any thread, also while other threads are inside calls of
        this System: they are refused from now on or woken, and the segment is
        unmapped once the last of them has left.  ``wait`` (``CLOSE_WAIT_S``
        by default): how long to wait for them; if some are still inside then,
        close returns and the last one out finishes the shutdown.  The names
        in /dev/shm go first, so a process that exits at any moment after
        (``os._exit`` included) leaves nothing there."""
        wait = CLOSE_WAIT_S if wait is None else wait
        with sigdefer.deferred(), self._close_lock:
            with self._gate:
                if self._state != _OPEN:
                    return
                self._state = _CLOSING
                mine = getattr(self._depth, "n", 0)
                others = self._readers - mine
            _forget(self.name)
            dom = self.dom
            try:
                # This thread is the closer: the segment stays mapped until it
                # says otherwise, so it may read it here.
                dom.seg.unlink()
                dom.chains.unlink()
                if not dom.panicked and (self._sched is not None or others):
                    dom.g.shutting_down = 1  # wake the calls in flight (a poll's sleep)
                    dom.wake_all_sleepers()
                with self._gate:
                    self._gate.wait_for(lambda: self._readers <= mine, timeout=wait)
                self._final_panicked = dom.panicked
                self._final_report = dom.panic_report(wait=30.0) if dom.panicked else None
                self._final_counters = self._counters()
            finally:
                # also when interrupted (pytest-timeout's signal, ^C): the
                # shutdown happens, now or when the last call leaves
                self._finals.set()
                with self._gate:
                    now = self._readers == 0
                    self._unmap_by_last_reader = not now
                if now:
                    self._finish_close()

    def _finish_close(self) -> None:
        """The end of ``close``, once no call reads the segment."""
        try:
            if self._sched is not None:  # closed in the middle of a run
                self._leave_sched()
        finally:
            self.dom.shutdown()
            self._state = _CLOSED

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- kernels still open when the interpreter exits ---------------------------------------

_BOOTED_LOCK = threading.Lock()


@dataclass
class _Booted:
    """What closing a kernel at exit needs, without keeping it alive."""

    pid: int  # the OS process that booted it (a forked child closes nothing)
    system: weakref.ref[System]
    dom: weakref.ref[Substrate]
    forkserver_pid: int = 0  # the processes backend's fork server, and the
    forkserver_fd: int = -1  # pipe whose end tells it the supervisor is gone
    forkserver_pipe: tuple[int, int] = (0, 0)  # that pipe's (st_dev, st_ino)


_BOOTED: dict[str, _Booted] = {}
_ATEXIT_REGISTERED = False


def _remember(system: System) -> None:
    global _ATEXIT_REGISTERED
    with _BOOTED_LOCK:
        _BOOTED[system.dom.name] = _Booted(os.getpid(), weakref.ref(system),
                                           weakref.ref(system.dom))
        if not _ATEXIT_REGISTERED:
            atexit.register(close_all_at_exit)
            _ATEXIT_REGISTERED = True


def _remember_forkserver(name: str, machine: ProcessesMachine) -> None:
    with _BOOTED_LOCK:
        b = _BOOTED.get(name)
        if b is not None:
            b.forkserver_pid, b.forkserver_fd = machine.forkserver_pid, machine._wfd
            st = os.fstat(b.forkserver_fd)
            b.forkserver_pipe = (st.st_dev, st.st_ino)


def _forget(name: str) -> None:
    with _BOOTED_LOCK:
        _BOOTED.pop(name, None)


def open_kernels() -> list[str]:
    """Names of the kernels this process booted and has not closed."""
    with _BOOTED_LOCK:
        return [n for n, b in _BOOTED.items() if b.pid == os.getpid()]


def close_all_at_exit() -> None:
    """Shut down every kernel this process booted and did not close.

    Registered with ``atexit`` at the first boot, so that a script ending with
    ``sys.exit`` or an uncaught exception, or a ``start`` never stopped, leaves
    no segment, semaphore, thread or host process behind; a process forked
    from the booting one (the fork server, a host) closes nothing."""
    with _BOOTED_LOCK:
        entries = [(n, b) for n, b in _BOOTED.items() if b.pid == os.getpid()]
    for name, b in entries:
        try:
            system, dom = b.system(), b.dom()
            if system is not None:
                system.close()
            elif dom is not None:
                dom.shutdown()
            else:  # nothing in this process maps it any more
                remove_name(segment_path(name))
                ChainLocks.unlink_names(name)
                if b.forkserver_pid:
                    _end_forkserver(b)
        except Exception as e:  # one kernel's failure must not keep the others open
            print(f"realfork: closing kernel {name} at exit: {e}", file=sys.stderr)
        finally:
            _forget(name)


def _end_forkserver(b: _Booted) -> None:
    """The fork server of a kernel whose objects are gone: closing its pipe
    tells it the supervisor is gone, so it kills and reaps its hosts and
    exits; reap it.  (The descriptor is closed only if it is still that
    pipe: once closed, its number may name another file.)"""
    pid, fd = b.forkserver_pid, b.forkserver_fd
    with contextlib.suppress(OSError):
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) == b.forkserver_pipe:
            os.close(fd)
    deadline = time.monotonic() + CLOSE_WAIT_S
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            return
        time.sleep(0.01)
    with contextlib.suppress(OSError):
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def boot(**params: Any) -> System:
    """Boot a kernel; see ``realfork.kernel.params.KernelParams`` for the parameters."""
    kp = make_params(**params)
    with sigdefer.deferred():  # a ^C during the boot is raised once it is whole
        return System(kp)


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

