"""The shared-memory substrate against other users and other namespaces, and
after close: planted semaphore names, kernels whose creator's pid means
nothing here, stale reaping, and reads of a closed kernel's memory.

Every file these tests plant in /dev/shm is removed by the test; the only
kernels they touch are their own (other people's live kernels share
/dev/shm while they run).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import leftovers
from realfork.errors import ResourceError
from realfork.shm import libc
from realfork.shm.segment import SHM_DIR, Segment, SegmentHeader, segment_path
from realfork.sync.domain import Substrate, reap_stale_segments

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
SMALL = {"maxlwps": 4, "nsync": 8, "probe_capacity": 16}


def _plant(path: str, planted: list[str]) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError:
        return
    os.close(fd)
    planted.append(path)


def _creator_pid(name: str) -> int:
    """The creator pid in a segment's header as it is now (0: not written yet)."""
    try:
        with open(segment_path(name), "rb") as f:
            f.seek(SegmentHeader.creator_pid.offset)
            return int.from_bytes(f.read(4), "little", signed=True)
    except OSError:
        return -1


class Attacker:
    """Plants every semaphore name it can predict for each new kernel of this
    process: ``sem.<segment>.tc0..63`` (names derived from the segment name),
    and for every chain-lock file it sees, the same name with another index
    suffix.  It polls /dev/shm in a thread; ``strike`` runs one pass at once
    (the attacker at its fastest).  Other processes' kernels are left alone."""

    def __init__(self) -> None:
        self.planted: list[str] = []
        self.planted_set: set[str] = set()
        self.struck: set[str] = set()  # lock files already used as models
        self.mine: set[str] = set()
        self.seen: set[str] = set(os.listdir(SHM_DIR))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, name="attacker", daemon=True)
        self._lock = threading.Lock()

    def _poll(self) -> None:
        while not self.stop.is_set():
            self.strike()

    def strike(self, name: str | None = None) -> None:
        with self._lock:
            if name:
                self.mine.add(name)
            for f in os.listdir(SHM_DIR):
                if f.startswith("realfork-") and f not in self.seen and f not in self.mine:
                    pid = _creator_pid(f)
                    if pid == os.getpid():
                        self.mine.add(f)
                    elif pid != 0:
                        self.seen.add(f)  # someone else's kernel: never touched
            for seg in self.mine:
                for i in range(64):
                    _plant(os.path.join(SHM_DIR, f"sem.{seg}.tc{i}"), self.planted)
            for f in os.listdir(SHM_DIR):
                # each real lock file once: never the attacker's own plants, whose
                # stems would breed more plants on every pass (thousands of files
                # walked on every pass made a boot wait minutes for the lock)
                if (f.startswith("sem.") and f not in self.struck
                        and os.path.join(SHM_DIR, f) not in self.planted_set
                        and any(seg in f for seg in self.mine)):
                    self.struck.add(f)
                    stem = f.rstrip("0123456789")
                    for i in range(64):
                        _plant(os.path.join(SHM_DIR, f"{stem}{i}"), self.planted)
                    self.planted_set.update(self.planted)

    def clean(self) -> None:
        for p in self.planted:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


@pytest.fixture
def attacker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Attacker]:
    a = Attacker()
    real_create = Segment.create.__func__  # type: ignore[attr-defined]

    def create_then_strike(cls: type[Segment], *args: object, **kw: object) -> Segment:
        seg = real_create(cls, *args, **kw)
        a.strike(seg.name)  # the segment is visible: plant before anything else is made
        return seg

    monkeypatch.setattr(Segment, "create", classmethod(create_then_strike))
    a.thread.start()
    try:
        yield a
    finally:
        a.stop.set()
        a.thread.join()
        a.clean()


# -- planted semaphore names ----------------------------------------------------------


def test_planted_semaphore_names_do_not_deny_a_boot(attacker: Attacker) -> None:
    booted = 0
    for _ in range(10):
        dom = Substrate.boot(**SMALL)
        try:
            booted += 1
            with dom.chains.chain(0):
                pass
        finally:
            dom.shutdown()
    assert booted == 10
    assert len(attacker.planted) >= 10 * 64  # the attack did fire, every time


def _chain_secrets(monkeypatch: pytest.MonkeyPatch, chosen: list[bytes]) -> None:
    """The chain locks' next secrets are ``chosen`` (then random ones); nothing else changes."""
    import types

    from realfork.shm import turnstile

    it = iter(chosen)
    monkeypatch.setattr(turnstile, "secrets", types.SimpleNamespace(
        token_bytes=lambda n: next(it, None) or os.urandom(n)))


def _after_segment_create(monkeypatch: pytest.MonkeyPatch, act: Callable[[str], None]) -> None:
    """Call ``act(segment name)`` as soon as a segment exists, before its chain locks do."""
    real_create = Segment.create.__func__  # type: ignore[attr-defined]

    def create_then_act(cls: type[Segment], *args: object, **kw: object) -> Segment:
        seg = real_create(cls, *args, **kw)
        act(seg.name)
        return seg

    monkeypatch.setattr(Segment, "create", classmethod(create_then_act))


def test_chain_locks_are_made_again_under_fresh_names_when_one_is_taken(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from realfork.shm import turnstile

    first = b"\x01" * 32
    _chain_secrets(monkeypatch, [first])
    planted: list[str] = []
    names: list[str] = []

    def plant(seg_name: str) -> None:  # a lucky attacker: the first secret's 8th name
        names.extend(turnstile.chain_names(seg_name, first))
        _plant(os.path.join(SHM_DIR, "sem." + names[7]), planted)

    _after_segment_create(monkeypatch, plant)
    try:
        dom = Substrate.boot(**SMALL)
        try:
            assert planted, "the attack did not fire"
            assert dom.seg.chain_secret != first
            assert dom.chains.names == turnstile.chain_names(dom.name, dom.seg.chain_secret)
            other = Substrate.attach(dom.name)  # attachers find them from the header
            other.shutdown()
        finally:
            dom.shutdown()
        # the names of the abandoned first try were removed, except the planted one
        assert [n for n in names if os.path.exists(os.path.join(SHM_DIR, "sem." + n))] == \
            [names[7]]
    finally:
        for p in planted:
            os.unlink(p)


CHILD_ALL_TAKEN = r"""
import os, sys, types
from realfork.shm import turnstile
from realfork.shm.segment import Segment
secret = b"\x02" * 32
turnstile.secrets = types.SimpleNamespace(token_bytes=lambda n: secret)
planted = []
real_create = Segment.create.__func__
def create_then_plant(cls, *args, **kw):
    seg = real_create(cls, *args, **kw)
    path = "/dev/shm/sem." + turnstile.chain_names(seg.name, secret)[3]
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    planted.append(path)
    return seg
Segment.create = classmethod(create_then_plant)
try:
    from realfork.cli import main
    code = main(["run", sys.argv[1]])
finally:
    for path in planted:
        os.unlink(path)
from realfork.sync.domain import CREATED_HERE
print(" ".join(CREATED_HERE), file=sys.stdout)
sys.exit(code)
"""


def test_names_taken_on_every_try_is_one_line_resource_error(tmp_path: Path) -> None:
    prog = tmp_path / "p.rf"
    prog.write_text("main:\n    exit 0\n")
    r = subprocess.run([sys.executable, "-c", CHILD_ALL_TAKEN, str(prog)], env=ENV,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr  # EXIT_RESOURCES
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "chain locks" in r.stderr and "4 times" in r.stderr
    names = r.stdout.split()
    assert names and leftovers(names) == []  # the half-made segment was removed


def test_all_names_taken_raises_resource_error_in_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from realfork.shm import turnstile

    secret = b"\x03" * 32
    _chain_secrets(monkeypatch, [secret] * 8)
    planted: list[str] = []
    _after_segment_create(monkeypatch, lambda seg_name: _plant(
        os.path.join(SHM_DIR, "sem." + turnstile.chain_names(seg_name, secret)[63]), planted))
    try:
        with pytest.raises(ResourceError) as e:
            Substrate.boot(**SMALL)
        assert "\n" not in str(e.value)
        assert planted
    finally:
        for p in planted:
            os.unlink(p)


# -- liveness across PID namespaces, stale reaping -----------------------------------


def _absent_pid() -> int:
    import psutil

    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) - 1
    while psutil.pid_exists(pid):
        pid -= 1
    return pid


PRIVATE_SHM = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               'mount -t tmpfs -o mode=1777 tmpfs /dev/shm && exec "$@"', "sh"]


def run_scenario(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new Python process, with a /dev/shm of its own when
    ``unshare --mount`` works: a kernel whose pid means nothing here is what
    an older realfork on this machine (which judges by pid) would delete,
    and that would be its bug, not the one under test."""
    cmd = [sys.executable, "-c", code, *args]
    if shutil.which("unshare") and subprocess.run(
            [*PRIVATE_SHM, "true"], capture_output=True, timeout=30).returncode == 0:
        cmd = [*PRIVATE_SHM, *cmd]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=90)


SCENARIO_FOREIGN_PID = r"""
import contextlib, io, os, sys
import psutil
from realfork.cli import main
from realfork.shm.turnstile import chain_files
from realfork.sync.domain import Substrate, reap_stale_segments
from realfork.top.snapshot import running_kernels

with open("/proc/sys/kernel/pid_max") as f:
    absent = int(f.read()) - 1
while psutil.pid_exists(absent):
    absent -= 1
dom = Substrate.boot(maxlwps=4, nsync=8, probe_capacity=16)
files = [dom.name, *chain_files(dom.name)]
h = dom.seg.header
h.creator_pid, h.creator_start = absent, 12345.0  # as another namespace's pid looks here
assert dom.name not in reap_stale_segments(), "reaped"
assert all(os.path.exists("/dev/shm/" + f) for f in files), "files removed"
other = Substrate.attach(dom.name)
other.shutdown()
assert dom.name in [n for n, _t in running_kernels()], "top does not find it"
out = io.StringIO()
with contextlib.redirect_stdout(out):
    assert main(["list"]) == 0
line = [ln for ln in out.getvalue().splitlines() if dom.name in ln]
assert line and line[0].endswith("running"), out.getvalue()
dom.shutdown()
assert not any(os.path.exists("/dev/shm/" + f) for f in files), "left behind"
print("ok", len(files))
"""


def test_live_kernel_whose_creator_pid_means_nothing_here_is_not_reaped() -> None:
    """A creator in another PID namespace records a pid that, here, is no
    process at all: the reaper keeps it, attach, top and list see it running."""
    r = run_scenario(SCENARIO_FOREIGN_PID)
    assert r.returncode == 0, r.stderr[-800:]
    assert r.stdout.split() == ["ok", "65"]


CHILD_KILLED = r"""
import os, signal
from realfork.shm.turnstile import chain_files
from realfork.sync.domain import Substrate
d = Substrate.boot(maxlwps=4, nsync=8, probe_capacity=16)
print(d.name, *chain_files(d.name), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_segment_of_a_sigkilled_creator_is_reaped_even_if_its_pid_is_reused() -> None:
    import psutil

    # with no undertaker, which would remove it before the reaper could
    r = subprocess.run([sys.executable, "-c", CHILD_KILLED],
                       env=dict(ENV, REALFORK_UNDERTAKER="0"), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == -signal.SIGKILL
    name, *chains = r.stdout.split()
    try:
        assert len(chains) == 64
        # its pid now names a live process started then: this one
        seg = Segment.attach(name)
        try:
            seg.header.creator_pid = os.getpid()
            seg.header.creator_start = psutil.Process().create_time()
        finally:
            seg.unmap()
        assert name in reap_stale_segments()
        assert not any(os.path.exists(os.path.join(SHM_DIR, f)) for f in [name, *chains])
    finally:
        for f in [name, *chains]:
            if os.path.exists(os.path.join(SHM_DIR, f)):
                os.unlink(os.path.join(SHM_DIR, f))


def test_segment_being_created_is_never_reaped_and_an_abandoned_one_is() -> None:
    from realfork.shm.segment import hold_alive_lock

    made = []
    try:
        for tag in ("ee", "ef"):
            path = segment_path("realfork-" + tag * 12)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            made.append((path, fd))
            os.utime(path, (time.time() - 600, time.time() - 600))  # ten minutes old
        hold_alive_lock(made[0][1])  # its creator is still writing it: no magic yet
        os.close(made[1][1])  # its creator gave up long ago
        removed = reap_stale_segments()
        assert os.path.basename(made[0][0]) not in removed
        assert os.path.exists(made[0][0])
        assert os.path.basename(made[1][0]) in removed
        assert not os.path.exists(made[1][0])
    finally:
        for path, _fd in made:
            if os.path.exists(path):
                os.unlink(path)
        os.close(made[0][1])


def test_orphaned_chain_locks_are_reaped_and_a_live_kernels_are_kept() -> None:
    from _multiprocessing import SemLock

    from realfork.shm import turnstile

    old = time.time() - 600
    orphan = turnstile.chain_names("realfork-" + os.urandom(12).hex(), os.urandom(32))[:2]
    for n in orphan:
        SemLock(1, 1, 1, "/" + n, False)  # closed at once: only the name stays
        os.utime(os.path.join(SHM_DIR, "sem." + n), (old, old))
    dom = Substrate.boot(**SMALL)
    try:
        mine = turnstile.chain_files(dom.name)
        for f in mine:
            os.utime(os.path.join(SHM_DIR, f), (old, old))
        reap_stale_segments()
        assert all(os.path.exists(os.path.join(SHM_DIR, f)) for f in mine)
        assert not any(os.path.exists(os.path.join(SHM_DIR, "sem." + n)) for n in orphan)
    finally:
        dom.shutdown()
        for n in orphan:
            try:
                os.unlink(os.path.join(SHM_DIR, "sem." + n))
            except FileNotFoundError:
                pass


CHILD_NS = r"""
import os, sys
from realfork.shm.turnstile import chain_files
from realfork.sync.domain import Substrate
d = Substrate.boot(maxlwps=4, nsync=8, probe_capacity=16)
print(os.getpid(), d.name, *chain_files(d.name), flush=True)
sys.stdin.readline()
d.shutdown()
print("closed", flush=True)
"""

SCENARIO_NS = r"""
import os, subprocess, sys
from realfork.sync.domain import Substrate, reap_stale_segments
p = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
                      sys.argv[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
try:
    pid, name, *chains = p.stdout.readline().split()
    files = [name, *chains]
    assert int(pid) == 1 and len(chains) == 64, (pid, len(chains))
    assert os.getpid() != 1
    assert name not in reap_stale_segments(), "reaped"
    assert all(os.path.exists("/dev/shm/" + f) for f in files), "files removed"
    other = Substrate.attach(name)
    assert other.seg.header.creator_pid == 1 and not other.panicked
    other.shutdown()
    p.stdin.write("\n")
    p.stdin.flush()
    assert p.stdout.readline().strip() == "closed"
    assert p.wait(30) == 0
    assert not any(os.path.exists("/dev/shm/" + f) for f in files), "left behind"
finally:
    if p.poll() is None:
        p.kill()
        p.wait()
print("ok")
"""


def test_kernel_booted_in_another_pid_namespace_is_not_reaped() -> None:
    """A real PID namespace (``unshare --pid --fork --mount-proc``): its
    creator is pid 1 there, and pid 1 here is another process."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) is not installed")
    probe = subprocess.run([unshare, "--pid", "--fork", "--mount-proc", "true"],
                           capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"unshare --pid does not work here: {probe.stderr.decode().strip()}")
    r = run_scenario(SCENARIO_NS, CHILD_NS)
    assert r.returncode == 0, r.stderr[-800:]
    assert r.stdout.strip() == "ok"


# -- a closed kernel's memory --------------------------------------------------------


CHILD_READ_CLOSED = r"""
import ctypes, json
from realfork.errors import KernelPanic
from realfork.shm.segment import Segment, SegmentHeader
from realfork.sync.domain import Substrate
d = Substrate.boot(maxlwps=4, nsync=8, probe_capacity=16)
g, slots, hdr = d.g, d.kthreads.slots, d.seg.header
addr = d.seg.addr
try:
    d.panic("on purpose")
except KernelPanic:
    pass
d.shutdown()
out = {
    "stale_g_timeout": g.deadlock_timeout_ns,  # a view made before close
    "stale_slot": slots[0].t_state,
    "raw": SegmentHeader.from_address(addr).size,  # a raw address into it
    "panicked": d.panicked,  # the values kept at close
    "kept_timeout": d.g.deadlock_timeout_ns,
    "kept_size": d.seg.header.size,
}
ctypes.memset(addr, 0xff, 64)  # writes land in private pages, no fault either
print(json.dumps(out))
"""


def test_reading_a_closed_kernels_memory_gives_zeros_not_a_crash() -> None:
    r = subprocess.run([sys.executable, "-c", CHILD_READ_CLOSED], env=ENV,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-500:]}"
    out = json.loads(r.stdout)
    assert out["stale_g_timeout"] == 0 and out["stale_slot"] == 0 and out["raw"] == 0
    assert out["panicked"] is True
    assert out["kept_timeout"] == 10 * 10**9 and out["kept_size"] > 0


def _mapping(addr: int) -> dict[str, str]:
    """The /proc/self/smaps entry of the mapping containing ``addr`` ({} if none).
    (A retired range may have merged with an anonymous neighbour.)"""
    entry: dict[str, str] = {}
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                if entry:
                    return entry
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                if lo <= addr < hi:
                    entry = {"path": head[5] if len(head) > 5 else ""}
            elif entry:
                entry[head[0].rstrip(":")] = head[1]
    return entry


def _is_mapped(addr: int, size: int) -> bool:
    """Is every page of [addr, addr+size) mapped?  (mincore fails with ENOMEM if not)"""
    pages = (size + 4095) // 4096
    vec = (ctypes.c_ubyte * pages)()
    mincore = libc.libc.mincore
    mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    return mincore(addr, pages * 4096, vec) == 0


def _resident_pages(addr: int, size: int) -> int:
    """How many pages of [addr, addr+size) are in memory (mincore)."""
    pages = (size + 4095) // 4096
    vec = (ctypes.c_ubyte * pages)()
    mincore = libc.libc.mincore
    mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    assert mincore(addr, pages * 4096, vec) == 0
    return sum(v & 1 for v in vec)


def test_a_retired_segment_keeps_address_space_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libc, "RETIRED", [])
    dom = Substrate.boot(maxlwps=2000, nsync=20000)
    addr, size = dom.seg.addr, dom.seg.size
    live = _mapping(addr)
    assert live["path"] == segment_path(dom.name)
    assert _resident_pages(addr, size) > 0  # the measure sees the live segment's pages
    dom.shutdown()
    gone = _mapping(addr)
    assert gone["path"] == ""  # anonymous: the shared pages are no longer mapped here
    assert int(gone["Size"]) * 1024 >= size  # (it may have merged with a neighbour)
    assert _resident_pages(addr, size) == 0  # and it costs no memory
    assert libc.RETIRED == [(addr, size)]


def test_retired_ranges_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libc, "RETIRED", [])
    monkeypatch.setattr(libc, "RETIRED_MAX_RANGES", 2)
    ranges = []
    for _ in range(3):
        dom = Substrate.boot(**SMALL)
        ranges.append((dom.seg.addr, dom.seg.size))
        dom.shutdown()
    assert not _is_mapped(*ranges[0])  # the oldest was really unmapped
    assert libc.RETIRED == ranges[1:]
    assert all(_is_mapped(*r) and _mapping(r[0])["path"] == "" for r in ranges[1:])


# -- booting, and an older realfork's segments ------------------------------------------


def test_attach_waits_while_the_creator_is_booting_the_segment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from realfork.errors import BadInput
    from realfork.shm import segment
    from realfork.shm.segment import Layout

    layout = Layout()
    layout.add("w", ctypes.c_int64, 8)
    seg = Segment.create(layout)  # locked, not yet published
    waits: list[float] = []
    try:
        def publish_on_first_wait(s: float) -> None:
            waits.append(s)
            seg.publish()  # the creator finishes while the attacher waits

        monkeypatch.setattr(segment.time, "sleep", publish_on_first_wait)
        other = Segment.attach(seg.name)
        other.unmap()
        assert len(waits) == 1
    finally:
        seg.unlink()
        seg.unmap()
    monkeypatch.setattr(segment.time, "sleep", lambda s: None)
    monkeypatch.setattr(segment, "BOOT_WAIT_S", 0.0)
    seg = Segment.create(layout)
    try:
        with pytest.raises(BadInput, match="not yet booted") as e:
            Segment.attach(seg.name)  # never published in time
        assert "\n" not in str(e.value)
    finally:
        seg.unlink()
        seg.unmap()


def test_an_older_realforks_segment_is_judged_by_its_pid_and_never_attached() -> None:
    import psutil

    from realfork.errors import BadInput
    from realfork.shm.segment import HEADER_SIZE, MAGIC

    path = segment_path("realfork-" + "ed" * 12)
    h = SegmentHeader()
    h.magic, h.size = MAGIC, 2 * HEADER_SIZE
    h.creator_pid, h.creator_start = os.getpid(), psutil.Process().create_time()
    try:
        with open(path, "xb") as f:  # as an older realfork lays it out: no liveness marker
            f.write(bytes(h).ljust(2 * HEADER_SIZE, b"\0"))
        os.chmod(path, 0o600)
        with pytest.raises(BadInput, match="older version") as e:
            Segment.attach(os.path.basename(path))
        assert "\n" not in str(e.value)
        assert os.path.basename(path) not in reap_stale_segments()  # its creator runs
        with open(path, "r+b") as f:
            f.seek(SegmentHeader.creator_pid.offset)
            f.write(_absent_pid().to_bytes(4, "little"))
        assert os.path.basename(path) in reap_stale_segments()
        assert not os.path.exists(path)
    finally:
        if os.path.exists(path):
            os.unlink(path)


def test_discovery_and_list_read_headers_without_mapping_segments(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``realfork top`` looks for kernels at every refresh: attaching each
    one would retire a segment-sized range of address space every time."""
    from realfork.cli import main
    from realfork.top.snapshot import running_kernels

    monkeypatch.setattr(libc, "RETIRED", [])
    mapped: list[int] = []
    real_map = libc.map_shared
    monkeypatch.setattr(libc, "map_shared", lambda fd, size: mapped.append(size) or
                        real_map(fd, size))
    with Substrate.boot(**SMALL) as dom:
        mapped.clear()
        assert dom.name in [n for n, _t in running_kernels()]
        capsys.readouterr()
        assert main(["list"]) == 0
        assert dom.name in capsys.readouterr().out
        assert mapped == [] and libc.RETIRED == []
