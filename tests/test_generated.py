"""Generated programs run to completion on the real kernel, invariants intact."""

from __future__ import annotations

import pytest
from helpers import boot_checked

from realfork.user.generate import generate

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("backend")]


@pytest.mark.parametrize("block", range(8))
def test_hundreds_of_seeds_run_clean(block: int) -> None:
    with boot_checked(nproc=48, maxlwps=160, deadlock_timeout=20) as system:
        for seed in range(block * 30, block * 30 + 30):
            r = system.run(generate(seed), timeout=120)
            assert r.report is None, f"seed {seed}: {r.report}"
            assert r.status == 0, f"seed {seed}: status {r.status}"
            assert r.killed == [], f"seed {seed}: init left {r.killed} behind"
            system.check()


def test_bigger_programs_with_a_small_process_table() -> None:
    with boot_checked(nproc=12, maxlwps=64, deadlock_timeout=20) as system:
        for seed in range(40):
            r = system.run(generate(seed, max_procs=12, max_lwps=6, length=120), timeout=120)
            assert r.report is None, f"seed {seed}: {r.report}"
            system.check()
