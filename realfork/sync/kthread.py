"""Kernel threads as seen by the synchronization layer.

A ``KThread`` is one slot of the ``kthread`` table bound to one real OS
thread for its whole life.  ``curthread()`` is illumos's ``curthread``: the
kernel thread the calling OS thread is running.  Each kernel thread sleeps
on its own POSIX semaphore placed inside its slot, so sleeping costs no OS
object beyond the segment.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from typing import TYPE_CHECKING, Any

from ..shm import libc
from .structs import CHAIN_BYTES, MAXHELD, kthread_t

if TYPE_CHECKING:
    from .domain import Substrate

_cpu = threading.local()  # _cpu.t: the KThread of this OS thread


class KThread:
    """A process-local handle on a kthread slot."""

    __slots__ = (
        "__weakref__",
        "acquired_ns",
        "dom",
        "held",
        "id",
        "nheld",
        "noise",
        "os_thread",
        "s",
        "sem",
        "slot",
    )

    def __init__(self, dom: Substrate, slot: int) -> None:
        self.dom = dom
        self.slot = slot
        self.id = slot + 1
        self.s: kthread_t = dom.kthreads.slots[slot]
        self.held = self.s.t_held  # ctypes array: ksync index + 1, 0-ended
        self.nheld = 0  # this thread's own count of t_held entries
        self.noise: list | None = None  # schedule-noise state (sync.noise)
        self.sem = ctypes.addressof(self.s) + kthread_t.t_sem.offset
        self.acquired_ns: dict[int, int] = {}  # lockstat: hold start per lock
        self.os_thread: threading.Thread | None = None

    def __repr__(self) -> str:
        if self.dom.closed:  # the segment may be unmapped: do not touch it
            return f"<kthread {self.id} of a closed kernel>"
        s = self.s
        return f"<kthread {self.id} pid {s.t_pid} lwp {s.t_lwpid}>"

    # -- the held-locks record ----------------------------------------------------

    def held_push(self, idx1: int) -> None:
        n = self.nheld
        if n >= MAXHELD - 1:
            self.dom.panic(f"kthread {self.id} holds more than {MAXHELD - 1} locks")
        self.held[n] = idx1
        self.nheld = n + 1

    def held_remove(self, idx1: int) -> None:
        n = self.nheld - 1
        held = self.held
        if n >= 0 and held[n] == idx1:
            held[n] = 0
            self.nheld = n
            return
        for i in range(n - 1, -1, -1):  # released out of order: close the gap
            if held[i] == idx1:
                for j in range(i, n):
                    held[j] = held[j + 1]
                held[n] = 0
                self.nheld = n
                return
        self.dom.panic(f"kthread {self.id} releases a lock it does not hold")

    def held_list(self) -> list[int]:
        return [self.held[i] - 1 for i in range(self.nheld)]

    # -- the call chain -------------------------------------------------------------

    def record_chain(self, skip: int = 2) -> None:
        """Write this thread's call chain (innermost first) into its slot.

        Called only when about to block, so the common path pays nothing.
        Frames of the synchronization layer itself are left out.
        """
        self.s.t_chain = format_chain(sys._getframe(skip)).encode()[:CHAIN_BYTES - 1]


CHAIN_SEP = ";"
_SKIP = ("/realfork/sync/", "/realfork/shm/", "/realfork/machine/", "contextlib.py")
# The chain ends where the kernel thread's own code began.
_STOP = ("/threading.py", "/multiprocess/", "/multiprocessing/", "/_pytest/", "/pluggy/",
         "runpy.py")


def format_chain(frame: Any, limit: int = 12) -> str:
    """Function names from ``frame`` outwards, innermost first, ``;``-separated."""
    names: list[str] = []
    f = frame
    while f is not None and len(names) < limit:
        fn = f.f_code.co_filename
        if any(d in fn for d in _STOP):
            break
        if not any(d in fn for d in _SKIP):
            names.append(f.f_code.co_name)
        f = f.f_back
    return CHAIN_SEP.join(names)


def curthread() -> KThread:
    """The kernel thread of the calling OS thread."""
    try:
        return _cpu.t
    except AttributeError:
        raise RuntimeError("not running on a kernel thread") from None


def set_curthread(t: KThread | None) -> None:
    _cpu.t = t
    if t is None:
        del _cpu.t


def sem_init(t: KThread) -> None:
    if libc.sem_init(t.sem, 1, 0) != 0:
        raise OSError(ctypes.get_errno(), "sem_init")
