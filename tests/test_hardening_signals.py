"""SIGINT and SIGTERM never leave a kernel lock half updated; an interrupted
``realfork stress`` ends promptly, prints what it found and leaves nothing.

A signal is made to arrive at the worst point of a lock operation
deterministically: a wrapped chain lock, or a wrapped ``sleepq.dequeue``, calls
``signal.raise_signal`` from inside the chain-lock section, and Python runs the
handler before ``raise_signal`` returns, so the handler's exception (if any)
is raised exactly there.  No test depends on timing: the subprocess tests send
their signal after reading the campaign's first progress line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import realfork
from conftest import leftovers
from realfork.machine.threads import ThreadFactory
from realfork.sync import sleepq
from realfork.sync.condvar import cv_signal, cv_wait, cv_waiters
from realfork.sync.domain import Substrate
from realfork.sync.kthread import KThread
from realfork.sync.mutex import mutex_enter, mutex_exit
from realfork.sync.structs import TS_SLEEP

pytestmark = pytest.mark.timeout(120)

SOURCE = Path(realfork.__file__).resolve().parent.parent  # the tree under test


class SignalInside:
    """A chain lock that sends ``sig`` to this process from inside its
    critical section, in the main thread, at the ``nth`` release by that
    thread: just before the real release, once the words are updated."""

    def __init__(self, lk: Any, sig: int, nth: int = 1) -> None:
        self.lk = lk
        self.sig = sig
        self.nth = nth
        self.releases = 0
        self.fired = False

    def acquire(self, *args: Any) -> bool:
        return self.lk.acquire(*args)

    def release(self) -> None:
        if threading.current_thread() is threading.main_thread() and not self.fired:
            self.releases += 1
            if self.releases >= self.nth:
                self.fired = True
                signal.raise_signal(self.sig)
        self.lk.release()


@pytest.fixture
def default_sigint() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt (Python's default), whatever the runner set."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def chain_free(lk: Any) -> bool:
    """Is the chain lock free?  (Takes and gives it back when it is.)"""
    if lk.acquire(False):
        lk.release()
        return True
    return False


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.002)


def asleep_on(dom: Substrate, t: KThread, obj: Any) -> bool:
    s = t.s
    return s.t_state == TS_SLEEP and s.t_wchan == obj.idx + 1


def signal_in_dequeue(monkeypatch: pytest.MonkeyPatch, sig: int) -> list[int]:
    """Make ``sleepq.dequeue`` (called with the chain lock held) send ``sig``
    once, right after it has unlinked the waiter; the ids it dequeued."""
    real = sleepq.dequeue
    got: list[int] = []

    def dequeue(dom: Any, s: Any, reason: int) -> int:
        tid = real(dom, s, reason)
        got.append(tid)
        if len(got) == 1:
            signal.raise_signal(sig)
        return tid

    monkeypatch.setattr(sleepq, "dequeue", dequeue)
    return got


# -- (1) the hazard, and the deferral that removes it ------------------------------------


def test_unguarded_sigint_inside_mutex_enter_leaves_the_lock_half_taken(
        dom: Substrate, default_sigint: None) -> None:
    """What the old supervisor was exposed to: KeyboardInterrupt between the
    owner word's update and the chain lock's release."""
    m = dom.new_mutex("victim")
    real = m.lk
    with ThreadFactory.adopt(dom, "main") as t:
        m.lk = SignalInside(real, signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            mutex_enter(m)
        m.lk = real
        assert m.s.owner == t.id  # owned ...
        assert t.nheld == 0  # ... but not on the holder's record
        assert not chain_free(real)  # and the chain lock is held by nobody
        real.release()
        m.s.owner = 0


def test_sigint_inside_mutex_enter_is_deferred_to_the_end_of_the_block(
        dom: Substrate, default_sigint: None) -> None:
    from realfork.sync import sigdefer

    m = dom.new_mutex("victim")
    real = m.lk
    inside: list[bool] = []
    with ThreadFactory.adopt(dom, "main") as t:
        wrapped = SignalInside(real, signal.SIGINT)
        m.lk = wrapped
        with pytest.raises(KeyboardInterrupt):
            with sigdefer.deferred() as d:
                mutex_enter(m)
                assert wrapped.fired and d.signum == signal.SIGINT
                assert m.s.owner == t.id and t.nheld == 1 and chain_free(real)
                mutex_exit(m)
                assert m.s.owner == 0 and t.nheld == 0 and chain_free(real)
                inside.append(True)
        m.lk = real
        assert inside == [True]  # the block ran to its end before the exception
        mutex_enter(m)  # usable
        mutex_exit(m)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _waiter_on_mutex(dom: Substrate, m: Any) -> KThread:
    def body() -> None:
        mutex_enter(m)
        mutex_exit(m)

    return ThreadFactory(dom).spawn(body, name="waiter")


def test_unguarded_sigint_inside_mutex_exit_hands_the_lock_to_a_waiter_never_woken(
        dom: Substrate, default_sigint: None, monkeypatch: pytest.MonkeyPatch) -> None:
    m = dom.new_mutex("victim")
    with ThreadFactory.adopt(dom, "main") as t:
        mutex_enter(m)
        w = _waiter_on_mutex(dom, m)
        wait_until(lambda: asleep_on(dom, w, m), "the waiter sleeps on the mutex")
        got = signal_in_dequeue(monkeypatch, signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            mutex_exit(m)
        monkeypatch.undo()
        # the waiter is off the queue, marked woken, but never posted, and the
        # lock is still owned by the thread that was releasing it
        assert got == [w.id] and m.s.nwaiters == 0 and w.s.t_wchan == 0
        assert w.s.t_state == TS_SLEEP
        assert m.s.owner == t.id and t.nheld == 1
        assert not chain_free(m.lk)
        m.s.owner = w.id  # repair, so that the kernel can shut down
        m.lk.release()
        t.held_remove(m.idx + 1)
        sleepq.wakeup(dom, w.id)
        w.os_thread.join(30)


def test_sigint_inside_mutex_exit_is_deferred(
        dom: Substrate, default_sigint: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from realfork.sync import sigdefer

    m = dom.new_mutex("victim")
    with ThreadFactory.adopt(dom, "main") as t:
        mutex_enter(m)
        w = _waiter_on_mutex(dom, m)
        wait_until(lambda: asleep_on(dom, w, m), "the waiter sleeps on the mutex")
        got = signal_in_dequeue(monkeypatch, signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            with sigdefer.deferred() as d:
                mutex_exit(m)
                assert got == [w.id] and d.signum == signal.SIGINT
                assert t.nheld == 0 and chain_free(m.lk)
        monkeypatch.undo()
        w.os_thread.join(30)  # it was handed the lock, woken, and let it go
        assert not w.os_thread.is_alive()
        assert m.s.owner == 0 and m.s.nwaiters == 0 and m.s.whead == 0
        mutex_enter(m)
        mutex_exit(m)
    assert not dom.panicked


def _waiter_on_cv(dom: Substrate, m: Any, cv: Any, woken: list[bool]) -> KThread:
    def body() -> None:
        mutex_enter(m)
        cv_wait(cv, m)
        woken.append(True)
        mutex_exit(m)

    return ThreadFactory(dom).spawn(body, name="cv-waiter")


def test_unguarded_sigint_inside_cv_signal_loses_the_wakeup(
        dom: Substrate, default_sigint: None, monkeypatch: pytest.MonkeyPatch) -> None:
    m = dom.new_mutex("cv_lock")
    cv = dom.new_cv("cv")
    woken: list[bool] = []
    with ThreadFactory.adopt(dom, "main"):
        w = _waiter_on_cv(dom, m, cv, woken)
        wait_until(lambda: asleep_on(dom, w, cv), "the waiter sleeps on the cv")
        mutex_enter(m)
        signal_in_dequeue(monkeypatch, signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            cv_signal(cv)
        monkeypatch.undo()
        assert cv_waiters(cv) == 0 and w.s.t_wchan == 0  # dequeued ...
        assert w.s.t_state == TS_SLEEP and not woken  # ... and never posted
        assert not chain_free(cv.lk)
        cv.lk.release()  # repair
        mutex_exit(m)
        sleepq.wakeup(dom, w.id)
        w.os_thread.join(30)


def test_sigint_inside_cv_signal_is_deferred(
        dom: Substrate, default_sigint: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from realfork.sync import sigdefer

    m = dom.new_mutex("cv_lock")
    cv = dom.new_cv("cv")
    woken: list[bool] = []
    with ThreadFactory.adopt(dom, "main"):
        w = _waiter_on_cv(dom, m, cv, woken)
        wait_until(lambda: asleep_on(dom, w, cv), "the waiter sleeps on the cv")
        got = signal_in_dequeue(monkeypatch, signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            with sigdefer.deferred():
                mutex_enter(m)
                cv_signal(cv)
                assert got == [w.id] and chain_free(cv.lk)
                mutex_exit(m)
        monkeypatch.undo()
        w.os_thread.join(30)
        assert woken == [True] and not w.os_thread.is_alive()
        assert cv_waiters(cv) == 0 and m.s.owner == 0
    assert not dom.panicked


def test_deferred_sigterm_reaches_the_previous_handler_on_leaving() -> None:
    from realfork.cli import _terminate
    from realfork.sync import sigdefer

    old = signal.signal(signal.SIGTERM, _terminate)
    try:
        with pytest.raises(SystemExit) as e:
            with sigdefer.deferred() as d:
                signal.raise_signal(signal.SIGTERM)
                signal.raise_signal(signal.SIGTERM)  # a second one: still recorded
                assert d.received == [signal.SIGTERM, signal.SIGTERM]
        assert e.value.code == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is _terminate
        with sigdefer.deferred(replay=False) as d:  # the caller takes charge
            signal.raise_signal(signal.SIGTERM)
        assert d.signum == signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, old)


def test_stress_campaign_sigint_inside_the_supervisors_pidlock_section(
        tmp_path: Path, default_sigint: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The supervisor takes SIGINT between updating pidlock's words and
    releasing its chain lock (in poll, kill, stop or the checker): the
    campaign still ends as at its time limit, with no finding, the kernel
    reaped, checked and closed."""
    from realfork.stress import runner
    from realfork.stress.config import StressConfig

    systems: list[Any] = []
    wrappers: list[SignalInside] = []
    real_boot = runner.boot

    def boot(**params: Any) -> Any:
        system = real_boot(**params)
        systems.append(system)
        m = system.K.pidlock
        w = SignalInside(m.lk, signal.SIGINT, nth=40)  # a few polls into the run
        wrappers.append(w)
        m.lk = w
        return system

    monkeypatch.setattr(runner, "boot", boot)
    cfg = StressConfig(stressors={"fork": 1, "signal": 1, "proc": 1}, timeout=120,
                       check_interval=0, boot={"backend": "threads", "deadlock_timeout": 2.0})
    res = runner.StressRun(cfg, str(tmp_path / "findings")).run()
    assert wrappers and wrappers[0].fired
    assert res.runs == 1 and res.interrupted
    reports = [s.panic_report() for s in systems]  # kept after close
    assert reports == [None], [str(r) for r in reports if r is not None]
    assert res.findings == [], [f.signature for f in res.findings]
    assert all(s.closed for s in systems)
    assert res.signal == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_report_made_while_the_run_unwinds_is_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A panic whose report the end of the run collects (here: made just
    before the supervisor's loop unwinds with KeyboardInterrupt) is a
    finding, not thrown away with the unwinding."""
    from realfork.stress import runner
    from realfork.stress.config import StressConfig
    from realfork.stress.metrics import Metrics

    real_tick = Metrics.tick
    calls: list[int] = []

    def tick(self: Metrics, system: Any) -> None:
        real_tick(self, system)
        calls.append(1)
        if len(calls) == 5:
            system.panic("processes [2] would not die", kind="hang")
            raise KeyboardInterrupt

    monkeypatch.setattr(Metrics, "tick", tick)
    cfg = StressConfig(stressors={"fork": 1}, timeout=120, check_interval=0,
                       boot={"backend": "threads"})
    res = runner.StressRun(cfg, str(tmp_path / "findings")).run()
    assert res.interrupted
    assert [f.kind for f in res.findings] == ["hang"], res.findings
    assert "would not die" in res.findings[0].report


def _sig_ignored(pid: int) -> set[int]:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigIgn:"):
                mask = int(line.split()[1], 16)
                return {s for s in (signal.SIGINT, signal.SIGTERM) if mask >> (s - 1) & 1}
    return set()


def test_fork_server_and_hosts_ignore_sigint_and_sigterm() -> None:
    from realfork.machine.hosts import H_FREE

    with realfork.boot(backend="processes") as system:
        machine = system.K.machine
        pids = [machine.forkserver_pid]

        def hosts() -> list[int]:
            return [h.os_pid for h in machine.hosts.hosts if h.state != H_FREE and h.os_pid]

        wait_until(lambda: len(hosts()) > 0, "a host is up")
        pids += hosts()
        for pid in pids:
            assert _sig_ignored(pid) == {signal.SIGINT, signal.SIGTERM}, pid
        # and the supervisor's own handlers are as they were
        assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN


# -- (2) the command line, interrupted -------------------------------------------------------


def _our_shm(names: list[str]) -> list[str]:
    return leftovers(names)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", ["threads", "processes"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupted_stress_command_exits_with_its_summary(
        tmp_path: Path, backend: str, sig: int) -> None:
    out = tmp_path / "metrics.json"
    env = dict(os.environ, PYTHONPATH=str(SOURCE))
    p = subprocess.Popen(
        [sys.executable, "-m", "realfork", "stress", "--backend", backend, "--timeout", "600",
         "--check-interval", "0", "--findings", str(tmp_path / "findings"), "--json", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
        start_new_session=True)
    try:
        assert p.stderr is not None
        seen = []
        while True:  # the campaign is under way once it reports progress
            line = p.stderr.readline().decode()
            assert line, f"stress ended before reporting progress: {''.join(seen)}"
            seen.append(line)
            if line.startswith("["):
                break
        if sig == signal.SIGINT:
            os.killpg(p.pid, sig)  # as a terminal's ^C: the whole process group
        else:
            os.kill(p.pid, sig)  # as kill(1): the supervisor alone
        so, se = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
    stdout, stderr = so.decode(), "".join(seen) + se.decode()
    assert p.returncode == 128 + sig, (p.returncode, stdout, stderr[-2000:])
    assert "findings: none" in stdout, stdout
    assert f"interrupted by {signal.Signals(sig).name}" in stdout, stdout
    assert "Traceback" not in stderr, stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["kernels"] and not doc["findings"]
    assert not _our_shm(doc["kernels"])
    alive = _group_alive(p.pid)
    if alive:
        os.killpg(p.pid, signal.SIGKILL)
    assert not alive, "a fork server or host outlived the command"


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_system_run_sigint_inside_pidlock_section_stops_the_run_cleanly(
        default_sigint: None, backend: str) -> None:
    """``System.run`` (what ``realfork run`` and API users call) takes SIGINT
    between updating pidlock's words and releasing its chain lock, in the
    main thread: the run still ends as a finished run ends (every process
    killed and reaped, no panic), and only then does KeyboardInterrupt reach
    the caller; the kernel stays consistent and closes cleanly."""
    system = realfork.boot(backend=backend, nproc=32, deadlock_timeout=5.0)
    try:
        m = system.K.pidlock
        w = SignalInside(m.lk, signal.SIGINT, nth=3)  # in start or the first polls
        m.lk = w
        with pytest.raises(KeyboardInterrupt):
            system.run("fork1\n beq rv, 0, child\n sleep 600000\n exit 0\n"
                       "child: sleep 600000\n exit 0")
        assert w.fired
        m.lk = w.lk
        assert chain_free(w.lk), "the chain lock stayed held"
        assert not system.running and not system.panicked
        system.check()  # the invariants hold after the interrupted run
        assert system.panic_report() is None
    finally:
        system.close()
    assert system.panic_report() is None
