"""``os/exec.c`` as fork meets it: ``exec`` releases the address space with
``relvm`` (which is what frees a vfork parent), becomes single-lwp with tid
1, resets caught signals and starts the program over at a label."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..sync.kthread import KThread
from ..sync.mutex import mutex_enter, mutex_exit
from .errno_defs import EAGAIN, ENOTSUP
from .lwp import exitlwps
from .lwpdir import dir_alloc, dir_free, dir_install, lwp_hash_in
from .proc import Proc
from .procfs import prbarrier
from .resources import pool_barrier_enter, pool_barrier_exit
from .sig import sigdefault
from .structs import P_PR_EXEC, SEXECED, SJCTL, SNOWAIT, TP_DAEMON, TP_TWAIT

if TYPE_CHECKING:
    from .kernel import Kernel


def exec_common(K: Kernel, t: KThread, p: Proc, entry: int) -> int:
    """Replace the process image; 0, or an errno before the point of no return."""
    from .fork import relvm
    from .vm import as_alloc

    s = p.s
    lw = K.lwps[t.slot]
    if s.p_agenttp == t.id:
        return ENOTSUP
    mutex_enter(p.p_lock)  # prexecstart
    prbarrier(K, p)
    lw.lwp_nostop += 1
    s.p_proc_flag |= P_PR_EXEC
    mutex_exit(p.p_lock)
    err = exitlwps(K, t, p)
    if err:
        mutex_enter(p.p_lock)
        lw.lwp_nostop -= 1
        s.p_proc_flag &= ~P_PR_EXEC
        mutex_exit(p.p_lock)
        return err
    mutex_enter(p.p_lock)
    pool_barrier_enter(K, p)
    mutex_exit(p.p_lock)
    relvm(K, t, p)  # a vfork parent is released here
    mutex_enter(p.p_lock)
    pool_barrier_exit(K, p)
    mutex_exit(p.p_lock)
    new_as = as_alloc(K)
    if not new_as:  # past the point of no return: fatal
        from .sig import sigtoproc
        from .signal_defs import SIGKILL

        mutex_enter(p.p_lock)
        sigtoproc(K, p, SIGKILL)
        mutex_exit(p.p_lock)
        return EAGAIN
    s.p_as = new_as
    s.p_brksize = s.p_stksize = 0
    sigdefault(K, p)
    s.p_flag &= ~(SNOWAIT | SJCTL)
    s.p_flag |= SEXECED
    # renumber the caller to tid 1 in a fresh two-entry directory
    mutex_enter(p.p_lock)
    prbarrier(K, p)
    old = s.p_lwpdir
    d = dir_alloc(K, 2)
    if d:
        dir_install(K, p, d, 2)
        dir_free(K, old)
        lwp_hash_in(K, p, 1, t.id)
        lw.t_tid = 1
        t.s.t_lwpid = 1
        s.p_lwpid = 1
        s.p_zombcnt = 0
    lw.t_proc_flag |= TP_TWAIT
    lw.t_proc_flag &= ~TP_DAEMON
    lw.lwp_nostop -= 1  # prexecend
    s.p_proc_flag &= ~P_PR_EXEC
    mutex_exit(p.p_lock)
    lw.pc = entry
    lw.spinleft = 0
    for i in range(len(lw.regs)):
        lw.regs[i] = 0
    K.count("nexec")
    K.fire("proc:::exec", s.p_pid, lw.t_tid, entry)
    return 0
