"""Wait-for reports, built from the segment alone.

Any process attached to a kernel can take a ``snapshot``: every kernel
thread's state, the object it sleeps on and that object's owners, the locks
it holds in order, its kernel call chain, and every cycle in the wait-for
graph (thread -> owner of the object it waits for; for a condition variable
whose waiter named its waker, the waker).  A condition-variable waiter whose
waker has exited, or is itself stuck in a cycle or a hang, is *hung*: nobody
will signal it, even though no lock cycle involves it.  The panic path stores
the same report, msgpack-encoded, in the segment, so the supervisor reads it
even when the panicking thread ran in another OS process.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .condvar import waker_gone
from .structs import (
    KIND_NAMES,
    STATE_NAMES,
    SYNC_CV,
    SYNC_MUTEX,
    SYNC_RW,
    T_WAKEABLE,
    T_WANTWRITE,
    TS_SLEEP,
)

if TYPE_CHECKING:
    from .domain import Substrate


STACKS_AFTER = 8  # reports with more threads than this also group them by chain


@dataclass
class ThreadState:
    id: int
    name: str
    pid: int
    lwpid: int
    os_pid: int
    os_tid: int
    state: str
    chain: str  # innermost first, ";"-separated
    held: list[str]  # names, in acquisition order
    held_idx: list[int]
    wchan: int = -1  # ksync index it sleeps on
    wchan_kind: str = ""
    wchan_name: str = ""
    owners: list[int] = field(default_factory=list)  # threads holding wchan
    blocked_ms: float = 0.0
    interruptible: bool = False
    wants_write: bool = False
    waker: int = 0  # cv waits: the thread expected to signal, 0 unknown
    waker_gone: bool = False  # ... and it has exited

    @property
    def function(self) -> str:
        return self.chain.split(";", 1)[0] if self.chain else ""

    @property
    def label(self) -> str:
        who = (f"pid {self.pid} lwp {self.lwpid}" if self.pid
               else f"kthread {self.id}" + (f" {self.name!r}" if self.name else ""))
        return f"{who} ({self.function})" if self.function else who


@dataclass
class ObjectState:
    idx: int
    kind: str
    name: str
    owners: list[int]
    waiters: list[int]
    count: int = 0


@dataclass
class WaitReport:
    kind: str  # "snapshot", "deadlock", "hang", "panic"
    message: str
    kernel: str
    time_ns: int
    culprit: int = 0  # the thread whose deadline expired, or that panicked
    threads: list[ThreadState] = field(default_factory=list)
    objects: list[ObjectState] = field(default_factory=list)
    cycles: list[list[int]] = field(default_factory=list)
    hangs: list[int] = field(default_factory=list)  # cv waiters nobody will signal

    def __repr__(self) -> str:
        return f"<realfork {self.kind} report: {self.message}>"

    def thread(self, tid: int) -> ThreadState:
        for t in self.threads:
            if t.id == tid:
                return t
        raise KeyError(tid)

    def blocked(self) -> list[ThreadState]:
        return [t for t in self.threads if t.wchan >= 0]

    def stacks(self) -> list[tuple[str, str, str, list[int]]]:
        """Threads grouped by identical (state, sync object kind, call chain),
        largest group first, like mdb's ``::stacks``: (state, kind, chain, ids)."""
        groups: dict[tuple[str, str, str], list[int]] = {}
        for t in self.threads:
            groups.setdefault((t.state, t.wchan_kind, t.chain), []).append(t.id)
        return sorted(((st, k, ch, ids) for (st, k, ch), ids in groups.items()),
                      key=lambda g: (-len(g[3]), g[2]))

    def stacks_text(self) -> str:
        lines = ["STATE     SOBJ       COUNT  THREADS"]
        for state, kind, chain, ids in self.stacks():
            shown = ", ".join(self.thread(i).label for i in ids[:3])
            more = f" (+{len(ids) - 3} more)" if len(ids) > 3 else ""
            lines.append(f"{state:9s} {kind or '-':10s} {len(ids):5d}  {shown}{more}")
            for fn in chain.split(";") if chain else ["(no chain recorded)"]:
                lines.append(f"{'':28s}{fn}")
        return "\n".join(lines)

    def cycle_text(self, cycle: list[int]) -> str:
        """``A holds X, waits for Y held by B, which waits for X``."""
        ts = [self.thread(tid) for tid in cycle]
        last = ts[-1]
        first = ts[0]
        has = "must signal" if last.wchan_kind == "condvar" else "holds"
        parts = [f"{first.label} {has} {last.wchan_name}, waits for {first.wchan_name}"]
        for prev, t in itertools.pairwise(ts):
            by = "to be signalled by" if prev.wchan_kind == "condvar" else "held by"
            parts.append(f" {by} {t.label}, which waits for {t.wchan_name}")
        return "".join(parts)

    def hang_text(self, tid: int) -> str:
        t = self.thread(tid)
        if t.waker_gone:
            why = f"its waker kthread {t.waker} has exited"
        else:
            w = self.thread(t.waker)
            why = (f"its waker {w.label} is itself stuck on {w.wchan_kind} {w.wchan_name}"
                   if w.wchan >= 0 else f"its waker {w.label}")
        return f"{t.label} sleeps on condvar {t.wchan_name} and nobody will signal it: {why}"

    def __str__(self) -> str:
        head = {"deadlock": "DEADLOCK", "hang": "HANG", "panic": "PANIC"}.get(
            self.kind, "wait-for report")
        lines = [f"realfork {head}: {self.message}" if self.message
                 else f"realfork {head}", f"kernel {self.kernel}"]
        for c in self.cycles:
            lines.append("cycle: " + self.cycle_text(c))
        for h in self.hangs:
            lines.append("hang: " + self.hang_text(h))
        if len(self.threads) > STACKS_AFTER:
            lines.append("stacks (threads grouped by call chain):")
            lines.append(self.stacks_text())
        if self.threads:
            lines.append("threads:")
        for t in self.threads:
            where = f"os pid {t.os_pid} tid {t.os_tid}"
            line = f"  {t.label} [kthread {t.id}, {where}] {t.state}"
            if t.wchan >= 0:
                how = " (interruptible)" if t.interruptible else ""
                line += f" on {t.wchan_kind} {t.wchan_name}{how} for {t.blocked_ms:.0f} ms"
                if t.waker and t.wchan_kind == "condvar":
                    line += (f", its waker kthread {t.waker} has exited" if t.waker_gone
                             else f", to be signalled by {self._name(t.waker)}")
                elif t.owners:
                    line += " held by " + ", ".join(
                        self.thread(o).label if self._has(o) else f"kthread {o}"
                        for o in t.owners)
            lines.append(line)
            if t.held:
                lines.append("      holds: " + ", ".join(t.held))
            if t.chain:
                lines.append("      chain: " + t.chain.replace(";", " < "))
        return "\n".join(lines)

    def _name(self, tid: int) -> str:
        return self.thread(tid).label if self._has(tid) else f"kthread {tid}"

    def _has(self, tid: int) -> bool:
        return any(t.id == tid for t in self.threads)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WaitReport:
        d = dict(d)
        d["threads"] = [ThreadState(**t) for t in d.get("threads", [])]
        d["objects"] = [ObjectState(**o) for o in d.get("objects", [])]
        return cls(**d)


def snapshot(dom: Substrate, kind: str = "snapshot", message: str = "",
             culprit: int = 0) -> WaitReport:
    """Read the whole wait-for state of ``dom`` from shared memory."""
    now = time.monotonic_ns()
    slots = dom.kthreads.slots
    threads: list[ThreadState] = []
    readers: dict[int, list[int]] = {}
    for i in dom.kthreads.used():
        ts = slots[i]
        held_idx = []
        for h in ts.t_held:
            if not h:
                break
            held_idx.append(h - 1)
        t = ThreadState(
            id=ts.t_id, name=ts.t_name.decode(errors="replace"), pid=ts.t_pid,
            lwpid=ts.t_lwpid, os_pid=ts.t_os_pid, os_tid=ts.t_os_tid,
            state=STATE_NAMES.get(ts.t_state, str(ts.t_state)),
            chain=ts.t_chain.decode(errors="replace"),
            held=[dom.sync_name(h) for h in held_idx], held_idx=held_idx)
        for h in held_idx:
            if dom.syncs[h].kind == SYNC_RW and dom.syncs[h].owner != ts.t_id:
                readers.setdefault(h, []).append(ts.t_id)
        wchan = ts.t_wchan
        if wchan and ts.t_state == TS_SLEEP:
            t.wchan = wchan - 1
            t.wchan_kind = KIND_NAMES.get(dom.syncs[wchan - 1].kind, "?")
            t.wchan_name = dom.sync_name(wchan - 1)
            t.blocked_ms = (now - ts.t_sleep_ns) / 1e6
            t.interruptible = bool(ts.t_sflag & T_WAKEABLE)
            t.wants_write = bool(ts.t_sflag & T_WANTWRITE)
            if ts.t_waker and dom.syncs[wchan - 1].kind == SYNC_CV:
                t.waker = ts.t_waker
                t.waker_gone = waker_gone(dom, ts.t_waker, ts.t_waker_gen)
        threads.append(t)
    objects: dict[int, ObjectState] = {}
    for t in threads:
        if t.wchan < 0:
            continue
        s = dom.syncs[t.wchan]
        if s.kind == SYNC_MUTEX or (s.kind == SYNC_RW and s.owner):
            t.owners = [s.owner] if s.owner else []
        elif s.kind == SYNC_RW:
            t.owners = [r for r in readers.get(t.wchan, []) if r != t.id]
        elif t.waker and not t.waker_gone:
            t.owners = [t.waker]
        obj = objects.get(t.wchan)
        if obj is None:
            obj = objects[t.wchan] = ObjectState(t.wchan, t.wchan_kind, t.wchan_name,
                                                 t.owners, [], s.count)
        obj.waiters.append(t.id)
    report = WaitReport(kind=kind, message=message, kernel=dom.name, time_ns=time.time_ns(),
                        culprit=culprit, threads=threads, objects=list(objects.values()))
    report.cycles = find_cycles(threads)
    report.hangs = find_hangs(threads, report.cycles)
    return report


def find_hangs(threads: list[ThreadState], cycles: list[list[int]]) -> list[int]:
    """Condition-variable waiters nobody will signal: the waker has exited, is
    in a cycle, or is (transitively) such a waiter itself."""
    by_id = {t.id: t for t in threads}
    stuck = {tid for c in cycles for tid in c}
    hung: list[int] = []
    changed = True
    while changed:
        changed = False
        for t in threads:
            if t.id in stuck or not t.waker or t.wchan < 0:
                continue
            w = by_id.get(t.waker)
            if t.waker_gone or (w is not None and w.id in stuck):
                stuck.add(t.id)
                hung.append(t.id)
                changed = True
    return hung


def find_cycles(threads: list[ThreadState]) -> list[list[int]]:
    """Every cycle of the wait-for graph, each once, smallest thread id first."""
    edges = {t.id: t.owners for t in threads if t.wchan >= 0}
    found: set[tuple[int, ...]] = set()
    for start in edges:
        stack = [(start, iter(edges.get(start, ())))]
        path = [start]
        on_path = {start}
        while stack:
            _, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                on_path.discard(path.pop())
                continue
            if nxt in on_path:
                cyc = path[path.index(nxt):]
                k = cyc.index(min(cyc))
                found.add(tuple(cyc[k:] + cyc[:k]))
            elif nxt in edges and len(path) < 64:
                stack.append((nxt, iter(edges[nxt])))
                path.append(nxt)
                on_path.add(nxt)
    return [list(c) for c in sorted(found)]
