"""/proc control as fork meets it: the P_PR_LOCK protocol (``sprlock``,
``sprunlock``, ``prbarrier``), the agent lwp, inherit-on-fork tracing and
stop-on-exit-from-fork.

P_PR_LOCK is a flag in ``p_proc_flag`` used as a sleeping lock: its waiters
sleep on the slot's ``pr_pid_cv`` with ``p_lock``.  Kernel code that changes
``p_tlist``, ``p_as`` or lwp state first waits it out with ``prbarrier``.
``p_prowner`` records the kernel thread holding it, and every waiter names
that thread as its waker, so a wait-for cycle through P_PR_LOCK is drawn
like one through a mutex.  Releasing it wakes one waiter (``cv_signal``, as
illumos's ``sprunlock`` does); so every waiter that is woken either takes
P_PR_LOCK itself (its own release wakes the next) or passes the wake-up on
with another ``cv_signal`` (``prbarrier``, a ``sprlock`` that gives up).

``prrelvm`` is relvm's /proc hook: a process giving up its address space
loses its watchpoints with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..sync.condvar import cv_signal, cv_wait
from ..sync.kthread import _cpu
from ..sync.mutex import MUTEX_HELD, mutex_enter, mutex_exit
from ..sync.rwlock import RW_WRITER, rw_enter, rw_exit
from .proc import Proc
from .structs import (
    LWP_STOPPED,
    P_PR_LOCK,
    PR_REQUESTED,
    PR_SYSEXIT,
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
    """Called with p->p_lock held and P_PR_LOCK taken (asserted); returns
    with neither.  Release P_PR_LOCK and wake one waiter.

    One, not all: the waiters all wait for the same thing, and the first to
    run takes P_PR_LOCK or passes the wake-up on (see the module's
    docstring).  The hazard of a waiter that is woken and does neither is a
    lost wake-up: the others sleep on although P_PR_LOCK is free, and a
    prbarrier among them stops that process's exit, exec or lwp exit for
    good."""
    assert MUTEX_HELD(p.p_lock)
    cv_signal(p.pr_pid_cv)
    p.s.p_proc_flag &= ~P_PR_LOCK
    p.s.p_prowner = 0
    mutex_exit(p.p_lock)


def pr_setrun(K: Kernel, p: Proc) -> int:
    """Set running the lwps of ``p`` that /proc stopped (a stop request,
    PR_REQUESTED, or a traced system call's exit, PR_SYSEXIT), and withdraw
    stop requests not yet honoured (p_lock held); how many were set running."""
    from .sig import setrun_locked, thread_lock, thread_unlock, ts_start

    n = 0
    for t in p.threads():
        lw = K.lwps[t.slot]
        lw.t_proc_flag &= ~TP_PRSTOP
        thread_lock(K, t)
        if lw.t_kstate == LWP_STOPPED and lw.t_whystop in (PR_REQUESTED, PR_SYSEXIT):
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
    waited = False
    while True:
        s = p.s
        if s.p_pid != pid or s.p_stat in (SZOMB, SIDL, 0) or s.p_flag & (SEXITING | SEXITLWPS):
            if waited:  # we may have taken sprunlock's one wake-up: pass it on
                cv_signal(p.pr_pid_cv)
            mutex_exit(p.p_lock)
            return None
        if not s.p_proc_flag & P_PR_LOCK:
            break
        cv_wait(p.pr_pid_cv, p.p_lock, patient=True, waker=s.p_prowner)
        waited = True
    _take_prlock(p)
    return p


def pr_watch_active(K: Kernel, p: Proc) -> bool:
    """Takes no locks (the caller's own process, or one /proc holds).  Does
    ``p`` have watch areas (``p_wcount``, illumos's ``p_warea``)?"""
    return p.s.p_wcount != 0


def prrelvm(K: Kernel, p: Proc) -> None:
    """Called with no locks held; returns with none held.  relvm's hook
    (prsubr.c's ``prrelvm``): the calling process is giving up its address
    space, and its watchpoints go with it.

    Under p_lock, after waiting out /proc (a controller may be changing the
    watch areas), the watch areas are dropped; then, with no mutex held, the
    watched pages of the address space, under its lock as writer.  A vfork
    child's address space is its parent's, whose watched pages cfork
    stashed in the parent: the child has none to free, and the stash goes
    back to the address space in relvm."""
    mutex_enter(p.p_lock)
    prbarrier(K, p)
    if pr_watch_active(K, p):
        p.s.p_wcount = 0  # pr_free_watchpoints (watch_disable: no counterpart)
    mutex_exit(p.p_lock)
    pr_free_watched_pages(K, p)


def pr_free_watched_pages(K: Kernel, p: Proc) -> None:
    """Called with no mutex held (it takes the address space's lock as
    writer).  Free the watched pages of ``p``'s address space."""
    ptr = p.s.p_as
    if not ptr or ptr == K.g.kas or not K.ases.slots[ptr - 1].a_wpage:
        return
    lk = K.a_lock(ptr)
    rw_enter(lk, RW_WRITER)
    K.ases.slots[ptr - 1].a_wpage = 0
    rw_exit(lk)


def _take_prlock(p: Proc) -> None:
    """Set P_PR_LOCK for the calling kernel thread (p_lock held)."""
    p.s.p_proc_flag |= P_PR_LOCK
    p.s.p_prowner = _cpu.t.id
