"""``realfork replay`` and ``realfork minimize``: re-running and shrinking findings.

The findings come from short real campaigns with a seeded bug:
``relvm_parent_first`` (the vfork child's relvm takes its parent's p_lock
before its own) is a lock-order finding the first time relvm runs, so it
reproduces in well under a second on either backend; ``relvm_lost_wakeup``
with a vfork child whose exec'd image runs on is a hang (a lost wake-up)
once the kernel's deadline passes.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from realfork.cli import main
from realfork.stress.config import StressConfig
from realfork.stress.findings import load_finding
from realfork.stress.minimize import minimize, needed
from realfork.stress.replay import Attempt, format_attempt, replay, replay_config
from realfork.stress.runner import run_stress

pytestmark = pytest.mark.timeout(240)

LOCK_ORDER = "lock order: p_lock/1 -> p_lock (relvm) against p_lock -> p_lock/1"
BUG = {"bugs": ["relvm_parent_first"], "deadlock_timeout": 1.0}


def campaign(root: Path, cfg: StressConfig, signature: str | None = None) -> Path:
    """Run ``cfg`` saving findings under ``root``; the directory of the finding
    with ``signature`` (or of the only finding)."""
    r = run_stress(cfg, findings_dir=str(root))
    assert r.findings, "the seeded bug was not found"
    if signature is None:
        assert len(r.findings) == 1, [f.signature for f in r.findings]
        f = r.findings[0]
    else:
        f = next((f for f in r.findings if f.signature == signature), None)
        assert f is not None, [f.signature for f in r.findings]
    return root / f.id


@pytest.fixture(scope="module")
def vfork_finding(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = StressConfig(stressors={"vfork": 1}, timeout=10, check_interval=0, boot=dict(BUG))
    return campaign(tmp_path_factory.mktemp("findings"), cfg, LOCK_ORDER)


def test_replay_reproduces_a_lock_order_finding(vfork_finding: Path) -> None:
    r = replay(vfork_finding, times=3)
    assert r.finding.signature == LOCK_ORDER
    assert r.config.stressors == {"vfork": 1} and r.config.timeout == 10
    assert r.program_matches is True  # program.rfm is what the settings compose
    assert [a.outcome for a in r.attempts] == ["reproduced"] * 3
    assert all(a.signature == LOCK_ORDER and a.detected is not None for a in r.attempts)
    assert all(a.finding is not None and a.finding.kind == "lock-order" for a in r.attempts)
    assert r.summary() == "reproduced 3/3"


def test_replay_command_output(vfork_finding: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(vfork_finding), "-n", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    f = load_finding(vfork_finding)
    assert out[0] == f"replay {f.id} (lock-order): {LOCK_ORDER}"
    assert out[1] == f"settings: {replay_config(f).describe()}"
    assert out[1].startswith("settings: vfork x1; 10 s; backend threads, seed 0")
    for i in (1, 2, 3):
        assert re.fullmatch(rf"attempt {i}/3: reproduced after \d+\.\d\d s", out[1 + i]), out
    assert out[5:] == ["reproduced 3/3"]


def test_replay_timeout_override_and_never_reproducing(
        vfork_finding: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the same settings without the bug: nothing is found within --timeout
    clean = tmp_path / "clean"
    shutil.copytree(vfork_finding, clean)
    meta = json.loads((clean / "finding.json").read_text())
    meta["config"]["boot"]["bugs"] = []
    (clean / "finding.json").write_text(json.dumps(meta))
    assert main(["replay", str(clean), "-n", "1", "--timeout", "1"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "; 1 s; " in out[1]
    assert out[2:] == ["attempt 1/1: not reproduced (nothing found in 1 s)", "reproduced 0/1"]


def test_a_different_finding_is_reported_as_such(
        vfork_finding: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other"
    shutil.copytree(vfork_finding, other)
    meta = json.loads((other / "finding.json").read_text())
    meta["signature"] = "hang: somewhere else"
    (other / "finding.json").write_text(json.dumps(meta))
    assert main(["replay", str(other), "-n", "1"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"attempt 1/1: not reproduced \(different finding after \d+\.\d\d s: "
                        + re.escape(LOCK_ORDER) + r"\)", out[2]), out
    assert out[3] == "reproduced 0/1"
    # nothing to minimize when it never reproduces: exit 1, nothing written
    assert main(["minimize", str(other), "--attempts", "1"]) == 1
    assert "did not reproduce in 1 attempts: nothing to minimize" in capsys.readouterr().out
    assert not (other / "minimized").exists()


def test_format_attempt() -> None:
    assert format_attempt(2, 5, Attempt(True, "x", 0.1234, 1.0), 10) == \
        "attempt 2/5: reproduced after 0.12 s"
    assert format_attempt(1, 1, Attempt(False, "hang: y", 3.0, 4.0), 10) == \
        "attempt 1/1: not reproduced (different finding after 3.00 s: hang: y)"
    assert format_attempt(1, 1, Attempt(False, None, None, 2.5), 2.5) == \
        "attempt 1/1: not reproduced (nothing found in 2.5 s)"


@pytest.mark.parametrize("command", ["replay", "minimize"])
def test_not_a_finding_is_bad_input(command: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    assert main([command, str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("realfork: error: ") and "is not a finding directory" in err


def test_damaged_settings_are_bad_input(vfork_finding: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(vfork_finding, bad)
    meta = json.loads((bad / "finding.json").read_text())
    meta["config"]["stressors"] = {"vfork": "many"}
    (bad / "finding.json").write_text(json.dumps(meta))
    assert main(["replay", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad saved settings" in err


@pytest.mark.timeout(300)
def test_minimize_a_padded_reproducer(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    # the lock-order bug under needless stressors, on processes, with noise
    padded = StressConfig(
        stressors={"fork": 2, "vfork": 1, "lwp": 2, "mix": 1, "signal": 1}, timeout=10,
        check_interval=0, boot={**BUG, "backend": "processes", "noise": {"mode": "contest"}})
    d = campaign(tmp_path, padded, LOCK_ORDER)
    assert main(["minimize", str(d), "--attempts", "3", "--budget", "240"]) == 0
    out = capsys.readouterr().out
    assert "rule: keep a change when the signature reproduces in at least 2 of 3 attempts" \
        in out
    before, after = out.split("\nbefore:\n")[1].split("\nafter:\n")
    assert "  stressors: fork x2, vfork x1, lwp x2, mix x1, signal x1\n" in before
    assert "backend processes, noise contest" in before
    assert after.startswith("  stressors: vfork x1\n"), after
    assert "backend threads, noise off" in after and "bugs relvm_parent_first" in after
    assert re.search(r"^reliability: reproduced [23]/3 \(as saved: \d/3\)$", after, re.M)
    assert f"written: {d / 'minimized'}" in after

    m = load_finding(d / "minimized")
    assert m.signature == LOCK_ORDER and m.kind == "lock-order"
    cfg = StressConfig.from_dict(m.config)
    assert {k: n for k, n in cfg.stressors.items() if n} == {"vfork": 1}
    kp = cfg.kernel_params()
    assert kp["backend"] == "threads"
    assert (kp.get("noise") or {}).get("mode", "off") == "off"
    assert kp["bugs"] == ["relvm_parent_first"] and kp.get("lockdep", "warn") == "warn"
    assert cfg.timeout < padded.timeout
    summary = json.loads((d / "minimized" / "minimize.json").read_text())
    assert summary["signature"] == LOCK_ORDER and summary["after"] == cfg.to_dict()
    assert summary["instructions"][1] < summary["instructions"][0]

    # the minimized directory is a finding: it replays
    assert main(["replay", str(d / "minimized"), "-n", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("settings: vfork x1; ")
    assert not any(line.startswith("note:") for line in lines)  # program.rfm matches
    assert lines[-1] in ("reproduced 1/2", "reproduced 2/2")


def test_minimize_api_on_an_already_small_reproducer(vfork_finding: Path,
                                                     tmp_path: Path) -> None:
    lines: list[str] = []
    r = minimize(vfork_finding, attempts=3, output=tmp_path / "small", progress=lines.append)
    assert needed(3) == 2 and needed(4) == 2 and needed(1) == 1
    assert r.output == tmp_path / "small" and r.reliable
    assert r.before_reliability[1] == r.reliability[1] == 3
    assert r.after.stressors == {"vfork": 1} and r.after.timeout < 10
    assert r.instructions[1] <= r.instructions[0]
    assert all(s.kept == (s.reproduced is None or s.reproduced >= 2) for s in r.steps)
    assert lines[0].startswith("as saved: reproduced ") and lines[-1].startswith("result: ")
    assert load_finding(r.output).signature == LOCK_ORDER
    # written again over its own output: replaced, not refused
    (r.output / "report.txt").write_text("stale\n")
    r2 = minimize(vfork_finding, attempts=1, budget=60, output=r.output)
    assert r2.output == r.output and (r.output / "report.txt").read_text() != "stale\n"


def test_minimize_refuses_to_overwrite_what_is_not_a_finding(
        vfork_finding: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("mine\n")
    assert main(["minimize", str(vfork_finding), "-o", str(tmp_path)]) == 2
    assert "is not a finding directory: not replacing it" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine\n"


def test_replay_a_hang(tmp_path: Path) -> None:
    # relvm_lost_wakeup: the exec'd image sleeps on, so no exit wakes the parent
    cfg = StressConfig(stressors={"vfork": 1}, options={"vfork": {"exec_every": 1,
                                                                  "image_ms": 2000}},
                       timeout=30, check_interval=0,  # detected after 2-8 s, more if busy
                       boot={"bugs": ["relvm_lost_wakeup"], "deadlock_timeout": 1.0})
    d = campaign(tmp_path, cfg)
    f = load_finding(d)
    assert f.kind == "hang" and "lost wake-up" in f.signature
    r = replay(d, times=2)
    assert r.reproduced >= 1, [(a.outcome, a.signature) for a in r.attempts]
    assert all(a.detected >= 1.0 for a in r.attempts if a.reproduced)  # after the deadline
