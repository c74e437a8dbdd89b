"""``os/sig.c`` as fork needs it: stopping (``stop``, ``setrun_locked``),
``issig``/``psig``, posting signals (``sigtoproc``), ``sigdefault``, and the
checks ``ISSIG_PENDING``/``MUSTRETURN`` that make interruptible sleeps give up.

Stopped lwps wait on their own ``t_cv`` with ``p_lock`` until
``setrun_locked`` sees every start bit.

``thread_lock(t)`` is a lock of its own, one mutex per kernel thread slot
(lockdep class ``thread_lock``), taken inside ``p_lock`` (lock order
``pidlock -> p_lock -> thread_lock``) around every change of a live lwp's
``t_schedflag`` and of its stop state, and around ``setrun_locked``, as
illumos takes it.  Whoever writes those fields holds both locks, so a reader
holding either sees them consistent; ``ts_start`` and ``setrun_locked``
assert the thread_lock as illumos ASSERTs ``THREAD_LOCK_HELD``.  Waking a
*sleeping* lwp (``setrun_sleeper``) does not take it: illumos's thread_lock of
a sleeping thread is its sleep queue's lock, and realfork's sleep queues have
chain locks of their own.  No code holds two lwps' thread_locks at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..sync.condvar import Stuck, cv_broadcast, cv_signal, cv_wait, cv_wait_sig
from ..sync.kthread import KThread, _cpu
from ..sync.mutex import MUTEX_HELD, mutex_enter, mutex_exit
from ..sync.objects import KCondvar, KMutex
from ..sync.sleepq import wakeup_interruptible
from .detect import fail
from .proc import Proc
from .signal_defs import NSIG, SIGCHLD, SIGCONT, SIGKILL, SIGPWR, SIGURG, SIGWINCH
from .structs import (
    LWP_ONPROC,
    LWP_STOPPED,
    P_PR_LOCK,
    PR_REQUESTED,
    PR_SUSPENDED,
    SEXITLWPS,
    SHOLDFORK,
    SHOLDFORK1,
    SHOLDWATCH,
    SIDL,
    SKILLED,
    SUSPEND_NORMAL,
    SVFWAIT,
    TP_CHKPT,
    TP_EXITLWP,
    TP_HOLDLWP,
    TP_PAUSE,
    TP_PRSTOP,
    TS_ALLSTART,
    TS_CSTART,
    TS_PSTART,
    TS_UNPAUSE,
    TS_XSTART,
)

if TYPE_CHECKING:
    from .kernel import Kernel

SIGMASK_ALL = (1 << NSIG) - 2
DEFAULT_IGNORE = (1 << SIGCHLD) | (1 << SIGPWR) | (1 << SIGWINCH) | (1 << SIGURG) | (1 << SIGCONT)


def sigbit(sig: int) -> int:
    return 1 << sig


# -- predicates ---------------------------------------------------------------------------


def ISHOLD(p: Proc) -> bool:
    return bool(p.s.p_flag & SHOLDFORK)


def MUSTRETURN(p: Proc) -> bool:
    """Interruptible sleeps must give up (a forkall is holding the process)."""
    return bool(p.s.p_flag & SHOLDFORK)


def deliverable(K: Kernel, t: KThread, p: Proc) -> int:
    """Pending signals that would do something: not held, not ignored."""
    lw = K.lwps[t.slot]
    s = p.s
    pend = (s.p_sig | lw.t_sig) & ~lw.t_hold
    ignored = s.p_ignore | (DEFAULT_IGNORE & ~s.p_catch)
    pend &= ~ignored | sigbit(SIGKILL)
    if s.p_flag & SVFWAIT:  # a vfork parent reacts only to SIGKILL
        pend &= sigbit(SIGKILL)
    return pend


def ISSIG_PENDING(K: Kernel, t: KThread, p: Proc) -> bool:
    lw = K.lwps[t.slot]
    return bool(p.s.p_flag & (SEXITLWPS | SKILLED | SHOLDFORK1 | SHOLDWATCH)
                or lw.t_proc_flag & (TP_PRSTOP | TP_HOLDLWP | TP_CHKPT | TP_PAUSE | TP_EXITLWP)
                or deliverable(K, t, p))


def sig_pending_hook(K: Kernel) -> Callable[[KThread], bool]:
    """What ``cv_wait_sig`` asks before and after sleeping."""
    def pending(t: KThread) -> bool:
        ptr = K.lwps[t.slot].t_procp
        if not ptr:
            return bool(t.s.t_sig_check)
        p = K.proc(ptr)
        return MUSTRETURN(p) or ISSIG_PENDING(K, t, p)
    return pending


# -- running and stopping -------------------------------------------------------------------


def aston(t: KThread) -> None:
    """Make ``t`` take the AST path on its way back to user mode (no lock)."""
    t.s.t_astflag = 1


# -- thread_lock -----------------------------------------------------------------------------


def thread_lock(K: Kernel, t: KThread) -> None:
    """Called with ``t``'s p_lock held (and maybe pidlock), never another
    lwp's thread_lock.  Take ``t``'s thread_lock."""
    mutex_enter(K.thread_lockp(t))


def thread_unlock(K: Kernel, t: KThread) -> None:
    """Called with ``t``'s thread_lock held.  Drop it."""
    mutex_exit(K.thread_lockp(t))


def THREAD_LOCK_HELD(K: Kernel, t: KThread) -> bool:
    """Does the calling kernel thread hold ``t``'s thread_lock?"""
    return MUTEX_HELD(K.thread_lockp(t))


def _assert_thread_lock(K: Kernel, t: KThread, what: str, verb: str = "") -> None:
    """``ASSERT(THREAD_LOCK_HELD(t))`` before ``what`` of ``t`` (a phrase:
    "t_schedflag", "changed" gives "t_schedflag of pid 7 lwp 1 changed
    without thread_lock held"); the finding names the kernel function that
    called the asserting one."""
    if not MUTEX_HELD(K.thread_lockp(t)):
        lw = K.lwps[t.slot]
        pid = K.procs.slots[lw.t_procp - 1].p_pid if lw.t_procp else -1
        fail(K, f"assertion failed: {what} of pid {pid} lwp {lw.t_tid} "
                f"{verb + ' ' if verb else ''}without thread_lock held", sys._getframe(2))


def ts_start(K: Kernel, t: KThread, bits: int) -> None:
    """Called with ``t``'s p_lock and thread_lock held (the latter asserted).
    Give ``t`` the start bits ``bits`` of ``t_schedflag``."""
    _assert_thread_lock(K, t, "t_schedflag", "changed")
    K.lwps[t.slot].t_schedflag |= bits


def SUSPENDED(K: Kernel, t: KThread) -> bool:
    lw = K.lwps[t.slot]
    return lw.t_kstate == LWP_STOPPED and not (
        lw.t_schedflag & TS_CSTART and lw.t_schedflag & TS_UNPAUSE)


def setrun_locked(K: Kernel, t: KThread) -> None:
    """Called with ``t``'s p_lock and thread_lock held (the latter asserted).
    Start a stopped lwp once it holds every start bit."""
    _assert_thread_lock(K, t, "setrun_locked")
    lw = K.lwps[t.slot]
    if lw.t_kstate == LWP_STOPPED and lw.t_schedflag & TS_ALLSTART == TS_ALLSTART:
        lw.t_schedflag &= ~TS_ALLSTART
        lw.t_kstate = LWP_ONPROC
        cv_signal(K.t_cv(t))


def setrun_sleeper(K: Kernel, t: KThread) -> bool:
    """Wake ``t`` if it sleeps interruptibly (the T_WAKEABLE case of setrun)."""
    if wakeup_interruptible(K.dom, t.id):
        return True
    # The sleeper may be between queueing and looking at its flags: a full
    # barrier, then one more look, closes the window across OS processes.
    K.dom.chains.chain(0).acquire()
    K.dom.chains.chain(0).release()
    return wakeup_interruptible(K.dom, t.id)


def thread_stop_wait(K: Kernel, t: KThread, p: Proc) -> None:
    """Called with p_lock and the caller's thread_lock held; returns with
    p_lock held (dropped while stopped) and the thread_lock dropped.  Sleep
    stopped until ``setrun_locked``.

    The stop state is set under the thread_lock, which is dropped before the
    sleep (illumos's thread_stop sets TS_STOPPED and drops the thread lock
    before swtch): sleeping with it held would block every setrun_locked of
    this lwp, the very call that ends the sleep."""
    lw = K.lwps[t.slot]
    _assert_thread_lock(K, t, "stop state", "changed")
    lw.t_kstate = LWP_STOPPED
    thread_unlock(K, t)
    cv = K.t_cv(t)
    stuck = _nobody_continues(K, t, p) if lw.t_whystop == PR_SUSPENDED else None
    while lw.t_kstate == LWP_STOPPED:
        cv_wait(cv, p.p_lock, patient=True, stuck=stuck)


def _nobody_continues(K: Kernel, t: KThread, p: Proc) -> Stuck:
    """For an lwp stopped PR_SUSPENDED (by TP_HOLDLWP or by a hold): only
    another lwp of its own process can set it running again (``lwp_continue``,
    ``continuelwps`` at the end of the holder's fork), and an lwp that is
    itself stopped PR_SUSPENDED cannot.  When every other lwp of the process
    is so stopped (and the process is not exiting, which would set them
    running), the wake-up never comes."""
    s = p.s

    def check() -> str | None:
        lw = K.lwps[t.slot]
        if lw.t_kstate != LWP_STOPPED or s.p_flag & SEXITLWPS:
            return None
        # p_lock is not held here: walk the ring from ourselves, bounded
        tid, n = lw.t_forw, 0
        while tid and tid != t.id:
            olw = K.lwps[tid - 1]
            if olw.t_kstate != LWP_STOPPED or olw.t_whystop != PR_SUSPENDED:
                return None
            tid, n = olw.t_forw, n + 1
            if n > len(K.lwps):
                return None  # the ring changed under us: no verdict
        if tid != t.id:
            return None
        return (f"pid {s.p_pid} lwp {lw.t_tid} is suspended and every other lwp of its "
                f"process is stopped: none can continue it")
    return check


def stop(K: Kernel, t: KThread, p: Proc, why: int, what: int) -> bool:
    """Stop the calling lwp (requires p_lock; held again on return).  False if
    there was nothing to stop for."""
    from .procfs import prbarrier

    assert MUTEX_HELD(p.p_lock)
    lw = K.lwps[t.slot]
    s = p.s
    if why == PR_SUSPENDED and what == SUSPEND_NORMAL:
        if not (lw.t_proc_flag & TP_HOLDLWP or s.p_flag & (SHOLDFORK | SHOLDFORK1 | SHOLDWATCH)):
            return False
        if lw.lwp_asleep and s.p_flag & SHOLDFORK:
            return False  # hold at the top of the stack, not inside the sleep
        s.p_lwprcnt -= 1
        if s.p_lwprcnt == 0 or lw.t_proc_flag & TP_HOLDLWP:
            cv_broadcast(p.p_holdlwps)
        K.count("holds")
        K.fire("proc:::hold-start", s.p_pid, lw.t_tid, why)
        flags = TS_ALLSTART & ~TS_CSTART
    else:
        cv_broadcast(p.p_holdlwps)  # holdlwps may be waiting for us in sympathy
        cv_broadcast(p.pr_pid_cv)
        flags = TS_ALLSTART & ~TS_PSTART
    # p_lock is held from the checks above to the sleep, so nobody sees the
    # count lowered before the flags are set.
    thread_lock(K, t)
    ts_start(K, t, flags)
    lw.t_whystop, lw.t_whatstop = why, what
    thread_stop_wait(K, t, p)  # drops the thread_lock
    lw.t_whystop = 0
    if why == PR_SUSPENDED:
        K.fire("proc:::hold-done", s.p_pid, lw.t_tid, why)
    prbarrier(K, p)
    return True


# -- signals ----------------------------------------------------------------------------


def issig(K: Kernel, t: KThread, p: Proc) -> int:
    """Honour stop requests; the signal to act on (0 none, -1 the lwp must exit).

    Hold requests of fork1/vfork/watchpoints and lwp_suspend stop the lwp in
    place here; a /proc stop request stops it as PR_REQUESTED.
    """
    lw = K.lwps[t.slot]
    s = p.s
    mutex_enter(p.p_lock)
    try:
        while True:
            if s.p_flag & SEXITLWPS or lw.t_proc_flag & TP_EXITLWP:
                return -1
            if s.p_flag & SKILLED:  # before any stop: SIGKILL is a sure kill
                lw.lwp_cursig = SIGKILL
                return SIGKILL
            if (lw.t_proc_flag & TP_HOLDLWP or s.p_flag & (SHOLDFORK1 | SHOLDWATCH)) \
                    and not lw.lwp_nostop:
                if not stop(K, t, p, PR_SUSPENDED, SUSPEND_NORMAL):
                    return 0
                continue
            if lw.t_proc_flag & TP_PRSTOP:
                lw.t_proc_flag &= ~TP_PRSTOP
                stop(K, t, p, PR_REQUESTED, 0)
                continue
            pend = deliverable(K, t, p)  # SKILLED returned above: p_lock held since
            if not pend:
                return 0
            sig = (pend & -pend).bit_length() - 1
            s.p_sig &= ~sigbit(sig)
            lw.t_sig &= ~sigbit(sig)
            lw.lwp_cursig = sig
            return sig
    finally:
        mutex_exit(p.p_lock)


def sigtoproc(K: Kernel, p: Proc, sig: int) -> None:
    """Post ``sig`` to ``p`` and make an lwp notice it (requires p_lock)."""
    assert MUTEX_HELD(p.p_lock)
    s = p.s
    if sig == SIGKILL:
        s.p_flag |= SKILLED
    ignored = s.p_ignore | (DEFAULT_IGNORE & ~s.p_catch)
    if sig != SIGKILL and ignored & sigbit(sig):
        return  # discarded at once, as illumos does for ignored signals
    s.p_sig |= sigbit(sig)
    threads = p.threads()
    suspended = 0
    for t in threads:
        aston(t)
        t.s.t_sig_check = 1
        if not setrun_sleeper(K, t) and sig == SIGKILL:
            _setrun_stopped_for_sigkill(K, t, p)
        if SUSPENDED(K, t):
            suspended += 1
    # The SIGKILL deadlock breaker: when every lwp is hold-stopped (say the
    # only lwp suspended itself), nobody would ever continue one of them, so
    # set the first running to field the kill.  Not for an SIDL child, nor
    # while /proc holds the process (its prunlock sets it running instead).
    if (sig == SIGKILL and threads and s.p_stat != SIDL and s.p_lwprcnt == 0
            and s.p_lwpcnt == suspended and not s.p_proc_flag & P_PR_LOCK):
        s.p_lwprcnt += 1
        t0 = threads[0]
        thread_lock(K, t0)
        ts_start(K, t0, TS_CSTART)
        setrun_locked(K, t0)
        thread_unlock(K, t0)


def _setrun_stopped_for_sigkill(K: Kernel, t: KThread, p: Proc) -> None:
    """SIGKILL is a sure kill: a stopped lwp gets the job-control and /proc
    start bits, so one stopped by /proc runs and dies (unless /proc holds the
    process: it must not change shape under P_PR_LOCK).  An lwp that is
    hold-stopped still lacks TS_CSTART and stays where it is."""
    lw = K.lwps[t.slot]
    thread_lock(K, t)
    if lw.t_kstate == LWP_STOPPED and not p.s.p_proc_flag & P_PR_LOCK:
        p.s.p_stopsig = 0
        ts_start(K, t, TS_XSTART | TS_PSTART)
        setrun_locked(K, t)
    thread_unlock(K, t)


def sigdefault(K: Kernel, p: Proc) -> None:
    """Caught signals revert to SIG_DFL (vfork child, exec)."""
    from .structs import SJCTL, SNOWAIT

    s = p.s
    if s.p_catch & sigbit(SIGCHLD):
        s.p_flag &= ~(SNOWAIT | SJCTL)
    s.p_catch = 0


def kcv_wait_sig(K: Kernel, cv: KCondvar, m: KMutex, waker: int = 0,
                 stuck: Stuck | None = None) -> int:
    """``cv_wait_sig`` with illumos's epilogue: 0 when the system call must
    fail with EINTR; > 0 after a wake-up or after being stopped in place by a
    hold or /proc request (the caller re-checks its condition).  Patient."""
    t = _cpu.t
    r = cv_wait_sig(cv, m, patient=True, waker=waker, stuck=stuck)
    if r > 0:
        return r
    p = K.proc(K.lwps[t.slot].t_procp)
    if MUSTRETURN(p):
        return 0
    lw = K.lwps[t.slot]
    mutex_exit(m)
    lw.lwp_asleep = 1
    sig = issig(K, t, p)
    lw.lwp_asleep = 0
    mutex_enter(m)
    return 0 if sig else 1
