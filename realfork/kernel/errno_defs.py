"""illumos errno numbers (usr/src/uts/common/sys/errno.h).

These are the illumos values, not Linux's: EDEADLK is 45, ENOSYS 89 and
ETIMEDOUT 145.  ``EWOULDBLOCK`` is the same number as ``EAGAIN`` and is not a
separate name here.
"""

from __future__ import annotations

EPERM = 1
ENOENT = 2
ESRCH = 3
EINTR = 4
EIO = 5
ENXIO = 6
E2BIG = 7
ENOEXEC = 8
EBADF = 9
ECHILD = 10
EAGAIN = 11
ENOMEM = 12
EACCES = 13
EFAULT = 14
ENOTBLK = 15
EBUSY = 16
EEXIST = 17
EXDEV = 18
ENODEV = 19
ENOTDIR = 20
EISDIR = 21
EINVAL = 22
ENFILE = 23
EMFILE = 24
ENOTTY = 25
ETXTBSY = 26
EFBIG = 27
ENOSPC = 28
ESPIPE = 29
EROFS = 30
EMLINK = 31
EPIPE = 32
EDOM = 33
ERANGE = 34
EDEADLK = 45
ENOLCK = 46
ECANCELED = 47
ENOTSUP = 48
ETIME = 62
EOVERFLOW = 79
ENOSYS = 89
ERESTART = 91
ETIMEDOUT = 145

ERRNO: dict[str, int] = {
    name: value
    for name, value in globals().items()
    if name.startswith("E") and name.isupper() and isinstance(value, int)
}
"""Errno name to number, e.g. ``ERRNO["EAGAIN"] == 11``."""

ERRNO_NAMES: dict[int, str] = {value: name for name, value in ERRNO.items()}
"""Errno number to name, e.g. ``ERRNO_NAMES[4] == "EINTR"``."""

assert len(ERRNO_NAMES) == len(ERRNO), "two errno names share a number"
