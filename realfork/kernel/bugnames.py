"""The names of the seeded kernel bugs, as ``K.bug(name)`` tests them.

A leaf (it imports nothing): ``params`` checks the bugs a boot switches on
against it.  The catalogue -- what each bug does, the finding it must
produce and the stress campaign that finds it -- is ``realfork.verify.bugs``,
above the kernel; its names are these, in this order (tests/test_bugs.py
checks that).
"""

from __future__ import annotations

__all__ = ["NAMES"]

NAMES: tuple[str, ...] = (
    "vfork_keeps_holdlwp",
    "holdlwp_cleared_unlocked",
    "relvm_parent_first",
    "relvm_lost_wakeup",
    "vfwait_no_recheck",
    "pidlock_dropped_before_forkret",
    "fork_fail_skips_upcount_dec",
    "getproc_fail_skips_continuelwps",
    "forkall_clones_unheld",
)
