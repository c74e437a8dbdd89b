"""``realfork stress``: stressors on both backends, metrics, findings, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from realfork.cli import main
from realfork.stress.config import DEFAULT_STRESSORS, StressConfig
from realfork.stress.findings import load_finding
from realfork.stress.runner import run_stress
from realfork.stress.stressors import ORDER

pytestmark = pytest.mark.timeout(240)


def test_every_stressor_does_bogo_ops(backend: str) -> None:
    cfg = StressConfig(stressors={name: 1 for name in ORDER}, timeout=6, check_interval=0,
                       boot={"backend": backend})
    r = run_stress(cfg)
    assert r.findings == [], [f.report for f in r.findings]
    for name in ORDER:
        assert r.metrics["stressors"][name]["bogo_ops"] > 0, name


@pytest.mark.parametrize("stressor, counter, started_by_init", [
    ("fork", "sysfork", True),  # init starts each instance with fork1
    ("vfork", "sysvfork", False),
    ("forkall", "sysforkall", False),
    ("exec", "nexec", False),
])
def test_ops_equal_the_kernel_counters(backend: str, stressor: str, counter: str,
                                       started_by_init: bool) -> None:
    cfg = StressConfig(stressors={stressor: 2}, timeout=2, check_interval=0,
                       boot={"backend": backend})
    r = run_stress(cfg)
    assert r.findings == []
    ops = r.metrics["stressors"][stressor]["bogo_ops"]
    expected = r.counters[counter] - (2 if started_by_init else 0)
    assert ops == expected > 0


def test_ops_budget_stops_the_run() -> None:
    cfg = StressConfig(stressors={"fork": 1, "exec": 1}, timeout=120, ops=50, check_interval=0)
    r = run_stress(cfg)
    assert r.elapsed < 120
    assert all(m["bogo_ops"] >= 50 for m in r.metrics["stressors"].values())


def test_ops_budget_stops_each_stressor_when_it_has_done_its_ops() -> None:
    # Every vfork child execs an image that sleeps 400 ms, so the vfork
    # stressor needs at least 6 s for its 15 ops; fork does 15 in a few ms (a
    # few seconds on a loaded machine) and is then stopped (left running, it
    # would do hundreds a second meanwhile).
    cfg = StressConfig(stressors={"fork": 1, "vfork": 1}, timeout=120, ops=15,
                       check_interval=0, options={"vfork": {"exec_every": 1, "image_ms": 400}})
    r = run_stress(cfg)
    ops = {name: m["bogo_ops"] for name, m in r.metrics["stressors"].items()}
    assert ops["vfork"] >= 15 and ops["fork"] >= 15
    assert not r.findings
    # the per-second series: at some sample, vfork still had ops to do and
    # fork had already done every op it would ever do (not necessarily the
    # first sample: how many seconds fork's 15 take depends on the machine)
    series = r.metrics["series"]
    assert any(not s["final"] and s["ops"]["vfork"] < 15 and s["ops"]["fork"] == ops["fork"]
               for s in series), series


def test_seeded_lock_order_inversion_is_one_deduplicated_finding(tmp_path: Path) -> None:
    # relvm_parent_first: the vfork child's relvm takes its parent's p_lock
    # before its own; lockdep sees the inversion on the first relvm, long
    # before the (rare) deadlock.  keep_going restarts the kernel after each
    # finding: the same bug is found again and counted, not listed twice.
    cfg = StressConfig(stressors={"vfork": 1, "fork": 1}, timeout=5, check_interval=0,
                       keep_going=True,
                       boot={"bugs": ["relvm_parent_first"], "deadlock_timeout": 1.0})
    r = run_stress(cfg, findings_dir=str(tmp_path))
    assert len(r.findings) == 1, [f.signature for f in r.findings]
    f = r.findings[0]
    assert f.kind == "lock-order"
    assert f.signature == ("lock order: p_lock/1 -> p_lock (relvm) against "
                           "p_lock -> p_lock/1")
    assert r.runs >= 2 and f.count == r.runs
    saved = load_finding(tmp_path / f.id)
    assert saved.signature == f.signature and saved.program == f.program
    assert saved.config["boot"]["bugs"] == ["relvm_parent_first"]
    assert "Possible unsafe locking scenario" in (tmp_path / f.id / "report.txt").read_text()


def test_seeded_lost_wakeup_is_a_hang_finding(tmp_path: Path, backend: str) -> None:
    cfg = StressConfig(stressors={"vfork": 1}, timeout=30, check_interval=0,
                       options={"vfork": {"exec_every": 1, "image_ms": 20000}},
                       boot={"backend": backend, "bugs": ["relvm_lost_wakeup"],
                             "deadlock_timeout": 1.0})
    r = run_stress(cfg, findings_dir=str(tmp_path))
    assert [(f.kind, f.signature) for f in r.findings] == [
        ("hang", "hang: vfwait on p_cv (lost wake-up)")]
    assert "nobody will signal it" in r.findings[0].report


def test_clean_kernel_same_config_no_finding() -> None:
    cfg = StressConfig(stressors={"vfork": 1}, timeout=4, check_interval=0,
                       options={"vfork": {"exec_every": 1, "image_ms": 500}},
                       boot={"deadlock_timeout": 1.0})
    assert run_stress(cfg).findings == []


def test_cli_job_file_json_and_exit_status(tmp_path: Path, capsys) -> None:
    job = tmp_path / "campaign.job"
    job.write_text("# a short campaign\nfork 1\nlwp 1  # and lwps\ntimeout 2\nseed 5\n"
                   "lwp-spin 50\n")
    out = tmp_path / "m.json"
    rc = main(["stress", "--job", str(job), "--json", str(out), "--quiet",
               "--findings", str(tmp_path / "f"), "--check-interval", "0"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["config"]["stressors"] == {"fork": 1, "lwp": 1}
    assert doc["config"]["options"] == {"lwp": {"spin": 50}}
    assert doc["config"]["seed"] == 5 and doc["config"]["timeout"] == 2
    printed = capsys.readouterr().out
    assert "findings: none" in printed and "fork" in printed


@pytest.mark.parametrize("argv, word", [
    (["stress", "--fork", "-1"], "instances"),
    (["stress", "--job", "/nonexistent/job"], "cannot read job file"),
    (["stress", "--forkall", "1", "--forkall-sleepers", "5"], "sleepers"),
    (["stress", "--noise", "pct", "--noise-prob", "7"], "probability"),
    (["stress", "--nproc", "3"], "nproc"),
])
def test_cli_bad_input_is_one_line_and_status_2(argv: list[str], word: str, capsys) -> None:
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and word in err, err


def test_cli_finding_exits_1(tmp_path: Path, capsys) -> None:
    rc = main(["stress", "--vfork", "1", "--timeout", "10", "--bug", "relvm_parent_first",
               "--quiet", "--findings", str(tmp_path), "--check-interval", "0"])
    assert rc == 1
    out = capsys.readouterr().out
    assert "findings: 1" in out and "lock order: p_lock/1 -> p_lock (relvm)" in out
    assert len(list(tmp_path.iterdir())) == 1


def test_no_arguments_runs_every_stressor_for_30_seconds_and_exits_0(
        tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # findings/ would go here
    out = tmp_path / "m.json"
    assert main(["stress", "--json", str(out)]) == 0
    printed = capsys.readouterr()
    doc = json.loads(out.read_text())
    assert doc["config"]["timeout"] == 30 and doc["elapsed"] >= 30
    assert set(doc["metrics"]["stressors"]) == set(DEFAULT_STRESSORS)
    assert doc["checks"]["while_running"] > 0  # checked at quiescent points, not only at the end
    for name in DEFAULT_STRESSORS:
        assert any(line.split()[:1] == [name] for line in printed.out.splitlines()), name
    assert "findings: none" in printed.out
    assert "realfork stress: fork x1" in printed.err  # what is about to run
    assert not (tmp_path / "findings").exists() or not any((tmp_path / "findings").iterdir())
