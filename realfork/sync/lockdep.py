"""A lock-order validator, after Linux lockdep and FreeBSD WITNESS.

It learns the order of lock *classes* (``pidlock``, ``p_lock`` ...) from
every acquisition made while the acquiring thread already holds a lock, in
every thread and every OS process of a kernel, and reports an inversion the
first time one is attempted, whether or not it deadlocks.

**Graph.**  A node is a (class, subclass) pair: ``class id * NSUB +
subclass``.  The edge a -> b ("b was taken while holding a") is one bit of
an ``NNODES x NNODES`` bitmap in the segment, so every attached process
learns from and checks against the same graph.  The first acquisition that
made an edge is kept in a fixed edge table: the thread (kthread id, pid,
lwp, OS pid and tid) and its kernel call chain when it took b holding a
(the chain that held a and acquired b).  Tables are fixed-size
(``MAXCLASSES * NSUB`` nodes, ``MAXEDGES`` edges, ``MAXREPORTS`` reports),
whatever ``nproc`` or ``maxlwps`` are.  An edge that would close a cycle is
reported and not added, so the graph stays a DAG.

**Declared orders.**  The orders documented for illumos (``DECLARED``,
listed in docs/kernel.md, "Lock orders") are seeded as edges marked declared,
as WITNESS's ``order_lists``: a class's declared edges are added as soon as
it and the other class are registered, so their reverse is reported the
first time it is seen, even before the forward order was ever taken.

**Subclasses.**  Two locks of one class held at once (a child's ``p_lock``
then its parent's) are told apart by a subclass, as lockdep's
``mutex_lock_nested``: ``mutex_enter_nested(m, 1)`` takes ``m`` as node
``p_lock/1``.  ``p_lock -> p_lock/1`` is declared (the child's lock before
the parent's), so the reverse nesting is an inversion.  Taking a lock of a
node already held (two plain ``p_lock``) is "possible recursive locking"
only for *strict* classes (``STRICT_CLASSES`` at registration, or
``set_strict``); other classes may nest unannotated, unchecked, so code not
yet annotated gives no false reports.  The subclass of a held lock is
process-local (``NESTED``, dropped by ``mutex_exit``; a ``cv_wait``
re-acquires plainly, as subclass 0).  Read locks are ordered like write
locks (writers are preferred, so a reader can wait behind a writer).
Try-locks add no edge of their own (they cannot block) but edges from them
once held.

**Modes** (boot parameter ``lockdep``): ``off`` tracks nothing (the mutex
fast path tests one Python global, and only when a lock is already held);
``warn`` records each distinct inversion once per kernel in the segment,
fires ``lockdep:::inversion`` (held class, acquired class) and lets the run
continue; ``panic`` also panics the kernel with kind ``lock-order``.

**Cost.**  The check runs before the lock is taken (a would-be deadlock is
reported before it blocks), and only when the thread already holds a lock.
Each (held lock, new lock) pair is first looked up in a per-process set of
checked lock pairs, then its class edge in a per-process set of known edges;
shared memory is read on a miss and written, under one chain lock, only for
an edge new to the kernel.  tools/bench_lockdep.py measures it.
"""

from __future__ import annotations

import ctypes
import sys
import time
import weakref
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import msgpack

from .kthread import CHAIN_SEP, KThread, format_chain
from .structs import CHAIN_BYTES, MAXCLASSES

if TYPE_CHECKING:
    from .domain import Substrate
    from .objects import SyncObject

NSUB = 4  # subclasses per class (lockdep has 8)
NNODES = MAXCLASSES * NSUB
WORDS = NNODES // 64  # uint64 words per bitmap row
ROW_BYTES = WORDS * 8
MAXEDGES = 1024
MAXREPORTS = 32
REPORT_BYTES = 8192
LOCKDEP_CHAIN = 5  # the chain lock serialising writers of the graph
PAIRS_MAX = 1 << 16  # per-process cache of checked lock pairs

OFF, WARN, PANIC = 0, 1, 2
MODES = {"off": OFF, "warn": WARN, "panic": PANIC}
MODE_NAMES = {v: k for k, v in MODES.items()}
PROBE = "lockdep:::inversion"  # (held class, acquired class)

E_DECLARED = 1

# Documented illumos lock orders (see docs/kernel.md, "Lock orders"), "A before
# B" along each tuple; "name/n" is subclass n.  Every ordered pair of a tuple
# is declared, so a class missing from this kernel does not break a chain.
DECLARED: tuple[tuple[str, ...], ...] = (
    ("pool_lock", "cpu_lock", "pidlock", "p_lock", "pool_barrier_lock"),  # 1 os/pool.c
    ("pool_lock", "cpu_lock", "zonehash_lock", "zone_status_lock", "zone_lock",
     "zsd_key_lock", "pidlock", "p_lock"),  # 2 os/zone.c
    ("pidlock", "pr_pidlock", "p_lock", "prc_mutex"),  # 3 prfree
    ("ct_evtlock", "ct_lock", "pidlock", "p_lock", "ctq_lock"),  # 4 os/contract.c
    ("p_lock", "contract_lock"),  # 4
    ("p_lock", "rctl_dict_lock", "rctl_lists_lock", "rcs_lock"),  # 5 os/rctl.c
    ("cpu_lock", "p_lock"),  # 6 cpupart_bind_thread
    ("p_lock", "p_crlock"),  # 7 crset
    ("a_lock", "p_lock"),  # 8: a_lock must not be taken while holding p_lock
    ("a_lock", "a_contents"),  # 9 vm/as.h
    ("fi_lock", "uf_lock"),  # 10 sys/user.h
    ("sd_lock", "pidlock", "p_splock", "s_lock"),  # 11 sys/session.h
    ("pidlock", "pidlinklock"),  # implied by pid_exit, prfind_zone
    ("pidlock", "p_lock", "zone_nlwps_lock", "rcs_lock"),  # implied by proc_exit, lwp_create
    ("task_hash_lock", "zone_nlwps_lock"),  # implied by task_rele
    ("p_lock", "p_lock/1"),  # implied by relvm, vfwait: the child's p_lock before the parent's
    ("p_maplock", "a_lock"),  # implied by pr_do_mappage
    ("pidlock", "p_lock", "thread_lock"),  # implied by stop, setrun, lwp_continue, cfork
    # dtrace_helper_provide (the meta lock first), dtrace_unregister (mod_lock, then
    # dtrace_lock), fasttrap_pid_enable (sprlock under dtrace_lock)
    ("dtrace_meta_lock", "mod_lock", "dtrace_lock", "pidlock", "p_lock"),
    ("shm_lock", "p_lock"),  # implied by shmat (the ipc lock, then p_lock)
)

# Classes whose unannotated same-class nesting is reported as recursion.
# Add "p_lock" once relvm and vfwait take the parent's p_lock with
# mutex_enter_nested(pp.p_lock, 1).
# "thread_lock" is one too: no code holds two lwps' thread_locks at once.
STRICT_CLASSES: frozenset[str] = frozenset({"p_lock", "thread_lock"})

ON = False  # some kernel of this process validates: mirrored for the fast paths
# Subclass of each held lock taken with a nonzero subclass, by handle (a mutex
# has one holder); process-local, popped by mutex_exit.
NESTED: dict[Any, int] = {}
_LIVE: weakref.WeakSet[Validator] = weakref.WeakSet()


def _parse(spec: str) -> tuple[str, int]:
    name, _, sub = spec.partition("/")
    return name, int(sub or 0)


def declared_pairs() -> list[tuple[tuple[str, int], tuple[str, int]]]:
    """Every ordered pair implied by ``DECLARED``, without duplicates."""
    out: dict[tuple[tuple[str, int], tuple[str, int]], None] = {}
    for order in DECLARED:
        nodes = [_parse(s) for s in order]
        for i, a in enumerate(nodes):
            for b in nodes[i + 1:]:
                out[(a, b)] = None
    return list(out)


_DECLARED_PAIRS = declared_pairs()
_DECLARED_NAMES = frozenset(n for pair in _DECLARED_PAIRS for n, _ in pair)


# -- the shared tables ------------------------------------------------------------------


class ld_edge_t(ctypes.Structure):
    _fields_ = [
        ("src", ctypes.c_uint16),  # nodes
        ("dst", ctypes.c_uint16),
        ("flags", ctypes.c_uint16),  # E_DECLARED
        ("tid", ctypes.c_int32),  # the thread that first took dst holding src
        ("pid", ctypes.c_int32),
        ("lwpid", ctypes.c_int32),
        ("os_pid", ctypes.c_int32),
        ("os_tid", ctypes.c_int32),
        ("src_lock", ctypes.c_int32),  # ksync indexes of the two locks, -1 declared
        ("dst_lock", ctypes.c_int32),
        ("time_ns", ctypes.c_int64),
        ("who", ctypes.c_char * 48),
        ("chain", ctypes.c_char * CHAIN_BYTES),  # innermost first, ";"-separated
    ]


class ld_report_t(ctypes.Structure):
    _fields_ = [
        ("length", ctypes.c_uint32),  # set last: 0 while being written
        ("data", ctypes.c_char * REPORT_BYTES),  # msgpack of LockdepReport
    ]


class lockdep_t(ctypes.Structure):
    _fields_ = [
        ("mode", ctypes.c_int32),
        ("nedges", ctypes.c_int32),
        ("lost_edges", ctypes.c_int32),  # edges in the bitmap with no table entry
        ("nreports", ctypes.c_int32),
        ("lost_reports", ctypes.c_int32),  # inversions seen with the report table full
        ("strict", ctypes.c_uint8 * MAXCLASSES),
        ("adj", ctypes.c_uint64 * (NNODES * WORDS)),  # adj[a] bit b: edge a -> b
        ("reported", ctypes.c_uint64 * (NNODES * WORDS)),  # pair (lo, hi) reported
        ("edges", ld_edge_t * MAXEDGES),
        ("reports", ld_report_t * MAXREPORTS),
    ]


def declare(layout: Any) -> None:
    layout.add("lockdep", lockdep_t)


# -- reports ------------------------------------------------------------------------------


@dataclass
class Dependency:
    """One edge of the existing path: ``dst`` was taken while holding ``src``."""

    src: str  # node names: "p_lock", "p_lock/1"
    dst: str
    declared: bool
    tid: int = 0
    pid: int = 0
    lwpid: int = 0
    os_pid: int = 0
    os_tid: int = 0
    who: str = ""
    src_lock: str = ""  # instance names
    dst_lock: str = ""
    chain: str = ""


@dataclass
class LockdepReport:
    kind: str  # "circular" or "recursive"
    text: str
    kernel: str
    time_ns: int
    held_class: int  # class ids
    held_sub: int
    new_class: int
    new_sub: int
    held_name: str  # node names
    new_name: str
    held_lock: str  # instance names
    new_lock: str
    tid: int  # the thread that attempted the inversion
    pid: int
    lwpid: int
    os_pid: int
    os_tid: int
    who: str
    chain: str  # its chain when it tried to take new_lock holding held_lock
    held: list[str] = field(default_factory=list)  # everything it held, in order
    path: list[Dependency] = field(default_factory=list)  # new -> ... -> held

    @property
    def classes(self) -> tuple[int, int]:
        return self.held_class, self.new_class

    @property
    def chains(self) -> tuple[str, list[str]]:
        """This acquisition's chain, and those of the existing dependencies."""
        return self.chain, [d.chain for d in self.path]

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LockdepReport:
        d = dict(d)
        d["path"] = [Dependency(**p) for p in d.get("path", [])]
        return cls(**d)


def _show_chain(chain: str) -> str:
    return chain.replace(CHAIN_SEP, " < ") if chain else "?"


def _scenario(held: str, new: str, parent: str) -> list[str]:
    col = " " * 31
    return [" Possible unsafe locking scenario:", "",
            "       CPU0                    CPU1",
            "       ----                    ----",
            f"  lock({held});", f"{col}lock({parent});", f"{col}lock({held});",
            f"  lock({new});", "", " *** DEADLOCK ***", ""]


# -- the validator --------------------------------------------------------------------------


class Validator:
    """One kernel's lock-order graph, seen from one OS process."""

    def __init__(self, dom: Substrate) -> None:
        self.dom = dom
        self.r: lockdep_t = dom.seg.region("lockdep", lockdep_t)
        self.mode = self.r.mode
        self.adj = self.r.adj
        self.reported = self.r.reported
        self.adj_addr = ctypes.addressof(self.r) + lockdep_t.adj.offset
        self.lk = dom.chains.chain(LOCKDEP_CHAIN)
        self.cls: dict[int, int] = {}  # ksync index -> class id * NSUB
        self.known: set[int] = set()  # (a << 16 | b) checked in this process
        # (held ksync index + 1) << 23 | ksync index: lock pairs whose classes
        # were checked in this process (subclass 0 both), the first look-up
        self.pairs: set[int] = set()
        self.handles = dom._handles
        self._edge_at: dict[int, int] = {}  # (a << 16 | b) -> edge table index

    # -- nodes ------------------------------------------------------------------

    def class_of(self, idx: int) -> int:
        base = self.dom.syncs[idx].lclass * NSUB
        self.cls[idx] = base
        return base

    def node_name(self, node: int) -> str:
        name = self.dom.class_name(node // NSUB)[0]
        return f"{name}/{node % NSUB}" if node % NSUB else name

    def _has(self, bits: Any, a: int, b: int) -> bool:
        return bool(bits[a * WORDS + (b >> 6)] >> (b & 63) & 1)

    def _set(self, bits: Any, a: int, b: int) -> None:
        bits[a * WORDS + (b >> 6)] |= 1 << (b & 63)

    def _row(self, a: int) -> int:
        return int.from_bytes(ctypes.string_at(self.adj_addr + a * ROW_BYTES, ROW_BYTES),
                              "little")

    def path(self, src: int, dst: int) -> list[int] | None:
        """The shortest path src -> ... -> dst in the graph, or None."""
        parent = {src: -1}
        frontier = [src]
        while frontier:
            nxt = []
            for u in frontier:
                row = self._row(u)
                while row:
                    low = row & -row
                    row ^= low
                    v = low.bit_length() - 1
                    if v in parent:
                        continue
                    parent[v] = u
                    if v == dst:
                        out = [v]
                        while parent[v] >= 0:
                            v = parent[v]
                            out.append(v)
                        return out[::-1]
                    nxt.append(v)
            frontier = nxt
        return None

    def has_edge(self, a: int, b: int) -> bool:
        return self._has(self.adj, a, b)

    # -- learning ---------------------------------------------------------------

    def check_classes(self, obj: SyncObject, t: KThread, sub: int, n: int) -> None:
        """Check the class of every lock ``t`` holds against ``obj``'s."""
        cls = self.cls
        idx = obj.idx
        b = cls.get(idx)
        if b is None:
            b = self.class_of(idx)
        b += sub
        held = t.held
        known = self.known
        nested = NESTED
        for i in range(n):
            h1 = held[i]
            h = h1 - 1
            a = cls.get(h)
            if a is None:
                a = self.class_of(h)
            hsub = nested.get(self.handles.get(h), 0) if nested else 0
            a += hsub
            key = a << 16 | b
            if key not in known:
                self.learn(a, b, h, obj, t)
            if a != b and not (sub or hsub) and key in known:
                if len(self.pairs) > PAIRS_MAX:
                    self.pairs.clear()
                self.pairs.add(h1 << 23 | idx)

    def learn(self, a: int, b: int, held_idx: int, obj: SyncObject, t: KThread) -> None:
        """``t`` is about to take ``obj`` (node b) holding ``held_idx`` (node a),
        an edge this process has not checked yet."""
        dom = self.dom
        if dom.g.panicked:
            return
        r = self.r
        if a == b:
            if (held_idx == obj.idx or not r.strict[a // NSUB]
                    or self._has(self.reported, a, a)):
                return  # re-entry of one lock: the lock itself panics
        elif self._has(self.adj, a, b):
            self.known.add(a << 16 | b)
            return
        chain = format_chain(sys._getframe(1))
        rep = None
        dom.chain_enter(self.lk)
        try:
            if a == b:
                path: list[int] | None = [b, a]
            elif self._has(self.adj, a, b):
                path = None
            else:
                path = self.path(b, a)
                if path is None:
                    self._add_edge(a, b, 0, held_idx, obj.idx, t, chain)
            if path is not None:
                lo, hi = min(a, b), max(a, b)
                if not self._has(self.reported, lo, hi):
                    self._set(self.reported, lo, hi)
                    rep = self._report(a, b, held_idx, obj, t, chain, path)
                    self._store(rep)
        finally:
            self.lk.release()
        if a != b:
            self.known.add(a << 16 | b)
        if rep is None:
            return
        ts = t.s
        dom.fire(PROBE, t.id, ts.t_pid, ts.t_lwpid, a // NSUB, b // NSUB)
        if self.mode == PANIC:
            dom.panic(rep.text, kind="lock-order", culprit=t.id)

    def _add_edge(self, a: int, b: int, flags: int, src_lock: int, dst_lock: int,
                  t: KThread | None, chain: str) -> None:
        """Record a -> b (graph lock held): the table entry first, then the bit."""
        r = self.r
        n = r.nedges
        if n < MAXEDGES:
            e = r.edges[n]
            e.src, e.dst, e.flags = a, b, flags
            e.src_lock, e.dst_lock = src_lock, dst_lock
            e.time_ns = time.monotonic_ns()
            if t is not None:
                ts = t.s
                e.tid, e.pid, e.lwpid = t.id, ts.t_pid, ts.t_lwpid
                e.os_pid, e.os_tid = ts.t_os_pid, ts.t_os_tid
                e.who = self.dom.thread_name(t.id).encode()[:47]
                e.chain = chain.encode()[:CHAIN_BYTES - 1]
            r.nedges = n + 1
            self._edge_at[a << 16 | b] = n
        else:
            r.lost_edges += 1
        self._set(self.adj, a, b)

    def _edge(self, a: int, b: int) -> ld_edge_t | None:
        key = a << 16 | b
        i = self._edge_at.get(key)
        if i is None:
            edges = self.r.edges
            for j in range(self.r.nedges):
                e = edges[j]
                self._edge_at[e.src << 16 | e.dst] = j
                if e.src == a and e.dst == b:
                    i = j
            if i is None:
                return None
        return self.r.edges[i]

    # -- declared orders and strict classes -------------------------------------------

    def class_added(self, cid: int, name: str) -> None:
        """Class ``cid`` was registered: seed the declared orders it takes part in."""
        if name in STRICT_CLASSES:
            self.r.strict[cid] = 1
        if name not in _DECLARED_NAMES:
            return
        dom = self.dom
        ids = {dom.classes[i].name.decode(): i for i in range(dom.g.nclasses)}
        dom.chain_enter(self.lk)
        try:
            for (an, asub), (bn, bsub) in _DECLARED_PAIRS:
                if name not in (an, bn) or an not in ids or bn not in ids:
                    continue
                a, b = ids[an] * NSUB + asub, ids[bn] * NSUB + bsub
                if not self._has(self.adj, a, b) and self.path(b, a) is None:
                    self._add_edge(a, b, E_DECLARED, -1, -1, None, "")
        finally:
            self.lk.release()

    # -- reports ------------------------------------------------------------------

    def _who(self, t: KThread) -> str:
        ts = t.s
        return (f"{self.dom.thread_name(t.id)} [kthread {t.id}, os pid {ts.t_os_pid} "
                f"tid {ts.t_os_tid}]")

    def _report(self, a: int, b: int, held_idx: int, obj: SyncObject, t: KThread,
                chain: str, path: list[int]) -> LockdepReport:
        dom = self.dom
        ts = t.s
        who = self._who(t)
        A, B = self.node_name(a), self.node_name(b)
        held_lock, new_lock = dom.sync_name(held_idx), obj.name
        held = [dom.sync_name(t.held[i] - 1) for i in range(t.nheld)]
        recursive = a == b
        deps: list[Dependency] = []
        if not recursive:
            for u, v in pairwise(path):
                e = self._edge(u, v)
                d = Dependency(self.node_name(u), self.node_name(v),
                               bool(e is not None and e.flags & E_DECLARED))
                if e is not None and not d.declared:
                    d.tid, d.pid, d.lwpid = e.tid, e.pid, e.lwpid
                    d.os_pid, d.os_tid = e.os_pid, e.os_tid
                    d.who = (f"{e.who.decode(errors='replace')} [kthread {e.tid}, "
                             f"os pid {e.os_pid} tid {e.os_tid}]")
                    d.src_lock = dom.sync_name(e.src_lock) if e.src_lock >= 0 else ""
                    d.dst_lock = dom.sync_name(e.dst_lock) if e.dst_lock >= 0 else ""
                    d.chain = e.chain.decode(errors="replace")
                deps.append(d)
        title = ("WARNING: possible recursive locking detected" if recursive
                 else "WARNING: possible circular locking dependency detected")
        bar = "=" * len(title)
        lines = [bar, title, f"kernel {dom.name}", "-" * len(title),
                 f"{who} is trying to acquire lock:",
                 f"  {new_lock} ({B}), at: {_show_chain(chain)}", "",
                 "but it already holds lock:", f"  {held_lock} ({A})", ""]
        if recursive:
            lines += ["other info that might help us debug this:",
                      " Possible unsafe locking scenario:", "",
                      "       CPU0", "       ----", f"  lock({A});", f"  lock({B});", "",
                      " *** DEADLOCK ***", "",
                      " May be due to missing lock nesting notation (mutex_enter_nested)",
                      ""]
        else:
            lines += ["which lock already depends on the new lock.", "",
                      "the existing dependency chain is:"]
            for d in deps:
                if d.declared:
                    lines.append(f"-> {d.src} -> {d.dst}: declared (documented illumos order)")
                else:
                    lines.append(f"-> {d.src} -> {d.dst}: first by {d.who or '?'}, holding "
                                 f"{d.src_lock or d.src}, took {d.dst_lock or d.dst}, at: "
                                 f"{_show_chain(d.chain)}")
            lines.append("")
            if len(path) > 2:
                lines += ["other info that might help us debug this:", "",
                          "Chain exists of:", "  " + " --> ".join(
                              self.node_name(n) for n in path), ""]
            lines += _scenario(A, B, deps[-1].src)
            last = deps[-1]
            other = ("any thread following the declared order" if last.declared
                     else last.who or "?")
            lines += [f"CPU0: {who}, holding {held_lock}, takes {new_lock}",
                      f"CPU1: {other}: {last.src} then {last.dst}", ""]
        lines.append(f"{len(held)} lock{'s' if len(held) != 1 else ''} held by {who}:")
        lines += [f"  #{i}: {n}" for i, n in enumerate(held)]
        return LockdepReport(
            kind="recursive" if recursive else "circular", text="\n".join(lines),
            kernel=dom.name, time_ns=time.monotonic_ns(),
            held_class=a // NSUB, held_sub=a % NSUB, new_class=b // NSUB, new_sub=b % NSUB,
            held_name=A, new_name=B, held_lock=held_lock, new_lock=new_lock,
            tid=t.id, pid=ts.t_pid, lwpid=ts.t_lwpid, os_pid=ts.t_os_pid,
            os_tid=ts.t_os_tid, who=who, chain=chain, held=held, path=deps)

    def _store(self, rep: LockdepReport) -> None:
        """Append ``rep`` to the report table (graph lock held)."""
        r = self.r
        n = r.nreports
        if n >= MAXREPORTS:
            r.lost_reports += 1
            return
        d = rep.to_dict()
        data = msgpack.packb(d)
        if len(data) > REPORT_BYTES:  # keep the text, shorten the rest
            d["text"] = d["text"][:REPORT_BYTES // 2]
            for p in d["path"]:
                p["chain"] = p["chain"][:64]
            d["held"] = d["held"][:4]
            data = msgpack.packb(d)
            if len(data) > REPORT_BYTES:
                d["path"] = []
                d["text"] = d["text"][:REPORT_BYTES // 4]
                data = msgpack.packb(d)
        slot = r.reports[n]
        r.nreports = n + 1
        ctypes.memmove(ctypes.addressof(slot) + ld_report_t.data.offset, data, len(data))
        slot.length = len(data)

    def reports(self) -> list[LockdepReport]:
        r = self.r
        out = []
        for i in range(min(r.nreports, MAXREPORTS)):
            slot = r.reports[i]
            n = slot.length
            if n:
                data = ctypes.string_at(ctypes.addressof(slot) + ld_report_t.data.offset, n)
                out.append(LockdepReport.from_dict(msgpack.unpackb(data)))
        return out


# -- the hooks ----------------------------------------------------------------------------


def check(obj: SyncObject, t: KThread, sub: int, n: int) -> None:
    """Before ``t``, which holds ``n`` > 0 locks, takes ``obj`` as ``sub``."""
    v = obj.dom.lockdep
    if v is None:
        return
    if sub or NESTED:
        v.check_classes(obj, t, sub, n)
        return
    pairs = v.pairs
    held = t.held
    idx = obj.idx
    if n == 1:
        if (held[0] << 23 | idx) in pairs:
            return
    else:
        for i in range(n):
            if (held[i] << 23 | idx) not in pairs:
                break
        else:
            return
    v.check_classes(obj, t, 0, n)


def _refresh() -> None:
    global ON
    ON = any(v.mode != OFF for v in _LIVE)


def setup(dom: Substrate, mode_name: str) -> None:
    """Set the mode of a new kernel (creator only)."""
    dom.seg.region("lockdep", lockdep_t).mode = MODES[mode_name]
    dom.lockdep = attach(dom)


def attach(dom: Substrate) -> Validator | None:
    """The validator of ``dom`` in this process; None when it is off."""
    if dom.seg.region("lockdep", lockdep_t).mode == OFF:
        return None
    v = Validator(dom)
    _LIVE.add(v)
    _refresh()
    return v


def detach(dom: Substrate) -> None:
    v = dom.lockdep
    if v is not None:
        _LIVE.discard(v)
        dom.lockdep = None
        _refresh()


def mode(dom: Substrate) -> str:
    return MODE_NAMES[dom.seg.region("lockdep", lockdep_t).mode]


def reports(dom: Substrate) -> list[LockdepReport]:
    """The inversions recorded in ``dom``'s segment, from any attached process."""
    v = dom.lockdep
    return v.reports() if v is not None else []


def edges(dom: Substrate) -> list[tuple[str, str, bool]]:
    """The learned and declared edges as (from, to, declared) node names."""
    v = dom.lockdep
    if v is None:
        return []
    r = v.r
    return [(v.node_name(e.src), v.node_name(e.dst), bool(e.flags & E_DECLARED))
            for e in (r.edges[i] for i in range(min(r.nedges, MAXEDGES)))]


def set_strict(dom: Substrate, name: str, on: bool = True) -> None:
    """Report unannotated nesting of two locks of class ``name`` as recursion."""
    cid = dom.lock_class(name)
    v = dom.lockdep
    if v is not None:
        v.r.strict[cid] = int(on)


__all__ = ["DECLARED", "MODES", "NSUB", "PROBE", "STRICT_CLASSES",
           "Dependency", "LockdepReport", "Validator", "check", "edges", "mode",
           "reports", "set_strict"]
