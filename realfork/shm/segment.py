"""One shared-memory segment per booted kernel.

The segment is a file under ``/dev/shm`` named ``realfork-<hex token>``,
created with ``O_EXCL`` and mode 0600, so only its user can open it and its
name cannot be guessed.  It begins with a header and a directory of regions;
every region is a ctypes array placed at a 64-byte aligned offset.  The
directory makes the segment self-describing: a process that attaches by
name (a dashboard, a deadlock reporter, a host) finds every table by its
name and checks its element size against the code it runs.

Liveness.  The creator holds an open-file-description read lock
(``F_OFD_SETLK``) on the whole file from the moment the file exists until
its name is gone; processes forked from it (the hosts of the processes
backend) share that open file description, so the lock lasts while any of
them lives, and the kernel drops it when the last one dies however it dies.
Whether a segment is alive is asked with ``F_OFD_GETLK``, which takes no
lock, so two observers never mistake each other for the creator.  Unlike a
pid and a start time, the lock is on the file itself: a kernel booted in
another PID namespace sharing /dev/shm is seen alive.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import fcntl
import os
import secrets
import stat
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import BadInput, ResourceError
from . import libc

if TYPE_CHECKING:
    # typeshed's union of the ctypes data types (Structure, the scalars,
    # arrays...): what from_address and ``* count`` are defined on.  It has no
    # name at run time.
    from ctypes import _CDataType

SHM_DIR = "/dev/shm"
NAME_PREFIX = "realfork-"
MAGIC = b"RFKSEG01"
# In ``liveness``: the creator holds the liveness lock and the chain locks are
# named by ``chain_secret``.  Segments of an earlier realfork have zeros there
# (it is their header's padding): they are judged by their creator's pid and
# start time and never attached, and an earlier realfork, reading this
# header as its own, judges ours by pid too instead of deleting them.
LIVENESS = b"RFKLIVE1"
SECRET_BYTES = 32
UNBORN_GRACE_S = 60  # an incomplete, unlocked segment this old was abandoned
BOOT_WAIT_S = 2.0  # how long attach waits for a locked segment to be published
MAX_REGIONS = 64
ALIGN = 64


class RegionEntry(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char * 24),
        ("offset", ctypes.c_uint64),
        ("count", ctypes.c_uint64),
        ("elem_size", ctypes.c_uint64),
    ]


class SegmentHeader(ctypes.Structure):
    _fields_ = [
        ("magic", ctypes.c_char * 8),
        ("size", ctypes.c_uint64),
        ("uid", ctypes.c_uint32),
        ("creator_pid", ctypes.c_int32),
        ("creator_start", ctypes.c_double),  # psutil create_time of the creator
        ("created_ns", ctypes.c_int64),  # wall clock, for "most recent"
        ("nregions", ctypes.c_uint32),
        ("params_len", ctypes.c_uint32),
        ("params", ctypes.c_char * 2048),  # boot parameters, msgpack
        ("regions", RegionEntry * MAX_REGIONS),
        ("liveness", ctypes.c_char * 8),  # LIVENESS (offset 5168: see above)
        # names the chain locks (turnstile.chain_names); only the owner can read it
        ("chain_secret", ctypes.c_ubyte * SECRET_BYTES),
    ]


HEADER_SIZE = ctypes.sizeof(SegmentHeader)

# struct flock on 64-bit Linux: l_type, l_whence, l_start, l_len, l_pid
_FLOCK = struct.Struct("hhqqi4x")
F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)


def hold_alive_lock(fd: int) -> None:
    """Take the liveness lock on ``fd`` (whole file, shared)."""
    fcntl.fcntl(fd, F_OFD_SETLK, _FLOCK.pack(fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0))


def lock_held(fd: int) -> bool:
    """Does any open file description but ``fd``'s hold a lock on the file?"""
    got = fcntl.fcntl(fd, F_OFD_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
    return _FLOCK.unpack(got)[0] != fcntl.F_UNLCK


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


@dataclass(frozen=True)
class RegionSpec:
    name: str
    ctype: type[_CDataType]  # a ctypes Structure or scalar type
    count: int


class Layout:
    """An ordered list of regions; computes offsets and the total size."""

    def __init__(self) -> None:
        self.specs: list[RegionSpec] = []

    def add(self, name: str, ctype: type[_CDataType], count: int = 1) -> None:
        if any(s.name == name for s in self.specs):
            raise ValueError(f"region {name!r} declared twice")
        if len(name.encode()) >= 24:
            raise ValueError(f"region name {name!r} too long")
        if count < 1:
            raise BadInput(f"region {name!r} needs a positive size, not {count}")
        self.specs.append(RegionSpec(name, ctype, count))

    def offsets(self) -> list[tuple[RegionSpec, int]]:
        off = _align(ctypes.sizeof(SegmentHeader))
        out = []
        for spec in self.specs:
            out.append((spec, off))
            off = _align(off + ctypes.sizeof(spec.ctype) * spec.count)
        return out

    @property
    def size(self) -> int:
        placed = self.offsets()
        if not placed:
            return _align(ctypes.sizeof(SegmentHeader))
        spec, off = placed[-1]
        return _align(off + ctypes.sizeof(spec.ctype) * spec.count)


def segment_path(name: str) -> str:
    return os.path.join(SHM_DIR, name)


def _check_fits(size: int) -> None:
    """Refuse a segment that /dev/shm or physical memory cannot hold."""
    import psutil

    st = os.statvfs(SHM_DIR)
    free = st.f_bavail * st.f_frsize
    avail = psutil.virtual_memory().available
    if size > free or size > avail:
        raise ResourceError(
            f"segment of {size:,} bytes does not fit: {free:,} bytes free in {SHM_DIR}, "
            f"{avail:,} bytes of memory available; lower nproc or maxlwps")


class Segment:
    """A mapped segment: its header, its regions, and who owns it."""

    def __init__(self, name: str, addr: int, size: int, creator: bool, fd: int = -1) -> None:
        self.name = name
        self.addr = addr
        self.size = size
        self.creator = creator
        self.header = SegmentHeader.from_address(addr)
        self._mapped = True
        self._lock_fd = fd  # the creator's: holds the liveness lock until unlink()
        self._regions: dict[str, tuple[int, int, int]] = {}
        for i in range(self.header.nregions):
            e = self.header.regions[i]
            self._regions[e.name.decode()] = (e.offset, e.count, e.elem_size)

    # -- creation and attachment ------------------------------------------------

    @classmethod
    def create(cls, layout: Layout, params: bytes = b"") -> Segment:
        size = layout.size
        _check_fits(size)
        if len(params) > SegmentHeader.params.size:
            raise BadInput("boot parameters too large to record in the segment")
        if len(layout.specs) > MAX_REGIONS:
            raise ValueError("too many regions")
        for _ in range(8):
            name = NAME_PREFIX + secrets.token_hex(12)
            try:
                fd = os.open(segment_path(name),
                             os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                break
            except FileExistsError:  # 96 random bits: someone is planting names
                continue
            except OSError as e:
                raise ResourceError(f"cannot create a segment in {SHM_DIR}: "
                                    f"{e.strerror}") from None
        else:
            raise ResourceError(f"could not pick a fresh segment name in {SHM_DIR} "
                                f"(8 tries, every name taken)")
        try:
            try:
                hold_alive_lock(fd)  # first: a reaper must never see it unlocked and whole
                os.pwrite(fd, LIVENESS, SegmentHeader.liveness.offset)
                os.fchmod(fd, 0o600)  # whatever the umask said
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                raise ResourceError(f"segment of {size:,} bytes: {e.strerror}") from None
            addr = libc.map_shared(fd, size)
        except BaseException:
            os.unlink(segment_path(name))
            os.close(fd)
            raise
        seg = cls(name, addr, size, creator=True, fd=fd)
        h = seg.header
        import psutil

        h.size = size
        h.uid = os.geteuid()
        h.creator_pid = os.getpid()
        h.creator_start = psutil.Process().create_time()
        h.created_ns = time.time_ns()
        h.params_len = len(params)
        ctypes.memmove(ctypes.addressof(h) + SegmentHeader.params.offset, params, len(params))
        for i, (spec, off) in enumerate(layout.offsets()):
            entry = h.regions[i]
            entry.name = spec.name.encode()
            entry.offset = off
            entry.count = spec.count
            entry.elem_size = ctypes.sizeof(spec.ctype)
            seg._regions[spec.name] = (off, spec.count, entry.elem_size)
        h.nregions = len(layout.specs)
        return seg  # not yet published: see publish()

    def set_chain_secret(self, secret: bytes) -> None:
        """Record the secret naming the chain locks (before they are made, so a
        reaper reading the header knows them as soon as they exist)."""
        assert len(secret) == SECRET_BYTES
        ctypes.memmove(ctypes.addressof(self.header) + SegmentHeader.chain_secret.offset,
                       secret, SECRET_BYTES)

    @property
    def chain_secret(self) -> bytes:
        return bytes(self.header.chain_secret)

    def publish(self) -> None:
        """Write the magic: from now on the segment can be attached."""
        self.header.magic = MAGIC  # last: an attacher seeing the magic sees a whole header

    @classmethod
    def attach(cls, name: str) -> Segment:
        """Map an existing segment by name; it must be this user's."""
        if not name or "/" in name or name.startswith("."):
            raise BadInput(f"no kernel named {name!r}")
        path = segment_path(name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise BadInput(f"no kernel named {name!r} (no {path})") from None
        except PermissionError:
            raise BadInput(f"kernel {name!r} belongs to another user") from None
        except OSError as e:
            raise BadInput(f"cannot open kernel {name!r}: {e.strerror}") from None
        try:
            deadline = time.monotonic() + BOOT_WAIT_S
            while True:
                st = os.fstat(fd)
                if st.st_uid != os.geteuid():
                    raise BadInput(f"kernel {name!r} belongs to another user (uid {st.st_uid})")
                if not stat.S_ISREG(st.st_mode):
                    raise BadInput(f"{path} is not a realfork kernel segment")
                h = _read_header(fd)
                if h.magic == MAGIC and h.size == st.st_size and h.liveness == LIVENESS:
                    break
                if h.magic == MAGIC and h.liveness != LIVENESS:
                    raise BadInput(f"kernel {name!r} was booted by an older version of "
                                   f"realfork")
                if h.magic or not lock_held(fd) or time.monotonic() > deadline:
                    raise BadInput(f"{path} is not a realfork kernel segment "
                                   f"(or not yet booted)")
                time.sleep(0.01)  # its creator is still booting it
            try:
                addr = libc.map_shared(fd, st.st_size)
            except OSError as e:
                raise ResourceError(f"cannot map kernel {name!r}: {e.strerror}") from None
        finally:
            os.close(fd)
        return cls(name, addr, st.st_size, creator=False)

    # -- regions ------------------------------------------------------------

    def region(self, name: str, ctype: type[_CDataType]) -> Any:
        """The region ``name`` as a ctypes array of ``ctype`` (or one object)."""
        if not self._mapped:
            raise BadInput(f"kernel segment {self.name} is closed")
        try:
            off, count, elem = self._regions[name]
        except KeyError:
            raise BadInput(f"segment {self.name} has no region {name!r}") from None
        if elem != ctypes.sizeof(ctype):
            raise BadInput(
                f"region {name!r} of {self.name} was laid out by another version of realfork")
        if count == 1:
            return ctype.from_address(self.addr + off)
        return (ctype * count).from_address(self.addr + off)

    def region_address(self, name: str) -> int:
        return self.addr + self._regions[name][0]

    def region_names(self) -> list[str]:
        return list(self._regions)

    @property
    def params(self) -> bytes:
        h = self.header
        return ctypes.string_at(ctypes.addressof(h) + SegmentHeader.params.offset, h.params_len)

    # -- release --------------------------------------------------------------

    def unlink(self) -> None:
        """Remove the name, then let go of the liveness lock (in that order:
        a segment found unlocked is stale, and this one is not); mappings
        stay valid until unmapped."""
        try:
            os.unlink(segment_path(self.name))
        except FileNotFoundError:
            pass
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def unmap(self) -> None:
        """Release this process's mapping of the segment.

        The header is copied out first (``header`` keeps answering); the
        range itself is retired (``libc.retire``): ctypes objects left over
        it read zeros from then on instead of faulting.  Only if retiring
        fails is the shared mapping kept."""
        if self._mapped:
            self._mapped = False
            self.header = SegmentHeader.from_buffer_copy(self.header)
            libc.retire(self.addr, self.size)

    @property
    def mapped(self) -> bool:
        return self._mapped


def list_segments(uid: int | None = None) -> Iterator[tuple[str, os.stat_result]]:
    """Every realfork segment in /dev/shm (of ``uid`` when given)."""
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:  # pragma: no cover
        return
    for n in names:
        if not n.startswith(NAME_PREFIX):
            continue
        try:
            st = os.stat(segment_path(n), follow_symlinks=False)
        except OSError:
            continue
        if uid is None or st.st_uid == uid:
            yield n, st


def _read_header(fd: int) -> SegmentHeader:
    """The header as it is in the file now (zeros where the file is short)."""
    raw = os.pread(fd, HEADER_SIZE, 0)
    return SegmentHeader.from_buffer_copy(raw.ljust(HEADER_SIZE, b"\0"))


def _legacy_creator_alive(h: SegmentHeader) -> bool:
    """An older realfork's test: its creator's pid runs and started then.  It
    cannot see across PID namespaces; only used for segments without LIVENESS."""
    import psutil

    try:
        p = psutil.Process(h.creator_pid)
        return abs(p.create_time() - h.creator_start) < 0.01
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


# probe() states
ALIVE = "alive"  # its liveness lock is held: booting or running
STALE = "stale"  # published, and nobody holds its lock: every holder is gone
UNBORN = "unborn"  # never published and not locked (being made by an older realfork, or abandoned)
LEGACY_ALIVE = "legacy-alive"  # an older realfork's segment whose creator runs
LEGACY_STALE = "legacy-stale"
GONE = "gone"  # no such file (or not a regular file)


def probe(name: str) -> tuple[str, SegmentHeader]:
    """What segment ``name`` is, read from the file without mapping it."""
    try:
        fd = os.open(segment_path(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return GONE, SegmentHeader()
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return GONE, SegmentHeader()
        h = _read_header(fd)
        if lock_held(fd):
            return ALIVE, h
        if h.liveness == LIVENESS:
            return (STALE if h.magic == MAGIC else UNBORN), h
        if h.magic == MAGIC:
            return (LEGACY_ALIVE if _legacy_creator_alive(h) else LEGACY_STALE), h
        return UNBORN, h
    finally:
        os.close(fd)


def creator_alive(seg: Segment) -> bool:
    """Is the kernel of ``seg`` alive: does its creator, or a process forked
    from it, still hold the liveness lock?  (False once its name is gone.)"""
    return probe(seg.name)[0] == ALIVE


def remove_name(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as e:
        if e.errno != _errno.ENOENT:
            raise
