"""Fixed-capacity tables of slots with generation numbers.

A kernel "pointer" is a slot index, and a reference that may outlive its
object is a packed (slot, generation) pair.  Freeing a slot bumps its
generation, so a stale reference is detected at the next ``deref`` instead of
silently reading whatever reused the slot.  The free list and counts live in
the segment and change under one chain lock, so any attached process may
allocate.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

from ..errors import ResourceError, StaleReference
from .segment import Layout, Segment
from .turnstile import ChainLocks

if TYPE_CHECKING:
    from ctypes import _CDataType  # typeshed's union of the ctypes data types

NULLREF = 0
_SLOT_BITS = 24
_SLOT_MASK = (1 << _SLOT_BITS) - 1
MAX_CAPACITY = _SLOT_MASK - 1


class Slot(ctypes.Structure):
    """Header of every table entry; entry types subclass it."""

    _fields_ = [
        ("slot_gen", ctypes.c_uint32),  # bumped at every free
        ("slot_inuse", ctypes.c_uint8),
        ("_slot_pad", ctypes.c_uint8 * 3),
        ("slot_next", ctypes.c_int32),  # free-list link, -1 ends it
    ]


class TableHeader(ctypes.Structure):
    _fields_ = [
        ("free_head", ctypes.c_int32),
        ("nused", ctypes.c_int32),
        ("hiwater", ctypes.c_int32),
        ("capacity", ctypes.c_int32),
        ("allocs", ctypes.c_uint64),
        ("failures", ctypes.c_uint64),
    ]


def pack_ref(slot: int, gen: int) -> int:
    return (gen << _SLOT_BITS) | (slot + 1)


def unpack_ref(ref: int) -> tuple[int, int]:
    return (ref & _SLOT_MASK) - 1, ref >> _SLOT_BITS


def declare_table(layout: Layout, name: str, entry: type[_CDataType], capacity: int) -> None:
    if capacity > MAX_CAPACITY:
        raise ResourceError(f"table {name} of {capacity} slots exceeds {MAX_CAPACITY}")
    layout.add(name + ".hdr", TableHeader)
    layout.add(name, entry, capacity)


class Table:
    """A view of one table of ``entry`` structures in ``seg``."""

    def __init__(self, seg: Segment, chains: ChainLocks, name: str, entry: type[_CDataType],
                 chain_index: int) -> None:
        self.name = name
        self.entry = entry
        self.hdr: TableHeader = seg.region(name + ".hdr", TableHeader)
        self.slots: Any = seg.region(name, entry)
        if not isinstance(self.slots, ctypes.Array):  # a one-slot table
            self.slots = (entry * 1).from_address(ctypes.addressof(self.slots))
        self.capacity = len(self.slots)
        self._lock = chains.chain(chain_index)

    def format(self) -> None:
        """Initialise a fresh table: every slot free, in index order."""
        n = self.capacity
        for i in range(n):
            s = self.slots[i]
            s.slot_gen = 1
            s.slot_next = i + 1 if i + 1 < n else -1
        h = self.hdr
        h.free_head = 0
        h.capacity = n

    def alloc(self) -> int | None:
        """Take a free slot; its index, or None when the table is full."""
        lk = self._lock
        lk.acquire()
        try:
            h = self.hdr
            i = h.free_head
            if i < 0:
                h.failures += 1
                return None
            s = self.slots[i]
            h.free_head = s.slot_next
            s.slot_next = -1
            s.slot_inuse = 1
            h.nused += 1
            h.allocs += 1
            if h.nused > h.hiwater:
                h.hiwater = h.nused
            return i
        finally:
            lk.release()

    def zero(self, i: int) -> None:
        """Clear an entry's payload (everything after the slot header)."""
        hdr = ctypes.sizeof(Slot)
        size = ctypes.sizeof(self.entry)
        ctypes.memset(ctypes.addressof(self.slots[i]) + hdr, 0, size - hdr)

    def free(self, i: int) -> None:
        lk = self._lock
        lk.acquire()
        try:
            s = self.slots[i]
            if not s.slot_inuse:
                raise StaleReference(f"{self.name}[{i}] freed twice")
            s.slot_inuse = 0
            s.slot_gen = (s.slot_gen + 1) & 0xFFFFFFFF or 1
            s.slot_next = self.hdr.free_head
            self.hdr.free_head = i
            self.hdr.nused -= 1
        finally:
            lk.release()

    def ref(self, i: int) -> int:
        """A reference to slot ``i`` as it is now."""
        return pack_ref(i, self.slots[i].slot_gen)

    def deref(self, ref: int) -> int:
        """The slot index ``ref`` names; raises StaleReference if it was reused."""
        i, gen = unpack_ref(ref)
        if not 0 <= i < self.capacity:
            raise StaleReference(f"{self.name}: reference {ref:#x} names no slot")
        s = self.slots[i]
        if not s.slot_inuse or s.slot_gen != gen:
            raise StaleReference(
                f"{self.name}[{i}]: stale reference (generation {gen}, slot now "
                f"{'free' if not s.slot_inuse else f'generation {s.slot_gen}'})")
        return i

    def used(self) -> list[int]:
        return [i for i in range(self.capacity) if self.slots[i].slot_inuse]
