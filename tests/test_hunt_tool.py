"""tools/hunt.py re-prints saved measurements, merging several files row by row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

HUNT = Path(__file__).resolve().parent.parent / "tools" / "hunt.py"


def _doc(budget: float, runs: list[dict], clean: list[dict]) -> dict:
    return {"settings": {"seeds": len(runs), "budget": budget, "backends": "threads",
                         "noise": "off", "clean_seeds": len(clean)},
            "machine": {"cpus": 2, "python": "3.11"}, "wall_s": 60.0,
            "rows": [{"bug": "relvm_parent_first", "backend": "threads", "noise": "off",
                      "timing": False, "runs": runs, "clean": clean}]}


def _run(elapsed: float | None, clean: bool = False, sig: str = "x") -> dict:
    fs = [] if elapsed is None else [{"kind": "panic", "signature": sig,
                                      "elapsed": elapsed, "expected": not clean}]
    return {"bug": "relvm_parent_first", "seed": 0, "backend": "threads", "noise": "off",
            "clean": clean, "wall": 1.0, "findings": fs, "detected": not clean,
            "elapsed": elapsed}


def _hunt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HUNT), *args], capture_output=True,
                          text=True, timeout=60)


def test_a_detection_and_a_clean_run_are_printed_as_one_table(tmp_path: Path) -> None:
    detect, clean = tmp_path / "detect.json", tmp_path / "clean.json"
    detect.write_text(json.dumps(_doc(60, [_run(0.5), _run(1.5), _run(2.5)], [])))
    clean.write_text(json.dumps(_doc(60, [], [_run(None, clean=True)])))
    r = _hunt("--from-json", str(detect), str(clean))
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("relvm_parent_first"))
    assert row.split() == ["relvm_parent_first", "threads", "off", "3/3", "1.50", "2.50", "yes",
                           "none", "(1x60s)"]
    assert "3 seeds" in r.stdout and "clean 1 run(s)" in r.stdout


def test_a_false_finding_of_the_clean_kernel_is_shown(tmp_path: Path) -> None:
    saved = tmp_path / "hunt.json"
    saved.write_text(json.dumps(_doc(60, [_run(0.5)], [_run(3.0, clean=True, sig="bogus")])))
    r = _hunt("--from-json", str(saved))
    assert r.returncode == 0, r.stderr
    assert "1 FALSE (1x60s)" in r.stdout and "clean kernel found bogus" in r.stdout


def test_saved_runs_with_different_budgets_are_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_doc(60, [_run(0.5)], [])))
    b.write_text(json.dumps(_doc(15, [], [_run(None, clean=True)])))
    r = _hunt("--from-json", str(a), str(b))
    assert r.returncode == 2 and "different budgets" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_missing_saved_file_is_one_line(tmp_path: Path) -> None:
    r = _hunt("--from-json", str(tmp_path / "nope.json"))
    assert r.returncode == 2 and "cannot read the saved runs" in r.stderr
    assert "Traceback" not in r.stderr
