"""The undertaker (realfork.shm.undertaker): a supervisor killed however it is
killed leaves no segment or semaphore behind, with no later boot to reap them;
a kernel whose liveness lock is still held is never removed.

Nothing here waits a fixed time: every wait polls for its condition, and
pytest-timeout bounds it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from conftest import leftovers
from realfork.shm import undertaker
from realfork.shm.segment import SHM_DIR
from realfork.sync.domain import Substrate

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
QUIET = dict(ENV, REALFORK_UNDERTAKER="0")  # a process with no undertaker of its own
SMALL = {"maxlwps": 4, "nsync": 8, "probe_capacity": 16}

# A library user's script: no signal handler of its own, a run in progress
# (on processes, init and a child live in hosts).
SUPERVISOR = r'''
import sys
import psutil
import realfork
from realfork.shm import undertaker

s = realfork.boot(backend=sys.argv[1], deadlock_timeout=600)
s.start("main:\n fork1\n beq rv, 0, child\n wait\n exit 0\nchild:\n sleep 600000\n exit 0\n")
pid = undertaker.status()["pid"]
print(s.name, pid, psutil.Process(pid).create_time(), flush=True)
sys.stdin.read()
'''

HOLDER = r'''
import os, sys
from realfork.sync.domain import Substrate

d = Substrate.boot(maxlwps=4, nsync=8, probe_capacity=16)
print(d.name, flush=True)
sys.stdin.readline()
os._exit(0)   # dies holding it: from now on the kernel is stale
'''


def wait_until(cond: Callable[[], bool]) -> None:
    while not cond():
        time.sleep(0.01)


def ended(pid: int, created: float) -> bool:
    """Has process ``pid`` (started at ``created``) exited?"""
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - created) > 0.01 or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def remove(names: list[str]) -> None:
    """Remove what is left of kernels these tests' own subprocesses booted."""
    for f in leftovers(names):
        try:
            os.unlink(os.path.join(SHM_DIR, f))
        except FileNotFoundError:
            pass


def start_supervisor(backend: str, **kw: object) -> tuple[subprocess.Popen, str, int, float]:
    p = subprocess.Popen([sys.executable, "-c", SUPERVISOR, backend], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=ENV, **kw)
    assert p.stdout is not None
    name, upid, created = p.stdout.readline().split()
    assert name.startswith("realfork-") and len(leftovers([name])) == 65
    return p, name, int(upid), float(created)


def holder() -> tuple[subprocess.Popen, str]:
    h = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=QUIET)
    assert h.stdout is not None
    name = h.stdout.readline().strip()
    assert name.startswith("realfork-") and len(leftovers([name])) == 65
    return h, name


def release(h: subprocess.Popen) -> None:
    if h.poll() is None:
        assert h.stdin is not None
        h.stdin.write("\n")
        h.stdin.flush()
        h.wait()


# -- the supervisor killed ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["threads", "processes"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_supervisor_leaves_nothing_without_another_boot(backend: str, sig: int) -> None:
    p, name, upid, created = start_supervisor(backend)
    try:
        u = psutil.Process(upid)
        assert u.ppid() == p.pid and os.getsid(upid) == upid  # its child, its own session
        p.send_signal(sig)  # SIGTERM: the default action, as a library user's script
        assert p.wait() == -sig
        wait_until(lambda: ended(upid, created))
        if backend == "threads":  # nobody else removes anything: the undertaker did
            assert leftovers([name]) == []
        else:  # the fork server removes them too, as it finishes
            wait_until(lambda: leftovers([name]) == [])
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        remove([name])


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_process_group_leaves_nothing(sig: int) -> None:
    """The processes backend's fork server and hosts die with the supervisor
    (SIGKILL to the whole group: nobody of the kernel is left to clean up) or
    ignore the signal (SIGTERM): the undertaker, in a session of its own, is
    not in the group."""
    p, name, upid, created = start_supervisor("processes", start_new_session=True)
    try:
        os.killpg(p.pid, sig)
        assert p.wait() == -sig
        wait_until(lambda: ended(upid, created))
        wait_until(lambda: leftovers([name]) == [])
    finally:
        with contextlib.suppress(ProcessLookupError):  # its group: the session made for it
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        remove([name])


# -- exiting without closing ---------------------------------------------------------------


EXIT_SCRIPT = r'''
import sys
import psutil
from realfork.shm import undertaker
from realfork.sync.domain import Substrate

d = Substrate.boot(maxlwps=4, nsync=8, probe_capacity=16)
pid = undertaker.status()["pid"]
print(d.name, pid, psutil.Process(pid).create_time(), flush=True)
if sys.argv[1] == "close":
    d.shutdown()
sys.exit(0)   # a bare substrate left open is not closed by realfork.api's atexit hook
'''


def test_exit_with_a_kernel_open_removes_it_once_the_process_is_gone() -> None:
    r = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, "open"], capture_output=True,
                       text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    name, upid, created = r.stdout.split()
    try:
        wait_until(lambda: ended(int(upid), float(created)))
        assert leftovers([name]) == []
    finally:
        remove([name])


def test_exit_with_every_kernel_closed_leaves_no_child_behind() -> None:
    """The undertaker has nothing to do: it is killed and reaped at exit,
    before the process is gone (no process, not even a zombie, is left)."""
    r = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, "close"], capture_output=True,
                       text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    name, upid, created = r.stdout.split()
    assert leftovers([name]) == []
    try:
        p = psutil.Process(int(upid))
        assert abs(p.create_time() - float(created)) > 0.01, p.status()
    except psutil.NoSuchProcess:
        pass


# -- never a live kernel, never another file ----------------------------------------------


def test_a_kernel_still_held_at_end_of_file_is_left_alone() -> None:
    dom = Substrate.boot(**SMALL)  # this process holds its liveness lock
    try:
        files = leftovers([dom.name])
        assert len(files) == 65
        u = undertaker.spawn(grace_s=0.2)
        assert u.stdin is not None
        u.stdin.write(f"+{dom.name}\n".encode())
        u.stdin.close()
        assert u.wait() == 1  # still held when its grace ran out: left to the holder
        assert leftovers([dom.name]) == files
        Substrate.attach(dom.name).shutdown()  # and it still works
    finally:
        dom.shutdown()


def test_a_kernel_let_go_of_during_the_grace_is_removed() -> None:
    h, name = holder()
    try:
        u = undertaker.spawn(grace_s=600)  # it waits as long as the test lasts
        assert u.stdin is not None
        u.stdin.write(f"+{name}\n".encode())
        u.stdin.close()
        release(h)  # dies without shutting down: nobody holds the lock any more
        assert u.wait() == 0
        assert leftovers([name]) == []
    finally:
        release(h)
        remove([name])


def test_a_kernel_closed_is_forgotten() -> None:
    """Told +NAME then -NAME, it has nothing to wait for: it ends at once with
    status 0 (a name it still knew, held here, would make it wait and end 1).
    (A stale kernel would not do: any boot on this machine may reap it.)"""
    dom = Substrate.boot(**SMALL)
    try:
        u = undertaker.spawn(grace_s=600)
        assert u.stdin is not None
        u.stdin.write(f"+{dom.name}\nnoise\n+realfork-../etc\n-{dom.name}\n".encode())
        u.stdin.close()
        assert u.wait() == 0
        assert len(leftovers([dom.name])) == 65
    finally:
        dom.shutdown()


def test_lines_read() -> None:
    r, w = os.pipe()
    a, b = "realfork-" + "a" * 24, "realfork-" + "b" * 24
    os.write(w, f"+{a}\n+{b}\n-{a}\n+realfork-{'c' * 23}\n+../{b}\n{b}\n-".encode()
             + b"\xff" * 300 + f"\n+{a}".encode())  # the last line unterminated
    os.close(w)
    try:
        assert list(undertaker.read_names(r)) == [b, a]
    finally:
        os.close(r)


def test_only_this_users_regular_files_of_that_kernel_are_removed(tmp_path: Path) -> None:
    name = "realfork-" + os.urandom(12).hex()
    other = "realfork-" + os.urandom(12).hex()
    target = tmp_path / "target"
    target.write_text("keep")
    seg_link = os.path.join(SHM_DIR, name)  # the segment: a link
    sem_link = os.path.join(SHM_DIR, f"sem.{name}-tc-{os.urandom(16).hex()}")
    sem_file = os.path.join(SHM_DIR, f"sem.{name}-tc-{os.urandom(16).hex()}")
    others = [os.path.join(SHM_DIR, f"sem.{other}-tc-{os.urandom(16).hex()}"),
              os.path.join(SHM_DIR, f"sem.{name}-tc-short"),
              os.path.join(SHM_DIR, f"{name}.bak")]
    made = [seg_link, sem_link, sem_file, *others]
    try:
        os.symlink(target, seg_link)
        os.symlink(target, sem_link)
        for path in [sem_file, *others]:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        u = undertaker.spawn(grace_s=0.2)
        assert u.stdin is not None
        u.stdin.write(f"+{name}\n".encode())
        u.stdin.close()
        assert u.wait() == 0
        assert not os.path.lexists(sem_file)  # the kernel's own chain lock
        assert os.path.islink(seg_link) and os.path.islink(sem_link)  # links: untouched
        assert target.read_text() == "keep"
        assert all(os.path.exists(p) for p in others)
    finally:
        for path in made:
            if os.path.lexists(path):
                os.unlink(path)


# -- the supervisor's side ---------------------------------------------------------------


FAIL_SCRIPT = r'''
import subprocess, sys

def refuse(*args, **kw):
    raise PermissionError(13, "Permission denied")

if sys.argv[1] == "refuse":
    subprocess.Popen = refuse
import realfork
from realfork.shm import undertaker

with realfork.boot(backend="threads") as s:
    status = s.run("main: exit 3\n").status
with realfork.boot(backend="threads") as s:  # not tried again
    pass
st = undertaker.status()
print(status, st["pid"], st["starts"], st["why_not"], flush=True)
'''


@pytest.mark.parametrize("how", ["refuse", "off"])
def test_an_undertaker_that_cannot_start_does_not_fail_a_boot(how: str) -> None:
    env = dict(ENV, REALFORK_UNDERTAKER="off") if how == "off" else ENV
    r = subprocess.run([sys.executable, "-c", FAIL_SCRIPT, how], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr
    status, pid, starts, why = r.stdout.strip().split(" ", 3)
    assert (status, pid, starts) == ("3", "0", "0")
    assert why == ("could not start it: PermissionError: [Errno 13] Permission denied"
                   if how == "refuse" else "switched off (REALFORK_UNDERTAKER=off)")


FORK_SCRIPT = r'''
import os, sys
from realfork.shm import undertaker
from realfork.sync.domain import Substrate

def holds(pipe):
    return any(os.readlink(f"/proc/self/fd/{f}") == pipe for f in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{f}"))

d = Substrate.boot(maxlwps=4, nsync=8, probe_capacity=16)
pid = undertaker.status()["pid"]
pipe = os.readlink(f"/proc/{pid}/fd/0")
r, w = os.pipe()
child = os.fork()
if child == 0:
    undertaker.booted("realfork-" + "ab" * 12)  # writes nothing, starts nothing
    undertaker.closed(d.name)
    st = undertaker.status()
    os.write(w, f"{holds(pipe)} {st['pid']} {st['kernels']} {st['why_not']}".encode())
    os._exit(0)
os.close(w)
os.waitpid(child, 0)
print(holds(pipe), os.read(r, 1000).decode(), undertaker.status()["kernels"] == [d.name])
d.shutdown()
'''


def test_a_forked_child_neither_holds_nor_uses_the_pipe() -> None:
    r = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True,
                       env=ENV)
    assert r.returncode == 0, r.stderr
    # the parent holds the pipe; the child neither holds it nor knows a kernel
    assert r.stdout.startswith("True False 0 [] forked from pid "), r.stdout
    assert r.stdout.strip().endswith(", whose it is True"), r.stdout  # the parent's: untouched


LOST_SCRIPT = r'''
import os, signal, sys, time
import psutil
from realfork.shm import undertaker
from realfork.sync.domain import Substrate

a = Substrate.boot(maxlwps=4, nsync=8, probe_capacity=16)
first = undertaker.status()["pid"]
os.kill(first, signal.SIGKILL)
while psutil.Process(first).status() != psutil.STATUS_ZOMBIE:
    time.sleep(0.01)
b = Substrate.boot(maxlwps=4, nsync=8, probe_capacity=16)  # finds no reader: starts another
st = undertaker.status()
pid = st["pid"]
print(a.name, b.name, first, pid, st["starts"], psutil.Process(pid).create_time(), flush=True)
sys.stdin.read()
'''


def test_an_undertaker_lost_is_replaced_and_told_every_open_kernel() -> None:
    p = subprocess.Popen([sys.executable, "-c", LOST_SCRIPT], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    assert p.stdout is not None
    a = b = ""
    try:
        line = p.stdout.readline()
        assert line, p.communicate()[1] if p.poll() is not None else "no output"
        a, b, first, pid, starts, created = line.split()
        assert first != pid and starts == "2"
        assert not psutil.pid_exists(int(first)) or \
            psutil.Process(int(first)).ppid() != p.pid  # the dead one was reaped
        p.kill()
        p.wait()
        wait_until(lambda: ended(int(pid), float(created)))
        assert leftovers([a, b]) == []
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        remove([a, b])


def test_names_are_those_segments_get() -> None:
    dom = Substrate.boot(**SMALL)
    try:
        assert undertaker.NAME_RE.fullmatch(dom.name)
        st = undertaker.status()
        if st["pid"]:  # this process's own undertaker knows it
            assert dom.name in st["kernels"]
    finally:
        dom.shutdown()
    assert dom.name not in undertaker.status()["kernels"]
