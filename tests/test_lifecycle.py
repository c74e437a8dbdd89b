"""Boots and shutdowns, panics, probes, and what a kernel costs in OS objects."""

from __future__ import annotations

import gc
import itertools
import os
import threading
import time

import pytest

from conftest import leftovers
from realfork.errors import KernelPanic
from realfork.machine.threads import ThreadFactory
from realfork.sync import lockstat
from realfork.sync.condvar import cv_wait
from realfork.sync.domain import CREATED_HERE, Substrate, reap_stale_segments
from realfork.sync.mutex import mutex_enter, mutex_exit

pytestmark = pytest.mark.timeout(180)


def shm_names() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if "realfork-" in n}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def shm_mappings() -> int:
    """This process's mappings of files in /dev/shm (segments and semaphores).

    Anonymous mappings are not counted: the interpreter's allocator maps and
    unmaps memory at will, so a count of every mapping is not stable.  (glibc
    maps a semaphore under a temporary name it then unlinks, so a kernel's
    semaphores cannot be told apart by name here.)
    """
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if " /dev/shm/" in line)


def _undertaker_started() -> None:
    """The first boot of a process starts its undertaker (realfork.shm.undertaker),
    which keeps one descriptor open here, the write end of its pipe: boot
    once before counting descriptors."""
    Substrate.boot(maxlwps=4, nsync=4).shutdown()


def _hang(dom: Substrate) -> None:
    """Two threads blocked on a condition variable nobody signals."""
    m = dom.new_mutex("m")
    cv = dom.new_cv("never_signalled")

    def sleeper() -> None:
        mutex_enter(m)
        cv_wait(cv, m)

    f = ThreadFactory(dom)
    for _ in range(2):
        f.spawn(sleeper)


def test_many_boots_and_shutdowns_leave_nothing_behind() -> None:
    _undertaker_started()
    first, fds0 = len(CREATED_HERE), open_fds()
    threads0 = threading.active_count()
    for i in range(12):
        dom = Substrate.boot(maxlwps=32, nsync=64, deadlock_timeout=0.3)
        if i % 3 == 0:
            _hang(dom)  # panics after 0.3 s
            deadline = time.monotonic() + 30
            while not dom.panicked:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert dom.panic_report(wait=30).kind == "hang"  # stored just after the flag
        elif i % 3 == 1:
            m = dom.new_mutex("m")
            ThreadFactory(dom).spawn(lambda m=m: (mutex_enter(m), mutex_exit(m)))
        else:
            _hang(dom)  # shut down while threads still sleep
        assert dom.shutdown() == []
    assert len(CREATED_HERE) - first == 12
    assert leftovers(CREATED_HERE[first:]) == []
    assert open_fds() == fds0
    assert threading.active_count() == threads0


def test_shutdown_after_exception_in_with_block() -> None:
    with pytest.raises(ZeroDivisionError), Substrate.boot(maxlwps=8, nsync=8) as dom:
        _hang(dom)
        1 / 0  # noqa: B018
    assert dom.closed and leftovers([dom.name]) == []


def test_stale_segment_of_a_dead_creator_is_reaped() -> None:
    import subprocess
    import sys

    code = ("from realfork.sync.domain import Substrate; import os; "
            "d = Substrate.boot(maxlwps=4, nsync=4); print(d.name, flush=True); "
            "os._exit(0)")  # dies without shutting down
    # with no undertaker, which would remove it before the reaper could
    env = dict(os.environ, PYTHONPATH=os.getcwd(), REALFORK_UNDERTAKER="0")
    name = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True).stdout.strip()
    assert name in shm_names()
    assert name in reap_stale_segments()
    assert not any(name in n for n in shm_names())


def test_os_objects_do_not_grow_with_table_sizes() -> None:
    def cost(maxlwps: int, nsync: int) -> tuple[int, int, int]:
        gc.collect()  # closed kernels of earlier tests may still await collection
        maps0, fds0 = shm_mappings(), open_fds()
        dom = Substrate.boot(maxlwps=maxlwps, nsync=nsync)
        try:
            dom.new_mutex("m")
            maps, fds = shm_mappings() - maps0, open_fds() - fds0
            files = len(leftovers([dom.name]))  # the segment and its chain locks
        finally:
            dom.shutdown()
        del dom  # a closed kernel's semaphores are closed when it is dropped
        gc.collect()
        assert shm_mappings() == maps0
        return (maps, fds, files)

    _undertaker_started()
    small = cost(8, 16)
    large = cost(20_000, 200_000)
    assert small == large
    assert small[0] == small[2]  # each file is mapped once
    assert small[1] == 1  # one descriptor stays open: the segment's liveness lock


def test_panic_wakes_every_sleeper_promptly() -> None:
    with Substrate.boot(maxlwps=32, nsync=64, deadlock_timeout=60.0) as dom:
        _hang(dom)
        m2 = dom.new_mutex("m2")
        with ThreadFactory.adopt(dom, "holder"):
            mutex_enter(m2)
            ThreadFactory(dom).spawn(lambda: mutex_enter(m2))
            deadline = time.monotonic() + 30
            while sum(1 for t in dom.report().threads if t.wchan >= 0) < 3:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            t0 = time.monotonic()
            with pytest.raises(KernelPanic):
                dom.panic("test panic")
            for t in list(dom.local_threads):
                if t.os_thread is not threading.current_thread():
                    t.os_thread.join(5)
                    assert not t.os_thread.is_alive()
            assert time.monotonic() - t0 < 5
            rep = dom.panic_report()
            assert rep.kind == "panic" and rep.message == "test panic"
            assert sum(1 for t in rep.threads if t.wchan >= 0) == 3


def test_exception_in_kernel_thread_panics_the_kernel() -> None:
    with Substrate.boot(maxlwps=8, nsync=8) as dom:
        t = ThreadFactory(dom).spawn(lambda: 1 / 0, name="buggy")
        t.os_thread.join(10)
        rep = dom.panic_report()
        assert rep is not None and "ZeroDivisionError" in rep.message


def test_call_chain_is_recorded_when_blocking() -> None:
    with Substrate.boot(maxlwps=8, nsync=8, deadlock_timeout=60.0) as dom:
        m = dom.new_mutex("m")

        def cfork() -> None:
            getproc()

        def getproc() -> None:
            mutex_enter(m)

        with ThreadFactory.adopt(dom, "holder"):
            mutex_enter(m)
            t = ThreadFactory(dom).spawn(cfork)
            deadline = time.monotonic() + 30
            while t.s.t_wchan == 0:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            th = dom.report().thread(t.id)
            assert th.chain.startswith("getproc;cfork")
            assert th.function == "getproc"
            mutex_exit(m)
        t.os_thread.join(10)


def test_probe_ring_records_and_counts_drops() -> None:
    with Substrate.boot(maxlwps=8, nsync=8, probe_capacity=10) as dom:
        for i in range(15):
            dom.fire("proc:::create", 1, 100 + i, 1, i, 2 * i)
        assert dom.ring.dropped == 5
        events = dom.ring.drain()
        assert [e.pid for e in events] == list(range(100, 110))
        assert events[3].name == "proc:::create" and events[3].args[:2] == (3, 6)
        assert all(a.ts <= b.ts for a, b in itertools.pairwise(events))
        dom.fire("proc:::exit", 1, 7, 1)
        (e,) = dom.ring.drain()
        assert e.name == "proc:::exit" and e.pid == 7 and dom.ring.dropped == 5
        # another process decodes the same names
        other = Substrate.attach(dom.name)
        try:
            assert other.ring.name_of(dom.ring.probe_id("proc:::exit")) == "proc:::exit"
        finally:
            other.shutdown()


@pytest.mark.timeout(30)
def test_probe_ring_drains_across_its_end_and_stops_at_an_unpublished_record() -> None:
    with Substrate.boot(maxlwps=8, nsync=8, probe_capacity=16) as dom:
        ring = dom.ring
        for i in range(12):
            dom.fire("proc:::create", 1, i, 1, i)
        assert [e.pid for e in ring.drain(limit=5)] == [0, 1, 2, 3, 4]
        assert [e.pid for e in ring.drain()] == list(range(5, 12))
        # the next records straddle the ring's end (slots 12..15, then 0..)
        for i in range(12, 18):
            dom.fire("proc:::exit", 1, i, 1, i, 0, 0, -i)
        # a writer that has reserved slot 18 but not yet published it
        hole = ring.hdr.head
        ring.hdr.head = hole + 1
        dom.fire("proc:::lwp-create", 1, 19, 1, 19)
        events = ring.drain()
        assert [e.pid for e in events] == list(range(12, 18))  # stops at the hole
        assert events[-1].args == (17, 0, 0, -17) and events[-1].name == "proc:::exit"
        assert ring.drain() == [] and ring.pending() == 2
        rec = ring.recs[hole % ring.capacity]
        rec.pid, rec.probe = 18, ring.probe_id("proc:::exit")
        rec.seq = hole + 1  # published at last
        assert [(e.name, e.pid) for e in ring.drain()] == [("proc:::exit", 18),
                                                         ("proc:::lwp-create", 19)]
        assert ring.pending() == 0 and ring.dropped == 0


def test_lockstat_probes_switch_on_and_off() -> None:
    with Substrate.boot(maxlwps=8, nsync=8, deadlock_timeout=30.0) as dom:
        m = dom.new_mutex("p_lock")
        with ThreadFactory.adopt(dom, "main"):
            mutex_enter(m)
            mutex_exit(m)
            assert dom.ring.drain() == []
            lockstat.enable(dom, True)
            try:
                mutex_enter(m)
                contender = ThreadFactory(dom).spawn(lambda: (mutex_enter(m), mutex_exit(m)))
                while m.s.nwaiters == 0:
                    time.sleep(0.002)
                time.sleep(0.02)
                mutex_exit(m)
                contender.os_thread.join(10)
            finally:
                lockstat.enable(dom, False)
            mutex_enter(m)
            mutex_exit(m)
        names = [e.name for e in dom.ring.drain()]
        assert names.count(lockstat.ADAPTIVE_ACQUIRE) == 2
        assert names.count(lockstat.ADAPTIVE_RELEASE) == 2
        assert names.count(lockstat.ADAPTIVE_BLOCK) == 1


def test_report_groups_threads_by_call_chain() -> None:
    with Substrate.boot(maxlwps=32, nsync=64, deadlock_timeout=60.0) as dom:
        m = dom.new_mutex("m")
        cv = dom.new_cv("never_signalled")

        def same_place() -> None:
            mutex_enter(m)
            cv_wait(cv, m)

        f = ThreadFactory(dom)
        for _ in range(10):
            f.spawn(same_place)
        deadline = time.monotonic() + 30
        while cv.s.nwaiters < 10:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        rep = dom.report()
        (state, kind, chain, ids), *_others = rep.stacks()
        assert (state, kind, len(ids)) == ("sleep", "condvar", 10)
        assert chain.startswith("same_place")
        text = str(rep)
        assert "stacks (threads grouped by call chain):" in text
        assert "sleep     condvar       10" in text


def test_repr_of_kernel_objects_after_shutdown_does_not_touch_the_segment() -> None:
    # pytest formats the locals of a failing test after its kernel is gone: a
    # handle whose repr read the unmapped segment would crash the interpreter
    import realfork

    system = realfork.boot(backend="threads")
    K = system.K
    proc, thread, lock = K.proc(K.g.practive), K.thread(1), K.pidlock
    assert "pid" in repr(proc) and "kthread 1" in repr(thread)
    system.close()
    assert not system.dom.seg.mapped
    assert repr(proc).endswith("of a closed kernel>")
    assert repr(thread).endswith("of a closed kernel>")
    assert repr(lock).endswith("of a closed kernel>")


def test_a_closed_system_refuses_use_and_keeps_its_last_counters() -> None:
    import realfork
    from realfork.errors import BadInput

    system = realfork.boot(backend="threads")
    r = system.run("main: fork1\n beq rv, 0, kid\n wait\n exit 0\nkid: exit 0\n")
    assert r.status == 0
    counters = system.counters()
    system.close()
    assert system.counters() == counters and counters["sysfork"] >= 1
    for use in (lambda: system.run("main: exit 0\n"), lambda: system.poll(0.01),
                system.stop, system.check, system.check_running, lambda: system.kill([1]),
                system.dom.report,
                system.dom.lockdep_reports, system.dom.panic_report):
        with pytest.raises(BadInput, match="is closed"):
            use()
    assert not system.running and system.panic_report() is None


def test_a_run_closed_from_another_thread_leaves_both_threads_usable() -> None:
    # A watchdog, itself running as a kernel thread of another kernel, closes
    # this kernel in the middle of a run started here: leaving the run must
    # free the run's kernel thread, not clear the watchdog's own.
    import realfork
    from realfork.sync.kthread import _cpu

    system = realfork.boot(backend="threads")
    system.start("main: sleep 60000\n exit 0\n")
    watchdog_after: list[bool] = []

    def watchdog() -> None:
        with Substrate.boot(maxlwps=4, nsync=8) as other, \
                ThreadFactory.adopt(other, "watchdog") as me:
            system.close()
            watchdog_after.append(getattr(_cpu, "t", None) is me)

    th = threading.Thread(target=watchdog)
    th.start()
    th.join(30)
    assert not th.is_alive() and watchdog_after == [True]
    assert system.closed and not system.running
    with realfork.boot(backend="threads") as again:  # this thread runs a new kernel
        assert again.run("main: exit 7\n").status == 7


def test_close_right_after_boot_stops_every_thread() -> None:
    # The system threads may still be on their way to their first sleep when
    # the shutdown looks for sleepers to wake: they must see the flag anyway
    # (before the fix about one close in ten waited out its join timeout and
    # left the segment mapped).
    import realfork

    for _ in range(40):
        system = realfork.boot(backend="threads")
        system.close()
        assert not system.dom.seg.mapped and not system.dom.local_threads
