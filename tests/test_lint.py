"""The linter is part of the suite, so CI keeps the code clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_ruff_check_is_clean() -> None:
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "realfork", "tests", "tools",
                        "conftest.py"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.timeout(300)
def test_mypy_is_clean(tmp_path_factory: pytest.TempPathFactory) -> None:
    # the cache goes to a fresh directory, so each run is a cold one (about
    # 6-7 s on the 2-core machine) that reads nothing left over and writes
    # nothing into the tree; the settings are pyproject.toml's [tool.mypy]
    cache = tmp_path_factory.mktemp("mypy-cache")
    r = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache), "realfork"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
