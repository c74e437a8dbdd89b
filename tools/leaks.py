"""What each way of ending a realfork program leaves behind (a measurement, not a test).

    PYTHONPATH=. python tools/leaks.py [--backend threads|processes] [--only PATH]

Each exit path runs in a fresh Python process (the "supervisor") that boots one
kernel and reports, into a file, the kernel's name and its OS child processes
(the processes backend's fork server and hosts).  After the supervisor is gone
the tool counts, for that kernel only (others' kernels share /dev/shm):

* segments: /dev/shm/<name> still there;
* semaphores: /dev/shm/sem.<name>-tc-<hash> (or an older realfork's
  sem.<name>.N) still there (a kernel has 64);
* processes: the supervisor's children still running (its undertaker apart:
  see below);
* threads: kernel threads ("realfork*") still alive in the supervisor when it
  went on after the kernel (close, an exception out of ``with``, a panic, the
  rest of a pytest session) or at the very end of its interpreter (sys.exit,
  an uncaught exception, SIGINT: an atexit hook registered before realfork's
  runs last); "-" when the process was killed and has no end to report from.

SIGKILL (and SIGTERM, whose default action is the same for Python) skips every
cleanup in the supervisor.  Whatever is left right after the exit is counted
again once the helpers are done: the supervisor's undertaker
(realfork.shm.undertaker, which removes its kernels once its pipe reaches
end-of-file) has exited, and on the processes backend the fork server and its
hosts too (it kills its hosts and removes the names when the supervisor's pipe
closes); how long that took is shown.  If anything is still left, it is
counted once more after the next boot (which removes segments whose creator is
gone).  The tool also runs on a realfork without an undertaker.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from typing import NoReturn

import psutil

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPIN = "main:\nloop: jmp loop\n"
HANG = "getpid\n prstopfork rv, 1\n fork1\n beq rv, 0, child\n exit 0\nchild:\n exit 0\n"

# The prologue of every supervisor: an atexit hook registered before realfork
# is imported (so it runs after realfork's own) records the kernel threads
# still alive when the interpreter ends.
PROLOGUE = '''
import atexit, json, os, sys, threading, time
OUT = os.environ["LEAKS_OUT"]

def note(**kw):
    with open(OUT, "a") as f:
        f.write(json.dumps(kw) + "\\n")

def kernel_threads():
    return sum(1 for t in threading.enumerate() if t.name.startswith("realfork"))

atexit.register(lambda: note(threads_at_exit=kernel_threads()))

import psutil, realfork

def undertaker():
    try:
        from realfork.shm.undertaker import status
    except ImportError:  # a realfork without one
        return [0, 0.0]
    pid = status()["pid"]
    return [pid, psutil.Process(pid).create_time() if pid else 0.0]

def booted(system):
    u = undertaker()
    kids = [[p.pid, p.create_time()] for p in psutil.Process().children(recursive=True)
            if p.pid != u[0]]
    note(name=system.name, kids=kids, undertaker=u)
    return system

BACKEND = sys.argv[1]
'''

PATHS: dict[str, str] = {
    "close": '''
        with booted(realfork.boot(backend=BACKEND)) as s:
            s.run("main: exit 0\\n")
        note(threads_after=kernel_threads())
    ''',
    "exception in with": '''
        try:
            with booted(realfork.boot(backend=BACKEND, deadlock_timeout=600)) as s:
                s.start(SPIN)
                raise RuntimeError("in with")
        except RuntimeError:
            pass
        note(threads_after=kernel_threads())
    ''',
    "panic (hang past the deadline)": '''
        with booted(realfork.boot(backend=BACKEND, deadlock_timeout=1.0)) as s:
            r = s.run(HANG)
            assert r.report is not None
        note(threads_after=kernel_threads())
    ''',
    "sys.exit without close": '''
        s = booted(realfork.boot(backend=BACKEND, deadlock_timeout=600))
        s.start(SPIN)
        sys.exit(0)
    ''',
    "uncaught exception without close": '''
        s = booted(realfork.boot(backend=BACKEND, deadlock_timeout=600))
        s.start(SPIN)
        raise RuntimeError("uncaught")
    ''',
    "SIGINT": '''
        s = booted(realfork.boot(backend=BACKEND, deadlock_timeout=600))
        s.start(SPIN)
        note(ready=1)
        time.sleep(120)
    ''',
    "SIGTERM": '''
        s = booted(realfork.boot(backend=BACKEND, deadlock_timeout=600))
        s.start(SPIN)
        note(ready=1)
        time.sleep(120)
    ''',
    "SIGKILL": '''
        s = booted(realfork.boot(backend=BACKEND, deadlock_timeout=600))
        s.start(SPIN)
        note(ready=1)
        time.sleep(120)
    ''',
}
PATHS["SIGKILL to the process group"] = PATHS["SIGKILL"]  # the fork server and hosts too
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL,
           "SIGKILL to the process group": signal.SIGKILL}

PYTEST_FILE = '''
import json, os, threading, time, psutil, pytest

OUT = os.environ["LEAKS_OUT"]

def note(**kw):
    with open(OUT, "a") as f:
        f.write(json.dumps(kw) + "\\n")

@pytest.mark.timeout(4)
@pytest.mark.realfork(backend={backend!r}, deadlock_timeout=600)
def test_hang(kernel):
    try:
        from realfork.shm.undertaker import status
        pid = status()["pid"]
    except ImportError:
        pid = 0
    u = [pid, psutil.Process(pid).create_time() if pid else 0.0]
    kids = [[p.pid, p.create_time()] for p in psutil.Process().children(recursive=True)
            if p.pid != pid]
    note(name=kernel.name, kids=kids, undertaker=u)
    threading.Thread(target=kernel.run, args=({spin!r},), daemon=True).start()
    time.sleep(60)   # the test hangs outside the kernel: pytest-timeout fires

def test_after():
    note(threads_after=sum(1 for t in threading.enumerate()
                           if t.name.startswith("realfork")))
'''


@dataclass
class Leftovers:
    segments: int
    semaphores: int
    processes: int

    def __str__(self) -> str:
        return f"{self.segments} seg, {self.semaphores} sem, {self.processes} proc"


def count(name: str, kids: list[list[float]]) -> Leftovers:
    shm = os.listdir("/dev/shm")
    segs = sum(1 for n in shm if n == name)
    sems = sum(1 for n in shm if n.startswith((f"sem.{name}-tc-", f"sem.{name}.")))
    alive = 0
    for pid, created in kids:
        try:
            p = psutil.Process(int(pid))
            if abs(p.create_time() - created) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
                alive += 1
        except psutil.NoSuchProcess:
            pass
    return Leftovers(segs, sems, alive)


def read_notes(path: str) -> dict:
    out: dict = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                out.update(json.loads(line))
    return out


def wait_for(path: str, key: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while key not in read_notes(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"leaks: the supervisor never reported {key!r}")
        time.sleep(0.02)


def next_boot() -> None:
    subprocess.run([sys.executable, "-c", "import realfork; realfork.boot().close()"],
                   check=True, env=_env(), timeout=120)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = HERE + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                else "")
    return env


_RUNS = itertools.count()


def run_path(work: str, path: str, backend: str) -> list[str]:
    """One exit path on one backend; the table's cells."""
    from realfork import safeio

    n = next(_RUNS)
    out = os.path.join(work, f"notes-{n}.jsonl")
    env = _env(LEAKS_OUT=out)
    if path.startswith("pytest-timeout"):
        method = path.split()[-1].strip("()")
        d = safeio.private_dir(os.path.join(work, f"session-{n}"))
        safeio.create_new(os.path.join(d, "test_leak.py"),
                          PYTEST_FILE.format(backend=backend, spin=SPIN).encode())
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "-p", "no:randomly", f"--timeout-method={method}",
                               "test_leak.py"], cwd=d, env=env, capture_output=True,
                              text=True, timeout=300)
        status = proc.returncode
    else:
        code = PROLOGUE + f"SPIN = {SPIN!r}\nHANG = {HANG!r}\n" + textwrap.dedent(PATHS[path])
        script = os.path.join(work, f"supervisor-{n}.py")
        safeio.create_new(script, code.encode())
        if path in SIGNALS:
            group = path.endswith("process group")
            sup = subprocess.Popen([sys.executable, script, backend], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=group)
            wait_for(out, "ready")
            if group:
                os.killpg(sup.pid, SIGNALS[path])
            else:
                sup.send_signal(SIGNALS[path])
            status = sup.wait(120)
        else:
            status = subprocess.run([sys.executable, script, backend], env=env,
                                    capture_output=True, timeout=300).returncode
    notes = read_notes(out)
    name = notes.get("name")
    if not name:
        return [str(status), "no kernel name reported", "", "", ""]
    kids = notes.get("kids", [])
    upid, ucreated = notes.get("undertaker", [0, 0.0])
    then = count(name, kids)
    threads = notes.get("threads_after", notes.get("threads_at_exit", "-"))
    settled = ""
    if then.segments or then.semaphores or then.processes or alive(upid, ucreated):
        # the undertaker removes what is left once its pipe reaches end-of-file;
        # the fork server cleans up once the supervisor's pipe closes
        t0 = time.monotonic()
        while (count(name, kids).processes or alive(upid, ucreated)) \
                and time.monotonic() - t0 < 10:
            time.sleep(0.005)
        settled = f"{count(name, kids)} ({time.monotonic() - t0:.2f} s later)"
    later = ""
    if settled and settled.split(" (")[0] != str(Leftovers(0, 0, 0)):
        next_boot()
        later = str(count(name, kids))
    return [str(status), str(then), str(threads), settled or "-", later or "-"]


def alive(pid: int, created: float) -> bool:
    if not pid:
        return False
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - created) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


ALL_PATHS = [*PATHS, "pytest-timeout (signal)", "pytest-timeout (thread)"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        print(f"leaks: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("threads", "processes"), action="append")
    ap.add_argument("--only", choices=ALL_PATHS, action="append")
    args = ap.parse_args(argv)
    backends = args.backend or ["threads", "processes"]
    paths = args.only or ALL_PATHS
    header = ["exit path", "backend", "exit status", "left right after",
              "threads", "once the undertaker (and fork server) are done",
              "after the next boot"]
    rows = []
    sys.path.insert(0, HERE)
    with tempfile.TemporaryDirectory(prefix="realfork-leaks-") as work:  # mkdtemp: 0700
        for path in paths:
            for backend in backends:
                cells = run_path(work, path, backend)
                rows.append([path, backend, *cells])
                print("  ".join(rows[-1]), file=sys.stderr, flush=True)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
