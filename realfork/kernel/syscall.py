"""System-call entry and exit, the AST trap, and the system calls of the
user instruction set.

``syscall`` is the one way into the kernel from user mode: it saves nothing
itself (the interpreter has saved the user context in ``klwp_t``), runs the
handler, stores the result and runs ``post_syscall``: the /proc stop on
exit from a traced fork (PR_SYSEXIT), ``vfwait`` for a vfork parent, then
the signal/hold check (``holdlwp``, ``issig``,
``psig``), then the return registers.  ``trap_ast`` is the same check taken
between user instructions, as a CPU takes an AST trap on its way back to
user mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..sync.condvar import cv_timedwait_sig
from ..sync.kthread import KThread
from ..sync.mutex import mutex_enter, mutex_exit
from .errno_defs import EAGAIN, EBUSY, EINVAL, EPERM, ESRCH
from .exit import exit_proc, waitid
from .fork import fork1, forkall, vfork, vfwait
from .lwp import (
    holdlwp,
    idtot,
    lwp_continue,
    lwp_create,
    lwp_create_done,
    lwp_exit,
    lwp_suspend,
    lwp_wait,
    start_lwp,
)
from .pause import pause_gate
from .pid import prfind, upcount_dec, upcount_inc
from .proc import Proc
from .procfs import pr_setrun, prunlock, sprlock
from .resources import cred_create, crfree
from .sig import (
    DEFAULT_IGNORE,
    MUSTRETURN,
    issig,
    sigbit,
    sigtoproc,
    stop,
)
from .signal_defs import NSIG, SIGKILL, SIGSTOP
from .structs import (
    CLD_EXITED,
    CLD_KILLED,
    P_PR_FORK,
    P_PR_STOPFORK,
    P_PR_TRACE,
    PR_SYSEXIT,
    SEXITING,
    SEXITLWPS,
    SKILLED,
    SVFWAIT,
    T_FORKALL,
    T_VFPARENT,
    TP_TWAIT,
    klwp_t,
)
from .systab import FORKS, SYSCALLS, SYSNUM, SYS_vfork, SYS_wait

if TYPE_CHECKING:
    from .kernel import Kernel

Result = tuple[int, int, int]
REG_RV, REG_ERR, REG_ST = 8, 9, 10  # realfork.user.isa.REGISTERS


class ExecDone(Exception):
    """exec succeeded: the interpreter reloads its context (no return values)."""


def curproc_t(K: Kernel, t: KThread) -> Proc:
    return K.proc(K.lwps[t.slot].t_procp)


# -- the way in and out ---------------------------------------------------------------


def syscall(K: Kernel, t: KThread, sysnum: int, a0: int = 0, a1: int = 0) -> None:
    """Run system call ``sysnum``; results go to the saved registers."""
    lw = K.lwps[t.slot]
    lw.t_sysnum = sysnum
    K.progress()
    g = K.g
    K.count("syscalls")
    p = curproc_t(K, t)
    start = time.monotonic_ns() if g.sysprobes else 0
    try:
        err, rv1, rv2 = HANDLERS[sysnum](K, t, p, a0, a1)
    except ExecDone:
        lw.t_sysnum = 0
        if start:
            K.fire("syscall:::return", p.s.p_pid, lw.t_tid, sysnum,
                   time.monotonic_ns() - start, 0)
        post_syscall(K, t, exec_done=True)
        return
    lw.lwp_errno, lw.lwp_rval1, lw.lwp_rval2 = err, rv1, rv2
    if start:
        # (number, latency ns, errno); a process's last system call never returns
        K.fire("syscall:::return", p.s.p_pid, lw.t_tid, sysnum,
               time.monotonic_ns() - start, err)
    post_syscall(K, t)


def post_syscall(K: Kernel, t: KThread, exec_done: bool = False) -> None:
    """Called with no locks held; returns with none held.  The way out of a
    system call, in illumos's order: the /proc stop on exit from a traced
    system call (PR_SYSEXIT), then vfwait for a vfork parent, then the
    hold/stop/signal check, then the return registers."""
    lw = K.lwps[t.slot]
    ts = t.s
    p = curproc_t(K, t)
    sysnum = lw.t_sysnum
    # /proc's stop on exit from the system call (the model traces the exits
    # of the fork calls only: P_PR_STOPFORK).  It comes before vfwait, which
    # is why vfwait is called from here and not from vfork itself: a traced
    # vfork parent stops on its way out of vfork with its child running (and
    # SVFWAIT set, which /proc counts as stopped), and waits for the child
    # only once /proc sets it running.  The caller's TP_PRSTOP from cfork's
    # step 14 is withdrawn by that prrun; were it not, the caller would stop
    # again as PR_REQUESTED on the way out.
    if sysnum in FORKS and p.s.p_proc_flag & P_PR_STOPFORK:
        _stop_on_sysexit(K, t, p, sysnum)
    if vfwait_due(K, lw, sysnum):
        vfwait(K, t, int(lw.lwp_rval1))
    sig_check(K, t, p)
    lw.t_flag &= ~T_FORKALL
    if not exec_done and sysnum:
        regs = lw.regs
        if lw.lwp_errno:
            regs[REG_RV], regs[REG_ERR] = -1, lw.lwp_errno
        else:
            # libc: a fork child sees (parent pid, 1) and returns 0
            regs[REG_RV] = 0 if sysnum in FORKS and lw.lwp_rval2 == 1 else lw.lwp_rval1
            regs[REG_ERR] = 0
            if sysnum == SYS_wait:
                regs[REG_ST] = lw.lwp_rval2
    lw.t_sysnum = 0
    ts.t_sig_check = 0


def vfwait_due(K: Kernel, lw: klwp_t, sysnum: int) -> bool:
    """Takes no locks (the lwp's own fields).  Is this lwp the parent returning
    from a successful vfork, which must wait in vfwait for its child?

    The 2006 test is the return values alone: the vfork system call returning
    (child pid, 0) without error.  Since illumos 6533431 the test also asks
    for the mark cfork put on the vforking thread (T_VFPARENT), so only that
    thread can take it; the 2006 kernel never sets the mark."""
    returned = sysnum == SYS_vfork and lw.lwp_rval2 == 0 and lw.lwp_errno == 0
    if not K.fixed("6533431"):
        return returned
    return returned and bool(lw.t_flag & T_VFPARENT)


def _stop_on_sysexit(K: Kernel, t: KThread, p: Proc, sysnum: int) -> None:
    """Called with no locks held; returns with none held.  Stop as
    PR_SYSEXIT if the process still traces this system call's exit, looked
    at again under p_lock (/proc may have just switched it off).  Not when
    the process is being killed or its lwps made to exit: a sure kill sets
    stopped lwps running only once, and one stopped after it would wait for
    a prrun that may never come."""
    mutex_enter(p.p_lock)
    if p.s.p_proc_flag & P_PR_STOPFORK and not p.s.p_flag & (SKILLED | SEXITLWPS):
        stop(K, t, p, PR_SYSEXIT, sysnum)
    mutex_exit(p.p_lock)


def sig_check(K: Kernel, t: KThread, p: Proc) -> None:
    """Holds, /proc stops and signals, on the way back to user mode."""
    ts = t.s
    lw = K.lwps[t.slot]
    if not (ts.t_astflag or ts.t_sig_check or lw.lwp_cursig):
        return
    ts.t_astflag = 0
    if K.g.pausing:
        pause_gate(K, t)  # park while the invariant checker looks (kernel.pause)
    holdlwp(K, t, p)
    sig = lw.lwp_cursig or issig(K, t, p)
    if sig < 0:  # another lwp is exiting the process
        holdlwp(K, t, p)
        mutex_enter(p.p_lock)
        lwp_exit(K, t, p)
    if sig > 0:
        psig(K, t, p, sig)
    holdlwp(K, t, p)


def trap_ast(K: Kernel, t: KThread) -> None:
    """The AST trap between user instructions."""
    t.s.t_sig_check = 1
    sig_check(K, t, curproc_t(K, t))
    t.s.t_sig_check = 0


def psig(K: Kernel, t: KThread, p: Proc, sig: int) -> None:
    """Act on the current signal: a caught one is consumed (realfork has no
    handlers to run); an uncaught one takes its default action."""
    lw = K.lwps[t.slot]
    lw.lwp_cursig = 0
    s = p.s
    if sig != SIGKILL and (s.p_catch & sigbit(sig) or (s.p_ignore | DEFAULT_IGNORE) & sigbit(sig)):
        return
    exit_proc(K, t, p, CLD_KILLED, sig)


# -- process creation and life ---------------------------------------------------------


def sys_fork1(K: Kernel, t: KThread, p: Proc, a0: int, a1: int) -> Result:
    return fork1(K, t)


def sys_forkall(K: Kernel, t: KThread, p: Proc, a0: int, a1: int) -> Result:
    return forkall(K, t)


def sys_vfork(K: Kernel, t: KThread, p: Proc, a0: int, a1: int) -> Result:
    return vfork(K, t)


def sys_exit(K: Kernel, t: KThread, p: Proc, status: int, a1: int) -> Result:
    exit_proc(K, t, p, CLD_EXITED, status & 0xFF)
    raise AssertionError("exit returned")  # pragma: no cover


def sys_exec(K: Kernel, t: KThread, p: Proc, entry: int, a1: int) -> Result:
    from .exec import exec_common

    err = exec_common(K, t, p, entry)
    if err:
        return err, 0, 0
    raise ExecDone()


def sys_wait(K: Kernel, t: KThread, p: Proc, pid: int, a1: int) -> Result:
    return waitid(K, t, pid)


def sys_getpid(K: Kernel, t: KThread, p: Proc, a0: int, a1: int) -> Result:
    return 0, p.s.p_pid, 0


def sys_getppid(K: Kernel, t: KThread, p: Proc, a0: int, a1: int) -> Result:
    return 0, p.s.p_ppid, 0


# -- lwps ------------------------------------------------------------------------------------


def sys_lwp_create(K: Kernel, t: KThread, p: Proc, entry: int, a1: int) -> Result:
    if p.s.p_flag & (SKILLED | SEXITING):
        return EAGAIN, 0, 0
    nt = lwp_create(K, p)
    if nt is None:
        return EAGAIN, 0, 0
    lw, nlw = K.lwps[t.slot], K.lwps[nt.slot]
    nlw.pc = entry
    for i in range(len(lw.regs)):
        nlw.regs[i] = lw.regs[i]
    nlw.t_hold = lw.t_hold
    start_lwp(K, nt)
    mutex_enter(p.p_lock)
    nlw.t_proc_flag |= TP_TWAIT
    nlw.t_proc_flag &= ~0x2  # TP_HOLDLWP: not suspended
    # Read the id while p_lock keeps the new lwp from exiting: once we drop
    # it, the lwp may run, exit and have its slot reused (found by schedule
    # noise: the creator returned another process's lwp id and suspended itself).
    lwpid = nlw.t_tid
    lwp_create_done(K, nt, p)
    mutex_exit(p.p_lock)
    return 0, lwpid, 0


def sys_lwp_exit(K: Kernel, t: KThread, p: Proc, a0: int, a1: int) -> Result:
    mutex_enter(p.p_lock)
    lwp_exit(K, t, p)
    raise AssertionError("lwp_exit returned")  # pragma: no cover


def sys_lwp_self(K: Kernel, t: KThread, p: Proc, a0: int, a1: int) -> Result:
    return 0, K.lwps[t.slot].t_tid, 0


def sys_lwp_suspend(K: Kernel, t: KThread, p: Proc, lwpid: int, a1: int) -> Result:
    mutex_enter(p.p_lock)
    err = lwp_suspend(K, t, p, lwpid)
    mutex_exit(p.p_lock)
    return err, 0, 0


def sys_lwp_continue(K: Kernel, t: KThread, p: Proc, lwpid: int, a1: int) -> Result:
    mutex_enter(p.p_lock)
    target = idtot(K, p, lwpid)
    if target is None:
        mutex_exit(p.p_lock)
        return ESRCH, 0, 0
    lwp_continue(K, p, target)
    mutex_exit(p.p_lock)
    return 0, 0, 0


def sys_lwp_wait(K: Kernel, t: KThread, p: Proc, lwpid: int, a1: int) -> Result:
    mutex_enter(p.p_lock)
    err, got = lwp_wait(K, t, p, lwpid)
    mutex_exit(p.p_lock)
    return err, got, 0


def sys_sleep(K: Kernel, t: KThread, p: Proc, ms: int, a1: int) -> Result:
    """An interruptible sleep: a signal (or a forkall's hold) ends it with
    EINTR; a fork1/vfork hold stops it in place and it sleeps on."""
    from .errno_defs import EINTR

    if ms < 0:
        return EINVAL, 0, 0
    until = time.monotonic_ns() + ms * 1_000_000
    cv = K.t_cv(t)
    lw = K.lwps[t.slot]
    err = 0
    beat = max(K.dom.timeout_ns // 2, 1_000_000)
    mutex_enter(p.p_lock)
    while time.monotonic_ns() < until:
        # sleep in slices, each a heartbeat: a sleeping process is not a hang
        r = cv_timedwait_sig(cv, p.p_lock, min(until, time.monotonic_ns() + beat))
        K.progress()
        if r == -1:
            continue
        if r == 0:
            if MUSTRETURN(p):
                err = EINTR
                break
            mutex_exit(p.p_lock)
            lw.lwp_asleep = 1
            sig = issig(K, t, p)
            lw.lwp_asleep = 0
            mutex_enter(p.p_lock)
            if sig:
                err = EINTR
                break
    mutex_exit(p.p_lock)
    return err, 0, 0


# -- signals and credentials ---------------------------------------------------------------


def sys_kill(K: Kernel, t: KThread, p: Proc, pid: int, sig: int) -> Result:
    if not 0 <= sig < NSIG:
        return EINVAL, 0, 0
    mutex_enter(K.pidlock)
    q = prfind(K, pid) if pid > 0 else None
    if q is None or q.s.p_stat == 0 or q.s.p_pid == 0:
        mutex_exit(K.pidlock)
        return ESRCH, 0, 0
    me, them = K.creds.slots[p.s.p_cred - 1], K.creds.slots[q.s.p_cred - 1] \
        if q.s.p_cred else None
    if them is not None and me.cr_uid != 0 and me.cr_uid != them.cr_ruid:
        mutex_exit(K.pidlock)
        return EPERM, 0, 0
    if sig:
        mutex_enter(q.p_lock)
        from .structs import SZOMB

        if q.s.p_stat != SZOMB:
            sigtoproc(K, q, sig)
        mutex_exit(q.p_lock)
    mutex_exit(K.pidlock)
    return 0, 0, 0


def sys_sigaction(K: Kernel, t: KThread, p: Proc, sig: int, disp: int) -> Result:
    """disp: 0 default, 1 ignore, 2 catch."""
    if not 0 < sig < NSIG or sig in (SIGKILL, SIGSTOP) or disp not in (0, 1, 2):
        return EINVAL, 0, 0
    b = sigbit(sig)
    mutex_enter(p.p_lock)
    s = p.s
    s.p_ignore = (s.p_ignore & ~b) | (b if disp == 1 else 0)
    s.p_catch = (s.p_catch & ~b) | (b if disp == 2 else 0)
    if disp == 1:
        s.p_sig &= ~b  # setting SIG_IGN discards a pending signal
    mutex_exit(p.p_lock)
    return 0, 0, 0


def sys_sigmask(K: Kernel, t: KThread, p: Proc, sig: int, on: int) -> Result:
    """Block or unblock ``sig`` for the calling lwp (t_hold); SIGKILL cannot be."""
    if not 0 < sig < NSIG or sig in (SIGKILL, SIGSTOP):
        return EINVAL, 0, 0
    lw = K.lwps[t.slot]
    mutex_enter(p.p_lock)
    if on:
        lw.t_hold |= sigbit(sig)
    else:
        lw.t_hold &= ~sigbit(sig)
        if (p.s.p_sig | lw.t_sig) & sigbit(sig):
            t.s.t_sig_check = 1  # deliver it on the way out
    mutex_exit(p.p_lock)
    return 0, 0, 0


def sys_setuid(K: Kernel, t: KThread, p: Proc, uid: int, a1: int) -> Result:
    """Change real and effective uid, moving the per-user process count."""
    if uid < 0:
        return EINVAL, 0, 0
    s = p.s
    old = K.creds.slots[s.p_cred - 1]
    if old.cr_uid != 0 and uid != old.cr_ruid:
        return EPERM, 0, 0
    new = cred_create(K, uid, old.cr_zone, privileged=uid == 0)
    mutex_enter(K.pidlock)
    upcount_inc(K, uid, old.cr_zone)
    upcount_dec(K, old.cr_ruid, old.cr_zone)
    mutex_enter(p.p_lock)
    prev, s.p_cred = s.p_cred, new
    mutex_exit(p.p_lock)
    mutex_exit(K.pidlock)
    crfree(K, prev)
    return 0, 0, 0


# -- /proc control ----------------------------------------------------------------------------


def sys_prlock(K: Kernel, t: KThread, p: Proc, pid: int, ms: int) -> Result:
    """Hold P_PR_LOCK on ``pid`` for ``ms`` milliseconds.

    The controller works through the /proc file it opens here (``p_prfile``;
    the processes it forks afterwards inherit it): the file's ``f_tlock`` is
    held while it waits for and takes the target's P_PR_LOCK.  So nobody may
    take ``f_tlock`` while holding P_PR_LOCK, or the two deadlock (6533743:
    fork_fail's ``fcnt_add``)."""
    from .clock import delay

    if ms < 0:
        return EINVAL, 0, 0
    p.s.p_prfile = 1
    mutex_enter(K.f_tlock)
    q = sprlock(K, pid)
    mutex_exit(K.f_tlock)
    if q is None:
        return ESRCH, 0, 0
    mutex_exit(q.p_lock)
    delay(K, ms)
    mutex_enter(q.p_lock)
    prunlock(K, q)
    return 0, 0, 0


def sys_pragent(K: Kernel, t: KThread, p: Proc, pid: int, a1: int) -> Result:
    """Create the agent lwp in ``pid`` and let it try fork1; its errno."""
    from ..sync.condvar import cv_wait

    q = sprlock(K, pid)
    if q is None:
        return ESRCH, 0, 0
    s = q.s
    if s.p_agenttp or s.p_flag & (SKILLED | SEXITING | SVFWAIT):
        prunlock(K, q)
        return EBUSY, 0, 0
    mutex_exit(q.p_lock)
    at = lwp_create(K, q, name="agent")
    mutex_enter(q.p_lock)
    if at is None:
        prunlock(K, q)
        return EAGAIN, 0, 0
    alw = K.lwps[at.slot]
    alw.pc = -1  # the agent runs the kernel's agent routine, not user code
    alw.t_proc_flag &= ~0x2
    s.p_agenttp = at.id
    s.p_agent_done = 0
    prunlock(K, q)
    start_lwp(K, at)
    mutex_enter(q.p_lock)
    lwp_create_done(K, at, q)
    while not s.p_agent_done and s.p_pid == pid:
        cv_wait(q.p_lwpexit, q.p_lock, patient=True)
    err = s.p_agent_errno
    mutex_exit(q.p_lock)
    return 0, err, 0


def agent_main(K: Kernel, t: KThread) -> None:
    """The agent lwp's work: attempt fork1 (which refuses it), report, exit."""
    from ..sync.condvar import cv_broadcast

    p = curproc_t(K, t)
    err, _rv1, _rv2 = fork1(K, t)
    mutex_enter(p.p_lock)
    p.s.p_agent_errno = err
    p.s.p_agent_done = 1
    cv_broadcast(p.p_lwpexit)
    K.lwps[t.slot].t_proc_flag &= ~TP_TWAIT
    lwp_exit(K, t, p)


def _prset(K: Kernel, pid: int, flags: int, on: int) -> int:
    q = sprlock(K, pid)
    if q is None:
        return ESRCH
    if on:
        q.s.p_proc_flag |= flags
    else:
        q.s.p_proc_flag &= ~flags
    prunlock(K, q)
    return 0


def sys_prfork(K: Kernel, t: KThread, p: Proc, pid: int, on: int) -> Result:
    return _prset(K, pid, P_PR_FORK | P_PR_TRACE, on), 0, 0


def sys_prstopfork(K: Kernel, t: KThread, p: Proc, pid: int, on: int) -> Result:
    return _prset(K, pid, P_PR_STOPFORK | P_PR_TRACE, on), 0, 0


def sys_prrun(K: Kernel, t: KThread, p: Proc, pid: int, a1: int) -> Result:
    """Set running the lwps of ``pid`` that /proc stopped."""
    q = sprlock(K, pid)
    if q is None:
        return ESRCH, 0, 0
    n = pr_setrun(K, q)
    prunlock(K, q)
    return 0, n, 0


# -- DTrace and shared memory (realfork.kernel.dtrace) -------------------------------------


def sys_dtrace_helper(K: Kernel, t: KThread, p: Proc, a0: int, a1: int) -> Result:
    from .dtrace import dtrace_helper

    return dtrace_helper(K, p)


def sys_usdt_enable(K: Kernel, t: KThread, p: Proc, pid: int, on: int) -> Result:
    from .dtrace import usdt_enable

    return usdt_enable(K, pid, on)


def sys_shmat(K: Kernel, t: KThread, p: Proc, a0: int, a1: int) -> Result:
    from .dtrace import shmat

    return shmat(K, p)


from .zone import sys_coreadm, sys_zone_create  # noqa: E402, F401  (HANDLERS finds them)

HANDLERS: dict[int, Callable[..., Result]] = {
    SYSNUM[name]: globals()[f"sys_{name}"] for name in SYSCALLS}
