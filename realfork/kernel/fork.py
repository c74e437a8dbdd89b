"""``os/fork.c``: forkall, fork1, vfork, cfork, getproc, fork_fail,
forklwp, forklwp_fail, newproc, relvm and vfwait.

Step numbers in comments follow docs/kernel.md, "cfork, step by step" (and
illumos's own order).  Lock order throughout: pidlock -> p_lock; a child's
p_lock before its parent's (relvm, vfwait); P_PR_LOCK is a sleeping lock
waited for under p_lock.  Each function returns an errno (0 on success)
and, for the system calls, the two return values.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..sync.condvar import cv_broadcast, cv_signal, cv_wait
from ..sync.kthread import KThread
from ..sync.mutex import MUTEX_HELD, mutex_enter, mutex_enter_nested, mutex_exit
from ..sync.rwlock import RW_WRITER, rw_enter, rw_exit
from .clock import delay
from .detect import assert_held, forklwp_source_check, proc_link
from .errno_defs import EAGAIN, EINTR, ENOMEM, ENOTSUP, EPERM
from .lwp import continuelwps, holdlwps, lwp_create, lwp_create_done, start_lwp
from .lwpdir import dir_alloc, dir_entries, dir_free, dir_install, lwp_hash_in
from .pid import (
    pid_assign,
    pid_exit,
    pid_rele,
    proc_entry_free,
    upcount_dec,
    upcount_get,
    upcount_inc,
)
from .proc import Proc
from .procfs import prbarrier, sprlock_proc, sprunlock
from .resources import (
    VN_HOLD,
    VN_RELE,
    contract_process_fork,
    corectl_hold,
    crfree,
    crgetruid,
    crgetzoneid,
    crhold,
    fcnt_add,
    lwp_count_release,
    pool_barrier_enter,
    pool_barrier_exit,
    pool_ref_add,
    rctl_set_create,
    rctl_set_dup,
    rctl_set_dup_prealloc,
    rctl_set_dup_ready,
    rctl_set_free,
    secpolicy_basic_fork,
    secpolicy_newproc,
    task_attach,
    task_detach,
    task_rele,
)
from .session import pgjoin, sess_hold
from .sig import aston, sigdefault
from .structs import (
    NIL,
    P_PR_ASYNC,
    P_PR_FORK,
    P_PR_LOCK,
    P_PR_STOPFORK,
    P_PR_TRACE,
    SFORKING,
    SHOLDFORK,
    SHOLDFORK1,
    SJCTL,
    SLWPWRAP,
    SMSACCT,
    SMSFORK,
    SNOCD,
    SNOWAIT,
    SRUN,
    SSYS,
    SVFORK,
    SVFWAIT,
    T_FORKALL,
    T_VFPARENT,
    TP_DAEMON,
    TP_HOLDLWP,
    TP_PRSTOP,
    TP_TWAIT,
    TS_CREATE,
    ZONE_IS_SHUTTING_DOWN,
)

if TYPE_CHECKING:
    from .kernel import Kernel
    from .structs import klwp_t

Result = tuple[int, int, int]  # (errno, rval1, rval2)


def curproc_of(K: Kernel, t: KThread) -> Proc:
    return K.proc(K.lwps[t.slot].t_procp)


# -- the system calls ----------------------------------------------------------------


def forkall(K: Kernel, t: KThread) -> Result:
    return cfork(K, t, isvfork=False, isfork1=False)


def fork1(K: Kernel, t: KThread) -> Result:
    return cfork(K, t, isvfork=False, isfork1=True)


def vfork(K: Kernel, t: KThread) -> Result:
    K.lwps[t.slot].t_post_sys = 1  # post_syscall must run: it calls vfwait
    return cfork(K, t, isvfork=True, isfork1=True)


# Which lwp calls vfwait: the 2006 code asked "is this the vfork system call
# returning (pid, 0)?", which a forkall clone of an lwp on its way out of vfork
# also answers yes to.  As illumos has since 6533431, the vforking thread is
# marked T_VFPARENT in cfork and the mark is cleared after vfwait; clones do
# not inherit it.


def _fork_fail_probe(K: Kernel, p: Proc, lwpid: int, err: int, site: str) -> None:
    from .faults import SITE_INDEX

    K.count("fork_fail")
    K.fire("proc:::fork-fail", p.s.p_pid, lwpid, err, SITE_INDEX.get(site, -1))


def cfork(K: Kernel, t: KThread, isvfork: bool, isfork1: bool) -> Result:
    p = curproc_of(K, t)
    s = p.s
    lw = K.lwps[t.slot]
    # 1. the /proc agent lwp may not fork
    if s.p_agenttp == t.id:
        return ENOTSUP, 0, 0
    # 2. PRIV_PROC_FORK
    if not secpolicy_basic_fork(K, s.p_cred):
        return EPERM, 0, 0
    # 3. hold every other lwp
    if K.faults.should_fail("holdlwps") or \
            not holdlwps(K, t, p, SHOLDFORK1 if isfork1 else SHOLDFORK):
        aston(t)
        _fork_fail_probe(K, p, lw.t_tid, EINTR, "holdlwps")
        return EINTR, 0, 0
    # 5. vfork clears the caller's TP_HOLDLWP (6339942), under p_lock (6361360)
    if isvfork and K.bug("vfork_keeps_holdlwp"):
        mutex_enter(p.p_lock)
    elif isvfork and K.bug("holdlwp_cleared_unlocked"):
        _clear_holdlwp(K, p, lw)
        mutex_enter(p.p_lock)
    else:
        mutex_enter(p.p_lock)
        if isvfork:
            _clear_holdlwp(K, p, lw)
    pool_barrier_enter(K, p)
    mutex_exit(p.p_lock)
    # 6. the new proc
    cp, site = getproc(K, t, p, kernel=False)
    if cp is None:
        mutex_enter(p.p_lock)
        pool_barrier_exit(K, p)
        if not K.bug("getproc_fail_skips_continuelwps"):
            continuelwps(K, p)
        mutex_exit(p.p_lock)
        _fork_fail_probe(K, p, lw.t_tid, EAGAIN, site)
        return EAGAIN, 0, 0
    cs = cp.s
    # 7. the address space
    if isvfork:
        a = K.ases.slots[s.p_as - 1]
        if a.a_wpage:  # stash the watched pages while the child borrows the as
            lk = K.a_lock(s.p_as)
            rw_enter(lk, RW_WRITER)
            s.p_wpage, a.a_wpage = a.a_wpage, 0
            rw_exit(lk)
        cs.p_as = s.p_as
        a.a_nprocs += 1
        cs.p_flag |= SVFORK
    else:
        from .vm import as_dup

        mutex_enter(p.p_lock)
        sprlock_proc(K, p)
        s.p_flag |= SFORKING
        mutex_exit(p.p_lock)
        err, new_as = as_dup(K, s.p_as)
        if err:
            return _as_dup_failed(K, t, p, cp, err)
        cs.p_as = new_as
        mutex_enter(p.p_lock)
        s.p_flag &= ~SFORKING
        sprunlock(K, p)
    # 8. resource controls: preallocate, then duplicate under rcs_lock
    dup = rctl_set_create(K)
    if not dup:
        return _forklwperr(K, t, p, cp, isvfork, "rctl_dup")
    while True:
        need = rctl_set_dup_prealloc(K, s.p_rctls)
        lk = K.rcs_lock(s.p_rctls)
        mutex_enter(lk)
        if rctl_set_dup_ready(K, s.p_rctls, need) and not K.faults.should_fail("rctl_dup"):
            break  # still holding rcs_lock
        mutex_exit(lk)
    cs.p_rctls = rctl_set_dup(K, s.p_rctls, dup)
    mutex_exit(lk)
    # 9. the lwp directory: 2 entries for fork1/vfork, the parent's size for forkall
    dirsz = 2 if isfork1 else s.p_lwpdir_sz
    d = dir_alloc(K, dirsz)
    if not d:
        return _forklwperr(K, t, p, cp, isvfork, "forklwp")
    dir_install(K, cp, d, dirsz)
    # 10. duplicate lwps (no lock needed: the parent is held, the child private)
    clone: KThread | None = None
    if isfork1:
        clone = forklwp(K, t, cp, lw.t_tid, forkall=False)
        if clone is None:
            return _forklwperr(K, t, p, cp, isvfork, "forklwp")
    else:
        assert s.p_lwpwait == 0  # lwp_wait callers were forced out with EINTR
        for _i, lwpid, tid, start in dir_entries(K, p):
            if tid:
                src = K.thread(tid)
                ct = forklwp(K, src, cp, lwpid, forkall=True)
                if ct is None:
                    return _forklwperr(K, t, p, cp, isvfork, "forklwp")
                if tid == t.id:
                    clone = ct
                else:
                    K.lwps[ct.slot].t_flag |= T_FORKALL
            else:  # a zombie lwp keeps its id and start time in the child
                lwp_hash_in(K, cp, lwpid, 0, start)
    assert clone is not None
    # 11. the process contract: the last point at which fork can fail
    if K.faults.should_fail("contract_process_fork") or \
            not contract_process_fork(K, NIL, cp, p, True):
        return _forklwperr(K, t, p, cp, isvfork, "contract_process_fork")
    # the child's lwps get their OS threads now; they wait, stopped, for step 17
    for ct in cp.threads():
        start_lwp(K, ct)
    # 12.
    cs.p_lwpid = s.p_lwpid
    if not isfork1:
        cs.p_lwpdaemon = s.p_lwpdaemon
        cs.p_zombcnt = s.p_zombcnt
        cs.p_flag |= s.p_flag & SLWPWRAP
    # 13. corectl references, under the parent's p_lock (6446530)
    mutex_enter(p.p_lock)
    corectl_hold(K, cp)
    mutex_exit(p.p_lock)
    # 14. /proc: stop on exit from fork
    if cs.p_proc_flag & P_PR_STOPFORK:
        for ct in cp.threads():
            K.lwps[ct.slot].t_proc_flag |= TP_PRSTOP
            aston(ct)
    if s.p_proc_flag & P_PR_STOPFORK and not s.p_proc_flag & P_PR_ASYNC:
        mutex_enter(p.p_lock)
        for pt in p.threads():
            K.lwps[pt.slot].t_proc_flag |= TP_PRSTOP
            aston(pt)
        mutex_exit(p.p_lock)
    # 15. the clone returns (parent pid, 1)
    clw = K.lwps[clone.slot]
    clw.lwp_rval1, clw.lwp_rval2, clw.lwp_errno = s.p_pid, 1, 0
    # 16.
    mutex_enter(p.p_lock)
    pool_barrier_exit(K, p)
    mutex_exit(p.p_lock)
    # 17. publish the child
    mutex_enter(K.pidlock)
    mutex_enter(cp.p_lock)
    pgjoin(K, cp, s.p_pgrp)
    cs.p_stat = SRUN
    for ct in cp.threads():
        ctl = K.lwps[ct.slot]
        if ctl.t_proc_flag & TP_HOLDLWP:
            lwp_create_done(K, ct, cp)
        else:
            ctl.t_schedflag |= TS_CREATE
    mutex_exit(cp.p_lock)
    if isvfork:
        K.g.sysvfork += 1
    elif isfork1:
        K.g.sysfork += 1
    else:
        K.g.sysforkall += 1
    K.fire("proc:::create", cs.p_pid, K.lwps[clone.slot].t_tid, s.p_pid,
           2 if isvfork else (1 if isfork1 else 0), cs.p_lwpcnt)
    # 18. completion, pidlock held
    if isvfork:
        mutex_enter(p.p_lock)
        s.p_flag |= SVFWAIT
        lw.t_flag |= T_VFPARENT
        cv_broadcast(p.pr_pid_cv)  # /proc waiters: SVFWAIT counts as stopped
        mutex_exit(p.p_lock)
        mutex_enter(cp.p_lock)
        mutex_exit(K.pidlock)
        sigdefault(K, cp)
        continuelwps(K, cp)
        mutex_exit(cp.p_lock)
        # The parent's other lwps stay held until the end of vfwait.
    elif K.bug("pidlock_dropped_before_forkret"):
        mutex_exit(K.pidlock)
        CL_FORKRET(K, t, p, cp)
    else:
        CL_FORKRET(K, t, p, cp)
        assert not MUTEX_HELD(K.pidlock)
    # 19.
    return 0, cs.p_pid, 0


def _clear_holdlwp(K: Kernel, p: Proc, lw: klwp_t) -> None:
    """vfork clears the caller's TP_HOLDLWP; t_proc_flag is under p_lock."""
    assert_held(K, p.p_lock, f"t_proc_flag of pid {p.s.p_pid} lwp {lw.t_tid} changed")
    lw.t_proc_flag &= ~TP_HOLDLWP


def CL_FORKRET(K: Kernel, t: KThread, p: Proc, cp: Proc) -> None:
    """The timesharing class's fork return: start the child, release the
    parent's held lwps, and give the CPU away (child first, by intent).
    Entered with pidlock held (ts_forkret asserts it), which it drops."""
    assert_held(K, K.pidlock, "CL_FORKRET entered")
    mutex_enter(cp.p_lock)
    mutex_exit(K.pidlock)  # the child cannot vanish: we hold its p_lock
    continuelwps(K, cp)
    mutex_exit(cp.p_lock)
    mutex_enter(p.p_lock)
    continuelwps(K, p)
    mutex_exit(p.p_lock)
    time.sleep(0)  # swtch(): let the child run first


# -- getproc -----------------------------------------------------------------------------


def getproc(K: Kernel, t: KThread, pp: Proc, kernel: bool,
            fixed_pid: int | None = None) -> tuple[Proc | None, str]:
    """Allocate and initialise a child of ``pp`` in SIDL; (None, fault site) on failure."""
    ps = pp.s
    g = K.g
    zone = K.zones.slots[ps.p_zone - 1]
    # 1. memory and zone checks fail at once, without the punishment delay
    if K.faults.should_fail("getproc.memory"):
        return None, "getproc.memory"
    if zone.zone_status >= ZONE_IS_SHUTTING_DOWN or K.faults.should_fail("getproc.zone"):
        return None, "getproc.zone"
    # 2.-3. a pid and a /proc slot
    cp = None if K.faults.should_fail("pid_assign") else pid_assign(
        K, fixed_pid, zone=0 if K.bug("zone_set_late") else ps.p_zone)
    if cp is None:
        mutex_enter(K.pidlock)
        if g.nproc == g.v_proc:
            g.procovf += 1
        mutex_exit(K.pidlock)
        _punish(K)
        return None, "pid_assign"
    cs = cp.s
    cs.p_start_ns = time.monotonic_ns()
    # 4. the per-user limit (nproc read before it is incremented)
    mutex_enter(K.pidlock)
    cr = ps.p_cred
    ruid, zoneid = crgetruid(K, cr), crgetzoneid(K, cr)
    if K.faults.should_fail("getproc.maxup") or (
            g.nproc >= g.v_maxup
            and (g.nproc >= g.v_maxupttl or upcount_get(K, ruid, zoneid) >= g.v_maxup)
            and not secpolicy_newproc(K, cr)):
        mutex_exit(K.pidlock)
        pid = cs.p_pid
        cs.p_stat = 0
        proc_entry_free(K, cp)
        pid_rele(K, pid)
        _punish(K)
        return None, "getproc.maxup"
    # 5. count it and put it on practive
    g.nproc += 1
    upcount_inc(K, ruid, zoneid)
    cs.p_next = g.practive
    if g.practive:
        K.proc(g.practive).s.p_prev = cp.id
    g.practive = cp.id
    # 6. inherited state
    cs.p_ignore = ps.p_ignore
    cs.p_catch = ps.p_catch
    cs.p_flag |= ps.p_flag & (SJCTL | SNOWAIT | SNOCD)
    if ps.p_pgrp:
        cs.p_sessp = K.pgrps.slots[ps.p_pgrp - 1].pg_sess
        sess_hold(K, cs.p_sessp)
        cs.p_sid = ps.p_sid
    cs.p_exec, cs.p_execdir = ps.p_exec, ps.p_execdir
    cs.p_prfile = ps.p_prfile  # the open /proc file is inherited
    cs.p_zone = ps.p_zone
    cs.p_brksize, cs.p_stksize = ps.p_brksize, ps.p_stksize
    cs.p_ppid = cs.p_ancpid = ps.p_pid
    # 7. family links
    cs.p_sibling = ps.p_child
    if ps.p_child:
        proc_link(K, ps.p_child, pp, "p_child").s.p_psibling = cp.id
    if ps.p_orphan:
        proc_link(K, ps.p_orphan, pp, "p_orphan")
    cs.p_parent = pp.id
    ps.p_child = cp.id
    cs.p_child_ns = cs.p_sibling_ns = NIL
    cs.p_nextorph = ps.p_orphan
    cs.p_nextofkin = pp.id
    ps.p_orphan = cp.id
    # 9. the pool, under the parent's p_lock
    mutex_enter(pp.p_lock)
    if kernel:
        cs.p_pool = g.pool_default
        cs.p_flag |= SSYS
    else:
        cs.p_pool = ps.p_pool
    pool_ref_add(K, cs.p_pool, 1)
    mutex_exit(pp.p_lock)
    # 10. the task, under the child's p_lock
    mutex_enter(cp.p_lock)
    task_attach(K, g.task0 if kernel else ps.p_task, cp)
    mutex_exit(cp.p_lock)
    mutex_exit(K.pidlock)
    # 11. without global locks: credentials, files, directories
    cs.p_cred = cr
    crhold(K, cr)
    fcnt_add(K, cp, 1)
    cs.p_fcnt = 1
    cs.u_cdir, cs.u_rdir = ps.u_cdir, ps.u_rdir
    VN_HOLD(K, cs.u_cdir)
    VN_HOLD(K, cs.u_rdir)
    # 12. /proc inheritance
    if ps.p_proc_flag & P_PR_FORK:
        cs.p_proc_flag |= ps.p_proc_flag & (P_PR_TRACE | P_PR_FORK | P_PR_STOPFORK)
        cs.p_sigmask = ps.p_sigmask
    # 13.
    cs.p_flag |= ps.p_flag & (SMSFORK | SMSACCT) if ps.p_flag & SMSFORK else 0
    VN_HOLD(K, cs.p_exec)
    VN_HOLD(K, cs.p_execdir)
    return cp, ""


def _punish(K: Kernel) -> None:
    """Slow down a failing forker: delay(fork_fail_pending / ncpus + 1) ticks."""
    mutex_enter(K.pidlock)
    K.g.fork_fail_pending += 1
    mutex_exit(K.pidlock)
    delay(K, K.g.fork_fail_pending // K.g.ncpus + 1)  # read outside the lock
    mutex_enter(K.pidlock)
    K.g.fork_fail_pending -= 1
    mutex_exit(K.pidlock)


# -- failure paths ------------------------------------------------------------------------


def fork_fail(K: Kernel, cp: Proc) -> None:
    """Undo getproc's references (without P_PR_LOCK held: 6533743)."""
    cs = cp.s
    fcnt_add(K, cp, -cs.p_fcnt)
    cs.p_fcnt = 0
    cs.p_sig = 0  # sigdelq
    if not K.bug("fork_fail_skips_upcount_dec"):
        mutex_enter(K.pidlock)
        upcount_dec(K, crgetruid(K, cs.p_cred), crgetzoneid(K, cs.p_cred))
        mutex_exit(K.pidlock)
    crfree(K, cs.p_cred)
    cs.p_cred = NIL
    VN_RELE(K, cs.u_cdir)
    VN_RELE(K, cs.u_rdir)
    VN_RELE(K, cs.p_exec)
    VN_RELE(K, cs.p_execdir)
    cs.u_cdir = cs.u_rdir = cs.p_exec = cs.p_execdir = NIL


def disown_proc(K: Kernel, pp: Proc, cp: Proc) -> None:
    """Take a failed child off its parent's orphan and child lists (pidlock)."""
    assert MUTEX_HELD(K.pidlock)
    ps, cs = pp.s, cp.s
    if ps.p_orphan == cp.id:
        ps.p_orphan = cs.p_nextorph
    else:
        q = ps.p_orphan
        while q and K.proc(q).s.p_nextorph != cp.id:
            q = K.proc(q).s.p_nextorph
        if q:
            K.proc(q).s.p_nextorph = cs.p_nextorph
    if ps.p_child == cp.id:
        ps.p_child = cs.p_sibling
    if cs.p_sibling:
        K.proc(cs.p_sibling).s.p_psibling = cs.p_psibling
    if cs.p_psibling:
        K.proc(cs.p_psibling).s.p_sibling = cs.p_sibling
    cs.p_sibling = cs.p_psibling = cs.p_nextorph = cs.p_parent = cs.p_nextofkin = NIL


def _free_failed_child(K: Kernel, pp: Proc, cp: Proc) -> None:
    """Under pidlock then cp's p_lock: task_detach, pool_ref--; disown; pid_exit."""
    mutex_enter(K.pidlock)
    mutex_enter(cp.p_lock)
    tk = task_detach(K, cp)
    pool_ref_add(K, cp.s.p_pool, -1)
    mutex_exit(cp.p_lock)
    if not K.bug("failed_child_not_disowned"):
        disown_proc(K, pp, cp)
    pid_exit(K, cp)
    mutex_exit(K.pidlock)
    task_rele(K, tk)


def _as_dup_failed(K: Kernel, t: KThread, p: Proc, cp: Proc, err: int) -> Result:
    """The as_dup failure (docs/kernel.md, "Failure paths"), with P_PR_LOCK released
    before fork_fail (the 6533743 fix)."""
    if K.bug("fork_fail_under_prlock"):
        fork_fail(K, cp)  # the seed order: file locks taken under P_PR_LOCK
        _free_failed_child(K, p, cp)
        mutex_enter(p.p_lock)
        p.s.p_flag &= ~SFORKING
        pool_barrier_exit(K, p)
        continuelwps(K, p)
        sprunlock(K, p)
    else:
        mutex_enter(p.p_lock)
        p.s.p_flag &= ~SFORKING
        sprunlock(K, p)
        fork_fail(K, cp)
        _free_failed_child(K, p, cp)
        mutex_enter(p.p_lock)
        pool_barrier_exit(K, p)
        continuelwps(K, p)
        mutex_exit(p.p_lock)
    errno = ENOMEM if err == ENOMEM else EAGAIN
    _fork_fail_probe(K, p, K.lwps[t.slot].t_tid, errno, "as_dup")
    return errno, 0, 0


def forklwp_fail(K: Kernel, cp: Proc) -> None:
    """Free the clones of a failed fork (the child is invisible: no p_lock)."""
    cs = cp.s
    for ct in cp.threads():
        lw = K.lwps[ct.slot]
        cs.p_lwpcnt -= 1
        lwp_count_release(K, cs.p_task, cs.p_zone)
        lw.t_procp = NIL
        K.dom.kthread_free(ct)
    cs.p_tlist = NIL


def _forklwperr(K: Kernel, t: KThread, p: Proc, cp: Proc, isvfork: bool, site: str) -> Result:
    """Undo a fork that failed after getproc and the address space (docs/kernel.md,
    "Failure paths": the lwp-error path)."""
    from .vm import as_free

    s, cs = p.s, cp.s
    if isvfork:
        a = K.ases.slots[s.p_as - 1]
        if s.p_wpage:  # put the stashed watched pages back at once
            lk = K.a_lock(s.p_as)
            rw_enter(lk, RW_WRITER)
            a.a_wpage, s.p_wpage = s.p_wpage, 0
            rw_exit(lk)
        a.a_nprocs -= 1
        cs.p_flag &= ~SVFORK
    else:
        as_free(K, cs.p_as)
    cs.p_as = K.g.kas
    forklwp_fail(K, cp)
    if cs.p_lwpdir:
        dir_free(K, cs.p_lwpdir)
        cs.p_lwpdir = NIL
        cs.p_lwpdir_sz = cs.p_tidhash_sz = 0
        cs.p_lwpfree = -1
    fork_fail(K, cp)
    rctl_set_free(K, cs.p_rctls)
    cs.p_rctls = NIL
    if cs.p_ct_process:
        from .resources import contract_process_exit

        contract_process_exit(K, cp)
    _free_failed_child(K, p, cp)
    mutex_enter(p.p_lock)
    pool_barrier_exit(K, p)
    continuelwps(K, p)
    mutex_exit(p.p_lock)
    _fork_fail_probe(K, p, K.lwps[t.slot].t_tid, EAGAIN, site)
    return EAGAIN, 0, 0


# -- forklwp -------------------------------------------------------------------------------


def forklwp(K: Kernel, src: KThread, cp: Proc, lwpid: int, forkall: bool) -> KThread | None:
    """Clone lwp ``src`` (the caller, or held at a hold point) into ``cp``."""
    forklwp_source_check(K, src)  # the caller, or held at a hold point
    if K.faults.should_fail("forklwp"):
        return None
    ct = lwp_create(K, cp, lwpid)
    if ct is None:
        return None
    slw, clw = K.lwps[src.slot], K.lwps[ct.slot]
    # copy the user context (the saved registers) and the syscall state
    clw.pc = slw.pc
    for i in range(len(slw.regs)):
        clw.regs[i] = slw.regs[i]
    clw.t_hold = slw.t_hold
    clw.t_sysnum = slw.t_sysnum
    clw.lwp_errno = slw.lwp_errno
    clw.lwp_rval1, clw.lwp_rval2 = slw.lwp_rval1, slw.lwp_rval2
    clw.lwp_cursig = 0
    clw.t_sig = 0
    mutex_enter(cp.p_lock)
    if not slw.t_proc_flag & TP_HOLDLWP:
        clw.t_proc_flag &= ~TP_HOLDLWP
    clw.t_proc_flag |= slw.t_proc_flag & (TP_TWAIT | (TP_DAEMON if forkall else 0))
    mutex_exit(cp.p_lock)
    return ct


# -- newproc -------------------------------------------------------------------------------


def newproc(K: Kernel, t: KThread, syscid: bool, fixed_pid: int | None = None,
            name: str = "",
            prepare: Callable[[Kernel, Proc, KThread], None] | None = None) -> Proc | None:
    """Create a kernel process (syscid) or init, with one lwp (lwpid 1) ready to run."""
    from .resources import task_create

    pp = curproc_of(K, t)
    cp, _site = getproc(K, t, pp, kernel=syscid, fixed_pid=fixed_pid)
    if cp is None:
        return None
    cs = cp.s
    if syscid:
        cs.p_flag |= SNOWAIT
        VN_RELE(K, cs.p_exec)  # released properly (the 6869037 fix)
        VN_RELE(K, cs.p_execdir)
        cs.p_exec = cs.p_execdir = NIL
    else:
        tk = task_create(K, K.tasks.slots[pp.s.p_task - 1].tk_proj, cs.p_zone)
        mutex_enter(K.pidlock)
        mutex_enter(cp.p_lock)
        old = task_detach(K, cp)
        task_attach(K, tk, cp)
        mutex_exit(cp.p_lock)
        mutex_exit(K.pidlock)
        task_rele(K, old)
        task_rele(K, tk)  # task_attach took the member's hold
    cs.p_rctls = rctl_set_create(K)
    cs.p_as = K.g.kas
    d = dir_alloc(K, 2)
    ct = None
    if d:
        dir_install(K, cp, d, 2)
        ct = lwp_create(K, cp, 1, syscid=syscid, name=name)
    if ct is None:
        fork_fail(K, cp)
        rctl_set_free(K, cs.p_rctls)
        if d:
            dir_free(K, d)
        _free_failed_child(K, pp, cp)  # the 7412 fix: disown before pid_exit
        return None
    if not syscid:
        contract_process_fork(K, K.g.sys_contract, cp, pp, False)
    if prepare is not None:
        prepare(K, cp, ct)
    cs.p_lwpid = 1
    mutex_enter(K.pidlock)
    pgjoin(K, cp, pp.s.p_pgrp)
    cs.p_stat = SRUN
    mutex_exit(K.pidlock)
    start_lwp(K, ct)
    mutex_enter(cp.p_lock)
    K.lwps[ct.slot].t_proc_flag &= ~TP_HOLDLWP
    lwp_create_done(K, ct, cp)
    mutex_exit(cp.p_lock)
    K.fire("proc:::create", cs.p_pid, 1, pp.s.p_pid, 3, 1)
    return cp


# -- vfork: relvm and vfwait ------------------------------------------------------------------


def relvm(K: Kernel, t: KThread, p: Proc) -> None:
    """Give up the address space (exit, exec); a vfork child hands it back to
    its parent and wakes it."""
    from .vm import as_free

    s = p.s
    if s.p_flag & SVFORK:
        pp = K.proc(s.p_parent)
        while True:  # try_again:
            # Two p_locks: the child's, then its parent's as lockdep subclass 1
            # (the declared order p_lock -> p_lock/1).
            if K.bug("relvm_parent_first"):
                mutex_enter_nested(pp.p_lock, 1)
                mutex_enter(p.p_lock)
            else:
                mutex_enter(p.p_lock)  # the child's lock first
                prbarrier(K, p)
                mutex_enter_nested(pp.p_lock, 1)
            if pp.s.p_proc_flag & P_PR_LOCK:
                mutex_exit(p.p_lock)
                prbarrier(K, pp)
                mutex_exit(pp.p_lock)
                continue
            break
        s.p_flag &= ~SVFORK
        a = K.ases.slots[s.p_as - 1]
        a.a_nprocs -= 1
        s.p_as = K.g.kas
        pp.s.p_brksize, pp.s.p_stksize = s.p_brksize, s.p_stksize
        if pp.s.p_wpage:
            a.a_wpage, pp.s.p_wpage = pp.s.p_wpage, 0
        K.fire("proc:::relvm", s.p_pid, K.lwps[t.slot].t_tid, pp.s.p_pid)
        if K.bug("relvm_lost_wakeup"):
            pp.s.p_flag &= ~SVFWAIT  # cleared, but nobody is told
        else:
            pp.s.p_flag &= ~SVFWAIT
            cv_signal(pp.p_cv)  # signal, not broadcast: the parent's other lwps are held
        mutex_exit(pp.p_lock)
        mutex_exit(p.p_lock)
    elif s.p_as and s.p_as != K.g.kas:
        mutex_enter(p.p_lock)
        prbarrier(K, p)
        old, s.p_as = s.p_as, K.g.kas
        mutex_exit(p.p_lock)
        K.fire("proc:::relvm", s.p_pid, K.lwps[t.slot].t_tid, 0)
        as_free(K, old)


def _vfork_released(K: Kernel, cp: Proc, pid: int) -> Callable[[], str | None]:
    """For a sleeping vfork parent: why its child no longer owes it a wake-up."""
    gen = K.procs.slots[cp.slot].slot_gen

    def check() -> str | None:
        slot = K.procs.slots[cp.slot]
        if not slot.slot_inuse or slot.slot_gen != gen or slot.p_pid != pid:
            return f"its vfork child pid {pid} is gone"
        if not slot.p_flag & SVFORK:
            return f"its vfork child pid {pid} gave the address space back without waking it"
        return None
    return check


def vfwait(K: Kernel, t: KThread, pid: int) -> None:
    """The vfork parent waits until child ``pid`` gives the address space back."""
    from .pid import prfind
    from .sig import kcv_wait_sig

    pp = curproc_of(K, t)
    lw = K.lwps[t.slot]
    signalled = False
    K.count("vfork_waits")
    K.fire("proc:::vfork-wait-start", pp.s.p_pid, lw.t_tid, pid)
    while True:
        mutex_enter(K.pidlock)
        cp = prfind(K, pid)
        if cp is None or cp.s.p_parent != pp.id:
            mutex_exit(K.pidlock)
            break
        mutex_enter(cp.p_lock)
        mutex_exit(K.pidlock)
        if not cp.s.p_flag & SVFORK:
            mutex_exit(cp.p_lock)
            break
        mutex_enter_nested(pp.p_lock, 1)  # the child's p_lock is held: parent's is nested
        mutex_exit(cp.p_lock)
        # The child's lwp wakes us from relvm; if it exits first, or SVFORK is
        # clear for two deadlines while we still sleep, the wake-up was lost.
        waker = cp.s.p_tlist
        stuck = _vfork_released(K, cp, pid)
        if K.bug("vfwait_no_recheck"):
            # wait once and trust the wake-up
            cv_wait(pp.p_cv, pp.p_lock, patient=True, waker=waker, stuck=stuck)
            mutex_exit(pp.p_lock)
            break
        if not signalled:
            if not kcv_wait_sig(K, pp.p_cv, pp.p_lock, waker, stuck):
                signalled = True
        else:
            cv_wait(pp.p_cv, pp.p_lock, patient=True, waker=waker, stuck=stuck)
        mutex_exit(pp.p_lock)
    a = K.ases.slots[pp.s.p_as - 1]
    if pp.s.p_wcount:  # re-apply the watch protections
        lk = K.a_lock(pp.s.p_as)
        rw_enter(lk, RW_WRITER)
        a.a_wpage = a.a_wpage
        rw_exit(lk)
    mutex_enter(pp.p_lock)
    prbarrier(K, pp)
    pp.s.p_flag &= ~SVFWAIT
    lw.t_flag &= ~T_VFPARENT
    continuelwps(K, pp)
    mutex_exit(pp.p_lock)
    K.fire("proc:::vfork-wait-done", pp.s.p_pid, lw.t_tid, pid)
