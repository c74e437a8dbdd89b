"""The few libc calls the shared-memory layer needs, through ctypes.

``mmap``/``munmap`` are called directly (not through Python's ``mmap`` module)
so that no file descriptor stays open for the life of the mapping and no
buffer export pins it: the segment is unmapped exactly when we say so.
In-segment POSIX semaphores (``sem_t``, pshared=1) are the per-thread sleep
objects; a blocking call releases the GIL like every ``ctypes.CDLL`` call.
"""

from __future__ import annotations

import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)

PROT_READ = 0x1
PROT_WRITE = 0x2
MAP_SHARED = 0x01
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
