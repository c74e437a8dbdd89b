"""A small fixed set of hashed cross-process locks: the turnstile chain locks.

illumos protects each turnstile hash chain with a short-held lock (``tc_lock``)
chosen by hashing the address of the synchronization object.  realfork does
the same: every kernel mutex, condition variable, rwlock and semaphore is a
few words in the segment, and the words of the object with index ``i`` are
only changed while ``chain_lock(i)`` is held.  The chain locks are POSIX named
semaphores (``_multiprocessing.SemLock``), so

* their number is fixed (``NCHAINS``), whatever ``nproc`` and ``maxlwps`` are,
  which keeps the count of OS objects and memory mappings constant;
* any process of the owner can open them by name: the names are derived from
  a secret in the segment header (``chain_names``), which only the owner can
  read, and are made with ``O_EXCL``, so nobody can plant them in advance to
  deny a boot (each name is a keyed hash of its index: seeing one predicts
  none of the others);
* an uncontended acquire+release costs about 60 ns (a ``sem_trywait`` and a
  ``sem_post`` in C, no system call).

Rules: a chain lock is held only for a few field updates, never across a
sleep, and **never two at once** (two objects may hash to the same chain, and
the locks are not recursive).
"""

from __future__ import annotations

import hashlib
import re
import secrets

# typeshed has no stub for CPython's internal _multiprocessing (SemLock is the
# semaphore behind multiprocessing.synchronize)
from _multiprocessing import SemLock, sem_unlink  # type: ignore[import-not-found]
from typing import TYPE_CHECKING

from ..errors import BadInput, ResourceError

if TYPE_CHECKING:
    from .segment import Segment

NCHAINS = 64  # a power of two
_SEMAPHORE = 1  # SemLock kind
_MAXVALUE = 1 << 30
# A chain lock's name is its segment's name, "-tc-" and 32 hex digits: the file
# sem.realfork-<segment token>-tc-<keyed hash> in /dev/shm.  The segment's part
# says whose lock it is (a leak check, a reaper and a person reading /dev/shm
# can tell), the keyed hash makes it unpredictable, and there is no dot, so an
# older realfork's sweep of sem.<segment>.tcN orphans never takes it for its own.
CHAIN_INFIX = "-tc-"
_CHAIN_FILE = re.compile(r"sem\.(realfork-[0-9a-f]+)-tc-[0-9a-f]{32}")
CREATE_TRIES = 4
# segment name -> secret of the chain locks this process created (and those its
# forked children inherit): unlink_names uses it.
SECRETS: dict[str, bytes] = {}


def chain_names(segment_name: str, secret: bytes) -> list[str]:
    """The ``NCHAINS`` semaphore names (without the leading slash) of a segment's ``secret``."""
    return [segment_name + CHAIN_INFIX
            + hashlib.blake2b(i.to_bytes(4, "little"), key=secret, digest_size=16).hexdigest()
            for i in range(NCHAINS)]


def chain_files(segment_name: str) -> list[str]:
    """The /dev/shm file names of the chain locks this process made for a segment."""
    secret = SECRETS.get(segment_name)
    return ["sem." + n for n in chain_names(segment_name, secret)] if secret else []


def chain_file_segment(filename: str) -> str | None:
    """The segment a /dev/shm file ``sem.<segment>-tc-<hash>`` is a chain lock of, or None."""
    m = _CHAIN_FILE.fullmatch(filename)
    return m.group(1) if m else None


def is_chain_file(filename: str) -> bool:
    return chain_file_segment(filename) is not None


def unlink_secret(segment_name: str, secret: bytes) -> None:
    _unlink(chain_names(segment_name, secret))


def _unlink(names: list[str]) -> None:
    for n in names:
        try:
            sem_unlink("/" + n)
        except FileNotFoundError:
            pass


class ChainLocks:
    """The ``NCHAINS`` named semaphores of one kernel segment."""

    def __init__(self, names: list[str], locks: list[SemLock], creator: bool) -> None:
        self.names = names
        self.locks = locks
        self.creator = creator

    @classmethod
    def create(cls, seg: Segment) -> ChainLocks:
        """Make the chain locks of ``seg`` under fresh secret names.

        A name that exists already was planted (or is a 2**-128 accident):
        start again with a new secret, a few times, then give up with a
        ResourceError."""
        for _ in range(CREATE_TRIES):
            secret = secrets.token_bytes(32)
            seg.set_chain_secret(secret)
            names = chain_names(seg.name, secret)
            locks: list[SemLock] = []
            try:
                for n in names:
                    locks.append(SemLock(_SEMAPHORE, 1, _MAXVALUE, "/" + n, False))
            except FileExistsError:
                _unlink(names[:len(locks)])
                continue
            except OSError as e:
                _unlink(names[:len(locks)])
                raise ResourceError(f"cannot create the kernel's chain locks: "
                                    f"{e.strerror}") from None
            except BaseException:
                _unlink(names[:len(locks)])
                raise
            SECRETS[seg.name] = secret
            return cls(names, locks, creator=True)
        raise ResourceError(f"could not create the kernel's chain locks: fresh random names "
                            f"were taken {CREATE_TRIES} times in a row (someone is planting "
                            f"semaphores in /dev/shm)")

    @classmethod
    def open(cls, seg: Segment) -> ChainLocks:
        """Open the chain locks of a running kernel (FileNotFoundError: gone)."""
        secret = seg.chain_secret
        if not any(secret):
            raise BadInput(f"kernel {seg.name} has no chain locks recorded")
        names = chain_names(seg.name, secret)
        locks = []
        for n in names:
            try:
                locks.append(SemLock._rebuild(0, _SEMAPHORE, _MAXVALUE, "/" + n))
            except FileNotFoundError:
                raise
            except OSError as e:
                raise ResourceError(f"cannot open the chain locks of {seg.name}: "
                                    f"{e.strerror}") from None
        return cls(names, locks, creator=False)

    def chain(self, index: int) -> SemLock:
        return self.locks[index & (NCHAINS - 1)]

    def unlink(self) -> None:
        """Remove the names (open handles stay usable until closed)."""
        _unlink(self.names)

    @staticmethod
    def unlink_names(segment_name: str) -> None:
        """Remove the names of the chain locks this process (or the process it
        was forked from) made for ``segment_name``."""
        secret = SECRETS.get(segment_name)
        if secret:
            unlink_secret(segment_name, secret)


__all__ = ["NCHAINS", "ChainLocks", "chain_files", "chain_names", "is_chain_file"]
