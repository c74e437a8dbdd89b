"""Address spaces (``vm/as.c``): allocate, duplicate, free, and the words user
programs load and store.  ``a_lock`` is a reader/writer lock per address
space slot; ``as_dup`` reads the source under it as reader, as illumos does."""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

from ..sync.rwlock import RW_READER, RW_WRITER, rw_enter, rw_exit
from .errno_defs import ENOMEM
from .structs import ASWORDS, NIL, as_t

if TYPE_CHECKING:
    from .kernel import Kernel


def as_alloc(K: Kernel) -> int:
    """A fresh, zeroed address space with one reference; 0 when out of memory."""
    slot = K.ases.alloc()
    if slot is None:
        return NIL
    K.ases.zero(slot)
    a = K.ases.slots[slot]
    a.a_nprocs = 1
    a.a_nsegs = 3  # text, data, stack
    return slot + 1


def as_dup(K: Kernel, src: int) -> tuple[int, int]:
    """Copy address space ``src``: (0, new) or (errno, 0).  ENOMEM is the
    allocation failure; the fault point may also inject any other error a
    segment's dup could return (``faults.AS_DUP_ERRNOS``), passed up as is:
    cfork maps it (ENOMEM kept, the rest EAGAIN)."""
    err = K.faults.should_fail("as_dup")
    if err:
        return err, NIL
    new = as_alloc(K)
    if not new:
        return ENOMEM, NIL
    lk = K.a_lock(src)
    rw_enter(lk, RW_READER)
    s, d = K.ases.slots[src - 1], K.ases.slots[new - 1]
    ctypes.memmove(ctypes.addressof(d.a_words), ctypes.addressof(s.a_words),
                   ctypes.sizeof(ctypes.c_int64) * ASWORDS)
    d.a_nsegs = s.a_nsegs
    s.a_dups += 1
    rw_exit(lk)
    return 0, new


def as_free(K: Kernel, a: int) -> None:
    if a and a != K.g.kas:
        lk = K.a_lock(a)
        rw_enter(lk, RW_WRITER)  # nobody may be reading it
        K.ases.slots[a - 1].a_nprocs = 0
        rw_exit(lk)
        K.ases.free(a - 1)


def as_t_of(K: Kernel, a: int) -> as_t:
    return K.ases.slots[a - 1]
