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

Lost wake-ups.  A waiter may name its *waker*, the kernel thread expected
to signal it (a vfork parent names its child's lwp), and a *stuck* test that
says, in words, why its wake-up condition already holds.  A patient wait
that reaches its deadline is then a hang, even while the rest of the kernel
makes progress, when the waker has exited (its signal would have dequeued
us first), or when ``stuck`` answers at two deadlines in a row (a signal
racing with the first check has had a whole deadline to arrive) or at one
deadline during which nothing in the kernel moved.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import sleepq
from .kthread import _cpu
from .mutex import mutex_enter, mutex_exit
from .objects import KCondvar, KMutex
from .structs import T_WAKEABLE, TS_ONPROC, WAKE_INTERRUPTED, WAKE_SIGNALLED, WAKE_TIMEOUT

Stuck = Callable[[], str | None]


def waker_gone(dom: object, tid: int, gen: int) -> bool:
    """Has kernel thread ``tid`` (slot generation ``gen``) exited?"""
    slot = dom.kthreads.slots[tid - 1]  # type: ignore[attr-defined]
    return not slot.slot_inuse or slot.slot_gen != gen


def _cv_block(cv: KCondvar, m: KMutex, interruptible: bool, until_ns: int | None,
              patient: bool = False, idle: bool = False, waker: int = 0,
              stuck: Stuck | None = None) -> int:
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
    ts = t.s
    ts.t_waker = waker
    ts.t_waker_gen = dom.kthreads.slots[waker - 1].slot_gen if waker else 0
    waker_name = dom.thread_name(waker) if waker else ""
    sleepq.enqueue(dom, cv.s, t, wchan, T_WAKEABLE if interruptible else 0, deadline)
    if interruptible and dom.sig_pending(t):
        # A signal or hold request is already pending: give up before sleeping.
        sleepq.unlink(dom, cv.s, t.id)
        ts.t_wchan = 0
        ts.t_state = TS_ONPROC
        ts.t_waker = 0
        lk.release()
        return WAKE_INTERRUPTED
    lk.release()
    mutex_exit(m)
    seen = dom.g.progress
    suspected = ""
    why = sleepq.sleep(dom, t, lk, wchan)
    while why == WAKE_TIMEOUT and deadline == panic_at:
        if waker and waker_gone(dom, waker, ts.t_waker_gen):
            dom.lost_wakeup(t, cv, f"its waker {waker_name} has exited")
        reason = stuck() if stuck is not None else None
        stalled = not idle and (not patient or dom.g.progress == seen)
        if reason and (stalled or reason == suspected):
            dom.lost_wakeup(t, cv, reason)
        suspected = reason or ""
        if stalled:
            dom.deadline_expired(t, cv)
        # The kernel moved meanwhile: keep waiting, with a fresh deadline.
        seen = dom.g.progress
        panic_at = deadline = time.monotonic_ns() + dom.timeout_ns
        t.s.t_deadline_ns = deadline
        why = sleepq.sleep(dom, t, lk, wchan)
    if why == WAKE_TIMEOUT:
        why = sleepq.cancel(dom, t, lk, wchan)  # the caller's own timeout
    ts.t_waker = 0
    mutex_enter(m)
    return why


def cv_wait(cv: KCondvar, m: KMutex, *, patient: bool = False, idle: bool = False,
            waker: int = 0, stuck: Stuck | None = None) -> None:
    _cv_block(cv, m, False, None, patient, idle, waker, stuck)


def cv_wait_sig(cv: KCondvar, m: KMutex, *, patient: bool = False, waker: int = 0,
                stuck: Stuck | None = None) -> int:
    """0 if interrupted by a signal or hold request, else > 0."""
    why = _cv_block(cv, m, True, None, patient, False, waker, stuck)
    return 0 if why == WAKE_INTERRUPTED else 1


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
