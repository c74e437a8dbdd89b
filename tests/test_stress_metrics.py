"""Stress metrics: exact figures from synthetic probes, consistency with the
kernel's counters on both backends, the tables, JSON and YAML."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from realfork.kernel.errno_defs import EAGAIN, EINTR, ENOMEM
from realfork.kernel.faults import SITE_INDEX
from realfork.kernel.structs import PR_SUSPENDED, SHOLDFORK, SHOLDFORK1
from realfork.kernel.systab import SYSNUM
from realfork.probes.ring import ProbeEvent
from realfork.stress import dist as D
from realfork.stress import metrics as M
from realfork.stress import render as R
from realfork.stress.config import StressConfig
from realfork.stress.dist import Dist
from realfork.stress.metrics import Metrics
from realfork.stress.render import format_tables, to_yaml
from realfork.stress.runner import run_stress
from realfork.sync.structs import SYNC_CV, SYNC_MUTEX, SYNC_RW, TS_ONPROC, TS_SLEEP

ROOT = Path(__file__).resolve().parent.parent

STRESS_NG_KEYS = ("stressor", "bogo-ops", "bogo-ops-per-second-usr-sys-time",
                  "bogo-ops-per-second-real-time", "wall-clock-time", "user-time",
                  "system-time", "cpu-usage-per-instance")


def ev(name: str, *args: int, pid: int = 10, lwpid: int = 1, ts: int = 0) -> ProbeEvent:
    return ProbeEvent(name, ts, pid, lwpid, tuple(args) + (0,) * (4 - len(args)))


def exact(values: list[int], p: float) -> int:
    """Nearest-rank percentile, computed the textbook way."""
    s = sorted(values)
    return s[max(math.ceil(p / 100 * len(s)), 1) - 1]


class FakeSystem:
    """What Metrics reads of a System: the counters, the ring's drop count,
    class names, the kthread table and the sync objects."""

    def __init__(self, classes: dict[int, str] | None = None) -> None:
        self.g = SimpleNamespace(**{k: 0 for k in M.COUNTERS}, nproc=3)
        self.K = SimpleNamespace(g=self.g)
        self.classes = classes or {}
        self.slots: list[SimpleNamespace] = []
        self.syncs: list[SimpleNamespace] = []
        self.dom = SimpleNamespace(
            ring=SimpleNamespace(dropped=0), class_name=lambda cid: (self.classes[cid], ""),
            kthreads=SimpleNamespace(slots=self.slots, capacity=64,
                                     hdr=SimpleNamespace(hiwater=0)),
            syncs=self.syncs)

    def sync(self, kind: int, cid: int) -> int:
        self.syncs.append(SimpleNamespace(kind=kind, lclass=cid))
        return len(self.syncs) - 1

    def thread(self, state: int = TS_ONPROC, wchan: int = -1, since: int = 0,
               chain: str = "") -> SimpleNamespace:
        t = SimpleNamespace(slot_inuse=1, t_state=state, t_wchan=wchan + 1,
                            t_sleep_ns=since, t_chain=chain.encode())
        self.slots.append(t)
        self.dom.kthreads.hdr.hiwater = len(self.slots)
        return t


# -- distributions --------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_percentiles_are_exact_nearest_rank() -> None:
    d = Dist()
    vals = list(range(1, 101))
    random.Random(1).shuffle(vals)
    for v in vals:
        d.add(v)
    s = d.summary()
    assert (s["count"], s["total"], s["min"], s["max"]) == (100, 5050, 1, 100)
    assert (s["p50"], s["p90"], s["p99"], s["avg"], s["exact"]) == (50, 90, 99, 50, True)

    one = Dist()
    one.add(7)
    assert one.percentiles() == [7, 7, 7]
    two = Dist()
    two.add(30)
    two.add(10)
    assert two.percentiles() == [10, 30, 30]  # p50 of two values is the lower
    assert Dist().summary()["p99"] == 0

    rng = random.Random(7)
    for n in (3, 10, 101, 1000, 4567):
        values = [int(rng.lognormvariate(10, 2)) for _ in range(n)]
        d = Dist()
        for v in values:
            d.add(v)
        for p, got in zip((50, 90, 99), d.percentiles(), strict=True):
            assert got == exact(values, p), (n, p)
        assert d.max == max(values) and d.min == min(values) and d.total == sum(values)


@pytest.mark.timeout(30)
def test_histogram_buckets_tile_the_integers() -> None:
    prev_hi = -1
    for i in range(D._bucket(1 << 40) + 1):
        lo, hi = D._bucket_bounds(i)
        assert lo == prev_hi + 1 and hi >= lo
        assert D._bucket(lo) == D._bucket(hi) == i
        assert hi - lo + 1 <= max(1, lo >> D.SUB_BITS)  # width <= value / 128
        prev_hi = hi


@pytest.mark.timeout(30)
def test_past_the_cap_percentiles_are_bounded_above_by_1_in_128() -> None:
    rng = random.Random(3)
    values = [int(rng.expovariate(1 / 50_000)) for _ in range(20_000)] + [10**9]
    d = Dist(cap=1000)
    for v in values:
        d.add(v)
    assert not d.exact and d.summary()["exact"] is False
    assert d.max == 10**9 and d.n == len(values) and d.total == sum(values)
    for p, got in zip((50, 90, 99), d.percentiles(), strict=True):
        want = exact(values, p)
        assert want <= got <= want + want / 128, (p, want, got)


# -- synthetic probes -----------------------------------------------------------------


@pytest.mark.timeout(30)
def test_system_calls_count_errnos_and_latency() -> None:
    m = Metrics(["mix"])
    fork1, wait = SYSNUM["fork1"], SYSNUM["wait"]
    for i in range(1, 11):
        m.event(ev("syscall:::return", fork1, i * 1000, EAGAIN if i <= 2 else 0), "mix", True)
    m.event(ev("syscall:::return", wait, 5, EINTR), None, False)
    doc = m.finish(1.0)
    f = doc["syscalls"]["fork1"]
    assert (f["count"], f["errors"], f["errno"]) == (10, 2, {"EAGAIN": 2})
    lat = f["latency_ns"]
    assert (lat["p50"], lat["p90"], lat["p99"], lat["max"], lat["avg"]) == (
        5000, 9000, 10000, 10000, 5500)
    assert doc["syscalls"]["wait"]["errno"] == {"EINTR": 1}
    assert list(doc["syscalls"]) == ["fork1", "wait"]  # busiest first
    assert doc["stressors"]["mix"]["syscalls"] == 10 and doc["stressors"]["mix"]["bogo_ops"] == 10
    assert doc["unattributed"]["syscalls"] == 1


@pytest.mark.timeout(30)
def test_lockstat_contention_wait_and_hold() -> None:
    sysm = FakeSystem({0: "pidlock", 1: "a_lock"})
    m = Metrics(["fork"])
    m.attach(sysm)  # type: ignore[arg-type]
    A, B, R = "lockstat:::adaptive-acquire", "lockstat:::adaptive-block", \
        "lockstat:::adaptive-release"
    for hold in (100, 300, 200):  # uncontended
        m.event(ev(A, 5, 0), "fork", False)
        m.event(ev(R, 5, 0, hold), "fork", False)
    m.event(ev(B, 5, 0, 1), "fork", False)  # won by spinning
    m.event(ev(A, 5, 0), "fork", False)
    m.event(ev(R, 5, 0, 600), "fork", False)
    for w in (4000, 2000):  # slept
        m.event(ev(B, 5, 0, w), "fork", False)
        m.event(ev(A, 5, 0), "fork", False)
        m.event(ev(R, 5, 0, 0), "fork", False)  # hold unknown: not counted
    m.event(ev("lockstat:::rw-acquire", 9, 1, 1), None, False)
    m.event(ev("lockstat:::rw-block", 9, 1, 7000, 0), None, False)  # also an acquisition
    m.event(ev("lockstat:::rw-release", 9, 1, 0, 1), None, False)
    m.detach(sysm)  # type: ignore[arg-type]
    locks = m.finish(1.0)["locks"]
    p = locks["pidlock"]
    assert (p["type"], p["acquisitions"], p["contentions"], p["spins"], p["blocks"]) == (
        "mutex", 6, 3, 1, 2)
    assert p["wait_ns"] == {"total": 6000, "avg": 3000, "max": 4000}
    assert p["hold_ns"] == {"count": 4, "avg": 300, "max": 600}
    a = locks["a_lock"]
    assert (a["type"], a["acquisitions"], a["contentions"], a["hold_ns"]) == ("rwlock", 2, 1, None)
    assert a["wait_ns"] == {"total": 7000, "avg": 7000, "max": 7000}
    assert list(locks) == ["a_lock", "pidlock"]  # most wait time first


@pytest.mark.timeout(30)
def test_lock_figures_merge_across_runs_by_class_name() -> None:
    m = Metrics(["fork"])
    for cid in (3, 8):  # the same class, another id in the next kernel
        sysm = FakeSystem({cid: "p_lock"})
        m.attach(sysm)  # type: ignore[arg-type]
        m.event(ev("lockstat:::adaptive-block", 1, cid, 10 * cid), None, False)
        m.event(ev("lockstat:::adaptive-acquire", 1, cid), None, False)
        m.detach(sysm)  # type: ignore[arg-type]
    p = m.finish(1.0)["locks"]["p_lock"]
    assert (p["acquisitions"], p["contentions"]) == (2, 2)
    assert p["wait_ns"] == {"total": 110, "avg": 55, "max": 80}


@pytest.mark.timeout(30)
def test_blocked_threads_chains_are_sampled_once_per_wait() -> None:
    sysm = FakeSystem({0: "pidlock", 1: "a_lock", 2: "p_cv"})
    mx, rw, cv = sysm.sync(SYNC_MUTEX, 0), sysm.sync(SYNC_RW, 1), sysm.sync(SYNC_CV, 2)
    t1 = sysm.thread(TS_SLEEP, mx, since=100, chain="getproc;cfork;fork1")
    sysm.thread(TS_SLEEP, rw, since=200, chain="as_dup;cfork")
    sysm.thread(TS_SLEEP, cv, since=300, chain="vfwait")  # not a lock
    sysm.thread(TS_ONPROC, chain="stale;chain")
    m = Metrics(["fork"])
    m.attach(sysm)  # type: ignore[arg-type]
    m.tick(sysm)  # type: ignore[arg-type]
    m.tick(sysm)  # type: ignore[arg-type]  # the same waits: not counted again
    t1.t_sleep_ns = 900  # a new wait of the same thread, same chain
    m.tick(sysm)  # type: ignore[arg-type]
    t1.t_chain = b"proc_exit;exit_proc"
    t1.t_sleep_ns = 1000
    m.tick(sysm)  # type: ignore[arg-type]
    m.detach(sysm)  # type: ignore[arg-type]
    locks = m.finish(1.0)["locks"]
    assert locks["pidlock"]["chains"] == [
        {"chain": "getproc < cfork < fork1", "count": 2},
        {"chain": "proc_exit < exit_proc", "count": 1}]
    assert locks["pidlock"]["chains_sampled"] == 3
    assert locks["a_lock"]["chains"] == [{"chain": "as_dup < cfork", "count": 1}]
    assert "p_cv" not in locks


@pytest.mark.timeout(30)
def test_hold_and_vfork_waits_are_paired_per_lwp() -> None:
    sysm = FakeSystem()
    m = Metrics(["forkall", "vfork"])
    m.attach(sysm)  # type: ignore[arg-type]
    S, D = "proc:::hold-start", "proc:::hold-done"
    # pid 10 lwp 1 holds its other lwps for a fork1 (1000 ns); meanwhile its
    # lwp 2 is parked (5000 ns), and lwp 1 itself parks inside holdlwps
    m.event(ev(S, SHOLDFORK1, pid=10, lwpid=1, ts=1000), "vfork", False)
    m.event(ev(S, PR_SUSPENDED, pid=10, lwpid=2, ts=1100), "vfork", False)
    m.event(ev(S, PR_SUSPENDED, pid=10, lwpid=1, ts=1200), "vfork", False)
    m.event(ev(D, PR_SUSPENDED, pid=10, lwpid=1, ts=1500), "vfork", False)
    m.event(ev(D, SHOLDFORK1, pid=10, lwpid=1, ts=2000), "vfork", False)
    m.event(ev(D, PR_SUSPENDED, pid=10, lwpid=2, ts=6100), "vfork", False)
    # pid 20 lwp 3: a forkall hold that gives up (no done), then one of 3000 ns
    m.event(ev(S, SHOLDFORK, pid=20, lwpid=3, ts=10_000), "forkall", False)
    m.event(ev(S, SHOLDFORK, pid=20, lwpid=3, ts=20_000), "forkall", False)
    m.event(ev(D, SHOLDFORK, pid=20, lwpid=3, ts=23_000), "forkall", False)
    m.event(ev(D, PR_SUSPENDED, pid=30, lwpid=1, ts=5), None, False)  # started before attach
    m.event(ev(S, PR_SUSPENDED, pid=30, lwpid=2, ts=5), None, False)  # still parked at the end
    # vfork parents: two interleaved waits, and one still open at the end
    V0, V1 = "proc:::vfork-wait-start", "proc:::vfork-wait-done"
    m.event(ev(V0, 11, pid=10, lwpid=1, ts=100), "vfork", False)
    m.event(ev(V0, 41, pid=40, lwpid=2, ts=150), "vfork", False)
    m.event(ev(V1, 41, pid=40, lwpid=2, ts=400), "vfork", False)
    m.event(ev(V1, 11, pid=10, lwpid=1, ts=1100), "vfork", False)
    m.event(ev(V0, 12, pid=10, lwpid=1, ts=2000), "vfork", False)
    m.detach(sysm)  # type: ignore[arg-type]
    doc = m.finish(1.0)
    hl = doc["holds"]["holdlwps"]
    assert (hl["started"], hl["unpaired"], hl["unmatched_done"]) == (3, 1, 0)
    assert hl["by_flag"] == {"SHOLDFORK": 2, "SHOLDFORK1": 1}
    w = hl["wait_ns"]
    assert (w["count"], w["total"], w["min"], w["max"], w["p50"]) == (2, 4000, 1000, 3000, 1000)
    held = doc["holds"]["held"]
    assert (held["started"], held["unpaired"], held["unmatched_done"]) == (3, 1, 1)
    w = held["wait_ns"]
    assert (w["count"], w["total"], w["min"], w["max"]) == (2, 5300, 300, 5000)
    vf = doc["vfork_waits"]
    assert (vf["started"], vf["unpaired"], vf["unmatched_done"]) == (3, 1, 0)
    w = vf["wait_ns"]
    assert (w["count"], w["total"], w["min"], w["max"]) == (2, 1250, 250, 1000)


@pytest.mark.timeout(30)
def test_fork_failures_by_errno_and_site() -> None:
    m = Metrics(["bomb"])
    F = "proc:::fork-fail"
    for _ in range(3):
        m.event(ev(F, EAGAIN, SITE_INDEX["getproc.maxup"]), "bomb", True)
    m.event(ev(F, ENOMEM, SITE_INDEX["as_dup"]), "bomb", True)
    m.event(ev(F, EAGAIN, SITE_INDEX["as_dup"]), None, False)
    m.event(ev(F, EAGAIN, -1), None, False)
    ff = m.finish(1.0)["fork_failures"]
    assert ff["total"] == 6
    assert ff["by_errno"] == {"EAGAIN": 5, "ENOMEM": 1}
    assert ff["by_site"] == {"getproc.maxup": 3, "as_dup": 2, "unknown": 1}
    assert ff["by_errno_site"][0] == {"errno": "EAGAIN", "site": "getproc.maxup", "count": 3}
    assert sorted((r["errno"], r["site"], r["count"]) for r in ff["by_errno_site"][1:]) == [
        ("EAGAIN", "as_dup", 1), ("EAGAIN", "unknown", 1), ("ENOMEM", "as_dup", 1)]


@pytest.mark.timeout(30)
def test_stressor_times_creations_and_counters_over_two_runs() -> None:
    m = Metrics(["fork", "fork", "lwp"])
    for run in range(2):
        sysm = FakeSystem()
        sysm.g.syscalls, sysm.g.sysfork = 100, 7  # counts from before the run
        m.attach(sysm)  # type: ignore[arg-type]
        m.event(ev("proc:::create", 10, 1, 1, pid=11), "fork", True)
        m.event(ev("proc:::create", 10, 2, 1, pid=12), "fork", False)
        m.event(ev("proc:::lwp-create", 2, pid=20), "lwp", True)
        m.event(ev("proc:::lwp-exit", 1_500_000, 250_000, pid=11), "fork", False)
        m.event(ev("proc:::lwp-exit", 1_000, 2_000, pid=1), None, False)
        m.event(ev("proc:::exec", 0, pid=11), "fork", False)
        sysm.g.syscalls += 40 + run
        sysm.g.sysfork += 2
        sysm.dom.ring.dropped = 3
        m.detach(sysm)  # type: ignore[arg-type]
    doc = m.finish(5.0)
    f = doc["stressors"]["fork"]
    assert (f["instances"], f["bogo_ops"], f["lwps_exited"]) == (2, 2, 2)
    assert f["created"] == {"forkall": 0, "fork1": 2, "vfork": 2, "system": 0}
    assert (f["usr_time"], f["sys_time"]) == (3.0, 0.5)
    assert f["ops_per_s_usr_sys"] == round(2 / 3.5, 2)
    assert f["real_time"] == round(m.run_time, 6) and doc["runs"] == 2
    assert f["ops_per_s"] == round(2 / m.run_time, 2)
    assert f["cpu_usage_per_instance"] == round(100 * 3.5 / (m.run_time * 2), 2)
    assert doc["stressors"]["lwp"]["lwps_created"] == 2
    assert doc["unattributed"]["usr_time"] == 0.002 and doc["unattributed"]["sys_time"] == 0.004
    assert doc["processes"]["created"]["fork1"] == 2 and doc["processes"]["exec"] == 2
    assert doc["counters"]["syscalls"] == 81 and doc["counters"]["sysfork"] == 4
    assert doc["counters"]["probes_dropped"] == 6 and doc["probes"]["dropped"] == 6
    assert doc["probes"]["events"] == 12
    text = format_tables(doc)
    assert "probes: 12 events, 6 dropped" in text and "--probe-capacity" in text
    assert m.reached(2) == {"fork", "lwp"} and m.reached(3) == set()
    # detach takes a last sample of each run: cumulative over the runs
    assert [s["syscalls"] for s in doc["series"]] == [40, 81]
    assert all(s["final"] for s in doc["series"])
    assert doc["series"][-1]["ops"] == {"fork": 2, "lwp": 2}


@pytest.mark.timeout(30)
def test_tick_takes_a_sample_when_one_is_due(monkeypatch: pytest.MonkeyPatch) -> None:
    sysm = FakeSystem()
    m = Metrics(["mix"])
    m.attach(sysm)  # type: ignore[arg-type]
    assert m.last_sample() == {}
    monkeypatch.setattr(M, "SAMPLE_EVERY", 0.0)
    for _ in range(5):
        m.event(ev("syscall:::return", 7, 10, 0), "mix", True)
    sysm.g.syscalls = 5
    m.tick(sysm)  # type: ignore[arg-type]
    s = m.last_sample()
    assert (s["ops"], s["syscalls"], s["nproc"], s["final"]) == ({"mix": 5}, 5, 3, False)
    assert m.recent_rate() == s["ops_per_s"] > 0
    m.detach(sysm)  # type: ignore[arg-type]


# -- output ---------------------------------------------------------------------------


def _small_doc() -> dict[str, Any]:
    sysm = FakeSystem({0: "pidlock"})
    m = Metrics(["fork", "vfork"])
    m.attach(sysm)  # type: ignore[arg-type]
    m.event(ev("proc:::create", 10, 1, 1, pid=11), "fork", True)
    m.event(ev("syscall:::return", SYSNUM["fork1"], 12_345, 0), "fork", False)
    m.event(ev("syscall:::return", SYSNUM["vfork"], 2_000_000, EAGAIN), "vfork", False)
    m.event(ev("lockstat:::adaptive-block", 1, 0, 50_000), "fork", False)
    m.event(ev("lockstat:::adaptive-acquire", 1, 0), "fork", False)
    m.event(ev("proc:::fork-fail", EAGAIN, SITE_INDEX["pid_assign"]), "vfork", False)
    m.event(ev("proc:::lwp-exit", 2000, 1000, pid=11), "fork", False)
    sysm.g.syscalls = 3
    m.detach(sysm)  # type: ignore[arg-type]
    return m.finish(1.0)


@pytest.mark.timeout(30)
def test_tables_are_aligned() -> None:
    text = format_tables(_small_doc())
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["stressor", "instances", "bogo"]
    assert "(usr+sys time)" in lines[1]
    fork = next(ln for ln in lines if ln.startswith("fork "))
    # right-aligned columns: every number ends where its heading ends
    assert fork.index("1 ") + 1 == lines[0].index("instances") + len("instances")
    assert "system calls: 2 returned (3 entered; 1 never returned" in text
    assert any(ln.startswith("vfork") and "EAGAIN 1" in ln and "2ms" in ln for ln in lines)
    assert any(ln.startswith("pidlock") and "50us" in ln for ln in lines)
    assert "fork failures: 1" in text and "pid_assign" in text
    assert "--probe-capacity" not in text  # nothing was dropped
    assert R.fmt_ns(999) == "999ns" and R.fmt_ns(12_345) == "12.3us"
    assert R.fmt_ns(250_000_000) == "250ms" and R.fmt_ns(3.2e9) == "3.2s"


@pytest.mark.timeout(30)
def test_yaml_has_stress_ng_keys() -> None:
    doc = _small_doc()
    full = {"config": {"boot": {"backend": "processes"}}, "runs": 1, "kernels": ["k"],
            "metrics": doc, "findings": []}
    text = to_yaml(full)
    assert text.startswith("---\n") and "&id" not in text  # no anchors: plain YAML
    y = yaml.safe_load(text)
    assert [e["stressor"] for e in y["metrics"]] == ["fork", "vfork"]
    for e in y["metrics"]:
        assert all(k in e for k in STRESS_NG_KEYS)
    assert y["metrics"][0]["bogo-ops"] == 1 and y["metrics"][0]["user-time"] == 0.002
    assert y["system-info"]["backend"] == "processes"
    assert set(y["times"]) == {"run-time", "user-time", "system-time", "total-time"}
    assert y["system-calls"][0]["system-call"] in ("fork1", "vfork")
    assert y["lock-classes"][0]["lock-class"] == "pidlock"
    assert y["lock-classes"][0]["wait-ns"]["max"] == 50_000
    assert y["fork-failures"]["by-site"] == {"pid_assign": 1}  # names keep their spelling
    assert y["findings"] == [] and y["kernels"] == ["k"]
    assert yaml.safe_load(to_yaml(doc))["metrics"][1]["stressor"] == "vfork"  # metrics alone
    json.dumps(doc)  # JSON-able as it is


# -- end to end -----------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_campaign_metrics_agree_with_the_kernel_counters(backend: str) -> None:
    # a ring that holds the whole run (about 300,000 probes, lockstat on), so that
    # none is lost however long the supervisor is kept from draining it
    r = run_stress(StressConfig(stressors={"fork": 1, "vfork": 1, "lwp": 1}, timeout=3,
                                check_interval=0,
                                boot={"backend": backend, "probe_capacity": 1 << 21}))
    assert r.findings == []
    m = r.metrics
    c = m["counters"]
    assert m["probes"]["dropped"] == c["probes_dropped"] == 0  # else nothing below holds
    st, pr, sc = m["stressors"], m["processes"], m["syscalls"]
    # bogo ops are the stressors' own events
    assert st["fork"]["bogo_ops"] == st["fork"]["created"]["fork1"] > 0
    assert st["vfork"]["bogo_ops"] == st["vfork"]["created"]["vfork"] > 0
    assert st["lwp"]["bogo_ops"] == st["lwp"]["lwps_created"] > 0
    # every creation, exec, exit and lwp is a kernel count
    assert pr["created"]["fork1"] == c["sysfork"] == st["fork"]["bogo_ops"] + 3  # + init's
    assert pr["created"]["vfork"] == c["sysvfork"]
    assert pr["created"]["forkall"] == c["sysforkall"] == 0
    assert (pr["exec"], pr["exit"], pr["lwp_create"]) == (c["nexec"], c["nexit"],
                                                          c["nlwp_create"])
    # system calls: each fork returns once to its parent; a call that never
    # returns (exit, lwp_exit, a kill) ends its lwp
    for name, counter in (("fork1", "sysfork"), ("vfork", "sysvfork")):
        assert sc[name]["count"] - sc[name]["errors"] == c[counter]
    returned = sum(s["count"] for s in sc.values())
    assert 0 <= c["syscalls"] - returned <= pr["lwp_exit"]
    assert returned == sum(s["syscalls"] for s in st.values()) + m["unattributed"]["syscalls"]
    for s in sc.values():
        lat = s["latency_ns"]
        assert lat["count"] == s["count"]
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert s["errors"] == sum(s["errno"].values())
    # waits and failures
    assert m["holds"]["held"]["started"] == c["holds"]
    vf = m["vfork_waits"]
    assert vf["started"] == c["vfork_waits"] == c["sysvfork"]
    assert vf["unpaired"] == vf["unmatched_done"] == 0
    assert vf["wait_ns"]["count"] == vf["started"]
    assert m["fork_failures"]["total"] == c["fork_fail"]
    # lockstat saw the kernel's locks in every process
    assert m["locks"]["pidlock"]["acquisitions"] > 0 and m["locks"]["p_lock"]["acquisitions"] > 0
    for lk in m["locks"].values():
        assert lk["contentions"] == lk["spins"] + lk["blocks"] <= lk["acquisitions"]
    # CPU time: the instances ran for the whole run
    assert st["fork"]["usr_time"] + st["fork"]["sys_time"] > 0
    assert st["fork"]["real_time"] == st["lwp"]["real_time"] > 0
    # the series ends with the campaign's totals
    last = m["series"][-1]
    assert last["final"] and last["syscalls"] == c["syscalls"]
    assert last["ops"] == {name: s["bogo_ops"] for name, s in st.items()}
    assert last["forks"] == c["sysfork"] + c["sysvfork"] + c["sysforkall"]
    text = format_tables(m)
    assert "pidlock" in text and "fork1" in text


@pytest.mark.timeout(120)
def test_cli_writes_json_and_yaml(tmp_path: Path) -> None:
    j, y = tmp_path / "m.json", tmp_path / "m.yaml"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "realfork", "stress", "--timeout", "3", "--fork",
                        "1", "--json", str(j), "--yaml", str(y)], capture_output=True,
                       text=True, env=env, timeout=100)
    assert r.returncode == 0, r.stderr
    assert "bogo ops/s" in r.stdout and "system calls:" in r.stdout
    doc = json.loads(j.read_text())
    m = doc["metrics"]
    for key in ("stressors", "syscalls", "locks", "holds", "vfork_waits", "fork_failures",
                "probes", "counters", "series"):
        assert key in m, key
    assert m["stressors"]["fork"]["bogo_ops"] > 0
    yd = yaml.safe_load(y.read_text())
    assert yd["metrics"][0]["stressor"] == "fork"
    assert all(k in yd["metrics"][0] for k in STRESS_NG_KEYS)
    assert yd["metrics"][0]["bogo-ops"] == m["stressors"]["fork"]["bogo_ops"]
    for key in ("system-info", "times", "system-calls", "lock-classes", "holds", "vfork-waits",
                "fork-failures", "probes", "series", "config", "findings"):
        assert key in yd, key
