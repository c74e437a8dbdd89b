"""The later illumos fixes, as the two kernel profiles see them.

``realfork.kernel.profiles`` names the fixes (``FIXES``) and the profiles:
``2006`` is the seed as written, ``fixed`` carries every fix.  This module
says, for each fix, what it changed and where, what it restores, and what
the ``2006`` kernel's mistake looks like to the stress runner: the kind of
finding and its signature (a regular expression matched against the whole
normalized signature, as ``realfork.verify.bugs`` does for the seeded bugs),
with a campaign that finds it.  The campaign is the same for both profiles:
``2006`` must report the finding, ``fixed`` nothing (tests/test_profiles.py).

A fix whose 2006 code is not a bug in the 2006 kernel (it only became one
with later changes) has no finding: ``kind`` is "".

Data only (it borrows the campaign builder of the seeded-bug catalogue).
docs/profiles.md describes each fix in prose.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from .bugs import _cfg


@dataclass(frozen=True)
class Fix:
    id: str  # the illumos bug id, as in realfork.kernel.profiles.FIXES
    title: str  # the illumos synopsis
    year: int
    where: str  # the step the fix changed (and the 2006 function realfork runs instead)
    change: str  # what the fix changed
    restores: str  # the lock order or invariant the fix restores
    kind: str = ""  # the finding the 2006 kernel produces ("" when none)
    signature: str = ""  # regular expression for the whole finding signature
    detector: str = ""  # what notices it
    stress: dict[str, Any] = field(default_factory=dict)  # StressConfig fields
    timing: bool = False  # needs a race window

    def matches(self, kind: str, signature: str) -> bool:
        """Is a finding of ``kind`` with ``signature`` this fix's 2006 finding?"""
        return bool(self.kind) and kind == self.kind \
            and re.fullmatch(self.signature, signature) is not None


HISTORY: tuple[Fix, ...] = (
    Fix("6446530", "race condition between corectl and fork", 2006,
        "cfork step 13, the core-file holds (realfork.kernel.fork._2006_corectl_hold_unlocked)",
        "the parent's p_corefile and p_content are read and their objects held under the "
        "parent's p_lock, the lock coreadm swaps them under; the 2006 code read and held "
        "them without it",
        "a fork holds only core-file objects that are alive: coreadm cannot release (and "
        "free) an object between fork's read of the pointer and its hold",
        "panic", r"panic: stale reference to a corectl slot \(freed or reused\) "
                 r"\(corectl_(path|content)_hold\)",
        "a corectl hold names its object by slot and generation: a freed or reused one is "
        "a stale reference",
        _cfg({"zone": 1}, {"zone": {"coreadms": 8, "zscheds": 0, "fail_percent": 0}},
             timeout=10.0), timing=True),
    Fix("6439016", "Race between getproc and prfind_zone", 2006,
        "getproc steps 2-3: the zone pid_assign publishes the child with "
        "(realfork.kernel.fork._2006_zone_set_late)",
        "p_zone is set before pid_assign makes the child findable, instead of with the "
        "copy of the parent's fields after it",
        "a proc prfind can find has its zone (prfind_zone follows p_zone)",
        "panic", r"panic: NULL pointer dereference: p_zone of pid N \(stat N\) \(prfind\)",
        "prfind follows the proc's p_zone (prfind_zone's zone comparison)",
        _cfg({"fork": 2, "probe": 1}), timing=True),
    Fix("6533743", "Deadlock involving a file_t f_tlock and P_PR_LOCK in case of fork "
        "failure", 2007,
        "cfork step 7, the as_dup failure path "
        "(realfork.kernel.fork._2006_fork_fail_under_prlock)",
        "sprunlock before fork_fail: the file locks fcnt_add takes are never taken while "
        "P_PR_LOCK is held",
        "the order f_tlock -> P_PR_LOCK a /proc controller uses (no cycle through "
        "P_PR_LOCK)",
        "deadlock", r"deadlock: fcnt_add, sprlock on f_tlock, pr_pid_cv",
        "deadlines and the wait-for cycle (P_PR_LOCK waiters name its holder)",
        _cfg({"proc": 2}, {"proc": {"victims": 2, "hold_ms": 0}},
             faults={"as_dup": {"probability": 50}}), timing=True),
    Fix("6556673", "potential deadlock with USDT tear-down and enable (and 6871629, "
        "3-way deadlock with mod_lock, dtrace_lock and sprlock)", 2007,
        "cfork step 7, the fork hooks (realfork.kernel.fork._fork_hooks_under_prlock)",
        "sprunlock right after dtrace_fasttrap_fork: shmfork and the DTrace helpers fork "
        "run without P_PR_LOCK, SFORKING still set",
        "the order dtrace_meta_lock -> mod_lock -> dtrace_lock -> P_PR_LOCK: nothing "
        "waits for a DTrace lock while holding P_PR_LOCK, so a consumer that holds them "
        "and sprlocks the forking parent (fasttrap_pid_enable, tear-down) closes no cycle",
        "deadlock",
        r"deadlock: (dtrace_\w+, )+sprlock on (dtrace_lock, )?(dtrace_meta_lock, )?"
        r"(mod_lock, )?pr_pid_cv",
        "deadlines and the wait-for cycle (P_PR_LOCK waiters name its holder)",
        _cfg({"usdt": 1}, deadlock_timeout=5.0)),
    Fix("6869037", "zsched process creation leads to v_count leak", 2009,
        "newproc, a kernel process's exec vnodes "
        "(realfork.kernel.fork._2006_exec_vnodes_dropped)",
        "VN_RELE of p_exec and p_execdir before they are cleared; the 2006 code only "
        "cleared them, throwing away the holds getproc took on the parent's",
        "every vnode's v_count is 1 + the procs' holds (G32)",
        "invariant", r"invariant: (.*, )?G32(, .*)?",
        "the invariant checker's vnode count (G32) at the next quiescent check",
        _cfg({"zone": 1}, {"zone": {"coreadms": 0, "fail_percent": 0}}, timeout=10.0)),
    Fix("7412", "newproc() performs inadequate clean-up after failed lwp_create()", 2016,
        "newproc, the lwp_create failure path "
        "(realfork.kernel.fork._2006_newproc_free_listed)",
        "disown_proc (off the parent's child list and orphan chain) before pid_exit; the "
        "2006 code freed the child still listed",
        "no family list names a freed or reused proc slot",
        "panic", r"panic: stale reference: p_(child|orphan|sibling|nextorph) on pid N's "
                 r"(child|orphan) list names proc slot N, which is not its (child|orphan) "
                 r"\(freed or reused\) \(.*\)",
        "family pointers are checked when followed (a freed or reused slot is stale)",
        _cfg({"zone": 1}, {"zone": {"coreadms": 0, "fail_percent": 50}}, timeout=10.0)),
    Fix("6533431", "vfork parent check in post_syscall", 2007,
        "post_syscall: which lwp calls vfwait (realfork.kernel.syscall.vfwait_due)",
        "the vforking thread is marked T_VFPARENT in cfork and only a marked thread "
        "calls vfwait; the 2006 test is the return values alone",
        "vfwait is called by the vforking thread only; in the 2006 kernel the return "
        "values already say so, so the 2006 code has no finding"),
)

FIXES: dict[str, Fix] = {f.id: f for f in HISTORY}


def stress_settings(fix: str, kernel: str, seed: int = 0, backend: str = "threads",
                    timeout: float | None = None) -> dict[str, Any]:
    """The ``StressConfig`` fields of fix ``fix``'s campaign, on profile
    ``kernel`` ("2006": the mistake is there; "fixed": it is not)."""
    d = copy.deepcopy(FIXES[fix].stress)
    d["boot"]["kernel"] = kernel
    d["boot"]["backend"] = backend
    if timeout is not None:
        d["timeout"] = timeout
    d["seed"] = seed
    return d
