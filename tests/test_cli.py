"""The command line: exit statuses and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)


def realfork(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "realfork", *args], capture_output=True,
                          text=True, env=env, timeout=100)


def test_demo_runs_clean() -> None:
    r = realfork("demo", "--increments", "2000")
    assert r.returncode == 0, r.stderr
    assert "counter = 4,000 (expected 4,000)" in r.stdout


def test_demo_deadlock_reports_the_cycle_and_exits_1() -> None:
    r = realfork("demo", "--increments", "100", "--deadlock", "--deadlock-timeout", "1")
    assert r.returncode == 1, r.stderr
    assert "DEADLOCK" in r.stdout and "cycle:" in r.stdout
    assert "holds lock_a, waits for lock_b" in r.stdout or \
        "holds lock_b, waits for lock_a" in r.stdout


@pytest.mark.parametrize("args", [
    ["report", "--attach", "realfork-nonexistent"],
    ["report", "--attach", "../../etc/passwd"],
    ["demo", "--deadlock-timeout", "0"],
    ["demo", "--increments", "many"],
    ["stress", "--fork", "1", "--timeout", "1", "--probe-capacity", "8"],  # ring too small
    ["frobnicate"],
    [],
])
def test_bad_input_is_one_line_and_exit_2(args: list[str]) -> None:
    r = realfork(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") <= 1  # argparse may print a usage line first
    assert "error" in r.stderr


def test_report_attaches_to_a_running_kernel() -> None:
    from realfork.sync.domain import Substrate

    with Substrate.boot(maxlwps=8, nsync=8) as dom:
        dom.new_mutex("pidlock")
        r = realfork("report", "--attach", dom.name)
        assert r.returncode == 0, r.stderr
        assert f"kernel {dom.name}" in r.stdout
        listed = realfork("list")
        assert dom.name in listed.stdout and "running" in listed.stdout


def test_sigterm_during_demo_leaves_nothing_behind() -> None:
    import signal
    import time

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "realfork", "demo", "--increments", "10000000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = p.stdout.readline()  # "booted kernel realfork-..."
    name = line.split()[-1]
    assert name.startswith("realfork-")
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while True:
        left = [n for n in os.listdir("/dev/shm") if name in n]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left == []
