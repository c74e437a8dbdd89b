"""The substrate of one kernel: segment, chain locks, kernel threads, sync
objects, probe ring, deadlines and panic.

``Substrate.boot`` creates it (the supervisor); ``Substrate.attach`` maps a
running one by name (a host, a dashboard, a reporter).  Layers above add
their own tables through ``extra_layout`` and ``extra_format``.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, NoReturn

import msgpack

from ..errors import BadInput, KernelPanic, ResourceError
from ..probes.ring import ProbeRing, declare_ring
from ..shm import libc
from ..shm import segment as _segment
from ..shm import turnstile as _turnstile
from ..shm import undertaker as _undertaker
from ..shm.segment import (
    NAME_PREFIX,
    SHM_DIR,
    Layout,
    Segment,
    list_segments,
    remove_name,
    segment_path,
)
from ..shm.table import Table, declare_table
from ..shm.turnstile import NCHAINS, ChainLocks
from . import lockdep as _lockdep
from . import noise as _noise
from . import report as _report
from .kthread import KThread, sem_init
from .objects import HANDLE_TYPES, KCondvar, KMutex, KRWLock, KSema, SyncObject
from .structs import (
    MAXCLASSES,
    PANIC_BYTES,
    SYNC_CV,
    SYNC_MUTEX,
    SYNC_RW,
    SYNC_SEMA,
    TS_FREE,
    TS_ONPROC,
    TS_SLEEP,
    ksync_t,
    kthread_t,
    lockclass_t,
    sync_globals_t,
)

ALLOC_CHAIN = 2  # chain lock for the sync-object bump allocator and classes
PANIC_CHAIN = 3  # chain lock deciding which thread panics first
CYCLE_LOOKS, CYCLE_LOOKS_S = 3, 0.02  # a deadline with no cycle in sight: look again
KTHREAD_CHAIN = 4  # chain lock of the kthread table's free list

DEFAULTS: dict[str, Any] = {
    "maxlwps": 256,  # kernel thread slots
    "nsync": 4096,  # synchronization objects
    "deadlock_timeout": 10.0,  # seconds any blocking wait may last
    "probe_capacity": 65536,  # probe ring records
    "lockdep": "warn",  # the lock-order validator: "off", "warn" or "panic"
    "noise": None,  # schedule noise settings (sync.noise.NoiseConfig fields); None: off
}
MAX_SLOTS = 1 << 22

# Names of the segments this OS process created, for leak checks in tests.
CREATED_HERE: list[str] = []


def validate_params(params: dict[str, Any]) -> dict[str, Any]:
    """Complete ``params`` with defaults; BadInput for impossible values."""
    import math

    from ..probes.ring import MAX_CAPACITY, MIN_CAPACITY
    from ..safeio import shorten

    out = dict(DEFAULTS)
    for k, v in params.items():
        if k not in DEFAULTS:
            raise BadInput(f"unknown substrate parameter {shorten(repr(k))}")
        out[k] = v
    for k, low, high in (("maxlwps", 1, MAX_SLOTS), ("nsync", 1, MAX_SLOTS),
                         ("probe_capacity", MIN_CAPACITY, MAX_CAPACITY)):
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, int):
            raise BadInput(f"{k} must be a whole number, not {shorten(repr(v))}")
        if v < low:
            raise BadInput(f"{k} must be at least {low}, not {v}")
        if v > high:
            raise ResourceError(f"{k} is more than realfork can lay out (at most {high:,})")
    if not isinstance(out["lockdep"], str) or out["lockdep"] not in _lockdep.MODES:
        raise BadInput(f"lockdep must be one of {', '.join(_lockdep.MODES)}, "
                       f"not {shorten(repr(out['lockdep']))}")
    dt = out["deadlock_timeout"]
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0 \
            or not math.isfinite(dt):
        raise BadInput(f"deadlock_timeout must be a positive number of seconds, "
                       f"not {shorten(repr(dt))}")
    if dt > 86400:
        raise BadInput(f"deadlock_timeout of {dt} s is more than a day")
    if not isinstance(out["noise"], dict | _noise.NoiseConfig | None):
        raise BadInput("noise must be a dict of settings, e.g. {'mode': 'contest'}")
    noise = _noise.make_config(out["noise"]).to_dict()
    out["noise"] = noise
    _noise.check_noise(noise)  # the bounds the command line uses too
    return out


def reap_stale_segments() -> list[str]:
    """Remove this user's segments that no process holds any more.

    A supervisor killed with SIGKILL cannot clean up after itself; its
    undertaker (``shm.undertaker``) does at once, and the next boot (or
    ``realfork`` command) whatever that could not.  A segment is stale only when it
    is published and its liveness lock is free (``segment.probe``): then its
    creator and every process forked from it are gone, in whatever PID
    namespace they ran.  A segment never published is left alone for a
    minute (it may be being made).  An older realfork's segment (no lock) is
    judged as that version did, by its creator's pid and start time (which
    is also how that version judges ours: it never takes them for foreign files).
    Chain locks no segment refers to are removed once a minute old.
    """
    removed = []
    keep: set[str] = set()  # chain-lock files of the segments that stay
    now = time.time()
    for name, st in list_segments(os.geteuid()):
        state, h = _segment.probe(name)
        if state == _segment.GONE:
            continue
        # an older realfork's segment has its first region where the secret is
        secret = bytes(h.chain_secret) if h.liveness == _segment.LIVENESS else b""
        stale = (state in (_segment.STALE, _segment.LEGACY_STALE)
                 or (state == _segment.UNBORN and now - st.st_mtime > _segment.UNBORN_GRACE_S))
        if not stale:
            if any(secret):
                keep.update("sem." + n for n in _turnstile.chain_names(name, secret))
            continue
        remove_name(segment_path(name))
        if any(secret):
            _turnstile.unlink_secret(name, secret)
        if not secret:
            _unlink_legacy_chains(name)
        removed.append(name)
    for f in os.listdir(SHM_DIR):
        if _turnstile.is_chain_file(f):
            if f not in keep:
                _remove_old_orphan(f, now)
        elif f.startswith("sem." + NAME_PREFIX) and "." in f[4:]:
            # an older realfork's sem.<segment>.tcN whose segment is gone
            if not os.path.exists(segment_path(f[4:].rsplit(".", 1)[0])):
                _remove_old_orphan(f, now)
    return removed


def _unlink_legacy_chains(seg_name: str) -> None:
    for i in range(NCHAINS):
        remove_name(os.path.join(SHM_DIR, f"sem.{seg_name}.tc{i}"))


def _remove_old_orphan(f: str, now: float) -> None:
    """Remove semaphore file ``f`` if it is this user's and a minute old (its
    creator had time to record it in its segment)."""
    path = os.path.join(SHM_DIR, f)
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return
    if st.st_uid == os.geteuid() and now - st.st_mtime > _segment.UNBORN_GRACE_S:
        remove_name(path)


class Substrate:
    """One kernel's shared state, seen from one OS process."""

    def __init__(self, seg: Segment, chains: ChainLocks) -> None:
        self.seg = seg
        self.name = seg.name
        self.chains = chains
        self.g: sync_globals_t = seg.region("sync_globals", sync_globals_t)
        self.classes = seg.region("lockclass", lockclass_t)
        self.syncs = seg.region("ksync", ksync_t)
        if not isinstance(self.syncs, ctypes.Array):
            self.syncs = (ksync_t * 1).from_address(ctypes.addressof(self.syncs))
        self.kthreads = Table(seg, chains, "kthread", kthread_t, KTHREAD_CHAIN)
        self.ring = ProbeRing(seg, chains)
        self.timeout_ns = self.g.deadlock_timeout_ns
        self._kt_base = ctypes.addressof(self.kthreads.slots[0])
        self._kt_size = ctypes.sizeof(kthread_t)
        self._kt_sem = kthread_t.t_sem.offset
        self._class_ids: dict[str, int] = {}
        self._class_names: dict[int, tuple[str, str]] = {}
        self._handles: dict[int, SyncObject] = {}
        self.local_threads: weakref.WeakSet[KThread] = weakref.WeakSet()
        self._kt_handles: dict[int, KThread] = {}
        self.closed = False
        self.on_shutdown: list[Callable[[], None]] = []  # run once sleepers are woken
        self.params: dict[str, Any] = {}
        # The kernel layer replaces this: is a signal or hold request pending?
        self.sig_pending: Callable[[KThread], bool] = lambda t: bool(t.s.t_sig_check)
        # The lock-order validator in this process; None when it is off.
        self.lockdep: _lockdep.Validator | None = _lockdep.attach(self)
        # Schedule noise in this process; None when it is off (set once params are known).
        self.noise: _noise.Noise | None = None

    # -- construction ---------------------------------------------------------------

    @staticmethod
    def declare(layout: Layout, p: dict[str, Any]) -> None:
        layout.add("sync_globals", sync_globals_t)
        layout.add("lockclass", lockclass_t, MAXCLASSES)
        layout.add("ksync", ksync_t, p["nsync"])
        declare_table(layout, "kthread", kthread_t, p["maxlwps"])
        declare_ring(layout, p["probe_capacity"])
        layout.add("panic", ctypes.c_char, PANIC_BYTES)
        _lockdep.declare(layout)

    @classmethod
    def boot(cls, extra_layout: Callable[[Layout], None] | None = None,
             extra_params: dict[str, Any] | None = None, **params: Any) -> Substrate:
        p = validate_params(params)
        reap_stale_segments()
        layout = Layout()
        cls.declare(layout, p)
        if extra_layout is not None:
            extra_layout(layout)
        recorded = dict(p, **(extra_params or {}))
        seg = Segment.create(layout, msgpack.packb(recorded))
        CREATED_HERE.append(seg.name)
        _undertaker.booted(seg.name)  # it removes the kernel if this process is killed
        try:
            chains = ChainLocks.create(seg)
            seg.publish()  # attachable from here: header and chain locks complete
        except BaseException:
            seg.unlink()
            _undertaker.closed(seg.name)
            seg.unmap()
            raise
        dom = cls(seg, chains)
        dom.params = recorded
        g = dom.g
        g.deadlock_timeout_ns = int(p["deadlock_timeout"] * 1e9)
        g.boot_ns = time.monotonic_ns()
        dom.timeout_ns = g.deadlock_timeout_ns
        dom.kthreads.format()
        dom.ring.format()
        _lockdep.setup(dom, p["lockdep"])
        dom.noise = _noise.attach(dom, p["noise"])
        return dom

    @classmethod
    def attach(cls, name: str) -> Substrate:
        seg = Segment.attach(name)  # waits while its creator is still booting it
        try:
            # a published segment's chain locks exist until its shutdown
            chains = ChainLocks.open(seg)
        except FileNotFoundError:
            seg.unmap()
            raise BadInput(f"kernel {name!r} is shutting down") from None
        except BaseException:
            seg.unmap()
            raise
        dom = cls(seg, chains)
        dom.params = msgpack.unpackb(seg.params)
        dom.noise = _noise.attach(dom, dom.params.get("noise"))
        return dom

    # -- lock classes and objects --------------------------------------------------

    def lock_class(self, name: str, inst_label: str = "") -> int:
        """The id of lock class ``name``, registering it on first use."""
        cid = self._class_ids.get(name)
        if cid is not None:
            return cid
        raw = name.encode()
        added = False
        with self.chains.chain(ALLOC_CHAIN):
            g = self.g
            for i in range(g.nclasses):
                if self.classes[i].name == raw:
                    cid = i
                    break
            else:
                if g.nclasses >= MAXCLASSES:
                    raise ResourceError("too many lock classes")
                cid = g.nclasses
                c = self.classes[cid]
                c.name = raw
                c.inst_label = inst_label.encode()
                g.nclasses = cid + 1
                added = True
        self._class_ids[name] = cid
        if added and self.lockdep is not None:
            self.lockdep.class_added(cid, name)  # seed its declared orders
        return cid

    def class_name(self, cid: int) -> tuple[str, str]:
        got = self._class_names.get(cid)
        if got is None:
            c = self.classes[cid]
            got = (c.name.decode(), c.inst_label.decode())
            if got[0]:
                self._class_names[cid] = got
        return got

    def _new(self, kind: int, lclass: str, inst: int, inst_label: str, count: int = 0) -> int:
        cid = self.lock_class(lclass, inst_label)
        with self.chains.chain(ALLOC_CHAIN):
            idx = self.g.nsync
            if idx >= len(self.syncs):
                raise ResourceError(f"out of synchronization objects (nsync={len(self.syncs)})")
            self.g.nsync = idx + 1
        s = self.syncs[idx]
        s.kind = kind
        s.lclass = cid
        s.inst = inst
        s.count = count
        return idx

    def new_mutex(self, lclass: str, inst: int = -1, inst_label: str = "") -> KMutex:
        return self.handle(self._new(SYNC_MUTEX, lclass, inst, inst_label))  # type: ignore

    def new_cv(self, lclass: str, inst: int = -1, inst_label: str = "") -> KCondvar:
        return self.handle(self._new(SYNC_CV, lclass, inst, inst_label))  # type: ignore

    def new_rwlock(self, lclass: str, inst: int = -1, inst_label: str = "") -> KRWLock:
        return self.handle(self._new(SYNC_RW, lclass, inst, inst_label))  # type: ignore

    def new_sema(self, lclass: str, count: int = 0, inst: int = -1,
                 inst_label: str = "") -> KSema:
        return self.handle(self._new(SYNC_SEMA, lclass, inst, inst_label, count))  # type: ignore

    def handle(self, idx: int) -> SyncObject:
        """This process's handle on sync object ``idx`` (cached)."""
        h = self._handles.get(idx)
        if h is None:
            if not 0 <= idx < self.g.nsync:
                raise BadInput(f"no synchronization object {idx}")
            h = HANDLE_TYPES[self.syncs[idx].kind](self, idx)
            self._handles[idx] = h
        return h

    def sync_name(self, idx: int) -> str:
        s = self.syncs[idx]
        cname, label = self.class_name(s.lclass)
        if s.inst < 0:
            return cname
        return f"{cname}[{label} {s.inst}]" if label else f"{cname}[{s.inst}]"

    # -- kernel threads ----------------------------------------------------------------

    def kthread_create(self, name: str = "", pid: int = 0, lwpid: int = 0) -> KThread:
        """Allocate a kthread slot (not yet bound to an OS thread)."""
        slot = self.kthreads.alloc()
        if slot is None:
            raise ResourceError(f"out of kernel threads (maxlwps={self.kthreads.capacity})")
        self.kthreads.zero(slot)
        t = KThread(self, slot)
        ts = t.s
        ts.t_id = t.id
        ts.t_pid = pid
        ts.t_lwpid = lwpid
        ts.t_name = name.encode()[:31]
        sem_init(t)
        self._kt_handles[t.id] = t
        return t

    def kthread_bind(self, t: KThread) -> None:
        """Record that the calling OS thread runs ``t`` from now on."""
        ts = t.s
        ts.t_os_pid = os.getpid()
        ts.t_os_tid = threading.get_native_id()
        ts.t_state = TS_ONPROC
        t.os_thread = threading.current_thread()
        self.local_threads.add(t)

    def kthread_free(self, t: KThread) -> None:
        ts = t.s
        ts.t_state = TS_FREE
        libc.sem_destroy(t.sem)
        self._kt_handles.pop(t.id, None)
        self.kthreads.free(t.slot)

    def kthread_sem(self, tid: int) -> int:
        return self._kt_base + (tid - 1) * self._kt_size + self._kt_sem

    def thread_name(self, tid: int) -> str:
        ts = self.kthreads.slots[tid - 1]
        if ts.t_pid:
            return f"pid {ts.t_pid} lwp {ts.t_lwpid}"
        return f"kthread {tid}" + (f" {ts.t_name.decode()!r}" if ts.t_name else "")

    # -- chain locks with a deadline ----------------------------------------------------

    def chain_enter(self, lk: Any) -> None:
        """Take a chain lock; panic if it stays held past the deadline (its
        holder died inside a few-instruction critical section)."""
        if lk.acquire(False):
            return
        deadline = time.monotonic_ns() + self.timeout_ns
        g = self.g
        while not lk.acquire(True, 0.05):
            if g.panicked or g.shutting_down:
                raise KernelPanic("kernel panicked" if g.panicked else "kernel shut down")
            if time.monotonic_ns() > deadline:
                self.panic("a turnstile chain lock stayed held past the deadline "
                           "(its holder died)", kind="hang")

    # -- probes ----------------------------------------------------------------------

    def fire(self, name: str, tid: int, pid: int, lwpid: int, *args: int) -> None:
        ring = self.ring
        ring.fire(ring.probe_id(name), tid, pid, lwpid, *args)

    # -- deadlines and panic -------------------------------------------------------------

    def deadline_expired(self, t: KThread, obj: SyncObject) -> NoReturn:
        """``t`` waited on ``obj`` past the deadline: panic with a report.

        A member of a cycle may be caught between a wake-up and its next
        sleep (a condition-variable waiter re-checking its condition), when
        it has no wait-for edge: with no cycle in sight, look again a few
        times, ``CYCLE_LOOKS_S`` apart, before calling it a hang."""
        secs = self.timeout_ns / 1e9
        rep = _report.snapshot(self, "hang", "", t.id)
        for _ in range(CYCLE_LOOKS):
            if rep.cycles:
                break
            time.sleep(CYCLE_LOOKS_S)
            rep = _report.snapshot(self, "hang", "", t.id)
        kind = "deadlock" if rep.cycles else "hang"
        msg = (f"{self.thread_name(t.id)} waited {secs:g} s on "
               f"{obj.name} ({type(obj).__name__[1:].lower()})")
        rep.kind, rep.message = kind, msg
        self.panic(msg, kind=kind, culprit=t.id, rep=rep)

    def lost_wakeup(self, t: KThread, cv: SyncObject, reason: str) -> NoReturn:
        """``t`` sleeps on ``cv`` and nobody will signal it: panic with a hang."""
        self.panic(f"{self.thread_name(t.id)} sleeps on {cv.name} (condvar) and nobody "
                   f"will signal it: {reason}", kind="hang", culprit=t.id)

    def panic(self, message: str, kind: str = "panic", culprit: int = 0,
              rep: _report.WaitReport | None = None) -> NoReturn:
        """Stop the kernel: record a report, wake every sleeper, unwind.

        The report (``rep``, or a snapshot taken here) shows the kernel as it
        was before ``panicked`` is published: once it is, every thread that
        notices unwinds, and a report taken after that would show threads of
        the cycle gone."""
        g = self.g
        lk = self.chains.chain(PANIC_CHAIN)
        lk.acquire()
        try:
            first = not g.panicked
            if first:
                if rep is None:
                    rep = _report.snapshot(self, kind, message, culprit)
                g.panicked = 1
                g.panic_thread = culprit
        finally:
            lk.release()
        if not first or rep is None:
            raise KernelPanic("kernel panicked")
        self._store_report(rep)
        self.wake_all_sleepers()
        raise KernelPanic(message, rep)

    def _store_report(self, rep: _report.WaitReport) -> None:
        data = msgpack.packb(rep.to_dict())
        if len(data) > PANIC_BYTES:  # keep the message and cycles, drop the rest
            rep.threads = [t for t in rep.threads if any(t.id in c for c in rep.cycles)]
            rep.objects = []
            data = msgpack.packb(rep.to_dict())[:PANIC_BYTES]
        ctypes.memmove(self.seg.region_address("panic"), data, len(data))
        self.g.panic_len = len(data)

    def panic_report(self, wait: float = 0.0) -> _report.WaitReport | None:
        """The report stored by the panic, once it is complete.  ``wait``: how
        long to wait for a panic in progress (in any process) to store it."""
        self._require_mapped()
        n = self.g.panic_len
        deadline = time.monotonic() + wait
        while not n and self.g.panicked and time.monotonic() < deadline:
            time.sleep(0.005)
            n = self.g.panic_len
        if not n:
            return None
        data = ctypes.string_at(self.seg.region_address("panic"), n)
        return _report.WaitReport.from_dict(msgpack.unpackb(data))

    def lockdep_reports(self) -> list[_lockdep.LockdepReport]:
        """The lock-order inversions recorded so far (any attached process)."""
        self._require_mapped()
        return _lockdep.reports(self)

    @property
    def panicked(self) -> bool:
        return bool(self.g.panicked)  # after close: the copy kept by shutdown

    def report(self) -> _report.WaitReport:
        """A wait-for snapshot of the running kernel."""
        self._require_mapped()
        return _report.snapshot(self)

    def _require_mapped(self) -> None:
        # every view of the segment dangles once it is unmapped: refuse rather
        # than let a read of it crash the interpreter
        if not self.seg.mapped:
            raise BadInput(f"kernel {self.name} is closed")

    def wake_all_sleepers(self) -> None:
        slots = self.kthreads.slots
        for i in self.kthreads.used():
            if slots[i].t_state == TS_SLEEP:
                libc.sem_post(self.kthread_sem(i + 1))

    # -- shutdown ---------------------------------------------------------------------

    def shutdown(self, join_timeout: float = 5.0) -> list[str]:
        """Stop every thread of this kernel and release every OS object.

        The creator unlinks the segment and the chain-lock names; every
        process unmaps the segment once none of its threads can touch it.
        Returns the names of local threads that would not stop (then the
        mapping is left in place rather than pulled from under them).
        """
        if self.closed:
            return []
        self.closed = True
        for h in [h for h in _lockdep.NESTED if getattr(h, "dom", None) is self]:
            del _lockdep.NESTED[h]  # nested holds of a kernel that is going away
        stuck: list[str] = []
        try:
            if self.seg.creator:
                self.g.shutting_down = 1
                lk = self.chains.chain(PANIC_CHAIN)  # a full barrier: the flag,
                lk.acquire()  # then the scan for sleepers (see sleepq.sleep)
                lk.release()
                self.wake_all_sleepers()
            deadline = time.monotonic() + join_timeout
            for hook in self.on_shutdown:
                hook()
            me = threading.current_thread()
            for t in list(self.local_threads):
                th = t.os_thread
                if th is None or th is me:
                    continue
                th.join(max(0.0, deadline - time.monotonic()))
                if th.is_alive() and t.os_thread is th:
                    stuck.append(th.name)
        finally:
            _lockdep.detach(self)
            if self.seg.creator:
                self.chains.unlink()
                self.seg.unlink()  # the name, then the liveness lock
                _undertaker.closed(self.name)
            if not stuck:
                self._handles.clear()
                self._kt_handles.clear()
                self._keep_values()
                self.seg.unmap()  # retired: a stale view reads zeros, never faults
        return stuck

    def _keep_values(self) -> None:
        """Copy the globals out of the segment: ``g`` (``panicked``,
        ``shutting_down``, the counters) answers as it was at close."""
        self.g = sync_globals_t.from_buffer_copy(self.g)

    close = shutdown

    def __enter__(self) -> Substrate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


__all__ = ["DEFAULTS", "NCHAINS", "Substrate", "reap_stale_segments", "validate_params"]
