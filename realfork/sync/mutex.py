"""Adaptive mutexes: ``mutex_enter``, ``mutex_exit``, ``mutex_tryenter``, ``MUTEX_HELD``.

Words of a mutex (in its ``ksync_t``, under its chain lock): ``owner`` is the
kthread id of the holder (0 when free) and the FIFO of sleeping waiters.  The
holder also lists the mutex in its own ``t_held``, so an observer sees who
holds what and in which order.  A contender spins while the owner runs, then
sleeps.  ``mutex_exit`` hands the lock to the first sleeping waiter and wakes
it (illumos lets woken waiters compete again; handing off keeps waits fair,
so an expired deadline never blames a starved waiter for a lock that was free
in between).  Every sleep has the kernel's deadlock deadline, after which the
kernel panics with a wait-for report.

Before a thread that already holds a lock takes another, the lock-order
validator (``lockdep``) checks the order of their classes;
``mutex_enter_nested`` names the subclass of a second lock of one class.
"""

from __future__ import annotations

import os
import time

from . import lockdep, lockstat, noise, sleepq
from .kthread import KThread, _cpu
from .objects import KMutex
from .structs import MAXHELD, TS_ONPROC, WAKE_SIGNALLED, WAKE_TIMEOUT

MUTEX_SPINS = 20  # looks at a running owner before sleeping
_yield = os.sched_yield  # releases the GIL: a same-process owner can run
_nested = lockdep.NESTED  # subclasses of held locks taken nested (empty when off)


def mutex_enter(m: KMutex) -> None:
    t = _cpu.t
    if noise.ON:
        noise.point(m.dom, t)
    n = t.nheld
    if n and lockdep.ON:  # nothing to learn when no other lock is held
        lockdep.check(m, t, 0, n)
    lk = m.lk
    if not lk.acquire(False):
        m.dom.chain_enter(lk)
    s = m.s
    if s.owner == 0:
        s.owner = t.id
        lk.release()
        # t.held_push(m.idx + 1), inlined: this is the hottest path in realfork
        if n >= MAXHELD - 1:
            t.held_push(m.idx + 1)  # panics with the reason
        t.held[n] = m.idx + 1
        t.nheld = n + 1
        if lockstat.ON:
            _acquired(m, t, 0)
        return
    mutex_vector_enter(m, t)


def mutex_enter_nested(m: KMutex, subclass: int) -> None:
    """``mutex_enter`` of a lock whose class the thread may already hold, as
    lockdep's ``mutex_lock_nested``: the lock counts as node ``class/subclass``
    until released (1 for a parent's ``p_lock`` taken under its child's)."""
    if not 0 <= subclass < lockdep.NSUB:
        raise ValueError(f"lock subclass {subclass} out of range 0..{lockdep.NSUB - 1}")
    t = _cpu.t
    if noise.ON:
        noise.point(m.dom, t)
    if t.nheld and lockdep.ON:
        lockdep.check(m, t, subclass, t.nheld)
    if not _take_if_free(m, t):
        mutex_vector_enter(m, t)
    if subclass and lockdep.ON:
        _nested[m] = subclass


def mutex_vector_enter(m: KMutex, t: KThread) -> None:
    """The contended path.  Chain lock held.

    Adaptive, as illumos's: while the owner is running (not asleep itself),
    spin a little, giving the processor away between looks; sleep only when
    the owner blocks or the spin budget is spent.  A condition-variable
    wake-up whose signaller is about to drop the mutex then costs one sleep,
    not two.
    """
    dom = m.dom
    s = m.s
    lk = m.lk
    if s.owner == t.id:
        lk.release()
        dom.panic(f"recursive mutex_enter of {m.name} by {dom.thread_name(t.id)}")
    slots = dom.kthreads.slots
    for _ in range(MUTEX_SPINS):
        owner = s.owner
        if owner and slots[owner - 1].t_state != TS_ONPROC:
            break  # the owner sleeps: so shall we
        lk.release()
        _yield()
        dom.chain_enter(lk)
        if s.owner == 0:
            s.owner = t.id
            lk.release()
            t.held_push(m.idx + 1)
            if lockstat.ON:
                _acquired(m, t, 1)
            return
    start = time.monotonic_ns()
    wchan = m.idx + 1
    t.record_chain(3)
    sleepq.enqueue(dom, s, t, wchan, 0, start + dom.timeout_ns)
    lk.release()
    if sleepq.sleep(dom, t, lk, wchan) == WAKE_TIMEOUT:
        dom.deadline_expired(t, m)
    # mutex_exit handed us the lock before waking us.
    t.held_push(wchan)
    if lockstat.ON:
        _acquired(m, t, time.monotonic_ns() - start)


def _take_if_free(m: KMutex, t: KThread) -> bool:
    """Take ``m`` if it is free (True); otherwise return False still holding
    its chain lock, ready for ``mutex_vector_enter``."""
    lk = m.lk
    if not lk.acquire(False):
        m.dom.chain_enter(lk)
    s = m.s
    if s.owner == 0:
        s.owner = t.id
        lk.release()
        t.held_push(m.idx + 1)
        if lockstat.ON:
            _acquired(m, t, 0)
        return True
    return False


def mutex_tryenter(m: KMutex) -> bool:
    if _take_if_free(m, _cpu.t):
        return True
    m.lk.release()
    return False


def mutex_exit(m: KMutex) -> None:
    t = _cpu.t
    lk = m.lk
    if not lk.acquire(False):
        m.dom.chain_enter(lk)
    s = m.s
    if s.owner != t.id:
        lk.release()
        m.dom.panic(f"mutex_exit of {m.name} by {m.dom.thread_name(t.id)}, "
                    f"which does not own it")
    if s.whead:
        # Hand the lock to the first waiter (FIFO): a waiter is never starved
        # by threads that barge in, so a wait past the deadline means the
        # owner really held the lock that long.
        tid = sleepq.dequeue(m.dom, s, WAKE_SIGNALLED)
        s.owner = tid
        lk.release()
        sleepq.wakeup(m.dom, tid)
    else:
        s.owner = 0
        lk.release()
    # t.held_remove(m.idx + 1), inlined for the usual last-in first-out case
    n = t.nheld - 1
    held = t.held
    if n >= 0 and held[n] == m.idx + 1:
        held[n] = 0
        t.nheld = n
    else:
        t.held_remove(m.idx + 1)
    if _nested:
        _nested.pop(m, None)
    if lockstat.ON:
        _released(m, t)
    if noise.ON:
        noise.point(m.dom, t)


def MUTEX_HELD(m: KMutex) -> bool:
    """Does the calling kernel thread own ``m``?"""
    return m.s.owner == _cpu.t.id


def mutex_owner(m: KMutex) -> int:
    """The kthread id of the owner, 0 when free."""
    return m.s.owner


def _acquired(m: KMutex, t: KThread, waited_ns: int) -> None:
    dom = m.dom
    if not dom.g.lockstat:
        return
    now = time.monotonic_ns()
    t.acquired_ns[m.idx] = now
    ts = t.s
    if waited_ns:
        dom.fire(lockstat.ADAPTIVE_BLOCK, t.id, ts.t_pid, ts.t_lwpid, m.idx, m.s.lclass,
                 waited_ns)
    dom.fire(lockstat.ADAPTIVE_ACQUIRE, t.id, ts.t_pid, ts.t_lwpid, m.idx, m.s.lclass)


def _released(m: KMutex, t: KThread) -> None:
    dom = m.dom
    if not dom.g.lockstat:
        return
    start = t.acquired_ns.pop(m.idx, 0)
    hold = time.monotonic_ns() - start if start else 0
    ts = t.s
    dom.fire(lockstat.ADAPTIVE_RELEASE, t.id, ts.t_pid, ts.t_lwpid, m.idx, m.s.lclass, hold)
