"""One shared-memory segment per booted kernel.

The segment is a file under ``/dev/shm`` named ``realfork-<hex token>``,
created with ``O_EXCL`` and mode 0600, so only its user can open it and its
name cannot be guessed.  It begins with a header and a directory of regions;
every region is a ctypes array placed at a 64-byte aligned offset.  The
directory makes the segment self-describing: a process that attaches by
name (a dashboard, a deadlock reporter, a host) finds every table by its
name and checks its element size against the code it runs.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import BadInput, ResourceError
from . import libc

SHM_DIR = "/dev/shm"
NAME_PREFIX = "realfork-"
MAGIC = b"RFKSEG01"
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
    ]


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


@dataclass(frozen=True)
class RegionSpec:
    name: str
    ctype: type  # a ctypes Structure or scalar type
    count: int


class Layout:
    """An ordered list of regions; computes offsets and the total size."""

    def __init__(self) -> None:
        self.specs: list[RegionSpec] = []

    def add(self, name: str, ctype: type, count: int = 1) -> None:
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

    def __init__(self, name: str, addr: int, size: int, creator: bool) -> None:
        self.name = name
        self.addr = addr
        self.size = size
        self.creator = creator
        self.header = SegmentHeader.from_address(addr)
        self._mapped = True
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
                fd = os.open(segment_path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileExistsError:  # pragma: no cover - 96 random bits
                continue
        else:  # pragma: no cover
            raise ResourceError("could not pick a fresh segment name")
        try:
            try:
                os.fchmod(fd, 0o600)  # whatever the umask said
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                raise ResourceError(f"segment of {size:,} bytes: {e.strerror}") from None
            addr = libc.map_shared(fd, size)
        except BaseException:
            os.close(fd)
            os.unlink(segment_path(name))
            raise
        os.close(fd)
        seg = cls(name, addr, size, creator=True)
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
            e = h.regions[i]
            e.name = spec.name.encode()
            e.offset = off
            e.count = spec.count
            e.elem_size = ctypes.sizeof(spec.ctype)
            seg._regions[spec.name] = (off, spec.count, e.elem_size)
        h.nregions = len(layout.specs)
        h.magic = MAGIC  # last: an attacher seeing the magic sees a whole header
        return seg

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
            st = os.fstat(fd)
            if st.st_uid != os.geteuid():
                raise BadInput(f"kernel {name!r} belongs to another user (uid {st.st_uid})")
            if not stat.S_ISREG(st.st_mode) or st.st_size < ctypes.sizeof(SegmentHeader):
                raise BadInput(f"{path} is not a realfork kernel segment")
            addr = libc.map_shared(fd, st.st_size)
        finally:
            os.close(fd)
        h = SegmentHeader.from_address(addr)
        if h.magic != MAGIC or h.size != st.st_size:
            libc.unmap(addr, st.st_size)
            raise BadInput(f"{path} is not a realfork kernel segment (or not yet booted)")
        return cls(name, addr, st.st_size, creator=False)

    # -- regions ------------------------------------------------------------

    def region(self, name: str, ctype: type) -> Any:
        """The region ``name`` as a ctypes array of ``ctype`` (or one object)."""
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
        """Remove the name; mappings stay valid until unmapped."""
        try:
            os.unlink(segment_path(self.name))
        except FileNotFoundError:
            pass

    def unmap(self) -> None:
        """Unmap.  Every ctypes object over the segment is dangling afterwards:
        call only when no thread of this process can touch it again."""
        if self._mapped:
            self._mapped = False
            libc.unmap(self.addr, self.size)

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


def creator_alive(seg: Segment) -> bool:
    """Is the process that created ``seg`` still running (same pid, same start)?"""
    import psutil

    h = seg.header
    try:
        p = psutil.Process(h.creator_pid)
        return abs(p.create_time() - h.creator_start) < 0.01
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def remove_name(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as e:
        if e.errno != _errno.ENOENT:
            raise
