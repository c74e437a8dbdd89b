"""Reader/writer locks: ``rw_enter``, ``rw_exit``, ``rw_tryenter`` (the address-space lock).

Words (under the chain lock): ``owner`` is the writer's kthread id, ``count``
the number of readers, ``wwriters`` the writers among the waiters.  Writers
are preferred, as in illumos: a reader waits while a writer waits, so a
thread must never re-enter a lock it holds as reader.  Readers and the
writer list the lock in their ``t_held``, which is how an observer finds the
readers of a lock.  On release the first waiter is woken, with every reader
queued when a writer leaves.  The lock is handed to the woken threads
before they run, so neither readers nor writers starve.
"""

from __future__ import annotations

import time

from . import lockdep, lockstat, noise, sleepq
from .kthread import KThread, _cpu
from .objects import KRWLock
from .structs import T_WANTWRITE, WAKE_SIGNALLED, WAKE_TIMEOUT

RW_WRITER = 0  # krw_t, as in illumos
RW_READER = 1


def _can_take(rw: KRWLock, how: int) -> bool:
    s = rw.s
    if how == RW_WRITER:
        return s.owner == 0 and s.count == 0
    return s.owner == 0 and s.wwriters == 0


def _take(rw: KRWLock, t: KThread, how: int) -> None:
    if how == RW_WRITER:
        rw.s.owner = t.id
    else:
        rw.s.count += 1


def rw_enter(rw: KRWLock, how: int) -> None:
    t = _cpu.t
    if noise.ON:
        noise.point(rw.dom, t)
    if t.nheld and lockdep.ON:  # readers are ordered like writers
        lockdep.check(rw, t, 0, t.nheld)
    dom = rw.dom
    lk = rw.lk
    dom.chain_enter(lk)
    if _can_take(rw, how):
        _take(rw, t, how)
        lk.release()
        t.held_push(rw.idx + 1)
        if lockstat.ON and dom.g.lockstat:
            dom.fire(lockstat.RW_ACQUIRE, t.id, t.s.t_pid, t.s.t_lwpid, rw.idx, rw.s.lclass,
                     how == RW_WRITER)
        return
    if rw.s.owner == t.id:
        lk.release()
        dom.panic(f"recursive rw_enter of {rw.name} by {dom.thread_name(t.id)}")
    start = time.monotonic_ns()
    wchan = rw.idx + 1
    t.record_chain(2)
    s = rw.s
    sleepq.enqueue(dom, s, t, wchan, T_WANTWRITE if how == RW_WRITER else 0,
                   start + dom.timeout_ns)
    if how == RW_WRITER:
        s.wwriters += 1
    lk.release()
    if sleepq.sleep(dom, t, lk, wchan) == WAKE_TIMEOUT:
        dom.deadline_expired(t, rw)
    # rw_exit granted us the lock (as writer, or as one of the readers).
    t.held_push(wchan)
    if lockstat.ON and dom.g.lockstat:
        dom.fire(lockstat.RW_BLOCK, t.id, t.s.t_pid, t.s.t_lwpid, rw.idx,
                 rw.s.lclass, time.monotonic_ns() - start, how == RW_WRITER)


def rw_tryenter(rw: KRWLock, how: int) -> bool:
    t = _cpu.t
    lk = rw.lk
    rw.dom.chain_enter(lk)
    if _can_take(rw, how):
        _take(rw, t, how)
        lk.release()
        t.held_push(rw.idx + 1)
        return True
    lk.release()
    return False


def _grant(rw: KRWLock, writer_left: bool) -> list[int]:
    """Hand the free lock to waiters; their ids, to be posted.  Chain lock held.

    A waiting writer at the head gets it alone, except that a writer leaving
    while readers wait lets every waiting reader in, so neither side starves.
    """
    dom = rw.dom
    s = rw.s
    slots = dom.kthreads.slots
    readers = []
    tid = s.whead
    while tid:
        if not slots[tid - 1].t_sflag & T_WANTWRITE:
            readers.append(tid)
        tid = slots[tid - 1].t_wnext
    head_writer = bool(slots[s.whead - 1].t_sflag & T_WANTWRITE)
    if head_writer and not (writer_left and readers):
        tid = sleepq.dequeue(dom, s, WAKE_SIGNALLED)
        s.wwriters -= 1
        s.owner = tid
        return [tid]
    for tid in readers:
        sleepq.mark_woken(dom, s, tid, WAKE_SIGNALLED)
    s.count += len(readers)
    return readers


def rw_exit(rw: KRWLock) -> None:
    t = _cpu.t
    dom = rw.dom
    lk = rw.lk
    s = rw.s
    dom.chain_enter(lk)
    writer = s.owner == t.id
    if writer:
        s.owner = 0
    elif s.count > 0:
        s.count -= 1
    else:
        lk.release()
        dom.panic(f"rw_exit of {rw.name} by {dom.thread_name(t.id)}, which does not hold it")
    woken = _grant(rw, writer) if s.owner == 0 and s.count == 0 and s.whead else []
    lk.release()
    for tid in woken:
        sleepq.wakeup(dom, tid)
    t.held_remove(rw.idx + 1)
    if lockstat.ON and dom.g.lockstat:
        dom.fire(lockstat.RW_RELEASE, t.id, t.s.t_pid, t.s.t_lwpid, rw.idx, rw.s.lclass, 0,
                 writer)


def RW_WRITE_HELD(rw: KRWLock) -> bool:
    return rw.s.owner == _cpu.t.id


def RW_READ_HELD(rw: KRWLock) -> bool:
    """Held as reader by the calling thread (checked against its t_held)."""
    t = _cpu.t
    return rw.s.owner != t.id and (rw.idx + 1) in t.held[:t.nheld]


def RW_LOCK_HELD(rw: KRWLock) -> bool:
    return rw.s.owner != 0 or rw.s.count > 0
