"""A small fixed set of hashed cross-process locks: the turnstile chain locks.

illumos protects each turnstile hash chain with a short-held lock (``tc_lock``)
chosen by hashing the address of the synchronization object.  realfork does
the same: every kernel mutex, condition variable, rwlock and semaphore is a
few words in the segment, and the words of the object with index ``i`` are
only changed while ``chain_lock(i)`` is held.  The chain locks are POSIX named
semaphores (``_multiprocessing.SemLock``), so

* their number is fixed (``NCHAINS``), whatever ``nproc`` and ``maxlwps`` are,
  which keeps the count of OS objects and memory mappings constant;
* any process can open them by name, like the segment itself;
* an uncontended acquire+release costs about 60 ns (a ``sem_trywait`` and a
  ``sem_post`` in C, no system call).

Rules: a chain lock is held only for a few field updates, never across a
sleep, and **never two at once** (two objects may hash to the same chain, and
the locks are not recursive).
"""

from __future__ import annotations

from _multiprocessing import SemLock, sem_unlink

NCHAINS = 64  # a power of two
_SEMAPHORE = 1  # SemLock kind
_MAXVALUE = 1 << 30


def chain_name(token: str, i: int) -> str:
    return f"/{token}.tc{i}"


class ChainLocks:
    """The ``NCHAINS`` named semaphores of one kernel segment."""

    def __init__(self, token: str, create: bool) -> None:
        self.token = token
        self.creator = create
        self.locks: list[SemLock] = []
        try:
            for i in range(NCHAINS):
                if create:
                    lk = SemLock(_SEMAPHORE, 1, _MAXVALUE, chain_name(token, i), False)
                else:
                    lk = SemLock._rebuild(0, _SEMAPHORE, _MAXVALUE, chain_name(token, i))
                self.locks.append(lk)
        except BaseException:
            if create:
                self.unlink()
            raise

    def chain(self, index: int) -> SemLock:
        return self.locks[index & (NCHAINS - 1)]

    def unlink(self) -> None:
        """Remove the names (open handles stay usable until closed)."""
        for i in range(NCHAINS):
            try:
                sem_unlink(chain_name(self.token, i))
            except FileNotFoundError:
                pass

    @staticmethod
    def unlink_names(token: str) -> None:
        for i in range(NCHAINS):
            try:
                sem_unlink(chain_name(token, i))
            except FileNotFoundError:
                pass
