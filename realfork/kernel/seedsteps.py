"""The seed's steps, function by function, and how realfork carries each.

A leaf and data only (it imports nothing; ``tools/fidelity.py`` and
tests/test_fidelity_trace.py read it).  The seed is illumos's ``fork.c`` of
June 2006, which is not part of this repository; a step is named here by the
fork.c line of its first statement (``fork.c:233``) and a few words in the
seed's own terms.  The realfork code that carries a step says so with a
comment naming the same anchor, ``# fork.c:233``, on the step's line or the
comment line just above it.

forklwp is the exception: the seed calls it but does not contain it (it lives
in illumos's ``lwp.c``).  Its steps are numbered in the order illumos's
forklwp takes them, and anchored as ``forklwp#N``.

Each step has a class:

* ``faithful`` -- done as the seed does it, in the seed's order;
* ``reordered`` -- done, but not where the seed does it (the reason says
  where and why);
* ``simplified`` -- done in a reduced form (the reason says what is left out);
* ``missing`` -- not done at all (the reason says why it does not matter,
  or what is lost);
* ``profile:<bugid>`` -- a step where the 2006 kernel and the fixed one differ
  by a later illumos fix (``realfork.kernel.profiles.FIXES``); both forms
  run (``K.fixed(id)`` chooses) and the reason says what each does and
  which function does it;
* ``extra`` -- work realfork does that the seed does not; it has no anchor and
  is found by a fragment of its code (``find``) in the function ``where``.

Steps are listed in the seed's order within each function.  ``path`` names the
way through the function a step is on (``main``, a failure path, one kind of
process), because realfork may carry one seed path in a helper of its own and
order is only compared within one path of one realfork function.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["CLASSES", "FUNCTIONS", "MODULES", "STEPS", "Step"]

CLASSES: tuple[str, ...] = ("faithful", "reordered", "simplified", "missing", "profile", "extra")
"""The step classes (``profile`` is written ``profile:<bugid>``)."""

MODULES: tuple[str, ...] = ("realfork/kernel/fork.py",)
"""The modules, relative to the repository, whose comments carry the anchors."""

FUNCTIONS: tuple[str, ...] = ("cfork", "getproc", "fork_fail", "forklwp_fail", "forklwp",
                              "newproc", "relvm", "vfwait")
"""The emulated functions, in the table's order."""


class Step(NamedTuple):
    anchor: str  # "fork.c:233", "forklwp#4"; "" for an extra
    name: str    # in the seed's words
    cls: str     # one of CLASSES (profile as "profile:<bugid>")
    reason: str = ""
    path: str = "main"
    find: str = ""   # extras: a fragment of realfork's code that locates the step
    where: str = ""  # extras: the realfork function that holds ``find``


def _f(line: int, name: str, note: str = "") -> Step:
    return Step(f"fork.c:{line}", name, "faithful", note)


def _r(line: int, name: str, reason: str) -> Step:
    return Step(f"fork.c:{line}", name, "reordered", reason)


def _s(line: int, name: str, reason: str) -> Step:
    return Step(f"fork.c:{line}", name, "simplified", reason)


def _m(line: int, name: str, reason: str) -> Step:
    return Step(f"fork.c:{line}", name, "missing", reason)


def _p(line: int, name: str, bugid: str, reason: str) -> Step:
    return Step(f"fork.c:{line}", name, f"profile:{bugid}", reason)


def _x(name: str, where: str, find: str, reason: str) -> Step:
    return Step("", name, "extra", reason, find=find, where=where)


def _on(path: str, *steps: Step) -> tuple[Step, ...]:
    return tuple(s._replace(path=path) for s in steps)


STEPS: dict[str, tuple[Step, ...]] = {
    "cfork": (
        *_on("main",
             _f(144, "curthread == p->p_agenttp: ENOTSUP"),
             _f(149, "secpolicy_basic_fork(CRED())"),
             _f(161, "holdlwps(isfork1 ? SHOLDFORK1 : SHOLDFORK)"),
             _f(162, "aston(curthread); EINTR"),
             _x("fault point holdlwps", "cfork", 'should_fail("holdlwps")',
                "fault injection: a holdlwps failure on demand"),
             _m(172, "flush_user_windows_to_stack()",
                "SPARC only: realfork has no register windows"),
             _f(175, "mutex_enter(&p->p_lock)"),
             _f(183, "isvfork: t_proc_flag &= ~TP_HOLDLWP"),
             _f(187, "pool_barrier_enter()"),
             _f(188, "mutex_exit(&p->p_lock)"),
             _f(193, "getproc(&cp, 0)"),
             _m(202, "TRACE_2(TR_PROC_FORK)",
                "vtrace points are not modelled; proc:::create fires instead"),
             _s(213, "isvfork: as_clearwatch, stash a_wpage in p_wpage",
                "watched pages are a count moved between the as and the parent, "
                "under the as writer lock; no page protections to restore"),
             _f(222, "cp->p_as = as"),
             _x("the shared as counts its second process", "cfork", "a.a_nprocs += 1",
                "realfork counts the processes on an as, for the checker"),
             _f(223, "cp->p_flag |= SVFORK"),
             _f(232, "mutex_enter(&p->p_lock)"),
             _f(233, "sprlock_proc(p)"),
             _f(234, "p->p_flag |= SFORKING"),
             _f(235, "mutex_exit(&p->p_lock)"),
             _f(237, "as_dup(p->p_as, &cp->p_as)"),
             _p(274, "shmfork(p, cp)", "6556673",
                "2006: under P_PR_LOCK (fork._fork_hooks_under_prlock); fixed: after "
                "sprunlock, SFORKING still set; the attachments are a count per proc "
                "recounted under the stand-in shm_lock"),
             _p(282, "dtrace_fasttrap_fork(p, cp)", "6556673",
                "under P_PR_LOCK in both (2006: second of the hooks, in "
                "fork._fork_hooks_under_prlock; fixed: first, in cfork, before "
                "sprunlock); the tracepoints are a count the child's copy clears "
                "(no text to patch)"),
             _p(290, "dtrace_helpers_fork(p, cp)", "6556673",
                "2006: under P_PR_LOCK, waiting for dtrace_lock and mod_lock (the "
                "deadlock; fork._fork_hooks_under_prlock); fixed: in cfork, after "
                "sprunlock; helpers and providers are counts, "
                "the DTrace locks stand-in mutexes"),
             _p(295, "mutex_enter(&p->p_lock)", "6556673",
                "2006: after the hooks; fixed: after the fasttrap fork"),
             _p(296, "p->p_flag &= ~SFORKING", "6556673",
                "2006: with sprunlock; fixed: after the helpers fork, under p_lock "
                "taken again"),
             _p(297, "sprunlock(p)", "6556673",
                "2006: after every hook; fixed: right after the fasttrap fork"),
             _f(303, "rctl_set_create()"),
             _s(305, "rctl_set_dup_prealloc(p->p_rctls)",
                "counts the values a copy needs; nothing is allocated"),
             _f(306, "mutex_enter(&p->p_rctls->rcs_lock)"),
             _f(307, "rctl_set_dup_ready(): break, rcs_lock held"),
             _m(310, "rctl_prealloc_destroy(dup_gp) in the loop", "nothing was allocated"),
             _s(314, "cp->p_rctls = rctl_set_dup(..., RCD_DUP | RCD_CALLBACK)",
                "copies the value count; no rctl callbacks"),
             _f(316, "mutex_exit(&p->p_rctls->rcs_lock)"),
             _m(318, "rctl_prealloc_destroy(dup_gp)", "nothing was allocated"),
             _f(323, "p_lwpdir_sz: 2 for fork1, the parent's for forkall"),
             _f(327, "kmem_zalloc the directory, chain the free list"),
             _x("directory allocation failure goes to forklwperr", "cfork",
                "if not d:",
                "directories are fixed blocks in shared memory, which can run out"),
             _s(331, "p_tidhash_sz = (p_lwpdir_sz + 2) / 2; kmem_zalloc p_tidhash",
                "the hash chains live in the directory entries; only the size is set"),
             _m(340, "klgrpset_clear(cp->p_lgrpset)", "no lgroups"),
             _f(342, "fork1: clone = forklwp(curthread's lwp, cp, t_tid)"),
             _r(349, "fork1: clone inherits TP_TWAIT",
                "done inside forklwp, under the child's p_lock, with forkall's flags"),
             _s(353, "ASSERT(p_lwpwait == 0 && p_lwpdwait == 0)",
                "only p_lwpwait is asserted: realfork keeps no separate count of "
                "lwp_wait callers waiting for daemon lwps (p_lwpdwait)"),
             _f(355, "forkall: for each entry of the parent's lwp directory"),
             _f(363, "forkall: clwp = forklwp(ttolwp(t), cp, t->t_tid)"),
             _r(370, "forkall: clone inherits TP_TWAIT | TP_DAEMON",
                "done inside forklwp, under the child's p_lock"),
             _f(378, "t == curthread: clone = clwp, else T_FORKALL"),
             _f(386, "zombie lwp: new lwpent, lwp_hash_in(cp, clep)"),
             _f(400, "contract_process_fork(NULL, cp, p, B_TRUE)"),
             _x("the child's lwps get their OS threads", "cfork", "start_lwp(K, ct)",
                "each emulated lwp is a real thread; it is started here and waits, "
                "stopped, for continuelwps"),
             _f(407, "cp->p_lwpid = p->p_lwpid"),
             _f(408, "forkall: p_lwpdaemon, p_zombcnt, SLWPWRAP"),
             _p(418, "corectl_path_hold(); corectl_content_hold()", "6446530",
                "fixed: read and held under the parent's p_lock; 2006: read, a "
                "preemption point, then the hold, without the lock "
                "(_2006_corectl_hold_unlocked)"),
             _m(424, "forkpctx(p, cp)", "no process context ops"),
             _m(428, "utrap_dup(p, cp)", "SPARC only"),
             _s(435, "child stops on exit from fork: TP_PRSTOP, aston each lwp",
                "the exit mask is one flag, P_PR_STOPFORK; under the child's p_lock, "
                "as in the seed"),
             _s(451, "parent stops on exit from fork unless P_PR_ASYNC",
                "the exit mask is one flag, P_PR_STOPFORK"),
             _f(463, "lwp_setrval(clone, p->p_pid, 1)"),
             _r(466, "r_val1 = cp->p_pid; r_val2 = 0",
                "the parent's return values are made at the return"),
             _f(475, "mutex_enter(&p->p_lock); pool_barrier_exit()"),
             _f(479, "mutex_enter(&pidlock)"),
             _f(480, "mutex_enter(&cp->p_lock)"),
             _f(486, "pgjoin(cp, p->p_pgidp)"),
             _f(487, "cp->p_stat = SRUN"),
             _f(497, "TP_HOLDLWP: lwp_create_done(t)"),
             _s(501, "else: thread_lock(t); t_schedflag |= TS_CREATE",
                "under the clone's own thread_lock (sig.thread_lock, with the "
                "child's p_lock held), as in the seed; the seed's assertion that "
                "the lwp is TS_STOPPED with neither TS_CREATE nor TS_CSTART is not "
                "made"),
             _f(508, "mutex_exit(&cp->p_lock)"),
             _f(511, "vfork: CPU_STATS_ADDQ(sysvfork)"),
             _x("forkall counted apart from fork1", "cfork", "sysforkall += 1",
                "realfork keeps a third counter for forkall"),
             _f(512, "vfork: mutex_enter(&p->p_lock); SVFWAIT"),
             _x("vfork: the caller is marked T_VFPARENT", "cfork", "t_flag |= T_VFPARENT",
                "not in the seed: the mark of the 6533431 fix, made in the fixed "
                "profile only (if K.fixed); 6533431 is not a fork.c step but "
                "post_syscall's (syscall.vfwait_due): fixed, only the marked lwp "
                "calls vfwait; 2006, the return values alone decide (vfork "
                "returning (pid, 0) without error)"),
             _r(514, "vfork: DTRACE_PROC1(create)",
                "proc:::create fires once for every kind of fork, before the branch"),
             _f(515, "cv_broadcast(&pr_pid_cv[p->p_slot])"),
             _f(521, "mutex_enter(&cp->p_lock); mutex_exit(&pidlock)"),
             _f(523, "sigdefault(cp)"),
             _f(524, "continuelwps(cp); mutex_exit(&cp->p_lock)"),
             _r(527, "fork: CPU_STATS_ADDQ(sysfork)",
                "counted with sysvfork, before the branch"),
             _r(528, "fork: DTRACE_PROC1(create)",
                "proc:::create fires once for every kind of fork, before the branch"),
             _s(534, "CL_FORKRET(curthread, cp->p_tlist)",
                "one class: it continues the child and the parent and yields the CPU; "
                "no priority or quantum bookkeeping"),
             _f(535, "ASSERT(MUTEX_NOT_HELD(&pidlock))"),
             ),
        *_on("getproc failed",
             _f(194, "getproc failed: mutex_enter(&p->p_lock)"),
             _f(195, "pool_barrier_exit()"),
             _f(196, "continuelwps(p)"),
             _f(198, "error = EAGAIN"),
             ),
        *_on("as_dup failed",
             _p(239, "fork_fail(cp)", "6533743",
                "fixed: after sprunlock (fork._as_dup_failed); 2006: first, still "
                "under P_PR_LOCK, as the seed does it "
                "(fork._2006_fork_fail_under_prlock)"),
             _f(240, "mutex_enter(&pidlock)"),
             _r(241, "unlink cp from p_orphan and p_child",
                "after task_detach: the failure paths share one helper, in "
                "forklwperr's order"),
             _f(251, "mutex_enter(&cp->p_lock); task_detach(cp); pool_ref--"),
             _f(257, "pid_exit(cp); mutex_exit(&pidlock)"),
             _f(259, "task_rele(tk)"),
             _p(261, "mutex_enter(&p->p_lock); p_flag &= ~SFORKING", "6533743",
                "fixed: before fork_fail (fork._as_dup_failed); 2006: after the child "
                "is freed, as the seed does it (fork._2006_fork_fail_under_prlock)"),
             _f(263, "pool_barrier_exit()"),
             _f(264, "continuelwps(p)"),
             _p(265, "sprunlock(p)", "6533743",
                "fixed: before fork_fail (fork._as_dup_failed); 2006: last, after "
                "continuelwps (fork._2006_fork_fail_under_prlock)"),
             _f(270, "ENOMEM stays ENOMEM, any other error is EAGAIN"),
             ),
        *_on("forklwperr",
             _s(542, "vfork: give the stashed watched pages back, as_setwatch",
                "the count goes back under the as writer lock; nothing to re-protect"),
             _x("vfork: the as loses the child", "_forklwperr", "a.a_nprocs -= 1",
                "realfork counts the processes on an as; SVFORK is cleared too"),
             _m(555, "shmexit(cp)",
                "attachments are only counted (p_segacct, shm_nattch) and never "
                "detached: the counts shmfork gave a failed child stay"),
             _f(557, "cp->p_as = &kas; as_free(as)"),
             _r(562, "free the lwpents and the directory",
                "after forklwp_fail, one dir_free for the directory and its entries"),
             _r(573, "kmem_free(cp->p_tidhash)",
                "the hash chains live in the directory, freed with it"),
             _f(579, "forklwp_fail(cp)"),
             _f(580, "fork_fail(cp)"),
             _f(581, "rctl_set_free(cp->p_rctls)"),
             _x("leave the contract, if joined", "_forklwperr", "contract_process_exit(K, cp)",
                "defensive: the seed's last failure point is the contract join, so a "
                "failed child is never a member"),
             _f(582, "mutex_enter(&pidlock); (&cp->p_lock); task_detach(cp); pool_ref--"),
             _f(594, "unlink cp from p_orphan and p_child"),
             _f(604, "pid_exit(cp); mutex_exit(&pidlock)"),
             _f(607, "task_rele(tk)"),
             _f(609, "mutex_enter(&p->p_lock); pool_barrier_exit()"),
             _f(611, "continuelwps(p)"),
             _f(613, "error = EAGAIN"),
             ),
        *_on("forkerr",
             _f(615, "forkerr: return set_errno(error)"),
             _x("count the failure, fire proc:::fork-fail", "_forkerr", 'K.count("fork_fail")',
                "observability: the errno and the fault site of every failed fork"),
             ),
    ),
    "fork_fail": (
        _f(626, "fcnt_add(fip, -1)"),
        _s(627, "sigdelq(cp, NULL, 0)", "the pending signals are a mask, cleared"),
        _f(629, "mutex_enter(&pidlock); upcount_dec(ruid, zoneid)"),
        _f(636, "crfree(cp->p_cred)"),
        _m(638, "kmem_free(fip->fi_list)", "the file table is a count, not a list"),
        _f(640, "VN_RELE(u.u_cdir); VN_RELE(u.u_rdir)"),
        _f(643, "VN_RELE(cp->p_exec); VN_RELE(cp->p_execdir)"),
        _m(647, "refstr_rele(u.u_cwd)", "no cwd string"),
    ),
    "forklwp_fail": (
        _f(664, "while ((t = p->p_tlist) != NULL)"),
        _r(668, "unlink t from p_tlist",
           "the list is dropped whole after the loop, p_tlist = NULL"),
        _f(672, "p->p_lwpcnt--"),
        _f(676, "tk_nlwps--, kpj_nlwps--, zone_nlwps-- under zone_nlwps_lock"),
        _m(683, "ASSERT(t->t_schedctl == NULL)", "no schedctl"),
        _m(685, "free t->t_door", "no doors"),
        _m(689, "lwp_ctmpl_clear(ttolwp(t))", "no contract templates on lwps"),
        _s(695, "under pidlock: off the all-threads list, CL_EXIT, t_joincv",
           "under pidlock, once per clone, kthread_free takes the thread out of the "
           "thread table; no class exit, no thread_join waiters"),
        _m(708, "lgrp_move_thread(t, NULL, 1)", "no lgroups"),
        _s(716, "t_state = TS_FREE; thread_rele(t); thread_free(t)",
           "one kthread_free, after clearing the lwp's process"),
    ),
    "newproc": (
        *_on("main",
             _m(736, "ASSERT(!(cid == syscid && ct != NULL))", "no contract out-parameter"),
             ),
        *_on("kernel process",
             _f(741, "syscid: getproc(&p, 1)"),
             _f(742, "return EAGAIN"),
             _f(744, "p->p_flag |= SNOWAIT"),
             _p(745, "p->p_exec = NULL; p->p_execdir = NULL", "6869037",
                "fixed: the holds getproc took are released first; 2006: only "
                "cleared (_2006_exec_vnodes_dropped)"),
             _s(748, "rctl_set_create(); rctl_set_init_prealloc()",
                "an empty set, made after the branch for both kinds of process"),
             _r(754, "no /proc tracing: p_sigmask, p_fltmask, u_systrap, masks emptied",
                "done in the kernel-process branch, before the rctl set that realfork makes "
                "after the branch for both kinds; the traced signals are emptied and "
                "P_PR_STOPFORK (realfork's stand-in for fork calls in the exit mask) "
                "cleared: there are no traced faults, system call traps or entry masks"),
             _s(760, "mutex_enter(&p->p_lock); rctl_set_init()",
                "the empty set is not initialised, and p_lock is not taken"),
             _m(767, "rctl_prealloc_destroy(init_gp)", "nothing was allocated"),
             ),
        *_on("init",
             _f(773, "init: getproc(&p, 0)"),
             _f(779, "task_create(0, p->p_zone); kpj_ntasks++"),
             _m(784, "rctl_rlimit_set_prealloc(); rctl_set_init_prealloc()",
                "nothing to preallocate"),
             _f(788, "mutex_enter(&pidlock); mutex_enter(&p->p_lock)"),
             _f(792, "task_detach(p); task_begin(tk, p)"),
             _r(794, "mutex_exit(&pidlock)",
                "after the child's p_lock, which has nothing more to protect"),
             _r(798, "rctl_set_init(); rctlproc_default_init()",
                "an empty set, made after the branch for both kinds of process"),
             _f(803, "task_rele(tk_old)"),
             _x("drop task_create's hold", "newproc", "task_rele(K, tk)",
                "realfork's task_attach takes the member's hold itself"),
             ),
        *_on("main",
             _f(808, "p->p_as = &kas"),
             _x("the two-entry lwp directory", "newproc", "dir_alloc(K, 2)",
                "realfork's lwp_create does not make a directory for a process "
                "that has none; it is given one first"),
             _x("fault point newproc.lwp_create", "newproc",
                'should_fail("newproc.lwp_create")',
                "fault injection: an lwp_create failure on demand (zone_create)"),
             _f(810, "lwp_create(pc, arg, 0, p, TS_STOPPED, pri, ..., cid, 1)"),
             ),
        *_on("lwp_create failed",
             _f(813, "fork_fail(p)"),
             _x("free the rctl set and the directory", "newproc", "rctl_set_free(K, cs.p_rctls)",
                "the seed leaves the failed child's rctl set behind"),
             _f(814, "mutex_enter(&pidlock); (&p->p_lock); task_detach(p); pool_ref--"),
             _p(821, "pid_exit(p); mutex_exit(&pidlock)", "7412",
                "fixed: the child is taken off its parent's lists first "
                "(disown_proc); 2006: freed still listed (_2006_newproc_free_listed)"),
             _f(823, "task_rele(tk)"),
             _f(825, "return EAGAIN"),
             ),
        *_on("main",
             _f(828, "init: contract_process_fork(sys_process_tmpl, p, curproc, B_FALSE)"),
             _x("the caller's prepare hook", "newproc", "prepare(K, cp, ct)",
                "boot sets up the new process (its program) before it runs"),
             _f(836, "p->p_lwpid = 1"),
             _f(837, "mutex_enter(&pidlock); pgjoin(p, curproc->p_pgidp); SRUN"),
             _x("the lwp gets its OS thread", "newproc", "start_lwp(K, ct)",
                "each emulated lwp is a real thread; started before pidlock is taken "
                "(it only waits, stopped, for lwp_create_done)"),
             _f(840, "mutex_enter(&p->p_lock); t_proc_flag &= ~TP_HOLDLWP"),
             _f(842, "lwp_create_done(lwptot(lwp))"),
             _f(844, "mutex_exit(&pidlock)"),
             _f(845, "return 0"),
             ),
    ),
    "getproc": (
        _s(862, "page_mem_avail(tune.t_minarmem)",
           "no memory accounting: a fault point only"),
        _f(864, "zone_status_get() >= ZONE_IS_SHUTTING_DOWN"),
        _s(868, "kmem_cache_alloc(process_cache); bzero",
           "the proc is a shared-memory slot that pid_assign takes and zeroes"),
        _m(874, "mutex_init p_crlock, p_pflock, p_ldtlock, p_maplock",
           "these locks are not modelled"),
        _s(880, "cp->p_stat = SIDL", "set by pid_assign"),
        _r(881, "cp->p_mstart = gethrtime()", "after pid_assign, which makes the slot"),
        _p(883, "pid_assign(cp)", "6439016",
           "fixed: pid_assign is given the zone, and sets p_zone before the pid is "
           "visible (getproc); 2006: the zone is set after pid_assign, once the "
           "child can already be found (fork._2006_zone_set_late)"),
        _x("fault point pid_assign", "getproc", 'should_fail("pid_assign")',
           "fault injection: a pid_assign failure on demand"),
        _s(884, "nproc == v.v_proc: procovf++, \"out of processes\"",
           "no console warning; nproc is read under pidlock"),
        _f(896, "mutex_enter(&pidlock)"),
        _f(897, "ASSERT(nproc < v.v_proc)", "a panic naming getproc"),
        _f(898, "cr = CRED(); ruid; zoneid"),
        _f(901, "nproc >= v_maxup && ... && secpolicy_newproc(cr) != 0"),
        _s(905, "mutex_exit(&pidlock); \"out of per-user processes\"; goto bad",
           "no console note"),
        _f(916, "nproc++"),
        _f(917, "upcount_inc(ruid, zoneid)"),
        _f(919, "put cp at the head of practive"),
        _f(923, "cp->p_ignore = pp->p_ignore"),
        _m(924, "cp->p_siginfo = pp->p_siginfo", "SA_SIGINFO is not modelled"),
        _f(925, "p_flag: SJCTL | SNOWAIT | SNOCD"),
        _f(926, "cp->p_sessp = pp->p_sessp; SESS_HOLD"),
        _f(928, "p_exec, p_execdir"),
        _f(930, "cp->p_zone = pp->p_zone"),
        _s(932, "brk and stack bases, sizes, page sizes, protections, usrstack, model",
           "only p_brksize and p_stksize are modelled"),
        _f(942, "cp->p_ppid = cp->p_ancpid = pp->p_pid"),
        _m(944, "cp->p_portcnt", "no event ports"),
        _m(949, "avl_create(&cp->p_warea)", "watched areas are a count"),
        _m(955, "p_stk_ctl, p_fsz_ctl, p_vmem_ctl, p_fno_ctl", "no cached rctl values"),
        _f(965, "cp->p_sibling = pp->p_child; ...; pp->p_child = cp"),
        _f(972, "p_child_ns = p_sibling_ns = NULL"),
        _f(975, "p_nextorph = pp->p_orphan; p_nextofkin = pp; pp->p_orphan = cp"),
        _m(982, "p_prof; p_rprof_cyclic = CYCLIC_NONE", "no profiling"),
        _f(989, "mutex_enter(&pp->p_lock); pool_default + SSYS or the parent's pool"),
        _f(996, "atomic_add_32(&pool_ref, 1)"),
        _f(1003, "mutex_enter(&cp->p_lock); task_attach(task0p or pp->p_task)"),
        _f(1009, "mutex_exit(&pidlock)"),
        _m(1011, "avl_create(&cp->p_ct_held)", "no held contracts"),
        _m(1018, "audit_newproc(cp)", "no auditing"),
        _f(1022, "crhold(cp->p_cred = cr)"),
        _f(1028, "fcnt_add(P_FINFO(pp), 1)"),
        _f(1030, "VN_HOLD(u.u_cdir); VN_HOLD(u.u_rdir)"),
        _m(1033, "refstr_hold(u.u_cwd)", "no cwd string"),
        _r(1040, "bcopy the parent's u-area",
           "only the signal handlers, copied with the dispositions (p_catch)"),
        _r(1041, "flist_fork(P_FINFO(pp), P_FINFO(cp))",
           "the child's file table is a count of references, set as soon as the "
           "references are taken, and a flag for an open /proc file (p_prfile), "
           "copied with the parent's other fields"),
        _m(1043, "u_start, u_ticks, u_mem, u_acflag = AFORK", "no accounting"),
        _s(1051, "P_PR_FORK: P_PR_TRACE | P_PR_FORK, p_sigmask, p_fltmask",
           "P_PR_STOPFORK (the exit mask) comes too; there is no fault mask"),
        _s(1056, "else: empty p_sigmask, p_fltmask, u_systrap, masks",
           "nothing to empty: the slot starts zeroed"),
        _f(1065, "SMSFORK: SMSFORK | SMSACCT"),
        _m(1071, "cp->p_fixalignment", "no alignment fix-ups"),
        _f(1073, "VN_HOLD(cp->p_exec); VN_HOLD(cp->p_execdir)"),
        _f(1077, "*cpp = cp; return 0"),
        *_on("bad",
             _m(1083, "mutex_destroy p_crlock, p_pflock, p_ldtlock",
                "these locks are not modelled"),
             _f(1088, "newpid != -1: proc_entry_free(); pid_rele()"),
             _s(1092, "kmem_cache_free(process_cache, cp)",
                "proc_entry_free gives the slot back"),
             _f(1104, "INCR_COUNT(&fork_fail_pending); delay(); DECR_COUNT"),
             _f(1108, "return -1"),
             ),
    ),
    "relvm": (
        _f(1122, "ASSERT(p_lwpcnt <= 1)"),
        _s(1124, "prrelvm()",
           "watch areas and watched pages are counts (p_wcount, a_wpage), dropped "
           "under p_lock after prbarrier and under the as writer lock; "
           "watch_disable has no counterpart"),
        _f(1126, "p->p_flag & SVFORK"),
        _f(1127, "pp = p->p_parent"),
        _f(1143, "try_again: mutex_enter(&p->p_lock), the child's first"),
        _f(1144, "prbarrier(p)"),
        _f(1145, "mutex_enter(&pp->p_lock)"),
        _f(1150, "pp P_PR_LOCK: exit p_lock, prbarrier(pp), exit pp->p_lock, again"),
        _f(1161, "p->p_flag &= ~SVFORK"),
        _m(1162, "kpreempt_disable()", "no preemption control"),
        _f(1163, "p->p_as = &kas"),
        _x("the as loses the child", "_vfork_hand_back", "a.a_nprocs -= 1",
           "realfork counts the processes on an as"),
        _m(1168, "hat_thread_exit(curthread)", "no HAT"),
        _s(1175, "pp->p_brkbase, p_brksize, p_stksize = the child's",
           "p_brkbase is not modelled"),
        _f(1183, "pp->p_flag &= ~SVFWAIT"),
        _s(1184, "give the parent's watched pages back to the as", "a count"),
        _x("fire proc:::relvm", "_vfork_hand_back", 'K.fire("proc:::relvm"',
           "observability"),
        _f(1190, "cv_signal(&pp->p_cv)"),
        _f(1191, "mutex_exit(&pp->p_lock); mutex_exit(&p->p_lock)"),
        _f(1194, "else: p->p_as != &kas"),
        _m(1197, "shmexit(p)",
           "attachments are only counted (p_segacct, shm_nattch) and never "
           "detached, at exit or exec"),
        _m(1202, "kpreempt_disable()", "no preemption control"),
        _f(1203, "mutex_enter(&p->p_lock); prbarrier(p)"),
        _f(1205, "as = p->p_as; p->p_as = &kas; mutex_exit(&p->p_lock)"),
        _m(1212, "hat_thread_exit(curthread)", "no HAT"),
        _f(1215, "as_free(as)"),
    ),
    "vfwait": (
        _x("count and fire proc:::vfork-wait-start", "vfwait", 'K.count("vfork_waits")',
           "observability"),
        _f(1236, "for (;;) mutex_enter(&pidlock)"),
        _f(1237, "cp = prfind(pid)"),
        _f(1238, "cp == NULL || cp->p_parent != pp: break"),
        _f(1250, "mutex_enter(&cp->p_lock); mutex_exit(&pidlock)"),
        _f(1252, "!(cp->p_flag & SVFORK): break"),
        _f(1259, "mutex_enter(&pp->p_lock); mutex_exit(&cp->p_lock)"),
        _x("name the waker and the lost wake-up test", "vfwait",
           "stuck = _vfork_released(K, cp, pid)",
           "a deadline's diagnosis: who owes the parent its wake-up"),
        _f(1278, "signalled ? cv_wait : cv_wait_sig on pp->p_cv"),
        _f(1282, "mutex_exit(&pp->p_lock)"),
        _s(1286, "pr_watch_active(pp): as_setwatch under the as writer lock",
           "the writer lock is taken and released; nothing to re-protect"),
        _f(1293, "mutex_enter(&pp->p_lock); prbarrier(pp)"),
        _x("clear T_VFPARENT", "vfwait", "lw.t_flag &= ~T_VFPARENT",
           "T_VFPARENT is the 6533431 fix's mark (set by cfork in the fixed "
           "profile only; cleared in both); SVFWAIT is relvm's to clear, as in "
           "the seed"),
        _f(1295, "continuelwps(pp); mutex_exit(&pp->p_lock)"),
    ),
    "forklwp": (
        Step("forklwp#1", "ASSERT(t == curthread || (SUSPENDED(t) && !lwp_asleep))",
             "faithful"),
        Step("forklwp#2", "flush_user_windows_to_stack()", "missing", "SPARC only"),
        Step("forklwp#3", "save_syscall_args()", "missing",
             "the arguments are in the lwp's saved registers already"),
        Step("", "fault point forklwp", "extra", "fault injection: a forklwp failure on demand",
             find='should_fail("forklwp")', where="forklwp"),
        Step("forklwp#4", "lwp_create(lwp_rtt, ..., cp, TS_STOPPED, t_pri, &t_hold, NOCLASS, "
             "lwpid)", "simplified",
             "no start routine or priority (the clone resumes where its original was); "
             "t_hold is copied after"),
        Step("forklwp#5", "*clwp = *lwp", "simplified",
             "field by field: the signal mask, errno and the return values"),
        Step("forklwp#6", "init_mstate(ct, LMS_STOPPED); bzero(lwp_ru)", "missing",
             "no microstate accounting or resource usage"),
        Step("forklwp#7", "lwp_cursig = lwp_extsig = 0; lwp_curinfo = NULL", "reordered",
             "after the copies; the lwp's pending signals (t_sig) are cleared too"),
        Step("forklwp#8", "ct->t_sysnum = t->t_sysnum", "faithful"),
        Step("forklwp#9", "restore lwp_thread, lwp_regs, lwp_fpu, lwp_ap, lwp_procp; zero "
             "timers and the last fault", "missing",
             "field-by-field copying never overwrote them; no timers"),
        Step("forklwp#10", "lwp_forkregs(lwp, clwp)", "reordered",
             "the pc and the registers are copied first"),
        Step("forklwp#11", "forkctx(t, ct)", "missing", "no thread context ops"),
        Step("forklwp#12", "door_fork(t, ct)", "missing", "no doors"),
        Step("forklwp#13", "lwp_ctmpl_copy(clwp, lwp)", "missing", "no contract templates on lwps"),
        Step("forklwp#14", "mutex_enter(&cp->p_lock); keep TP_HOLDLWP only if t has it",
             "faithful"),
        Step("forklwp#15", "SMSACCT: TP_MSACCT", "missing", "no microstate accounting"),
        Step("forklwp#16", "CL_ALLOC retry; CL_FORK(t, ct, bufp); t_cid", "missing",
             "one scheduling class with no per-thread data"),
        Step("forklwp#17", "return (clwp)", "faithful"),
    ),
}
"""Every function's steps, in the seed's order (see the module docstring)."""
