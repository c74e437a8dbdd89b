"""Detectors: the kernel's own assertions, each of which panics the kernel
with a recognizable message when it fails.

A DEBUG illumos kernel is full of ``ASSERT``\\s; realfork keeps the ones a
seeded bug (``realfork.verify.bugs``) would trip, at the places illumos has
them, and adds checks for mistakes a real kernel finds only by crashing
later (a stale pointer followed, a borrowed address space written).  A
detector that fires calls ``K.dom.panic`` with the calling kernel thread as
the culprit (its call chain recorded first), so the stress runner turns it
into a finding whose signature is the message with every number removed and
the detecting function appended.  These are the assertions the kernel calls
while it runs (``assert_held``, ``proc_link``, ``user_as_check``,
``forklwp_source_check``, ``zone_of``, ``stale_reference``); the catalogue of
every detector, these and the ones watching from outside the kernel (the
invariant checker, deadlines, lockdep), is ``realfork.verify.detectors``.

Every check is a few field reads on the path it guards; none takes a lock.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from ..sync.kthread import _cpu, format_chain
from ..sync.mutex import MUTEX_HELD
from ..sync.structs import CHAIN_BYTES
from .structs import NIL, SVFORK

if TYPE_CHECKING:
    from ..sync.kthread import KThread
    from ..sync.objects import KMutex
    from .kernel import Kernel
    from .proc import Proc


def fail(K: Kernel, message: str, frame: FrameType | None = None) -> NoReturn:
    """Panic with ``message``.  The culprit is the calling kernel thread, with
    its call chain recorded from ``frame`` (default: the kernel function that
    called the detector), so the finding names that function."""
    t = getattr(_cpu, "t", None)
    if t is not None:
        if frame is None:
            frame = sys._getframe(2)  # fail <- the detector <- the kernel function
        t.s.t_chain = format_chain(frame).encode()[:CHAIN_BYTES - 1]
    K.dom.panic(message, culprit=t.id if t is not None else 0)


def _lock_class(name: str) -> str:
    return name.split("[", 1)[0]


# -- locks ---------------------------------------------------------------------------


def assert_held(K: Kernel, m: KMutex, what: str) -> None:
    """``ASSERT(MUTEX_HELD(m))`` before ``what`` (a phrase: "t_proc_flag of
    pid 7 lwp 1 changed")."""
    if not MUTEX_HELD(m):
        fail(K, f"assertion failed: {what} without {_lock_class(m.name)} held")


# -- stale references ------------------------------------------------------------------

_RELATION = {"p_child": ("p_parent", "child"), "p_sibling": ("p_parent", "child"),
             "p_orphan": ("p_nextofkin", "orphan"), "p_nextorph": ("p_nextofkin", "orphan")}


def proc_link(K: Kernel, ptr: int, owner: Proc, field: str) -> Proc:
    """The proc family pointer ``ptr`` (read from ``field`` of a list of
    ``owner``'s) names, checked: its slot must be in use and the proc must
    name ``owner`` back (``p_parent`` for the child list, ``p_nextofkin`` for
    the orphan chain).  A freed or reused slot is a stale reference: panic."""
    P = K.procs.slots
    back, rel = _RELATION[field]
    i = ptr - 1
    if not 0 <= i < len(P):
        fail(K, f"stale reference: {field} on pid {owner.s.p_pid}'s {rel} list is "
                f"{ptr}, not a proc slot")
    s = P[i]
    if not s.slot_inuse or getattr(s, back) != owner.id:
        fail(K, f"stale reference: {field} on pid {owner.s.p_pid}'s {rel} list names "
                f"proc slot {i}, which is not its {rel} (freed or reused)")
    return K.proc(ptr)


def stale_reference(K: Kernel, e: BaseException) -> NoReturn:
    """A ``StaleReference`` escaped into a kernel thread: panic, naming the
    kernel function that followed the reference."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    table = str(e).split("[", 1)[0].split(":", 1)[0].strip() or "object"
    fail(K, f"stale reference to a {table} slot (freed or reused)",
         tb.tb_frame if tb else None)


# -- address spaces ------------------------------------------------------------------------


def user_as_check(K: Kernel, t: KThread) -> None:
    """On the way back to user mode: the process's address space must not be
    lent to a vfork child (``a_nprocs`` > 1) unless this process is that child."""
    lw = K.lwps[t.slot]
    s = K.procs.slots[lw.t_procp - 1]
    a = s.p_as
    if a and a != K.g.kas and not s.p_flag & SVFORK and K.ases.slots[a - 1].a_nprocs > 1:
        fail(K, f"pid {s.p_pid} lwp {lw.t_tid} returns to user mode on an address space "
                f"its vfork child still borrows")


# -- forklwp -----------------------------------------------------------------------------


def forklwp_source_check(K: Kernel, src: KThread) -> None:
    """Called with no locks held (reads fields only).  forklwp's first
    assertion (docs/kernel.md, "forklwp"), ``ASSERT(t == curthread ||
    (SUSPENDED(t) && lwp->lwp_asleep == 0))``: the source is the caller, or
    held (SUSPENDED at a hold point) and not stopped in place inside a sleep
    (``lwp_asleep``), whose half-done system call a clone could not resume.
    The /proc agent is left out of the first half: the model lets it be
    created in a process that is not stopped."""
    from .sig import SUSPENDED

    t = getattr(_cpu, "t", None)
    if t is None or src.id == t.id:
        return
    lw = K.lwps[src.slot]
    s = K.procs.slots[lw.t_procp - 1]
    if SUSPENDED(K, src):
        if lw.lwp_asleep:
            fail(K, f"forklwp copies pid {s.p_pid} lwp {lw.t_tid}, which is held asleep "
                    f"(lwp_asleep {lw.lwp_asleep}: stopped inside a sleep, not at a clonable "
                    f"point)")
        return
    if s.p_agenttp == src.id:
        return
    fail(K, f"forklwp copies pid {s.p_pid} lwp {lw.t_tid}, which is not held "
            f"(its state was copied while it ran)")


# -- zones -------------------------------------------------------------------------------


def zone_of(K: Kernel, p: Proc) -> int:
    """``p->p_zone``, followed: NULL is a NULL pointer dereference."""
    z = p.s.p_zone
    if z == NIL:
        fail(K, f"NULL pointer dereference: p_zone of pid {p.s.p_pid} "
                f"(stat {p.s.p_stat})")
    return K.zones.slots[z - 1].zone_id
