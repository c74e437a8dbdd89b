"""``os/lwp.c``: creating and ending lwps, and the hold machinery.

Holds (see docs/kernel.md, "The hold machinery"): ``holdlwps`` sets SHOLDFORK (forkall) or
SHOLDFORK1 (fork1, vfork), pokes every other lwp and waits on
``p_holdlwps`` until ``p_lwprcnt`` (lwps not hold-stopped) falls to zero.
Poked lwps stop at a hold point (``holdlwp`` on the way back to user mode,
or in place inside an interruptible sleep for SHOLDFORK1) with
``stop(PR_SUSPENDED)``, which lowers ``p_lwprcnt`` and broadcasts
``p_holdlwps``.  They stay stopped without TS_CSTART until
``continuelwps``.  Everything here runs under the process's ``p_lock``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import ResourceError
from ..sync.condvar import cv_broadcast, cv_wait
from ..sync.kthread import KThread
from ..sync.mutex import MUTEX_HELD, mutex_enter, mutex_exit
from .clock import lwp_cpu_used
from .errno_defs import EDEADLK, EINTR, ESRCH
from .lwpdir import dir_entries, dir_grow, lwp_hash_in, lwp_hash_lookup, lwp_hash_out
from .proc import Proc
from .resources import lwp_count_admit, lwp_count_release
from .sig import SUSPENDED, aston, kcv_wait_sig, setrun_locked, setrun_sleeper, stop
from .structs import (
    LWP_STOPPED,
    LWP_ZOMB,
    NIL,
    PR_SUSPENDED,
    SCOREDUMP,
    SEXITLWPS,
    SHOLDFORK,
    SHOLDFORK1,
    SHOLDWATCH,
    SLWPWRAP,
    SUSPEND_NORMAL,
    TP_DAEMON,
    TP_EXITLWP,
    TP_HOLDLWP,
    TP_LWPEXIT,
    TP_TWAIT,
    TS_ALLSTART,
    TS_CREATE,
    TS_CSTART,
    TS_PSTART,
    TS_XSTART,
)

if TYPE_CHECKING:
    from .kernel import Kernel

INT_MAX = 2**31 - 1


class LwpExit(BaseException):
    """Unwinds an lwp's OS thread after ``lwp_exit`` (not an error)."""


# -- creation ----------------------------------------------------------------------------


def lwp_create(K: Kernel, p: Proc, lwpid: int = 0, syscid: bool = False,
               name: str = "") -> KThread | None:
    """A new lwp of ``p``, TS_STOPPED with TP_HOLDLWP, not yet counted as running.

    Admission charges the task, project and zone lwp counts (except for
    syscid); None when a limit, the thread table or the directory says no.
    The caller makes it runnable (``lwp_create_done``, ``continuelwps``).
    """
    s = p.s
    mutex_enter(p.p_lock)
    if not lwp_count_admit(K, p, 1, test=not syscid):
        mutex_exit(p.p_lock)
        return None
    mutex_exit(p.p_lock)
    try:
        t = K.dom.kthread_create(name or f"pid{s.p_pid}", s.p_pid, 0)
    except ResourceError:
        lwp_count_release(K, s.p_task, s.p_zone)
        return None
    lw = K.lwps[t.slot]
    _zero_lwp(K, t)
    lw.t_procp = p.id
    lw.t_start_ns = time.monotonic_ns()
    mutex_enter(p.p_lock)
    if s.p_lwpfree < 0 and not dir_grow(K, p):
        mutex_exit(p.p_lock)
        _undo_create(K, p, t, syscid)
        return None
    if lwpid == 0:
        lwpid = _next_lwpid(K, p)
        if lwpid < 0:
            mutex_exit(p.p_lock)
            _undo_create(K, p, t, syscid)
            return None
    lw.t_tid = lwpid
    t.s.t_lwpid = lwpid
    s.p_lwpcnt += 1
    lw.t_proc_flag = TP_HOLDLWP
    lw.t_schedflag = TS_ALLSTART & ~(TS_CSTART | TS_CREATE)
    lw.t_whystop, lw.t_whatstop = PR_SUSPENDED, SUSPEND_NORMAL
    lw.t_kstate = LWP_STOPPED
    lw.t_post_sys = 1
    t.s.t_sig_check = 1
    # append at the tail of the circular p_tlist
    if s.p_tlist:
        first = K.lwps[s.p_tlist - 1]
        last = first.t_back
        lw.t_forw, lw.t_back = s.p_tlist, last
        K.lwps[last - 1].t_forw = t.id
        first.t_back = t.id
    else:
        lw.t_forw = lw.t_back = t.id
        s.p_tlist = t.id
    lwp_hash_in(K, p, lwpid, t.id)
    mutex_exit(p.p_lock)
    K.count("nlwp_create")
    K.fire("proc:::lwp-create", s.p_pid, lwpid, t.id)
    return t


def _zero_lwp(K: Kernel, t: KThread) -> None:
    import ctypes

    from .structs import klwp_t

    ctypes.memset(ctypes.addressof(K.lwps[t.slot]), 0, ctypes.sizeof(klwp_t))


def _undo_create(K: Kernel, p: Proc, t: KThread, syscid: bool) -> None:
    lwp_count_release(K, p.s.p_task, p.s.p_zone)
    K.dom.kthread_free(t)


def _next_lwpid(K: Kernel, p: Proc) -> int:
    s = p.s
    for _ in range(INT_MAX):
        if s.p_lwpid == INT_MAX:
            s.p_lwpid = 1
            s.p_flag |= SLWPWRAP
        s.p_lwpid += 1
        if not s.p_flag & SLWPWRAP or lwp_hash_lookup(K, p, s.p_lwpid) < 0:
            return s.p_lwpid
    return -1  # pragma: no cover - a full cycle


def lwp_create_done(K: Kernel, t: KThread, p: Proc) -> None:
    """The creator has finished: let ``t`` run (requires p_lock)."""
    assert MUTEX_HELD(p.p_lock)
    lw = K.lwps[t.slot]
    if not lw.t_schedflag & TS_CSTART:
        p.s.p_lwprcnt += 1
    lw.t_schedflag |= TS_CSTART | TS_CREATE
    setrun_locked(K, t)


def start_lwp(K: Kernel, t: KThread) -> None:
    """Put ``t`` on a real OS thread (it waits there, stopped, until setrun)."""
    K.machine.start_lwp(t)


# -- holds ---------------------------------------------------------------------------------


def pokelwps(K: Kernel, p: Proc, me: KThread) -> None:
    """Make every other lwp of ``p`` reach a stop point (requires p_lock)."""
    assert MUTEX_HELD(p.p_lock)
    s = p.s
    for t in p.threads():
        if t.id == me.id:
            continue
        lw = K.lwps[t.slot]
        aston(t)
        t.s.t_sig_check = 1
        if lw.t_kstate == LWP_STOPPED:
            if s.p_flag & SEXITLWPS:
                s.p_stopsig = 0
                lw.t_schedflag |= TS_XSTART | TS_PSTART
                setrun_locked(K, t)
            elif s.p_flag & SHOLDFORK and SUSPENDED(K, t) and not lw.t_schedflag & TS_CSTART:
                # lwp_suspend'ed inside a system call: move it to a clonable point
                s.p_lwprcnt += 1
                lw.t_schedflag |= TS_CSTART
                setrun_locked(K, t)
        else:
            setrun_sleeper(K, t)


def continuelwps(K: Kernel, p: Proc) -> None:
    """Restart the lwps a hold stopped (requires p_lock)."""
    from .structs import SWATCHOK

    assert MUTEX_HELD(p.p_lock)
    s = p.s
    if s.p_flag & SWATCHOK:
        return
    assert not s.p_flag & (SHOLDFORK | SHOLDFORK1 | SHOLDWATCH)
    for t in p.threads():
        lw = K.lwps[t.slot]
        if SUSPENDED(K, t) and not lw.t_proc_flag & TP_HOLDLWP:
            s.p_lwprcnt += 1
            lw.t_schedflag |= TS_CSTART
            setrun_locked(K, t)


def holdlwps(K: Kernel, t: KThread, p: Proc, holdflag: int) -> bool:
    """Stop every other lwp of the caller's process at a clonable point.

    False (and nothing held) when another lwp is running forkall or exiting
    the process.  On success no hold flag is left set: the others simply
    sit SUSPENDED without TS_CSTART until ``continuelwps``.
    """
    from .signal_defs import SIGSTOP  # noqa: F401 - job control is not modelled
    from .structs import PR_REQUESTED, TP_PRSTOP

    assert holdflag in (SHOLDFORK, SHOLDFORK1)
    s = p.s
    lw = K.lwps[t.slot]
    mutex_enter(p.p_lock)
    K.fire("proc:::hold-start", s.p_pid, lw.t_tid, holdflag)
    while True:
        # the conflict loop
        while s.p_flag & (SEXITLWPS | SHOLDFORK | SHOLDFORK1 | SHOLDWATCH):
            if s.p_flag & (SEXITLWPS | SHOLDFORK):
                mutex_exit(p.p_lock)
                return False
            stop(K, t, p, PR_SUSPENDED, SUSPEND_NORMAL)  # another fork1/vfork holder
        s.p_flag |= holdflag
        pokelwps(K, p, t)
        s.p_lwprcnt -= 1
        retry = False
        # (bug forkall_clones_unheld: forkall does not wait for the others to stop)
        unheld = holdflag == SHOLDFORK and K.bug("forkall_clones_unheld")
        while s.p_lwprcnt > 0 and not unheld:
            if s.p_flag & (SEXITLWPS | SHOLDWATCH):
                s.p_lwprcnt += 1
                s.p_flag &= ~holdflag
                cv_broadcast(p.p_holdlwps)
                retry = True
                break
            if s.p_stopsig or lw.t_proc_flag & TP_PRSTOP:
                s.p_lwprcnt += 1
                s.p_flag &= ~holdflag
                lw.t_proc_flag &= ~TP_PRSTOP
                stop(K, t, p, PR_REQUESTED, 0)  # in sympathy
                retry = True
                break
            cv_wait(p.p_holdlwps, p.p_lock)
        if not retry:
            break
    s.p_lwprcnt += 1
    s.p_flag &= ~holdflag
    K.fire("proc:::hold-done", s.p_pid, lw.t_tid, holdflag)
    mutex_exit(p.p_lock)
    return True


def holdlwp(K: Kernel, t: KThread, p: Proc) -> None:
    """A hold point: stop here if a hold is in progress; exit if told to.

    Only the process-wide holds stop here.  An lwp_suspend request
    (TP_HOLDLWP) is honoured in ``issig``, after a pending SIGKILL: a
    suspended lwp that the kill sets running must go on to die, not stop
    again."""
    s = p.s
    lw = K.lwps[t.slot]
    mutex_enter(p.p_lock)
    if not s.p_flag & SCOREDUMP and (s.p_flag & SEXITLWPS or lw.t_proc_flag & TP_EXITLWP):
        lwp_exit(K, t, p)
    if not s.p_flag & (SHOLDFORK | SHOLDFORK1 | SHOLDWATCH):
        mutex_exit(p.p_lock)
        return
    stop(K, t, p, PR_SUSPENDED, SUSPEND_NORMAL)
    if s.p_flag & SEXITLWPS:
        lwp_exit(K, t, p)
    mutex_exit(p.p_lock)


# -- exiting -------------------------------------------------------------------------------


def lwp_exit(K: Kernel, t: KThread, p: Proc) -> None:
    """End the calling lwp (requires p_lock; never returns).

    The last lwp ends the process instead, through ``exit``.
    """
    from .exit import exit_proc
    from .procfs import prbarrier
    from .structs import CLD_EXITED

    assert MUTEX_HELD(p.p_lock)
    s = p.s
    lw = K.lwps[t.slot]
    if s.p_lwpcnt == 1:
        mutex_exit(p.p_lock)
        exit_proc(K, t, p, CLD_EXITED, 0)
        raise LwpExit()
    prbarrier(K, p)
    lwp_count_release(K, s.p_task, s.p_zone)
    lw.t_proc_flag |= TP_LWPEXIT
    if lw.t_proc_flag & TP_DAEMON:
        s.p_lwpdaemon -= 1
    if s.p_agenttp == t.id:  # lwp_cleanup: the agent gives its lwpid back
        s.p_agenttp = NIL
        s.p_lwpid -= 1
    s.p_lwpcnt -= 1
    s.p_lwprcnt -= 1
    # leave a zombie lwpent for lwp_wait, or none
    i = lwp_hash_lookup(K, p, lw.t_tid)
    if lw.t_proc_flag & TP_TWAIT and i >= 0:
        K.dir_block(s.p_lwpdir)[i].le_thread = 0
        s.p_zombcnt += 1
    elif i >= 0:
        lwp_hash_out(K, p, lw.t_tid)
    # unlink from p_tlist
    if s.p_tlist == t.id:
        s.p_tlist = lw.t_forw if lw.t_forw != t.id else NIL
    K.lwps[lw.t_back - 1].t_forw = lw.t_forw
    K.lwps[lw.t_forw - 1].t_back = lw.t_back
    lw.t_forw = lw.t_back = 0
    lw.t_kstate = LWP_ZOMB
    cv_broadcast(p.p_lwpexit)
    cv_broadcast(p.p_holdlwps)
    K.fire("proc:::lwp-exit", s.p_pid, lw.t_tid, *lwp_cpu_used(lw))
    mutex_exit(p.p_lock)
    raise LwpExit()


def exitlwps(K: Kernel, t: KThread, p: Proc, coredump: bool = False) -> int:
    """Make the caller the only lwp of its process; 0, or EINTR if another
    lwp is already doing it."""
    from .procfs import prbarrier

    s = p.s
    lw = K.lwps[t.slot]
    mutex_enter(p.p_lock)
    prbarrier(K, p)
    if s.p_flag & SEXITLWPS:
        aston(t)
        mutex_exit(p.p_lock)
        return EINTR
    s.p_flag |= SEXITLWPS | (SCOREDUMP if coredump else 0)
    # a holder in progress aborts its hold (holdlwps step 4)
    while s.p_flag & (SHOLDFORK | SHOLDFORK1 | SHOLDWATCH):
        cv_broadcast(p.p_holdlwps)
        cv_wait(p.p_holdlwps, p.p_lock)
        prbarrier(K, p)
    # quiesce, reusing SHOLDFORK
    s.p_flag |= SHOLDFORK
    pokelwps(K, p, t)
    s.p_lwprcnt -= 1
    while s.p_lwprcnt > 0:
        cv_wait(p.p_holdlwps, p.p_lock)
        prbarrier(K, p)
    s.p_lwprcnt += 1
    s.p_flag &= ~SHOLDFORK
    # let the others run into lwp_exit
    for t2 in p.threads():
        if t2.id == t.id:
            continue
        lw2 = K.lwps[t2.slot]
        lw2.t_proc_flag &= ~TP_HOLDLWP
        lw2.t_proc_flag |= TP_EXITLWP
        if lw2.t_kstate == LWP_STOPPED:
            if not lw2.t_schedflag & TS_CSTART and lw2.t_whystop == PR_SUSPENDED:
                s.p_lwprcnt += 1
            lw2.t_schedflag |= TS_ALLSTART
            setrun_locked(K, t2)
    while s.p_lwpcnt > 1:
        cv_wait(p.p_holdlwps, p.p_lock)
    # hash out the zombie lwps
    for _i, lwpid, tid, _start in dir_entries(K, p):
        if tid == 0:
            lwp_hash_out(K, p, lwpid)
    s.p_zombcnt = 0
    lw.t_proc_flag &= ~TP_HOLDLWP
    s.p_flag &= ~(SEXITLWPS | SHOLDFORK | SHOLDFORK1 | SHOLDWATCH | SLWPWRAP)
    mutex_exit(p.p_lock)
    return 0


# -- lwp_suspend / lwp_continue / lwp_wait -------------------------------------------------------


def idtot(K: Kernel, p: Proc, lwpid: int) -> KThread | None:
    i = lwp_hash_lookup(K, p, lwpid)
    if i < 0:
        return None
    tid = K.dir_block(p.s.p_lwpdir)[i].le_thread
    return K.thread(tid) if tid else None


def lwp_suspend(K: Kernel, me: KThread, p: Proc, lwpid: int) -> int:
    """Suspend lwp ``lwpid`` and wait until it is SUSPENDED (requires p_lock)."""
    assert MUTEX_HELD(p.p_lock)
    t = idtot(K, p, lwpid)
    if t is None:
        return ESRCH
    while True:  # top:
        lw = K.lwps[t.slot]
        lw.t_proc_flag |= TP_HOLDLWP
        t.s.t_sig_check = 1
        if t.id == me.id:
            aston(me)
            return 0
        aston(t)
        setrun_sleeper(K, t)
        restart = False
        while not SUSPENDED(K, t):
            if p.s.p_flag & SEXITLWPS:
                lwp_exit(K, me, p)
            if not kcv_wait_sig(K, p.p_holdlwps, p.p_lock):
                return EINTR
            if idtot(K, p, lwpid) is None:
                return ESRCH
            if not lw.t_proc_flag & TP_HOLDLWP:
                restart = True  # lwp_continue() or vfork() cleared it: start over
                break
        if not restart:
            return 0


def lwp_continue(K: Kernel, p: Proc, t: KThread) -> None:
    """Undo lwp_suspend (requires p_lock).  The lwp runs again only when no
    hold is in progress."""
    assert MUTEX_HELD(p.p_lock)
    lw = K.lwps[t.slot]
    lw.t_proc_flag &= ~TP_HOLDLWP
    if SUSPENDED(K, t) and not p.s.p_flag & (SHOLDFORK | SHOLDFORK1 | SHOLDWATCH):
        p.s.p_lwprcnt += 1
        lw.t_schedflag |= TS_CSTART
        setrun_locked(K, t)
    cv_broadcast(p.p_holdlwps)


def lwp_wait(K: Kernel, me: KThread, p: Proc, lwpid: int) -> tuple[int, int]:
    """Reap a zombie TP_TWAIT lwp (0 = any): (errno, lwpid).  Requires p_lock."""
    assert MUTEX_HELD(p.p_lock)
    s = p.s
    mylw = K.lwps[me.slot]
    if lwpid and lwpid == mylw.t_tid:
        return EDEADLK, 0
    while True:
        for _i, lid, tid, _start in dir_entries(K, p):
            if tid == 0 and (lwpid == 0 or lid == lwpid):
                lwp_hash_out(K, p, lid)
                s.p_zombcnt -= 1
                return 0, lid
        if lwpid:
            i = lwp_hash_lookup(K, p, lwpid)
            if i < 0:
                return ESRCH, 0
        elif s.p_lwpcnt <= 1 + s.p_lwpdaemon:
            return EDEADLK, 0
        s.p_lwpwait += 1
        r = kcv_wait_sig(K, p.p_lwpexit, p.p_lock)
        s.p_lwpwait -= 1
        if r == 0:
            return EINTR, 0
