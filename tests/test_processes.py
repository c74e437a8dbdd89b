"""The processes backend: every emulated process a real OS process, its lwps
real threads there; nothing left behind when the supervisor or a host dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from helpers import boot_checked

from realfork.kernel.kernel import Kernel
from realfork.kernel.params import make_params
from realfork.kernel.structs import SRUN
from realfork.shm.segment import Segment, list_segments
from realfork.sync.domain import Substrate

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parent.parent
HOST_HELPER_THREADS = 1  # a host's dispatcher; every other thread is an lwp


def in_background(system, text: str, timeout: float = 60):
    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("r", system.run(text, timeout=timeout)))
    th.start()
    return th, out


def wait_for(cond, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError("condition never became true")


def live_procs(K: Kernel) -> dict[int, object]:
    return {K.procs.slots[i].p_pid: K.procs.slots[i] for i in K.procs.used()
            if K.procs.slots[i].p_stat == SRUN}


def test_emulated_processes_are_os_processes_with_one_thread_per_lwp() -> None:
    with boot_checked(backend="processes") as system:
        # every lwp waits until the test, done looking, stores 1 into word 0
        # of its address space: the lwps are all there however slow the machine
        th, out = in_background(system, """
            lwp_create napper
            fork1
            beq rv, 0, child
            wait
            lwp_wait 0
            exit 0
        child:
            lwp_create napper
            lwp_create napper
        held:
            sleep 20
            load r0, 0
            beq r0, 0, held
            exit 0
        napper:
            sleep 20
            load r0, 0
            beq r0, 0, napper
            lwp_exit
        """, timeout=120)
        K = system.K
        try:
            procs = wait_for(lambda: (lambda d: d if 4 in d and d[4].p_lwpcnt == 3 and
                                      d[1].p_lwpcnt == 2 else None)(live_procs(K)))
            init, child = procs[1], procs[4]
            hosts = {init.p_host_pid, child.p_host_pid}
            assert len(hosts) == 2 and os.getpid() not in hosts
            for p in (init, child):
                ps = psutil.Process(p.p_host_pid)
                assert ps.parent().ppid() == os.getpid()  # hosts are the fork server's children
                assert ps.num_threads() == p.p_lwpcnt + HOST_HELPER_THREADS
        finally:
            for i in K.procs.used():  # let them go
                s = K.procs.slots[i]
                if s.p_pid in (1, 4) and s.p_as:
                    K.ases.slots[s.p_as - 1].a_words[0] = 1
            th.join(150)
        assert out["r"].report is None and out["r"].status == 0


def test_a_vfork_parent_sleeps_while_its_child_runs() -> None:
    with boot_checked(backend="processes") as system:
        th, out = in_background(system, """
            vfork
            beq rv, 0, child
            wait
            exit st
        child:
            spin 3000000             ; the child works; the parent must not
            exit 0
        """)
        K = system.K
        parent = wait_for(lambda: live_procs(K).get(1) if 4 in live_procs(K) else None)
        host = psutil.Process(parent.p_host_pid)
        before = sum(host.cpu_times()[:2])
        time.sleep(0.5)
        after = sum(host.cpu_times()[:2])
        assert after - before < 0.1  # asleep in vfwait, not spinning
        th.join(120)
        assert out["r"].report is None


def test_reports_name_emulated_pids_and_host_os_pids() -> None:
    with boot_checked(backend="processes", deadlock_timeout=5.0) as system:
        r = system.run("""
            getpid
            prstopfork rv, 1        ; init stops after its fork: nobody runs it again
            fork1
            beq rv, 0, child
            exit 0
        child:
            exit 0
        """, timeout=120)
        rep = r.report  # the kernel's deadline: init sits stopped, bound to its host
        assert rep is not None and rep.kind == "hang"
        init = next(t for t in rep.threads if t.pid == 1)
        assert init.os_pid not in (0, os.getpid())
        assert "pid 1 lwp 1" in str(rep) and f"os pid {init.os_pid}" in str(rep)


SUPERVISOR = """
import sys, realfork
s = realfork.boot(backend="processes", nproc=32, maxlwps=64)
print(s.name, flush=True)
s.run('''
    fork1
    beq rv, 0, child
    fork1
    beq rv, 0, child
    wait
    wait
    exit 0
child:
    sleep 60000
    exit 0
''', timeout=120)
"""


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _hosts_of(name: str) -> list[int]:
    dom = Substrate.attach(name)
    try:
        from realfork.machine.hosts import HostTable

        return [h.os_pid for h in HostTable(dom.seg, dom.chains).hosts if h.os_pid]
    finally:
        dom.shutdown()


def test_sigkill_of_the_supervisor_leaves_nothing_behind() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-c", SUPERVISOR], stdout=subprocess.PIPE,
                         text=True, env=env)
    name = p.stdout.readline().strip()
    assert name.startswith("realfork-")
    dom = Substrate.attach(name)
    try:
        wait_for(lambda: dom.kthreads.hdr.nused >= 5)  # init and its two children run
    finally:
        dom.shutdown()
    hosts = _hosts_of(name)
    # the supervisor's children: the fork server, and its undertaker
    # (realfork.shm.undertaker, in a session of its own), which must end too
    kids = psutil.Process(p.pid).children()
    undertaker = [c.pid for c in kids if os.getsid(c.pid) == c.pid]
    forkserver = [c.pid for c in kids if c.pid not in undertaker]
    assert len(hosts) >= 5 and len(forkserver) == 1 and len(undertaker) == 1
    p.kill()
    p.wait()
    t0 = time.monotonic()
    # the fork server and the undertaker clean up at once; the bound is for a loaded machine
    wait_for(lambda: not any(alive(h) for h in hosts + forkserver + undertaker), timeout=60)
    wait_for(lambda: not any(name in n for n in os.listdir("/dev/shm")), timeout=60)
    assert time.monotonic() - t0 < 60


def test_killing_a_host_panics_the_kernel_and_run_exits_1(tmp_path: Path) -> None:
    prog = tmp_path / "sleepy.rf"
    prog.write_text("""
        fork1
        beq rv, 0, child
        wait
        exit st
    child:
        sleep 60000
        exit 0
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "realfork", "run", "--backend", "processes",
                          str(prog), "--timeout", "120"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)

    def kernel_of_p() -> str | None:
        for name, _st in list_segments(os.geteuid()):
            try:
                seg = Segment.attach(name)
            except Exception:
                continue
            try:
                if seg.header.creator_pid == p.pid:
                    return name
            finally:
                seg.unmap()
        return None

    name = wait_for(kernel_of_p)
    dom = Substrate.attach(name)
    try:
        K = Kernel(dom, make_params(**dom.params["kernel"]))
        child = wait_for(lambda: live_procs(K).get(4))
        victim = child.p_host_pid
    finally:
        dom.shutdown()
    os.kill(victim, signal.SIGKILL)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1, err
    assert f"host process {victim} (hosting emulated pid 4) died of signal 9" in out
    assert not any(name in n for n in os.listdir("/dev/shm"))
