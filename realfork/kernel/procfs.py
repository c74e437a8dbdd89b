"""/proc control as fork meets it: the P_PR_LOCK protocol (``sprlock``,
``sprunlock``, ``prbarrier``), the agent lwp, inherit-on-fork tracing and
stop-on-exit-from-fork.

P_PR_LOCK is a flag in ``p_proc_flag`` used as a sleeping lock: its waiters
sleep on the slot's ``pr_pid_cv`` with ``p_lock``.  Kernel code that changes
``p_tlist``, ``p_as`` or lwp state first waits it out with ``prbarrier``.
``p_prowner`` records the kernel thread holding it, and every waiter names
that thread as its waker, so a wait-for cycle through P_PR_LOCK is drawn
like one through a mutex; releasing it wakes every waiter (each re-reads the
new owner).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..sync.condvar import cv_broadcast, cv_signal, cv_wait
from ..sync.kthread import _cpu
from ..sync.mutex import MUTEX_HELD, mutex_enter, mutex_exit
from .proc import Proc
from .structs import (
    LWP_STOPPED,
    P_PR_LOCK,
    PR_REQUESTED,
    SEXITING,
    SEXITLWPS,
    SIDL,
    SKILLED,
    SZOMB,
    TP_PRSTOP,
    TS_PSTART,
)

if TYPE_CHECKING:
    from .kernel import Kernel


def prbarrier(K: Kernel, p: Proc) -> None:
    """Wait until /proc lets go of ``p`` (requires p_lock)."""
    assert MUTEX_HELD(p.p_lock)
    if p.s.p_proc_flag & P_PR_LOCK:
        while p.s.p_proc_flag & P_PR_LOCK:
            cv_wait(p.pr_pid_cv, p.p_lock, patient=True, waker=p.s.p_prowner)
        cv_signal(p.pr_pid_cv)  # pass the wake-up on to the next waiter


def sprlock_proc(K: Kernel, p: Proc) -> None:
    """Take P_PR_LOCK on ``p`` (requires p_lock, still held on return)."""
    assert MUTEX_HELD(p.p_lock)
    while p.s.p_proc_flag & P_PR_LOCK:
        cv_wait(p.pr_pid_cv, p.p_lock, patient=True, waker=p.s.p_prowner)
    _take_prlock(p)


def sprunlock(K: Kernel, p: Proc) -> None:
    """Release P_PR_LOCK and drop p_lock."""
    assert MUTEX_HELD(p.p_lock)
    cv_broadcast(p.pr_pid_cv)  # every waiter re-reads the owner it names
    p.s.p_proc_flag &= ~P_PR_LOCK
    p.s.p_prowner = 0
    mutex_exit(p.p_lock)


def pr_setrun(K: Kernel, p: Proc) -> int:
    """Set running the lwps of ``p`` that /proc stopped, and withdraw stop
    requests not yet honoured (p_lock held); how many were set running."""
    from .sig import setrun_locked, thread_lock, thread_unlock, ts_start

    n = 0
    for t in p.threads():
        lw = K.lwps[t.slot]
        lw.t_proc_flag &= ~TP_PRSTOP
        thread_lock(K, t)
        if lw.t_kstate == LWP_STOPPED and lw.t_whystop == PR_REQUESTED:
            ts_start(K, t, TS_PSTART)
            setrun_locked(K, t)
            n += 1
        thread_unlock(K, t)
    return n


def prunlock(K: Kernel, p: Proc) -> None:
    """The /proc controller lets go of ``p`` (P_PR_LOCK and p_lock held).

    A SIGKILL that arrived while /proc held the process could not set its
    stopped lwps running (the process must not change shape under P_PR_LOCK);
    so it is done here, before the lock goes, and the kill stays sure."""
    if p.s.p_flag & SKILLED and not p.s.p_flag & SEXITING:
        pr_setrun(K, p)
    sprunlock(K, p)


def sprlock(K: Kernel, pid: int) -> Proc | None:
    """Find ``pid`` and take P_PR_LOCK on it, p_lock held on return; None if it
    is gone, a zombie, being created or exiting."""
    from .pid import prfind

    mutex_enter(K.pidlock)
    p = prfind(K, pid)
    if p is None:
        mutex_exit(K.pidlock)
        return None
    mutex_enter(p.p_lock)  # the lock is persistent: safe after dropping pidlock
    mutex_exit(K.pidlock)
    while True:
        s = p.s
        if s.p_pid != pid or s.p_stat in (SZOMB, SIDL, 0) or s.p_flag & (SEXITING | SEXITLWPS):
            mutex_exit(p.p_lock)
            return None
        if not s.p_proc_flag & P_PR_LOCK:
            break
        cv_wait(p.pr_pid_cv, p.p_lock, patient=True, waker=s.p_prowner)
    _take_prlock(p)
    return p


def _take_prlock(p: Proc) -> None:
    """Set P_PR_LOCK for the calling kernel thread (p_lock held)."""
    p.s.p_proc_flag |= P_PR_LOCK
    p.s.p_prowner = _cpu.t.id
