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

Per-event work is a few dict operations; the distributions (latencies, wait
and hold times) are ``stress.dist.Dist``.  ``stress.render`` turns the
document into tables and YAML.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from ..kernel.errno_defs import ERRNO_NAMES
from ..kernel.faults import SITE_NAMES
from ..kernel.structs import PR_SUSPENDED, SHOLDFORK, SHOLDFORK1
from ..kernel.systab import SYSCALLS
from ..sync import lockstat
from ..sync.structs import SYNC_MUTEX, SYNC_RW, TS_SLEEP
from .dist import Dist

if TYPE_CHECKING:
    from ..api import System
    from ..probes.ring import ProbeEvent

SAMPLE_EVERY = 1.0  # seconds between samples of the series
TOP_CHAINS = 5  # call chains kept per lock class in the document

# the kernel counters summed over runs (deltas from attach to detach)
COUNTERS = ("sysfork", "sysvfork", "sysforkall", "fork_fail", "syscalls", "nexec", "nexit",
            "nlwp_create", "holds", "vfork_waits")
CREATE_KINDS = ("forkall", "fork1", "vfork", "system")  # proc:::create's kind argument
HOLD_FLAGS = {SHOLDFORK: "SHOLDFORK", SHOLDFORK1: "SHOLDFORK1"}


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


__all__ = ["COUNTERS", "CREATE_KINDS", "HOLD_FLAGS", "SAMPLE_EVERY", "TOP_CHAINS", "Metrics"]
