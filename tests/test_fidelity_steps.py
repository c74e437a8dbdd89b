"""Steps of fork.c and its neighbours that the model once left out or
simplified, each shown to happen as the seed has it: relvm's /proc hook and
its one-lwp assertion, SVFWAIT cleared by relvm alone, the PR_SYSEXIT stop
before vfwait, the child's TP_PRSTOP under its p_lock, sprunlock's single
wake-up, newproc's pidlock -> p_lock nesting around lwp_create_done,
forklwp_fail's pidlock per clone and upcount_inc's pidlock drop.

The steps are no profile deltas: the vfork ones are run in both kernel
profiles.  Most tests wrap a kernel function (monkeypatch, before boot: the processes
backend's hosts are forked at boot and inherit the wrapper) and record what
the wrapper sees in shared memory, so that a host's records reach the test."""

from __future__ import annotations

import multiprocessing
import sys
from typing import Any

import pytest
from helpers import boot_checked, lwp_in_syscall, opening, proc_of, prstopped

import realfork.kernel.fork as kfork
import realfork.kernel.pid as kpid
import realfork.kernel.procfs as kprocfs
from realfork.kernel.structs import (
    LWP_STOPPED,
    P_PR_STOPFORK,
    PR_SYSEXIT,
    SVFORK,
    SVFWAIT,
)
from realfork.sync.mutex import MUTEX_HELD, mutex_enter, mutex_exit
from realfork.sync.structs import TS_SLEEP

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("backend")]


class Records:
    """Rows of ints appended by any OS process of the run (fork-inherited
    shared memory), read back by the test."""

    def __init__(self, width: int, rows: int = 64) -> None:
        ctx = multiprocessing.get_context("fork")
        self.width = width
        self.cells = ctx.Array("q", width * rows, lock=False)
        self.n = ctx.Value("i", 0)
        self.rows_max = rows

    def add(self, *row: int) -> None:
        assert len(row) == self.width
        with self.n.get_lock():
            i = self.n.value
            if i < self.rows_max:
                for k, v in enumerate(row):
                    self.cells[i * self.width + k] = int(v)
                self.n.value = i + 1

    def rows(self) -> list[tuple[int, ...]]:
        with self.n.get_lock():
            n = self.n.value
        w = self.width
        return [tuple(self.cells[i * w:(i + 1) * w]) for i in range(n)]


def caller() -> Any:
    """Called by a wrapper: the frame of the kernel function that called it."""
    return sys._getframe(2)


# -- 1. relvm: prrelvm, the one-lwp assertion, SVFWAIT is relvm's ------------------------


@pytest.mark.parametrize("kernel", ["fixed", "2006"])
def test_relvm_calls_prrelvm_which_frees_the_watchpoints(monkeypatch: pytest.MonkeyPatch,
                                                         kernel: str) -> None:
    """Every relvm (here two exits) goes through /proc's hook, which drops
    the watch areas and frees the watched pages of the process's own address
    space (the wrapper gives it some first)."""
    rec = Records(4)
    real = kprocfs.prrelvm

    def prrelvm(K: Any, p: Any) -> None:
        s = p.s
        own = not s.p_flag & SVFORK and s.p_as and s.p_as != K.g.kas
        if own:  # a process with watchpoints
            s.p_wcount = 2
            K.ases.slots[s.p_as - 1].a_wpage = 3
        a = s.p_as
        real(K, p)
        rec.add(s.p_pid, int(bool(own)), s.p_wcount, K.ases.slots[a - 1].a_wpage if own else 0)

    monkeypatch.setattr(kfork, "prrelvm", prrelvm)
    with boot_checked(kernel=kernel) as system:
        r = system.run("""
            fork1
            beq rv, 0, child
            wait
            exit st
        child:
            exit 5
        """, timeout=60)
        assert r.report is None, str(r.report)
        assert r.status == 5
    rows = rec.rows()
    assert sorted(row[0] for row in rows) == [1, 4]  # init and its child
    assert all(row[1:] == (1, 0, 0) for row in rows), rows


def test_relvm_asserts_the_process_has_one_lwp(monkeypatch: pytest.MonkeyPatch) -> None:
    """relvm's ASSERT(p_lwpcnt <= 1): with exec's exitlwps made to do
    nothing, exec reaches relvm with two lwps, and the kernel panics there
    instead of freeing an address space another lwp still runs on."""
    import realfork.kernel.exec as kexec

    monkeypatch.setattr(kexec, "exitlwps", lambda K, t, p: 0)
    with boot_checked() as system:
        r = system.run("""
            lwp_create sleeper
            exec image
        image:
            exit 0
        sleeper:
            sleep 2000
            lwp_exit
        """, timeout=60)
        assert r.report is not None and r.report.kind == "panic", r.report
        assert "relvm: pid 4 has 2 lwps" in str(r.report) or \
            "relvm: pid 1 has 2 lwps" in str(r.report), str(r.report)


VFORK = """
    vfork
    beq rv, 0, child
    wait
    exit st
child:
    exit 7
"""


def test_relvm_clears_svfwait_before_it_wakes_the_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    """When relvm signals the parent's p_cv, the parent's SVFWAIT is clear
    already (both p_locks held): relvm is what ends the vfork wait."""
    rec = Records(2)
    real = kfork.cv_signal

    def cv_signal(cv: Any) -> None:
        f = caller()
        if f.f_code.co_name == "_vfork_hand_back":
            pp = f.f_locals["pp"]
            rec.add(pp.s.p_pid, int(bool(pp.s.p_flag & SVFWAIT)))
        real(cv)

    monkeypatch.setattr(kfork, "cv_signal", cv_signal)
    with boot_checked() as system:
        r = system.run(VFORK, timeout=60)
        assert r.report is None, str(r.report)
        assert r.status == 7
    assert rec.rows() == [(1, 0)]


@pytest.mark.parametrize("kernel", ["fixed", "2006"])
def test_vfwait_leaves_svfwait_to_relvm(monkeypatch: pytest.MonkeyPatch, kernel: str) -> None:
    """vfwait does not clear SVFWAIT itself (fork.c's vfwait never touches
    it): given a relvm that wakes the parent but leaves SVFWAIT set, the
    parent is still marked SVFWAIT once it is out of vfwait and back in user
    mode.  (Were vfwait to clear it, as the model once did, the mark would
    be gone.)"""
    real = kfork.cv_signal
    seen: list[int] = []

    def cv_signal(cv: Any) -> None:
        f = caller()
        if f.f_code.co_name == "_vfork_hand_back":
            f.f_locals["pp"].s.p_flag |= SVFWAIT  # this relvm forgets to clear it
        real(cv)

    def out_of_vfwait(K: Any) -> bool:
        if K.g.vfork_waits and lwp_in_syscall(K, 1, 1, "sleep"):
            s = proc_of(K, 1)
            seen.append(int(bool(s.p_flag & SVFWAIT)))
            return True
        return False

    monkeypatch.setattr(kfork, "cv_signal", cv_signal)
    with boot_checked(kernel=kernel) as system, opening(system.K, {63: out_of_vfwait}):
        r = system.run("""
            vfork
            beq rv, 0, child
            wait
            mov r1, st
        out:
            sleep 1
            load r0, 63             ; the gate: the test has looked at our p_flag
            beq r0, 0, out
            exit r1
        child:
            exit 7
        """, timeout=60)
        assert r.report is None, str(r.report)
        assert r.status == 7
    assert seen == [1]


# -- 2. the PR_SYSEXIT stop comes before vfwait --------------------------------------------


def _stopped_sysexit(K: Any, pid: int, lwpid: int) -> bool:
    kts = K.dom.kthreads
    for i in kts.used():
        ts = kts.slots[i]
        if ts.t_pid == pid and ts.t_lwpid == lwpid:
            lw = K.lwps[i]
            return (ts.t_state == TS_SLEEP and lw.t_kstate == LWP_STOPPED
                    and lw.t_whystop == PR_SYSEXIT)
    return False


@pytest.mark.parametrize("kernel", ["fixed", "2006"])
def test_traced_vfork_parent_stops_on_sysexit_before_vfwait(kernel: str) -> None:
    """A vfork parent that traces the exit from vfork stops as PR_SYSEXIT
    before it waits for its child: when it is seen stopped, vfwait has not
    started (no vfork wait counted yet), its child has run (and exited) on
    the borrowed address space meanwhile, and only the controller's prrun
    lets it go on into vfwait."""
    seen: list[int] = []

    def flags_set(K: Any) -> bool:
        s = proc_of(K, 1)
        return s is not None and bool(s.p_proc_flag & P_PR_STOPFORK)

    def parent_stopped(K: Any) -> bool:
        if _stopped_sysexit(K, 1, 1):
            seen.append(int(K.g.vfork_waits))
            return True
        return False

    # the controller sets the flag only once init is past its fork1 (set
    # earlier, it would stop init on its way out of that fork1)
    gates = {63: lambda K: lwp_in_syscall(K, 1, 1, "sleep"), 62: flags_set, 61: parent_stopped}
    with boot_checked(kernel=kernel) as system, opening(system.K, gates):
        r = system.run("""
            fork1
            beq rv, 0, controller
            mov r6, rv
        flags:
            sleep 1
            load r0, 62             ; the gate: the controller set our stop on exit from fork
            beq r0, 0, flags
            vfork                   ; we stop on our way out, before vfwait
            beq rv, 0, child
            mov r5, rv
            wait r5
            mov r1, st
            wait r6
            add r1, st
            exit r1
        child:
            exit 3
        controller:
            sleep 1
            load r0, 63             ; the gate: init is past its fork1
            beq r0, 0, controller
            getppid
            mov r4, rv
            prstopfork r4, 1
        stopped:
            sleep 1
            load r0, 61             ; the gate: the parent is stopped on exit from vfork
            beq r0, 0, stopped
            prrun r4
            exit rv                 ; lwps set running: 1
        """, timeout=60)
        assert r.report is None, str(r.report)
        assert r.status == 3 + 1
        assert seen[:1] == [0]  # stopped before vfwait began
        assert system.K.g.vfork_waits == 1  # and waited after the prrun


def test_traced_fork1_caller_stops_as_sysexit_and_prrun_releases_it() -> None:
    """The same order for fork1: the forking lwp stops as PR_SYSEXIT (not
    PR_REQUESTED, the other lwps' stop in sympathy), and prrun sets it
    running."""
    def stopped(K: Any) -> bool:
        return _stopped_sysexit(K, 4, 1)

    with boot_checked() as system, opening(system.K, {63: stopped}):
        r = system.run("""
            fork1
            beq rv, 0, target
            mov r6, rv
        stops:
            sleep 1
            load r0, 63             ; the gate: the target stopped on exit from fork1
            beq r0, 0, stops
            prrun r6
            mov r1, rv
            wait r6
            add r1, st
            exit r1
        target:
            getpid
            prstopfork rv, 1
            fork1
            beq rv, 0, grandchild
            wait
            exit st
        grandchild:
            exit 4
        """, timeout=60)
        assert r.report is None, str(r.report)
        assert r.status == 1 + 4


# -- 4. the child's TP_PRSTOP is set under the child's p_lock -----------------------------


def test_child_tp_prstop_is_set_under_the_childs_p_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Records(3)
    real = kfork.aston

    def aston(t: Any) -> None:
        f = caller()
        loc = f.f_locals
        if f.f_code.co_name == "cfork" and loc.get("cp") is not None:
            K, cp, p = loc["K"], loc["cp"], loc["p"]
            owner = K.lwps[t.slot].t_procp
            if owner == cp.id:
                rec.add(0, int(MUTEX_HELD(cp.p_lock)), int(MUTEX_HELD(p.p_lock)))
            elif owner == p.id:
                rec.add(1, int(MUTEX_HELD(cp.p_lock)), int(MUTEX_HELD(p.p_lock)))
        real(t)

    monkeypatch.setattr(kfork, "aston", aston)
    gates = {63: lambda K: prstopped(4, 1)(K) and prstopped(5, 1)(K)}
    with boot_checked() as system, opening(system.K, gates):
        r = system.run("""
            fork1
            beq rv, 0, target
            mov r6, rv
        both:
            sleep 1
            load r0, 63             ; the gate: the target and its child are stopped
            beq r0, 0, both
            prrun 5
            prrun r6
            wait r6
            exit st
        target:
            getpid
            mov r5, rv
            prfork r5, 1            ; the child inherits the stop on exit from fork
            prstopfork r5, 1
            fork1
            beq rv, 0, grandchild
            wait
            exit st
        grandchild:
            exit 6
        """, timeout=60)
        assert r.report is None, str(r.report)
        assert r.status == 6
    rows = rec.rows()
    assert (0, 1, 0) in rows  # the child's lwp: under the child's p_lock alone
    assert (1, 0, 1) in rows  # the parent's: under the parent's
    assert all(row in ((0, 1, 0), (1, 0, 1)) for row in rows), rows


# -- 5. sprunlock wakes one waiter ------------------------------------------------------


def test_sprunlock_signals_one_waiter(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Records(1)
    real_signal = kprocfs.cv_signal

    def cv_signal(cv: Any) -> None:
        if caller().f_code.co_name == "sprunlock":
            rec.add(1)
        real_signal(cv)

    def cv_broadcast(cv: Any) -> None:  # pragma: no cover - must not be called
        rec.add(2)
        raise AssertionError("sprunlock broadcast pr_pid_cv")

    monkeypatch.setattr(kprocfs, "cv_signal", cv_signal)
    monkeypatch.setattr(kprocfs, "cv_broadcast", cv_broadcast, raising=False)
    with boot_checked() as system:
        r = system.run("""
            getpid
            prlock rv, 1
            exit 0
        """, timeout=60)
        assert r.report is None, str(r.report)
    assert rec.rows() == [(1,)]


def test_every_prlock_waiter_gets_through_one_wakeup_at_a_time() -> None:
    """With one wake-up per release, every waiter must take P_PR_LOCK or pass
    the wake-up on: three controllers take turns on one victim, which exits
    while they queue for it (a sprlock that then gives up, and freeproc,
    pass it on).  Nobody is left asleep with P_PR_LOCK free."""
    with boot_checked() as system:
        r = system.run("""
            fork1
            beq rv, 0, victim
            mov r6, rv
            fork1
            beq rv, 0, controller
            fork1
            beq rv, 0, controller
            fork1
            beq rv, 0, controller
            wait
            wait
            wait
            wait
            exit 0
        controller:
            mov r2, 0
        again:
            prlock r6, 3
            add r2, 1
            blt r2, 12, again
            exit 0
        victim:
            sleep 40
            exit 0
        """, timeout=90)
        assert r.report is None, str(r.report)
        assert r.status == 0


# -- 6. newproc: lwp_create_done under pidlock and the child's p_lock ---------------------


def test_newproc_sets_its_lwp_running_under_pidlock_and_p_lock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Records(3)
    real = kfork.lwp_create_done

    def lwp_create_done(K: Any, t: Any, p: Any) -> None:
        if caller().f_code.co_name == "newproc":
            rec.add(p.s.p_pid, int(MUTEX_HELD(K.pidlock)), int(MUTEX_HELD(p.p_lock)))
        real(K, t, p)

    monkeypatch.setattr(kfork, "lwp_create_done", lwp_create_done)
    with boot_checked() as system:
        r = system.run("exit 0", timeout=60)
        assert r.report is None, str(r.report)
    rows = rec.rows()
    assert {row[0] for row in rows} >= {1, 2, 3}  # init, pageout, fsflush
    assert all(row[1:] == (1, 1) for row in rows), rows


# -- 7. forklwp_fail takes pidlock once per clone -----------------------------------------


def test_forklwp_fail_takes_pidlock_once_per_clone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forkall of three lwps whose third clone fails: the two clones made
    are freed one by one, each under its own hold of pidlock, which is not
    held on the way in."""
    clones = Records(2)
    enters = Records(1)
    real_fail, real_enter = kfork.forklwp_fail, kfork.mutex_enter

    def forklwp_fail(K: Any, cp: Any) -> None:
        clones.add(len(cp.threads()), int(MUTEX_HELD(K.pidlock)))
        real_fail(K, cp)

    def mutex_enter_(m: Any) -> None:
        f = caller()
        if f.f_code.co_name == "forklwp_fail" and m is f.f_locals["K"].pidlock:
            enters.add(1)
        real_enter(m)

    monkeypatch.setattr(kfork, "forklwp_fail", forklwp_fail)
    monkeypatch.setattr(kfork, "mutex_enter", mutex_enter_)
    with boot_checked(faults={"forklwp": {"nth": 3}}) as system:
        r = system.run("""
            lwp_create sleeper
            lwp_create sleeper
            forkall
            beq rv, 0, child
            mov r1, err             ; EAGAIN (11)
            exit r1
        child:
            exit 0
        sleeper:
            sleep 5000
            lwp_exit
        """, timeout=60)
        assert r.report is None, str(r.report)
        assert r.status == 11
    assert clones.rows() == [(2, 0)]
    assert len(enters.rows()) == 2


# -- 8. upcount_inc drops pidlock to allocate a new entry ----------------------------------


def test_upcount_inc_lets_go_of_pidlock_for_a_new_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first process of a new uid needs a new upcount entry: upcount_inc
    drops pidlock for the allocation (another thread takes it meanwhile: the
    wrapper does, and makes the entry first) and, having taken pidlock back,
    finds that entry instead of making a second one."""
    rec = Records(2)
    real = kpid._kmem_alloc_sleep

    def alloc_sleep(K: Any) -> None:
        held = MUTEX_HELD(K.pidlock)
        f = caller()
        uid, zone = f.f_locals["uid"], f.f_locals["zone"]
        rec.add(uid, int(held))
        if uid == 7 and not held:  # another thread gets there first
            mutex_enter(K.pidlock)
            i = kpid._upcount_find(K, uid, zone, True)
            K.upcounts[i].up_count += 1
            mutex_exit(K.pidlock)
        real(K)

    monkeypatch.setattr(kpid, "_kmem_alloc_sleep", alloc_sleep)
    with boot_checked() as system:
        K = system.K
        r = system.run("""
            setuid 7
            fork1
            beq rv, 0, child
            wait
            exit st
        child:
            exit 8
        """, timeout=60)
        assert r.report is None, str(r.report)
        assert r.status == 8
        entries = [e for e in K.upcounts if e.up_used and e.up_uid == 7]
        assert len(entries) == 1  # found the other thread's entry, made no second one
        # Undo the other thread's count: the checker on the way out then
        # finds the entry counting exactly the processes of uid 7 (A5).
        entries[0].up_count -= 1
        if entries[0].up_count == 0:
            entries[0].up_used = 0
    assert (7, 0) in rec.rows()


def test_a_kernel_process_does_not_inherit_proc_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    """fork.c:754: newproc empties a kernel process's /proc tracing.  A creator
    traced with inherit-on-fork, stop-on-fork and a traced signal starts a
    zsched (zone_create): getproc copies the tracing, newproc takes the
    traced signals and the stop-on-fork away (threads backend: the wrapper
    reads the new proc in this process)."""
    from realfork.kernel.structs import P_PR_FORK, P_PR_STOPFORK

    seen: list[tuple[int, int]] = []
    real = kfork.newproc

    def recording(K: Any, t: Any, syscid: bool, *a: Any, **kw: Any) -> Any:
        cp = real(K, t, syscid, *a, **kw)
        if cp is not None and kw.get("name") == "zsched":
            seen.append((cp.s.p_sigmask, cp.s.p_proc_flag))
        return cp

    monkeypatch.setattr(kfork, "newproc", recording)
    with boot_checked(backend="threads") as system:
        def traced(K: Any) -> bool:
            s = proc_of(K, 1)
            if s is None or not s.p_proc_flag & P_PR_STOPFORK:
                return False
            s.p_sigmask = 1 << 16  # a traced signal, as /proc's PCSTRACE would set
            return True

        gates = {63: lambda K: lwp_in_syscall(K, 1, 1, "sleep"), 62: traced}  # in that order
        with opening(system.K, gates):
            r = system.run("""
                fork1
                beq rv, 0, tracer
                mov r6, rv
            untraced:
                sleep 1
                load r0, 62             ; the tracer has traced us
                beq r0, 0, untraced
                prstopfork 1, 0         ; our own fork1 would stop: only zsched's flags matter
                zone_create
                mov r1, rv
                wait r1
                wait r6
                exit 0
            tracer:
                sleep 1
                load r0, 63             ; init is past its fork1 (else it stops there)
                beq r0, 0, tracer
                prfork 1, 1
                prstopfork 1, 1
                exit 0
            """, timeout=60)
        assert r.report is None, str(r.report)
        assert r.status == 0
    assert len(seen) == 1
    sigmask, flags = seen[0]
    assert sigmask == 0 and not flags & P_PR_STOPFORK
    assert flags & P_PR_FORK  # the seed leaves p_proc_flag's inherit-on-fork alone
