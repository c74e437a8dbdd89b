"""``os/main.c``: bring the kernel up.  The objects every process refers to
(the kernel address space, the global zone, project 0, task0, the default
pool, the system contract, the root vnode, kcred), then p0 (``sched``), then
the system processes ``pageout`` and ``fsflush`` through ``newproc``'s
syscid path.  init is created by each run (``start_init``).

Boot ends at rest: ``kernel_main`` returns only once the lwps of pageout and
fsflush sleep in their idle wait, holding no lock (``await_idle``).  Their OS
threads start asynchronously (on the processes backend, in host processes
that may not even run yet), so without that a check right after boot or
after a short run could catch one between taking its ``p_lock`` and
sleeping (D17)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import KernelPanic
from ..sync.condvar import cv_wait
from ..sync.kthread import KThread
from ..sync.mutex import mutex_enter, mutex_exit
from ..sync.structs import TS_SLEEP
from .errno_defs import EAGAIN
from .fork import newproc
from .lwpdir import dir_alloc, dir_install
from .pid import pid_assign
from .resources import (
    VN_HOLD,
    contract_create,
    corectl_alloc,
    corectl_content_hold,
    corectl_path_hold,
    corectl_ref,
    cred_create,
    pool_create,
    pool_ref_add,
    project_create,
    rctl_set_create,
    task_attach,
    task_create,
    vn_create,
    zone_create,
)
from .session import pgjoin, pgrp_create, sess_create
from .structs import CORECTL_CONTENT, CORECTL_PATH, SRUN, SSYS, TP_TWAIT
from .vm import as_alloc

if TYPE_CHECKING:
    from .kernel import Kernel
    from .proc import Proc



def format_kernel(K: Kernel) -> None:
    """Lay out every table and the kernel's synchronization objects (creator only)."""
    from .proc import NPROCSYNC

    p = K.params
    dom = K.dom
    for table in (K.procs, K.ases, K.creds, K.vnodes, K.tasks, K.projects, K.zones, K.pools,
                  K.pgrps, K.sessions, K.contracts, K.rctlsets, K.corectls, *K.dirs):
        table.format()
    m = K.kg_sync
    m.pidlock = dom.new_mutex("pidlock").idx
    m.pidlinklock = dom.new_mutex("pidlinklock").idx
    m.pr_pidlock = dom.new_mutex("pr_pidlock").idx
    m.zone_nlwps_lock = dom.new_mutex("zone_nlwps_lock").idx
    m.pool_barrier_lock = dom.new_mutex("pool_barrier_lock").idx
    m.pool_barrier_cv = dom.new_cv("pool_barrier_cv").idx
    m.task_hash_lock = dom.new_mutex("task_hash_lock").idx
    m.run_cv = dom.new_cv("run_cv").idx
    m.pause_lock = dom.new_mutex("pause_lock").idx
    m.pause_cv = dom.new_cv("pause_cv").idx
    m.f_tlock = dom.new_mutex("f_tlock").idx
    for name in ("dtrace_meta_lock", "mod_lock", "dtrace_lock", "shm_lock"):
        setattr(m, name, dom.new_mutex(name).idx)
    m.procsync_base = dom.g.nsync
    for _slot in range(p.nproc):  # renamed after their pid by pid_assign
        dom.new_mutex("p_lock", -1, "pid")
        for name in ("p_cv", "p_holdlwps", "p_lwpexit", "p_poolcv", "pr_pid_cv"):
            dom.new_cv(name, -1, "pid")
    assert dom.g.nsync == m.procsync_base + NPROCSYNC * p.nproc
    m.tcv_base = dom.g.nsync
    for slot in range(p.maxlwps):
        dom.new_cv("t_cv", slot + 1, "kthread")
    m.tlock_base = dom.g.nsync
    for slot in range(p.maxlwps):
        dom.new_mutex("thread_lock", slot + 1, "kthread")
    m.aslock_base = dom.g.nsync
    for slot in range(K.ases.capacity):
        dom.new_rwlock("a_lock", slot + 1, "as")
    m.rcslock_base = dom.g.nsync
    for slot in range(K.rctlsets.capacity):
        dom.new_mutex("rcs_lock", slot + 1, "rctl")
    m.ctlock_base = dom.g.nsync
    for slot in range(K.contracts.capacity):
        dom.new_mutex("ct_lock", slot + 1, "ct")
    K._bind_locks()
    g = K.g
    g.v_proc = p.nproc
    g.v_maxupttl = p.v_maxupttl
    g.v_maxup = p.v_maxup
    g.maxpid = p.maxpid
    g.minpid = 1
    g.mpid = 1  # init takes pid 1 itself; others start after it
    g.ncpus = p.ncpus
    g.next_taskid = 0
    g.next_ctid = 1
    K.faults.format(p.faults)


def kernel_main(K: Kernel, t: KThread) -> None:
    """Create p0 and the system processes.  ``t`` is the supervisor's borrowed
    kernel thread, which does sched's work (p0 has no lwps of its own)."""
    g = K.g
    g.kas = as_alloc(K)
    zone = g.global_zone = zone_create(K, 0)
    proj = project_create(K, 0)
    g.pool_default = pool_create(K, 0)
    g.sys_contract = contract_create(K)
    g.task0 = task_create(K, proj, zone)
    rootvp = vn_create(K, "/")
    vn_create(K, "/sbin/init")
    kcred = cred_create(K, 0, zone, privileged=True)
    # The default core-file pattern and content (the global zone's, which the
    # kernel holds for good); init starts with them and its forks inherit them.
    g.corectl_path = corectl_alloc(K, CORECTL_PATH, 0, default=True)
    g.corectl_content = corectl_alloc(K, CORECTL_CONTENT, 0, default=True)
    # p0: sched
    p0 = pid_assign(K, 0, zone=zone)
    assert p0 is not None and p0.slot == 0
    s = p0.s
    s.p_flag = SSYS
    s.p_stat = SRUN
    s.p_cred = kcred
    s.p_zone = zone
    s.p_as = g.kas
    s.u_cdir = rootvp
    VN_HOLD(K, rootvp)
    s.p_rctls = rctl_set_create(K)
    s.p_ct_process = g.sys_contract
    s.p_lwpfree = -1
    d = dir_alloc(K, 2)
    dir_install(K, p0, d, 2)
    s.p_pool = g.pool_default
    pool_ref_add(K, g.pool_default, 1)
    K.lwps[t.slot].t_procp = p0.id
    mutex_enter(K.pidlock)
    g.nproc = 1
    g.practive = p0.id
    sess = sess_create(K, 0)
    pg = pgrp_create(K, 0, sess)
    pgjoin(K, p0, pg)
    mutex_enter(p0.p_lock)
    task_attach(K, g.task0, p0)
    mutex_exit(p0.p_lock)
    mutex_exit(K.pidlock)
    from .resources import task_rele

    task_rele(K, g.task0)  # task_create's creator hold: p0's membership keeps it
    sysprocs = []
    for name in ("pageout", "fsflush"):
        cp = newproc(K, t, syscid=True, name=name, prepare=_sysproc_prepare)
        if cp is None:
            K.dom.panic(f"cannot create {name}")
        sysprocs.append(cp)
    await_idle(K, sysprocs)


IDLE_WAIT_MIN_S = 60.0  # the least a boot waits for its system processes to sleep


def await_idle(K: Kernel, procs: list[Proc]) -> None:
    """Return once the lwp of every proc of ``procs`` (system processes) sleeps
    in ``sysproc_main``'s idle wait on its ``t_cv``, holding no lock.

    Until then its OS thread may not have started, may hold ``p_lock`` on
    its way to the wait, or may be taking ``lwp_create_done``'s wake-up
    (``newproc`` sets it running after starting it).  Nothing wakes it once
    it is there, so every later quiescent point has it asleep.  The wait is
    for the OS to schedule threads, which a loaded machine may put off for
    seconds, so it is bounded generously (ten kernel deadlines, a minute at
    least) rather than by one deadline; a host that dies panics the kernel
    and ends it at once."""
    dom = K.dom
    slots = dom.kthreads.slots
    tcv = K.kg_sync.tcv_base
    tids = [p.s.p_tlist for p in procs]
    deadline = time.monotonic() + max(IDLE_WAIT_MIN_S, 10 * dom.timeout_ns / 1e9)
    while True:
        left = [tid for tid in tids
                if not (slots[tid - 1].t_state == TS_SLEEP
                        and slots[tid - 1].t_wchan == tcv + tid  # its t_cv (index + 1)
                        and not slots[tid - 1].t_held[0])]
        if not left:
            return
        if dom.g.panicked or dom.g.shutting_down:
            raise KernelPanic("kernel panicked" if dom.g.panicked else "kernel shut down")
        if time.monotonic() > deadline:
            dom.panic(f"system processes {[dom.thread_name(tid) for tid in left]} did not "
                      f"reach their idle wait", kind="hang")
        time.sleep(0.001)


def _sysproc_prepare(K: Kernel, cp: Proc, ct: KThread) -> None:
    K.lwps[ct.slot].pc = -2  # runs sysproc_main, not user code


def sysproc_main(K: Kernel, t: KThread) -> None:
    """Called with no locks held.  pageout and fsflush: nothing to page or
    flush in realfork, so they wait, idle (no deadline, holding no lock),
    until the kernel shuts down.  A zsched (``zone_create``) runs its own
    short life instead."""
    from .zone import ZSCHED, zsched_main

    if K.lwps[t.slot].regs[0] == ZSCHED:
        zsched_main(K, t)
        return
    p = K.proc(K.lwps[t.slot].t_procp)
    cv = K.t_cv(t)
    mutex_enter(p.p_lock)
    while True:
        cv_wait(cv, p.p_lock, idle=True)


def start_init(K: Kernel, t: KThread, entry: int) -> tuple[int, Proc | None]:
    """Create init (pid 1) running the user's program from ``entry``, as uid 0."""
    def prepare(K: Kernel, cp: Proc, ct: KThread) -> None:
        cp.s.p_as = as_alloc(K)  # init's exec, condensed: a fresh address space
        cp.s.p_exec = _init_vnode(K)
        VN_HOLD(K, cp.s.p_exec)
        cp.s.p_corefile = corectl_path_hold(K, corectl_ref(K, K.g.corectl_path))
        cp.s.p_content = corectl_content_hold(K, corectl_ref(K, K.g.corectl_content))
        K.lwps[ct.slot].pc = entry
        # exec makes lwp 1 lwp_wait()able (illumos: exec_common sets
        # TP_TWAIT; lwp_create does not, and newproc's lwp 1 of a kernel
        # process stays without it).  Its fork1/forkall clones inherit it.
        mutex_enter(cp.p_lock)
        K.lwps[ct.slot].t_proc_flag |= TP_TWAIT
        mutex_exit(cp.p_lock)
        K.g.proc_init = cp.id

    cp = newproc(K, t, syscid=False, fixed_pid=1, name="init", prepare=prepare)
    return (0 if cp is not None else EAGAIN), cp


def _init_vnode(K: Kernel) -> int:
    for i in K.vnodes.used():
        if K.vnodes.slots[i].v_name == b"/sbin/init":
            return i + 1
    return 0
