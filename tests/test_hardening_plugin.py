"""Hardening of the pytest plugin and of ``realfork.System``'s end of life.

* reproducers go to a directory only the tester can write, in files created
  anew under names no other reproducer has: a local user who plants the old
  fixed path (a 0777 directory, a link) redirects nothing;
* no use of a closed (or closing) kernel touches its segment: a watchdog may
  close a kernel while the test's own thread still uses it, and the fixture's
  teardown runs after;
* a script that exits without ``close`` (``sys.exit``, an uncaught exception,
  a kernel nobody refers to any more) leaves nothing in /dev/shm and no host
  process behind, on both backends, and keeps its exit status.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from realfork.user.codec import to_msgpack
from realfork.user.parser import parse

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(300)

SPIN = "main:\nloop: jmp loop\n"
REPRO = "reproduce: realfork run "


def shm_entries(name: str) -> list[str]:
    """This kernel's names in /dev/shm (its segment and its semaphores)."""
    return sorted(n for n in os.listdir("/dev/shm") if name in n)


def reproducers(out: str) -> list[str]:
    """The reproducer paths the report printed."""
    return [ln.split()[-1] for ln in out.splitlines() if ln.startswith(REPRO)]


def assert_private_file(path: str, under: Path) -> None:
    """``path`` is a regular file of ours (0600) in a 0700 directory of ours
    that is not a link, below ``under``."""
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
    assert stat.S_IMODE(st.st_mode) == 0o600
    d = os.path.dirname(path)
    dst = os.lstat(d)
    assert stat.S_ISDIR(dst.st_mode) and dst.st_uid == os.geteuid()
    assert stat.S_IMODE(dst.st_mode) & 0o077 == 0
    assert Path(os.path.realpath(path)).is_relative_to(os.path.realpath(under))


# -- reproducers ------------------------------------------------------------------------


@pytest.mark.parametrize("plant", ["open_dir_with_link", "dir_is_a_link"])
def test_planted_reproducer_path_redirects_nothing(pytester: pytest.Pytester,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path, plant: str) -> None:
    # Another user, sharing the temporary directory, plants what the old
    # plugin would write through: realfork-repro (mode 0777) holding a link at
    # the reproducer's predictable name, or realfork-repro itself a link to a
    # directory of theirs.
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    shared.chmod(0o777)
    victim = tmp_path / "victim"
    victim.write_bytes(b"root's precious file\n")
    theirs = tmp_path / "attacker-dir"
    theirs.mkdir()
    theirs.chmod(0o777)
    planted = shared / "realfork-repro"
    if plant == "open_dir_with_link":
        planted.mkdir()
        planted.chmod(0o777)
        (planted / "test_victim_py__test_fails.rfm").symlink_to(victim)
    else:
        planted.symlink_to(theirs)
    monkeypatch.setenv("TMPDIR", str(shared))
    pytester.makepyfile(test_victim='''
        def test_fails(kernel):
            assert kernel.run("main: exit 4\\n").status == 4
            assert False, "fails on purpose"
    ''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert victim.read_bytes() == b"root's precious file\n"
    assert list(theirs.iterdir()) == []
    if plant == "open_dir_with_link":
        assert os.readlink(planted / "test_victim_py__test_fails.rfm") == str(victim)
    (path,) = reproducers(out)
    assert not os.path.realpath(path).startswith(os.path.realpath(shared))
    assert_private_file(path, pytester.path)
    assert Path(path).read_bytes() == to_msgpack(parse("main: exit 4\n"))


def test_reproducer_names_never_collide(pytester: pytest.Pytester,
                                        monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    # "a-b" and "a_b" make the same file name; each failure keeps its own
    # program, and a second session does not overwrite the first one's.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    pytester.makepyfile(test_twins='''
        import pytest

        @pytest.mark.parametrize("code", [1, 2], ids=["a-b", "a_b"])
        def test_p(kernel, code):
            kernel.run(f"main: exit {code}\\n")
            assert False
    ''')
    programs = {to_msgpack(parse(f"main: exit {c}\n")) for c in (1, 2)}
    runs = []
    for _ in range(2):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
        result.assert_outcomes(failed=2)
        paths = reproducers(result.stdout.str())
        assert len(paths) == 2 and len(set(paths)) == 2
        assert {Path(p).read_bytes() for p in paths} == programs
        for p in paths:
            assert_private_file(p, pytester.path)
        runs.append({p: Path(p).read_bytes() for p in paths})
    assert not set(runs[0]) & set(runs[1])
    assert {p: Path(p).read_bytes() for p in runs[0]} == runs[0]  # still there, unchanged


# -- a kernel closed by the watchdog ------------------------------------------------------


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_thread_timeout_of_a_spinning_program_does_not_crash_pytest(
        pytester: pytest.Pytester, backend: str) -> None:
    # The test's program loops forever; with the thread method the watchdog
    # panics the kernel, prints the wait-for report and closes the kernel
    # while the test still runs.  The test then waits until the segment is
    # unmapped (so the old teardown's read of it crashed every time) and
    # fails: the report hook and the fixture's teardown both run on a closed
    # kernel.
    pytester.makepyfile(test_spin=f'''
        import time, pytest

        @pytest.mark.timeout(6, method="thread")
        @pytest.mark.realfork(backend={backend!r}, deadlock_timeout=600)
        def test_spin(kernel):
            r = kernel.run({SPIN!r})
            assert r.report is not None   # the watchdog's panic ended the run
            while kernel.dom.seg.mapped:  # the watchdog's close unmaps it
                time.sleep(0.01)
            assert False, "failed after the close"
    ''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret not in (-11, 139), out  # SIGSEGV
    assert result.ret >= 0, out  # no other signal either
    assert "realfork wait-for report" in out
    assert "pytest-timeout (6 s) is about to fire" in out
    assert "pid 1 lwp 1" in out
    assert len(reproducers(out)) >= 1  # printed with the report, before the exit
    if "Timeout" not in out:  # the session ended before pytest-timeout's exit
        assert "failed after the close" in out
        result.assert_outcomes(failed=1)
    name = next(ln.split()[1].rstrip(":") for ln in out.splitlines()
                if ln.startswith("kernel realfork-"))
    assert shm_entries(name) == []


def run_script(tmp_path: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ))


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_close_from_another_thread_waits_for_the_call_in_flight(tmp_path: Path,
                                                                backend: str) -> None:
    # A call is inside the segment (held there by a patched probe drain) when
    # another thread closes the kernel: the names go at once, the mapping
    # stays until the call has left, and the call's result is whole.  (In a
    # script: the old code unmapped under the call, which then crashed.)
    r = run_script(tmp_path, '''
        import os, sys, threading
        import realfork, realfork.api
        from realfork.errors import BadInput

        realfork.api.CLOSE_WAIT_S = 0.2   # close stops waiting for the call soon
        system = realfork.boot(backend=sys.argv[1])
        name = system.name
        ring = system.dom.ring
        drain = ring.drain
        inside, release = threading.Event(), threading.Event()

        def held_drain(*a, **k):
            inside.set()
            release.wait(60)
            return drain(*a, **k)

        ring.drain = held_drain
        got = []
        reader = threading.Thread(target=lambda: got.append(system.poll(0)))
        reader.start()
        assert inside.wait(60)
        closer = threading.Thread(target=system.close)
        closer.start()
        closer.join(60)
        assert not closer.is_alive() and system.closed
        if not system.dom.seg.mapped:
            print("unmapped under a call in flight", flush=True)
            os._exit(3)   # releasing the call now would crash
        assert [n for n in os.listdir("/dev/shm") if name in n] == []
        assert not system.running and not system.panicked
        assert system.panic_report() is None and system.counters()["nproc"] >= 1
        try:
            system.poll(0)
        except BadInput as e:
            assert "is closed" in str(e)
        else:
            raise AssertionError("a closed kernel was polled")
        release.set()
        reader.join(60)
        (events,) = got   # the boot's probes, read whole from the segment
        assert events and all(e.name.startswith("proc:::") for e in events), events
        assert not system.dom.seg.mapped   # the call, last out, unmapped it
        print("ok", flush=True)
    ''', backend)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "ok"


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_close_from_another_thread_during_a_run_wakes_the_poll(tmp_path: Path,
                                                               backend: str) -> None:
    # The sched thread sleeps in poll (30 s) on a kernel spinning in user
    # code when another thread closes the kernel: the close wakes it, and
    # the poll, held after its sleep until the close has returned, still
    # reads a mapped segment; leaving last, it ends the run and unmaps.
    # (The old close unmapped under it: the script crashed.)
    r = run_script(tmp_path, f'''
        import os, sys, threading, time
        import realfork, realfork.api
        from realfork.errors import BadInput

        realfork.api.CLOSE_WAIT_S = 0.2
        system = realfork.boot(backend=sys.argv[1], deadlock_timeout=600)
        name = system.name
        system.start({SPIN!r})

        def closer_body():
            while not system.K.run_cv.s.nwaiters:   # until poll sleeps on run_cv
                time.sleep(0.005)
            system.close()

        closer = threading.Thread(target=closer_body)
        ring = system.dom.ring
        drain = ring.drain

        def drain_after_the_close(*a, **k):
            closer.join(60)
            assert not closer.is_alive()
            return drain(*a, **k)

        ring.drain = drain_after_the_close
        closer.start()
        events = system.poll(30)
        assert isinstance(events, list)
        assert system.closed and not system.running
        try:
            system.stop()
        except BadInput as e:
            assert "is closed" in str(e)
        else:
            raise AssertionError("a closed kernel was stopped")
        assert not system.dom.seg.mapped   # the poll, last out, unmapped it
        assert [n for n in os.listdir("/dev/shm") if name in n] == []
        print("ok", flush=True)
    ''', backend)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "ok"


# -- exiting without close ---------------------------------------------------------------


EXIT_SCRIPT = f'''
    import gc, sys, psutil, realfork

    backend, how = sys.argv[1], sys.argv[2]
    system = realfork.boot(backend=backend, deadlock_timeout=600)
    system.start({SPIN!r})        # a run in progress, never stopped
    print(system.name, flush=True)
    kids = psutil.Process().children(recursive=True)
    print(" ".join(f"{{p.pid}}:{{p.create_time()}}" for p in kids), flush=True)
    if how == "exit0":
        sys.exit(0)
    if how == "exit3":
        sys.exit(3)
    if how == "dropped":           # nobody refers to the kernel any more
        del system
        gc.collect()
        sys.exit(0)
    raise RuntimeError("uncaught, on purpose")
'''


def still_running(kids: str) -> list[int]:
    out = []
    for item in kids.split():
        pid, created = item.split(":")
        try:
            p = psutil.Process(int(pid))
            if abs(p.create_time() - float(created)) < 0.01 \
                    and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.parametrize("backend", ["threads", "processes"])
@pytest.mark.parametrize("how,status", [("exit0", 0), ("exit3", 3), ("raise", 1),
                                        ("dropped", 0)])
def test_exit_without_close_leaves_nothing_behind(tmp_path: Path, backend: str, how: str,
                                                  status: int) -> None:
    r = run_script(tmp_path, EXIT_SCRIPT, backend, how)
    assert r.returncode == status, r.stderr
    lines = r.stdout.splitlines()
    name = lines[0]
    assert name.startswith("realfork-")
    assert shm_entries(name) == []
    kids = lines[1] if len(lines) > 1 else ""
    if backend == "processes":
        assert kids  # the fork server and its hosts
    assert still_running(kids) == []
    if how == "raise":
        assert "RuntimeError: uncaught, on purpose" in r.stderr
        assert "closing kernel" not in r.stderr
    else:
        assert r.stderr == ""


def test_open_kernels_lists_only_unclosed_ones() -> None:
    import realfork
    from realfork.api import open_kernels

    a = realfork.boot(backend="threads")
    b = realfork.boot(backend="threads")
    try:
        assert {a.name, b.name} <= set(open_kernels())
        a.close()
        assert a.name not in open_kernels() and b.name in open_kernels()
    finally:
        a.close()
        b.close()
    assert b.name not in open_kernels()
