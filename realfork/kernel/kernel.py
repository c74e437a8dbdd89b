"""The kernel object: its tables in the segment, its locks, and boot.

``Kernel`` is one OS process's view of a booted kernel (the supervisor's, or a
host's in the ``processes`` backend).  Every kernel function takes it as its
first argument ``K``: illumos has one kernel, realfork can boot several in one
OS process.
"""

from __future__ import annotations

import ctypes
from typing import Any

from ..shm.segment import Layout
from ..shm.table import Table, declare_table
from ..sync.domain import Substrate
from ..sync.kthread import KThread
from ..sync.objects import KCondvar, KMutex
from . import faults as _faults
from .params import KernelParams
from .proc import NPROCSYNC, Proc
from .profiles import fixes_of
from .structs import (
    PROGRAM_BYTES,
    as_t,
    contract_t,
    corectl_t,
    cred_t,
    kglobals_t,
    klwp_t,
    kproject_t,
    ksyncmap_t,
    lwpdir_t,
    pgrp_t,
    pident_t,
    pool_t,
    proc_t,
    rctlset_t,
    sess_t,
    task_t,
    upcount_t,
    vnode_t,
    zone_t,
)

# chain-lock indices for the kernel's own tables' free lists
COUNT_CHAIN = 7  # statistics counters (Kernel.count)
_CHAINS = {"proc": 8, "as": 9, "cred": 10, "vnode": 11, "task": 12, "project": 13,
           "zone": 14, "pool": 15, "pgrp": 16, "sess": 17, "contract": 18, "rctlset": 19,
           "corectl": 36}

NTASKS, NPROJECTS, NZONES, NPOOLS, NVNODES = 32, 8, 2, 4, 16
LWPDIR_SIZES = [2]  # 2, 6, 14, 30, ...: grown as needed (2 * old + 2)


def dir_sizes(maxlwps: int) -> list[int]:
    sizes = [2]
    while sizes[-1] < maxlwps + 2:
        sizes.append(2 * sizes[-1] + 2)
    return sizes


def dir_capacity(k: int, sizes: list[int], nproc: int, maxlwps: int) -> int:
    """Blocks of directory size class ``k``.  Class 0 (two entries) cannot
    fill: every proc slot holds one block at most, and only exec holds a
    second, for a moment (realfork.kernel.lwpdir.dir_alloc)."""
    if k == 0:
        return 2 * nproc
    return max(8, min(nproc, 4 * maxlwps // (sizes[k - 1] + 1) + 4))


def _dir_block_type(size: int) -> type:
    from ..shm.table import Slot

    return type(f"lwpdir{size}_t", (Slot,), {"_fields_": [("ld", lwpdir_t * size)]})


_DIR_TYPES: dict[int, type] = {}


def dir_block_type(size: int) -> type:
    t = _DIR_TYPES.get(size)
    if t is None:
        t = _DIR_TYPES[size] = _dir_block_type(size)
    return t


def nsync_needed(p: KernelParams) -> int:
    nas = p.nproc + 1
    # per proc slot; t_cv and thread_lock per kthread slot; a_lock, rcs_lock, ct_lock
    return (NPROCSYNC * p.nproc + 2 * p.maxlwps + nas + (p.nproc + 4) + (p.nproc + 4) + 32)


def declare_kernel(layout: Layout, p: KernelParams) -> None:
    layout.add("kglobals", kglobals_t)
    layout.add("ksyncmap", ksyncmap_t)
    layout.add("klwp", klwp_t, p.maxlwps)
    layout.add("pidtab", pident_t, p.maxpid + 1)
    layout.add("upcount", upcount_t, p.nproc + 1)
    layout.add("program", ctypes.c_char, PROGRAM_BYTES)
    declare_table(layout, "proc", proc_t, p.nproc)
    declare_table(layout, "as", as_t, p.nproc + 1)
    declare_table(layout, "cred", cred_t, p.nproc + 8)
    declare_table(layout, "vnode", vnode_t, NVNODES)
    declare_table(layout, "task", task_t, NTASKS)
    declare_table(layout, "project", kproject_t, NPROJECTS)
    declare_table(layout, "zone", zone_t, NZONES)
    declare_table(layout, "pool", pool_t, NPOOLS)
    declare_table(layout, "pgrp", pgrp_t, p.nproc)
    declare_table(layout, "sess", sess_t, p.nproc)
    declare_table(layout, "contract", contract_t, p.nproc + 4)
    declare_table(layout, "rctlset", rctlset_t, p.nproc + 4)
    declare_table(layout, "corectl", corectl_t, 2 * p.nproc + 8)  # two per proc at most
    sizes = dir_sizes(p.maxlwps)
    for k, size in enumerate(sizes):
        declare_table(layout, f"lwpdir{k}", dir_block_type(size),
                      dir_capacity(k, sizes, p.nproc, p.maxlwps))
    _faults.declare(layout)


class Kernel:
    """One OS process's view of a booted kernel."""

    def __init__(self, dom: Substrate, params: KernelParams) -> None:
        self.dom = dom
        self.params = params
        seg, chains = dom.seg, dom.chains
        self.g: kglobals_t = seg.region("kglobals", kglobals_t)
        self.kg_sync: ksyncmap_t = seg.region("ksyncmap", ksyncmap_t)
        self.lwps: Any = seg.region("klwp", klwp_t)
        self.pidtab: Any = seg.region("pidtab", pident_t)
        self.upcounts: Any = seg.region("upcount", upcount_t)
        self._count_lock = chains.chain(COUNT_CHAIN)
        self.procs = Table(seg, chains, "proc", proc_t, _CHAINS["proc"])
        self.ases = Table(seg, chains, "as", as_t, _CHAINS["as"])
        self.creds = Table(seg, chains, "cred", cred_t, _CHAINS["cred"])
        self.vnodes = Table(seg, chains, "vnode", vnode_t, _CHAINS["vnode"])
        self.tasks = Table(seg, chains, "task", task_t, _CHAINS["task"])
        self.projects = Table(seg, chains, "project", kproject_t, _CHAINS["project"])
        self.zones = Table(seg, chains, "zone", zone_t, _CHAINS["zone"])
        self.pools = Table(seg, chains, "pool", pool_t, _CHAINS["pool"])
        self.pgrps = Table(seg, chains, "pgrp", pgrp_t, _CHAINS["pgrp"])
        self.sessions = Table(seg, chains, "sess", sess_t, _CHAINS["sess"])
        self.contracts = Table(seg, chains, "contract", contract_t, _CHAINS["contract"])
        self.rctlsets = Table(seg, chains, "rctlset", rctlset_t, _CHAINS["rctlset"])
        self.corectls = Table(seg, chains, "corectl", corectl_t, _CHAINS["corectl"])
        self.dir_sizes = dir_sizes(params.maxlwps)
        self.dirs = [Table(seg, chains, f"lwpdir{k}", dir_block_type(size), 20 + k)
                     for k, size in enumerate(self.dir_sizes)]
        self.faults = _faults.FaultPoints(seg, chains, params.seed)
        self._procs_h: dict[int, Proc] = {}
        self._threads_h: dict[int, KThread] = {}
        self.machine: Any = None  # the backend: start_lwp(t), set by boot
        self.bugs: frozenset[str] = frozenset(params.bugs)
        self.fixes: frozenset[str] = fixes_of(params.kernel)
        self._locks_ready = False
        if self.kg_sync.pidlock or dom.g.nsync:
            self._bind_locks()

    # -- handles ---------------------------------------------------------------------

    def _bind_locks(self) -> None:
        m = self.kg_sync
        h = self.dom.handle
        self.pidlock: KMutex = h(m.pidlock)  # type: ignore[assignment]
        self.pidlinklock: KMutex = h(m.pidlinklock)  # type: ignore[assignment]
        self.pr_pidlock: KMutex = h(m.pr_pidlock)  # type: ignore[assignment]
        self.zone_nlwps_lock: KMutex = h(m.zone_nlwps_lock)  # type: ignore[assignment]
        self.pool_barrier_lock: KMutex = h(m.pool_barrier_lock)  # type: ignore[assignment]
        self.pool_barrier_cv: KCondvar = h(m.pool_barrier_cv)  # type: ignore[assignment]
        self.task_hash_lock: KMutex = h(m.task_hash_lock)  # type: ignore[assignment]
        self.run_cv: KCondvar = h(m.run_cv)  # type: ignore[assignment]
        self.pause_lock: KMutex = h(m.pause_lock)  # type: ignore[assignment]
        self.pause_cv: KCondvar = h(m.pause_cv)  # type: ignore[assignment]
        self.f_tlock: KMutex = h(m.f_tlock)  # type: ignore[assignment]
        self.dtrace_meta_lock: KMutex = h(m.dtrace_meta_lock)  # type: ignore[assignment]
        self.mod_lock: KMutex = h(m.mod_lock)  # type: ignore[assignment]
        self.dtrace_lock: KMutex = h(m.dtrace_lock)  # type: ignore[assignment]
        self.shm_lock: KMutex = h(m.shm_lock)  # type: ignore[assignment]
        self._locks_ready = True

    def procs_h(self, slot: int) -> Proc:
        p = self._procs_h.get(slot)
        if p is None:
            p = self._procs_h[slot] = Proc(self, slot)
        return p

    def proc(self, ptr: int) -> Proc:
        """The proc a table pointer (slot + 1) names."""
        return self.procs_h(ptr - 1)

    def thread(self, tid: int) -> KThread:
        t = self.dom._kt_handles.get(tid) or self._threads_h.get(tid)
        if t is None:
            t = self._threads_h[tid] = KThread(self.dom, tid - 1)
        return t

    def t_cv(self, t: KThread) -> KCondvar:
        return self.dom.handle(self.kg_sync.tcv_base + t.slot)  # type: ignore[return-value]

    def thread_lockp(self, t: KThread) -> KMutex:
        """``t``'s thread_lock (realfork.kernel.sig.thread_lock)."""
        return self.dom.handle(self.kg_sync.tlock_base + t.slot)  # type: ignore[return-value]

    def a_lock(self, as_ptr: int) -> Any:
        return self.dom.handle(self.kg_sync.aslock_base + as_ptr - 1)

    def rcs_lock(self, rctl_ptr: int) -> KMutex:
        return self.dom.handle(self.kg_sync.rcslock_base + rctl_ptr - 1)  # type: ignore

    def ct_lock(self, ct_ptr: int) -> KMutex:
        return self.dom.handle(self.kg_sync.ctlock_base + ct_ptr - 1)  # type: ignore

    def dir_block(self, ptr: int) -> Any:
        """The lwpdir_t array of directory block ``ptr`` (class << 24 | slot, + 1)."""
        k, slot = (ptr - 1) >> 24, (ptr - 1) & 0xFFFFFF
        return self.dirs[k].slots[slot].ld

    # -- the user program -------------------------------------------------------------

    def program_bytes(self) -> bytes:
        """The current run's program, as the msgpack bytes the supervisor stored
        (the user layer decodes it; the kernel never looks inside)."""
        return ctypes.string_at(self.dom.seg.region_address("program"), self.g.program_len)

    def progress(self) -> None:
        self.dom.g.progress += 1

    def count(self, counter: str) -> None:
        """Add one to a statistics counter of the kernel globals.  Its callers
        hold different locks (or none) in different OS processes, so a plain
        ``+=`` would lose updates: one chain lock makes the count exact."""
        lk = self._count_lock
        if not lk.acquire(False):
            self.dom.chain_enter(lk)
        g = self.g
        setattr(g, counter, getattr(g, counter) + 1)
        lk.release()

    def fire(self, name: str, pid: int = 0, lwpid: int = 0, *args: int) -> None:
        from ..sync.kthread import _cpu

        t = getattr(_cpu, "t", None)
        self.dom.fire(name, t.id if t is not None else 0, pid, lwpid, *args)

    def bug(self, name: str) -> bool:
        return name in self.bugs

    def fixed(self, fix: str) -> bool:
        """Does this kernel carry illumos fix ``fix`` (realfork.kernel.profiles)?
        False in the ``2006`` profile: take the seed's path."""
        return fix in self.fixes


def layout_for(p: KernelParams) -> Any:
    def extra(layout: Layout) -> None:
        declare_kernel(layout, p)

    return extra
