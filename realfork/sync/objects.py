"""Handles on synchronization objects, and lock classes.

Every kernel mutex, condition variable, rwlock and semaphore is one
``ksync_t`` in the segment's ``ksync`` table, handed out by a bump allocator
at boot (objects are never freed: like the per-slot ``p_lock`` of illumos,
an object's memory outlives what it protects).  A handle is a process-local
Python object caching the object's ctypes view and its chain lock.

Each object has a *class* (``pidlock``, ``p_lock``, ``p_cv`` ...) shared by
all its instances, as in lockdep and WITNESS, and an *instance* number shown
in names: ``p_lock[pid 7]``.  Classes live in a table in the segment so every
attached process names objects the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .structs import KIND_NAMES, SYNC_CV, SYNC_MUTEX, SYNC_RW, SYNC_SEMA, ksync_t

if TYPE_CHECKING:
    # typeshed has no stub for CPython's internal _multiprocessing
    from _multiprocessing import SemLock  # type: ignore[import-not-found]

    from .domain import Substrate


class SyncObject:
    __slots__ = ("dom", "idx", "lk", "s")
    kind = 0

    def __init__(self, dom: Substrate, idx: int) -> None:
        self.dom = dom
        self.idx = idx
        self.s: ksync_t = dom.syncs[idx]
        self.lk: SemLock = dom.chains.chain(idx)

    @property
    def name(self) -> str:
        return self.dom.sync_name(self.idx)

    def set_instance(self, inst: int) -> None:
        """Renumber the instance shown in names (a reused slot's new pid)."""
        self.s.inst = inst

    def __repr__(self) -> str:
        if self.dom.closed:  # the segment may be unmapped: do not touch it
            return f"<{KIND_NAMES.get(self.kind, '?')} #{self.idx} of a closed kernel>"
        return f"<{KIND_NAMES.get(self.kind, '?')} {self.name}>"


class KMutex(SyncObject):
    __slots__ = ()
    kind = SYNC_MUTEX


class KCondvar(SyncObject):
    __slots__ = ()
    kind = SYNC_CV


class KRWLock(SyncObject):
    __slots__ = ()
    kind = SYNC_RW


class KSema(SyncObject):
    __slots__ = ()
    kind = SYNC_SEMA


HANDLE_TYPES: dict[int, type[SyncObject]] = {
    SYNC_MUTEX: KMutex, SYNC_CV: KCondvar, SYNC_RW: KRWLock, SYNC_SEMA: KSema}
