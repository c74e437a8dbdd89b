"""The catalogue of detectors: everything that turns a kernel mistake into a
finding, with the kind of finding it produces (``realfork.stress.findings``'
kinds, as ``realfork.verify.bugs`` names them).

The kernel's own assertions run inside the kernel (``realfork.kernel.detect``,
called at the places a DEBUG illumos kernel has its ``ASSERT``\\s, or where a
real kernel would only crash later); each panics with a recognizable message
and the calling kernel thread as the culprit, so a finding's signature is the
message with every number removed and the detecting function appended.  The
others watch from outside: the invariant checker reads the tables at a
quiescent point, the synchronization layer's deadlines and lockdep watch
every wait and every lock taken.  docs/kernel.md ("Detectors") gives an
example message of each assertion.

This module is data; tests/test_layers.py checks that every assertion in
``realfork.kernel.detect`` is catalogued and every ``where`` exists.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DETECTORS", "Detector"]


@dataclass(frozen=True)
class Detector:
    name: str
    where: str  # the module, or module.function, that does the detecting
    kind: str  # the kind of finding: panic, invariant, deadlock, hang, lock-order
    fires: str  # when it fires (one line)


DETECTORS: tuple[Detector, ...] = (
    # -- the kernel's assertions (run time, in the kernel) --------------------------------
    Detector("assert_held", "realfork.kernel.detect.assert_held", "panic",
             "a lock the code must hold is not held (ASSERT(MUTEX_HELD(&p->p_lock)))"),
    Detector("proc_link", "realfork.kernel.detect.proc_link", "panic",
             "a family pointer (p_child, p_sibling, p_orphan, p_nextorph) followed to a "
             "proc slot that is free or no longer that relation: a stale reference"),
    Detector("user_as_check", "realfork.kernel.detect.user_as_check", "panic",
             "a process returns to user mode on an address space its vfork child still "
             "borrows"),
    Detector("forklwp_source_check", "realfork.kernel.detect.forklwp_source_check", "panic",
             "forklwp copies an lwp that is neither the caller nor held at a hold point "
             "(SUSPENDED with lwp_asleep == 0)"),
    Detector("zone_of", "realfork.kernel.detect.zone_of", "panic",
             "a proc's p_zone followed while it is NULL"),
    Detector("stale_reference", "realfork.kernel.detect.stale_reference", "panic",
             "a StaleReference raised in a kernel thread (any table)"),
    Detector("thread_lock_held", "realfork.kernel.sig.ts_start", "panic",
             "a start bit, a stop-state change or setrun_locked without the lwp's "
             "thread_lock (ASSERT(THREAD_LOCK_HELD(t)); also setrun_locked, "
             "thread_stop_wait)"),
    # -- from outside the kernel ----------------------------------------------------------
    Detector("invariants", "realfork.verify.check.violations", "invariant",
             "a kernel table breaks an invariant (A1 ... H33), between runs or at a "
             "quiescent point of a running kernel (realfork.verify.quiesce)"),
    Detector("deadlines", "realfork.sync.report", "deadlock",
             "a wait outlives its deadline inside a wait-for cycle"),
    Detector("hangs", "realfork.sync.report", "hang",
             "a wait outlives its deadline outside any wait-for cycle (a lost wake-up "
             "when nobody left can wake it)"),
    Detector("lockdep", "realfork.sync.lockdep", "lock-order",
             "two locks are taken in both orders, or against the declared order"),
)
