"""Stress metrics, built from the probe stream and the kernel's counters.

The runner calls ``attach``/``detach`` around each run (a campaign with
``keep_going`` has several, one kernel each), ``event`` for every probe it
drains (with the stressor the firing process belongs to, and whether the
event is one of its bogo ops), ``tick`` at every poll, and ``finish`` at the
end for the whole document.  What it measures:

* per stressor: bogo ops, real time (the wall time of the runs: every
  instance runs the whole time), user and system time (the ``proc:::lwp-exit``
  CPU times of the lwps of its processes; lwps still alive at the end are
  killed, so they fire too), the rates and CPU use stress-ng reports;
* per system call (``syscall:::return``): count, errors by errno, latency
  percentiles (p50, p90, p99) and maximum;
* per lock class (the ``lockstat`` probes), as lockstat(1M): acquisitions,
  contentions (spins and blocks), wait time total/average/maximum, hold time
  average/maximum (mutexes only: rwlock releases carry no hold time), and the
  call chains that block on it most, sampled at every ``tick`` from the
  waiting threads' recorded chains (each wait counted once);
* the waits of ``holdlwps`` (``proc:::hold-start``/``hold-done`` of the
  holder, paired per lwp and flag), of the lwps it parks (``held``), and of
  vfork parents (``proc:::vfork-wait-start``/``done``);
* fork failures by errno and fault site, probes seen and dropped, the
  kernel counters (summed over the runs);
* a per-second series of the main counters (``last_sample`` is the latest,
  for the progress line and the dashboard).

Per-event work is a few dict operations: percentiles are exact (nearest
rank) over the first ``EXACT_CAP`` values of each distribution; past that a
log-linear histogram takes over whose reported percentiles are never below
the exact ones and at most 1/128 above (``exact: false`` in the summary).

``format_tables`` renders the document as aligned tables (stress-ng's
metrics table, then lockstat-like ones); ``to_yaml`` writes it with
stress-ng's key names where they apply.
"""

from __future__ import annotations

import os
import time
from array import array
from collections import Counter
from typing import TYPE_CHECKING, Any

from ..kernel.errno_defs import ERRNO_NAMES
from ..kernel.faults import SITE_NAMES
from ..kernel.structs import PR_SUSPENDED, SHOLDFORK, SHOLDFORK1
from ..kernel.systab import SYSCALLS
from ..sync import lockstat
from ..sync.structs import SYNC_MUTEX, SYNC_RW, TS_SLEEP

if TYPE_CHECKING:
    from ..api import System
    from ..probes.ring import ProbeEvent

PERCENTILES = (50, 90, 99)
EXACT_CAP = 1 << 17  # values kept exactly per distribution before the histogram
SUB_BITS = 7  # histogram: 2**SUB_BITS buckets per power of two (error < 1/128)
SAMPLE_EVERY = 1.0  # seconds between samples of the series
TOP_CHAINS = 5  # call chains kept per lock class in the document

# the kernel counters summed over runs (deltas from attach to detach)
COUNTERS = ("sysfork", "sysvfork", "sysforkall", "fork_fail", "syscalls", "nexec", "nexit",
            "nlwp_create", "holds", "vfork_waits")
CREATE_KINDS = ("forkall", "fork1", "vfork", "system")  # proc:::create's kind argument
HOLD_FLAGS = {SHOLDFORK: "SHOLDFORK", SHOLDFORK1: "SHOLDFORK1"}

# -- distributions ------------------------------------------------------------------


def _bucket(v: int) -> int:
    """Histogram bucket of ``v`` >= 0: exact below 2**(SUB_BITS+1), then
    2**SUB_BITS buckets per power of two."""
    if v < 2 << SUB_BITS:
        return v
    shift = v.bit_length() - SUB_BITS - 1
    return (shift << SUB_BITS) + (v >> shift)


def _bucket_bounds(i: int) -> tuple[int, int]:
    """The smallest and largest value of bucket ``i``."""
    if i < 2 << SUB_BITS:
        return i, i
    shift = (i >> SUB_BITS) - 1
    mant = i - (shift << SUB_BITS)
    return mant << shift, ((mant + 1) << shift) - 1


def nearest_rank(n: int, p: float) -> int:
    """The 1-based rank of the ``p``-th percentile of ``n`` values (nearest
    rank: the smallest value with at least ``p`` percent of them at or below)."""
    k = -(-p * n // 100)
    return min(max(int(k), 1), n)


def percentile(values: list[int], p: float) -> int:
    """Exact nearest-rank percentile of ``values`` (not empty)."""
    s = sorted(values)
    return s[nearest_rank(len(s), p) - 1]


class Dist:
    """A distribution of non-negative integers (nanoseconds): count, total,
    min, max, and percentiles (exact up to ``cap`` values)."""

    __slots__ = ("cap", "hist", "max", "min", "n", "total", "vals")

    def __init__(self, cap: int = EXACT_CAP) -> None:
        self.n = 0
        self.total = 0
        self.min = -1
        self.max = 0
        self.vals: array[int] = array("q")
        self.hist: dict[int, int] | None = None
        self.cap = cap

    def add(self, v: int) -> None:
        if v < 0:
            v = 0
        self.n += 1
        self.total += v
        if v > self.max:
            self.max = v
        if v < self.min or self.min < 0:
            self.min = v
        h = self.hist
        if h is None:
            self.vals.append(v)
            if len(self.vals) >= self.cap:
                self._to_hist()
        else:
            i = _bucket(v)
            h[i] = h.get(i, 0) + 1

    def _to_hist(self) -> None:
        h: dict[int, int] = {}
        for v in self.vals:
            i = _bucket(v)
            h[i] = h.get(i, 0) + 1
        self.hist = h
        self.vals = array("q")

    @property
    def exact(self) -> bool:
        return self.hist is None

    def percentiles(self, ps: tuple[float, ...] = PERCENTILES) -> list[int]:
        if not self.n:
            return [0 for _ in ps]
        ranks = [nearest_rank(self.n, p) for p in ps]
        if self.hist is None:
            s = sorted(self.vals)
            return [s[k - 1] for k in ranks]
        out = []
        items = sorted(self.hist.items())
        for k in ranks:
            cum = 0
            for i, c in items:
                cum += c
                if cum >= k:
                    # the bucket's top: never below the exact value, at most
                    # 1/2**SUB_BITS above it; within [min, max] like it
                    out.append(max(min(_bucket_bounds(i)[1], self.max), self.min))
                    break
        return out

    def summary(self) -> dict[str, Any]:
        d: dict[str, Any] = {"count": self.n, "total": self.total,
                             "avg": round(self.total / self.n) if self.n else 0,
                             "min": max(self.min, 0)}
        for p, v in zip(PERCENTILES, self.percentiles(), strict=True):
            d[f"p{p}"] = v
        d["max"] = self.max
        d["exact"] = self.exact
        return d


# -- per-key records ------------------------------------------------------------------


class _Stressor:
    __slots__ = ("created", "fork_fail", "lwps_created", "lwps_exited", "stime_us", "syscalls",
                 "utime_us")

    def __init__(self) -> None:
        self.syscalls = 0
        self.utime_us = 0
        self.stime_us = 0
        self.lwps_created = 0
        self.lwps_exited = 0
        self.created = [0, 0, 0, 0]  # by proc:::create kind
        self.fork_fail = 0


class _Lock:
    """lockstat figures of one lock class (within one run: keyed by class id)."""

    __slots__ = ("acq", "blocks", "chains", "hold_max", "hold_n", "hold_total", "kind",
                 "spins", "wait_max", "wait_total")

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "mutex" or "rwlock"
        self.acq = 0
        self.spins = 0  # contentions won by spinning (mutex.py reports them as 1 ns waits)
        self.blocks = 0  # contentions that slept: the wait times are theirs
        self.wait_total = 0
        self.wait_max = 0
        self.hold_n = 0
        self.hold_total = 0
        self.hold_max = 0
        self.chains: Counter[str] = Counter()

    def merge(self, o: _Lock) -> None:
        self.acq += o.acq
        self.spins += o.spins
        self.blocks += o.blocks
        self.wait_total += o.wait_total
        self.wait_max = max(self.wait_max, o.wait_max)
        self.hold_n += o.hold_n
        self.hold_total += o.hold_total
        self.hold_max = max(self.hold_max, o.hold_max)
        self.chains.update(o.chains)

    def to_dict(self) -> dict[str, Any]:
        top = self.chains.most_common(TOP_CHAINS)
        return {
            "type": self.kind,
            "acquisitions": self.acq,
            "contentions": self.spins + self.blocks,
            "spins": self.spins,
            "blocks": self.blocks,
            "wait_ns": {"total": self.wait_total,
                        "avg": round(self.wait_total / self.blocks) if self.blocks else 0,
                        "max": self.wait_max},
            "hold_ns": ({"count": self.hold_n,
                         "avg": round(self.hold_total / self.hold_n) if self.hold_n else 0,
                         "max": self.hold_max} if self.kind == "mutex" else None),
            "chains_sampled": sum(self.chains.values()),
            "chains": [{"chain": c.replace(";", " < "), "count": n} for c, n in top],
        }


class _Waits:
    """Paired start/done probes: the waits' distribution."""

    __slots__ = ("dist", "pending", "started", "unmatched_done", "unpaired")

    def __init__(self) -> None:
        self.dist = Dist()
        self.pending: dict[tuple[int, ...], int] = {}
        self.started = 0
        self.unpaired = 0  # starts never followed by their done
        self.unmatched_done = 0  # dones without a start (the start came before attach)

    def start(self, key: tuple[int, ...], ts: int) -> None:
        self.started += 1
        if key in self.pending:
            self.unpaired += 1  # abandoned (holdlwps gave up): a new wait begins
        self.pending[key] = ts

    def done(self, key: tuple[int, ...], ts: int) -> None:
        t0 = self.pending.pop(key, None)
        if t0 is None:
            self.unmatched_done += 1
        else:
            self.dist.add(ts - t0)

    def end_run(self) -> None:
        self.unpaired += len(self.pending)
        self.pending.clear()

    def to_dict(self) -> dict[str, Any]:
        return {"started": self.started, "unpaired": self.unpaired,
                "unmatched_done": self.unmatched_done, "wait_ns": self.dist.summary()}


# -- the metrics --------------------------------------------------------------------


class Metrics:
    def __init__(self, instance_names: list[str]) -> None:
        self.instances = Counter(instance_names)
        # plain dicts on the per-event path (a Counter's += costs twice as much)
        self.ops: dict[str, int] = {name: 0 for name in self.instances}
        self.stressors = {name: _Stressor() for name in self.instances}
        self.other = _Stressor()  # init, system processes: no stressor
        self.series: list[dict[str, Any]] = []
        self.runs = 0
        self.run_time = 0.0
        self._t0 = time.monotonic()
        self._rate = 0.0
        # system calls: number -> latency; (number, errno) -> count
        self._sys: dict[int, Dist] = {}
        self._syserr: Counter[tuple[int, int]] = Counter()
        # lock classes: per run by class id, folded by name at detach
        self._run_locks: dict[int, _Lock] = {}
        self._locks: dict[str, _Lock] = {}
        self._wait_seen: set[tuple[int, int]] = set()  # (kthread slot, sleep start)
        self.holdlwps = _Waits()
        self.held = _Waits()
        self.hold_flags: Counter[int] = Counter()
        self.vfork = _Waits()
        self.fork_fail: Counter[tuple[int, int]] = Counter()  # (errno, site)
        self.created = [0, 0, 0, 0]
        self.names: dict[str, int] = {}  # events by probe name
        self.dropped = 0  # probes dropped in finished runs
        self.counters: Counter[str] = Counter()  # kernel counters of finished runs
        self._system: System | None = None
        self._base: dict[str, int] = {}
        self._attached_at = 0.0
        self._last: dict[str, Any] = {}  # the previous sample's cumulative values
        self._handlers = {
            "syscall:::return": self._syscall,
            lockstat.ADAPTIVE_ACQUIRE: self._adaptive_acquire,
            lockstat.ADAPTIVE_BLOCK: self._adaptive_block,
            lockstat.ADAPTIVE_RELEASE: self._adaptive_release,
            lockstat.RW_ACQUIRE: self._rw_acquire,
            lockstat.RW_BLOCK: self._rw_block,
            "proc:::create": self._create,
            "proc:::lwp-create": self._lwp_create,
            "proc:::lwp-exit": self._lwp_exit,
            "proc:::fork-fail": self._fork_fail,
            "proc:::hold-start": self._hold_start,
            "proc:::hold-done": self._hold_done,
            "proc:::vfork-wait-start": self._vfork_start,
            "proc:::vfork-wait-done": self._vfork_done,
        }

    # -- runs -------------------------------------------------------------------------

    def attach(self, system: System) -> None:
        self._system = system
        self._base = self._read_counters(system)
        self._attached_at = time.monotonic()
        self._run_locks = {}
        self._wait_seen = set()
        self.runs += 1

    def detach(self, system: System) -> None:
        if self._system is None:
            return
        now = time.monotonic()
        cur = self._read_counters(system)
        self.run_time += now - self._attached_at
        for k in COUNTERS:
            self.counters[k] += cur[k] - self._base[k]
        self.dropped += cur["probes_dropped"] - self._base["probes_dropped"]
        self._fold_locks(system)
        for w in (self.holdlwps, self.held, self.vfork):
            w.end_run()
        self._system = None
        self._sample(None, now, final=True, nproc=cur["nproc"])

    def _read_counters(self, system: System) -> dict[str, int]:
        g = system.K.g
        c = {k: int(getattr(g, k)) for k in COUNTERS}
        c["probes_dropped"] = int(system.dom.ring.dropped)
        c["nproc"] = int(g.nproc)
        return c

    def _fold_locks(self, system: System) -> None:
        dom = system.dom
        for cid, ls in self._run_locks.items():
            try:
                name = dom.class_name(cid)[0] or f"class#{cid}"
            except Exception:  # a torn-down kernel: keep the figures under the id
                name = f"class#{cid}"
            have = self._locks.get(name)
            if have is None:
                self._locks[name] = ls
            else:
                have.merge(ls)
        self._run_locks = {}

    # -- events -----------------------------------------------------------------------

    def event(self, e: ProbeEvent, stressor: str | None, is_op: bool) -> None:
        if is_op:
            ops = self.ops
            ops[stressor] = ops.get(stressor, 0) + 1  # type: ignore[index,arg-type]
        name = e.name
        names = self.names
        names[name] = names.get(name, 0) + 1
        h = self._handlers.get(name)
        if h is not None:
            h(e, stressor)

    def _st(self, stressor: str | None) -> _Stressor:
        if stressor is None:
            return self.other
        st = self.stressors.get(stressor)
        if st is None:
            st = self.stressors[stressor] = _Stressor()
        return st

    def _syscall(self, e: ProbeEvent, stressor: str | None) -> None:
        num, lat, err = e.args[0], e.args[1], e.args[2]
        d = self._sys.get(num)
        if d is None:
            d = self._sys[num] = Dist()
        d.add(lat)
        if err:
            self._syserr[(num, err)] += 1
        self._st(stressor).syscalls += 1

    def _lock(self, cid: int, kind: str) -> _Lock:
        ls = self._run_locks.get(cid)
        if ls is None:
            ls = self._run_locks[cid] = _Lock(kind)
        return ls

    def _adaptive_acquire(self, e: ProbeEvent, stressor: str | None) -> None:
        ls = self._run_locks.get(e.args[1]) or self._lock(e.args[1], "mutex")
        ls.acq += 1

    def _adaptive_block(self, e: ProbeEvent, stressor: str | None) -> None:
        a = e.args
        ls = self._run_locks.get(a[1]) or self._lock(a[1], "mutex")
        w = a[2]
        if w <= 1:  # spun: no wait time measured
            ls.spins += 1
            return
        ls.blocks += 1
        ls.wait_total += w
        if w > ls.wait_max:
            ls.wait_max = w

    def _adaptive_release(self, e: ProbeEvent, stressor: str | None) -> None:
        a = e.args
        hold = a[2]
        if hold > 0:  # 0: acquired before lockstat was switched on
            ls = self._run_locks.get(a[1]) or self._lock(a[1], "mutex")
            ls.hold_n += 1
            ls.hold_total += hold
            if hold > ls.hold_max:
                ls.hold_max = hold

    def _rw_acquire(self, e: ProbeEvent, stressor: str | None) -> None:
        ls = self._run_locks.get(e.args[1]) or self._lock(e.args[1], "rwlock")
        ls.acq += 1

    def _rw_block(self, e: ProbeEvent, stressor: str | None) -> None:
        # a blocked rw_enter fires rw-block only: it is an acquisition too
        a = e.args
        ls = self._run_locks.get(a[1]) or self._lock(a[1], "rwlock")
        w = a[2]
        ls.acq += 1
        ls.blocks += 1
        ls.wait_total += w
        if w > ls.wait_max:
            ls.wait_max = w

    def _create(self, e: ProbeEvent, stressor: str | None) -> None:
        kind = e.args[1]
        if 0 <= kind < 4:
            self.created[kind] += 1
            self._st(stressor).created[kind] += 1

    def _lwp_create(self, e: ProbeEvent, stressor: str | None) -> None:
        self._st(stressor).lwps_created += 1

    def _lwp_exit(self, e: ProbeEvent, stressor: str | None) -> None:
        st = self._st(stressor)
        st.utime_us += e.args[0]
        st.stime_us += e.args[1]
        st.lwps_exited += 1

    def _fork_fail(self, e: ProbeEvent, stressor: str | None) -> None:
        self.fork_fail[(e.args[0], e.args[1])] += 1
        self._st(stressor).fork_fail += 1

    def _hold_start(self, e: ProbeEvent, stressor: str | None) -> None:
        flag = e.args[0]
        if flag == PR_SUSPENDED:
            self.held.start((e.pid, e.lwpid), e.ts)
        else:
            self.hold_flags[flag] += 1
            self.holdlwps.start((e.pid, e.lwpid, flag), e.ts)

    def _hold_done(self, e: ProbeEvent, stressor: str | None) -> None:
        flag = e.args[0]
        if flag == PR_SUSPENDED:
            self.held.done((e.pid, e.lwpid), e.ts)
        else:
            self.holdlwps.done((e.pid, e.lwpid, flag), e.ts)

    def _vfork_start(self, e: ProbeEvent, stressor: str | None) -> None:
        self.vfork.start((e.pid, e.lwpid), e.ts)

    def _vfork_done(self, e: ProbeEvent, stressor: str | None) -> None:
        self.vfork.done((e.pid, e.lwpid), e.ts)

    # -- sampling ---------------------------------------------------------------------

    def tick(self, system: System | None = None) -> None:
        """Called by the runner at every poll: samples the call chains of the
        threads blocked on mutexes and rwlocks, and takes the per-second sample
        when one is due."""
        system = system or self._system
        if system is None:
            return
        self.sample_waiters(system)
        now = time.monotonic()
        if now - self._last.get("_mono", self._t0) >= SAMPLE_EVERY:
            self._sample(system, now)

    def sample_waiters(self, system: System) -> None:
        """Count the call chain of every thread now blocked on a mutex or
        rwlock against the lock's class, each wait once however long it lasts."""
        dom = system.dom
        slots = dom.kthreads.slots
        syncs = dom.syncs
        seen: set[tuple[int, int]] = set()
        prev = self._wait_seen
        # slots are handed out lowest-first from a LIFO free list: every slot
        # ever used lies below the high-water mark
        for i in range(min(dom.kthreads.hdr.hiwater, dom.kthreads.capacity)):
            ts = slots[i]
            if not ts.slot_inuse or ts.t_state != TS_SLEEP:
                continue
            w = ts.t_wchan
            if not w:
                continue
            s = syncs[w - 1]
            if s.kind != SYNC_MUTEX and s.kind != SYNC_RW:
                continue
            key = (i, ts.t_sleep_ns)
            seen.add(key)
            if key in prev:
                continue
            chain = ts.t_chain.decode(errors="replace")
            if chain:
                self._lock(s.lclass, "mutex" if s.kind == SYNC_MUTEX else "rwlock"
                           ).chains[chain] += 1
        self._wait_seen = seen

    def _current(self, system: System | None) -> dict[str, int]:
        """Cumulative counters over the campaign so far."""
        c = {k: self.counters[k] for k in COUNTERS}
        c["probes_dropped"] = self.dropped
        c["nproc"] = 0
        if system is not None and self._system is not None:
            cur = self._read_counters(system)
            for k in COUNTERS:
                c[k] += cur[k] - self._base[k]
            c["probes_dropped"] += cur["probes_dropped"] - self._base["probes_dropped"]
            c["nproc"] = cur["nproc"]
        return c

    def _sample(self, system: System | None, now: float, final: bool = False,
                nproc: int | None = None) -> None:
        c = self._current(system)
        if nproc is not None:
            c["nproc"] = nproc
        ops = dict(self.ops)
        total_ops = sum(ops.values())
        forks = c["sysfork"] + c["sysvfork"] + c["sysforkall"]
        contentions = (sum(ls.blocks + ls.spins for ls in self._run_locks.values())
                       + sum(ls.blocks + ls.spins for ls in self._locks.values()))
        last = self._last
        dt = now - last.get("_mono", self._t0)

        def rate(v: int, key: str) -> float:
            return round((v - last.get(key, 0)) / dt, 1) if dt > 0 else 0.0

        self._rate = rate(total_ops, "_ops")
        self.series.append({
            "t": round(now - self._t0, 3), "run": self.runs, "ops": ops,
            "ops_per_s": self._rate,
            "syscalls": c["syscalls"], "syscalls_per_s": rate(c["syscalls"], "syscalls"),
            "forks": forks, "forks_per_s": rate(forks, "forks"),
            "fork_fail": c["fork_fail"], "exec": c["nexec"], "exit": c["nexit"],
            "lwps_created": c["nlwp_create"], "holds": c["holds"],
            "vfork_waits": c["vfork_waits"], "contentions": contentions,
            "probes_dropped": c["probes_dropped"], "nproc": c["nproc"],
            "final": final,  # taken at the end of a run (its interval is shorter)
        })
        self._last = {"_mono": now, "_ops": total_ops, "syscalls": c["syscalls"],
                      "forks": forks}

    # -- the runner's questions -------------------------------------------------------

    def reached(self, ops: int) -> set[str]:
        """The stressors that have done at least ``ops`` bogo ops."""
        return {name for name in self.instances if self.ops.get(name, 0) >= ops}

    def recent_rate(self) -> float:
        """Bogo ops per second over the last sample's interval."""
        return self._rate

    def last_sample(self) -> dict[str, Any]:
        return self.series[-1] if self.series else {}

    # -- the document -----------------------------------------------------------------

    def finish(self, elapsed: float) -> dict[str, Any]:
        if self._system is not None:  # not detached (the runner always does)
            self._fold_locks(self._system)
        real = self.run_time or elapsed
        stressors = {}
        for name, n in self.instances.items():
            st = self.stressors[name]
            ops = self.ops.get(name, 0)
            usr, sys_ = st.utime_us / 1e6, st.stime_us / 1e6
            stressors[name] = {
                "instances": n, "bogo_ops": ops,
                "real_time": round(real, 6), "usr_time": round(usr, 6),
                "sys_time": round(sys_, 6),
                "ops_per_s": round(ops / real, 2) if real else 0.0,  # real time
                "ops_per_s_usr_sys": round(ops / (usr + sys_), 2) if usr + sys_ else 0.0,
                "cpu_usage_per_instance": round(100 * (usr + sys_) / (real * n), 2)
                if real else 0.0,
                "syscalls": st.syscalls, "fork_fail": st.fork_fail,
                "created": dict(zip(CREATE_KINDS, st.created, strict=True)),
                "lwps_created": st.lwps_created, "lwps_exited": st.lwps_exited,
            }
        syscalls = {}
        for num in sorted(self._sys, key=lambda k: -self._sys[k].n):
            d = self._sys[num]
            errs = {ERRNO_NAMES.get(err, str(err)): c
                    for (n, err), c in sorted(self._syserr.items()) if n == num}
            syscalls[_sysname(num)] = {"count": d.n, "errors": sum(errs.values()),
                                       "errno": errs, "latency_ns": d.summary()}
        locks = {name: ls.to_dict() for name, ls in sorted(
            self._locks.items(), key=lambda kv: (-kv[1].wait_total, -kv[1].blocks - kv[1].spins,
                                                 -kv[1].acq, kv[0]))}
        by_errno: Counter[str] = Counter()
        by_site: Counter[str] = Counter()
        rows = []
        for (err, site), c in sorted(self.fork_fail.items(), key=lambda kv: -kv[1]):
            ename, sname = ERRNO_NAMES.get(err, str(err)), _sitename(site)
            by_errno[ename] += c
            by_site[sname] += c
            rows.append({"errno": ename, "site": sname, "count": c})
        holdlwps = self.holdlwps.to_dict()
        holdlwps["by_flag"] = {HOLD_FLAGS.get(f, str(f)): c
                               for f, c in sorted(self.hold_flags.items())}
        counters = {k: self.counters[k] for k in COUNTERS}
        counters["probes_dropped"] = self.dropped
        o = self.other
        return {
            "elapsed": round(elapsed, 3),
            "run_time": round(real, 3),
            "runs": self.runs,
            "stressors": stressors,
            "unattributed": {"usr_time": round(o.utime_us / 1e6, 6),
                             "sys_time": round(o.stime_us / 1e6, 6),
                             "syscalls": o.syscalls, "lwps_exited": o.lwps_exited},
            "processes": {"created": dict(zip(CREATE_KINDS, self.created, strict=True)),
                          "exec": self.names.get("proc:::exec", 0),
                          "exit": self.names.get("proc:::exit", 0),
                          "lwp_create": self.names.get("proc:::lwp-create", 0),
                          "lwp_exit": self.names.get("proc:::lwp-exit", 0),
                          "relvm": self.names.get("proc:::relvm", 0)},
            "syscalls": syscalls,
            "locks": locks,
            "holds": {"holdlwps": holdlwps, "held": self.held.to_dict()},
            "vfork_waits": self.vfork.to_dict(),
            "fork_failures": {"total": sum(self.fork_fail.values()),
                              "by_errno": dict(by_errno), "by_site": dict(by_site),
                              "by_errno_site": rows},
            "probes": {"events": sum(self.names.values()), "dropped": self.dropped,
                       "by_name": dict(sorted(self.names.items()))},
            "counters": counters,
            "series": self.series,
        }


def _sysname(num: int) -> str:
    return SYSCALLS[num - 1] if 1 <= num <= len(SYSCALLS) else f"sys#{num}"


def _sitename(site: int) -> str:
    return SITE_NAMES[site] if 0 <= site < len(SITE_NAMES) else "unknown"


# -- tables -------------------------------------------------------------------------


def fmt_ns(ns: float) -> str:
    """A duration for a table: ns, us, ms or s with three significant digits."""
    if ns < 1000:
        return f"{ns:.0f}ns"
    for unit, div in (("us", 1e3), ("ms", 1e6)):
        v = ns / div
        if v < 1000:
            return f"{v:.3g}{unit}" if v < 100 else f"{v:.0f}{unit}"
    v = ns / 1e9
    return f"{v:.3g}s" if v < 100 else f"{v:.0f}s"


def _table(head: list[str], rows: list[list[str]], left: int = 1,
           head2: list[str] | None = None) -> list[str]:
    """Rows aligned under ``head``: the first ``left`` columns to the left,
    the others to the right."""
    heads = [head] + ([head2] if head2 else [])
    w = [max(len(r[i]) for r in heads + rows) for i in range(len(head))]

    def line(r: list[str]) -> str:
        cells = [c.ljust(w[i]) if i < left else c.rjust(w[i]) for i, c in enumerate(r)]
        return "  ".join(cells).rstrip()

    return [line(r) for r in heads + rows]


def format_tables(doc: dict[str, Any]) -> str:
    """The metrics document as aligned tables (stress-ng's, then lockstat-like)."""
    out: list[str] = []
    st = doc.get("stressors", {})
    rows = [[name, str(m["instances"]), str(m["bogo_ops"]), f"{m.get('real_time', 0):.2f}",
             f"{m.get('usr_time', 0):.2f}", f"{m.get('sys_time', 0):.2f}",
             f"{m.get('ops_per_s', 0):.2f}", f"{m.get('ops_per_s_usr_sys', 0):.2f}",
             f"{m.get('cpu_usage_per_instance', 0):.2f}"] for name, m in st.items()]
    out += _table(["stressor", "instances", "bogo ops", "real time", "usr time", "sys time",
                   "bogo ops/s", "bogo ops/s", "CPU used per"], rows,
                  head2=["", "", "", "(secs)", "(secs)", "(secs)", "(real time)",
                         "(usr+sys time)", "instance (%)"])
    sysc = doc.get("syscalls", {})
    if sysc:
        c = doc.get("counters", {})
        returned = sum(m["count"] for m in sysc.values())
        entered = c.get("syscalls")
        note = (f" ({entered} entered; {entered - returned} never returned: exit, "
                f"lwp_exit, killed)" if entered is not None else "")
        out += ["", f"system calls: {returned} returned{note}"]
        rows = []
        for name, m in sysc.items():
            lat = m["latency_ns"]
            errs = ", ".join(f"{k} {v}" for k, v in m["errno"].items())
            rows.append([name, str(m["count"]), str(m["errors"]), fmt_ns(lat["avg"]),
                         *(fmt_ns(lat[f"p{p}"]) for p in PERCENTILES), fmt_ns(lat["max"]),
                         errs])
        out += _table(["system call", "count", "errors", "avg",
                       *(f"p{p}" for p in PERCENTILES), "max", "errnos"], rows)
    locks = doc.get("locks", {})
    if locks:
        out += ["", "lock classes (lockstat): contentions (spun or slept), sleep times, "
                "hold times"]
        rows = []
        for name, m in locks.items():
            w, h = m["wait_ns"], m["hold_ns"]
            pct = 100 * m["contentions"] / m["acquisitions"] if m["acquisitions"] else 0.0
            slept = m.get("blocks", 0)
            rows.append([name, m["type"], str(m["acquisitions"]), str(m["contentions"]),
                         f"{pct:.1f}", str(m["spins"]), str(slept),
                         *((fmt_ns(w["total"]), fmt_ns(w["avg"]), fmt_ns(w["max"])) if slept
                           else ("-", "-", "-")),
                         fmt_ns(h["avg"]) if h and h["count"] else "-",
                         fmt_ns(h["max"]) if h and h["count"] else "-"])
        out += _table(["lock class", "type", "acquired", "contended", "%", "spun", "slept",
                       "wait total", "wait avg", "wait max", "hold avg", "hold max"], rows)
        chained = [(name, m) for name, m in locks.items() if m["chains"]]
        if chained:
            out += ["", "top call chains blocking on each lock class (sampled waits)"]
            for name, m in chained:
                out.append(f"  {name} ({m['chains_sampled']} waits sampled)")
                for ch in m["chains"]:
                    out.append(f"    {ch['count']:6d}  {ch['chain']}")
    waits = []
    holds = doc.get("holds", {})
    for label, key in (("holdlwps (the forking lwp)", "holdlwps"),
                       ("held lwps (parked by holdlwps)", "held")):
        if key in holds:
            waits.append((label, holds[key]))
    if "vfork_waits" in doc:
        waits.append(("vfork parent (vfwait)", doc["vfork_waits"]))
    if waits:
        out += ["", "waits"]
        rows = []
        for label, m in waits:
            d = m["wait_ns"]
            rows.append([label, str(d["count"]), str(m["unpaired"]), fmt_ns(d["total"]),
                         fmt_ns(d["avg"]), *(fmt_ns(d[f"p{p}"]) for p in PERCENTILES),
                         fmt_ns(d["max"])])
        out += _table(["wait", "count", "unpaired", "total", "avg",
                       *(f"p{p}" for p in PERCENTILES), "max"], rows)
    ff = doc.get("fork_failures")
    if ff is not None:
        out += ["", f"fork failures: {ff['total']}"]
        if ff["by_errno_site"]:
            out += _table(["errno", "site", "count"],
                          [[r["errno"], r["site"], str(r["count"])]
                           for r in ff["by_errno_site"]], left=2)
    pr = doc.get("probes")
    if pr is not None:
        out += ["", f"probes: {pr['events']} events, {pr['dropped']} dropped"]
        if pr["dropped"]:
            out.append("  the ring was full at times, so the counts above fall short of the "
                       "kernel's; a larger --probe-capacity keeps every probe")
    series = doc.get("series") or []
    rates = sorted(s["ops_per_s"] for s in series if not s.get("final"))
    if len(rates) >= 2:
        out.append(f"bogo ops/s per second: min {rates[0]:.0f}, median "
                   f"{rates[(len(rates) - 1) // 2]:.0f}, max {rates[-1]:.0f} "
                   f"({len(rates)} samples)")
    return "\n".join(out)


# -- YAML ---------------------------------------------------------------------------


def _r(v: float) -> float:
    return float(f"{v:.6g}")


def stress_ng_metrics(m: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-stressor entries with stress-ng's YAML key names."""
    out = []
    for name, s in m.get("stressors", {}).items():
        out.append({
            "stressor": name,
            "bogo-ops": s["bogo_ops"],
            "bogo-ops-per-second-usr-sys-time": _r(s.get("ops_per_s_usr_sys", 0.0)),
            "bogo-ops-per-second-real-time": _r(s.get("ops_per_s", 0.0)),
            "wall-clock-time": _r(s.get("real_time", 0.0)),
            "user-time": _r(s.get("usr_time", 0.0)),
            "system-time": _r(s.get("sys_time", 0.0)),
            "cpu-usage-per-instance": _r(s.get("cpu_usage_per_instance", 0.0)),
            "instances": s["instances"],
        })
    return out


_DATA_KEYS = {"errno", "by_errno", "by_site", "by_flag", "by_name", "ops"}  # keys are names


def _hyphen(d: Any, data: bool = False) -> Any:
    """Dict keys with ``_`` as ``-`` (stress-ng's YAML style), recursively;
    the keys of maps whose keys are names (errnos, fault sites, ...) stay."""
    if isinstance(d, dict):
        return {(k if data or not isinstance(k, str) else k.replace("_", "-")):
                _hyphen(v, isinstance(k, str) and k in _DATA_KEYS) for k, v in d.items()}
    if isinstance(d, list):
        return [_hyphen(v) for v in d]
    return d


def yaml_document(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (the stress result document with the metrics under ``metrics``,
    or the metrics document alone) laid out as stress-ng's YAML: ``metrics`` a
    list of per-stressor maps, then realfork's own sections."""
    if isinstance(doc.get("metrics"), dict) and "stressors" in doc["metrics"]:
        m, rest = doc["metrics"], {k: v for k, v in doc.items() if k != "metrics"}
    else:
        m, rest = doc, {}
    out: dict[str, Any] = {}
    cfg = rest.get("config") or {}
    boot = cfg.get("boot") or {}
    info = {"realfork-version": _version(), "cpus": os.cpu_count(),
            "backend": boot.get("backend", "threads") if cfg else None,
            "runs": m.get("runs"), "kernels": rest.get("kernels")}
    out["system-info"] = {k: v for k, v in info.items() if v is not None}
    out["metrics"] = stress_ng_metrics(m)
    usr = sum(s.get("usr_time", 0.0) for s in m.get("stressors", {}).values())
    sys_ = sum(s.get("sys_time", 0.0) for s in m.get("stressors", {}).values())
    un = m.get("unattributed", {})
    usr += un.get("usr_time", 0.0)
    sys_ += un.get("sys_time", 0.0)
    out["times"] = {"run-time": _r(m.get("run_time", m.get("elapsed", 0.0))),
                    "user-time": _r(usr), "system-time": _r(sys_),
                    "total-time": _r(usr + sys_)}
    out["system-calls"] = [{"system-call": name, **_hyphen(v)}
                           for name, v in m.get("syscalls", {}).items()]
    out["lock-classes"] = [{"lock-class": name, **_hyphen(v)}
                           for name, v in m.get("locks", {}).items()]
    for key in ("holds", "vfork_waits", "fork_failures", "processes", "unattributed",
                "probes", "counters"):
        if key in m:
            out[key.replace("_", "-")] = _hyphen(m[key])
    for k, v in rest.items():
        out[k.replace("_", "-")] = v
    out["series"] = _hyphen(m.get("series", []))
    return out


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("realfork")
    except PackageNotFoundError:
        return None


def to_yaml(doc: dict[str, Any]) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # a value shown twice is written twice: no &id001 anchors

    return yaml.dump(yaml_document(doc), Dumper=Dumper, sort_keys=False, explicit_start=True,
                     explicit_end=True, default_flow_style=False, width=100)
