"""Counting semaphores: ``sema_p``, ``sema_v``, ``sema_tryp``, ``sema_p_sig``.

Words (under the chain lock): ``count`` and the FIFO of sleepers.  A
semaphore has no owner, so a sleeper on it has no wait-for edge: an expired
deadline there is reported as a hang.
"""

from __future__ import annotations

import time

from . import sleepq
from .kthread import _cpu
from .objects import KSema
from .structs import T_WAKEABLE, TS_ONPROC, WAKE_INTERRUPTED, WAKE_SIGNALLED, WAKE_TIMEOUT


def _sema_p(sp: KSema, interruptible: bool) -> bool:
    """Take one unit; False if interrupted first."""
    t = _cpu.t
    dom = sp.dom
    lk = sp.lk
    s = sp.s
    dom.chain_enter(lk)
    if s.count > 0:
        s.count -= 1
        lk.release()
        return True
    deadline = time.monotonic_ns() + dom.timeout_ns
    wchan = sp.idx + 1
    t.record_chain(3)
    while True:
        sleepq.enqueue(dom, s, t, wchan, T_WAKEABLE if interruptible else 0, deadline)
        if interruptible and dom.sig_pending(t):
            sleepq.unlink(dom, s, t.id)
            t.s.t_wchan = 0
            t.s.t_state = TS_ONPROC
            lk.release()
            return False
        lk.release()
        why = sleepq.sleep(dom, t, lk, wchan)
        if why == WAKE_TIMEOUT:
            dom.deadline_expired(t, sp)
        if why == WAKE_INTERRUPTED:
            return False
        dom.chain_enter(lk)
        if s.count > 0:
            s.count -= 1
            lk.release()
            return True


def sema_p(sp: KSema) -> None:
    _sema_p(sp, False)


def sema_p_sig(sp: KSema) -> int:
    """0 when the unit was taken, 1 when interrupted (illumos's convention)."""
    return 0 if _sema_p(sp, True) else 1


def sema_tryp(sp: KSema) -> bool:
    lk = sp.lk
    sp.dom.chain_enter(lk)
    if sp.s.count > 0:
        sp.s.count -= 1
        lk.release()
        return True
    lk.release()
    return False


def sema_v(sp: KSema) -> None:
    dom = sp.dom
    lk = sp.lk
    s = sp.s
    dom.chain_enter(lk)
    s.count += 1
    tid = sleepq.dequeue(dom, s, WAKE_SIGNALLED) if s.whead else 0
    lk.release()
    if tid:
        sleepq.wakeup(dom, tid)
