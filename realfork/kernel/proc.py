"""Process-local handles on kernel objects: ``Proc`` (a proc slot and its
persistent per-slot locks) and the helpers ``curproc``/``lwpof``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..sync.kthread import KThread, _cpu
from ..sync.objects import KCondvar, KMutex
from .structs import klwp_t, proc_t

if TYPE_CHECKING:
    from .kernel import Kernel

NPROCSYNC = 6  # per proc slot: p_lock, p_cv, p_holdlwps, p_lwpexit, p_poolcv, pr_pid_cv


class Proc:
    """A proc slot.  ``p.id`` is the pointer value kernel tables store (slot + 1)."""

    __slots__ = (
        "K",
        "id",
        "p_cv",
        "p_holdlwps",
        "p_lock",
        "p_lwpexit",
        "p_poolcv",
        "pr_pid_cv",
        "s",
        "slot",
    )

    def __init__(self, K: Kernel, slot: int) -> None:
        self.K = K
        self.slot = slot
        self.id = slot + 1
        self.s: proc_t = K.procs.slots[slot]
        base = K.kg_sync.procsync_base + slot * NPROCSYNC
        h = K.dom.handle
        self.p_lock: KMutex = h(base)  # type: ignore[assignment]
        self.p_cv: KCondvar = h(base + 1)  # type: ignore[assignment]
        self.p_holdlwps: KCondvar = h(base + 2)  # type: ignore[assignment]
        self.p_lwpexit: KCondvar = h(base + 3)  # type: ignore[assignment]
        self.p_poolcv: KCondvar = h(base + 4)  # type: ignore[assignment]
        self.pr_pid_cv: KCondvar = h(base + 5)  # type: ignore[assignment]

    @property
    def pid(self) -> int:
        return self.s.p_pid

    def __repr__(self) -> str:
        if self.K.dom.closed:  # the segment may be unmapped: do not touch it
            return f"<proc slot {self.slot} of a closed kernel>"
        return f"<proc slot {self.slot} pid {self.s.p_pid}>"

    def threads(self) -> list[KThread]:
        """The lwps on p_tlist, in list order (caller holds p_lock or the proc is private).

        The list is circular through its first lwp.  A list that does not
        come back to it within as many lwps as the kernel has (a corrupted
        t_forw, or one changed under a reader without p_lock) is a panic
        naming the caller, not a walk that never ends."""
        K = self.K
        first = self.s.p_tlist
        out: list[KThread] = []
        tid = first
        limit = len(K.lwps)
        while tid:
            if len(out) >= limit:
                from .detect import fail

                fail(K, f"p_tlist of pid {self.s.p_pid} does not come back to its first "
                        f"lwp after {limit} lwps (a corrupted lwp list)")
            out.append(K.thread(tid))
            tid = K.lwps[tid - 1].t_forw
            if tid == first:
                break
        return out


def curproc(K: Kernel) -> Proc:
    t = _cpu.t
    return K.procs_h(K.lwps[t.slot].t_procp - 1)


def lwpof(K: Kernel, t: KThread) -> klwp_t:
    return K.lwps[t.slot]
