"""Files written and read safely on a machine shared with other users.

realfork is often run as root on shared build machines.  Everything it writes
(reproducers, findings, traces, reports, metrics) goes through this module, so
that another local user cannot redirect a write by planting a symbolic link or
a directory where realfork is about to write, and everything it reads from a
path the user named is bounded, so ``/dev/zero`` or a FIFO cannot make it hang
or exhaust memory.

The rules:

* **Directories realfork creates or fills are private.**  ``private_dir``
  creates a missing directory with mode 0700 and accepts an existing one only
  if it is a real directory (not a link), owned by the effective user, and not
  writable by group or others.  Anything else is refused with one line.
* **New files are created, never opened.**  ``create_new`` uses
  ``O_CREAT|O_EXCL|O_NOFOLLOW``: a name that already exists, link or not, is
  an error, never a file to write through.
* **A file the user names as output is replaced, not written through.**
  ``write_replacing`` writes a temporary file beside the target (``O_EXCL``,
  0600) and renames it over the target; a rename replaces a link itself and
  never follows it, and a half-written output never shows.  An existing target
  that is not a regular file (a device, a directory, ``/proc`` or ``/sys``) is
  refused before anything is written.
* **Output paths are checked before the work.**  ``check_output_path`` tells a
  careless command line ("--trace /no/such/dir/t", "--json /proc/x") up front,
  so a 30 s run is not lost to an unwritable path at its end.
* **Reads are bounded.**  ``read_bounded`` accepts regular files only and
  refuses one larger than its limit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile

from .errors import BadInput

# Inputs a user names (programs, job files, findings) are small; 64 MiB is far
# more than any of them needs and far less than a machine's memory.
MAX_INPUT_BYTES = 64 << 20

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_VIRTUAL_ROOTS = ("/proc", "/sys", "/dev")


def shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters, for echoing user input in one line."""
    text = str(text)
    if len(text) <= limit:
        return text
    return text[: limit - 15] + f"... ({len(text):,} chars)"


def _strerror(e: OSError) -> str:
    return e.strerror or str(e)


def private_dir(path: str | os.PathLike[str], what: str = "directory") -> str:
    """Ensure ``path`` is a directory only this user controls; create it (0700) if missing.

    Refuses (``BadInput``, one line) a symbolic link, a non-directory, a
    directory owned by another user, or one that group or others may write.
    The parent of a created directory is not checked: it is where the user
    asked to write, and creation itself is atomic (``mkdir`` fails on any
    existing name, link or not).
    """
    p = os.fspath(path)
    shown = shorten(p)
    try:
        os.mkdir(p, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        raise BadInput(f"{what} {shown}: its parent directory does not exist") from None
    except OSError as e:
        raise BadInput(f"{what} {shown}: {_strerror(e)}") from None
    try:
        st = os.lstat(p)
    except OSError as e:
        raise BadInput(f"{what} {shown}: {_strerror(e)}") from None
    if stat.S_ISLNK(st.st_mode):
        raise BadInput(f"{what} {shown} is a symbolic link; refusing to write through it")
    if not stat.S_ISDIR(st.st_mode):
        raise BadInput(f"{what} {shown} exists and is not a directory")
    if st.st_uid != os.geteuid():
        raise BadInput(f"{what} {shown} belongs to another user (uid {st.st_uid}); "
                       f"refusing to write there")
    if st.st_mode & 0o022:
        raise BadInput(f"{what} {shown} is writable by other users "
                       f"(mode {stat.S_IMODE(st.st_mode):o}); refusing to write there")
    return p


def create_new(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Create ``path`` holding ``data``; fail if any file or link is already there."""
    p = os.fspath(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode)
    except FileExistsError:
        raise BadInput(f"{shorten(p)} already exists; refusing to overwrite it") from None
    except OSError as e:
        raise BadInput(f"cannot create {shorten(p)}: {_strerror(e)}") from None
    try:
        _write_all(fd, data)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(p)
        raise
    os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _refuse_special(p: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise BadInput(f"{shorten(p)} is a directory, not a file to write")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise BadInput(f"{shorten(p)} is not a regular file; refusing to replace it")


def check_output_path(path: str | os.PathLike[str], what: str = "output") -> str:
    """Refuse, before any work, an output path that ``write_replacing`` could not write."""
    p = os.fspath(path)
    shown = shorten(p)
    if not p:
        raise BadInput(f"{what}: an empty file name")
    if "\0" in p:
        raise BadInput(f"{what} {shown}: a file name with a NUL byte")
    absolute = os.path.abspath(p)
    for root in _VIRTUAL_ROOTS:
        if absolute == root or absolute.startswith(root + "/"):
            raise BadInput(f"{what} {shown}: refusing to write under {root}")
    try:
        st = os.lstat(p)
    except (FileNotFoundError, NotADirectoryError):
        st = None  # the parent's check below says what is wrong
    except OSError as e:
        raise BadInput(f"{what} {shown}: {_strerror(e)}") from None
    if st is not None:
        _refuse_special(p, st)
    parent = os.path.dirname(absolute) or "/"
    try:
        pst = os.stat(parent)
    except OSError:
        raise BadInput(f"{what} {shown}: directory {shorten(parent)} does not exist") from None
    if not stat.S_ISDIR(pst.st_mode):
        raise BadInput(f"{what} {shown}: {shorten(parent)} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"{what} {shown}: directory {shorten(parent)} is not writable")
    return p


def write_replacing(path: str | os.PathLike[str], data: bytes | str, what: str = "output") -> None:
    """Write ``data`` to ``path`` by renaming a fresh private file over it.

    The rename replaces whatever name is at ``path`` (a link included) without
    following it, so a planted link redirects nothing; readers see the old
    file or the whole new one, never half of it.
    """
    p = check_output_path(path, what)
    raw = data.encode() if isinstance(data, str) else data
    parent = os.path.dirname(os.path.abspath(p))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".realfork-", dir=parent)
    except OSError as e:
        raise BadInput(f"{what} {shorten(p)}: {_strerror(e)}") from None
    try:
        try:
            _write_all(fd, raw)
        finally:
            os.close(fd)
        os.replace(tmp, p)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise BadInput(f"{what} {shorten(p)}: {_strerror(e)}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_bounded(path: str | os.PathLike[str], limit: int = MAX_INPUT_BYTES,
                 what: str = "file") -> bytes:
    """The bytes of the regular file ``path``; refuse anything else or anything over ``limit``.

    Opened without blocking (a FIFO would otherwise wait for a writer forever)
    and checked with ``fstat`` on the open descriptor, so the file checked is
    the file read.
    """
    p = os.fspath(path)
    shown = shorten(p)
    if "\0" in p:
        raise BadInput(f"{what} {shown}: a file name with a NUL byte")
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | _CLOEXEC)
    except FileNotFoundError:
        raise BadInput(f"{what} {shown}: no such file") from None
    except OSError as e:
        raise BadInput(f"{what} {shown}: {_strerror(e)}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise BadInput(f"{what} {shown} is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise BadInput(f"{what} {shown} is not a regular file")
        if st.st_size > limit:
            raise BadInput(f"{what} {shown} is {st.st_size:,} bytes; "
                           f"at most {limit:,} are accepted")
        chunks = []
        total = 0
        while True:
            try:
                chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            except OSError as e:
                if e.errno == errno.EISDIR:
                    raise BadInput(f"{what} {shown} is a directory") from None
                raise BadInput(f"{what} {shown}: {_strerror(e)}") from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # grew while being read
                raise BadInput(f"{what} {shown} is larger than {limit:,} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)
