"""``realfork run`` on every program in ``examples/``, and on bad input.

Each example carries a machine-readable header line

    ; expect: status N  options: --flag VALUE ...

(``options:`` optional): running it with those options, on either backend,
must end cleanly (exit status 0) with init's exit status N.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
pytestmark = pytest.mark.timeout(180)

EXPECT_RE = re.compile(r"^; expect: status (\d+)(?:\s+options: (.*?))?\s*$", re.MULTILINE)
CONTRACT_KEYS = {"status", "counters", "probes", "report"}


def realfork(*args: str | Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "realfork", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=150, cwd=ROOT)


def expectation(path: Path) -> tuple[int, list[str]]:
    """(init's expected status, extra command-line options) from the header."""
    found = EXPECT_RE.findall(path.read_text())
    assert len(found) == 1, f"{path.name}: expected one '; expect: status N' header line"
    status, options = found[0]
    return int(status), shlex.split(options)


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.rf"))


def test_the_examples_exist() -> None:
    names = {p.name for p in example_files()}
    for required in ("fork1_sleeping_lwp.rf", "forkall_sleeping_lwp.rf", "vfork_store.rf",
                     "fork_bomb_maxup.rf", "lwp_suspend_race.rf"):
        assert required in names
    jobs = {p.name for p in EXAMPLES.glob("*.job")}
    assert {p.name for p in EXAMPLES.iterdir()} == names | jobs  # programs and job files


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.job")), ids=lambda p: p.stem)
def test_a_job_file_is_a_campaign_stress_accepts(path: Path) -> None:
    """A job file in examples/ reads as ``realfork stress`` options: the
    campaign it describes is valid (checked without running it)."""
    from realfork.stress.command import _stress_parser, apply_job_file, config_from_args

    argv = ["stress", "--job", str(path)]
    cfg = config_from_args(apply_job_file(_stress_parser().parse_args(argv), argv))
    assert cfg.stressors and cfg.timeout > 0
    assert "swarm" not in path.read_text() or cfg.swarm > 0


@pytest.mark.parametrize("backend", ["threads", "processes"])
@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.stem)
def test_example_runs_and_gives_the_documented_status(path: Path, backend: str) -> None:
    status, options = expectation(path)
    r = realfork("run", path, "--backend", backend, *options)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"init exited with status {status} " in r.stdout, r.stdout
    assert r.stderr == ""


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.stem)
def test_example_header_documents_how_to_run_it(path: Path) -> None:
    status, options = expectation(path)
    head = path.read_text().split("\n\n", 1)[0]  # the header comment block
    assert all(line.startswith(";") for line in head.splitlines())
    assert f"status {status}" in head
    assert "realfork run examples/" + path.name in head
    for opt in options:
        assert opt in head


def test_json_output_has_the_contract_keys() -> None:
    path = EXAMPLES / "vfork_store.rf"
    status, options = expectation(path)
    r = realfork("run", path, "--json", *options)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert CONTRACT_KEYS <= set(doc)
    assert doc["status"] == status
    assert doc["report"] is None
    assert doc["counters"]["sysvfork"] == 1
    assert isinstance(doc["probes"], list) and doc["probes"]
    assert {"name", "ts", "pid", "lwpid", "args"} <= set(doc["probes"][0])


def test_json_output_of_a_run_with_fork_failures() -> None:
    path = EXAMPLES / "fork_bomb_maxup.rf"
    status, options = expectation(path)
    r = realfork("run", path, "--json", *options)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["status"] == status
    assert doc["counters"]["fork_fail"] >= 1


def test_trace_writes_the_probes_as_msgpack(tmp_path: Path) -> None:
    path = EXAMPLES / "forkall_sleeping_lwp.rf"
    status, options = expectation(path)
    trace = tmp_path / "probes.msgpack"
    r = realfork("run", path, "--trace", trace, "--json", *options)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == status
    events = msgpack.unpackb(trace.read_bytes())
    assert isinstance(events, list) and events
    assert {"name", "ts", "pid", "lwpid", "args"} <= set(events[0])
    names = [e["name"] for e in events]
    assert "proc:::create" in names and "proc:::exit" in names
    assert len(events) == len(json.loads(r.stdout)["probes"])


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("realfork: error: ")
    assert r.stdout == ""
    return lines[0]


def test_a_syntax_error_is_one_line_with_its_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rf"
    bad.write_text("    getpid\n    frobnicate r1\n")
    line = one_line_error(realfork("run", bad))
    assert "line 2" in line and "frobnicate" in line


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(realfork("run", tmp_path / "nowhere.rf"))
    assert "nowhere.rf" in line


def test_an_empty_file_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.rf"
    empty.write_bytes(b"")
    one_line_error(realfork("run", empty))


def test_a_file_of_only_comments_is_one_line(tmp_path: Path) -> None:
    comments = tmp_path / "comments.rf"
    comments.write_text("; nothing here\n# nor here\n\n")
    one_line_error(realfork("run", comments))


@pytest.mark.parametrize("blob", [
    bytes(range(255, -1, -1)),                  # not UTF-8, not msgpack
    b"\x00\xff\xfe\xfd garbage \xc3\x28",       # invalid UTF-8
    b"\x85\x01\x02\x03\x04\x05",                # looks like a msgpack map, is not a program
    b"\xde\x00\x01\xa1",                        # truncated msgpack
    msgpack.packb({"code": "nonsense"}),        # valid msgpack, not a program
])
def test_binary_garbage_is_one_line(tmp_path: Path, blob: bytes) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(blob)
    one_line_error(realfork("run", garbage))
