"""The pause gate: where a user lwp parks while the invariant checker looks
at a running kernel.

This is the kernel's half of pausing, the one hook it calls.  The pauser's
half -- raising the count, posting ASTs, waiting for quiescence, running the
checker and letting the lwps go -- is ``realfork.verify.quiesce``, which
documents the whole protocol; the kernel imports nothing from it.

``pause`` raises ``kglobals.pausing`` (a count: pauses may overlap) and posts
an AST to every user lwp.  ``sig_check`` -- the AST trap and the way out of
every system call, where the lwp holds no lock -- calls ``pause_gate``: while
``pausing`` is set the lwp sleeps on ``pause_cv``.  The sleep is *idle* (its
deadline re-arms, so a pause is never a hang) and *interruptible*: to the rest
of the kernel a parked lwp is an lwp in user mode, so a hold, a /proc stop or
a signal wakes it like any interruptible sleep; it leaves the gate, takes the
request in ``sig_check`` and parks again at its next instruction boundary.
``pause_lock``, ``pause_cv`` and the flag are in the segment, so lwps hosted
by other OS processes park the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..sync.condvar import _cv_block
from ..sync.kthread import KThread
from ..sync.mutex import mutex_enter, mutex_exit
from ..sync.objects import KCondvar, KMutex
from ..sync.structs import WAKE_INTERRUPTED

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["pause_gate"]


def pause_gate(K: Kernel, t: KThread) -> None:
    """Park the calling lwp while the kernel is pausing.  Called by
    ``sig_check`` with no lock held; returns on ``resume``, or at once when a
    hold, stop or signal is pending (``sig_check`` takes it, and the lwp parks
    again at its next instruction boundary)."""
    m, cv = K.pause_lock, K.pause_cv
    g = K.g
    mutex_enter(m)
    while g.pausing:
        if _park(cv, m) == WAKE_INTERRUPTED:
            t.s.t_astflag = 1  # come back after sig_check has done its work
            break
    mutex_exit(m)


def _park(cv: KCondvar, m: KMutex) -> int:
    """``cv_wait_sig`` without a deadline (idle): the wake reason.  (A frame of
    its own, so the chain recorded for reports starts at ``pause_gate``.)"""
    return _cv_block(cv, m, True, None, idle=True)
