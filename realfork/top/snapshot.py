"""One look at a running kernel, for ``realfork top`` and the run report.

An ``Observer`` maps a kernel by name (its own mapping: the kernel may shut
down and unmap its own while we look) and takes ``Snapshot``s.  It is a
read-only observer: it takes no kernel lock and no chain lock, never drains
the probe ring (that is the supervisor's) and never writes to the segment.
The process and thread tables are copied out of the segment with one
``memmove`` each and read from the copy, so a slot changing under us is a
torn read of one entry, never a crash; entries that do not make sense
(a free slot, an unknown state) are skipped.

The OS side comes from psutil: for every host OS process (the supervisor
with the ``threads`` backend, each emulated process's own host with
``processes``) its CPU %, RSS, threads and context switches; with the
``threads`` backend also each lwp's OS thread CPU (``kthread_t.t_os_tid``
matched against ``psutil.Process.threads()``), summed per emulated process.
Rates (forks/s, CPU %) are over the time since the previous snapshot.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

from ..errors import BadInput
from ..kernel.kernel import Kernel
from ..kernel.params import make_params
from ..kernel.structs import (
    PFLAG_NAMES,
    SHOLDFORK,
    SHOLDFORK1,
    STAT_NAMES,
    SVFWAIT,
    SZOMB,
    klwp_t,
    proc_t,
)
from ..shm.segment import (
    ALIVE,
    LIVENESS,
    MAGIC,
    NAME_PREFIX,
    list_segments,
    probe,
    segment_path,
)
from ..sync.domain import Substrate
from ..sync.structs import MAXCLASSES, SYNC_MUTEX, SYNC_RW, TS_SLEEP, kthread_t
from .command import SORT_KEYS

if TYPE_CHECKING:
    from ctypes import _CDataType  # typeshed's union of the ctypes data types

FORK_KINDS = (("fork1", "sysfork"), ("vfork", "sysvfork"), ("forkall", "sysforkall"))
COUNTER_NAMES = ("sysfork", "sysvfork", "sysforkall", "fork_fail", "syscalls", "nexec",
                 "nexit", "nlwp_create", "holds", "vfork_waits")


# -- finding a kernel ------------------------------------------------------------------


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def check_name(name: str) -> None:
    """BadInput, in one clear line, unless ``name`` is a kernel of this user."""
    if not name.startswith(NAME_PREFIX) or "/" in name:
        raise BadInput(f"{name!r} is not a kernel name (kernels are named "
                       f"{NAME_PREFIX}<hex>; `realfork list` lists yours)")
    try:
        st = os.stat(segment_path(name), follow_symlinks=False)
    except FileNotFoundError:
        raise BadInput(f"no kernel named {name} (no {segment_path(name)}; "
                       f"`realfork list` lists yours)") from None
    if st.st_uid != os.geteuid():
        raise BadInput(f"kernel {name} belongs to {_owner(st.st_uid)}, not to you "
                       f"(uid {os.geteuid()}): only its owner may watch it")


def running_kernels() -> list[tuple[str, float]]:
    """This user's kernels whose supervisor is alive: (name, created), newest first."""
    out = []
    for name, _st in list_segments(os.geteuid()):
        # read from the file, nothing mapped: alive is its liveness lock held
        # (not a pid, which means nothing across PID namespaces)
        state, h = probe(name)
        if state == ALIVE and h.magic == MAGIC and h.liveness == LIVENESS:
            out.append((name, h.created_ns / 1e9))
    return sorted(out, key=lambda k: -k[1])


def pick_kernel(name: str | None) -> str:
    """``name`` checked, or this user's one running kernel."""
    if name:
        check_name(name)
        return name
    found = running_kernels()
    if not found:
        raise BadInput("no running kernel of yours to watch (start one, e.g. "
                       "`realfork stress`, or name one: realfork top NAME)")
    if len(found) > 1:
        names = ", ".join(n for n, _ in found)
        raise BadInput(f"{len(found)} running kernels ({names}): name one, "
                       f"e.g. realfork top {found[0][0]} (the most recent)")
    return found[0][0]


# -- the snapshot ----------------------------------------------------------------------


@dataclass
class LwpRow:
    lwpid: int
    kthread: int
    os_tid: int
    cpu_percent: float | None = None


@dataclass
class ProcRow:
    pid: int
    ppid: int
    state: str
    flags: list[str]
    flags_hex: str
    lwps: int
    host_pid: int
    cpu_percent: float | None = None  # threads backend: its lwps' threads; else the host
    rss: int | None = None  # bytes, of the host
    threads: int | None = None  # of the host
    ctx_voluntary: int | None = None
    ctx_involuntary: int | None = None
    lwp_threads: list[LwpRow] = field(default_factory=list)


@dataclass
class HostRow:
    pid: int
    role: str  # supervisor, forkserver, host
    emulated_pid: int  # 0: none
    cpu_percent: float | None
    rss: int | None
    threads: int | None
    ctx_voluntary: int | None
    ctx_involuntary: int | None


@dataclass
class LockRow:
    lock_class: str
    waiting: int  # threads blocked on it now
    wait_ms_now: float  # their waits so far, summed
    contentions: int  # distinct waits seen since the observer started
    wait_ms_total: float  # the longest each of those waits was seen to last, summed


@dataclass
class Snapshot:
    kernel: str
    backend: str
    supervisor_pid: int
    time: float  # wall clock
    uptime_s: float
    interval_s: float  # since the previous snapshot (0: the first)
    state: str  # running, panicked, shutting down, gone
    nproc: int
    nlwps: int
    counters: dict[str, int]
    forks_per_s: dict[str, float]
    vfork_waiting: int  # processes in vfwait now (SVFWAIT)
    holds_in_progress: int  # processes holding their lwps for a fork (SHOLDFORK*)
    fork_failures: int
    lock_order_reports: int
    panic: str | None
    probes_dropped: int
    machine: dict[str, float]
    processes: list[ProcRow]
    hosts: list[HostRow]
    locks: list[LockRow]
    blocked: int
    stacks: list[dict[str, Any]]
    cycles: list[str]
    hangs: list[str]

    @property
    def findings(self) -> int:
        return self.lock_order_reports + (1 if self.panic is not None else 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["findings"] = self.findings
        return d


def _copy(arr: Any, ctype: type[_CDataType], count: int) -> Any:
    """A private copy of ``count`` entries of a ctypes array in the segment."""
    buf = (ctype * count)()
    ctypes.memmove(buf, ctypes.addressof(arr), ctypes.sizeof(ctype) * count)
    return buf


class _CpuMeter:
    """CPU % of OS processes and threads between two looks (psutil)."""

    def __init__(self) -> None:
        self.procs: dict[int, psutil.Process] = {}
        self.last: dict[tuple[str, int], tuple[float, float]] = {}  # key -> (t, cpu s)

    def process(self, pid: int) -> psutil.Process | None:
        p = self.procs.get(pid)
        if p is None or not p.is_running():  # is_running compares create times too
            try:
                p = psutil.Process(pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                self.procs.pop(pid, None)
                return None
            self.procs[pid] = p
            self.last.pop(("p", pid), None)
        return p

    def rate(self, key: tuple[str, int], now: float, cpu: float, seen: set) -> float | None:
        seen.add(key)
        prev = self.last.get(key)
        self.last[key] = (now, cpu)
        if prev is None or now <= prev[0]:
            return None
        return max(0.0, 100.0 * (cpu - prev[1]) / (now - prev[0]))

    def forget_others(self, seen: set) -> None:
        for k in [k for k in self.last if k not in seen]:
            del self.last[k]
        live = {k[1] for k in seen if k[0] == "p"}
        for pid in [pid for pid in self.procs if pid not in live]:
            del self.procs[pid]


class Observer:
    """A read-only view of one running kernel (see the module docstring)."""

    def __init__(self, dom: Substrate, owns: bool) -> None:
        self.dom = dom
        self.owns = owns  # we attached it: close() unmaps it
        self.name = dom.name
        kparams = dict(dom.params.get("kernel") or {})
        self.params = make_params(**kparams)
        self.K = Kernel(dom, self.params)
        self.backend = self.params.backend
        self.supervisor_pid = int(dom.seg.header.creator_pid)
        self.hosts: Any = None
        self.pool: Any = None
        if self.backend == "processes":
            from ..machine.hosts import host_t, hostpool_t

            self.pool = dom.seg.region("hostpool", hostpool_t)
            hosts = dom.seg.region("hosts", host_t)
            if not isinstance(hosts, ctypes.Array):
                hosts = (host_t * 1).from_address(ctypes.addressof(hosts))
            self.hosts = hosts
        self.cpu = _CpuMeter()
        self._last_t = 0.0
        self._last_counters: dict[str, int] = {}
        self._waits: dict[tuple[int, int], tuple[str, float]] = {}  # (tid, since) -> class
        self._contentions: dict[str, int] = {}
        self._wait_total: dict[str, float] = {}
        psutil.cpu_percent(None)  # the machine's CPU % counts from here

    @classmethod
    def attach(cls, name: str | None = None) -> Observer:
        """Map kernel ``name`` (or this user's one running kernel)."""
        name = pick_kernel(name)
        dom = Substrate.attach(name)
        try:
            return cls(dom, owns=True)
        except BaseException:
            dom.shutdown()
            raise

    def close(self) -> None:
        """Unmap (an attached, non-creator domain only unmaps: nothing is
        written to the segment and the kernel goes on)."""
        if self.owns and not self.dom.closed:
            assert not self.dom.seg.creator
            self.dom.shutdown()

    def __enter__(self) -> Observer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state of the kernel --------------------------------------------------------

    def state(self) -> str:
        dom = self.dom
        if dom.closed:
            return "gone"
        if dom.g.panicked:
            return "panicked"
        if dom.g.shutting_down or not os.path.exists(segment_path(self.name)):
            return "gone"
        return "running"

    @property
    def alive(self) -> bool:
        return self.state() == "running"

    # -- the snapshot ---------------------------------------------------------------

    def sample(self) -> Snapshot:
        if self.dom.closed:
            raise BadInput(f"kernel {self.name} is closed")
        now = time.monotonic()
        dom, K = self.dom, self.K
        g = K.g
        state = self.state()
        counters = {k: int(getattr(g, k)) for k in COUNTER_NAMES}
        dt = now - self._last_t if self._last_t else 0.0
        rates = {}
        for label, c in FORK_KINDS:
            prev = self._last_counters.get(c)
            rates[label] = (round((counters[c] - prev) / dt, 1)
                            if dt > 0 and prev is not None else 0.0)
        self._last_t, self._last_counters = now, counters

        procs = _copy(K.procs.slots, proc_t, K.procs.capacity)
        kts = _copy(dom.kthreads.slots, kthread_t, dom.kthreads.capacity)
        lwps = _copy(K.lwps, klwp_t, len(K.lwps))
        seen: set = set()

        # lwps of each process, from the thread table (t_pid) and klwp (t_procp)
        by_proc: dict[int, list[LwpRow]] = {}
        for i, kt in enumerate(kts):
            if not kt.slot_inuse or not kt.t_os_tid:
                continue
            pslot = lwps[i].t_procp
            if 0 < pslot <= len(procs):
                by_proc.setdefault(pslot - 1, []).append(
                    LwpRow(kt.t_lwpid, kt.t_id, kt.t_os_tid))

        # per-thread CPU (threads backend: every lwp is a thread of the supervisor)
        thread_cpu: dict[int, float | None] = {}
        sup = self.cpu.process(self.supervisor_pid)
        if self.backend == "threads" and sup is not None:
            try:
                for th in sup.threads():
                    thread_cpu[th.id] = self.cpu.rate(("t", th.id), now,
                                                      th.user_time + th.system_time, seen)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass

        host_info: dict[int, dict[str, Any]] = {}

        def host(pid: int) -> dict[str, Any]:
            got = host_info.get(pid)
            if got is not None:
                return got
            info: dict[str, Any] = {"cpu_percent": None, "rss": None, "threads": None,
                                    "ctx_voluntary": None, "ctx_involuntary": None}
            p = self.cpu.process(pid) if pid > 0 else None
            if p is not None:
                try:
                    with p.oneshot():
                        ct = p.cpu_times()
                        info["cpu_percent"] = self.cpu.rate(("p", pid), now,
                                                            ct.user + ct.system, seen)
                        info["rss"] = p.memory_info().rss
                        info["threads"] = p.num_threads()
                        cs = p.num_ctx_switches()
                        info["ctx_voluntary"] = cs.voluntary
                        info["ctx_involuntary"] = cs.involuntary
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            host_info[pid] = info
            return info

        rows: list[ProcRow] = []
        nlwps = vwait = holding = 0
        for i, s in enumerate(procs):
            if not s.slot_inuse or s.p_stat not in STAT_NAMES or not s.p_stat:
                continue
            flags = [n for bit, n in sorted(PFLAG_NAMES.items()) if s.p_flag & bit]
            if s.p_flag & SVFWAIT:
                vwait += 1
            if s.p_flag & (SHOLDFORK | SHOLDFORK1):
                holding += 1
            nlwps += max(0, s.p_lwpcnt)
            # the OS process running its lwps: none for a zombie (its host may be
            # serving another process by now) nor for a process not yet given one
            if s.p_stat == SZOMB:
                host_pid = 0
            elif self.backend == "processes" and s.p_pid != 0:
                host_pid = s.p_host_pid
            else:
                host_pid = self.supervisor_pid  # p0, and every lwp with threads
            info = host(host_pid) if host_pid else {}
            mine = sorted(by_proc.get(i, []), key=lambda r: r.lwpid)
            row = ProcRow(pid=s.p_pid, ppid=s.p_ppid, state=STAT_NAMES[s.p_stat],
                          flags=flags, flags_hex=f"{s.p_flag:#x}", lwps=s.p_lwpcnt,
                          host_pid=host_pid, lwp_threads=mine, **info)
            if self.backend == "threads":
                for lw in mine:
                    lw.cpu_percent = thread_cpu.get(lw.os_tid)
                known = [lw.cpu_percent for lw in mine if lw.cpu_percent is not None]
                row.cpu_percent = round(sum(known), 1) if known else (0.0 if mine else None)
            rows.append(row)

        hosts = self._hosts(host)
        locks, blocked, stacks, cycles, hangs = self._waits_now(now)
        self.cpu.forget_others(seen)
        panic = None
        if dom.g.panicked:
            rep = dom.panic_report()
            panic = rep.message if rep is not None else "(report being written)"
        vm = psutil.virtual_memory()
        machine = {"cpu_percent": psutil.cpu_percent(None), "mem_percent": vm.percent,
                   "mem_used": vm.total - vm.available, "mem_total": vm.total,
                   "ncpus": psutil.cpu_count() or 0}
        return Snapshot(
            kernel=self.name, backend=self.backend, supervisor_pid=self.supervisor_pid,
            time=time.time(), uptime_s=round((time.monotonic_ns() - dom.g.boot_ns) / 1e9, 3),
            interval_s=round(dt, 3), state=state, nproc=int(g.nproc), nlwps=nlwps,
            counters=counters, forks_per_s=rates, vfork_waiting=vwait,
            holds_in_progress=holding, fork_failures=counters["fork_fail"],
            lock_order_reports=len(dom.lockdep_reports()), panic=panic,
            probes_dropped=int(dom.ring.dropped), machine=machine, processes=rows,
            hosts=hosts, locks=locks, blocked=blocked, stacks=stacks, cycles=cycles,
            hangs=hangs)

    def _hosts(self, host: Any) -> list[HostRow]:
        out = [HostRow(self.supervisor_pid, "supervisor", 0, **host(self.supervisor_pid))]
        if self.hosts is None:
            return out
        from ..machine.hosts import H_ASSIGNED, H_IDLE

        fs = int(self.pool.forkserver_pid)
        if fs > 0:
            out.append(HostRow(fs, "forkserver", 0, **host(fs)))
        for h in self.hosts:
            st, pid = h.state, h.os_pid
            if pid > 0 and st in (H_ASSIGNED, H_IDLE):
                role = "host" if st == H_ASSIGNED else "idle host"
                out.append(HostRow(pid, role, h.pid if st == H_ASSIGNED else 0, **host(pid)))
        return out

    def sample_locks(self) -> dict[str, list[float]]:
        """Scan the thread table for threads blocked on a mutex or rwlock (a
        condition variable is a sleep, not contention) and account each wait
        to its lock class, once, however many looks it lasts; the waits going
        on now by class (their durations so far, ms).  Cheap enough to run
        many times a second; reads only."""
        dom = self.dom
        slots, syncs = dom.kthreads.slots, dom.syncs
        now_ns = time.monotonic_ns()
        current: dict[tuple[int, int], tuple[str, float]] = {}
        waiting: dict[str, list[float]] = {}
        for i in range(min(dom.kthreads.hdr.hiwater, dom.kthreads.capacity)):
            ts = slots[i]
            if not ts.slot_inuse or ts.t_state != TS_SLEEP:
                continue
            w = ts.t_wchan
            if not 0 < w <= len(syncs):
                continue
            s = syncs[w - 1]
            if s.kind != SYNC_MUTEX and s.kind != SYNC_RW:
                continue
            since = ts.t_sleep_ns
            ms = max(0.0, (now_ns - since) / 1e6)
            cls = dom.class_name(s.lclass)[0] if s.lclass < MAXCLASSES else "?"
            waiting.setdefault(cls or "?", []).append(ms)
            current[(i, since)] = (cls or "?", ms)
        prev = self._waits
        for key, (cls, ms) in current.items():
            before = prev.get(key)
            if before is None:
                self._contentions[cls] = self._contentions.get(cls, 0) + 1
            else:
                ms -= before[1]  # counted up to the previous look already
            self._wait_total[cls] = self._wait_total.get(cls, 0.0) + max(0.0, ms)
        self._waits = current
        return waiting

    def lock_rows(self, waiting: dict[str, list[float]]) -> list[LockRow]:
        locks = [LockRow(cls, len(waiting.get(cls, [])), round(sum(waiting.get(cls, [])), 1),
                         n, round(self._wait_total.get(cls, 0.0), 1))
                 for cls, n in self._contentions.items()]
        locks.sort(key=lambda r: (-r.waiting, -r.wait_ms_total, r.lock_class))
        return locks

    def wait_totals(self) -> dict[str, float]:
        """Lock wait seen so far by class (ms), since the observer started."""
        return dict(self._wait_total)

    def _waits_now(self, now: float) -> tuple[list[LockRow], int, list[dict[str, Any]],
                                               list[str], list[str]]:
        """The lock classes waited on (``sample_locks``), and the wait-for
        graph (``dom.report()``: reads the segment, takes no lock): blocked
        threads grouped by call chain, and any cycle."""
        locks = self.lock_rows(self.sample_locks())
        for _ in range(3):
            try:
                rep = self.dom.report()
                stacks = []
                for state, kind, chain, ids in rep.stacks():
                    if state != "sleep":
                        continue
                    stacks.append({"state": state, "kind": kind, "chain": chain,
                                   "count": len(ids),
                                   "threads": [rep.thread(i).label for i in ids[:4]]})
                cycles = [rep.cycle_text(c) for c in rep.cycles]
                hangs = [rep.hang_text(h) for h in rep.hangs]
                return locks, len(rep.blocked()), stacks, cycles, hangs
            except (IndexError, KeyError, ValueError):
                continue  # a torn read (a thread came or went mid-scan): look again
        return locks, 0, [], [], []


def sort_processes(rows: list[ProcRow], key: str) -> list[ProcRow]:
    if key not in SORT_KEYS:
        raise BadInput(f"sort by one of {', '.join(SORT_KEYS)}, not {key!r}")
    if key == "pid":
        return sorted(rows, key=lambda r: r.pid)
    if key == "lwps":
        return sorted(rows, key=lambda r: (-r.lwps, r.pid))
    if key == "rss":
        return sorted(rows, key=lambda r: (-(r.rss or 0), r.pid))
    return sorted(rows, key=lambda r: (-(r.cpu_percent or 0.0), r.pid))
