"""DTrace and System V shared memory as fork meets them: cfork's three hooks
(``dtrace_fasttrap_fork``, ``shmfork``, ``dtrace_helpers_fork``) and the
consumer side that meets the hooks at P_PR_LOCK (USDT probes enabled and
torn down in a process), after ``dtrace/dtrace.c``, ``dtrace/fasttrap.c`` and
``os/shm.c``.

A model, not a tracer: no probe ever fires.  What is kept is the state each
hook copies and, above all, who takes which lock in which order.

* ``p_dtrace_helpers``: how many helper providers (USDT providers described
  by the program's DOF) a process has registered, with the ``dtrace_helper``
  system call (illumos: the DTRACEHIOC_ADDDOF ioctl) or by inheriting them
  through the helpers fork.  Under ``dtrace_lock``.
* ``p_dtrace_count``: how many USDT tracepoints are enabled in the process
  (``usdt_enable PID, 1``); changed by a consumer holding the process's
  P_PR_LOCK, read by cfork under its own.
* ``p_segacct``: how many times the process attached the shared memory
  segment (``shmat``); ``shm_nattch`` in the kernel globals counts the
  attachments, under the segment's ipc lock ``shm_lock``.  Detaching (shmdt,
  shmexit at exit and exec) is not modelled: the count only grows.

The locks are stand-ins for the illumos kernel mutexes of the same names:
``dtrace_meta_lock`` (calls into the meta provider, fasttrap's USDT side),
``mod_lock`` (the module list, walked when a provider is registered and held
while one is unregistered), ``dtrace_lock`` (the framework's state: helpers,
providers, probes, enablings) and ``shm_lock``.  Their order is

    dtrace_meta_lock -> mod_lock -> dtrace_lock -> pidlock -> p_lock

and P_PR_LOCK comes after ``dtrace_lock`` too: a consumer holds
``dtrace_lock`` (and, tearing a provider down, ``mod_lock``) while it
sprlocks the process whose tracepoints it writes (``fasttrap_pid_enable``,
``fasttrap_pid_disable``).  So nothing may wait for ``mod_lock`` or
``dtrace_lock`` while it holds a process's P_PR_LOCK: the 2006 cfork did, in
its helpers fork (illumos 6556673 and 6871629; see cfork step 7).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..sync.kthread import _cpu
from ..sync.mutex import mutex_enter, mutex_exit
from .errno_defs import EMFILE, ENOENT, ESRCH
from .procfs import prunlock, sprlock, sprlock_proc, sprunlock
from .structs import P_PR_LOCK, SFORKING

if TYPE_CHECKING:
    from .kernel import Kernel
    from .proc import Proc

SHMSEG = 8  # attachments per process (the shmseg limit)
MAX_HELPERS = 8  # helper providers per process
Result = tuple[int, int, int]


def _prlocked_by_me(p: Proc) -> bool:
    """Takes no locks (reads the caller's own hold).  Does the calling
    kernel thread hold P_PR_LOCK on ``p``?"""
    return bool(p.s.p_proc_flag & P_PR_LOCK) and p.s.p_prowner == _cpu.t.id


# -- cfork's hooks ------------------------------------------------------------------------


def dtrace_fasttrap_fork(K: Kernel, p: Proc, cp: Proc) -> None:
    """Called with the parent's P_PR_LOCK held and no mutex; returns the same.
    The child's text is a copy of the parent's, tracepoints included: take
    them out of the child (fasttrap_fork), under the child's P_PR_LOCK.

    The parent's P_PR_LOCK is what keeps a consumer from enabling or removing
    a tracepoint of the parent half-way through the copy, so this hook runs
    under it in every kernel."""
    assert _prlocked_by_me(p), "dtrace_fasttrap_fork without the parent's P_PR_LOCK"
    mutex_enter(cp.p_lock)  # the child is SIDL: only we know of it
    sprlock_proc(K, cp)
    mutex_exit(cp.p_lock)
    cp.s.p_dtrace_count = 0  # every tracepoint removed from the child's copy
    mutex_enter(cp.p_lock)
    sprunlock(K, cp)  # drops the child's p_lock


def shmfork(K: Kernel, p: Proc, cp: Proc) -> None:
    """Called with no mutex held (the 2006 kernel also holds the parent's
    P_PR_LOCK).  The child inherits the parent's shared memory attachments:
    each is counted again under the segment's ipc lock.  The parent's list is
    read without p_lock: its other lwps are held, nobody else changes it."""
    for _ in range(p.s.p_segacct):
        mutex_enter(K.shm_lock)
        K.g.shm_nattch += 1
        mutex_exit(K.shm_lock)
    cp.s.p_segacct = p.s.p_segacct


def dtrace_helpers_fork(K: Kernel, p: Proc, cp: Proc) -> None:
    """Called with no mutex held; takes dtrace_lock, dtrace_meta_lock and
    mod_lock, so its caller must not hold P_PR_LOCK (the 2006 kernel does:
    6556673).  Copy the parent's helpers to the child and register the
    child's USDT providers (dtrace_helpers_duplicate).  Fires
    ``proc:::helpers-fork`` (child pid, whether the caller holds the parent's
    P_PR_LOCK, whether the parent has SFORKING) first."""
    K.fire("proc:::helpers-fork", p.s.p_pid, K.lwps[_cpu.t.slot].t_tid, cp.s.p_pid,
           int(_prlocked_by_me(p)), int(bool(p.s.p_flag & SFORKING)))
    dtrace_helpers_duplicate(K, p, cp)


def dtrace_helpers_duplicate(K: Kernel, p: Proc, cp: Proc) -> None:
    """Called with no mutex held.  Under dtrace_lock, the child gets a copy
    of every helper; then, with dtrace_lock dropped, its providers are
    registered with the meta provider."""
    mutex_enter(K.dtrace_lock)
    n = cp.s.p_dtrace_helpers = p.s.p_dtrace_helpers
    mutex_exit(K.dtrace_lock)
    if n:
        dtrace_helper_provider_register(K, cp)


def dtrace_helper_provider_register(K: Kernel, p: Proc) -> None:
    """Called with no mutex held.  Under dtrace_meta_lock, the meta provider
    creates ``p``'s USDT providers, one per helper (dtrace_helper_provide)."""
    mutex_enter(K.dtrace_meta_lock)
    for _ in range(p.s.p_dtrace_helpers):
        dtrace_register(K)
    mutex_exit(K.dtrace_meta_lock)


def dtrace_register(K: Kernel) -> None:
    """Caller holds dtrace_meta_lock.  fasttrap registers a provider with the
    framework: the module list is walked for it under mod_lock
    (dtrace_probe_provide) and the framework's provider list is under
    dtrace_lock, taken inside mod_lock."""
    mutex_enter(K.mod_lock)
    mutex_enter(K.dtrace_lock)
    K.g.dtrace_nprov += 1
    mutex_exit(K.dtrace_lock)
    mutex_exit(K.mod_lock)


# -- the system calls ----------------------------------------------------------------------


def dtrace_helper(K: Kernel, p: Proc) -> Result:
    """Called with no locks held (system call entry).  Register one helper
    provider in the calling process (dtrace_helper_slurp); rv is how many it
    has now."""
    mutex_enter(K.dtrace_lock)
    if p.s.p_dtrace_helpers >= MAX_HELPERS:
        mutex_exit(K.dtrace_lock)
        return EMFILE, 0, 0
    p.s.p_dtrace_helpers += 1
    n = p.s.p_dtrace_helpers
    mutex_exit(K.dtrace_lock)
    mutex_enter(K.dtrace_meta_lock)
    dtrace_register(K)
    mutex_exit(K.dtrace_meta_lock)
    return 0, n, 0


def shmat(K: Kernel, p: Proc) -> Result:
    """Called with no locks held (system call entry).  Attach the shared
    memory segment once more: its ipc lock, then the caller's p_lock.  rv is
    the caller's attachment count."""
    mutex_enter(K.shm_lock)
    if p.s.p_segacct >= SHMSEG:
        mutex_exit(K.shm_lock)
        return EMFILE, 0, 0
    K.g.shm_nattch += 1
    mutex_enter(p.p_lock)
    p.s.p_segacct += 1
    n = p.s.p_segacct
    mutex_exit(p.p_lock)
    mutex_exit(K.shm_lock)
    return 0, n, 0


def usdt_enable(K: Kernel, pid: int, on: int) -> Result:
    """Called with no locks held (system call entry).  A DTrace consumer
    enables (``on``) or tears down the USDT probes of process ``pid``; rv is
    the target's enabled tracepoint count afterwards.  ESRCH if there is no
    such process (or it is being created or exiting), ENOENT if it has no
    USDT provider."""
    if on:
        return dtrace_enabling_match(K, pid)
    return dtrace_unregister(K, pid)


def dtrace_enabling_match(K: Kernel, pid: int) -> Result:
    """Called with no locks held.  Enabling: the probes are matched under
    dtrace_lock, and each is enabled with dtrace_lock still held."""
    mutex_enter(K.dtrace_lock)
    r = fasttrap_pid_enable(K, pid, +1)
    mutex_exit(K.dtrace_lock)
    return r


def dtrace_unregister(K: Kernel, pid: int) -> Result:
    """Called with no locks held.  Tear-down: the provider is removed under
    mod_lock and dtrace_lock, and its tracepoints are pulled out of the
    process under them."""
    mutex_enter(K.mod_lock)
    mutex_enter(K.dtrace_lock)
    r = fasttrap_pid_enable(K, pid, -1)
    mutex_exit(K.dtrace_lock)
    mutex_exit(K.mod_lock)
    return r


def fasttrap_pid_enable(K: Kernel, pid: int, delta: int) -> Result:
    """Caller holds dtrace_lock (and, for a tear-down, mod_lock).  Writing a
    tracepoint into a process's text needs the process held still: sprlock
    it, waiting for its P_PR_LOCK with dtrace_lock held.  That wait is one
    half of the 6556673 deadlock: it must never be for a process whose
    P_PR_LOCK holder waits for dtrace_lock or mod_lock."""
    q = sprlock(K, pid)
    if q is None:
        return ESRCH, 0, 0
    s = q.s
    if not s.p_dtrace_helpers:
        prunlock(K, q)
        return ENOENT, 0, 0
    s.p_dtrace_count = max(s.p_dtrace_count + delta, 0)
    n = s.p_dtrace_count
    prunlock(K, q)
    return 0, n, 0
