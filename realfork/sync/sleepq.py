"""Sleep queues: how a kernel thread waits on a synchronization object.

Protocol (after illumos's turnstiles and sleep queues):

* The waiter, holding the object's chain lock, links itself at the tail of
  the object's FIFO (``whead``/``wtail``/``t_wnext``), sets ``t_wchan`` and
  ``t_state = TS_SLEEP``, drops the chain lock and waits on its own
  semaphore until its deadline.
* A waker, holding the same chain lock, unlinks the thread, writes
  ``t_wake`` (why) and clears ``t_wchan``; after dropping the chain lock it
  posts the thread's semaphore exactly once.  A cleared ``t_wchan`` is
  therefore the proof of a real wake-up; the semaphore only says "look".
* A waiter whose deadline passes takes the chain lock: if it is still queued
  it unlinks itself and reports ``WAKE_TIMEOUT``; otherwise a waker got there
  first and its post is on the way, so it consumes that post (keeping the
  semaphore at zero) and reports the waker's reason.
* A panic or a shutdown sets its flag, then posts every sleeping thread;
  they see the flag and unwind with ``KernelPanic``.  A thread that was not
  yet TS_SLEEP when the poster looked sees the flag before it waits.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import KernelPanic
from ..shm import libc
from .structs import (
    T_WAKEABLE,
    TS_ONPROC,
    TS_SLEEP,
    WAKE_INTERRUPTED,
    WAKE_NONE,
    WAKE_TIMEOUT,
    ksync_t,
)

if TYPE_CHECKING:
    from .domain import Substrate
    from .kthread import KThread


def enqueue(dom: Substrate, s: ksync_t, t: KThread, wchan: int, sflag: int,
            deadline_ns: int) -> None:
    """Queue ``t`` on object ``s`` (index + 1 = ``wchan``).  Chain lock held."""
    ts = t.s
    ts.t_wnext = 0
    tail = s.wtail
    if tail:
        dom.kthreads.slots[tail - 1].t_wnext = t.id
    else:
        s.whead = t.id
    s.wtail = t.id
    s.nwaiters += 1
    ts.t_sflag = sflag
    ts.t_wake = WAKE_NONE
    ts.t_sleep_ns = time.monotonic_ns()
    ts.t_deadline_ns = deadline_ns
    ts.t_wchan = wchan
    ts.t_state = TS_SLEEP


def unlink(dom: Substrate, s: ksync_t, tid: int) -> bool:
    """Remove thread ``tid`` from the queue of ``s``.  Chain lock held."""
    slots = dom.kthreads.slots
    prev = 0
    cur = s.whead
    while cur:
        nxt = slots[cur - 1].t_wnext
        if cur == tid:
            if prev:
                slots[prev - 1].t_wnext = nxt
            else:
                s.whead = nxt
            if s.wtail == tid:
                s.wtail = prev
            s.nwaiters -= 1
            slots[tid - 1].t_wnext = 0
            return True
        prev, cur = cur, nxt
    return False


def dequeue(dom: Substrate, s: ksync_t, reason: int) -> int:
    """Unlink the first waiter and mark it woken; its id, or 0.  Chain lock held.

    The caller posts it with ``wakeup`` after dropping the chain lock.
    """
    tid = s.whead
    if tid:
        ts = dom.kthreads.slots[tid - 1]
        nxt = ts.t_wnext
        s.whead = nxt
        if not nxt:
            s.wtail = 0
        s.nwaiters -= 1
        ts.t_wnext = 0
        ts.t_wake = reason
        ts.t_wchan = 0
    return tid


def mark_woken(dom: Substrate, s: ksync_t, tid: int, reason: int) -> None:
    """Unlink a known waiter and mark it woken.  Chain lock held."""
    unlink(dom, s, tid)
    ts = dom.kthreads.slots[tid - 1]
    ts.t_wake = reason
    ts.t_wchan = 0


def wakeup(dom: Substrate, tid: int) -> None:
    """Post the sleep semaphore of thread ``tid`` (after marking it woken)."""
    libc.sem_post(dom.kthread_sem(tid))


def sleep(dom: Substrate, t: KThread, lk: object, wchan: int) -> int:
    """Sleep until woken or until ``t_deadline_ns``; the wake reason.

    ``t`` is queued on the object ``wchan`` whose chain lock is ``lk``; the
    chain lock is not held on entry.  On ``WAKE_TIMEOUT`` the thread is
    still queued, so a panic report shows it waiting; a caller that goes on
    instead calls ``cancel``.
    """
    ts = t.s
    g = dom.g
    # A panic or shutdown that scanned for sleepers before we were TS_SLEEP
    # has not posted us: look at the flags once we are (the chain lock's
    # release orders our TS_SLEEP before this read; the other side orders its
    # flag before its scan the same way).
    if g.panicked or g.shutting_down:
        raise KernelPanic("kernel panicked" if g.panicked else "kernel shut down")
    while True:
        posted = libc.sem_wait_until(t.sem, ts.t_deadline_ns)
        if g.panicked or g.shutting_down:
            raise KernelPanic("kernel panicked" if g.panicked else "kernel shut down")
        if posted:
            if ts.t_wchan == 0:
                ts.t_state = TS_ONPROC
                return ts.t_wake
            continue  # a stray post (a panic check); still queued
        if ts.t_wchan == wchan:
            return WAKE_TIMEOUT
        # A waker unlinked us just before the deadline; take its post.
        return cancel(dom, t, lk, wchan)


def cancel(dom: Substrate, t: KThread, lk: object, wchan: int) -> int:
    """Stop waiting on ``wchan`` after a timeout.  ``WAKE_TIMEOUT`` if we
    unlinked ourselves, or the reason of a waker that got there first."""
    ts = t.s
    dom.chain_enter(lk)
    if ts.t_wchan == wchan:
        unlink(dom, dom.syncs[wchan - 1], t.id)
        ts.t_wchan = 0
        ts.t_state = TS_ONPROC
        lk.release()  # type: ignore[attr-defined]
        return WAKE_TIMEOUT
    lk.release()  # type: ignore[attr-defined]
    # The waker has unlinked us and is about to post: consume that post.
    libc.sem_wait_until(t.sem, time.monotonic_ns() + dom.timeout_ns)
    g = dom.g
    if g.panicked or g.shutting_down:
        raise KernelPanic("kernel panicked" if g.panicked else "kernel shut down")
    ts.t_state = TS_ONPROC
    return ts.t_wake


def wakeup_interruptible(dom: Substrate, tid: int) -> bool:
    """Break the interruptible sleep of thread ``tid`` (illumos ``setrun`` of a
    T_WAKEABLE sleeper).  True if it was asleep that way and is now woken."""
    ts = dom.kthreads.slots[tid - 1]
    wchan = ts.t_wchan
    if not wchan or not ts.t_sflag & T_WAKEABLE:
        return False
    lk = dom.chains.chain(wchan - 1)
    dom.chain_enter(lk)
    if ts.t_wchan != wchan or not ts.t_sflag & T_WAKEABLE:
        lk.release()
        return False
    mark_woken(dom, dom.syncs[wchan - 1], tid, WAKE_INTERRUPTED)
    lk.release()
    wakeup(dom, tid)
    return True
