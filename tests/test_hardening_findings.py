"""Findings on a shared machine: saved without following links, loaded without trust.

The attacker is simulated with links and directories the test makes itself:
a ``findings`` link to a victim directory, a link planted where a finding's
file will be written (the directory name is the signature's hash, which
anyone can compute), a findings directory others may write, one owned by
another user (``chown``, as root).  ``realfork stress`` runs as a separate
process with a seeded bug that is a finding at the first vfork child's
relvm; it stops at that first finding, so its long ``--timeout`` is only a
bound.

Then damaged findings for ``replay`` and ``minimize``: every problem is one
line on stderr and exit status 2, and ``minimize -o`` is checked before any
attempt runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import realfork.stress.minimize as minimize_mod
import realfork.stress.replay as replay_mod
from realfork.cli import main
from realfork.errors import BadInput
from realfork.stress.config import StressConfig
from realfork.stress.findings import Finding, FindingStore, load_finding, signature_hash
from realfork.stress.replay import Attempt, composed_program
from realfork.stress.runner import run_stress

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
SIGNATURE = "lock order: p_lock/1 -> p_lock (relvm) against p_lock -> p_lock/1"
HASH = hashlib.sha1(SIGNATURE.encode()).hexdigest()[:12]  # what an attacker computes
BUG = {"bugs": ["relvm_parent_first"], "deadlock_timeout": 1.0}
CFG = StressConfig(stressors={"vfork": 1}, timeout=60, check_interval=0, boot=dict(BUG))


def stress(findings: Path, cwd: Path, quiet: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "realfork", "stress", "--vfork", "1", "--timeout", "60",
         "--bug", "relvm_parent_first", "--check-interval", "0", *(["--quiet"] if quiet else []),
         "--findings", str(findings)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=100)


def one_error_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("realfork: error: "), err
    assert "Traceback" not in err
    return err


def snapshot(d: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``d``: its mode and contents."""
    out = {}
    for p in sorted(d.rglob("*")):
        st = os.lstat(p)
        out[str(p.relative_to(d))] = (st.st_mode, p.read_bytes() if p.is_file() else b"")
    return out


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim"
    v.mkdir(mode=0o700)
    (v / "precious.txt").write_text("do not touch\n")
    return v


def test_the_hash_is_the_one_the_store_uses() -> None:
    assert signature_hash(SIGNATURE) == HASH


# -- the findings root: refused before the run -------------------------------------------


def test_a_findings_link_to_a_victim_directory_is_refused(tmp_path: Path, victim: Path) -> None:
    (tmp_path / "findings").symlink_to(victim)
    before = snapshot(victim)
    r = stress(tmp_path / "findings", tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "symbolic link" in one_error_line(r.stderr)
    assert r.stdout == ""  # refused before the run: no result table
    assert snapshot(victim) == before


def test_a_findings_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "findings"
    d.mkdir()
    d.chmod(0o777)
    r = stress(d, tmp_path, quiet=False)  # the refusal comes before the banner: one line
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "writable by other users" in one_error_line(r.stderr)
    assert r.stdout == "" and list(d.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_findings_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "findings"
    d.mkdir(mode=0o700)
    os.chown(d, 54321, 54321)
    r = stress(d, tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "belongs to another user (uid 54321)" in one_error_line(r.stderr)
    assert r.stdout == "" and list(d.iterdir()) == []


def test_a_findings_path_under_a_file_is_refused_before_the_run(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x\n")
    r = stress(tmp_path / "file" / "findings", tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "is not a directory" in one_error_line(r.stderr)
    assert r.stdout == ""


def test_a_findings_path_with_a_newline_is_still_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "a\nb" / "findings"
    assert main(["stress", "--vfork", "1", "--timeout", "60", "--quiet",
                 "--findings", str(bad)]) == 2
    assert "parent directory does not exist" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "a\nb").exists()


def test_the_store_checks_its_root_when_built(tmp_path: Path, victim: Path) -> None:
    (tmp_path / "findings").symlink_to(victim)
    with pytest.raises(BadInput, match="symbolic link"):
        FindingStore(tmp_path / "findings")
    FindingStore(tmp_path / "new")  # missing: created at the first finding only
    assert not (tmp_path / "new").exists()


# -- inside a finding directory --------------------------------------------------------------


@pytest.mark.parametrize("name", ["report.txt", "program.rfm", "finding.json"])
def test_a_link_planted_in_the_finding_directory_is_refused(
        tmp_path: Path, victim: Path, name: str) -> None:
    findings = tmp_path / "findings"
    (findings / HASH).mkdir(mode=0o700, parents=True)
    findings.chmod(0o700)
    (findings / HASH / name).symlink_to(victim / "precious.txt")
    before = snapshot(victim)
    r = stress(findings, tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"{name} is a symbolic link" in one_error_line(r.stderr)
    assert snapshot(victim) == before
    assert sorted(os.listdir(findings / HASH)) == [name]  # nothing else written


@pytest.mark.parametrize("planted", ["world-writable", "link"])
def test_a_planted_finding_directory_is_refused(tmp_path: Path, victim: Path,
                                                planted: str) -> None:
    findings = tmp_path / "findings"
    findings.mkdir(mode=0o700)
    if planted == "link":
        (findings / HASH).symlink_to(victim)
    else:
        (findings / HASH).mkdir()
        (findings / HASH).chmod(0o777)
    before = snapshot(victim)
    r = stress(findings, tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    one_error_line(r.stderr)
    assert snapshot(victim) == before
    if planted != "link":
        assert list((findings / HASH).iterdir()) == []


def test_files_are_private_and_a_finding_seen_again_keeps_what_was_saved(
        tmp_path: Path) -> None:
    findings = tmp_path / "findings"
    first = run_stress(CFG, findings_dir=str(findings))
    assert [f.signature for f in first.findings] == [SIGNATURE]
    d = findings / HASH
    assert stat.S_IMODE(os.stat(findings).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for name in ("finding.json", "report.txt", "program.rfm"):
        assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o600, name
    saved = {n: (d / n).read_bytes() for n in ("report.txt", "program.rfm")}
    meta = json.loads((d / "finding.json").read_text())
    inode = os.stat(d / "finding.json").st_ino

    # a second campaign (another seed) finds it again: the first reproducer stays,
    # the count grows, finding.json is replaced by a rename
    second = run_stress(StressConfig(**{**CFG.to_dict(), "seed": 1}), findings_dir=str(findings))
    assert [f.signature for f in second.findings] == [SIGNATURE]
    assert {n: (d / n).read_bytes() for n in saved} == saved
    again = json.loads((d / "finding.json").read_text())
    assert again["count"] == meta["count"] + 1
    assert again["seed"] == meta["seed"] == 0 and again["config"] == meta["config"]
    assert again["saved"] == meta["saved"] and "last_seen" in again
    assert os.stat(d / "finding.json").st_ino != inode
    assert sorted(os.listdir(d)) == ["finding.json", "program.rfm", "report.txt"]
    assert load_finding(d).count == again["count"]


def test_a_damaged_earlier_finding_is_not_overwritten(tmp_path: Path) -> None:
    findings = tmp_path / "findings"
    (findings / HASH).mkdir(mode=0o700, parents=True)
    findings.chmod(0o700)
    (findings / HASH / "finding.json").write_text("{not json")
    (findings / HASH / "report.txt").write_text("the first report\n")
    with pytest.raises(BadInput, match=r"finding\.json: not JSON"):
        run_stress(CFG, findings_dir=str(findings))
    assert (findings / HASH / "finding.json").read_text() == "{not json"
    assert (findings / HASH / "report.txt").read_text() == "the first report\n"


# -- loading: damaged findings ------------------------------------------------------------


def good_meta() -> dict[str, Any]:
    small = StressConfig(stressors={"vfork": 1}, timeout=1, check_interval=0, boot=dict(BUG))
    return {"kind": "lock-order", "signature": SIGNATURE, "seed": 0,
            "config": {**small.to_dict(), "seed": 0}, "elapsed": 0.1, "count": 1,
            "id": HASH, "saved": "2026-01-01T00:00:00"}


def write_finding(d: Path, meta: object = None, raw: bytes | None = None,
                  program: bytes | None = None) -> Path:
    d.mkdir(mode=0o700, exist_ok=True)
    if raw is None:
        raw = json.dumps(good_meta() if meta is None else meta).encode("utf-8",
                                                                         "surrogatepass")
    (d / "finding.json").write_bytes(raw)
    (d / "report.txt").write_text("a report\n")
    if program is None:
        program = composed_program(StressConfig.from_dict(good_meta()["config"]))
    (d / "program.rfm").write_bytes(program)
    return d


@pytest.fixture
def no_attempts() -> Iterator[list[StressConfig]]:
    """Attempts are recorded and find nothing: no campaign runs."""
    calls: list[StressConfig] = []

    def attempt(cfg: StressConfig, signature: str) -> Attempt:
        calls.append(cfg)
        return Attempt(False, None, None, 0.0)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(replay_mod, "run_attempt", attempt)
        mp.setattr(minimize_mod, "run_attempt", attempt)
        yield calls


def changed(**fields: object) -> dict[str, Any]:
    meta = good_meta()
    for path, value in fields.items():
        doc = meta
        keys = path.split("__")
        for k in keys[:-1]:
            doc = doc[k]
        doc[keys[-1]] = value
    return meta


DAMAGED = [
    ("signature-int", changed(signature=7), "signature"),
    ("signature-list", changed(signature=["a"]), "signature"),
    ("signature-dict", changed(signature={"a": 1}), "signature"),
    ("signature-huge", changed(signature="x" * 10_000), "signature"),
    ("signature-surrogate", changed(signature="lock \ud800"), "signature"),
    ("signature-empty", changed(signature=""), "signature"),
    ("kind-unknown", changed(kind="oops"), "kind"),
    ("kind-list", changed(kind=["hang"]), "kind"),
    ("seed-float", changed(seed=1.5), "seed"),
    ("seed-bool", changed(seed=True), "seed"),
    ("seed-range", changed(seed=1 << 64), "seed"),
    ("count-zero", changed(count=0), "count"),
    ("elapsed-nan", changed(elapsed=float("nan")), "elapsed"),
    ("top-list", [1, 2], "(top)"),
    ("top-unknown-field", changed(extra=1), "extra"),
    ("config-list", changed(config=[1]), "config"),
    ("config-unknown", changed(config__speed=1), "config"),
    ("stressors-list", changed(config__stressors=["vfork"]), "config.stressors"),
    ("stressors-string", changed(config__stressors={"vfork": "many"}), "config.stressors.vfork"),
    ("options-string", changed(config__options="x"), "config.options"),
    ("options-negative", changed(config__options={"vfork": {"image_ms": -1}}),
     "config.options.vfork.image_ms"),
    ("mix-length-huge", changed(config__stressors={"mix": 64},
                                config__options={"mix": {"length": 10**9}}),
     "config.options.mix.length"),
    ("timeout-nan", changed(config__timeout=float("nan")), "config.timeout"),
    ("timeout-string", changed(config__timeout="10"), "config.timeout"),
    ("boot-list", changed(config__boot=[1]), "config.boot"),
    ("boot-noise-string", changed(config__boot={"noise": "contest"}), "config"),
    ("boot-bugs-unknown", changed(config__boot={"bugs": ["nope"]}), "config"),
    ("boot-faults-list", changed(config__boot={"faults": [1]}), "config"),
    ("keep-going-int", changed(config__keep_going=1), "config.keep_going"),
    ("deep-in-boot", changed(config__boot={"faults": {"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
        [[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}), "nested"),
]


@pytest.mark.parametrize("command", ["replay", "minimize"])
@pytest.mark.parametrize("label, meta, field", DAMAGED, ids=[d[0] for d in DAMAGED])
def test_a_damaged_finding_json_is_one_line_naming_the_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_attempts: list[StressConfig],
        command: str, label: str, meta: object, field: str) -> None:
    d = write_finding(tmp_path / "f", meta)
    assert main([command, str(d)]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "finding.json" in err and field in err, err
    assert no_attempts == []


RAW = [
    ("deep-arrays", b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
    ("deep-objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested too deep"),
    ("deep-but-parsable", b'{"kind": "hang", "signature": "s", "config": '
     + b"[" * 500 + b"]" * 500 + b"}", "nested more than"),
    ("not-utf8", b'{"kind": "hang", "signature": "\xff"}', "not UTF-8"),
    ("not-json", b"{kind: hang}", "not JSON"),
    ("empty", b"", "not JSON"),
    ("huge-int", b'{"kind": "hang", "signature": "s", "seed": ' + b"9" * 5000 + b"}",
     "not JSON"),
    ("too-big", b'{"kind": "hang", "signature": "' + b"x" * (2 << 20) + b'"}', "bytes"),
]


@pytest.mark.parametrize("command", ["replay", "minimize"])
@pytest.mark.parametrize("label, raw, word", RAW, ids=[r[0] for r in RAW])
def test_an_unreadable_finding_json_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_attempts: list[StressConfig],
        command: str, label: str, raw: bytes, word: str) -> None:
    d = write_finding(tmp_path / "f", raw=raw)
    assert main([command, str(d)]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "finding.json" in err and word in err, err


def _layout(tmp_path: Path, case: str) -> Path:
    d = tmp_path / "f"
    if case == "missing":
        return d
    if case == "a-file":
        d.write_text("{}")
        return d
    write_finding(d)
    if case == "no-finding-json":
        (d / "finding.json").unlink()
    elif case == "finding-json-a-directory":
        (d / "finding.json").unlink()
        (d / "finding.json").mkdir()
    elif case == "finding-json-a-fifo":
        (d / "finding.json").unlink()
        os.mkfifo(d / "finding.json")
    elif case == "no-report":
        (d / "report.txt").unlink()
    elif case == "report-not-utf8":
        (d / "report.txt").write_bytes(b"\xff\xfe\n")
    elif case == "program-garbage":
        (d / "program.rfm").write_bytes(b"\x93garbage\x00\x01")
    elif case == "program-text":
        (d / "program.rfm").write_bytes(b"main:\n    exit 0\n")
    elif case == "program-too-big":
        (d / "program.rfm").write_bytes(b"\x00" * ((1 << 20) + 1))
    return d


LAYOUTS = [("missing", "no such directory"), ("a-file", "is not a directory"),
           ("no-finding-json", "is not a finding directory"),
           ("finding-json-a-directory", "is a directory"),
           ("finding-json-a-fifo", "not a regular file"),
           ("no-report", "no report.txt"), ("report-not-utf8", "report.txt: not UTF-8"),
           ("program-garbage", "program.rfm: msgpack program"),
           ("program-text", "program.rfm: msgpack program"),
           ("program-too-big", "program.rfm is")]


@pytest.mark.parametrize("command", ["replay", "minimize"])
@pytest.mark.parametrize("case, word", LAYOUTS, ids=[c[0] for c in LAYOUTS])
def test_a_directory_that_is_no_finding_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_attempts: list[StressConfig],
        command: str, case: str, word: str) -> None:
    d = _layout(tmp_path, case)
    assert main([command, str(d)]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert word in err, err


def test_a_valid_finding_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               no_attempts: list[StressConfig]) -> None:
    d = write_finding(tmp_path / "f")
    f = load_finding(d)
    assert f.signature == SIGNATURE and f.kind == "lock-order" and f.program
    assert main(["replay", str(d), "-n", "1"]) == 1  # the stub never reproduces
    assert capsys.readouterr().err == ""
    assert len(no_attempts) == 1


# -- minimize -o: checked before any attempt ----------------------------------------------


def _output(tmp_path: Path, case: str, victim: Path) -> str:
    if case == "missing-parent":
        return str(tmp_path / "no" / "such" / "out")
    if case == "parent-a-file":
        (tmp_path / "file").write_text("x\n")
        return str(tmp_path / "file" / "out")
    if case == "a-file":
        (tmp_path / "out").write_text("mine\n")
        return str(tmp_path / "out")
    if case == "proc":
        return "/proc/self/realfork-out"
    if case == "dev":
        return "/dev/realfork-out"
    if case == "link-to-a-finding":
        write_finding(victim / "finding")
        (tmp_path / "out").symlink_to(victim / "finding")
        return str(tmp_path / "out")
    if case == "world-writable":
        (tmp_path / "out").mkdir()
        (tmp_path / "out").chmod(0o777)
        return str(tmp_path / "out")
    raise AssertionError(case)


OUTPUTS = [("missing-parent", "does not exist"), ("parent-a-file", "is not a directory"),
           ("a-file", "is not a finding directory"), ("proc", "refusing to write under /proc"),
           ("dev", "refusing to write under /dev"),
           ("link-to-a-finding", "symbolic link"), ("world-writable", "writable by other")]


@pytest.mark.parametrize("case, word", OUTPUTS, ids=[o[0] for o in OUTPUTS])
def test_minimize_output_is_checked_before_any_attempt(
        tmp_path: Path, victim: Path, capsys: pytest.CaptureFixture[str],
        no_attempts: list[StressConfig], case: str, word: str) -> None:
    d = write_finding(tmp_path / "f")
    out = _output(tmp_path, case, victim)
    before = snapshot(victim)
    assert main(["minimize", str(d), "--attempts", "1", "-o", out]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert word in err, err
    assert no_attempts == []  # refused before the work
    assert snapshot(victim) == before


def test_minimize_writes_a_private_result_and_replaces_its_own(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = write_finding(tmp_path / "f")
    found = Finding("lock-order", SIGNATURE, "a report", 0, good_meta()["config"],
                    composed_program(StressConfig.from_dict(good_meta()["config"])))

    def attempt(cfg: StressConfig, signature: str) -> Attempt:  # always reproduces
        return Attempt(True, SIGNATURE, 0.01, 0.02, found)

    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(minimize_mod, "run_attempt", attempt)
        assert main(["minimize", str(d), "--attempts", "1", "-o", str(out)]) == 0
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
        names = sorted(os.listdir(out))
        assert names == ["finding.json", "minimize.json", "program.rfm", "report.txt"]
        for n in names:
            assert stat.S_IMODE(os.stat(out / n).st_mode) == 0o600, n
        assert load_finding(out).signature == SIGNATURE
        (out / "report.txt").write_text("stale\n")
        assert main(["minimize", str(d), "--attempts", "1", "-o", str(out)]) == 0
    assert (out / "report.txt").read_text() == "a report\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert capsys.readouterr().err == ""
