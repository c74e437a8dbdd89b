"""thread_lock is a lock of its own: a mutex per kernel thread slot, of lockdep
class ``thread_lock``, taken inside p_lock around every change of
``t_schedflag`` and ``setrun_locked``; ``ts_start`` and ``setrun_locked``
assert it as illumos ASSERTs THREAD_LOCK_HELD."""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable
from typing import Any

import pytest
from helpers import boot_checked, opening, proc_of, prstopped, run_clean, suspended

import realfork.kernel.fork as kfork
import realfork.kernel.lwp as klwp
import realfork.kernel.sig as ksig
from realfork.errors import KernelPanic
from realfork.kernel.kernel import nsync_needed
from realfork.kernel.params import MAXLWPS_MAX, KernelParams
from realfork.machine.threads import ThreadFactory
from realfork.sync import lockdep
from realfork.sync.domain import Substrate
from realfork.sync.mutex import MUTEX_HELD, mutex_enter, mutex_exit

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("backend")]

# The kernel functions that give start bits (ts_start's callers).
SITES = ("stop", "lwp_create_done", "pokelwps", "continuelwps", "exitlwps", "lwp_continue",
         "pr_setrun", "cfork", "sigtoproc", "_setrun_stopped_for_sigkill")

FORKS_WITH_LWPS = """
    lwp_create worker
    lwp_create worker
    fork1
    beq rv, 0, child
    wait
    forkall
    beq rv, 0, child
    wait
    vfork
    beq rv, 0, child
    wait
    store 0, 1
    lwp_wait 0
    lwp_wait 0
    exit 0
child:
    exit 0
worker:
    load r1, 0
    bne r1, 0, out
    sleep 2
    jmp worker
out:
    lwp_exit
"""

SUSPEND_CONTINUE = """
    lwp_create suspender
    mov r7, 20
again:
    sleep 1
    sub r7, 1
    bne r7, 0, again
    lwp_wait 0
    exit 0
suspender:
    mov r6, 10
loop:
    lwp_suspend 1
    lwp_continue 1
    sub r6, 1
    bne r6, 0, loop
    lwp_exit
"""

# The child (pid 4: init is 1, pageout 2, fsflush 3) suspends its second
# lwp and sleeps; once the gate says that lwp is suspended, the parent kills
# the child: the kill gives the stopped lwp its SIGKILL start bits, and the
# child's exit (exitlwps) sets it running to die.
KILL_SUSPENDED = """
    fork1
    beq rv, 0, child
    mov r6, rv
gate:
    sleep 1
    load r0, 63
    beq r0, 0, gate
    kill r6, SIGKILL
    wait
    exit 0
child:
    lwp_create idler
    lwp_suspend 2
    sleep 60000
    exit 1
idler:
    sleep 60000
    lwp_exit
"""

# /proc stop on exit from fork, then prrun (pr_setrun), as in test_procfs.
PRSTOP_PRRUN = """
    fork1
    beq rv, 0, controller
    mov r6, rv
flags:
    sleep 1
    load r0, 63
    beq r0, 0, flags
    fork1
    beq rv, 0, child
    mov r5, rv
    prrun r5
    wait r5
    wait r6
    exit 0
child:
    exit 0
controller:
    getppid
    mov r4, rv
    prfork r4, 1
    prstopfork r4, 1
stopped:
    sleep 1
    load r0, 62
    beq r0, 0, stopped
    prrun r4
    exit 0
"""


def _prflags_set(K: Any) -> bool:
    from realfork.kernel.structs import P_PR_FORK, P_PR_STOPFORK

    s = proc_of(K, 1)
    want = P_PR_FORK | P_PR_STOPFORK
    return s is not None and s.p_proc_flag & want == want


def _both_stopped(K: Any) -> bool:
    return prstopped(1, 1)(K) and prstopped(5, 1)(K)


# -- the lock --------------------------------------------------------------------------------


def test_each_kernel_thread_slot_has_a_thread_lock_of_its_own_class() -> None:
    with boot_checked(maxlwps=64) as system:
        K = system.K
        names = {K.dom.sync_name(K.kg_sync.tlock_base + i) for i in range(64)}
        assert names == {f"thread_lock[kthread {i + 1}]" for i in range(64)}
        tid = proc_of(K, 2).p_tlist  # pageout's lwp
        lockp = K.thread_lockp(K.thread(tid))
        assert lockp.idx == K.kg_sync.tlock_base + tid - 1
        assert lockp is not K.proc(K.lwps[tid - 1].t_procp).p_lock


def test_the_sync_table_holds_a_thread_lock_per_lwp_slot_at_the_largest_maxlwps() -> None:
    """nsync_needed counts a t_cv and a thread_lock per kernel thread slot, so
    a boot at MAXLWPS_MAX lays every one out (format_kernel would raise
    ResourceError otherwise)."""
    p = KernelParams(maxlwps=MAXLWPS_MAX)
    small = KernelParams(maxlwps=8)
    assert nsync_needed(p) - nsync_needed(small) == 2 * (MAXLWPS_MAX - 8)
    with boot_checked(maxlwps=MAXLWPS_MAX, nproc=16) as system:
        K = system.K
        last = K.kg_sync.tlock_base + MAXLWPS_MAX - 1
        assert K.dom.sync_name(last) == f"thread_lock[kthread {MAXLWPS_MAX}]"
        assert K.dom.g.nsync <= len(K.dom.syncs)


def test_thread_lock_comes_after_pidlock_and_p_lock_in_the_declared_order() -> None:
    with boot_checked() as system:
        edges = set(lockdep.edges(system.dom))
        assert ("p_lock", "thread_lock", True) in edges
        assert ("pidlock", "thread_lock", True) in edges
        assert "thread_lock" in lockdep.STRICT_CLASSES


def test_taking_p_lock_under_a_thread_lock_is_reported() -> None:
    dom = Substrate.boot(maxlwps=16, nsync=64, deadlock_timeout=10.0, lockdep="warn")
    try:
        p_lock = dom.new_mutex("p_lock", 1, "pid")
        tl = dom.new_mutex("thread_lock", 1, "kthread")

        def inverted() -> None:
            mutex_enter(tl)
            mutex_enter(p_lock)
            mutex_exit(p_lock)
            mutex_exit(tl)

        t = ThreadFactory(dom).spawn(inverted, name="inverted")
        assert t.os_thread is not None
        t.os_thread.join(60)
        (rep,) = lockdep.reports(dom)
        assert (rep.held_name, rep.new_name) == ("thread_lock", "p_lock")
        assert [(d.src, d.dst, d.declared) for d in rep.path] == [
            ("p_lock", "thread_lock", True)]
    finally:
        dom.close()


# -- the assertion -----------------------------------------------------------------------------


def _on_kthread(system: Any, fn: Callable[[], None]) -> None:
    t = ThreadFactory(system.dom).spawn(fn, name="tlock-test")
    assert t.os_thread is not None
    t.os_thread.join(60)
    assert not t.os_thread.is_alive()


def test_ts_start_with_the_thread_lock_held_is_quiet() -> None:
    with boot_checked() as system:
        K = system.K
        tid = proc_of(K, 2).p_tlist
        target = K.thread(tid)
        p = K.proc(K.lwps[tid - 1].t_procp)
        out: dict[str, bool] = {}

        def locked() -> None:
            mutex_enter(p.p_lock)
            ksig.thread_lock(K, target)
            out["held"] = ksig.THREAD_LOCK_HELD(K, target) and MUTEX_HELD(p.p_lock)
            ksig.ts_start(K, target, 0)  # no bit: pageout's state is unchanged
            ksig.thread_unlock(K, target)
            out["after"] = ksig.THREAD_LOCK_HELD(K, target)
            mutex_exit(p.p_lock)

        _on_kthread(system, locked)
        assert out == {"held": True, "after": False}
        assert not system.dom.panicked


def test_ts_start_without_the_thread_lock_panics() -> None:
    """Constructed directly: a t_schedflag change under p_lock alone."""
    with boot_checked() as system:
        K = system.K
        tid = proc_of(K, 2).p_tlist
        target = K.thread(tid)
        p = K.proc(K.lwps[tid - 1].t_procp)
        out: dict[str, str] = {}

        def unlocked_change() -> None:
            mutex_enter(p.p_lock)
            try:
                ksig.ts_start(K, target, 0)
            except KernelPanic as e:
                out["panic"] = str(e)
            finally:
                if MUTEX_HELD(p.p_lock):
                    mutex_exit(p.p_lock)

        _on_kthread(system, unlocked_change)
        assert system.dom.panicked
        assert "assertion failed: t_schedflag of pid 2 lwp 1 changed without thread_lock " \
               "held" in out["panic"]


def test_a_site_that_skips_the_thread_lock_panics_naming_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """lwp_continue with its thread_lock taken away: its t_schedflag change
    trips the assertion, and the finding names lwp_continue."""
    def only_elsewhere(real: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        def maybe(K: Any, t: Any) -> None:
            if sys._getframe(1).f_code.co_name != "lwp_continue":
                real(K, t)
        return maybe

    monkeypatch.setattr(klwp, "thread_lock", only_elsewhere(ksig.thread_lock))
    monkeypatch.setattr(klwp, "thread_unlock", only_elsewhere(ksig.thread_unlock))
    with boot_checked() as system:
        r = system.run(SUSPEND_CONTINUE, timeout=60)
        assert r.report is not None and r.report.kind == "panic", r.report
        assert "t_schedflag of pid" in r.report.message
        assert "changed without thread_lock held" in r.report.message
        culprit = r.report.thread(r.report.culprit)
        assert culprit.chain.split(";")[0] == "lwp_continue"


def test_setrun_locked_without_the_thread_lock_panics(monkeypatch: pytest.MonkeyPatch) -> None:
    """lwp_continue gives its start bit under the lock but calls
    setrun_locked with it dropped: setrun_locked's own assertion fires."""
    real = ksig.setrun_locked

    def setrun_unlocked(K: Any, t: Any) -> None:
        if sys._getframe(1).f_code.co_name != "lwp_continue":
            real(K, t)
            return
        ksig.thread_unlock(K, t)
        try:
            real(K, t)
        finally:
            ksig.thread_lock(K, t)  # so lwp_continue's thread_unlock balances

    monkeypatch.setattr(klwp, "setrun_locked", setrun_unlocked)
    with boot_checked() as system:
        r = system.run(SUSPEND_CONTINUE, timeout=60)
        assert r.report is not None and r.report.kind == "panic", r.report
        assert "assertion failed: setrun_locked of pid" in r.report.message
        assert "without thread_lock held" in r.report.message


# -- the sites hold it ----------------------------------------------------------------------------


def test_every_start_bit_is_given_under_p_lock_and_thread_lock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ts_start call of fork1, forkall and vfork with lwps,
    lwp_suspend/lwp_continue, a /proc stop and prrun, and a SIGKILL of a
    process with a suspended lwp is made holding both locks; the programs
    run clean with lockdep in panic mode.  Counted across OS processes (the
    processes backend's hosts inherit the counters)."""
    ctx = multiprocessing.get_context("fork")
    counts = ctx.Array("i", 2 * (len(SITES) + 1))
    real = ksig.ts_start

    def counting(K: Any, t: Any, bits: int) -> None:
        caller = sys._getframe(1).f_code.co_name
        i = SITES.index(caller) if caller in SITES else len(SITES)
        p = K.proc(K.lwps[t.slot].t_procp)
        ok = MUTEX_HELD(p.p_lock) and ksig.THREAD_LOCK_HELD(K, t)
        with counts.get_lock():
            counts[2 * i + (0 if ok else 1)] += 1
        real(K, t, bits)

    for mod in (ksig, klwp, kfork):
        monkeypatch.setattr(mod, "ts_start", counting)
    for text in (FORKS_WITH_LWPS, SUSPEND_CONTINUE):
        r = run_clean(text, lockdep="panic")
        assert r.status == 0
    with boot_checked(lockdep="panic") as system, opening(system.K, {63: suspended(4, 1)}):
        r = system.run(KILL_SUSPENDED, timeout=120)
        assert r.report is None, str(r.report)
    with boot_checked(lockdep="panic") as system, opening(
            system.K, {63: _prflags_set, 62: _both_stopped}):
        r = system.run(PRSTOP_PRRUN, timeout=120)
        assert r.report is None, str(r.report)
        assert system.dom.lockdep_reports() == []
    seen = {SITES[i] if i < len(SITES) else "other": (counts[2 * i], counts[2 * i + 1])
            for i in range(len(SITES) + 1) if counts[2 * i] or counts[2 * i + 1]}
    assert all(bad == 0 for _, bad in seen.values()), seen
    assert "other" not in seen, seen
    for site in ("stop", "lwp_create_done", "continuelwps", "exitlwps", "lwp_continue",
                 "pr_setrun", "_setrun_stopped_for_sigkill"):
        assert seen.get(site, (0, 0))[0] > 0, (site, seen)
