"""``realfork top`` and the stress run report, against live kernels.

The dashboard is driven headlessly (rich rendered into a string) and what it
shows is checked against the kernel's own tables and psutil; ``--once --json``
field by field; a kernel that does not exist, or is another user's, is one
clear line and exit status 2; the HTML report is one self-contained file.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psutil
import pytest
from rich.console import Console

import realfork
from realfork.cli import main
from realfork.errors import BadInput
from realfork.kernel.structs import PFLAG_NAMES, STAT_NAMES, SVFORK, SVFWAIT
from realfork.top import snapshot as snapmod
from realfork.top.dashboard import render, snapshot_once, watch
from realfork.top.snapshot import Observer, pick_kernel, sort_processes

# init vforks a child that sleeps (init waits in vfwait: SVFWAIT, the child
# SVFORK) after forking one with two sleeping lwps: a steady table to check.
STEADY = """
    fork1
    beq rv, 0, child
    vfork
    beq rv, 0, vchild
    wait
    wait
    exit 0
vchild:
    sleep 40000
    exit 0
child:
    lwp_create t2
    sleep 40000
    exit 0
t2:
    sleep 40000
    lwp_exit
"""

FORK_LOOP = """
loop:
    fork1
    beq rv, 0, child
    wait
    jmp loop
child:
    exit 0
"""

# PID PPID STATE LWPS HOST CPU% RSS THR VCSW NVCSW FLAGS [LWP:CPU% ...]
ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(S[A-Z]+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+"
                 r"(\S+)\s+(\S+)\s+(\S+)")


def _steady_ready(system: realfork.api.System) -> bool:
    K = system.K
    procs = [K.procs.slots[i] for i in K.procs.used()]
    flags = {p.p_pid: p.p_flag for p in procs}
    lwps = {p.p_pid: p.p_lwpcnt for p in procs}
    return (any(f & SVFORK for f in flags.values()) and flags.get(1, 0) & SVFWAIT != 0
            and 2 in lwps.values())


def _boot_steady(backend: str) -> Iterator[realfork.api.System]:
    """A kernel running STEADY, driven (start, poll, stop) by a thread of its own,
    as a supervisor would: the tests read it from the main thread meanwhile."""
    with realfork.boot(backend=backend, nproc=32, maxlwps=64, deadlock_timeout=60) as system:
        ready, done = threading.Event(), threading.Event()
        failed: list[BaseException] = []

        def drive() -> None:
            try:
                system.start(STEADY)
                deadline = time.monotonic() + 20
                # every lwp has blocked in its sleep (the wait-for graph is steady too)
                while not _steady_ready(system) or len(system.dom.report().blocked()) < 6:
                    assert time.monotonic() < deadline, "the steady program did not settle"
                    system.poll(0.05)
                ready.set()
                while not done.is_set():
                    system.poll(0.1)
            except BaseException as e:
                failed.append(e)
                ready.set()
            finally:
                if system._sched is not None:
                    system.stop()

        th = threading.Thread(target=drive, name="steady-driver")
        th.start()
        try:
            ready.wait(30)
            assert ready.is_set() and not failed, failed
            yield system
        finally:
            done.set()
            th.join(60)


@pytest.fixture(scope="module")
def steady() -> Iterator[realfork.api.System]:
    yield from _boot_steady("threads")


def kernel_rows(system: realfork.api.System) -> dict[int, dict]:
    """The process table, read straight from the kernel."""
    K = system.K
    out = {}
    for i in K.procs.used():
        s = K.procs.slots[i]
        if not s.p_stat:
            continue
        out[s.p_pid] = {"ppid": s.p_ppid, "state": STAT_NAMES[s.p_stat],
                        "flags": [n for b, n in sorted(PFLAG_NAMES.items()) if s.p_flag & b],
                        "lwps": s.p_lwpcnt, "host": s.p_host_pid}
    return out


def render_text(snap: snapmod.Snapshot, sort: str = "pid", width: int = 200) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(render(snap, sort, rows=100))
    return console.export_text()


def parse_rows(text: str) -> dict[int, tuple[str, ...]]:
    """pid -> (pid, ppid, state, flags, lwps, host, cpu, rss, threads, vcsw, nvcsw)."""
    rows = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            g = m.groups()
            rows[int(g[0])] = (g[0], g[1], g[2], g[10], g[3], *g[4:10])
    return rows


def mib(text: str) -> float:
    assert text.endswith("M"), text
    return float(text[:-1])


# -- the dashboard against the kernel and psutil ----------------------------------------


@pytest.mark.timeout(90)
def test_dashboard_shows_the_kernel_tables_threads_backend(steady):
    with Observer.attach(steady.name) as obs:
        snap = snapshot_once(obs, 0.3)
        text = render_text(snap)
    assert f"kernel {steady.name}" in text
    assert "backend threads" in text
    want = kernel_rows(steady)
    shown = parse_rows(text)
    assert set(shown) == set(want), text
    me = psutil.Process()
    rss, nthreads = me.memory_info().rss / 2**20, me.num_threads()
    for pid, w in want.items():
        (_, ppid, state, flags, lwps, host, _cpu, rss_s, thr, vcsw, _nvcsw) = shown[pid]
        assert int(ppid) == w["ppid"]
        assert state == w["state"]
        assert flags == (",".join(w["flags"]) or "-")
        assert int(lwps) == w["lwps"]
        # threads backend: every lwp is a thread of the supervisor: this process
        assert int(host) == os.getpid()
        assert abs(mib(rss_s) - rss) < 0.25 * rss + 2
        assert abs(int(thr.replace(",", "")) - nthreads) <= 3
        assert int(vcsw.replace(",", "")) <= me.num_ctx_switches().voluntary
    vparent = next(p for p, w in want.items() if "SVFWAIT" in w["flags"])
    vchild = next(p for p, w in want.items() if "SVFORK" in w["flags"])
    assert want[vchild]["ppid"] == vparent == 1
    assert "waiting now 1" in text
    assert f"processes {steady.K.g.nproc}" in text
    # per-lwp threads: each of the emulated process's lwps is an OS thread here
    tids = {t.id for t in me.threads()}
    two = next(r for r in snap.processes if r.lwps == 2)
    assert [lw.lwpid for lw in two.lwp_threads] == [1, 2]
    assert all(lw.os_tid in tids for lw in two.lwp_threads)
    assert all(lw.cpu_percent is not None for lw in two.lwp_threads)


@pytest.mark.timeout(90)
def test_once_json_field_by_field(steady, capsys):
    K, dom = steady.K, steady.dom
    assert main(["top", steady.name, "--once", "--json", "--interval", "0.3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    g = K.g
    assert doc["kernel"] == steady.name
    assert doc["backend"] == "threads"
    assert doc["supervisor_pid"] == os.getpid()
    assert doc["state"] == "running"
    assert 0 < doc["uptime_s"] < 600
    assert doc["interval_s"] == pytest.approx(0.3, abs=0.25)
    assert doc["nproc"] == g.nproc
    want = kernel_rows(steady)
    assert doc["nlwps"] == sum(w["lwps"] for w in want.values())
    for k in ("sysfork", "sysvfork", "sysforkall", "fork_fail", "holds", "vfork_waits",
              "nexit", "nexec"):
        assert doc["counters"][k] == int(getattr(g, k)), k
    assert doc["forks_per_s"] == {"fork1": 0.0, "vfork": 0.0, "forkall": 0.0}  # all asleep
    assert doc["vfork_waiting"] == 1
    assert doc["holds_in_progress"] == 0
    assert doc["fork_failures"] == g.fork_fail
    assert doc["lock_order_reports"] == len(dom.lockdep_reports()) == 0
    assert doc["panic"] is None
    assert doc["findings"] == 0
    assert doc["probes_dropped"] == dom.ring.dropped
    m = doc["machine"]
    assert 0 <= m["cpu_percent"] <= 100
    assert m["mem_total"] == psutil.virtual_memory().total
    assert 0 < m["mem_used"] < m["mem_total"]
    assert m["ncpus"] == psutil.cpu_count()
    rows = {r["pid"]: r for r in doc["processes"]}
    assert set(rows) == set(want)
    for pid, w in want.items():
        r = rows[pid]
        assert (r["ppid"], r["state"], r["flags"], r["lwps"]) == (
            w["ppid"], w["state"], w["flags"], w["lwps"])
        assert r["host_pid"] == os.getpid()
        assert r["threads"] == pytest.approx(psutil.Process().num_threads(), abs=3)
        assert len(r["lwp_threads"]) == (w["lwps"] if pid else 0) or pid == 0
    assert [h["role"] for h in doc["hosts"]] == ["supervisor"]
    assert doc["hosts"][0]["pid"] == os.getpid()
    rep = dom.report()
    # (the driver's 'sched' thread wakes between its polls: one thread either way)
    assert abs(doc["blocked"] - len(rep.blocked())) <= 1
    assert abs(sum(s["count"] for s in doc["stacks"]) - sum(
        1 for t in rep.threads if t.state == "sleep")) <= 1
    sleepers = next(s for s in doc["stacks"] if s["chain"].startswith("sys_sleep"))
    assert sleepers["count"] == 3  # the two lwps of the fork1 child and the vfork child
    assert doc["cycles"] == [] and doc["hangs"] == []
    assert doc["locks"] == []  # nobody contends: everyone sleeps on a condvar


@pytest.mark.timeout(90)
def test_once_json_from_another_process(steady):
    """The real use: another OS process attaches by name, reads, and leaves."""
    tail = steady.dom.ring.hdr.tail
    out = subprocess.run([sys.executable, "-m", "realfork", "top", steady.name, "--once",
                          "--json", "--interval", "0.2"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert {r["pid"] for r in doc["processes"]} == set(kernel_rows(steady))
    assert doc["supervisor_pid"] == os.getpid()
    # it never drained the probe ring, and the kernel goes on
    assert steady.dom.ring.hdr.tail == tail
    assert steady.running and not steady.dom.g.shutting_down


@pytest.mark.timeout(90)
def test_sorting(steady):
    with Observer.attach(steady.name) as obs:
        snap = snapshot_once(obs, 0.2)
    by_pid = [r.pid for r in sort_processes(snap.processes, "pid")]
    assert by_pid == sorted(by_pid)
    by_lwps = [r.lwps for r in sort_processes(snap.processes, "lwps")]
    assert by_lwps == sorted(by_lwps, reverse=True)
    by_cpu = [r.cpu_percent or 0 for r in sort_processes(snap.processes, "cpu")]
    assert by_cpu == sorted(by_cpu, reverse=True)
    text = render_text(snap, sort="lwps")
    assert "sorted by lwps" in text
    assert next(iter(parse_rows(text).values()))[4] == "2"
    with pytest.raises(BadInput):
        sort_processes(snap.processes, "colour")


@pytest.mark.timeout(120)
def test_dashboard_processes_backend_hosts():
    gen = _boot_steady("processes")
    system = next(gen)
    try:
        with Observer.attach(system.name) as obs:
            snap = snapshot_once(obs, 0.3)
            text = render_text(snap)
        assert "backend processes" in text
        want = kernel_rows(system)
        shown = parse_rows(text)
        assert set(shown) == set(want)
        forkserver = system.K.machine.forkserver_pid
        for pid, w in want.items():
            host = int(shown[pid][5])
            if pid == 0:
                assert host == os.getpid()  # p0: the supervisor does its work
                continue
            assert host == w["host"] != os.getpid()  # p_host_pid, from the segment
            hp = psutil.Process(host)
            assert hp.ppid() == forkserver
            # a host's threads: its dispatcher plus one per lwp
            assert int(shown[pid][8]) == hp.num_threads() == w["lwps"] + 1
            assert abs(mib(shown[pid][7]) - hp.memory_info().rss / 2**20) < 5
        roles = [h.role for h in snap.hosts]
        assert roles[:2] == ["supervisor", "forkserver"]
        assert {h.emulated_pid for h in snap.hosts if h.role == "host"} == set(want) - {0}
    finally:
        next(gen, None)


@pytest.mark.timeout(90)
def test_fork_rates():
    with realfork.boot(nproc=32, maxlwps=64) as system:
        system.start(FORK_LOOP)
        try:
            with Observer.attach(system.name) as obs:
                prev = obs.sample()
                deadline = time.monotonic() + 30
                while True:
                    system.poll(0.3)
                    snap = obs.sample()
                    if snap.forks_per_s["fork1"] > 0 or time.monotonic() > deadline:
                        break
                    prev = snap
        finally:
            system.stop()
    # the rate is the counter's change over the interval between two looks
    done = snap.counters["sysfork"] - prev.counters["sysfork"]
    assert done > 0
    assert snap.forks_per_s["fork1"] == pytest.approx(done / snap.interval_s, rel=0.02, abs=0.5)
    assert snap.forks_per_s["vfork"] == snap.forks_per_s["forkall"] == 0.0


@pytest.mark.timeout(90)
def test_live_view_redraws_and_ends_with_the_kernel():
    console = Console(record=True, width=160, file=io.StringIO())
    with realfork.boot(nproc=32, maxlwps=64, deadlock_timeout=60) as system:
        system.start(STEADY)
        obs = Observer.attach(system.name)
        result: list[str] = []
        th = threading.Thread(target=lambda: result.append(
            watch(obs, console, 0.1, "cpu")), name="test-watch")
        th.start()
        try:
            for _ in range(10):
                system.poll(0.1)
        finally:
            system.stop()
    th.join(20)  # the kernel is gone: the view notices and ends by itself
    obs.close()
    assert result == [f"kernel {system.name} has shut down"]
    assert "realfork top" in console.export_text()


@pytest.mark.timeout(90)
def test_leaving_only_unmaps(steady):
    before = int(steady.K.g.syscalls)
    obs = Observer.attach(steady.name)
    assert not obs.dom.seg.creator
    for _ in range(3):
        obs.sample()
    obs.close()
    assert obs.dom.closed and not obs.dom.seg.mapped
    assert not steady.dom.g.shutting_down and not steady.dom.panicked
    assert os.path.exists(f"/dev/shm/{steady.name}")
    assert steady.running
    assert int(steady.K.g.syscalls) == before  # everyone still asleep, undisturbed


# -- errors ----------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_no_such_kernel(capsys):
    name = "realfork-" + secrets.token_hex(12)
    assert main(["top", name]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"no kernel named {name}" in err
    assert main(["top", "not-a-kernel", "--once"]) == 2
    assert "is not a kernel name" in capsys.readouterr().err


@pytest.mark.timeout(30)
def test_another_users_kernel(capsys):
    name = "realfork-" + secrets.token_hex(12)
    path = f"/dev/shm/{name}"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.close(fd)
    try:
        os.chown(path, 4242, 4242)
        assert main(["top", name, "--once", "--json"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0
        assert "belongs to uid 4242" in err and "not to you" in err
        out = subprocess.run([sys.executable, "-m", "realfork", "top", name], text=True,
                             capture_output=True, timeout=60)
        assert out.returncode == 2
        assert "belongs to uid 4242" in out.stderr and out.stdout == ""
    finally:
        os.unlink(path)


@pytest.mark.timeout(30)
def test_picking_the_one_running_kernel(monkeypatch):
    monkeypatch.setattr(snapmod, "running_kernels", lambda: [])
    with pytest.raises(BadInput, match="no running kernel"):
        pick_kernel(None)
    monkeypatch.setattr(snapmod, "running_kernels",
                        lambda: [("realfork-bb", 2.0), ("realfork-aa", 1.0)])
    with pytest.raises(BadInput, match=r"2 running kernels.*realfork-bb"):
        pick_kernel(None)
    monkeypatch.setattr(snapmod, "running_kernels", lambda: [("realfork-aa", 1.0)])
    assert pick_kernel(None) == "realfork-aa"


@pytest.mark.timeout(30)
def test_json_needs_once(capsys):
    assert main(["top", "--json"]) == 2
    assert "--json needs --once" in capsys.readouterr().err


# -- stress: the dashboard and the report --------------------------------------------------


def check_report(path: str, stressors: list[str]) -> str:
    with open(path) as f:
        text = f.read()
    assert text.startswith("<!DOCTYPE html>")
    # self-contained: no script, no stylesheet, nothing fetched
    assert not re.search(r"<script|<link|<iframe|@import", text, re.I)
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text, re.I)
    assert "http://" not in text and "https://" not in text
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    alts = [a for a, _ in imgs]
    for want in ("bogo ops per second, per stressor", "CPU per host", "RSS per host",
                 "lock wait per class", "holds and vfork waits"):
        assert want in alts, alts
    import base64

    assert all(base64.b64decode(d)[:8] == b"\x89PNG\r\n\x1a\n" for _, d in imgs)
    assert "<h3>Stressors</h3><table>" in text
    for name in stressors:
        assert f'<td class="l">{name}</td>' in text
    assert "<h2>Findings</h2>" in text
    return text


@pytest.mark.timeout(120)
def test_stress_dashboard_and_report(tmp_path):
    from realfork.stress.config import StressConfig
    from realfork.stress.runner import StressRun
    from realfork.top.stresswatch import StressWatch

    console = Console(record=True, width=160, file=io.StringIO())
    cfg = StressConfig(stressors={"fork": 1, "vfork": 1, "lwp": 1}, timeout=3.0,
                       check_interval=0)
    run = StressRun(cfg, str(tmp_path / "findings"))
    with StressWatch(run, dashboard=True, report=True, console=console, interval=0.5) as w:
        result = run.run()
    assert w.frames >= 2 and w.errors == 0
    assert len(w.samples) >= 2
    frame = console.export_text()
    assert f"kernel {result.kernels[0]}" in frame and "emulated processes" in frame
    supervisor = [h for s in w.samples for h in s["hosts"] if h["role"] == "supervisor"]
    assert {h["pid"] for h in supervisor} == {os.getpid()}
    assert all(h["rss"] > 0 for h in supervisor)
    from realfork.stress.command import result_document

    path = str(tmp_path / "run.html")
    w.write_report(path, result_document(result), "test run")
    check_report(path, ["fork", "vfork", "lwp"])


@pytest.mark.timeout(120)
def test_stress_report_from_the_command_line(tmp_path, capsys):
    path = str(tmp_path / "report.html")
    code = main(["stress", "--fork", "1", "--exec", "1", "--timeout", "2.5", "--quiet",
                 "--check-interval", "0", "--findings", str(tmp_path / "f"),
                 "--report", path])
    assert code == 0, capsys.readouterr()
    check_report(path, ["fork", "exec"])
