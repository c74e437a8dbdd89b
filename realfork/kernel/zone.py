"""Two system calls of illumos outside fork.c that reach into it:
``coreadm`` (corectl.c's per-process core-file settings) and ``zone_create``
(zone.c's creation of a zone's ``zsched``, a kernel process made by
``newproc`` at run time from a user thread).

``coreadm PID, N`` gives process ``PID`` (0: the caller) the core-file
pattern and content ``N``.  As illumos's ``set_proc_info`` does, the new
objects are swapped in under pidlock and the target's ``p_lock``, and the
old ones are released after; the last release frees an object.  fork reads
the parent's pointers and holds them (cfork step 13): without the parent's
``p_lock`` (the 2006 code), a coreadm in between frees the object the fork
is about to hold (6446530).

``zone_create`` in illumos makes the zone's ``zsched`` with
``newproc(zsched, ..., syscid, ...)`` from the calling thread, so zsched
starts as the caller's child, with the holds ``getproc`` took on the
caller's exec vnodes (which newproc must give back: 6869037), and a failed
``lwp_create`` there must take the child off the caller's lists before
freeing it (7412).  What realfork keeps and what it leaves out:

* zsched is the caller's child and stays so until it exits; the caller
  reaps it with ``wait`` (illumos's zsched reparents itself to init with
  ``proc_detach`` at once, and init reaps it);
* no zone is made: zsched stays in the global zone, with its creator's
  credential and task (illumos moves it to the new zone, its kcred and a
  new task), and it starts no zone init;
* zsched's life is a short one: it sleeps a tick, as if the zone were
  booted and halted at once, and exits (illumos's waits for zone_boot, then
  for zone_destroy);
* ``zone_create`` returns zsched's pid (illumos returns the zone id).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..sync.kthread import KThread
from ..sync.mutex import mutex_enter, mutex_exit
from .errno_defs import EAGAIN, EINVAL, EPERM, ESRCH
from .pid import prfind
from .proc import Proc
from .resources import (
    corectl_alloc,
    corectl_content_rele,
    corectl_path_rele,
    crgetruid,
)
from .structs import (
    CLD_EXITED,
    CORECTL_CONTENT,
    CORECTL_PATH,
    LWP_STOPPED,
    SIDL,
    SSYS,
)

if TYPE_CHECKING:
    from .kernel import Kernel

Result = tuple[int, int, int]

ZSCHED = 1
"""The argument (``regs[0]``) of a kernel process's lwp that runs zsched
(newproc's ``arg``); pageout and fsflush have 0."""


def sys_coreadm(K: Kernel, t: KThread, p: Proc, pid: int, value: int) -> Result:
    """Called with no locks held (system call entry).  Give process ``pid``
    (0: the caller) core-file pattern and content ``value``.

    Locks: pidlock to find the target, then its p_lock for the swap (as
    illumos's set_proc_info and set_one_proc_info); the old objects are
    released with neither held.  illumos sets the pattern or the content in
    one call and takes ``pid`` 0 for the caller's process group; realfork
    sets both, for the caller."""
    if value < 0:
        return EINVAL, 0, 0
    path = corectl_alloc(K, CORECTL_PATH, value)
    content = corectl_alloc(K, CORECTL_CONTENT, value)
    err = 0 if path and content else EAGAIN
    old_path = old_content = 0
    if not err:
        mutex_enter(K.pidlock)
        q = p if pid in (0, p.s.p_pid) else prfind(K, pid)
        if q is None or q.s.p_stat == SIDL:  # a child in SIDL is fork's to set up
            err = ESRCH
        else:
            mutex_enter(q.p_lock)
            me = crgetruid(K, p.s.p_cred)
            if q.s.p_flag & SSYS or (me != 0 and me != crgetruid(K, q.s.p_cred)):
                err = EPERM  # a kernel process has no core file
            else:
                # The swap, under the target's p_lock: a fork of the target
                # reads and holds the pointers under the same lock (cfork
                # step 13), so it holds either the old objects before they
                # are released below or the new ones.  A fork that read the
                # old pointer without p_lock (the 2006 code) may hold it
                # after the release below has freed it.
                old_path, q.s.p_corefile = q.s.p_corefile, path
                old_content, q.s.p_content = q.s.p_content, content
                path = content = 0
            mutex_exit(q.p_lock)
        mutex_exit(K.pidlock)
    # The old objects (or the new ones, on failure) are nobody's now.
    for obj in (path, old_path):
        corectl_path_rele(K, obj)
    for obj in (content, old_content):
        corectl_content_rele(K, obj)
    return err, 0, 0


def sys_zone_create(K: Kernel, t: KThread, p: Proc, a0: int, a1: int) -> Result:
    """Called with no locks held (system call entry).  Create a zone's
    zsched: a kernel process, the caller's child, by newproc(syscid).
    (0, zsched's pid) or EAGAIN; EPERM unless the caller is root
    (PRIV_SYS_CONFIG)."""
    from .fork import newproc

    if crgetruid(K, p.s.p_cred) != 0:
        return EPERM, 0, 0
    cp = newproc(K, t, syscid=True, name="zsched", prepare=_zsched_prepare)
    if cp is None:
        return EAGAIN, 0, 0
    return 0, cp.s.p_pid, 0


def _zsched_prepare(K: Kernel, cp: Proc, ct: KThread) -> None:
    """Called with no locks held; the child is not yet running.  Its lwp
    runs zsched_main (through sysproc_main: pc -2, argument ZSCHED)."""
    lw = K.lwps[ct.slot]
    lw.pc = -2
    lw.regs[0] = ZSCHED


def zsched_main(K: Kernel, t: KThread) -> None:
    """Called with no locks held; never returns.  zsched's life, shortened:
    a tick's sleep (the zone booted and halted), then exit.

    Its OS thread starts before newproc has set the lwp running
    (lwp_create_done), so it first waits for that, as every user lwp does:
    run on at once, it could exit before newproc's lwp_create_done, which
    would then count a running lwp in a zombie (p_lwprcnt, H33)."""
    from ..sync.condvar import cv_wait
    from .clock import delay, lwp_cpu_start
    from .exit import exit_proc

    lw = K.lwps[t.slot]
    lwp_cpu_start(lw)
    p = K.proc(lw.t_procp)
    mutex_enter(p.p_lock)
    while lw.t_kstate == LWP_STOPPED:
        cv_wait(K.t_cv(t), p.p_lock, patient=True)
    mutex_exit(p.p_lock)
    delay(K, 1)
    exit_proc(K, t, p, CLD_EXITED, 0)
