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
