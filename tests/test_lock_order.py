"""The lock-order validator on the real kernel: silent on the clean kernel,
and a seeded inversion is flagged the first time it happens, deadlock or not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import boot_checked

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("backend")]
ROOT = Path(__file__).resolve().parent.parent

VFORK_ONCE = """
    vfork
    beq rv, 0, child
    wait
    exit 0
child:
    exit 0
"""


def test_clean_kernel_learns_orders_without_reports() -> None:
    with boot_checked() as system:
        r = system.run(VFORK_ONCE + "\n", timeout=60)
        assert r.report is None
        assert system.dom.lockdep_reports() == []
        assert r.counters["lockdep_reports"] == 0


def test_relvm_taking_the_parents_p_lock_first_is_flagged_without_a_deadlock() -> None:
    with boot_checked(bugs=["relvm_parent_first"]) as system:
        r = system.run(VFORK_ONCE, timeout=60)
        assert r.report is None and r.status == 0  # no deadlock happened
        (rep,) = system.dom.lockdep_reports()
        assert (rep.held_name, rep.new_name) == ("p_lock/1", "p_lock")
        assert "possible circular locking dependency detected" in rep.text
        assert "CPU0" in rep.text and "CPU1" in rep.text
        assert "relvm" in rep.chain
        names = [e.name for e in r.probes]
        assert "lockdep:::inversion" in names


def test_panic_mode_stops_the_run(backend: str) -> None:
    with boot_checked(bugs=["relvm_parent_first"], lockdep="panic") as system:
        r = system.run(VFORK_ONCE, timeout=60)
        assert r.report is not None and r.report.kind == "lock-order"


def test_realfork_run_exits_1_on_an_inversion(tmp_path: Path, backend: str) -> None:
    prog = tmp_path / "vfork.rf"
    prog.write_text(VFORK_ONCE)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "realfork", "run", str(prog), "--backend",
                        backend, "--bug", "relvm_parent_first"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "possible circular locking dependency detected" in r.stdout
