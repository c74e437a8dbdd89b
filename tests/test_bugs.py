"""The seeded-bug catalogue: every bug is found by its own short stress campaign
with its expected signature, and the clean kernel, under the same campaign,
finds nothing (``threads`` backend; ``tools/hunt.py`` measures both backends).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from realfork.cli import main
from realfork.kernel.params import KNOWN_BUGS
from realfork.stress.config import StressConfig
from realfork.stress.findings import Finding
from realfork.stress.runner import run_stress
from realfork.verify.bugs import BUGS, CATALOGUE, KINDS, NAMES, stress_settings

# A timing-dependent bug gets a second seed if the first campaign misses it.
SEEDS = (0, 1)
CLEAN_TIMEOUT = 5.0  # seconds of the same campaign on the clean kernel


def _campaign(name: str, seed: int, bug: str | None = None,
              timeout: float | None = None) -> list[Finding]:
    d = stress_settings(name, seed=seed, bug=bug, timeout=timeout)
    return run_stress(StressConfig(**d)).findings


def test_catalogue_is_complete_and_well_formed() -> None:
    assert len(CATALOGUE) >= 9
    assert KNOWN_BUGS == NAMES == tuple(b.name for b in CATALOGUE)
    for b in CATALOGUE:
        assert b.kind in KINDS, b.name
        assert b.description and "\n" not in b.description
        assert b.origin.startswith("illumos ") or b.origin == "classic mistake"
        re.compile(b.signature)
        cfg = StressConfig(**stress_settings(b.name))
        assert cfg.kernel_params()["bugs"] == [b.name]
        assert cfg.timeout <= 20
    illumos = {b.origin for b in CATALOGUE if b.origin.startswith("illumos")}
    # the 2006 file's own mistakes are the 2006 kernel profile (tests/test_profiles.py);
    # the catalogue keeps the ones the seed had already fixed
    assert {"illumos 6339942", "illumos 6361360"} <= illumos


def test_matches_checks_kind_and_whole_signature() -> None:
    b = BUGS["relvm_parent_first"]
    sig = "lock order: p_lock/1 -> p_lock (relvm) against p_lock -> p_lock/1"
    assert b.matches("lock-order", sig)
    assert not b.matches("deadlock", sig)
    assert not b.matches("lock-order", sig + " and more")


# A bug that needs a race window (``timing``) is found by chance, and a loaded
# machine (CI's are shared) can keep the window shut for both catalogued seeds.
# Such a bug gets more campaigns, with contest noise, until one finds it or
# TIMING_BUDGET seconds have gone: the test asserts that the hunt finds the
# bug and nothing else, not how fast the machine is.
TIMING_BUDGET = 150.0


def _hunt(name: str) -> Iterator[tuple[int, list[Finding]]]:
    for seed in SEEDS:
        yield seed, _campaign(name, seed)
    if not BUGS[name].timing:
        return
    deadline = time.monotonic() + TIMING_BUDGET
    seed = max(SEEDS)
    while time.monotonic() < deadline:
        seed += 1
        d = stress_settings(name, seed=seed, noise={"mode": "contest"})
        yield seed, run_stress(StressConfig(**d)).findings


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", NAMES)
def test_bug_is_found_with_its_signature(name: str) -> None:
    bug = BUGS[name]
    seen = []
    tried = []
    for seed, findings in _hunt(name):
        tried.append(seed)
        seen += [(f.kind, f.signature) for f in findings]
        hits = [f for f in findings if bug.matches(f.kind, f.signature)]
        if hits:
            assert hits[0].elapsed <= stress_settings(name)["timeout"] + 1
            return
        assert not findings, f"{name} (seed {seed}) found something else: {seen}"
    pytest.fail(f"{name} not found with seeds {tried}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", NAMES)
def test_clean_kernel_finds_nothing_in_the_same_campaign(name: str) -> None:
    findings = _campaign(name, 0, bug="", timeout=CLEAN_TIMEOUT)
    assert findings == [], [(f.signature, f.report) for f in findings]


def test_bugs_command_lists_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bugs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(NAMES)
    assert main(["bugs", "-v", "relvm_lost_wakeup"]) == 0
    out = capsys.readouterr().out
    assert "realfork stress --bug relvm_lost_wakeup --vfork 1" in out
    assert main(["bugs", "no_such_bug"]) == 2


def test_stress_settings_clean_and_noise() -> None:
    d = stress_settings("vfork_keeps_holdlwp", seed=3, bug="", noise={"mode": "off"},
                        backend="processes", timeout=7)
    assert d["boot"]["bugs"] == [] and "noise" not in d["boot"]
    assert d["boot"]["backend"] == "processes" and d["seed"] == 3 and d["timeout"] == 7
    d = stress_settings("holdlwp_cleared_unlocked", noise={"mode": "pct"})
    assert d["boot"]["noise"] == {"mode": "pct"}
    assert BUGS["holdlwp_cleared_unlocked"].stress["boot"].get("noise") is None


@pytest.mark.timeout(60)
def test_a_stale_reference_in_a_kernel_thread_is_a_recognizable_panic(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import realfork
    from realfork.kernel import syscall as sc
    from realfork.stress.findings import from_wait_report

    def getpid_stale(K, t, p, a0, a1):  # type: ignore[no-untyped-def]
        K.procs.deref(K.procs.ref(p.slot) + (1 << 24))  # the next generation: stale
        return 0, 0, 0

    monkeypatch.setitem(sc.HANDLERS, sc.SYSNUM["getpid"], getpid_stale)
    with realfork.boot(deadlock_timeout=2.0) as system:
        r = system.run("getpid\nexit 0\n", timeout=30)
    assert r.report is not None
    assert from_wait_report(r.report) == (
        "panic", "panic: stale reference to a proc slot (freed or reused) (getpid_stale)")
