"""The catalogue of seeded kernel bugs.

Each bug is a small, named switch: one line, ``if K.bug(name): ...``, at the
place the mistake would be made hands that step to a function that does it
wrong, kept in the "Seeded bugs" section at the end of its module, off the
path the correct kernel runs (``where`` names it).  The bugs are drawn from
illumos's bug history (see docs/seeded-bugs.md) or from classic mistakes.  ``realfork.boot(bugs=
[...])``, ``--bug NAME`` on ``realfork run`` and ``realfork stress``, and the
pytest marker's ``bugs=[...]`` switch them on; ``realfork bugs`` lists them.

Every entry says what the stress runner must report when the bug is on: the
kind of finding (deadlock, hang, lock-order, invariant, panic, as
``realfork.stress.findings`` names them) and its signature, a regular
expression matched against the whole of the finding's normalized signature.
It also carries the stress campaign that finds it (the stressors that
exercise the code, the fault points and noise that open the window): the
tests, ``tools/hunt.py`` and ``realfork bugs`` use it.

The detectors that turn a bug into a finding are in ``realfork.kernel.detect``
(assertions, stale references, borrowed address spaces, unheld lwps) and
``realfork.verify.check`` (the invariants); deadlocks, hangs and lost
wake-ups are found by the synchronization layer's deadlines, lock-order
inversions by lockdep (``realfork.verify.detectors`` lists them all).

This module is data only and imports nothing from realfork.  The kernel does
not import it: ``params`` checks bug names against ``realfork.kernel.bugnames``,
the same names in the same order.  ``realfork bugs`` is
``realfork.bugs_command``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

KINDS = ("deadlock", "hang", "lock-order", "invariant", "panic")


@dataclass(frozen=True)
class Bug:
    name: str
    description: str  # one line
    origin: str  # "illumos 6339942", or "classic mistake"
    where: str  # the function that does it wrong, and the step it replaces
    kind: str  # the kind of finding it must produce
    signature: str  # regular expression for the whole finding signature
    detector: str  # what notices it
    stress: dict[str, Any] = field(default_factory=dict)  # StressConfig fields
    timing: bool = False  # needs a race window: noise should make it faster

    def matches(self, kind: str, signature: str) -> bool:
        """Is a finding of ``kind`` with ``signature`` this bug's expected one?"""
        return kind == self.kind and re.fullmatch(self.signature, signature) is not None


def _cfg(stressors: dict[str, int], options: dict[str, dict[str, int]] | None = None,
         faults: dict[str, dict[str, Any]] | None = None, noise: dict[str, Any] | None = None,
         timeout: float = 20.0, check_interval: float = 1.0,
         **boot: Any) -> dict[str, Any]:
    b: dict[str, Any] = {"deadlock_timeout": 1.0, **boot}
    if faults:
        b["faults"] = faults
    if noise:
        b["noise"] = noise
    return {"stressors": stressors, "options": options or {}, "boot": b, "timeout": timeout,
            "check_interval": check_interval}


CATALOGUE: tuple[Bug, ...] = (
    Bug("vfork_keeps_holdlwp",
        "vfork does not clear the caller's TP_HOLDLWP, so a concurrent lwp_suspend "
        "hold-stops the vfork child and the parent waits for it forever",
        "illumos 6339942", "realfork.kernel.fork._bug_vfork_keeps_holdlwp (cfork step 5)", "hang",
        r"hang: thread_stop_wait on t_cv \(lost wake-up\)",
        "a suspended lwp's wait knows it will never be continued: every other lwp of its "
        "process is stopped (the vfork parent, its held lwp, the child)",
        _cfg({"vfork": 2}, {"vfork": {"suspender": 1}}, noise={"mode": "contest"}),
        timing=True),
    Bug("holdlwp_cleared_unlocked",
        "vfork clears TP_HOLDLWP in t_proc_flag without holding p_lock",
        "illumos 6361360", "realfork.kernel.fork._bug_holdlwp_cleared_unlocked (cfork step 5)",
        "panic",
        r"panic: assertion failed: t_proc_flag of pid N lwp N changed without p_lock held "
        r"\(_clear_holdlwp\)",
        "ASSERT(MUTEX_HELD(&p->p_lock)) where t_proc_flag changes",
        _cfg({"vfork": 1}, timeout=10.0)),
    Bug("relvm_parent_first",
        "relvm takes the parent's p_lock before the child's, against the declared order",
        "classic mistake", "realfork.kernel.fork._bug_relvm_parent_first (relvm)", "lock-order",
        r"lock order: p_lock/1 -> p_lock \(relvm\) against p_lock -> p_lock/1",
        "lockdep (the declared order child p_lock -> parent p_lock/1)",
        _cfg({"vfork": 1}, timeout=10.0)),
    Bug("relvm_lost_wakeup",
        "relvm clears the parent's SVFWAIT without signalling p_cv",
        "classic mistake", "realfork.kernel.fork._bug_relvm_lost_wakeup (relvm: _vfork_hand_back)",
        "hang",
        r"hang: vfwait on p_cv \(lost wake-up\)",
        "lost wake-up detection (the vfork parent's waker has exited)",
        _cfg({"vfork": 1}, {"vfork": {"exec_every": 1, "image_ms": 5000}}, check_interval=0),
        timing=True),
    Bug("vfwait_no_recheck",
        "vfwait trusts one wake-up without re-checking SVFORK: a spurious wake-up (a "
        "sibling's exit) returns the parent to user mode on the borrowed address space",
        "classic mistake", "realfork.kernel.fork._bug_vfwait_no_recheck (vfwait)", "panic",
        r"panic: pid N lwp N returns to user mode on an address space its vfork child "
        r"still borrows \(.*\)",
        "the vfork parent's return to user mode on an address space still lent",
        _cfg({"vfork": 2}, {"vfork": {"child_spin": 20000, "sibling_ms": 1}}),
        timing=True),
    Bug("pidlock_dropped_before_forkret",
        "cfork drops pidlock before CL_FORKRET, which must take the child's p_lock first",
        "classic mistake",
        "realfork.kernel.fork._bug_pidlock_dropped_before_forkret (cfork step 18)",
        "panic",
        r"panic: assertion failed: CL_FORKRET entered without pidlock held \(CL_FORKRET\)",
        "ASSERT(MUTEX_HELD(&pidlock)) in CL_FORKRET (ts_forkret)",
        _cfg({"fork": 1}, timeout=10.0)),
    Bug("fork_fail_skips_upcount_dec",
        "fork_fail forgets upcount_dec: every failed fork leaks one of its user's processes",
        "classic mistake", "realfork.kernel.fork._bug_fork_fail_skips_upcount_dec (fork_fail)",
        "invariant",
        r"invariant: (.*, )?A5(, .*)?",
        "invariant A5 (up_count = the user's processes)",
        _cfg({"fork": 1}, faults={"forklwp": {"probability": 20}}, timeout=10.0)),
    Bug("getproc_fail_skips_continuelwps",
        "when getproc fails, cfork returns without continuelwps: the caller's other lwps "
        "stay held",
        "classic mistake",
        "realfork.kernel.fork._bug_getproc_fail_skips_continuelwps (cfork step 6)",
        "invariant",
        r"invariant: (.*, )?D18(, .*)?",
        "invariant D18 (no lwp left held by a fork)",
        _cfg({"forkall": 1}, {"forkall": {"fail_ms": 200}},
             faults={"getproc.memory": {"probability": 30}}, timeout=10.0)),
    Bug("forkall_clones_unheld",
        "forkall's holdlwps does not wait for the other lwps to stop, so forklwp copies "
        "lwps that are still running",
        "classic mistake", "realfork.kernel.lwp._bug_forkall_clones_unheld (holdlwps)", "panic",
        r"panic: forklwp copies pid N lwp N, which is not held \(its state was copied "
        r"while it ran\) \(forklwp\)",
        "forklwp's assertion that its source is the caller or held",
        _cfg({"forkall": 1}, {"forkall": {"lwps": 3, "sleepers": 0}}, timeout=10.0),
        timing=True),
)

BUGS: dict[str, Bug] = {b.name: b for b in CATALOGUE}
NAMES: tuple[str, ...] = tuple(BUGS)


def stress_settings(name: str, seed: int = 0, backend: str = "threads",
                    noise: dict[str, Any] | None = None, timeout: float | None = None,
                    bug: str | None = None) -> dict[str, Any]:
    """The ``StressConfig`` fields of bug ``name``'s campaign: with the bug on,
    or with ``bug=""`` the same campaign on the clean kernel.  ``noise`` (a
    noise setting, ``{"mode": "contest"}``) replaces the catalogued one;
    ``{"mode": "off"}`` turns it off."""
    d = copy.deepcopy(BUGS[name].stress)
    boot = d["boot"]
    on = name if bug is None else bug
    boot["bugs"] = [on] if on else []
    boot["backend"] = backend
    if noise is not None:
        if noise.get("mode", "off") == "off":
            boot.pop("noise", None)
        else:
            boot["noise"] = dict(noise)
    if timeout is not None:
        d["timeout"] = timeout
    d["seed"] = seed
    return d


def describe_stress(d: dict[str, Any]) -> str:
    """A campaign's settings as ``realfork stress`` options."""
    words = []
    for s, n in d["stressors"].items():
        words.append(f"--{s} {n}")
    for s, opts in d.get("options", {}).items():
        for k, v in opts.items():
            words.append(f"--{s}-{k.replace('_', '-')} {v}")
    boot = d.get("boot", {})
    for site, knobs in boot.get("faults", {}).items():
        words.append("--faults " + ":".join([site, *(f"{k}={v}" for k, v in knobs.items())]))
    noise = boot.get("noise") or {}
    if noise.get("mode", "off") != "off":
        words.append(f"--noise {noise['mode']}")
        for k in ("prob", "sleep_us"):
            if k in noise:
                words.append(f"--noise-{k.replace('_', '-')} {noise[k]}")
    if "deadlock_timeout" in boot:
        words.append(f"--deadlock-timeout {boot['deadlock_timeout']:g}")
    words.append(f"--timeout {d['timeout']:g}")
    if d.get("check_interval") is not None:
        words.append(f"--check-interval {d['check_interval']:g}")
    return " ".join(words)
