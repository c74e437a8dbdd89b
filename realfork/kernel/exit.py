"""``os/exit.c``: exit, proc_exit, sigcld, waitid and freeproc.

A zombie keeps its pid, its /proc slot, its place in ``nproc`` and its
upcount until its parent reaps it; the task hold and the pool reference go
at exit.  Orphans go to init; init's own zombie children are reaped by the
run's supervisor.

The first line of each docstring says which locks the caller must hold and
which are held on return.  Lock order as in fork.py: pidlock before any
p_lock, so proc_exit drops p_lock before each section that needs pidlock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..sync.condvar import cv_broadcast
from ..sync.kthread import KThread
from ..sync.mutex import MUTEX_HELD, mutex_enter, mutex_exit
from .clock import lwp_cpu_used
from .detect import proc_link
from .errno_defs import ECHILD, EINTR
from .lwpdir import dir_free, lwp_hash_out
from .pid import pid_exit, upcount_dec
from .proc import Proc
from .procfs import prbarrier
from .resources import (
    VN_RELE,
    contract_process_exit,
    corectl_rele,
    crfree,
    crgetruid,
    crgetzoneid,
    fcnt_add,
    lwp_count_release,
    pool_barrier_enter,
    pool_barrier_exit,
    pool_ref_add,
    rctl_set_free,
    task_detach,
    task_rele,
)
from .sig import DEFAULT_IGNORE, SIGMASK_ALL, kcv_wait_sig, sigbit
from .signal_defs import SIGCHLD
from .structs import (
    CLD_EXITED,
    CLD_KILLED,
    LWP_ZOMB,
    NIL,
    P_PR_LOCK,
    PEXITED,
    SEXITING,
    SNOWAIT,
    SZOMB,
    TP_LWPEXIT,
)

if TYPE_CHECKING:
    from .kernel import Kernel


def wstat(why: int, what: int) -> int:
    """Takes no locks.  The status a parent's ``wait`` sees: the exit code,
    or 128 + signal."""
    return what & 0xFF if why == CLD_EXITED else 128 + what


def exit_proc(K: Kernel, t: KThread, p: Proc, why: int, what: int) -> None:
    """Called with no locks held; never returns.  ``exit()``: end the
    process; the caller's lwp ends with it.  If another lwp is already
    exiting the process, only the caller's lwp ends."""
    from .lwp import LwpExit, lwp_exit

    if proc_exit(K, t, p, why, what):
        mutex_enter(p.p_lock)
        lwp_exit(K, t, p)
    raise LwpExit()


def proc_exit(K: Kernel, t: KThread, p: Proc, why: int, what: int) -> int:
    """Called with no locks held; returns with none held.  Turn the process
    into a zombie: 0, or 1 if another lwp is already exiting it (the caller
    then ends only its own lwp)."""
    from .fork import relvm
    from .lwp import exitlwps

    s = p.s
    lw = K.lwps[t.slot]
    # 1. Mark the process exiting (SEXITING, after /proc lets go), then make
    # the caller its only lwp; if another lwp is already doing that, let it.
    mutex_enter(p.p_lock)
    prbarrier(K, p)
    s.p_flag |= SEXITING
    mutex_exit(p.p_lock)
    if exitlwps(K, t, p):
        return 1
    # 2.-4. Under p_lock, inside the pool barrier: ignore every signal, drop
    # the pending ones, and take the last lwp off the directory and p_tlist.
    mutex_enter(p.p_lock)
    pool_barrier_enter(K, p)
    prbarrier(K, p)
    s.p_ignore = SIGMASK_ALL
    s.p_sig = 0
    lw.t_sig = 0
    lw.t_proc_flag |= TP_LWPEXIT
    lwp_hash_out(K, p, lw.t_tid)
    s.p_lwpcnt = 0
    s.p_lwprcnt = 0
    s.p_tlist = NIL
    cv_broadcast(p.pr_pid_cv)  # prexit
    # Everything released after the proc becomes a zombie is read now: once
    # pidlock is dropped in step 10, the parent may reap the zombie and the
    # slot be reused, and the vnodes read from it then would be another
    # process's.
    exec_vp, execdir_vp = s.p_exec, s.p_execdir
    cdir_vp, rdir_vp = s.u_cdir, s.u_rdir
    s.p_exec = s.p_execdir = s.u_cdir = s.u_rdir = NIL
    mutex_exit(p.p_lock)
    # 5. Close the files.
    fcnt_add(K, p, -s.p_fcnt)
    s.p_fcnt = 0
    # 6. Give up the address space; a vfork child hands it back to its
    # parent and wakes it here (relvm).
    relvm(K, t, p)
    # 7. Leave the process contract.
    contract_process_exit(K, p)
    # 8. Leave the pool (and the pool barrier), under p_lock.
    mutex_enter(p.p_lock)
    pool_ref_add(K, s.p_pool, -1)
    s.p_pool = K.g.pool_default
    s.p_poolflag |= PEXITED
    pool_barrier_exit(K, p)
    mutex_exit(p.p_lock)
    # 9. Under pidlock: orphans to the next of kin, children to init.
    mutex_enter(K.pidlock)
    init = K.g.proc_init
    if p.id != init:
        _give_away_children(K, p, init)
    # 10. Become a zombie, under pidlock and then p_lock: free the rctl set,
    # release the lwp count, leave the task (becoming a false member of
    # task0) and detach the directory; then tell the parent (sigcld).
    mutex_enter(p.p_lock)
    s.p_stat = SZOMB
    s.p_wcode, s.p_wdata = why, what
    s.p_exitstat = wstat(why, what)
    rctl_set_free(K, s.p_rctls)
    s.p_rctls = NIL
    lwp_count_release(K, s.p_task, s.p_zone)
    old_task = task_detach(K, p)
    s.p_task = K.g.task0  # a false member of task0
    d = s.p_lwpdir
    s.p_lwpdir = NIL
    s.p_lwpdir_sz = s.p_tidhash_sz = 0
    s.p_lwpfree = -1
    lw.t_kstate = LWP_ZOMB
    mutex_exit(p.p_lock)
    K.count("nexit")
    K.fire("proc:::exit", s.p_pid, lw.t_tid, why, what)
    K.fire("proc:::lwp-exit", s.p_pid, lw.t_tid, *lwp_cpu_used(lw))
    sigcld(K, p)
    if p.id == init:
        K.g.init_exited = 1
        K.g.init_status = s.p_exitstat
        cv_broadcast(K.run_cv)
    mutex_exit(K.pidlock)
    # 11. Release the rest without locks.  ``p`` may already be reaped:
    # touch only what was saved above.
    task_rele(K, old_task)
    dir_free(K, d)
    VN_RELE(K, cdir_vp)
    VN_RELE(K, rdir_vp)
    VN_RELE(K, exec_vp)
    VN_RELE(K, execdir_vp)
    lw.t_procp = NIL
    return 0


def _give_away_children(K: Kernel, p: Proc, init: int) -> None:
    """Caller holds pidlock.  Orphans to the next of kin, children to init."""
    s = p.s
    # Orphans: splice the whole chain onto the next of kin's.
    if s.p_orphan:
        nok = K.proc(s.p_nextofkin) if s.p_nextofkin else None
        q = s.p_orphan
        last = NIL
        while q:
            qs = proc_link(K, q, p, "p_nextorph").s
            qs.p_nextofkin = nok.id if nok else NIL
            last = q
            q = qs.p_nextorph
        if nok is not None:
            K.proc(last).s.p_nextorph = nok.s.p_orphan
            nok.s.p_orphan = s.p_orphan
        s.p_orphan = NIL
    # Children: reparent to init; a zombie among them is announced to init.
    if not init:
        return
    ip = K.proc(init)
    c = s.p_child
    while c:
        cs = proc_link(K, c, p, "p_sibling").s
        nxt = cs.p_sibling
        _delete_ns(K, p, K.proc(c))
        cs.p_ppid = ip.s.p_pid
        cs.p_parent = init
        cs.p_psibling = NIL
        cs.p_sibling = ip.s.p_child
        if ip.s.p_child:
            K.proc(ip.s.p_child).s.p_psibling = c
        ip.s.p_child = c
        if cs.p_stat == SZOMB:
            sigcld(K, K.proc(c))
        c = nxt
    s.p_child = NIL


def _delete_ns(K: Kernel, pp: Proc, cp: Proc) -> None:
    """Caller holds pidlock.  Take ``cp`` off ``pp``'s list of children
    whose state changed."""
    prev = NIL
    q = pp.s.p_child_ns
    while q and q != cp.id:
        prev, q = q, K.proc(q).s.p_sibling_ns
    if q:
        if prev:
            K.proc(prev).s.p_sibling_ns = cp.s.p_sibling_ns
        else:
            pp.s.p_child_ns = cp.s.p_sibling_ns
    cp.s.p_sibling_ns = NIL


def sigcld(K: Kernel, cp: Proc) -> None:
    """Caller holds pidlock (asserted); takes the parent's p_lock to post
    SIGCHLD.  Tell the parent a child exited: wake its waiters, or reap the
    child at once if the parent does not want to wait."""
    assert MUTEX_HELD(K.pidlock)
    pp = K.proc(cp.s.p_parent)
    ps = pp.s
    # add_ns: onto the parent's list of children whose state changed
    cp.s.p_sibling_ns = ps.p_child_ns
    ps.p_child_ns = cp.id
    cv_broadcast(pp.p_cv)
    ignores = ps.p_ignore & sigbit(SIGCHLD) or ps.p_flag & SNOWAIT
    if ignores and pp.id != K.g.proc_init:
        freeproc(K, cp)
        return
    if ps.p_catch & sigbit(SIGCHLD) and not (DEFAULT_IGNORE & ~ps.p_catch & sigbit(SIGCHLD)):
        from .sig import sigtoproc

        mutex_enter(pp.p_lock)
        sigtoproc(K, pp, SIGCHLD)
        mutex_exit(pp.p_lock)


def freeproc(K: Kernel, p: Proc) -> None:
    """Caller holds pidlock (asserted); takes p->p_lock while /proc lets go.
    Free a zombie."""
    assert MUTEX_HELD(K.pidlock)
    s = p.s
    assert s.p_stat == SZOMB
    # prfree: wait for /proc to let go, pidlock held.  A /proc controller
    # may still hold the zombie with P_PR_LOCK; freeing the slot under it
    # would leave the controller holding a reused proc.  The wait is on
    # pr_pid_cv under p_lock (pidlock -> p_lock, the declared order); the
    # release of P_PR_LOCK signals it.
    mutex_enter(p.p_lock)
    if s.p_proc_flag & P_PR_LOCK:
        from ..sync.condvar import cv_signal, cv_wait

        while s.p_proc_flag & P_PR_LOCK:
            cv_wait(p.pr_pid_cv, p.p_lock, patient=True, waker=s.p_prowner)
        cv_signal(p.pr_pid_cv)  # sprunlock wakes one: pass it on to any other waiter
    mutex_exit(p.p_lock)
    upcount_dec(K, crgetruid(K, s.p_cred), crgetzoneid(K, s.p_cred))
    crfree(K, s.p_cred)
    s.p_cred = NIL
    corectl_rele(K, p)
    # Off the next of kin's orphan chain.
    if s.p_nextofkin:
        nok = K.proc(s.p_nextofkin)
        if nok.s.p_orphan == p.id:
            nok.s.p_orphan = s.p_nextorph
        else:
            q = nok.s.p_orphan
            while q and K.proc(q).s.p_nextorph != p.id:
                q = K.proc(q).s.p_nextorph
            if q:
                K.proc(q).s.p_nextorph = s.p_nextorph
    # proc_detach: off the parent's lists.
    if s.p_parent:
        pp = K.proc(s.p_parent)
        _delete_ns(K, pp, p)
        if pp.s.p_child == p.id:
            pp.s.p_child = s.p_sibling
        if s.p_sibling:
            K.proc(s.p_sibling).s.p_psibling = s.p_psibling
        if s.p_psibling:
            K.proc(s.p_psibling).s.p_sibling = s.p_sibling
    s.p_parent = s.p_sibling = s.p_psibling = s.p_nextorph = s.p_nextofkin = NIL
    pid_exit(K, p)


def waitid(K: Kernel, t: KThread, pid: int) -> tuple[int, int, int]:
    """Called with no locks held; returns with none held (sleeps on p_cv
    under pidlock).  Reap a zombie child (any when ``pid`` <= 0): (errno,
    pid, status)."""
    pp = K.proc(K.lwps[t.slot].t_procp)
    ps = pp.s
    mutex_enter(K.pidlock)
    while True:
        if not ps.p_child:
            mutex_exit(K.pidlock)
            return ECHILD, 0, 0
        q = ps.p_child_ns
        while q:
            cs = K.proc(q).s
            if pid <= 0 or cs.p_pid == pid:
                cpid, status = cs.p_pid, cs.p_exitstat
                freeproc(K, K.proc(q))
                mutex_exit(K.pidlock)
                return 0, cpid, status
            q = cs.p_sibling_ns
        if pid > 0:  # is there such a child at all?
            c = ps.p_child
            while c and proc_link(K, c, pp, "p_sibling").s.p_pid != pid:
                c = K.proc(c).s.p_sibling
            if not c:
                mutex_exit(K.pidlock)
                return ECHILD, 0, 0
        if not kcv_wait_sig(K, pp.p_cv, K.pidlock):
            mutex_exit(K.pidlock)
            return EINTR, 0, 0


__all__ = ["CLD_EXITED", "CLD_KILLED", "SEXITING", "exit_proc", "freeproc", "proc_exit",
           "sigcld", "waitid", "wstat"]
