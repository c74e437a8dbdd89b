"""``delay()``: an uninterruptible sleep of some clock ticks.

realfork's clock tick is 1 ms (illumos's is 10 ms by default): short enough
that the fork-failure punishment delay does not dominate runs, long enough
to be a real sleep other threads can see.
"""

from __future__ import annotations

import resource
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


def thread_cpu_us() -> tuple[int, int]:
    """User and system CPU time of the calling OS thread, in microseconds."""
    ru = resource.getrusage(resource.RUSAGE_THREAD)
    return int(ru.ru_utime * 1e6), int(ru.ru_stime * 1e6)


def lwp_cpu_start(lw: object) -> None:
    """Note the OS thread's CPU time as the lwp starts running on it."""
    lw.lwp_utime0, lw.lwp_stime0 = thread_cpu_us()  # type: ignore[attr-defined]


def lwp_cpu_used(lw: object) -> tuple[int, int]:
    """(user, system) microseconds the lwp has used on its OS thread."""
    u, s = thread_cpu_us()
    return u - lw.lwp_utime0, s - lw.lwp_stime0  # type: ignore[attr-defined]
