"""The few libc calls the shared-memory layer needs, through ctypes.

``mmap`` is called directly (not through Python's ``mmap`` module) so that no
buffer export pins a mapping: the segment is released exactly when we say so.
Released is not unmapped: ``retire`` puts a private zero mapping in place of
the shared one, so a ctypes object left over a closed kernel reads zeros
instead of crashing the interpreter (see ``retire``).
In-segment POSIX semaphores (``sem_t``, pshared=1) are the per-thread sleep
objects; a blocking call releases the GIL like every ``ctypes.CDLL`` call.
"""

from __future__ import annotations

import ctypes
import os
import threading

libc = ctypes.CDLL(None, use_errno=True)

PROT_READ = 0x1
PROT_WRITE = 0x2
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_NORESERVE = 0x4000
MAP_FAILED = ctypes.c_void_p(-1).value
CLOCK_MONOTONIC = 1
SEM_T_SIZE = 32  # sizeof(sem_t) on 64-bit glibc


class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_mmap = libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                  ctypes.c_int, ctypes.c_long]
_munmap = libc.munmap
_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

sem_init = libc.sem_init
sem_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint]
sem_post = libc.sem_post
sem_post.argtypes = [ctypes.c_void_p]
sem_trywait = libc.sem_trywait
sem_trywait.argtypes = [ctypes.c_void_p]
sem_destroy = libc.sem_destroy
sem_destroy.argtypes = [ctypes.c_void_p]
_sem_clockwait: ctypes._NamedFuncPointer | None  # None: no sem_clockwait in this libc
try:  # glibc >= 2.30: a deadline on CLOCK_MONOTONIC, immune to clock steps
    _sem_clockwait = libc.sem_clockwait
    _sem_clockwait.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(timespec)]
except AttributeError:  # pragma: no cover - older glibc
    _sem_clockwait = None
    _sem_timedwait = libc.sem_timedwait
    _sem_timedwait.argtypes = [ctypes.c_void_p, ctypes.POINTER(timespec)]


def map_shared(fd: int, size: int) -> int:
    """Map ``size`` bytes of ``fd`` shared and writable; return the address."""
    addr = _mmap(None, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
    if addr is None or addr == MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return addr


def unmap(addr: int, size: int) -> None:
    if _munmap(addr, size) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


# Retired ranges, oldest first: (address, size).
RETIRED: list[tuple[int, int]] = []
# Past these, the oldest retired ranges are really unmapped.  A retired range
# costs address space only (no memory: its pages are never touched unless a
# stale object writes to it) and one entry of the process's mapping table,
# of which Linux allows 65,530 by default (vm.max_map_count).
RETIRED_MAX_RANGES = 1024
RETIRED_MAX_BYTES = 1 << 40  # 1 TiB of the 128 TiB of user address space
_retired_lock = threading.Lock()  # two kernels may close at once in two threads


def retire(addr: int, size: int) -> bool:
    """Release the shared mapping at ``addr`` but keep the addresses readable.

    The range is replaced in place (``MAP_FIXED``, atomic) by an anonymous,
    private, unreserved mapping: this process's reference to the shared
    pages is dropped (the segment's memory is freed once its file is
    unlinked and no process maps it), while any ctypes object, pointer or
    raw address still aimed at the range reads zeros, and its writes land in
    private pages nobody reads, instead of a fault.  False if the kernel
    refused (the shared mapping then stays, which is safe too).
    """
    got = _mmap(addr, size, PROT_READ | PROT_WRITE,
                MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    if got != addr:
        return False
    with _retired_lock:
        RETIRED.append((addr, size))
        total = sum(s for _a, s in RETIRED)
        while len(RETIRED) > RETIRED_MAX_RANGES or total > RETIRED_MAX_BYTES:
            a, s = RETIRED.pop(0)  # the longest-closed kernel
            unmap(a, s)
            total -= s
    return True


def sem_wait_until(addr: int, deadline_ns: int) -> bool:
    """Wait on the semaphore at ``addr`` until ``deadline_ns`` (CLOCK_MONOTONIC).

    True when a post was consumed, False on timeout.  EINTR is retried.
    """
    ts = timespec(deadline_ns // 1_000_000_000, deadline_ns % 1_000_000_000)
    while True:
        if _sem_clockwait is not None:
            rc = _sem_clockwait(addr, CLOCK_MONOTONIC, ctypes.byref(ts))
        else:  # pragma: no cover
            import time
            left = deadline_ns - time.monotonic_ns()
            real = time.time_ns() + max(left, 0)
            rts = timespec(real // 1_000_000_000, real % 1_000_000_000)
            rc = _sem_timedwait(addr, ctypes.byref(rts))
        if rc == 0:
            return True
        err = ctypes.get_errno()
        if err == 110:  # ETIMEDOUT
            return False
        if err != 4:  # not EINTR
            raise OSError(err, os.strerror(err))
