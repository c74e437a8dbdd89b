"""The lock-order validator on the real kernel: silent on the clean kernel,
and a seeded inversion is flagged the first time it happens, deadlock or not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import boot_checked

from realfork.api import RunResult, System
from realfork.kernel.kernel import Kernel
from realfork.sync.kthread import KThread
from realfork.sync.objects import KMutex
from realfork.sync.report import WaitReport

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("backend")]
ROOT = Path(__file__).resolve().parent.parent

VFORK_ONCE = """
    vfork
    beq rv, 0, child
    wait
    exit 0
child:
    exit 0
"""


def test_clean_kernel_learns_orders_without_reports() -> None:
    with boot_checked() as system:
        r = system.run(VFORK_ONCE + "\n", timeout=60)
        assert r.report is None
        assert system.dom.lockdep_reports() == []
        assert r.counters["lockdep_reports"] == 0


def relvm_inversion_reported(system: System, r: RunResult) -> None:
    """The validator's one report: relvm took the child's p_lock holding the
    parent's (p_lock/1), against the declared order."""
    (rep,) = system.dom.lockdep_reports()
    assert (rep.held_name, rep.new_name) == ("p_lock/1", "p_lock")
    assert "possible circular locking dependency detected" in rep.text
    assert "CPU0" in rep.text and "CPU1" in rep.text
    assert "relvm" in rep.chain
    assert "lockdep:::inversion" in [e.name for e in r.probes]


def relvm_vfwait_cycle(report: WaitReport) -> None:
    """A deadlock report whose one cycle is the vfork child in relvm holding
    its parent's p_lock and waiting for its own, and the parent in vfwait
    holding the child's p_lock and waiting for its own."""
    assert report.kind == "deadlock", str(report)
    (cycle,) = report.cycles
    ts = [report.thread(tid) for tid in cycle]
    assert len(ts) == 2, str(report)
    assert all(t.wchan_kind == "mutex" and t.wchan_name.startswith("p_lock") for t in ts)
    child = next(t for t in ts if "relvm" in t.chain.split(";"))
    parent = next(t for t in ts if "vfwait" in t.chain.split(";"))
    assert child is not parent
    assert child.held == [parent.wchan_name] and parent.held == [child.wchan_name]
    assert child.wchan_name == f"p_lock[pid {child.pid}]"
    assert parent.wchan_name == f"p_lock[pid {parent.pid}]"
    assert child.owners == [parent.id] and parent.owners == [child.id]


def test_relvm_taking_the_parents_p_lock_first_is_flagged_without_a_deadlock() -> None:
    """The inversion is reported the first time relvm takes the two p_locks
    in the wrong order, whether or not it deadlocks: the parent's vfwait
    takes them the declared way round and may hold the child's p_lock at
    that very moment (the likelier, the more loaded the machine).  So the run
    ends either cleanly or with a deadlock report naming that cycle; the
    lock-order report is there either way."""
    with boot_checked(bugs=["relvm_parent_first"]) as system:
        r = system.run(VFORK_ONCE, timeout=60)
        relvm_inversion_reported(system, r)
        if r.report is None:
            assert r.status == 0
        else:  # the two met: the deadlock the validator warned of
            relvm_vfwait_cycle(r.report)


def test_relvm_inversion_deadlock_is_reported_with_its_cycle(
        backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadlock of the inversion, made to happen: hooks hold the vfork
    parent back from vfwait until the child (relvm) holds the parent's
    p_lock, and the child from taking its own until the parent holds it
    (vfwait, about to take its own).  Both then block for good; the
    inversion was reported before the child blocked, and the deadline's
    report names the cycle."""
    import multiprocessing

    import realfork.kernel.fork as kfork
    import realfork.kernel.syscall as ksyscall
    from realfork.sync.kthread import _cpu

    ctx = multiprocessing.get_context("fork")  # the hosts inherit them
    child_holds, parent_holds = ctx.Event(), ctx.Event()
    real_nested, real_vfwait = kfork.mutex_enter_nested, ksyscall.vfwait

    def nested(m: KMutex, subclass: int) -> None:
        if _cpu.t.nheld == 0:  # relvm with the bug: the parent's p_lock, first
            real_nested(m, subclass)
            child_holds.set()
            parent_holds.wait(60)
        else:  # vfwait, holding the child's p_lock
            parent_holds.set()
            real_nested(m, subclass)

    def vfwait(K: Kernel, t: KThread, pid: int) -> None:
        child_holds.wait(60)  # holding no lock
        real_vfwait(K, t, pid)

    monkeypatch.setattr(kfork, "mutex_enter_nested", nested)
    monkeypatch.setattr(ksyscall, "vfwait", vfwait)
    with boot_checked(bugs=["relvm_parent_first"], deadlock_timeout=5.0) as system:
        r = system.run(VFORK_ONCE, timeout=120)
        assert child_holds.is_set() and parent_holds.is_set()
        assert r.report is not None
        relvm_vfwait_cycle(r.report)
        relvm_inversion_reported(system, r)


def test_panic_mode_stops_the_run(backend: str) -> None:
    with boot_checked(bugs=["relvm_parent_first"], lockdep="panic") as system:
        r = system.run(VFORK_ONCE, timeout=60)
        assert r.report is not None and r.report.kind == "lock-order"


def test_realfork_run_exits_1_on_an_inversion(tmp_path: Path, backend: str) -> None:
    prog = tmp_path / "vfork.rf"
    prog.write_text(VFORK_ONCE)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "realfork", "run", str(prog), "--backend",
                        backend, "--bug", "relvm_parent_first"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "possible circular locking dependency detected" in r.stdout
