"""The kernel profiles: ``2006`` is the seed as written, ``fixed`` adds the
later illumos fixes.  Each fix whose absence is a bug in the 2006 kernel is
found there by its campaign, with its signature, and the same campaign (same
seed) on the fixed kernel finds nothing."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import realfork
from realfork.errors import BadInput
from realfork.kernel.params import make_params
from realfork.kernel.profiles import DEFAULT_KERNEL, FIXES, PROFILES, RETIRED_BUGS
from realfork.kernel.structs import T_VFPARENT
from realfork.stress.config import StressConfig
from realfork.stress.findings import Finding
from realfork.stress.runner import run_stress
from realfork.verify.bugs import KINDS
from realfork.verify.history import FIXES as HISTORY_BY_ID
from realfork.verify.history import HISTORY, stress_settings

pytestmark = pytest.mark.timeout(120)

FOUND = [f.id for f in HISTORY if f.kind]
SEEDS = (0, 1)
CLEAN_TIMEOUT = 5.0  # seconds of a campaign on the fixed kernel (as test_bugs)
TIMING_BUDGET = 150.0  # more seeds, with contest noise, for a race window (as test_bugs)


def test_profiles_and_history_agree() -> None:
    assert DEFAULT_KERNEL == "fixed"
    assert PROFILES["2006"] == frozenset()
    assert PROFILES["fixed"] == frozenset(FIXES)
    assert len(set(FIXES)) == len(FIXES)
    assert tuple(HISTORY_BY_ID) == FIXES  # every fix described, in the profiles' order
    for f in HISTORY:
        assert f.title and f.where and f.change and f.restores, f.id
        assert 2006 <= f.year <= 2026
        if f.kind:
            assert f.kind in KINDS and f.detector and f.stress, f.id
            re.compile(f.signature)
            for kernel in PROFILES:
                cfg = StressConfig(**stress_settings(f.id, kernel))
                assert cfg.kernel_params()["kernel"] == kernel
                assert not cfg.kernel_params().get("bugs")
        else:
            assert not f.signature and not f.stress, f.id


def test_the_kernel_parameter_is_checked() -> None:
    assert make_params().kernel == "fixed"
    assert make_params(kernel="2006").kernel == "2006"
    for bad in ("2007", "", None, 2006, ["fixed"]):
        with pytest.raises(BadInput, match="kernel must be"):
            make_params(kernel=bad)


def test_a_retired_bug_name_points_at_the_2006_kernel() -> None:
    for name, fix in RETIRED_BUGS.items():
        with pytest.raises(BadInput, match=f"{fix}.*--kernel 2006"):
            make_params(bugs=[name])


def test_each_profile_carries_its_fixes() -> None:
    with realfork.boot(kernel="2006") as old, realfork.boot() as new:
        assert not any(old.K.fixed(f) for f in FIXES)
        assert all(new.K.fixed(f) for f in FIXES)


def test_a_vfork_parent_waits_for_its_child_in_both_profiles(backend: str) -> None:
    """vfwait's caller is found by the return values in 2006 and by the mark
    since 6533431: either way the parent resumes only after the child's exec
    or exit, and nothing is left marked."""
    prog = """
    vfork
    beq rv, 0, child
    load r1, 7          ; the child's store, in our memory
    wait
    exit r1
child:
    store 7, 42
    exit 0
"""
    for kernel in PROFILES:
        with realfork.boot(kernel=kernel, backend=backend) as system:
            r = system.run(prog, timeout=60)
            assert r.report is None, (kernel, r.report)
            assert r.status == 42, kernel
            done = [e for e in r.probes if e.name == "proc:::vfork-wait-done"]
            assert len(done) == 1, (kernel, done)
            assert all(not system.K.lwps[i].t_flag & T_VFPARENT
                       for i in system.K.dom.kthreads.used()), kernel


def test_the_kernel_option_reaches_the_kernel() -> None:
    r = subprocess.run([sys.executable, "-m", "realfork", "run", "--kernel", "2007", "-"],
                       input="exit 0\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--kernel" in r.stderr and "Traceback" not in r.stderr


def _hunt(fix: str, kernel: str) -> Iterator[tuple[int, list[Finding]]]:
    for seed in SEEDS:
        yield seed, run_stress(StressConfig(**stress_settings(fix, kernel, seed=seed))).findings
    if not HISTORY_BY_ID[fix].timing or kernel != "2006":
        return
    deadline = time.monotonic() + TIMING_BUDGET
    seed = max(SEEDS)
    while time.monotonic() < deadline:
        seed += 1
        d = stress_settings(fix, kernel, seed=seed)
        d["boot"]["noise"] = {"mode": "contest"}
        yield seed, run_stress(StressConfig(**d)).findings


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fix", FOUND)
def test_the_2006_kernel_has_the_bug_the_fix_removed(fix: str) -> None:
    f = HISTORY_BY_ID[fix]
    seen, tried = [], []
    for seed, findings in _hunt(fix, "2006"):
        tried.append(seed)
        seen += [(x.kind, x.signature) for x in findings]
        if any(f.matches(x.kind, x.signature) for x in findings):
            return
        assert not findings, f"{fix} (seed {seed}) found something else: {seen}"
    pytest.fail(f"{fix} not found in the 2006 kernel with seeds {tried}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fix", FOUND)
def test_the_fixed_kernel_is_clean_in_the_same_campaign(fix: str) -> None:
    """The campaign that finds the 2006 bug, first seed, for CLEAN_TIMEOUT seconds
    (tools/hunt_history.py runs the long clean campaigns)."""
    d = stress_settings(fix, "fixed", seed=SEEDS[0], timeout=CLEAN_TIMEOUT)
    findings = run_stress(StressConfig(**d)).findings
    assert findings == [], [(x.signature, x.report) for x in findings]
