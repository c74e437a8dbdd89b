"""``os/pid.c``: pids, /proc slots, ``prfind`` and the per-user process count.

The pid hash is an array indexed by pid (``pidtab``); an entry is in use
while its ``struct pid`` exists.  Lock order: pidlock -> pidlinklock.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..sync.mutex import MUTEX_HELD, mutex_enter, mutex_exit
from .detect import zone_of
from .proc import Proc
from .structs import NIL, SIDL

if TYPE_CHECKING:
    from .kernel import Kernel


def pid_assign(K: Kernel, fixed: int | None = None, zone: int = 0) -> Proc | None:
    """Called with no locks held; takes and drops pidlinklock.  Take a /proc
    slot and a pid for a new proc; None if either is exhausted.

    The search starts after the last pid handed out (``mpid``) and skips
    pids still in use.  Like illumos's pid_assign, it wraps to ``minpid`` on
    *reaching* ``maxpid`` (``++mpid == maxpid ? minpid : mpid``): ``maxpid``
    itself is never handed out, the largest pid is ``maxpid - 1``, and a full
    cycle is the ``maxpid - minpid`` pids ``minpid .. maxpid - 1``.  (Only a
    ``fixed`` pid -- sched's 0, init's 1 -- bypasses the search.)  The slot's
    persistent ``p_lock`` is renamed after the new pid.
    """
    slot = K.procs.alloc()  # procentfree
    if slot is None:
        return None
    K.procs.zero(slot)
    K.procs.slots[slot].p_zone = zone  # before prfind can see it (the 6439016 fix)
    g = K.g
    tab = K.pidtab
    mutex_enter(K.pidlinklock)
    if fixed is not None:
        pid = fixed if not tab[fixed].pid_used else -1
    else:
        pid = -1
        cand = g.mpid
        for _ in range(g.maxpid - g.minpid):
            cand += 1
            if cand >= g.maxpid:  # wrap on reaching maxpid, not after it
                cand = g.minpid
            if not tab[cand].pid_used:
                pid = cand
                break
    if pid < 0:
        mutex_exit(K.pidlinklock)
        K.procs.free(slot)
        return None
    if fixed is None:
        g.mpid = pid
    e = tab[pid]
    e.pid_used = 1
    e.pid_ref = 1
    e.pid_prinactive = 0
    e.pid_prslot = slot + 1
    p = K.procs_h(slot)
    p.s.p_pid = pid
    p.s.p_stat = SIDL
    mutex_exit(K.pidlinklock)
    for lk in (p.p_lock, p.p_cv, p.p_holdlwps, p.p_lwpexit, p.p_poolcv, p.pr_pid_cv):
        lk.set_instance(pid)
    return p


def pid_rele(K: Kernel, pid: int) -> None:
    """Unhash and free the pid (pidlinklock)."""
    mutex_enter(K.pidlinklock)
    e = K.pidtab[pid]
    e.pid_used = 0
    e.pid_ref = 0
    e.pid_prslot = 0
    e.pid_prinactive = 0
    mutex_exit(K.pidlinklock)


def proc_entry_free(K: Kernel, p: Proc) -> None:
    """Mark the pid inactive and give the /proc slot back."""
    mutex_enter(K.pidlinklock)
    K.pidtab[p.s.p_pid].pid_prinactive = 1
    mutex_exit(K.pidlinklock)
    K.procs.free(p.slot)


def pid_exit(K: Kernel, p: Proc) -> None:
    """Free a proc that is off every family list (requires pidlock)."""
    from .session import pgexit, sess_rele

    assert MUTEX_HELD(K.pidlock)
    s = p.s
    if s.p_pgrp:
        pgexit(K, p)
    if s.p_sessp:
        sess_rele(K, s.p_sessp)  # SESS_RELE: the hold getproc took
        s.p_sessp = NIL
    # unlink from practive
    if s.p_prev:
        K.proc(s.p_prev).s.p_next = s.p_next
    elif K.g.practive == p.id:
        K.g.practive = s.p_next
    if s.p_next:
        K.proc(s.p_next).s.p_prev = s.p_prev
    s.p_next = s.p_prev = NIL
    pid = s.p_pid
    s.p_stat = 0
    proc_entry_free(K, p)
    pid_rele(K, pid)
    K.g.nproc -= 1


def prfind(K: Kernel, pid: int) -> Proc | None:
    """The proc with ``pid``, SIDL and SZOMB ones included (requires pidlock).

    illumos's prfind is ``prfind_zone(pid, zoneid)``, which compares the
    proc's zone (``p->p_zone->zone_id``) with the caller's unless the caller
    is in the global zone.  realfork follows ``p_zone`` for every caller (one
    zone is in use, so the comparison always succeeds): a proc visible here
    before its zone is set is the NULL dereference of 6439016."""
    assert MUTEX_HELD(K.pidlock)
    if not 0 <= pid <= K.g.maxpid:
        return None
    mutex_enter(K.pidlinklock)
    e = K.pidtab[pid]
    slot = e.pid_prslot if e.pid_used and not e.pid_prinactive else 0
    mutex_exit(K.pidlinklock)
    if not slot:
        return None
    p = K.proc(slot)
    zone_of(K, p)  # p->p_zone->zone_id
    return p


# -- upcount: processes per (real uid, zone), under pidlock ---------------------------


def _upcount_find(K: Kernel, uid: int, zone: int, create: bool) -> int:
    tab = K.upcounts
    n = len(tab)
    h = (uid * 31 + zone) % n
    free = -1
    for i in range(n):
        e = tab[(h + i) % n]
        if e.up_used and e.up_uid == uid and e.up_zone == zone:
            return (h + i) % n
        if not e.up_used:
            if free < 0:
                free = (h + i) % n
            if e.up_zone == 0:  # never used: the probe sequence ends here
                break
    if not create or free < 0:
        return -1
    e = tab[free]
    e.up_used, e.up_uid, e.up_zone, e.up_count = 1, uid, zone, 0
    return free


def upcount_inc(K: Kernel, uid: int, zone: int) -> None:
    """Called with pidlock held (asserted); returns with it held, but may
    have let go of it in between.  Count one more process for (uid, zone).

    An entry for a (uid, zone) pair not seen before must be allocated.
    illumos first tries an allocation that may not sleep and, when that
    fails, drops pidlock (no sleeping allocation may be made under it),
    allocates sleeping, retakes pidlock and searches again from the top:
    while the lock was dropped another thread may have made the entry, and
    then the one allocated is not needed.  The model has no memory to run
    out of, so it takes the slow path every time a new entry is needed:
    the window illumos opens under memory pressure is open on every first
    process of a new user."""
    assert MUTEX_HELD(K.pidlock)
    if _upcount_find(K, uid, zone, False) < 0:
        # The hazard of the drop is the caller's.  getproc calls this with
        # nproc already counting the new child, which is not on practive yet
        # and whose user is not counted yet (and the child's pid is already
        # visible to prfind): in the window another fork sees a process
        # count that includes it, and a per-user limit check for the same
        # user reads a count one short, so two forks can both pass it.
        # Whatever a caller read under pidlock before the call may have
        # changed by the time it returns; neither caller (getproc, setuid)
        # holds any other lock here, which the drop requires.
        mutex_exit(K.pidlock)
        _kmem_alloc_sleep(K)
        mutex_enter(K.pidlock)
    # (again) from the top: found now if another thread made it meanwhile
    i = _upcount_find(K, uid, zone, True)
    if i < 0:
        K.dom.panic(f"upcount_inc: no room for uid {uid}")
    K.upcounts[i].up_count += 1


def _kmem_alloc_sleep(K: Kernel) -> None:
    """Called with no locks held.  upcount_inc's sleeping allocation of a
    new entry: nothing to allocate (the table is fixed), but the thread
    gives up its CPU, as a sleeping allocation may, so that others run."""
    time.sleep(0)


def upcount_dec(K: Kernel, uid: int, zone: int) -> None:
    assert MUTEX_HELD(K.pidlock)
    i = _upcount_find(K, uid, zone, False)
    if i < 0:
        K.dom.panic(f"upcount_dec: no upcount entry for uid {uid} zone {zone}")
    e = K.upcounts[i]
    e.up_count -= 1
    if e.up_count == 0:
        e.up_used = 0  # up_zone stays set: a tombstone keeps probe chains whole


def upcount_get(K: Kernel, uid: int, zone: int) -> int:
    assert MUTEX_HELD(K.pidlock)
    i = _upcount_find(K, uid, zone, False)
    return K.upcounts[i].up_count if i >= 0 else 0


def upcounts(K: Kernel) -> dict[tuple[int, int], int]:
    return {(e.up_uid, e.up_zone): e.up_count for e in K.upcounts if e.up_used}
