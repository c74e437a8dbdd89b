"""The undertaker: a helper process that removes a dead supervisor's kernels.

The hazard.  A kernel's OS objects are files of a tmpfs, not of a process:
its segment ``/dev/shm/realfork-<token>`` and its 64 chain locks
``/dev/shm/sem.realfork-<token>-tc-<hash>``.  Nothing in the OS removes them
when their creator dies.  ``Substrate.shutdown`` and the atexit hook of
``realfork.api`` remove them on every exit that runs Python code; SIGKILL,
and SIGTERM or SIGHUP with their default action (how a library user's script
dies), run none.  The files then stayed until some later boot's
``reap_stale_segments``, which may never come.  The processes backend's fork
server notices the supervisor's death on a pipe and cleans up, unless it was
killed too (a SIGKILL to the whole process group); the threads backend has
nobody.

The design.  Once per supervising process, at its first boot, a small Python
process is started by fork+exec (``subprocess.Popen``: a forked copy of a
multi-threaded interpreter must not go on running Python), with a pipe on its
stdin.  Every boot writes ``+NAME`` and every shutdown ``-NAME`` to it: one
non-blocking write of 35 bytes.  The write end is held by the supervisor only
(every child it forks closes it at once, ``os.register_at_fork``; an exec
closes it, being close-on-exec), so end-of-file means the supervisor is gone,
however it went.  Then, for each name still open, the undertaker asks
``segment.probe``:

* ALIVE: a process still holds the liveness lock (the fork server or a host
  finishing, or any process the descriptor went to).  The kernel is never
  touched; it is probed again every ``POLL_S`` for ``GRACE_S``, then left to
  its holders (the fork server removes it; so would a later boot's reaper);
* STALE or UNBORN: nobody holds the lock, and the process that created the
  file (the supervisor, which sent the name after taking the lock) is gone:
  the segment and its chain locks are removed;
* GONE: the segment is removed already; chain locks left under its name are
  removed (they are opened by name only while the segment exists).

Only this user's regular files named after that kernel (the segment, and
``sem.<segment>-tc-<32 hex>``) are removed, judged by ``lstat``: a link is
never followed nor removed.  Then it exits: it outlives its supervisor by the
cleaning, at most ``GRACE_S`` when some kernel is still held.

It ignores SIGINT, SIGTERM and SIGHUP and runs in a session of its own (a
terminal's ^C to the foreground group or a hangup does not reach it), holds
no descriptor but the pipe and /dev/null (``close_fds``: it keeps no kernel
alive), and works in ``/``.  It imports leaf modules only (this one,
``segment``, ``turnstile``, ``errors``, ``libc``): ``realfork/__init__``
imports the whole emulator, a tenth of a second of CPU per start it does not
need, so the bootstrap gives it a bare ``realfork`` package whose path is
this source tree.

At a normal exit (atexit; ``realfork.api``'s hook, registered after this
one's, has closed the kernels by then) it has nothing to do: it is killed and
reaped, and the process leaves no child behind.  If kernels of this process
still exist then, its pipe is closed and it is left to remove them once this
process has let go of their locks.

A process forked from the one that booted first (the processes backend's
fork server and hosts, a user's ``os.fork``) neither writes to it nor starts
its own.  If it cannot be started, boots go on as before and ``status()``
says why; if it dies, the next boot starts another and tells it every kernel
still open.  ``REALFORK_UNDERTAKER=0`` in the environment turns it off (tests
of the reaper use that).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from . import segment as _segment
from . import turnstile as _turnstile

ENV_SWITCH = "REALFORK_UNDERTAKER"  # "0", "off", "no" or "false": never start one
GRACE_S = 5.0  # at end-of-file, how long a kernel still locked is waited for
POLL_S = 0.02
KILL_WAIT_S = 5.0  # reaping it after SIGKILL (it cannot block that)
BEHIND_WAIT_S = 1.0  # how long a boot waits for room in a full pipe before giving it up
# the names Segment.create makes: NAME_PREFIX and 12 random bytes in hex
NAME_RE = re.compile(re.escape(_segment.NAME_PREFIX) + r"[0-9a-f]{24}")
MAX_LINE = 256
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run by ``python -c``: a bare ``realfork`` package over this tree, so that
# importing this module does not run realfork/__init__ (see the docstring).
BOOTSTRAP = (
    "import sys, types\n"
    "pkg = types.ModuleType('realfork')\n"
    "pkg.__path__ = [sys.argv[1]]\n"
    "sys.modules['realfork'] = pkg\n"
    "from realfork.shm.undertaker import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


# -- the undertaker process --------------------------------------------------------------


def main(argv: list[str]) -> int:
    """Read ``+NAME``/``-NAME`` lines from stdin until end-of-file, then bury
    the kernels still named.  Exit status 0: nothing is left; 1: some kernel
    was still held when the grace ran out (left to its holders)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    grace = float(argv[0]) if argv else GRACE_S
    live = read_names(0)
    return 1 if live and bury(list(live), grace) else 0


def read_names(fd: int) -> dict[str, None]:
    """The names added and not removed by the lines read from ``fd`` until
    end-of-file (in the order they came).  Malformed lines are ignored."""
    live: dict[str, None] = {}
    buf = b""
    while chunk := os.read(fd, 65536):
        *lines, buf = (buf + chunk).split(b"\n")
        for line in lines:
            _apply(live, line)
        if len(buf) > MAX_LINE:  # no line is this long: not ours
            buf = b""
    _apply(live, buf)
    return live


def _apply(live: dict[str, None], line: bytes) -> None:
    text = line.decode("ascii", "replace").strip()
    op, name = text[:1], text[1:]
    if not NAME_RE.fullmatch(name):
        return
    if op == "+":
        live[name] = None
    elif op == "-":
        live.pop(name, None)


def bury(names: list[str], grace_s: float = GRACE_S) -> list[str]:
    """Remove each kernel of ``names`` that nobody holds; probe the held ones
    again until ``grace_s`` has passed.  Returns the names left (still held)."""
    pending = [n for n in names if NAME_RE.fullmatch(n)]
    deadline = time.monotonic() + grace_s
    while True:
        held = []
        for name in pending:
            state, _h = _segment.probe(name)
            if state == _segment.ALIVE:
                held.append(name)
            elif state in (_segment.STALE, _segment.UNBORN, _segment.GONE):
                remove_files(name)
            # LEGACY_*: made by an older realfork, so not by our supervisor
        if not held or time.monotonic() >= deadline:
            return held
        pending = held
        time.sleep(POLL_S)


def remove_files(name: str) -> list[str]:
    """Unlink the segment ``name`` and its chain locks: this user's regular
    files only (``lstat``: a link is neither followed nor removed).  Returns
    the file names removed."""
    uid = os.geteuid()
    try:
        sems = [f for f in os.listdir(_segment.SHM_DIR)
                if _turnstile.chain_file_segment(f) == name]
    except OSError:
        sems = []
    removed = []
    for f in [name, *sems]:
        path = os.path.join(_segment.SHM_DIR, f)
        try:
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_uid == uid:
                os.unlink(path)
                removed.append(f)
        except OSError:  # gone meanwhile, or not ours to remove
            continue
    return removed


# -- the supervisor's side -----------------------------------------------------------------


def spawn(grace_s: float = GRACE_S, stdin: int = subprocess.PIPE) -> subprocess.Popen[bytes]:
    """Start an undertaker process reading names from ``stdin`` (by default a
    pipe: write lines to ``proc.stdin``, close it to end)."""
    return subprocess.Popen(
        [sys.executable, "-c", BOOTSTRAP, PACKAGE_DIR, repr(float(grace_s))],
        stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        close_fds=True, start_new_session=True, cwd="/")


@dataclass
class _Running:
    proc: subprocess.Popen[bytes]
    fd: int  # the write end of its stdin (non-blocking)
    pipe: tuple[int, int]  # (st_dev, st_ino) of that pipe, to know it is still ours
    started_ns: int  # how long starting it took (Popen returns once it has exec'd)


_LOCK = threading.Lock()
_OWNER = 0  # the pid of the process that booted first here; 0: none yet
_CURRENT: _Running | None = None
_LIVE: dict[str, None] = {}  # kernels this process booted and has not closed
_WHY_NOT = "no kernel booted yet"  # why no undertaker runs (for debugging)
_GAVE_UP = False  # starting it failed (or is switched off): not tried again
_STARTS = 0
_ATEXIT = False


def booted(name: str) -> None:
    """Kernel ``name`` exists (its segment is made and locked): tell the
    undertaker, starting it at this process's first boot."""
    global _OWNER
    pid = os.getpid()
    if _OWNER and _OWNER != pid:
        return  # forked from the process whose undertaker it is
    with _LOCK:
        _OWNER = pid
        _LIVE[name] = None
        if _CURRENT is not None:
            _send(b"+" + name.encode() + b"\n")
        if _CURRENT is None and not _GAVE_UP:
            _start()  # the first, or one in place of one lost: told every kernel open


def closed(name: str) -> None:
    """Kernel ``name`` is removed (its names unlinked, its lock let go)."""
    if _OWNER != os.getpid():
        return
    with _LOCK:
        if _LIVE.pop(name, 0) is None and _CURRENT is not None:
            _send(b"-" + name.encode() + b"\n")


def status() -> dict[str, Any]:
    """For debugging: the undertaker's pid (0: none), how long starting it
    took, how many were started, the kernels it knows, why none runs."""
    u = _CURRENT
    mine = _OWNER == os.getpid()
    return {"pid": u.proc.pid if u is not None and mine else 0,
            "start_s": u.started_ns / 1e9 if u is not None else 0.0,
            "starts": _STARTS, "kernels": sorted(_LIVE) if mine else [],
            "why_not": "" if u is not None and mine else
            (_WHY_NOT if mine or not _OWNER else f"forked from pid {_OWNER}, whose it is")}


def _switched_off() -> bool:
    return os.environ.get(ENV_SWITCH, "").strip().lower() in ("0", "off", "no", "false")


def _start() -> None:
    """Start an undertaker and tell it every kernel open here (under _LOCK)."""
    global _CURRENT, _WHY_NOT, _GAVE_UP, _STARTS, _ATEXIT
    if _switched_off():
        _WHY_NOT, _GAVE_UP = f"switched off ({ENV_SWITCH}={os.environ[ENV_SWITCH]})", True
        return
    t0 = time.monotonic_ns()
    # our own pipe, not Popen's: no file object owns the write end, so it is
    # closed exactly when we say (a forked child's copy included)
    fd = -1
    try:
        rfd, fd = os.pipe()
        try:
            os.set_blocking(fd, False)  # a boot never waits for it
            st = os.fstat(fd)
            proc = spawn(stdin=rfd)
        finally:
            os.close(rfd)
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        _WHY_NOT, _GAVE_UP = f"could not start it: {type(e).__name__}: {e}", True
        if fd >= 0:
            os.close(fd)
        return
    _CURRENT = _Running(proc, fd, (st.st_dev, st.st_ino), time.monotonic_ns() - t0)
    _STARTS += 1
    _WHY_NOT = ""
    if not _ATEXIT:
        import atexit

        atexit.register(_at_exit)  # before realfork.api's: runs after it
        _ATEXIT = True
    for n in list(_LIVE):
        if _CURRENT is None:
            break
        _send(b"+" + n.encode() + b"\n")


def _send(line: bytes) -> None:
    """One line to the undertaker (under _LOCK).  A line of at most PIPE_BUF
    bytes is written whole or not at all; a full pipe (it reads slower than a
    loop of boots writes) is waited for up to ``BEHIND_WAIT_S``.  If it cannot
    be written (the undertaker died, or stopped reading), this one is let go
    (killed and reaped) and the next boot starts another."""
    global _CURRENT, _WHY_NOT
    u = _CURRENT
    assert u is not None
    try:
        st = os.fstat(u.fd)
        if (st.st_dev, st.st_ino) != u.pipe:
            u.fd = -1  # closed behind our back: the number is someone else's now
            raise OSError("its pipe was closed by someone else")
        try:
            os.write(u.fd, line)
            return
        except BlockingIOError:  # its pipe is full: it is behind (a flood of boots)
            if not select.select([], [u.fd], [], BEHIND_WAIT_S)[1]:
                raise OSError("it stopped reading") from None
            os.write(u.fd, line)
            return
    except OSError as e:
        _WHY_NOT = f"lost it ({e}); the next boot starts another"
    _CURRENT = None
    _close(u)
    _kill(u.proc)


def _close(u: _Running) -> None:
    """Close the write end, if the descriptor is still that pipe."""
    with contextlib.suppress(OSError):
        st = os.fstat(u.fd)
        if (st.st_dev, st.st_ino) == u.pipe:
            os.close(u.fd)
    u.fd = -1


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        proc.kill()
        proc.wait(KILL_WAIT_S)


def _at_exit() -> None:
    """At a normal exit: with no kernel of ours left, kill and reap it (it has
    nothing to do, and no child is left behind); otherwise close its pipe and
    let it remove them once this process is gone."""
    global _CURRENT
    if _OWNER != os.getpid() or not _LOCK.acquire(timeout=1.0):
        return
    try:
        u, _CURRENT = _CURRENT, None
        if u is None:
            return
        left = [n for n in _LIVE if os.path.lexists(_segment.segment_path(n))]
        if not left:
            _kill(u.proc)
        _close(u)
    finally:
        _LOCK.release()


def _after_fork_in_child() -> None:
    """In every child forked from here: let go of the write end at once (so
    that end-of-file means the supervisor itself is gone) and of the lock
    (another thread may have held it at the fork)."""
    global _LOCK
    _LOCK = threading.Lock()
    u = _CURRENT
    if u is not None and u.fd >= 0:
        with contextlib.suppress(OSError):
            os.close(u.fd)
        u.fd = -1


os.register_at_fork(after_in_child=_after_fork_in_child)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
