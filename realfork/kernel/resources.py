"""The resources a process holds and fork duplicates: credentials, vnodes,
tasks/projects/zones with their lwp counts, resource pools and the pool
barrier, process contracts, rctl sets, the open-file table count and the
corectl references.  Each keeps illumos's locking: the lwp counts under
``zone_nlwps_lock``, the pool barrier under ``p_lock``, contracts under the
contract's ``ct_lock`` then ``p_lock``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..sync.condvar import cv_broadcast, cv_signal, cv_wait
from ..sync.mutex import MUTEX_HELD, mutex_enter, mutex_exit
from .proc import Proc
from .structs import NIL, PBWAIT, SKILLED

if TYPE_CHECKING:
    from .kernel import Kernel


# -- credentials -------------------------------------------------------------------


def cred_create(K: Kernel, uid: int, zone: int, privileged: bool) -> int:
    slot = K.creds.alloc()
    if slot is None:
        K.dom.panic("out of credentials")
    K.creds.zero(slot)
    c = K.creds.slots[slot]
    c.cr_ref, c.cr_uid, c.cr_ruid, c.cr_zone = 1, uid, uid, zone
    c.cr_priv_fork = 1
    c.cr_priv_resource = int(privileged)
    return slot + 1


def crhold(K: Kernel, cr: int) -> None:
    with K.dom.chains.chain(30):  # atomic in illumos
        K.creds.slots[cr - 1].cr_ref += 1


def crfree(K: Kernel, cr: int) -> None:
    with K.dom.chains.chain(30):
        c = K.creds.slots[cr - 1]
        c.cr_ref -= 1
        last = c.cr_ref == 0
    if last:
        K.creds.free(cr - 1)


def crgetruid(K: Kernel, cr: int) -> int:
    return K.creds.slots[cr - 1].cr_ruid


def crgetzoneid(K: Kernel, cr: int) -> int:
    return K.creds.slots[cr - 1].cr_zone


def secpolicy_basic_fork(K: Kernel, cr: int) -> bool:
    return bool(K.creds.slots[cr - 1].cr_priv_fork)


def secpolicy_newproc(K: Kernel, cr: int) -> bool:
    """Passes for uid 0 or PRIV_SYS_RESOURCE."""
    c = K.creds.slots[cr - 1]
    return c.cr_ruid == 0 or bool(c.cr_priv_resource)


# -- vnodes ----------------------------------------------------------------------------


def vn_create(K: Kernel, name: str) -> int:
    slot = K.vnodes.alloc()
    assert slot is not None
    v = K.vnodes.slots[slot]
    v.v_count = 1
    v.v_name = name.encode()
    return slot + 1


def VN_HOLD(K: Kernel, vp: int) -> None:
    if vp:
        with K.dom.chains.chain(31):
            K.vnodes.slots[vp - 1].v_count += 1


def VN_RELE(K: Kernel, vp: int) -> None:
    if vp:
        with K.dom.chains.chain(31):
            K.vnodes.slots[vp - 1].v_count -= 1


# -- open files and corectl ----------------------------------------------------------


def fcnt_add(K: Kernel, p: Proc, n: int) -> None:
    """Add ``n`` references to each file ``p`` has open (one count, ``fcnt``,
    for all of them).  Each file's count is under its ``f_tlock``: realfork
    models one file with a kernel mutex for it, the /proc file a controller
    opens with ``prlock`` and the processes it then forks inherit
    (``p_prfile``); the other files' locks are a chain lock.  Callers hold no
    kernel lock, and not P_PR_LOCK (6533743)."""
    prfile = p.s.p_prfile
    if prfile:
        mutex_enter(K.f_tlock)
    with K.dom.chains.chain(32):
        K.g.fcnt += n
    if prfile:
        mutex_exit(K.f_tlock)


# The core-file settings (illumos corectl.c).  A process's core-file pattern
# (p_corefile) and content (p_content) are reference-counted objects, shared
# by every process that inherited them, in the ``corectl`` table; coreadm
# gives a process new ones and releases the old, and the last release frees
# the object.  The counts change atomically in illumos (a chain lock here).
# The pointers are under p_lock: fork reads the parent's and holds them with
# p_lock held (6446530), so that coreadm cannot free one between the read
# and the hold.  A hold names its object by a (slot, generation) reference
# (``corectl_ref``): holding a freed or reused object raises StaleReference,
# the stale-reference panic.

_CORECTL_CHAIN = 33


def corectl_alloc(K: Kernel, kind: int, value: int, default: bool = False) -> int:
    """Takes the corectl table's chain lock.  A new pattern or content object
    (``kind`` CORECTL_PATH or CORECTL_CONTENT) with one reference, the
    caller's; 0 if the table is full."""
    slot = K.corectls.alloc()
    if slot is None:
        return NIL
    K.corectls.zero(slot)
    c = K.corectls.slots[slot]
    c.cc_ref, c.cc_kind, c.cc_value, c.cc_default = 1, kind, value, int(default)
    return slot + 1


def corectl_ref(K: Kernel, ptr: int) -> int:
    """Takes no locks.  The (slot, generation) reference of the object
    ``ptr`` names now, 0 for NULL: what a later hold will check."""
    if not ptr:
        return 0
    return K.corectls.ref(ptr - 1) + 1


def corectl_path_hold(K: Kernel, ref: int) -> int:
    """Takes the refcount chain lock.  ``corectl_path_hold``: one more hold
    on the object ``ref`` (from corectl_ref) names; its pointer (NULL: none).
    A freed or reused object is a stale reference (a panic)."""
    if not ref:
        return NIL
    with K.dom.chains.chain(_CORECTL_CHAIN):
        i = K.corectls.deref(ref - 1)  # StaleReference if freed or reused
        K.corectls.slots[i].cc_ref += 1
    return i + 1


def corectl_content_hold(K: Kernel, ref: int) -> int:
    """Takes the refcount chain lock.  ``corectl_content_hold``, as
    corectl_path_hold."""
    if not ref:
        return NIL
    with K.dom.chains.chain(_CORECTL_CHAIN):
        i = K.corectls.deref(ref - 1)  # StaleReference if freed or reused
        K.corectls.slots[i].cc_ref += 1
    return i + 1


def corectl_path_rele(K: Kernel, ptr: int) -> None:
    """Takes the refcount chain lock, then the table's.  Drop a hold on
    object ``ptr`` (NULL: nothing); the last one frees it."""
    if not ptr:
        return
    with K.dom.chains.chain(_CORECTL_CHAIN):
        c = K.corectls.slots[ptr - 1]
        c.cc_ref -= 1
        last = c.cc_ref == 0
    if last:
        K.corectls.free(ptr - 1)


corectl_content_rele = corectl_path_rele  # the same count, the same free


def corectl_rele(K: Kernel, p: Proc) -> None:
    """Called with pidlock held or none, on a process nobody else can reach
    (a zombie being freed).  Drop its pattern and content holds."""
    s = p.s
    path, content = s.p_corefile, s.p_content
    s.p_corefile = s.p_content = NIL
    corectl_path_rele(K, path)
    corectl_content_rele(K, content)


def corectl_fork_hold(K: Kernel, p: Proc, cp: Proc) -> None:
    """Caller holds p->p_lock (asserted: the pointers are under it).  The
    child shares the parent's pattern and content (cfork step 13)."""
    assert MUTEX_HELD(p.p_lock)
    s, cs = p.s, cp.s
    cs.p_corefile = corectl_path_hold(K, corectl_ref(K, s.p_corefile))
    cs.p_content = corectl_content_hold(K, corectl_ref(K, s.p_content))


# -- tasks, projects, zones -------------------------------------------------------------


def zone_create(K: Kernel, zid: int) -> int:
    slot = K.zones.alloc()
    assert slot is not None
    K.zones.zero(slot)
    z = K.zones.slots[slot]
    z.zone_id = zid
    z.zone_status = 3  # ZONE_IS_RUNNING
    z.zone_nlwps_ctl = -1
    return slot + 1


def project_create(K: Kernel, pjid: int) -> int:
    slot = K.projects.alloc()
    assert slot is not None
    K.projects.zero(slot)
    pj = K.projects.slots[slot]
    pj.kpj_id = pjid
    pj.kpj_nlwps_ctl = -1
    return slot + 1


def task_create(K: Kernel, proj: int, zone: int) -> int:
    """A new task with one hold (the creator's); kpj_ntasks under zone_nlwps_lock."""
    slot = K.tasks.alloc()
    if slot is None:
        K.dom.panic("out of tasks")
    K.tasks.zero(slot)
    tk = K.tasks.slots[slot]
    tk.tk_tkid = K.g.next_taskid
    K.g.next_taskid += 1
    tk.tk_hold_count = 1
    tk.tk_proj, tk.tk_zone = proj, zone
    tk.tk_nlwps_ctl = -1
    mutex_enter(K.zone_nlwps_lock)
    K.projects.slots[proj - 1].kpj_ntasks += 1
    mutex_exit(K.zone_nlwps_lock)
    return slot + 1


def task_hold(K: Kernel, tk: int) -> None:
    with K.dom.chains.chain(34):  # atomic_add
        K.tasks.slots[tk - 1].tk_hold_count += 1


def task_attach(K: Kernel, tk: int, p: Proc) -> None:
    """Join task ``tk`` as the new head of its member ring (pidlock and p_lock held)."""
    assert MUTEX_HELD(K.pidlock) and MUTEX_HELD(p.p_lock)
    t = K.tasks.slots[tk - 1]
    head = t.tk_memb_list
    if head:
        h = K.proc(head)
        tail = K.proc(h.s.p_taskprev)
        p.s.p_tasknext, p.s.p_taskprev = head, tail.id
        tail.s.p_tasknext = p.id
        h.s.p_taskprev = p.id
    else:
        p.s.p_tasknext = p.s.p_taskprev = p.id
    t.tk_memb_list = p.id
    task_hold(K, tk)
    p.s.p_task = tk


def task_detach(K: Kernel, p: Proc) -> int:
    """Leave the task's ring; the hold stays for a later task_rele.  The task."""
    assert MUTEX_HELD(K.pidlock) and MUTEX_HELD(p.p_lock)
    tk = p.s.p_task
    t = K.tasks.slots[tk - 1]
    if p.s.p_tasknext == p.id:
        t.tk_memb_list = NIL
    else:
        nxt, prv = K.proc(p.s.p_tasknext), K.proc(p.s.p_taskprev)
        prv.s.p_tasknext = nxt.id
        nxt.s.p_taskprev = prv.id
        if t.tk_memb_list == p.id:
            t.tk_memb_list = nxt.id
    p.s.p_tasknext = p.s.p_taskprev = NIL
    p.s.p_task = NIL
    return tk


def task_rele(K: Kernel, tk: int) -> None:
    """Drop a hold; the last one ends the task (kpj_ntasks under zone_nlwps_lock)."""
    mutex_enter(K.task_hash_lock)
    with K.dom.chains.chain(34):
        t = K.tasks.slots[tk - 1]
        t.tk_hold_count -= 1
        last = t.tk_hold_count == 0
    if last:
        mutex_enter(K.zone_nlwps_lock)
        K.projects.slots[t.tk_proj - 1].kpj_ntasks -= 1
        mutex_exit(K.zone_nlwps_lock)
        K.tasks.free(tk - 1)
    mutex_exit(K.task_hash_lock)


def task_members(K: Kernel, tk: int) -> list[int]:
    out = []
    head = K.tasks.slots[tk - 1].tk_memb_list
    cur = head
    while cur:
        out.append(cur)
        cur = K.proc(cur).s.p_tasknext
        if cur == head:
            break
    return out


def lwp_count_admit(K: Kernel, p: Proc, n: int = 1, test: bool = True) -> bool:
    """Charge ``n`` lwps to p's task, project and zone unless a max-lwps limit
    denies it (requires p_lock; takes zone_nlwps_lock).  System-class lwps
    (``test=False``) are counted but never denied."""
    assert MUTEX_HELD(p.p_lock)
    tk = K.tasks.slots[p.s.p_task - 1]
    pj = K.projects.slots[tk.tk_proj - 1]
    z = K.zones.slots[p.s.p_zone - 1]
    mutex_enter(K.zone_nlwps_lock)
    for count, ctl in ((tk.tk_nlwps, tk.tk_nlwps_ctl), (pj.kpj_nlwps, pj.kpj_nlwps_ctl),
                       (z.zone_nlwps, z.zone_nlwps_ctl)):
        if test and ctl >= 0 and count + n > ctl:
            mutex_exit(K.zone_nlwps_lock)
            return False
    tk.tk_nlwps += n
    pj.kpj_nlwps += n
    z.zone_nlwps += n
    mutex_exit(K.zone_nlwps_lock)
    return True


def lwp_count_release(K: Kernel, task: int, zone: int, n: int = 1) -> None:
    """Give back ``n`` lwps of a task (takes zone_nlwps_lock)."""
    tk = K.tasks.slots[task - 1]
    mutex_enter(K.zone_nlwps_lock)
    tk.tk_nlwps -= n
    K.projects.slots[tk.tk_proj - 1].kpj_nlwps -= n
    K.zones.slots[zone - 1].zone_nlwps -= n
    mutex_exit(K.zone_nlwps_lock)


# -- pools and the pool barrier ------------------------------------------------------------


def pool_create(K: Kernel, pid: int) -> int:
    slot = K.pools.alloc()
    assert slot is not None
    K.pools.zero(slot)
    K.pools.slots[slot].pool_id = pid
    return slot + 1


def pool_ref_add(K: Kernel, pool: int, n: int) -> None:
    with K.dom.chains.chain(35):  # atomic_add
        K.pools.slots[pool - 1].pool_ref += n


def pool_barrier_enter(K: Kernel, p: Proc) -> None:
    """Wait out a rebind in progress, then count ourselves in (requires p_lock)."""
    assert MUTEX_HELD(p.p_lock)
    while p.s.p_poolflag & PBWAIT:
        cv_wait(p.p_poolcv, p.p_lock)
    p.s.p_poolcnt += 1


def pool_barrier_exit(K: Kernel, p: Proc) -> None:
    """Count ourselves out; during a rebind, let the rebinder go on (requires p_lock)."""
    assert MUTEX_HELD(p.p_lock)
    p.s.p_poolcnt -= 1
    if p.s.p_poolflag & PBWAIT:
        mutex_enter(K.pool_barrier_lock)
        K.g.pool_barrier_count -= 1
        if K.g.pool_barrier_count == 0:
            cv_signal(K.pool_barrier_cv)
        mutex_exit(K.pool_barrier_lock)
        while p.s.p_poolflag & PBWAIT:
            cv_wait(p.p_poolcv, p.p_lock)


def pool_wakeup(K: Kernel, p: Proc) -> None:
    cv_broadcast(p.p_poolcv)


# -- process contracts ---------------------------------------------------------------------


def contract_create(K: Kernel) -> int:
    slot = K.contracts.alloc()
    assert slot is not None
    K.contracts.zero(slot)
    ct = K.contracts.slots[slot]
    ct.ct_id = K.g.next_ctid
    K.g.next_ctid += 1
    ct.ct_ref = 1
    return slot + 1


def contract_process_fork(K: Kernel, ctp: int, cp: Proc, pp: Proc, canfail: bool) -> int:
    """Make ``cp`` a member of contract ``ctp`` (the parent's if 0); 0 on refusal.

    Refuses when the parent was SIGKILLed, so a child cannot escape
    contract_process_kill.  Lock order: ct_lock -> p_lock.
    """
    ct = ctp or pp.s.p_ct_process
    lk = K.ct_lock(ct)
    mutex_enter(lk)
    mutex_enter(pp.p_lock)
    if canfail and ct == pp.s.p_ct_process and pp.s.p_flag & SKILLED:
        mutex_exit(pp.p_lock)
        mutex_exit(lk)
        return NIL
    mutex_exit(pp.p_lock)
    c = K.contracts.slots[ct - 1]
    c.ct_ref += 1
    c.conp_nmembers += 1
    cp.s.p_ct_process = ct
    mutex_exit(lk)
    return ct


def contract_process_exit(K: Kernel, p: Proc) -> None:
    ct = p.s.p_ct_process
    if not ct:
        return
    lk = K.ct_lock(ct)
    mutex_enter(lk)
    c = K.contracts.slots[ct - 1]
    c.conp_nmembers -= 1
    c.ct_ref -= 1
    p.s.p_ct_process = NIL
    mutex_exit(lk)


# -- rctl sets ------------------------------------------------------------------------------

RCTL_NVALUES = 4  # values in a process rctl set


def rctl_set_create(K: Kernel) -> int:
    """Takes no lock but the table's chain lock.  A new, empty rctl set.

    illumos allocates it with KM_SLEEP, which does not fail; the table cannot
    fill either: it has nproc + 4 sets, a proc holds one from getproc's
    caller (cfork step 8, newproc, p0) until proc_exit frees it, so a full
    table panics."""
    slot = K.rctlsets.alloc()
    if slot is None:
        K.dom.panic(f"table rctlset full ({K.rctlsets.capacity} sets for "
                    f"{K.params.nproc} proc slots): cannot happen")
    K.rctlsets.zero(slot)
    K.rctlsets.slots[slot].rcs_ref = 1
    return slot + 1


def rctl_set_free(K: Kernel, rcs: int) -> None:
    if rcs:
        K.rctlsets.free(rcs - 1)


def rctl_set_dup_prealloc(K: Kernel, rcs: int) -> int:
    """Count what a duplicate needs (under rcs_lock), allocate outside it."""
    lk = K.rcs_lock(rcs)
    mutex_enter(lk)
    need = K.rctlsets.slots[rcs - 1].rcs_nvalues
    mutex_exit(lk)
    return need


def rctl_set_dup_ready(K: Kernel, rcs: int, prealloc: int) -> bool:
    return K.rctlsets.slots[rcs - 1].rcs_nvalues <= prealloc


def rctl_set_dup(K: Kernel, rcs: int, dup: int) -> int:
    K.rctlsets.slots[dup - 1].rcs_nvalues = K.rctlsets.slots[rcs - 1].rcs_nvalues
    return dup
