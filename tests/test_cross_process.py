"""Kernel locks between threads of different OS processes attached to one segment."""

from __future__ import annotations

import ctypes
import time

import pytest
from helpers import run_child, words_layout

from realfork.machine.threads import ThreadFactory
from realfork.sync.condvar import cv_broadcast
from realfork.sync.domain import Substrate
from realfork.sync.mutex import mutex_enter, mutex_exit

pytestmark = pytest.mark.timeout(180)


def finish(procs, timeout: float = 120) -> list[int]:
    codes = []
    for p in procs:
        _out, err = p.communicate(timeout=timeout)
        codes.append(p.returncode)
        assert p.returncode in (0, 7), f"child failed ({p.returncode}): {err[-2000:]}"
    return codes


def test_mutual_exclusion_across_os_processes() -> None:
    with Substrate.boot(maxlwps=16, nsync=16, deadlock_timeout=30.0,
                        extra_layout=words_layout) as dom:
        m = dom.new_mutex("counter_lock")
        words = dom.seg.region("test_words", ctypes.c_int64)
        # two other OS processes and two threads here, 100,000 increments in all
        procs = [run_child(dom.name, "count", m.idx, 30_000) for _ in range(2)]

        def local(n: int) -> None:
            for _ in range(n):
                mutex_enter(m)
                words[0] += 1
                mutex_exit(m)

        f = ThreadFactory(dom)
        ts = [f.spawn(local, 20_000) for _ in range(2)]
        assert finish(procs) == [0, 0]
        for t in ts:
            t.os_thread.join(120)
        assert words[0] == 100_000
        assert not dom.panicked


def test_cv_broadcast_wakes_waiters_in_other_processes() -> None:
    with Substrate.boot(maxlwps=16, nsync=16, deadlock_timeout=30.0,
                        extra_layout=words_layout) as dom:
        m = dom.new_mutex("m")
        cv = dom.new_cv("cv")
        words = dom.seg.region("test_words", ctypes.c_int64)
        procs = [run_child(dom.name, "cvwait", m.idx, cv.idx) for _ in range(3)]
        deadline = time.monotonic() + 60
        while cv.s.nwaiters < 3:
            assert time.monotonic() < deadline
            assert all(p.poll() is None for p in procs)
            time.sleep(0.01)
        with ThreadFactory.adopt(dom, "broadcaster"):
            mutex_enter(m)
            words[1] = 1
            cv_broadcast(cv)
            mutex_exit(m)
        assert finish(procs) == [0, 0, 0]
        assert words[2] == 3


def test_abba_between_two_os_processes_panics_with_the_cycle() -> None:
    timeout = 2.0
    with Substrate.boot(maxlwps=16, nsync=16, deadlock_timeout=timeout,
                        extra_layout=words_layout) as dom:
        a = dom.new_mutex("lock_a")
        b = dom.new_mutex("lock_b")
        ready1 = dom.new_sema("ready", inst=1)
        ready2 = dom.new_sema("ready", inst=2)
        words = dom.seg.region("test_words", ctypes.c_int64)
        p1 = run_child(dom.name, "abba", a.idx, b.idx, ready1.idx, ready2.idx, 10)
        p2 = run_child(dom.name, "abba", b.idx, a.idx, ready2.idx, ready1.idx, 11)
        deadline = time.monotonic() + 60
        while not dom.g.panic_len:
            assert time.monotonic() < deadline, "no panic"
            time.sleep(0.005)
        panicked_at = time.monotonic_ns()
        blocked_at = max(words[10], words[11])
        assert blocked_at > 0
        assert (panicked_at - blocked_at) / 1e9 <= timeout + 1.0
        assert finish([p1, p2]) == [7, 7]  # both unwound with KernelPanic
        rep = dom.panic_report()
        assert rep is not None and rep.kind == "deadlock"
        assert len(rep.cycles) == 1
        cycle = [rep.thread(tid) for tid in rep.cycles[0]]
        assert {t.name for t in cycle} == {"child-abba"}
        assert len({t.os_pid for t in cycle}) == 2  # two OS processes
        assert {t.os_pid for t in cycle} == {p1.pid, p2.pid}
        assert {t.wchan_name for t in cycle} == {"lock_a", "lock_b"}
        for t in cycle:
            other = next(o for o in cycle if o is not t)
            assert t.owners == [other.id]  # the owner of what t waits for
            assert t.held == [other.wchan_name]
        text = str(rep)
        assert "DEADLOCK" in text and "cycle:" in text
        assert "holds lock_a, waits for lock_b" in text or \
            "holds lock_b, waits for lock_a" in text
        for t in cycle:
            assert f"os pid {t.os_pid}" in text
