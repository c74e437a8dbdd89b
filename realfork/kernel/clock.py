"""``delay()``: an uninterruptible sleep of some clock ticks.

realfork's clock tick is 1 ms (illumos's is 10 ms by default): short enough
that the fork-failure punishment delay does not dominate runs, long enough
to be a real sleep other threads can see.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..sync.condvar import cv_timedwait
from ..sync.kthread import _cpu
from ..sync.mutex import mutex_enter, mutex_exit

if TYPE_CHECKING:
    from .kernel import Kernel

TICK_NS = 1_000_000


def delay(K: Kernel, ticks: int) -> None:
    t = _cpu.t
    p = K.proc(K.lwps[t.slot].t_procp)
    until = time.monotonic_ns() + ticks * TICK_NS
    mutex_enter(p.p_lock)
    cv = K.t_cv(t)
    while time.monotonic_ns() < until:
        cv_timedwait(cv, p.p_lock, until)
    mutex_exit(p.p_lock)
