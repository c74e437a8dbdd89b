"""Fault injection: the Linux knobs, arming, determinism, specs, shared state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realfork.errors import BadInput
from realfork.kernel.errno_defs import EAGAIN, EFAULT, EINTR, EINVAL, EIO, ENOMEM, ENXIO
from realfork.kernel.faults import (
    FAIL_RETRY,
    FAULT_PROBE,
    SITE_NAMES,
    SITES,
    FaultPoints,
    declare,
    format_fault_spec,
    parse_fault_spec,
    parse_fault_specs,
)
from realfork.sync.domain import Substrate

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def kernel(config: dict[str, Any] | None = None, seed: int = 1,
           armed: bool = True) -> Iterator[tuple[Substrate, FaultPoints]]:
    dom = Substrate.boot(maxlwps=8, nsync=16, probe_capacity=64, extra_layout=declare)
    try:
        fp = FaultPoints(dom.seg, dom.chains, seed)
        fp.format(config or {})
        if armed:
            fp.arm()
        yield dom, fp
    finally:
        dom.shutdown()


def run(fp: FaultPoints, site: str, n: int) -> list[int]:
    return [fp.should_fail(site) for _ in range(n)]


def failing_calls(results: list[int]) -> list[int]:
    return [i + 1 for i, r in enumerate(results) if r]


# -- the contract -------------------------------------------------------------------


def test_sites_and_names() -> None:
    assert SITE_NAMES == (
        "getproc.memory", "getproc.zone", "pid_assign", "getproc.maxup", "as_dup",
        "forklwp", "contract_process_fork", "rctl_dup", "holdlwps",
        "newproc.lwp_create")
    assert SITES["as_dup"] == (ENOMEM, EAGAIN, EFAULT, EINVAL, EIO, ENXIO)
    assert SITES["holdlwps"] == (EINTR,)
    assert SITES["rctl_dup"] == ()
    assert FAULT_PROBE == "fault:::inject"


# -- the knobs -------------------------------------------------------------------------


def test_nth_fails_exactly_once_at_n() -> None:
    with kernel({"forklwp": {"nth": 4}}) as (_dom, fp):
        res = run(fp, "forklwp", 20)
        assert failing_calls(res) == [4]
        assert res[3] == EAGAIN
        s = fp.stats()["forklwp"]
        assert s["calls"] == 20 and s["failures"] == 1
        assert s["config"]["nth"] == 4


def test_nth_one_on_as_dup_with_errno() -> None:
    with kernel({"as_dup": {"nth": 1, "errno": "ENOMEM"}}) as (_dom, fp):
        assert run(fp, "as_dup", 3) == [ENOMEM, 0, 0]


def test_interval() -> None:
    with kernel({"holdlwps": {"interval": 3}}) as (_dom, fp):
        res = run(fp, "holdlwps", 10)
        assert failing_calls(res) == [3, 6, 9]
        assert {r for r in res if r} == {EINTR}


def test_times_budget() -> None:
    with kernel({"pid_assign": {"times": 2}}) as (_dom, fp):
        assert failing_calls(run(fp, "pid_assign", 6)) == [1, 2]
        s = fp.stats()["pid_assign"]
        assert s["failures"] == 2 and s["times_left"] == 0
    with kernel({"pid_assign": {"interval": 2, "times": 2}}) as (_dom, fp):
        assert failing_calls(run(fp, "pid_assign", 10)) == [2, 4]
    with kernel({"pid_assign": {"times": 0}}) as (_dom, fp):
        assert not any(run(fp, "pid_assign", 5))
    with kernel({"pid_assign": {"times": -1}}) as (_dom, fp):
        assert all(run(fp, "pid_assign", 5))


def test_probability_zero_and_hundred() -> None:
    with kernel({"forklwp": {"probability": 0}, "getproc.zone": {"probability": 100}}) as (
            _dom, fp):
        assert not any(run(fp, "forklwp", 200))
        assert all(r == EAGAIN for r in run(fp, "getproc.zone", 200))
        st_ = fp.stats()
        assert st_["forklwp"]["calls"] == 200 and st_["forklwp"]["failures"] == 0
        assert st_["getproc.zone"]["failures"] == 200


def test_seeded_rate_is_deterministic_across_kernels() -> None:
    config = {"forklwp": {"probability": 30}}
    runs = []
    for seed in (1234, 1234, 99):
        with kernel(config, seed=seed) as (_dom, fp):
            runs.append(run(fp, "forklwp", 2000))
    a, b, c = runs
    assert a == b
    assert a != c
    rate = sum(1 for r in a if r) / len(a)
    assert 0.25 < rate < 0.35, rate


def test_unconfigured_sites_never_fail_but_are_counted() -> None:
    with kernel({"forklwp": {"nth": 1}}) as (_dom, fp):
        assert not any(run(fp, "getproc.memory", 5))
        s = fp.stats()
        assert s["getproc.memory"] == {"calls": 5, "failures": 0, "times_left": None,
                                       "config": None}


# -- arming ------------------------------------------------------------------------


def test_nothing_counted_before_arm() -> None:
    with kernel({"forklwp": {"nth": 2}}, armed=False) as (_dom, fp):
        assert not fp.armed
        assert not any(run(fp, "forklwp", 10))  # boot: never failed
        assert fp.stats()["forklwp"]["calls"] == 0
        fp.arm()
        fp.arm()  # idempotent
        assert failing_calls(run(fp, "forklwp", 5)) == [2]  # counted from arming
        fp.disarm()
        assert not any(run(fp, "forklwp", 5))
        assert fp.stats()["forklwp"]["calls"] == 5


# -- errno ---------------------------------------------------------------------------


def test_errno_default_and_choice() -> None:
    with kernel({"as_dup": {}, "holdlwps": {}, "getproc.maxup": {}}) as (_dom, fp):
        assert fp.should_fail("as_dup") == ENOMEM
        assert fp.should_fail("holdlwps") == EINTR
        assert fp.should_fail("getproc.maxup") == EAGAIN
        fp.configure("as_dup", errno="EAGAIN")
        assert fp.should_fail("as_dup") == EAGAIN
        fp.configure("as_dup", errno=ENOMEM)
        assert fp.should_fail("as_dup") == ENOMEM
        fp.configure("as_dup", errno="eagain")
        assert fp.should_fail("as_dup") == EAGAIN
        assert fp.inject_probe_args("as_dup") == (SITE_NAMES.index("as_dup"), EAGAIN)


def test_rctl_dup_marker() -> None:
    with kernel({"rctl_dup": {"nth": 2}}) as (_dom, fp):
        assert run(fp, "rctl_dup", 3) == [0, FAIL_RETRY, 0]
        assert FAIL_RETRY == -1
        assert fp.inject_probe_args("rctl_dup") == (SITE_NAMES.index("rctl_dup"), FAIL_RETRY)
        assert "errno" not in fp.stats()["rctl_dup"]["config"]


def test_fault_probe_can_be_fired() -> None:
    with kernel({"forklwp": {}}) as (dom, fp):
        err = fp.should_fail("forklwp")
        assert err == EAGAIN
        dom.fire(FAULT_PROBE, 0, 7, 1, *fp.inject_probe_args("forklwp"))
        (ev,) = dom.ring.drain()
        assert ev.name == FAULT_PROBE
        assert ev.args[:2] == (SITE_NAMES.index("forklwp"), EAGAIN)


# -- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(("config", "words"), [
    ({"fork_lwp": {}}, ["unknown fault site", "forklwp"]),
    ({"forklwp": {"probabilty": 5}}, ["unknown key", "probabilty"]),
    ({"forklwp": {"probability": "lots"}}, ["bad number", "probability"]),
    ({"forklwp": {"interval": 1.5}}, ["bad number", "interval"]),
    ({"forklwp": {"times": True}}, ["bad number", "times"]),
    ({"forklwp": {"probability": 101}}, ["probability", "out of range"]),
    ({"forklwp": {"probability": -0.5}}, ["probability", "out of range"]),
    ({"forklwp": {"probability": float("nan")}}, ["bad number", "probability"]),
    ({"forklwp": {"nth": 0}}, ["nth", "at least 1"]),
    ({"forklwp": {"interval": 0}}, ["interval", "at least 1"]),
    ({"forklwp": {"times": -2}}, ["times"]),
    ({"forklwp": {"errno": "ENOMEM"}}, ["errno ENOMEM not allowed", "EAGAIN"]),
    ({"holdlwps": {"errno": EAGAIN}}, ["errno EAGAIN not allowed", "EINTR"]),
    ({"as_dup": {"errno": "EINTR"}}, ["errno EINTR not allowed", "ENOMEM, EAGAIN"]),
    ({"rctl_dup": {"errno": "EAGAIN"}}, ["not allowed", "no errno"]),
    ({"as_dup": {"errno": "ENOPE"}}, ["unknown errno"]),
])
def test_bad_config(config: dict[str, Any], words: list[str]) -> None:
    with kernel(armed=False) as (_dom, fp):
        with pytest.raises(BadInput) as ei:
            fp.format(config)
        msg = str(ei.value)
        assert "\n" not in msg
        for w in words:
            assert w in msg
        site, knobs = next(iter(config.items()))
        with pytest.raises(BadInput):
            fp.configure(site, **knobs)


@pytest.mark.parametrize(("spec", "words"), [
    ("", ["empty fault spec"]),
    ("   ", ["empty fault spec"]),
    ("nope:nth=1", ["unknown fault site 'nope'", "as_dup"]),
    (":nth=1", ["names no site"]),
    ("forklwp:often=2", ["unknown key 'often'"]),
    ("forklwp:nth=x", ["bad number", "nth"]),
    ("forklwp:nth=1.5", ["bad number", "nth"]),
    ("forklwp:probability=abc", ["bad number", "probability"]),
    ("forklwp:probability=150", ["out of range"]),
    ("forklwp:nth=0", ["nth must be at least 1"]),
    ("holdlwps:interval=0", ["interval must be at least 1"]),
    ("forklwp:errno=ENOMEM", ["not allowed"]),
    ("forklwp:nth", ["KEY=VALUE"]),
    ("forklwp:nth=", ["KEY=VALUE"]),
    ("forklwp:", ["KEY=VALUE"]),
    ("forklwp:nth=1:nth=2", ["given twice"]),
])
def test_bad_spec(spec: str, words: list[str]) -> None:
    with pytest.raises(BadInput) as ei:
        parse_fault_spec(spec)
    msg = str(ei.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_unknown_site_at_run_time() -> None:
    with kernel() as (_dom, fp):
        for call in (fp.should_fail, fp.clear, fp.inject_probe_args, fp.configure):
            with pytest.raises(BadInput, match="unknown fault site"):
                call("nowhere")


def test_site_given_twice_in_specs() -> None:
    with pytest.raises(BadInput, match="given twice"):
        parse_fault_specs(["forklwp:nth=1", "forklwp:times=2"])


# -- specs ------------------------------------------------------------------------------


def test_spec_parsing() -> None:
    assert parse_fault_spec("as_dup:nth=1:errno=ENOMEM") == (
        "as_dup", {"nth": 1, "errno": "ENOMEM"})
    assert parse_fault_spec("forklwp:probability=25:times=2") == (
        "forklwp", {"probability": 25, "times": 2})
    assert parse_fault_spec(" holdlwps : interval=3 ") == ("holdlwps", {"interval": 3})
    assert parse_fault_spec("as_dup:errno=11") == ("as_dup", {"errno": "EAGAIN"})
    assert parse_fault_spec("forklwp:probability=2.5") == ("forklwp", {"probability": 2.5})
    assert parse_fault_spec("rctl_dup") == ("rctl_dup", {})
    assert parse_fault_specs(["as_dup:nth=1:errno=ENOMEM", "forklwp:probability=25:times=2",
                              "holdlwps:interval=3"]) == {
        "as_dup": {"nth": 1, "errno": "ENOMEM"},
        "forklwp": {"probability": 25, "times": 2},
        "holdlwps": {"interval": 3},
    }


@pytest.mark.parametrize("spec", [
    "as_dup:nth=1:errno=ENOMEM", "forklwp:probability=25:times=2", "holdlwps:interval=3",
    "rctl_dup:probability=12.5:interval=2:times=-1", "getproc.memory",
])
def test_spec_round_trip(spec: str) -> None:
    site, knobs = parse_fault_spec(spec)
    assert format_fault_spec(site, knobs) == spec
    assert parse_fault_spec(format_fault_spec(site, knobs)) == (site, knobs)


@settings(max_examples=200, deadline=None)
@given(site=st.sampled_from(SITE_NAMES),
       knobs=st.fixed_dictionaries({}, optional={
           "probability": st.integers(0, 100) | st.floats(0, 100, allow_nan=False),
           "interval": st.integers(1, 10**6),
           "times": st.integers(-1, 10**6),
           "nth": st.integers(1, 10**6),
       }))
def test_spec_round_trip_property(site: str, knobs: dict[str, Any]) -> None:
    if SITES[site]:
        knobs = dict(knobs, errno=SITES[site][-1])
    got_site, got = parse_fault_spec(format_fault_spec(site, knobs))
    assert got_site == site
    assert set(got) == set(knobs)
    for k, v in knobs.items():
        if k == "errno":
            assert got[k] == {EAGAIN: "EAGAIN", ENOMEM: "ENOMEM", EINTR: "EINTR",
                              ENXIO: "ENXIO"}[v]
        else:
            assert got[k] == v


def test_parsed_specs_configure_a_kernel() -> None:
    config = parse_fault_specs(["as_dup:nth=1:errno=EAGAIN", "holdlwps:interval=3"])
    with kernel(config) as (_dom, fp):
        assert run(fp, "as_dup", 2) == [EAGAIN, 0]
        assert failing_calls(run(fp, "holdlwps", 6)) == [3, 6]
        s = fp.stats()
        assert s["as_dup"]["config"] == {"probability": 100.0, "interval": 1, "times": -1,
                                         "nth": 1, "errno": "EAGAIN"}


# -- run-time reconfiguration --------------------------------------------------------


def test_runtime_reconfigure_and_clear() -> None:
    with kernel() as (_dom, fp):
        assert not any(run(fp, "forklwp", 5))
        fp.configure("forklwp", nth=2)  # counted from configuration
        assert failing_calls(run(fp, "forklwp", 4)) == [2]
        fp.configure("forklwp", interval=2, times=1)
        assert failing_calls(run(fp, "forklwp", 6)) == [2]
        fp.configure("forklwp", probability=100)
        assert all(run(fp, "forklwp", 3))
        fp.clear("forklwp")
        assert not any(run(fp, "forklwp", 3))
        assert fp.stats()["forklwp"]["config"] is None
        fp.configure("forklwp")
        fp.configure("holdlwps", times=5)
        assert fp.should_fail("forklwp") and fp.should_fail("holdlwps")
        fp.clear_all()
        assert not fp.should_fail("forklwp") and not fp.should_fail("holdlwps")
        s = fp.stats()
        assert s["forklwp"]["calls"] == 5 + 4 + 6 + 3 + 3 + 1 + 1
        assert s["forklwp"]["failures"] == 1 + 1 + 3 + 1
        assert s["holdlwps"]["failures"] == 1


# -- sharing between processes --------------------------------------------------------


def test_second_attachment_shares_counters() -> None:
    with kernel({"forklwp": {"interval": 2}}) as (dom, fp):
        other = Substrate.attach(dom.name)
        try:
            fp2 = FaultPoints(other.seg, other.chains, 1)
            assert fp2.armed
            results = [fp.should_fail("forklwp"), fp2.should_fail("forklwp"),
                       fp.should_fail("forklwp"), fp2.should_fail("forklwp")]
            assert results == [0, EAGAIN, 0, EAGAIN]
            assert fp.stats()["forklwp"]["calls"] == 4
            fp2.configure("as_dup", nth=1, errno="EAGAIN")
            assert fp.should_fail("as_dup") == EAGAIN
            fp2.disarm()
            assert not fp.armed
        finally:
            other.shutdown()


CHILD = textwrap.dedent("""
    import json, sys
    from realfork.kernel.faults import FaultPoints
    from realfork.sync.domain import Substrate
    dom = Substrate.attach(sys.argv[1])
    try:
        fp = FaultPoints(dom.seg, dom.chains, 0)
        out = [fp.should_fail("forklwp") for _ in range(int(sys.argv[2]))]
        fp.configure("holdlwps", nth=2)
        print(json.dumps(out))
    finally:
        dom.shutdown()
""")


def test_another_os_process_advances_the_same_counters_and_prng() -> None:
    config = {"forklwp": {"probability": 30}}
    with kernel(config, seed=77) as (_dom, ref):
        expected = run(ref, "forklwp", 300)
    with kernel(config, seed=77) as (dom, fp):
        mine = run(fp, "forklwp", 100)
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep +
                   os.environ.get("PYTHONPATH", ""))
        r = subprocess.run([sys.executable, "-c", CHILD, dom.name, "100"], env=env,
                           capture_output=True, text=True, timeout=50)
        assert r.returncode == 0, r.stderr
        theirs = json.loads(r.stdout)
        mine += theirs + run(fp, "forklwp", 100)
        assert mine == expected  # one PRNG and one counter, whoever calls
        s = fp.stats()
        assert s["forklwp"]["calls"] == 300
        assert s["forklwp"]["failures"] == sum(1 for x in expected if x)
        assert failing_calls(run(fp, "holdlwps", 3)) == [2]  # configured by the child
