"""``os/fork.c``: forkall, fork1, vfork, cfork, getproc, fork_fail,
forklwp, forklwp_fail, newproc, relvm and vfwait.

Step numbers in comments follow docs/kernel.md, "cfork, step by step" (and
illumos's own order).  Each function returns an errno (0 on success) and,
for the system calls, the two return values.  The first line of each
docstring says which locks the caller must hold and which are held on
return.

Lock order.  pidlock comes before any p_lock: code that holds a p_lock and
wants pidlock must drop the p_lock first, or it deadlocks against the many
paths (getproc, cfork's step 17, exit, waitid) that take pidlock and then a
p_lock.  Between two p_locks, a vfork child's comes before its parent's,
which lockdep knows as subclass 1 (``p_lock -> p_lock/1``): relvm and vfwait
both hold the child's lock while they take the parent's, and a path that
took them the other way round would deadlock against either.  P_PR_LOCK
(/proc's hold on a process) is not a mutex but a flag waited for on
``pr_pid_cv`` with p_lock held; nothing may wait for a mutex while it holds
P_PR_LOCK if a /proc controller could hold that mutex and wait for
P_PR_LOCK (the 6533743 deadlock, see fork_fail), nor for dtrace_lock or
mod_lock, which a DTrace consumer holds while it sprlocks (6556673, cfork
step 7).  See docs/kernel.md, "Lock orders".

Seeded bugs (``K.bug(name)``, realfork.verify.bugs) enter the code by one
line each and live in the last section of this module, off the path the
correct kernel runs.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..sync.condvar import cv_broadcast, cv_signal, cv_wait
from ..sync.kthread import KThread
from ..sync.mutex import MUTEX_HELD, mutex_enter, mutex_enter_nested, mutex_exit
from ..sync.rwlock import RW_WRITER, rw_enter, rw_exit
from .clock import delay
from .detect import assert_held, fail, forklwp_source_check, proc_link
from .dtrace import dtrace_fasttrap_fork, dtrace_helpers_fork, shmfork
from .errno_defs import EAGAIN, EINTR, ENOMEM, ENOTSUP, EPERM
from .faults import RCTL_DUP_MAX_RETRIES
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
from .procfs import pr_watch_active, prbarrier, prrelvm, sprlock_proc, sprunlock
from .resources import (
    VN_HOLD,
    VN_RELE,
    contract_process_fork,
    corectl_content_hold,
    corectl_fork_hold,
    corectl_path_hold,
    corectl_ref,
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
from .sig import aston, sigdefault, thread_lock, thread_unlock, ts_start
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
    """Takes no locks: an lwp's own process cannot change under it."""
    return K.proc(K.lwps[t.slot].t_procp)


# -- the system calls ----------------------------------------------------------------


def forkall(K: Kernel, t: KThread) -> Result:
    """Called with no locks held (system call entry): duplicate every lwp."""
    return cfork(K, t, isvfork=False, isfork1=False)


def fork1(K: Kernel, t: KThread) -> Result:
    """Called with no locks held (system call entry): duplicate the caller only."""
    return cfork(K, t, isvfork=False, isfork1=True)


def vfork(K: Kernel, t: KThread) -> Result:
    """Called with no locks held (system call entry).  The child borrows the
    address space; the parent stops in vfwait until the child's relvm."""
    K.lwps[t.slot].t_post_sys = 1  # post_syscall must run: it calls vfwait
    return cfork(K, t, isvfork=True, isfork1=True)


# Which lwp calls vfwait: the 2006 code asks post_syscall "is this the vfork
# system call returning (pid, 0) without error?" (syscall.vfwait_due).  Once
# illumos gave fork new entry points (forksys), a process-wide mark let the
# wrong lwp take that path; since 6533431 the vforking thread is marked
# T_VFPARENT in cfork (step 18) and the mark is cleared after vfwait; clones do
# not inherit it.  The fixed kernel asks for the mark as well, the 2006 kernel
# only for the return values.


def _forkerr(K: Kernel, p: Proc, lwpid: int, err: int, site: str) -> Result:
    """Called with no locks held.  A failed fork's last act (fork.c's
    ``forkerr:`` label): count it, fire ``proc:::fork-fail`` with the errno
    and the fault site, and return the errno."""
    from .faults import SITE_INDEX

    K.count("fork_fail")
    K.fire("proc:::fork-fail", p.s.p_pid, lwpid, err, SITE_INDEX.get(site, -1))
    return err, 0, 0  # fork.c:615


def cfork(K: Kernel, t: KThread, isvfork: bool, isfork1: bool) -> Result:
    """Called with no locks held; returns with none held.  The body of
    forkall, fork1 and vfork."""
    p = curproc_of(K, t)
    s = p.s
    lw = K.lwps[t.slot]
    # 1. The /proc agent lwp may not fork.
    if s.p_agenttp == t.id:  # fork.c:144
        return ENOTSUP, 0, 0
    # 2. Forking needs PRIV_PROC_FORK.
    if not secpolicy_basic_fork(K, s.p_cred):  # fork.c:149
        return EPERM, 0, 0
    # 3. Hold every other lwp of the process where it can be copied.
    #
    # forkall copies every lwp's saved user context; an lwp that ran during
    # the copy would leave its clone with registers from one moment and a
    # stack from another.  fork1 and vfork copy only the caller, but hold the
    # others too (SHOLDFORK1, which lets them stop in place inside
    # interruptible sleeps), so that the process is single-threaded while its
    # state is copied and no lock is needed for the copy (step 10).  From here
    # on, every way out of cfork must continuelwps(p) (the failure paths
    # through _release_parent, success through CL_FORKRET or vfwait): a
    # forgotten one leaves the other lwps stopped with nobody to start them.
    # holdlwps fails when another lwp is already running forkall or exiting
    # the process; the AST makes the caller's way out honour that.
    if K.faults.should_fail("holdlwps") or \
            not holdlwps(K, t, p, SHOLDFORK1 if isfork1 else SHOLDFORK):  # fork.c:161
        aston(t)  # fork.c:162
        return _forkerr(K, p, lw.t_tid, EINTR, "holdlwps")
    # 4. (SPARC register windows: nothing to do.) (fork.c:172)
    # 5. Under p_lock, vfork cancels any lwp_suspend of the caller; then the
    # fork enters the pool barrier, so that no pool rebind changes the
    # parent's resource bindings while the child inherits them.
    #
    # Were an lwp_suspend of the vforking lwp left pending (6339942), its
    # clone would be born suspended too (forklwp copies TP_HOLDLWP), and the
    # parent would suspend on its way out of vfork: the child never gives
    # the address space back, the parent waits for it in vfwait, and the only
    # lwps that could lwp_continue either are the parent's, held until vfwait
    # ends.  t_proc_flag is under p_lock, so the flag is cleared with it held
    # (6361360): an unlocked read-modify-write loses a concurrent change to
    # another bit of the word.
    if isvfork and K.bug("holdlwp_cleared_unlocked"):
        _bug_holdlwp_cleared_unlocked(K, p, lw)
    mutex_enter(p.p_lock)  # fork.c:175
    if isvfork:
        _clear_holdlwp(K, p, lw)  # fork.c:183
    pool_barrier_enter(K, p)  # fork.c:187
    mutex_exit(p.p_lock)  # fork.c:188
    # 6. getproc makes the child, in SIDL: on the parent's lists but not yet
    # runnable or found by most lookups.  If it fails, undo steps 3 and 5.
    cp, site = getproc(K, t, p, kernel=False)  # fork.c:193
    if cp is None:
        if K.bug("getproc_fail_skips_continuelwps"):
            return _bug_getproc_fail_skips_continuelwps(K, p, lw, site)
        _release_parent(K, p)  # fork.c:194 fork.c:195 fork.c:196
        return _forkerr(K, p, lw.t_tid, EAGAIN, site)  # fork.c:198
    cs = cp.s
    # 7. The address space: vfork lends the parent's, fork1 and forkall copy it.
    if isvfork:
        # The watched pages are stashed in the parent (vfwait re-applies
        # them) so that the child's stores do not trip the parent's watchpoints.
        a = K.ases.slots[s.p_as - 1]
        if a.a_wpage:  # fork.c:213
            lk = K.a_lock(s.p_as)
            rw_enter(lk, RW_WRITER)
            s.p_wpage, a.a_wpage = a.a_wpage, 0
            rw_exit(lk)
        cs.p_as = s.p_as  # fork.c:222
        a.a_nprocs += 1
        cs.p_flag |= SVFORK  # fork.c:223
    else:
        from .vm import as_dup

        # P_PR_LOCK is held across the copy so that /proc cannot change the
        # parent's address space (breakpoints, watchpoints) half-way through
        # it; SFORKING tells /proc why it is kept out.  as_dup runs with no
        # mutex held: it sleeps for the address space's a_lock.
        mutex_enter(p.p_lock)  # fork.c:232
        sprlock_proc(K, p)  # fork.c:233
        s.p_flag |= SFORKING  # fork.c:234
        mutex_exit(p.p_lock)  # fork.c:235
        err, new_as = as_dup(K, s.p_as)  # fork.c:237
        if err:
            return _as_dup_failed(K, t, p, cp, err)
        cs.p_as = new_as
        # The fork hooks.  The child's copy of the text still carries the
        # parent's enabled USDT tracepoints: dtrace_fasttrap_fork takes them
        # out, still under P_PR_LOCK, so that no consumer adds or removes one
        # in the parent meanwhile.  Then P_PR_LOCK goes, and only then do
        # shmfork and the helpers fork run, with SFORKING still set.
        #
        # The helpers fork takes dtrace_lock, dtrace_meta_lock and mod_lock;
        # a DTrace consumer holds dtrace_lock (and, tearing a provider down,
        # mod_lock) while it sprlocks the process whose tracepoints it
        # writes.  Run under P_PR_LOCK, as in 2006, the helpers fork waits for
        # a consumer that waits for our P_PR_LOCK: the parent, the consumer
        # and every later /proc controller of the parent hang for good
        # (illumos 6556673, and 6871629 the three-way form through mod_lock).
        if not K.fixed("6556673"):
            _fork_hooks_under_prlock(K, p, cp)
        else:
            if s.p_dtrace_count > 0:  # fork.c:282
                dtrace_fasttrap_fork(K, p, cp)
            mutex_enter(p.p_lock)  # fork.c:295
            sprunlock(K, p)  # drops p_lock; SFORKING stays set (fork.c:297)
            if s.p_segacct:  # fork.c:274
                shmfork(K, p, cp)
            if s.p_dtrace_helpers:  # fork.c:290
                dtrace_helpers_fork(K, p, cp)
            mutex_enter(p.p_lock)
            s.p_flag &= ~SFORKING  # fork.c:296
            mutex_exit(p.p_lock)
    # 8. Duplicate the resource controls.  The copy's entries are allocated
    # outside rcs_lock (an allocation may sleep), so the loop re-checks under
    # the lock that the set has not grown meanwhile, and duplicates while
    # still holding it.  The rctl_dup fault site plays the set growing; it
    # can add at most RCTL_DUP_MAX_RETRIES rounds, as a real set only grows
    # so far, so a site that always fails cannot spin the fork forever.
    dup = rctl_set_create(K)  # cannot fail (KM_SLEEP; the table cannot fill) (fork.c:303)
    grew = 0
    while True:
        need = rctl_set_dup_prealloc(K, s.p_rctls)  # fork.c:305
        lk = K.rcs_lock(s.p_rctls)
        mutex_enter(lk)  # fork.c:306
        if rctl_set_dup_ready(K, s.p_rctls, need):  # fork.c:307
            if grew >= RCTL_DUP_MAX_RETRIES or not K.faults.should_fail("rctl_dup"):
                break  # still holding rcs_lock
            grew += 1
        mutex_exit(lk)
    cs.p_rctls = rctl_set_dup(K, s.p_rctls, dup)  # fork.c:314
    mutex_exit(lk)  # fork.c:316
    # 9. The child's lwp directory: 2 entries for fork1/vfork, the parent's
    # size for forkall.
    dirsz = 2 if isfork1 else s.p_lwpdir_sz  # fork.c:323
    d = dir_alloc(K, dirsz)  # fork.c:327
    if not d:
        return _forklwperr(K, t, p, cp, isvfork, "forklwp")
    dir_install(K, cp, d, dirsz)  # fork.c:331
    # 10. Clone the lwps, with no lock: the parent's other lwps are held
    # (step 3) and the child is invisible.
    clone: KThread | None = None
    if isfork1:
        clone = forklwp(K, t, cp, lw.t_tid, forkall=False)  # fork.c:342
        if clone is None:
            return _forklwperr(K, t, p, cp, isvfork, "forklwp")
    else:
        assert s.p_lwpwait == 0  # lwp_wait callers were forced out with EINTR (fork.c:353)
        for _i, lwpid, tid, start in dir_entries(K, p):  # fork.c:355
            if tid:
                src = K.thread(tid)
                ct = forklwp(K, src, cp, lwpid, forkall=True)  # fork.c:363
                if ct is None:
                    return _forklwperr(K, t, p, cp, isvfork, "forklwp")
                if tid == t.id:  # fork.c:378
                    clone = ct  # the clone that returns from fork
                else:
                    K.lwps[ct.slot].t_flag |= T_FORKALL
            else:  # a zombie lwp keeps its id and start time in the child
                lwp_hash_in(K, cp, lwpid, 0, start)  # fork.c:386
    assert clone is not None
    # 11. Join the parent's process contract: refused if the parent was
    # SIGKILLed, so that no child escapes a contract kill.  The last point at
    # which fork can fail.
    if K.faults.should_fail("contract_process_fork") or \
            not contract_process_fork(K, NIL, cp, p, True):  # fork.c:400
        return _forklwperr(K, t, p, cp, isvfork, "contract_process_fork")
    # The child's lwps get their OS threads now; they wait, stopped, for step 17.
    for ct in cp.threads():
        start_lwp(K, ct)
    # 12. The child's lwpid allocator goes on where the parent's is; forkall
    # also copies the daemon and zombie counts and whether the ids wrapped.
    cs.p_lwpid = s.p_lwpid  # fork.c:407
    if not isfork1:  # fork.c:408
        cs.p_lwpdaemon = s.p_lwpdaemon
        cs.p_zombcnt = s.p_zombcnt
        cs.p_flag |= s.p_flag & SLWPWRAP
    # 13. The child shares the parent's core-file pattern and content: read
    # the parent's pointers and hold the objects, under the parent's p_lock
    # (6446530).  coreadm swaps the pointers under the same lock and then
    # releases the old objects, the last release freeing them; read without
    # the lock, a pointer can be to an object freed before its hold.
    if not K.fixed("6446530"):
        _2006_corectl_hold_unlocked(K, t, p, cp)
    else:
        mutex_enter(p.p_lock)
        corectl_fork_hold(K, p, cp)  # fork.c:418
        mutex_exit(p.p_lock)
    # 14. /proc's stop on exit from fork: every child lwp if the child
    # inherited it, every parent lwp if the parent asked (and not async).
    # t_proc_flag changes only under its process's p_lock, the child's as
    # much as the parent's (the seed takes the child's here).  The child is
    # still invisible, but its clones have had their OS threads since step
    # 11, and every other reader and writer of t_proc_flag goes by p_lock;
    # an unlocked |= is a read-modify-write that can lose a concurrent
    # change to another bit of the word, or be lost to it (the 6361360
    # mistake of step 5, in the child).
    if cs.p_proc_flag & P_PR_STOPFORK:  # fork.c:435
        mutex_enter(cp.p_lock)
        for ct in cp.threads():
            K.lwps[ct.slot].t_proc_flag |= TP_PRSTOP
            aston(ct)
        mutex_exit(cp.p_lock)
    if s.p_proc_flag & P_PR_STOPFORK and not s.p_proc_flag & P_PR_ASYNC:  # fork.c:451
        mutex_enter(p.p_lock)
        for pt in p.threads():
            K.lwps[pt.slot].t_proc_flag |= TP_PRSTOP
            aston(pt)
        mutex_exit(p.p_lock)
    # 15. The clone will return (parent pid, 1).
    clw = K.lwps[clone.slot]
    clw.lwp_rval1, clw.lwp_rval2, clw.lwp_errno = s.p_pid, 1, 0  # fork.c:463
    # 16. Leave the pool barrier: the child's pool, task and lwps are all set.
    mutex_enter(p.p_lock)
    pool_barrier_exit(K, p)  # fork.c:475
    mutex_exit(p.p_lock)
    # 17. Publish the child: into the parent's process group and SRUN, under
    # pidlock and then its p_lock.  Clones an lwp_suspend applies to run now
    # (they suspend on their way out); the others get TS_CREATE and wait for
    # continuelwps in step 18.
    mutex_enter(K.pidlock)  # fork.c:479
    mutex_enter(cp.p_lock)  # fork.c:480
    pgjoin(K, cp, s.p_pgrp)  # fork.c:486
    cs.p_stat = SRUN  # fork.c:487
    for ct in cp.threads():
        ctl = K.lwps[ct.slot]
        if ctl.t_proc_flag & TP_HOLDLWP:
            lwp_create_done(K, ct, cp)  # fork.c:497
        else:  # TS_CREATE lets continuelwps start it (fork.c:501)
            thread_lock(K, ct)
            ts_start(K, ct, TS_CREATE)
            thread_unlock(K, ct)
    mutex_exit(cp.p_lock)  # fork.c:508
    if isvfork:
        K.g.sysvfork += 1  # fork.c:511
    elif isfork1:
        K.g.sysfork += 1  # fork.c:527
    else:
        K.g.sysforkall += 1
    K.fire("proc:::create", cs.p_pid, K.lwps[clone.slot].t_tid, s.p_pid,  # fork.c:514 fork.c:528
           2 if isvfork else (1 if isfork1 else 0), cs.p_lwpcnt)
    # 18. Set the child running, pidlock still held.
    #
    # Once pidlock is dropped the child can be found and acted on (signals,
    # /proc).  Were it to get as far as exit, an SNOWAIT parent (or init)
    # would reap it and its slot could be reused before we started its lwps.
    # The child's p_lock is therefore taken before pidlock is dropped (the
    # order pidlock -> p_lock) and kept until continuelwps: whatever is done
    # to the child needs that lock, and so does its exit, so it stays put.
    # For fork1 and forkall CL_FORKRET does the same, which is why pidlock is
    # handed to it held.
    if isvfork:
        mutex_enter(p.p_lock)  # fork.c:512
        s.p_flag |= SVFWAIT
        if K.fixed("6533431"):
            lw.t_flag |= T_VFPARENT  # the lwp post_syscall sends to vfwait
        cv_broadcast(p.pr_pid_cv)  # /proc waiters: SVFWAIT counts as stopped (fork.c:515)
        mutex_exit(p.p_lock)
        mutex_enter(cp.p_lock)  # fork.c:521
        mutex_exit(K.pidlock)
        sigdefault(K, cp)  # fork.c:523
        continuelwps(K, cp)  # fork.c:524
        mutex_exit(cp.p_lock)
        # The parent's other lwps stay held until the end of vfwait.
    else:
        if K.bug("pidlock_dropped_before_forkret"):
            return _bug_pidlock_dropped_before_forkret(K, t, p, cp)
        CL_FORKRET(K, t, p, cp)  # drops pidlock (fork.c:534)
        assert not MUTEX_HELD(K.pidlock)  # fork.c:535
    # 19. The parent returns (child pid, 0).
    return 0, cs.p_pid, 0  # fork.c:466


def _clear_holdlwp(K: Kernel, p: Proc, lw: klwp_t) -> None:
    """Caller holds p->p_lock (asserted: t_proc_flag is under it).  vfork
    clears the caller's TP_HOLDLWP (cfork step 5)."""
    if K.bug("vfork_keeps_holdlwp"):
        return _bug_vfork_keeps_holdlwp(K, p, lw)
    assert_held(K, p.p_lock, f"t_proc_flag of pid {p.s.p_pid} lwp {lw.t_tid} changed")
    lw.t_proc_flag &= ~TP_HOLDLWP


def CL_FORKRET(K: Kernel, t: KThread, p: Proc, cp: Proc) -> None:
    """Caller holds pidlock (asserted, as ts_forkret does); returns with no
    locks held.  The timesharing class's fork return: start the child,
    release the parent's held lwps, and give the CPU away (child first, by
    intent).  The child's p_lock is taken before pidlock is dropped (see
    cfork step 18)."""
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
    """Called with no locks held; returns with none held.  Allocate and
    initialise a child of ``pp`` in SIDL; (None, fault site) on failure.

    Locks taken: pidlock for the counts and the family links, inside it
    pp's p_lock (the pool) and the child's (the task), never both p_locks at
    once."""
    ps = pp.s
    g = K.g
    zone = K.zones.slots[ps.p_zone - 1]
    # 1. The memory and zone checks fail at once, without the punishment delay.
    if K.faults.should_fail("getproc.memory"):  # fork.c:862
        return None, "getproc.memory"
    # fork.c:864
    if zone.zone_status >= ZONE_IS_SHUTTING_DOWN or K.faults.should_fail("getproc.zone"):
        return None, "getproc.zone"
    # 2.-3. Take a pid and a /proc slot.  pid_assign makes the child visible
    # to prfind at once, and prfind follows p_zone, so pid_assign sets the
    # zone before it publishes the pid (6439016).
    czone = ps.p_zone
    if not K.fixed("6439016"):
        czone = _2006_zone_set_late(K, pp)
    # fork.c:868 fork.c:880 fork.c:883
    cp = None if K.faults.should_fail("pid_assign") else pid_assign(K, fixed_pid, zone=czone)
    if cp is None:
        mutex_enter(K.pidlock)
        if g.nproc == g.v_proc:  # fork.c:884
            g.procovf += 1
        mutex_exit(K.pidlock)
        _punish(K)
        return None, "pid_assign"
    cs = cp.s
    cs.p_start_ns = time.monotonic_ns()  # fork.c:881
    # 4. Under pidlock, the per-user limit (nproc read before it is
    # incremented); over it, give the slot and pid back and punish.
    mutex_enter(K.pidlock)  # fork.c:896
    if g.nproc >= g.v_proc:  # fork.c:897: otherwise how did we get our pid?
        fail(K, f"assertion failed: nproc {g.nproc} < v.v_proc {g.v_proc} after pid_assign")
    cr = ps.p_cred  # fork.c:898
    ruid, zoneid = crgetruid(K, cr), crgetzoneid(K, cr)
    if K.faults.should_fail("getproc.maxup") or (  # fork.c:901
            g.nproc >= g.v_maxup
            and (g.nproc >= g.v_maxupttl or upcount_get(K, ruid, zoneid) >= g.v_maxup)
            and not secpolicy_newproc(K, cr)):
        mutex_exit(K.pidlock)  # fork.c:905
        pid = cs.p_pid
        cs.p_stat = 0
        proc_entry_free(K, cp)  # fork.c:1088 fork.c:1092
        pid_rele(K, pid)
        _punish(K)  # fork.c:1104
        return None, "getproc.maxup"  # fork.c:1108
    # 5. Count the child (nproc, its user's upcount) and put it at the head
    # of practive.
    g.nproc += 1  # fork.c:916
    upcount_inc(K, ruid, zoneid)  # fork.c:917
    cs.p_next = g.practive  # fork.c:919
    if g.practive:
        K.proc(g.practive).s.p_prev = cp.id
    g.practive = cp.id
    # 6. Inherit the parent's signal dispositions, job-control flags,
    # session, exec vnodes, /proc file, zone and brk and stack sizes.
    cs.p_ignore = ps.p_ignore  # fork.c:923
    cs.p_catch = ps.p_catch  # fork.c:1040
    cs.p_flag |= ps.p_flag & (SJCTL | SNOWAIT | SNOCD)  # fork.c:925
    if ps.p_pgrp:  # fork.c:926
        cs.p_sessp = K.pgrps.slots[ps.p_pgrp - 1].pg_sess
        sess_hold(K, cs.p_sessp)
        cs.p_sid = ps.p_sid
    cs.p_exec, cs.p_execdir = ps.p_exec, ps.p_execdir  # fork.c:928
    cs.p_prfile = ps.p_prfile  # the open /proc file is inherited
    cs.p_zone = ps.p_zone  # fork.c:930
    cs.p_brksize, cs.p_stksize = ps.p_brksize, ps.p_stksize  # fork.c:932
    cs.p_ppid = cs.p_ancpid = ps.p_pid  # fork.c:942
    # 7. Family links: the child goes at the head of the parent's child list
    # and of its orphan chain (the parent is its next of kin).
    cs.p_sibling = ps.p_child  # fork.c:965
    if ps.p_child:
        proc_link(K, ps.p_child, pp, "p_child").s.p_psibling = cp.id
    if ps.p_orphan:
        proc_link(K, ps.p_orphan, pp, "p_orphan")
    cs.p_parent = pp.id
    ps.p_child = cp.id
    cs.p_child_ns = cs.p_sibling_ns = NIL  # fork.c:972
    cs.p_nextorph = ps.p_orphan  # fork.c:975
    cs.p_nextofkin = pp.id
    ps.p_orphan = cp.id
    # 8. (none)
    # 9. The pool, under the parent's p_lock: the default pool and SSYS for
    # a kernel process, the parent's pool otherwise.
    mutex_enter(pp.p_lock)  # fork.c:989
    if kernel:
        cs.p_pool = g.pool_default
        cs.p_flag |= SSYS
    else:
        cs.p_pool = ps.p_pool
    pool_ref_add(K, cs.p_pool, 1)  # fork.c:996
    mutex_exit(pp.p_lock)
    # 10. The task, under the child's p_lock; then drop pidlock.
    mutex_enter(cp.p_lock)  # fork.c:1003
    task_attach(K, g.task0 if kernel else ps.p_task, cp)
    mutex_exit(cp.p_lock)
    mutex_exit(K.pidlock)  # fork.c:1009
    # 11. Without global locks (the child is invisible): hold the credential,
    # the open files and the current and root directories.
    cs.p_cred = cr  # fork.c:1022
    crhold(K, cr)
    fcnt_add(K, cp, 1)  # fork.c:1028
    cs.p_fcnt = 1  # fork.c:1041
    cs.u_cdir, cs.u_rdir = ps.u_cdir, ps.u_rdir  # fork.c:1030
    VN_HOLD(K, cs.u_cdir)
    VN_HOLD(K, cs.u_rdir)
    # 12. /proc inheritance: with P_PR_FORK the child is traced like the
    # parent and inherits its signal mask.
    if ps.p_proc_flag & P_PR_FORK:  # fork.c:1051 fork.c:1056
        cs.p_proc_flag |= ps.p_proc_flag & (P_PR_TRACE | P_PR_FORK | P_PR_STOPFORK)
        cs.p_sigmask = ps.p_sigmask
    # 13. Microstate accounting flags when SMSFORK is set; hold the exec vnodes.
    cs.p_flag |= ps.p_flag & (SMSFORK | SMSACCT) if ps.p_flag & SMSFORK else 0  # fork.c:1065
    VN_HOLD(K, cs.p_exec)  # fork.c:1073
    VN_HOLD(K, cs.p_execdir)
    return cp, ""  # fork.c:1077


def _punish(K: Kernel) -> None:
    """Called with no locks held; takes pidlock around the count, not around
    the delay.  Slow down a failing forker: delay(fork_fail_pending / ncpus
    + 1) ticks, so the busier the failures, the longer each one waits."""
    mutex_enter(K.pidlock)
    K.g.fork_fail_pending += 1
    mutex_exit(K.pidlock)
    delay(K, K.g.fork_fail_pending // K.g.ncpus + 1)  # read outside the lock
    mutex_enter(K.pidlock)
    K.g.fork_fail_pending -= 1
    mutex_exit(K.pidlock)


# -- failure paths ------------------------------------------------------------------------
#
# A fork that fails after getproc undoes its work in the reverse order of
# doing it, and always in three stages (docs/kernel.md, "Failure paths"):
#
# 1. fork_fail gives back getproc's references (files, signals, upcount,
#    credential, vnodes).  It takes f_tlock and pidlock, so it must run
#    after P_PR_LOCK is released: a /proc controller can hold the file lock
#    while it waits for P_PR_LOCK, and the 2006 order deadlocked (6533743).
# 2. _free_failed_child takes the child out of its task and pool, off its
#    parent's lists (disown_proc) and frees its pid and slot (pid_exit), in
#    that order: pid_exit frees the slot, and a slot freed while the
#    parent's child or orphan list still names it is followed later as a
#    stale (or reused) proc (7412).
# 3. _release_parent, last: the parent leaves the pool barrier and its other
#    lwps run again.  Releasing them earlier would let them see, or fork
#    next to, a child that is only half gone.


def _release_parent(K: Kernel, p: Proc) -> None:
    """Called with no locks held; takes and drops p->p_lock.  Undo cfork's
    steps 5 and 3: leave the pool barrier, set the held lwps running."""
    mutex_enter(p.p_lock)
    pool_barrier_exit(K, p)
    continuelwps(K, p)
    mutex_exit(p.p_lock)


def fork_fail(K: Kernel, cp: Proc) -> None:
    """Called with no locks held, and not holding P_PR_LOCK (6533743): it
    takes f_tlock and pidlock.  Undo getproc's references."""
    cs = cp.s
    fcnt_add(K, cp, -cs.p_fcnt)  # fork.c:626
    cs.p_fcnt = 0
    cs.p_sig = 0  # sigdelq (fork.c:627)
    _upcount_release(K, cp)  # fork.c:629
    crfree(K, cs.p_cred)  # fork.c:636
    cs.p_cred = NIL
    VN_RELE(K, cs.u_cdir)  # fork.c:640
    VN_RELE(K, cs.u_rdir)
    VN_RELE(K, cs.p_exec)  # fork.c:643
    VN_RELE(K, cs.p_execdir)
    cs.u_cdir = cs.u_rdir = cs.p_exec = cs.p_execdir = NIL


def _upcount_release(K: Kernel, cp: Proc) -> None:
    """Called with no locks held; takes pidlock.  Give back the upcount
    getproc took for the child's user."""
    if K.bug("fork_fail_skips_upcount_dec"):
        return _bug_fork_fail_skips_upcount_dec(K, cp)
    cs = cp.s
    mutex_enter(K.pidlock)
    upcount_dec(K, crgetruid(K, cs.p_cred), crgetzoneid(K, cs.p_cred))
    mutex_exit(K.pidlock)


def disown_proc(K: Kernel, pp: Proc, cp: Proc) -> None:
    """Caller holds pidlock (asserted).  Take a failed child off its parent's
    orphan and child lists."""
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
    """Called with no locks held; takes pidlock, then cp->p_lock; returns
    with none held.  task_detach and pool_ref-- under both, then disown
    before pid_exit (7412), then task_rele without locks."""
    mutex_enter(K.pidlock)  # fork.c:240 fork.c:582 fork.c:814
    mutex_enter(cp.p_lock)  # fork.c:251
    tk = task_detach(K, cp)
    pool_ref_add(K, cp.s.p_pool, -1)
    mutex_exit(cp.p_lock)
    disown_proc(K, pp, cp)  # fork.c:241 fork.c:594
    pid_exit(K, cp)  # fork.c:257 fork.c:604 fork.c:821
    mutex_exit(K.pidlock)
    task_rele(K, tk)  # fork.c:259 fork.c:607 fork.c:823


def _as_dup_errno(err: int) -> int:
    """Takes no locks.  as_dup's ENOMEM is kept; any other error is EAGAIN
    (fork.c:266-270)."""
    return ENOMEM if err == ENOMEM else EAGAIN


def _as_dup_failed(K: Kernel, t: KThread, p: Proc, cp: Proc, err: int) -> Result:
    """Caller holds P_PR_LOCK on p (cfork step 7) and no mutex; returns with
    neither.  The as_dup failure (docs/kernel.md, "Failure paths"): P_PR_LOCK
    is released before fork_fail, the 6533743 fix."""
    if not K.fixed("6533743"):
        return _2006_fork_fail_under_prlock(K, t, p, cp, err)
    mutex_enter(p.p_lock)  # fork.c:261
    p.s.p_flag &= ~SFORKING
    sprunlock(K, p)  # drops p_lock (fork.c:265)
    fork_fail(K, cp)  # fork.c:239
    _free_failed_child(K, p, cp)
    _release_parent(K, p)  # fork.c:263 fork.c:264
    return _forkerr(K, p, K.lwps[t.slot].t_tid, _as_dup_errno(err), "as_dup")  # fork.c:270


def forklwp_fail(K: Kernel, cp: Proc) -> None:
    """Called with no locks held; takes pidlock once per clone.  Free the
    clones of a failed fork.  The child is invisible (SIDL), so nobody else
    walks its lwp list and no p_lock is needed for it; but each clone is
    also on the system-wide list of kernel threads, which other threads
    walk, so it comes off that list under pidlock, one clone at a time
    (fork.c:695-700), not with pidlock held across the whole loop."""
    cs = cp.s
    for ct in cp.threads():  # fork.c:664
        lw = K.lwps[ct.slot]
        cs.p_lwpcnt -= 1  # fork.c:672
        lwp_count_release(K, cs.p_task, cs.p_zone)  # fork.c:676
        lw.t_procp = NIL
        mutex_enter(K.pidlock)  # fork.c:695: off the all-threads list (the kthread table)
        K.dom.kthread_free(ct)  # fork.c:716
        mutex_exit(K.pidlock)
    cs.p_tlist = NIL  # fork.c:668


def _forklwperr(K: Kernel, t: KThread, p: Proc, cp: Proc, isvfork: bool, site: str) -> Result:
    """Called with no locks held; returns with none held.  Undo a fork that
    failed after getproc and the address space (fork.c's ``forklwperr:``;
    docs/kernel.md, "Failure paths": the lwp-error path): the address space,
    the clones, the directory, getproc's references, the rctl set, the
    contract, the child's slot, and last the parent."""
    from .vm import as_free

    s, cs = p.s, cp.s
    if isvfork:
        a = K.ases.slots[s.p_as - 1]
        if s.p_wpage:  # put the stashed watched pages back at once (fork.c:542)
            lk = K.a_lock(s.p_as)
            rw_enter(lk, RW_WRITER)
            a.a_wpage, s.p_wpage = s.p_wpage, 0
            rw_exit(lk)
        a.a_nprocs -= 1
        cs.p_flag &= ~SVFORK
    else:
        as_free(K, cs.p_as)  # fork.c:557
    cs.p_as = K.g.kas
    forklwp_fail(K, cp)  # fork.c:579
    if cs.p_lwpdir:  # fork.c:562 fork.c:573
        dir_free(K, cs.p_lwpdir)
        cs.p_lwpdir = NIL
        cs.p_lwpdir_sz = cs.p_tidhash_sz = 0
        cs.p_lwpfree = -1
    fork_fail(K, cp)  # fork.c:580
    rctl_set_free(K, cs.p_rctls)  # fork.c:581
    cs.p_rctls = NIL
    if cs.p_ct_process:
        from .resources import contract_process_exit

        contract_process_exit(K, cp)
    _free_failed_child(K, p, cp)
    _release_parent(K, p)  # fork.c:609 fork.c:611
    return _forkerr(K, p, K.lwps[t.slot].t_tid, EAGAIN, site)  # fork.c:613


# -- forklwp -------------------------------------------------------------------------------


def forklwp(K: Kernel, src: KThread, cp: Proc, lwpid: int, forkall: bool) -> KThread | None:
    """Called with no locks held; takes the child's p_lock.  Clone lwp
    ``src`` (the caller, or held at a hold point) into ``cp``."""
    forklwp_source_check(K, src)  # the caller, or held at a hold point (forklwp#1)
    if K.faults.should_fail("forklwp"):
        return None
    ct = lwp_create(K, cp, lwpid)  # forklwp#4
    if ct is None:
        return None
    slw, clw = K.lwps[src.slot], K.lwps[ct.slot]
    # Copy the user context (the saved registers) and the system call state;
    # not the current or pending signals.
    clw.pc = slw.pc  # forklwp#10
    for i in range(len(slw.regs)):
        clw.regs[i] = slw.regs[i]
    clw.t_hold = slw.t_hold  # forklwp#5
    clw.t_sysnum = slw.t_sysnum  # forklwp#8
    clw.lwp_errno = slw.lwp_errno
    clw.lwp_rval1, clw.lwp_rval2 = slw.lwp_rval1, slw.lwp_rval2
    clw.lwp_cursig = 0  # forklwp#7
    clw.t_sig = 0
    # Under the child's p_lock: keep TP_HOLDLWP only if the source is being
    # suspended; inherit lwp_wait()ability, and for forkall the daemon flag.
    mutex_enter(cp.p_lock)  # forklwp#14
    if not slw.t_proc_flag & TP_HOLDLWP:
        clw.t_proc_flag &= ~TP_HOLDLWP
    # fork.c:349 fork.c:370
    clw.t_proc_flag |= slw.t_proc_flag & (TP_TWAIT | (TP_DAEMON if forkall else 0))
    mutex_exit(cp.p_lock)
    return ct  # forklwp#17


# -- newproc -------------------------------------------------------------------------------


def newproc(K: Kernel, t: KThread, syscid: bool, fixed_pid: int | None = None,
            name: str = "",
            prepare: Callable[[Kernel, Proc, KThread], None] | None = None) -> Proc | None:
    """Called with no locks held; returns with none held.  Create a kernel
    process (syscid) or init, with one lwp (lwpid 1) ready to run."""
    from .resources import task_create

    pp = curproc_of(K, t)
    cp, site = getproc(K, t, pp, kernel=syscid, fixed_pid=fixed_pid)  # fork.c:741 fork.c:773
    if cp is None:  # fork.c:742
        _forkerr(K, pp, K.lwps[t.slot].t_tid, EAGAIN, site)
        return None
    cs = cp.s
    # A kernel process: its children are reaped by nobody, and it has no
    # exec vnodes; the holds getproc took on the parent's are given back
    # (6869037: the 2006 code only cleared the pointers, and every kernel
    # process made at run time leaked a hold on each).  init: a new task in
    # its parent's project, swapped in under pidlock and the child's p_lock.
    if syscid:
        cs.p_flag |= SNOWAIT  # fork.c:744
        if not K.fixed("6869037"):
            _2006_exec_vnodes_dropped(K, cp)
        else:
            VN_RELE(K, cs.p_exec)  # fork.c:745
            VN_RELE(K, cs.p_execdir)
            cs.p_exec = cs.p_execdir = NIL
        # Kernel processes do not inherit /proc tracing: getproc copied the
        # traced signals and stop-on-fork-exit of an inherit-on-fork creator
        # (zone_create's caller), and a traced zsched would stop on its way.
        cs.p_sigmask = 0  # fork.c:754
        cs.p_proc_flag &= ~P_PR_STOPFORK  # the exit mask emptied
    else:
        tk = task_create(K, K.tasks.slots[pp.s.p_task - 1].tk_proj, cs.p_zone)  # fork.c:779
        mutex_enter(K.pidlock)  # fork.c:788
        mutex_enter(cp.p_lock)
        old = task_detach(K, cp)  # fork.c:792
        task_attach(K, tk, cp)
        mutex_exit(cp.p_lock)
        mutex_exit(K.pidlock)  # fork.c:794
        task_rele(K, old)  # fork.c:803
        task_rele(K, tk)  # task_attach took the member's hold
    # An rctl set, the kernel's address space, a two-entry directory and lwp
    # 1.  If any fails, undo getproc: the child is on its parent's child and
    # orphan lists (getproc step 7), so it is disowned before pid_exit frees
    # its slot (7412: the 2006 code freed it still listed, and the parent's
    # next walk of either list followed a freed or reused slot).
    cs.p_rctls = rctl_set_create(K)  # fork.c:748 fork.c:760 fork.c:798
    cs.p_as = K.g.kas  # fork.c:808
    d = dir_alloc(K, 2)
    ct = None
    if d:
        dir_install(K, cp, d, 2)
        if not K.faults.should_fail("newproc.lwp_create"):
            ct = lwp_create(K, cp, 1, syscid=syscid, name=name)  # fork.c:810
    if ct is None:
        fork_fail(K, cp)  # fork.c:813
        rctl_set_free(K, cs.p_rctls)
        if d:
            dir_free(K, d)
        if not K.fixed("7412"):
            _2006_newproc_free_listed(K, pp, cp)
        else:
            _free_failed_child(K, pp, cp)  # disown before pid_exit
        _forkerr(K, pp, K.lwps[t.slot].t_tid, EAGAIN, "newproc.lwp_create")
        return None  # fork.c:825
    if not syscid:
        contract_process_fork(K, K.g.sys_contract, cp, pp, False)  # fork.c:828
    if prepare is not None:
        prepare(K, cp, ct)
    # Give the lwp its OS thread, publish the child under pidlock (its
    # parent's group, SRUN), and set it running under the child's p_lock.
    #
    # As the seed does, the child's p_lock is taken inside pidlock
    # (pidlock -> p_lock) and lwp_create_done runs under both: from the
    # pgjoin that makes the child findable to the moment its lwp may run,
    # pidlock is never let go, so no lookup (prfind, a signal to the process
    # group, /proc) sees it SRUN but with its lwp still held, and its exit
    # (which needs pidlock) cannot begin before it has been set running.  The
    # lwp's OS thread is started first, with no lock held: starting it may
    # wait for a host, and it only waits, stopped, for lwp_create_done.
    cs.p_lwpid = 1  # fork.c:836
    start_lwp(K, ct)
    mutex_enter(K.pidlock)  # fork.c:837
    pgjoin(K, cp, pp.s.p_pgrp)
    cs.p_stat = SRUN
    mutex_enter(cp.p_lock)  # fork.c:840
    K.lwps[ct.slot].t_proc_flag &= ~TP_HOLDLWP
    lwp_create_done(K, ct, cp)  # fork.c:842
    mutex_exit(cp.p_lock)
    mutex_exit(K.pidlock)  # fork.c:844
    K.fire("proc:::create", cs.p_pid, 1, pp.s.p_pid, 3, 1)
    return cp  # fork.c:845


# -- vfork: relvm and vfwait ------------------------------------------------------------------


def relvm(K: Kernel, t: KThread, p: Proc) -> None:
    """Called with no locks held; returns with none held.  Give up the
    address space (exit, exec); a vfork child hands it back to its parent
    and wakes it."""
    from .vm import as_free

    s = p.s
    # exit and exec have made the caller the only lwp (exit has already
    # taken it off p_tlist: 0).  A second lwp would still run on the
    # address space about to be given back or freed.
    assert 0 <= s.p_lwpcnt <= 1, f"relvm: pid {s.p_pid} has {s.p_lwpcnt} lwps"  # fork.c:1122
    prrelvm(K, p)  # /proc: the watchpoints go with the address space (fork.c:1124)
    if s.p_flag & SVFORK:  # fork.c:1126
        pp = K.proc(s.p_parent)  # fork.c:1127
        # The delicate manoeuvre.  Once SVFORK is clear the parent is free
        # to run on the address space and return from vfork; it may then
        # exit and be reaped, its slot reused.  So the child holds the
        # parent, by the parent's p_lock, from before it clears SVFORK until
        # after it has signalled p_cv, and protects its own p_flag with its
        # own p_lock:
        #
        # * Both locks are held when SVFORK is cleared.  vfwait looks at
        #   SVFORK under the child's p_lock, takes its own p_lock before
        #   letting go of the child's, and keeps it until cv_wait releases
        #   it: from its look to its sleep it always holds one of the two.
        #   With both held here, the parent is either asleep on p_cv or has
        #   not looked yet.  Clearing SVFORK and signalling without the
        #   parent's lock can fall between its look and its sleep: a lost
        #   wake-up, and the parent sleeps forever (as it does if SVFWAIT is
        #   cleared and the signal forgotten).
        # * The signal comes before the parent's lock is dropped.  Dropped
        #   first, the parent could be woken by something else (a sibling's
        #   exit broadcasts p_cv), see SVFORK clear, finish vfwait, exit and
        #   be freed: the signal would go to whatever proc owns the slot then.
        # * The child's lock comes first, then the parent's as lockdep
        #   subclass 1: vfwait holds the child's while it takes the
        #   parent's, so the other order deadlocks against it.
        # * /proc must not hold either process: prbarrier waits out the
        #   child's P_PR_LOCK before the parent's lock is taken.  If the
        #   parent is held, the child lets go of its own lock, waits out the
        #   parent's P_PR_LOCK, and starts over (everything may have
        #   changed); it may not sleep with its own lock held, which /proc
        #   may need in order to let go.
        if K.bug("relvm_parent_first"):
            return _bug_relvm_parent_first(K, t, p, pp)
        while True:  # try_again:
            mutex_enter(p.p_lock)  # the child's lock first (fork.c:1143)
            prbarrier(K, p)  # fork.c:1144
            mutex_enter_nested(pp.p_lock, 1)  # fork.c:1145
            if not pp.s.p_proc_flag & P_PR_LOCK:  # fork.c:1150
                break
            mutex_exit(p.p_lock)
            prbarrier(K, pp)
            mutex_exit(pp.p_lock)
        _vfork_hand_back(K, t, p, pp)
    elif s.p_as and s.p_as != K.g.kas:  # fork.c:1194
        # Our own address space: swap it out under p_lock (for /proc's sake),
        # free it with no lock held.
        mutex_enter(p.p_lock)  # fork.c:1203
        prbarrier(K, p)
        old, s.p_as = s.p_as, K.g.kas  # fork.c:1205
        mutex_exit(p.p_lock)
        K.fire("proc:::relvm", s.p_pid, K.lwps[t.slot].t_tid, 0)
        as_free(K, old)  # fork.c:1215


def _vfork_hand_back(K: Kernel, t: KThread, p: Proc, pp: Proc) -> None:
    """Caller holds the vfork child's p_lock and its parent's (p_lock/1);
    returns with neither.  The second half of relvm's manoeuvre: the address
    space goes back to the parent with both locks held, and the parent is
    woken before its lock is dropped."""
    s = p.s
    s.p_flag &= ~SVFORK  # fork.c:1161
    a = K.ases.slots[s.p_as - 1]
    a.a_nprocs -= 1
    s.p_as = K.g.kas  # fork.c:1163
    # fork.c:1175
    pp.s.p_brksize, pp.s.p_stksize = s.p_brksize, s.p_stksize  # the child may have grown
    K.fire("proc:::relvm", s.p_pid, K.lwps[t.slot].t_tid, pp.s.p_pid)
    if K.bug("relvm_lost_wakeup"):
        return _bug_relvm_lost_wakeup(K, p, pp)
    # The parent no longer waits: SVFWAIT is cleared here and only here (as
    # in the seed; vfwait leaves it alone), with the parent's p_lock
    # held and /proc known to be off the parent, which is also what makes
    # it safe to put the parent's stashed watched pages back into the
    # address space (vfwait re-applies their protections).
    pp.s.p_flag &= ~SVFWAIT  # fork.c:1183
    if pp.s.p_wpage:  # the parent's watched pages go back to the address space (fork.c:1184)
        a.a_wpage, pp.s.p_wpage = pp.s.p_wpage, 0
    cv_signal(pp.p_cv)  # signal, not broadcast: the parent's other lwps are held (fork.c:1190)
    mutex_exit(pp.p_lock)  # fork.c:1191
    mutex_exit(p.p_lock)


def _vfork_released(K: Kernel, cp: Proc, pid: int) -> Callable[[], str | None]:
    """Called with the parent's p_lock held; the test it returns reads the
    child's slot with no lock (a deadline's diagnosis, not a decision).  For
    a sleeping vfork parent: why its child no longer owes it a wake-up."""
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
    """Called with no locks held (from post_syscall); returns with none held.
    The vfork parent waits until child ``pid`` gives the address space back,
    then restarts its other lwps."""
    from .pid import prfind
    from .sig import kcv_wait_sig

    pp = curproc_of(K, t)
    lw = K.lwps[t.slot]
    signalled = False
    K.count("vfork_waits")
    K.fire("proc:::vfork-wait-start", pp.s.p_pid, lw.t_tid, pid)
    # Each round finds the child afresh by pid: after a sleep the child may
    # have exited and its slot been reused, so nothing learnt before the
    # sleep is trusted, and a wake-up is only a hint to look again (a
    # sibling's exit also broadcasts p_cv).  Within a round each lock is
    # taken before the previous one is let go: the child's p_lock before
    # pidlock is dropped, so the child cannot exit and be freed while we look
    # at SVFORK; the parent's own p_lock (nested: the child's is held) before
    # the child's is dropped, so relvm, which needs both, cannot clear SVFORK
    # and signal between our look and our sleep.
    while True:
        mutex_enter(K.pidlock)  # fork.c:1236
        cp = prfind(K, pid)  # fork.c:1237
        if cp is None or cp.s.p_parent != pp.id:  # fork.c:1238
            mutex_exit(K.pidlock)
            break  # the child has exited
        mutex_enter(cp.p_lock)  # fork.c:1250
        mutex_exit(K.pidlock)
        if not cp.s.p_flag & SVFORK:  # fork.c:1252
            mutex_exit(cp.p_lock)  # fork.c:1259
            break  # the child has exec'd or is exiting
        mutex_enter_nested(pp.p_lock, 1)  # the child's p_lock is held: parent's is nested
        mutex_exit(cp.p_lock)
        # The child's lwp wakes us from relvm; if it exits first, or SVFORK is
        # clear for two deadlines while we still sleep, the wake-up was lost.
        waker = cp.s.p_tlist
        stuck = _vfork_released(K, cp, pid)
        if K.bug("vfwait_no_recheck"):
            _bug_vfwait_no_recheck(K, pp, waker, stuck)
            break
        # The wait may be long, so it is interruptible (cv_wait_sig), which
        # lets job control and /proc stop the parent meanwhile.  But the
        # parent may not return before the child lets go, and once a signal
        # is pending cv_wait_sig returns at once, every time: the loop would
        # spin.  So after the first interrupted sleep the wait is cv_wait.
        if not signalled:  # fork.c:1278
            signalled = not kcv_wait_sig(K, pp.p_cv, pp.p_lock, waker, stuck)
        else:
            cv_wait(pp.p_cv, pp.p_lock, patient=True, waker=waker, stuck=stuck)
        mutex_exit(pp.p_lock)  # fork.c:1282
    # The address space is the parent's alone again.  relvm has put the
    # watched pages back (a_wpage) and cleared SVFWAIT; what is left is
    # as_setwatch, re-applying their page protections, under the address
    # space's lock as writer and no mutex, as the seed does.  The model has
    # no page protections (docs/kernel.md, "What is simpler than illumos"),
    # so only the lock is taken, where and when illumos takes it.  Then,
    # after waiting out /proc, the other lwps are restarted.
    if pr_watch_active(K, pp):  # fork.c:1286
        lk = K.a_lock(pp.s.p_as)
        rw_enter(lk, RW_WRITER)
        rw_exit(lk)  # as_setwatch: no protections to re-apply
    mutex_enter(pp.p_lock)  # fork.c:1293
    prbarrier(K, pp)
    lw.t_flag &= ~T_VFPARENT
    continuelwps(K, pp)  # fork.c:1295
    mutex_exit(pp.p_lock)
    K.fire("proc:::vfork-wait-done", pp.s.p_pid, lw.t_tid, pid)


# ---- Code cut out of its host: the 2006 kernel's steps and the seeded bugs ----
#
# A finding names the kernel function a thread was in when it blocked or
# panicked (the innermost function of its call chain).  Every such function
# carries @_seeded_in(host), which names its frames after the function it was
# cut out of, so that findings, and the signatures the catalogue expects, read
# as they would with the mistake written in the host itself ("lock order: ...
# (relvm)", not "(_bug_relvm_parent_first)").

_F = TypeVar("_F", bound=Callable[..., Any])


def _seeded_in(host: str) -> Callable[[_F], _F]:
    """Takes no locks.  Give a seeded bug's code the name ``host`` in call chains."""
    def name(fn: _F) -> _F:
        f = cast(types.FunctionType, fn)
        f.__code__ = f.__code__.replace(co_name=host)
        return fn
    return name


# ---- The 2006 kernel: the seed's code where illumos later fixed it ----
#
# Each function below is the seed's version of one step that a later illumos
# fix changed (realfork.kernel.profiles.FIXES; what each fix changed and what
# it restores: realfork.verify.history and docs/profiles.md).  The fixed code
# above enters it by one ``if not K.fixed(id): ...`` line, so it runs only in
# the ``2006`` profile.  @_seeded_in names its frames after the function the
# step belongs to, as for the seeded bugs below.

@_seeded_in("getproc")
def _2006_zone_set_late(K: Kernel, pp: Proc) -> int:
    """Takes no locks.  The 2006 getproc (fork.c:883, fork.c:930): pid_assign
    makes the child visible with p_zone still NULL, and only the copy of the
    parent's fields sets it.  prfind_zone follows p_zone meanwhile: a NULL
    dereference (fixed by illumos 6439016, which sets the zone first)."""
    return 0


@_seeded_in("_as_dup_failed")
def _2006_fork_fail_under_prlock(K: Kernel, t: KThread, p: Proc, cp: Proc, err: int) -> Result:
    """Caller holds P_PR_LOCK on p; returns with nothing held.  The 2006
    as_dup failure path (fork.c:237-268): fork_fail, which takes every open
    file's f_tlock (fcnt_add), runs while P_PR_LOCK is still held; a /proc
    controller holding a file's f_tlock and waiting in sprlock for P_PR_LOCK
    closes the cycle.  A deadlock (fixed by illumos 6533743, which drops
    P_PR_LOCK first)."""
    fork_fail(K, cp)  # file locks taken under P_PR_LOCK
    _free_failed_child(K, p, cp)
    mutex_enter(p.p_lock)
    p.s.p_flag &= ~SFORKING
    pool_barrier_exit(K, p)
    continuelwps(K, p)
    sprunlock(K, p)  # drops p_lock
    return _forkerr(K, p, K.lwps[t.slot].t_tid, _as_dup_errno(err), "as_dup")


@_seeded_in("cfork")
def _fork_hooks_under_prlock(K: Kernel, p: Proc, cp: Proc) -> None:
    """Called with P_PR_LOCK held on ``p`` and no mutex; returns with neither.
    The 2006 order of cfork step 7's hooks (fork.c:273-297): shmfork and the
    helpers fork run under the parent's P_PR_LOCK, with SFORKING, and only
    then is P_PR_LOCK dropped.  The helpers fork waits for dtrace_lock (and
    mod_lock) while a DTrace consumer holding them may wait for this
    P_PR_LOCK in fasttrap_pid_enable: a deadlock (illumos 6556673, 6871629)."""
    s = p.s
    if s.p_segacct:  # fork.c:274
        shmfork(K, p, cp)
    if s.p_dtrace_count > 0:  # fork.c:282
        dtrace_fasttrap_fork(K, p, cp)
    if s.p_dtrace_helpers:  # fork.c:290
        dtrace_helpers_fork(K, p, cp)  # dtrace_lock, under P_PR_LOCK
    mutex_enter(p.p_lock)  # fork.c:295
    s.p_flag &= ~SFORKING  # fork.c:296
    sprunlock(K, p)  # drops p_lock (fork.c:297)


def _preemption_point(K: Kernel, t: KThread) -> None:
    """Takes no locks.  Where the dispatcher may take the CPU from a thread
    in the kernel: a noise point when noise is on, and a yield always.  Opens
    the window between a read and the use of what was read, which on real
    hardware is a few instructions wide."""
    from ..sync import noise

    if noise.ON:
        noise.point(K.dom, t)
    time.sleep(0)


@_seeded_in("cfork")
def _2006_corectl_hold_unlocked(K: Kernel, t: KThread, p: Proc, cp: Proc) -> None:
    """Called with no locks held: that is the mistake (illumos 6446530).
    fork.c:418-419: ``corectl_path_hold(cp->p_corefile = p->p_corefile)``
    and the same for the content, without the parent's p_lock.  Between the
    read of the parent's pointer and the hold, a coreadm of the parent can
    swap in a new object and release the old one, freeing it: the hold is
    then on a freed (or reused) object, a stale reference (a panic)."""
    s, cs = p.s, cp.s
    path = corectl_ref(K, s.p_corefile)  # the read
    _preemption_point(K, t)
    cs.p_corefile = corectl_path_hold(K, path)  # the hold
    content = corectl_ref(K, s.p_content)
    _preemption_point(K, t)
    cs.p_content = corectl_content_hold(K, content)


@_seeded_in("newproc")
def _2006_exec_vnodes_dropped(K: Kernel, cp: Proc) -> None:
    """Called with no locks held: the child is invisible (SIDL).
    fork.c:744-746 (illumos 6869037): a kernel process's p_exec and
    p_execdir are set NULL without VN_RELE, so the holds getproc took on the
    parent's exec vnodes are never released (v_count leaks, invariant G32)."""
    cp.s.p_exec = cp.s.p_execdir = NIL


@_seeded_in("newproc")
def _2006_newproc_free_listed(K: Kernel, pp: Proc, cp: Proc) -> None:
    """Called with no locks held; takes pidlock, then cp->p_lock.
    fork.c:812-824 (illumos 7412): after lwp_create fails, task_detach and
    the pool reference under both locks, then pid_exit, but no disown: the
    freed child stays on its parent's child and orphan lists, and the next
    walk of either (the parent's fork, wait or exit) follows a freed or
    reused slot (the stale-reference check on family pointers panics)."""
    mutex_enter(K.pidlock)
    mutex_enter(cp.p_lock)
    tk = task_detach(K, cp)
    pool_ref_add(K, cp.s.p_pool, -1)
    mutex_exit(cp.p_lock)
    pid_exit(K, cp)
    mutex_exit(K.pidlock)
    task_rele(K, tk)


# ---- Seeded bugs (realfork bugs): wrong on purpose, off the main path ----
#
# Each function below is one entry of realfork.verify.bugs.CATALOGUE, entered
# from the correct code by a single ``if K.bug(name): ...`` line and doing that
# step the wrong way.  None runs unless its bug is switched on.
#


@_seeded_in("cfork")
def _bug_holdlwp_cleared_unlocked(K: Kernel, p: Proc, lw: klwp_t) -> None:
    """Called with no locks held: that is the bug.  vfork clears TP_HOLDLWP
    before taking p_lock, a read-modify-write of t_proc_flag that can lose a
    concurrent change (illumos 6361360).  _clear_holdlwp's assertion panics
    at once.  (With vfork_keeps_holdlwp also on, nothing is cleared at all.)"""
    _clear_holdlwp(K, p, lw)


@_seeded_in("_clear_holdlwp")
def _bug_vfork_keeps_holdlwp(K: Kernel, p: Proc, lw: klwp_t) -> None:
    """Caller holds p->p_lock.  vfork leaves the caller's TP_HOLDLWP set
    (illumos 6339942): a pending lwp_suspend stops the vfork child, whose
    parent then waits for it forever."""
    return None


@_seeded_in("cfork")
def _bug_getproc_fail_skips_continuelwps(K: Kernel, p: Proc, lw: klwp_t, site: str) -> Result:
    """Called with no locks held.  When getproc fails, cfork leaves the pool
    barrier but forgets continuelwps (a classic mistake): the caller's other
    lwps stay held for good (invariant D18)."""
    mutex_enter(p.p_lock)
    pool_barrier_exit(K, p)
    mutex_exit(p.p_lock)
    return _forkerr(K, p, lw.t_tid, EAGAIN, site)




@_seeded_in("_upcount_release")
def _bug_fork_fail_skips_upcount_dec(K: Kernel, cp: Proc) -> None:
    """Called with no locks held.  fork_fail forgets upcount_dec (a classic
    mistake): every failed fork leaks one of its user's processes
    (invariant A5)."""
    return None






@_seeded_in("cfork")
def _bug_pidlock_dropped_before_forkret(K: Kernel, t: KThread, p: Proc, cp: Proc) -> Result:
    """Caller holds pidlock.  cfork drops pidlock before CL_FORKRET (a
    classic mistake), leaving the child unpinned between the two; CL_FORKRET's
    assertion that pidlock is held panics."""
    mutex_exit(K.pidlock)
    CL_FORKRET(K, t, p, cp)
    return 0, cp.s.p_pid, 0


@_seeded_in("relvm")
def _bug_relvm_parent_first(K: Kernel, t: KThread, p: Proc, pp: Proc) -> None:
    """Called with no locks held; returns with none held.  relvm takes the
    parent's p_lock before the child's (and skips the child's prbarrier), a
    classic mistake: the order p_lock/1 -> p_lock inverts vfwait's, which
    lockdep reports, and which deadlocks against a parent in vfwait."""
    while True:
        mutex_enter_nested(pp.p_lock, 1)
        mutex_enter(p.p_lock)
        if not pp.s.p_proc_flag & P_PR_LOCK:
            break
        mutex_exit(p.p_lock)
        prbarrier(K, pp)
        mutex_exit(pp.p_lock)
    _vfork_hand_back(K, t, p, pp)


@_seeded_in("_vfork_hand_back")
def _bug_relvm_lost_wakeup(K: Kernel, p: Proc, pp: Proc) -> None:
    """Caller holds the child's p_lock and the parent's; returns with
    neither.  relvm clears the parent's SVFWAIT but never signals p_cv (a
    classic mistake): the parent in vfwait sleeps on, a lost wake-up."""
    pp.s.p_flag &= ~SVFWAIT  # cleared, but nobody is told
    mutex_exit(pp.p_lock)
    mutex_exit(p.p_lock)


@_seeded_in("vfwait")
def _bug_vfwait_no_recheck(K: Kernel, pp: Proc, waker: int,
                           stuck: Callable[[], str | None]) -> None:
    """Caller holds the parent's p_lock; returns with it dropped.  vfwait
    sleeps once and trusts the wake-up without re-checking SVFORK (a classic
    mistake): a spurious wake-up (a sibling's exit) returns the parent to
    user mode on the address space its child still borrows."""
    cv_wait(pp.p_cv, pp.p_lock, patient=True, waker=waker, stuck=stuck)
    mutex_exit(pp.p_lock)
