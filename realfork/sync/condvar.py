"""Condition variables: ``cv_wait``, ``cv_wait_sig``, ``cv_timedwait``, ``cv_signal``,
``cv_broadcast``.

A waiter queues itself on the condition variable (under the cv's chain
lock) *before* it drops the mutex, so a ``cv_signal`` issued by a thread
that then takes the mutex cannot be lost.  ``cv_signal`` and
``cv_broadcast`` are meant to be called with the associated mutex held, as
illumos code does; then a waiter count of zero is a stable answer.

``cv_wait_sig`` sleeps interruptibly (``T_WAKEABLE``): it returns 0 at once,
or as soon as it is woken, when the thread has a pending signal or hold
request (the substrate's ``sig_pending`` hook, which the kernel layer
installs), and a positive value after a normal wake-up.
"""

from __future__ import annotations

import time

from . import sleepq
from .kthread import _cpu
from .mutex import mutex_enter, mutex_exit
from .objects import KCondvar, KMutex
from .structs import T_WAKEABLE, TS_ONPROC, WAKE_INTERRUPTED, WAKE_SIGNALLED, WAKE_TIMEOUT


def _cv_block(cv: KCondvar, m: KMutex, interruptible: bool, until_ns: int | None,
              patient: bool = False, idle: bool = False) -> int:
    """Sleep on ``cv`` releasing ``m``; reacquire ``m``; the wake reason.

    A *patient* wait (a parent in ``waitid``, a held lwp, ``sleep``) may last
    longer than the deadline as long as the kernel makes progress
    (``sync_globals.progress`` moves): its deadline is re-armed instead of
    panicking.  Only a kernel where nothing moves for a whole deadline is hung.
    """
    t = _cpu.t
    dom = cv.dom
    lk = cv.lk
    # A timed wait is bounded by its own timeout; an untimed one by the deadline.
    panic_at = time.monotonic_ns() + dom.timeout_ns if until_ns is None else -1
    deadline = panic_at if until_ns is None else until_ns
    t.record_chain(3)
    wchan = cv.idx + 1
    dom.chain_enter(lk)
    sleepq.enqueue(dom, cv.s, t, wchan, T_WAKEABLE if interruptible else 0, deadline)
    if interruptible and dom.sig_pending(t):
        # A signal or hold request is already pending: give up before sleeping.
        sleepq.unlink(dom, cv.s, t.id)
        t.s.t_wchan = 0
        t.s.t_state = TS_ONPROC
        lk.release()
        return WAKE_INTERRUPTED
    lk.release()
    mutex_exit(m)
    seen = dom.g.progress
    why = sleepq.sleep(dom, t, lk, wchan)
    while why == WAKE_TIMEOUT and deadline == panic_at:
        if not idle and (not patient or dom.g.progress == seen):
            dom.deadline_expired(t, cv)
        # The kernel moved meanwhile: keep waiting, with a fresh deadline.
        seen = dom.g.progress
        panic_at = deadline = time.monotonic_ns() + dom.timeout_ns
        t.s.t_deadline_ns = deadline
        why = sleepq.sleep(dom, t, lk, wchan)
    if why == WAKE_TIMEOUT:
        why = sleepq.cancel(dom, t, lk, wchan)  # the caller's own timeout
    mutex_enter(m)
    return why


def cv_wait(cv: KCondvar, m: KMutex, *, patient: bool = False, idle: bool = False) -> None:
    _cv_block(cv, m, False, None, patient, idle)


def cv_wait_sig(cv: KCondvar, m: KMutex, *, patient: bool = False) -> int:
    """0 if interrupted by a signal or hold request, else > 0."""
    return 0 if _cv_block(cv, m, True, None, patient) == WAKE_INTERRUPTED else 1


def cv_timedwait(cv: KCondvar, m: KMutex, until_ns: int) -> int:
    """Wait until the absolute CLOCK_MONOTONIC time ``until_ns``: -1 on timeout."""
    return -1 if _cv_block(cv, m, False, until_ns) == WAKE_TIMEOUT else 1


def cv_reltimedwait(cv: KCondvar, m: KMutex, delta_ns: int) -> int:
    return cv_timedwait(cv, m, time.monotonic_ns() + delta_ns)


def cv_timedwait_sig(cv: KCondvar, m: KMutex, until_ns: int, *, patient: bool = False) -> int:
    """0 if interrupted, -1 on timeout, > 0 when signalled."""
    why = _cv_block(cv, m, True, until_ns, patient)
    if why == WAKE_INTERRUPTED:
        return 0
    return -1 if why == WAKE_TIMEOUT else 1


def cv_signal(cv: KCondvar) -> None:
    s = cv.s
    if not s.whead:  # stable: waiters queue while holding the caller's mutex
        return
    dom = cv.dom
    lk = cv.lk
    dom.chain_enter(lk)
    tid = sleepq.dequeue(dom, s, WAKE_SIGNALLED)
    lk.release()
    if tid:
        sleepq.wakeup(dom, tid)


def cv_broadcast(cv: KCondvar) -> None:
    s = cv.s
    if not s.whead:
        return
    dom = cv.dom
    lk = cv.lk
    woken = []
    dom.chain_enter(lk)
    while s.whead:
        woken.append(sleepq.dequeue(dom, s, WAKE_SIGNALLED))
    lk.release()
    for tid in woken:
        sleepq.wakeup(dom, tid)


def cv_waiters(cv: KCondvar) -> int:
    return cv.s.nwaiters
