"""``os/lwp.c``: creating and ending lwps, and the hold machinery.

Holds (see docs/kernel.md, "The hold machinery"): ``holdlwps`` sets SHOLDFORK (forkall) or
SHOLDFORK1 (fork1, vfork), pokes every other lwp and waits on
``p_holdlwps`` until ``p_lwprcnt`` (lwps not hold-stopped) falls to zero.
Poked lwps stop at a hold point (``holdlwp`` on the way back to user mode,
or in place inside an interruptible sleep for SHOLDFORK1) with
``stop(PR_SUSPENDED)``, which lowers ``p_lwprcnt`` and broadcasts
``p_holdlwps``.  They stay stopped without TS_CSTART until
``continuelwps``.  Everything here runs under the process's ``p_lock``;
start bits are given under the lwp's ``thread_lock`` too (realfork.kernel.sig).

The first line of each docstring says which locks the caller must hold and
which are held on return.  The one seeded bug here (``K.bug(name)``,
realfork.verify.bugs) is entered by one line and lives in the last section
of this module.
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
from .sig import (
    SUSPENDED,
    aston,
    kcv_wait_sig,
    setrun_locked,
    setrun_sleeper,
    stop,
    thread_lock,
    thread_unlock,
    ts_start,
)
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
    """Called with no locks held; returns with none held.  A new lwp of
    ``p``, TS_STOPPED with TP_HOLDLWP, not yet counted as running.

    Admission charges the task, project and zone lwp counts (except for
    syscid); None when a limit, the thread table or the directory says no.
    The caller makes it runnable (``lwp_create_done``, ``continuelwps``).

    Each None is a failure illumos's lwp_create has: the lwp resource
    controls; the kernel thread table full (``maxlwps``) as the lwp stack
    cache running dry (``segkp_cache_get`` returns NULL: lwp_create gives
    the counts back and fails); a directory size class out of blocks, which
    realfork treats the same way (illumos's directory is KM_SLEEP:
    realfork.kernel.lwpdir).
    """
    s = p.s
    # Charge the lwp counts first, under p_lock; then drop p_lock to
    # allocate the kernel thread (an allocation may sleep, and p_lock is not
    # held across a sleep); then retake p_lock to put the lwp in the
    # directory and on p_tlist.  Between the two sections the process may
    # have changed (another lwp created or exited): nothing read in the
    # first is used in the second.
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
    lw.t_tid = lwpid
    t.s.t_lwpid = lwpid
    s.p_lwpcnt += 1
    lw.t_proc_flag = TP_HOLDLWP
    lw.t_schedflag = TS_ALLSTART & ~(TS_CSTART | TS_CREATE)
    lw.t_whystop, lw.t_whatstop = PR_SUSPENDED, SUSPEND_NORMAL
    lw.t_kstate = LWP_STOPPED
    lw.t_post_sys = 1
    t.s.t_sig_check = 1
    # Append it at the tail of the circular p_tlist.
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
    """Takes no locks: the lwp is on no list yet.  Zero its klwp_t."""
    import ctypes

    from .structs import klwp_t

    ctypes.memset(ctypes.addressof(K.lwps[t.slot]), 0, ctypes.sizeof(klwp_t))


def _undo_create(K: Kernel, p: Proc, t: KThread, syscid: bool) -> None:
    """Called with no locks held.  Give back what lwp_create took: the lwp
    counts and the kernel thread."""
    lwp_count_release(K, p.s.p_task, p.s.p_zone)
    K.dom.kthread_free(t)


def _next_lwpid(K: Kernel, p: Proc) -> int:
    """Caller holds p->p_lock.  The next free lwpid: p_lwpid + 1, wrapping at
    INT_MAX (SLWPWRAP), after which ids still in use are skipped.

    illumos cannot fail here, nor can realfork: a directory holds a few
    thousand ids at most, so a free one turns up long before a full cycle;
    one that did not would be a panic."""
    s = p.s
    for _ in range(INT_MAX):
        if s.p_lwpid == INT_MAX:
            s.p_lwpid = 1
            s.p_flag |= SLWPWRAP
        s.p_lwpid += 1
        if not s.p_flag & SLWPWRAP or lwp_hash_lookup(K, p, s.p_lwpid) < 0:
            return s.p_lwpid
    K.dom.panic(f"pid {s.p_pid}: every lwpid in use: cannot happen")  # pragma: no cover


def lwp_create_done(K: Kernel, t: KThread, p: Proc) -> None:
    """Caller holds p->p_lock (asserted).  The creator has finished: let ``t`` run."""
    assert MUTEX_HELD(p.p_lock)
    lw = K.lwps[t.slot]
    thread_lock(K, t)
    if not lw.t_schedflag & TS_CSTART:
        p.s.p_lwprcnt += 1
    ts_start(K, t, TS_CSTART | TS_CREATE)
    setrun_locked(K, t)
    thread_unlock(K, t)


def start_lwp(K: Kernel, t: KThread) -> None:
    """Called with no locks held.  Put ``t`` on a real OS thread (it waits
    there, stopped, until setrun)."""
    K.machine.start_lwp(t)


# -- holds ---------------------------------------------------------------------------------


def pokelwps(K: Kernel, p: Proc, me: KThread) -> None:
    """Caller holds p->p_lock (asserted).  Make every other lwp of ``p``
    reach a stop point."""
    assert MUTEX_HELD(p.p_lock)
    s = p.s
    for t in p.threads():
        if t.id == me.id:
            continue
        lw = K.lwps[t.slot]
        aston(t)
        t.s.t_sig_check = 1
        thread_lock(K, t)
        if lw.t_kstate == LWP_STOPPED:
            if s.p_flag & SEXITLWPS:
                s.p_stopsig = 0
                ts_start(K, t, TS_XSTART | TS_PSTART)
                setrun_locked(K, t)
            elif s.p_flag & SHOLDFORK and SUSPENDED(K, t) and not lw.t_schedflag & TS_CSTART:
                # lwp_suspend'ed inside a system call: forkall cannot copy it
                # there, so it is moved on to a clonable point
                s.p_lwprcnt += 1
                ts_start(K, t, TS_CSTART)
                setrun_locked(K, t)
            thread_unlock(K, t)
        else:
            thread_unlock(K, t)  # a sleeper is woken through its sleep queue
            setrun_sleeper(K, t)


def continuelwps(K: Kernel, p: Proc) -> None:
    """Caller holds p->p_lock (asserted; no hold flag may be set).  Restart
    the lwps a hold stopped; those an lwp_suspend applies to stay stopped."""
    from .structs import SWATCHOK

    assert MUTEX_HELD(p.p_lock)
    s = p.s
    if s.p_flag & SWATCHOK:
        return
    assert not s.p_flag & (SHOLDFORK | SHOLDFORK1 | SHOLDWATCH)
    for t in p.threads():
        lw = K.lwps[t.slot]
        thread_lock(K, t)
        if SUSPENDED(K, t) and not lw.t_proc_flag & TP_HOLDLWP:
            s.p_lwprcnt += 1
            ts_start(K, t, TS_CSTART)
            setrun_locked(K, t)
        thread_unlock(K, t)


def holdlwps(K: Kernel, t: KThread, p: Proc, holdflag: int) -> bool:
    """Called with no locks held; returns with none held (p_lock is held
    throughout, except while stopped or asleep on p_holdlwps).  Stop every
    other lwp of the caller's process at a clonable point.

    False (and nothing held) when another lwp is running forkall or exiting
    the process.  On success no hold flag is left set: the others simply
    sit SUSPENDED without TS_CSTART until ``continuelwps``.

    ``p_lwprcnt`` counts the lwps not hold-stopped.  The holder counts itself
    out, so the count falls to 0 when every other lwp has stopped, and counts
    itself back in on every way out (a back-off or success); a count left
    off by one would make the next hold wait forever or finish early.
    """
    from .signal_defs import SIGSTOP  # noqa: F401 - job control is not modelled
    from .structs import PR_REQUESTED, TP_PRSTOP

    assert holdflag in (SHOLDFORK, SHOLDFORK1)
    s = p.s
    lw = K.lwps[t.slot]
    mutex_enter(p.p_lock)
    K.fire("proc:::hold-start", s.p_pid, lw.t_tid, holdflag)
    while True:
        # The conflict loop.  Another lwp running forkall or exiting the
        # process will clone or end this one: give up.  Another fork1/vfork
        # (or watchpoint) holder will stop this one like its others: stop
        # here and look again when it is done.
        while s.p_flag & (SEXITLWPS | SHOLDFORK | SHOLDFORK1 | SHOLDWATCH):
            if s.p_flag & (SEXITLWPS | SHOLDFORK):
                mutex_exit(p.p_lock)
                return False
            stop(K, t, p, PR_SUSPENDED, SUSPEND_NORMAL)  # another fork1/vfork holder
        s.p_flag |= holdflag
        pokelwps(K, p, t)
        s.p_lwprcnt -= 1
        if holdflag == SHOLDFORK and K.bug("forkall_clones_unheld"):
            return _bug_forkall_clones_unheld(K, t, p, holdflag)
        # Wait until every other lwp has stopped.  Two things end the wait
        # early: the holder backs off (counts itself back in, clears its
        # flag) and starts over, because waiting on would deadlock:
        # * exitlwps (SEXITLWPS) or a watchpoint holder (SHOLDWATCH) began
        #   meanwhile.  exitlwps waits for a hold in progress to end before
        #   it goes on, and the lwps it pokes exit rather than stop: the
        #   holder and exitlwps would wait for each other.  Starting over,
        #   the conflict loop gives up (exit) or stops behind the
        #   watchpoint holder.
        # * A job-control stop of the process (p_stopsig) or a /proc stop
        #   of the holder (TP_PRSTOP) is pending.  That stop is complete only
        #   when the holder has stopped too, and the other lwps may be
        #   stopping for it rather than for the hold: the holder stops
        #   first, in sympathy (PR_REQUESTED).
        retry = False
        while s.p_lwprcnt > 0:
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
    return _holds_done(K, t, p, holdflag)


def _holds_done(K: Kernel, t: KThread, p: Proc, holdflag: int) -> bool:
    """Caller holds p->p_lock; returns with it dropped.  The hold is
    complete: count the holder back in and clear the flag (the others stay
    stopped without TS_CSTART); True."""
    s = p.s
    s.p_lwprcnt += 1
    s.p_flag &= ~holdflag
    K.fire("proc:::hold-done", s.p_pid, K.lwps[t.slot].t_tid, holdflag)
    mutex_exit(p.p_lock)
    return True


def holdlwp(K: Kernel, t: KThread, p: Proc) -> None:
    """Called with no locks held; returns with none held, unless it exits
    instead.  A hold point: stop here if a hold is in progress; exit if told to.

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
    """Caller holds p->p_lock (asserted); never returns, and drops it on the
    way out.  End the calling lwp.

    The last lwp ends the process instead, through ``exit``: it drops p_lock
    first, because exit takes p_lock itself, and pidlock, which comes before
    any p_lock.
    Otherwise it first waits out /proc (prbarrier), which may be looking at
    this lwp, and then takes itself off every list under p_lock, so that a
    holder counting p_lwprcnt or a waiter in lwp_wait sees it gone at once.
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
    # Leave a zombie lwpent for lwp_wait (TP_TWAIT), or none.
    i = lwp_hash_lookup(K, p, lw.t_tid)
    if lw.t_proc_flag & TP_TWAIT and i >= 0:
        K.dir_block(s.p_lwpdir)[i].le_thread = 0
        s.p_zombcnt += 1
    elif i >= 0:
        lwp_hash_out(K, p, lw.t_tid)
    # Unlink it from p_tlist, and wake the waiters that count lwps.
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
    """Called with no locks held; returns with none held.  Make the caller the
    only lwp of its process; 0, or EINTR if another lwp is already doing it."""
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
    # A hold in progress is waited out: the broadcast wakes the holder in
    # holdlwps, which sees SEXITLWPS, backs off and clears its flag.  Reusing
    # SHOLDFORK below while another holder's flag is still set would mix up
    # the two holds' counts.
    while s.p_flag & (SHOLDFORK | SHOLDFORK1 | SHOLDWATCH):
        cv_broadcast(p.p_holdlwps)
        cv_wait(p.p_holdlwps, p.p_lock)
        prbarrier(K, p)
    # Stop every other lwp, reusing SHOLDFORK (so they stop at the top of
    # their stacks, out of any sleep).
    s.p_flag |= SHOLDFORK
    pokelwps(K, p, t)
    s.p_lwprcnt -= 1
    while s.p_lwprcnt > 0:
        cv_wait(p.p_holdlwps, p.p_lock)
        prbarrier(K, p)
    s.p_lwprcnt += 1
    s.p_flag &= ~SHOLDFORK
    # Set each of them running, marked TP_EXITLWP, into lwp_exit; wait until
    # the caller is the last.
    for t2 in p.threads():
        if t2.id == t.id:
            continue
        lw2 = K.lwps[t2.slot]
        lw2.t_proc_flag &= ~TP_HOLDLWP
        lw2.t_proc_flag |= TP_EXITLWP
        thread_lock(K, t2)
        if lw2.t_kstate == LWP_STOPPED:
            if not lw2.t_schedflag & TS_CSTART and lw2.t_whystop == PR_SUSPENDED:
                s.p_lwprcnt += 1
            ts_start(K, t2, TS_ALLSTART)
            setrun_locked(K, t2)
        thread_unlock(K, t2)
    while s.p_lwpcnt > 1:
        cv_wait(p.p_holdlwps, p.p_lock)
    # Remove the zombie lwps' directory entries: nobody will lwp_wait for them.
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
    """Caller holds p->p_lock.  The live lwp with id ``lwpid``, or None."""
    i = lwp_hash_lookup(K, p, lwpid)
    if i < 0:
        return None
    tid = K.dir_block(p.s.p_lwpdir)[i].le_thread
    return K.thread(tid) if tid else None


def lwp_suspend(K: Kernel, me: KThread, p: Proc, lwpid: int) -> int:
    """Caller holds p->p_lock (asserted); returns with it held (dropped
    while asleep).  Suspend lwp ``lwpid`` and wait until it is SUSPENDED.

    After each sleep the target is looked up again (it may have exited), and
    if its TP_HOLDLWP was cleared meanwhile (lwp_continue, or vfork's step 5)
    the request is made again from the top: the flag is the request, and a
    wait for a withdrawn request would never end."""
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
    """Caller holds p->p_lock (asserted).  Undo lwp_suspend.  The lwp runs
    again only when no hold is in progress (the holder's continuelwps will
    start it otherwise)."""
    assert MUTEX_HELD(p.p_lock)
    lw = K.lwps[t.slot]
    lw.t_proc_flag &= ~TP_HOLDLWP
    thread_lock(K, t)
    if SUSPENDED(K, t) and not p.s.p_flag & (SHOLDFORK | SHOLDFORK1 | SHOLDWATCH):
        p.s.p_lwprcnt += 1
        ts_start(K, t, TS_CSTART)
        setrun_locked(K, t)
    thread_unlock(K, t)
    cv_broadcast(p.p_holdlwps)


def lwp_wait(K: Kernel, me: KThread, p: Proc, lwpid: int) -> tuple[int, int]:
    """Caller holds p->p_lock (asserted); returns with it held (dropped while
    asleep).  Reap a zombie TP_TWAIT lwp (0 = any): (errno, lwpid)."""
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
            # No such lwp, or one nobody may wait for (no TP_TWAIT: a /proc
            # agent, a kernel process's lwp): ESRCH at once, as illumos's
            # lwp_wait says, rather than sleeping until it is gone.
            i = lwp_hash_lookup(K, p, lwpid)
            if i < 0:
                return ESRCH, 0
            lt = K.dir_block(s.p_lwpdir)[i].le_thread
            if lt and not K.lwps[lt - 1].t_proc_flag & TP_TWAIT:
                return ESRCH, 0
        elif s.p_lwpcnt <= 1 + s.p_lwpdaemon:
            return EDEADLK, 0
        s.p_lwpwait += 1
        r = kcv_wait_sig(K, p.p_lwpexit, p.p_lock)
        s.p_lwpwait -= 1
        if r == 0:
            return EINTR, 0


# ---- Seeded bugs (realfork bugs): wrong on purpose, off the main path ----
#
# Entered from the correct code by a single ``if K.bug(name): ...`` line;
# runs only when its bug is switched on.  (It neither blocks nor panics, so
# no call chain ever names it: the finding comes from forklwp.)


def _bug_forkall_clones_unheld(K: Kernel, t: KThread, p: Proc, holdflag: int) -> bool:
    """Caller holds p->p_lock; returns with it dropped.  forkall's holdlwps
    pokes the other lwps and reports success without waiting for them to
    stop (a classic mistake): forklwp then copies lwps that are still
    running, whose state changes under the copy."""
    return _holds_done(K, t, p, holdflag)
