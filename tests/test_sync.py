"""Kernel mutexes, condition variables, rwlocks and semaphores between real threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from helpers import words_layout

from realfork.errors import KernelPanic
from realfork.machine.threads import ThreadFactory
from realfork.sync.condvar import (
    cv_broadcast,
    cv_reltimedwait,
    cv_signal,
    cv_timedwait,
    cv_wait,
    cv_wait_sig,
)
from realfork.sync.domain import Substrate
from realfork.sync.kthread import curthread
from realfork.sync.mutex import MUTEX_HELD, mutex_enter, mutex_exit, mutex_owner, mutex_tryenter
from realfork.sync.rwlock import RW_READER, RW_WRITE_HELD, RW_WRITER, rw_enter, rw_exit
from realfork.sync.sema import sema_p, sema_p_sig, sema_tryp, sema_v
from realfork.sync.sleepq import wakeup_interruptible
from realfork.sync.structs import TS_SLEEP

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def dom() -> Iterator[Substrate]:
    """The shared fixture's substrate with a 30 s deadline instead of 2 s:
    no test here is about a deadline, and a waiter whose wake-up comes late
    because the test's own thread was kept off the CPU (a loaded machine
    does that for seconds) must not be taken for a deadlock."""
    d = Substrate.boot(maxlwps=64, nsync=256, deadlock_timeout=30.0,
                       extra_layout=words_layout)
    try:
        yield d
    finally:
        d.shutdown()


def join_all(ts: list) -> None:
    for t in ts:
        t.os_thread.join(60)
        assert not t.os_thread.is_alive()


def wait_until(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.002)


def sleepers(dom: Substrate, obj) -> int:
    return obj.s.nwaiters


class Deadlines:
    """A hook on every sleep's deadline (``sleepq.sleep`` returning
    WAKE_TIMEOUT), which runs before the sleeper looks at anything: with
    ``progress`` it moves the kernel on, so each deadline sees progress
    however long the test's own thread stays off the CPU; while ``hold`` is
    clear the sleeper waits there, still queued, so a report taken meanwhile
    shows it asleep whatever the load."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, d: Substrate) -> None:
        from realfork.sync import sleepq
        from realfork.sync.structs import WAKE_TIMEOUT

        self.progress = False
        self.hold = threading.Event()
        self.hold.set()
        self.held = threading.Event()  # a sleeper waits at ``hold``
        self.seen = 0  # deadlines passed
        real = sleepq.sleep

        def sleep(dom: Substrate, t, lk, wchan: int) -> int:
            why = real(dom, t, lk, wchan)
            if why == WAKE_TIMEOUT and dom is d:
                if not self.hold.is_set():
                    self.held.set()
                self.hold.wait(60)
                if self.progress:
                    d.g.progress += 1
                self.seen += 1
            return why

        monkeypatch.setattr(sleepq, "sleep", sleep)


def test_mutual_exclusion_100000_contended_increments(dom: Substrate) -> None:
    m = dom.new_mutex("counter_lock")
    counter = [0]

    def work(n: int) -> None:
        for _ in range(n):
            mutex_enter(m)
            v = counter[0]
            if v % 97 == 0:
                time.sleep(0)  # give up the GIL inside the critical section
            counter[0] = v + 1
            mutex_exit(m)

    f = ThreadFactory(dom)
    join_all([f.spawn(work, 25_000, name=f"w{i}") for i in range(4)])
    assert counter[0] == 100_000
    assert mutex_owner(m) == 0 and m.s.nwaiters == 0
    assert not dom.panicked


def test_owner_and_held_locks_are_recorded_in_order(dom: Substrate) -> None:
    a = dom.new_mutex("pidlock")
    b = dom.new_mutex("p_lock", inst=7, inst_label="pid")
    with ThreadFactory.adopt(dom, "main") as t:
        mutex_enter(a)
        mutex_enter(b)
        assert MUTEX_HELD(a) and MUTEX_HELD(b)
        assert mutex_owner(a) == t.id
        rep = dom.report()
        assert rep.thread(t.id).held == ["pidlock", "p_lock[pid 7]"]
        mutex_exit(a)  # out of order
        assert dom.report().thread(t.id).held == ["p_lock[pid 7]"]
        mutex_exit(b)
        assert dom.report().thread(t.id).held == []
        assert mutex_tryenter(a)
        mutex_exit(a)


def test_tryenter_fails_when_held(dom: Substrate) -> None:
    m = dom.new_mutex("m")
    got = []
    with ThreadFactory.adopt(dom, "main"):
        mutex_enter(m)
        f = ThreadFactory(dom)
        join_all([f.spawn(lambda: got.append(mutex_tryenter(m)))])
        mutex_exit(m)
    assert got == [False]


def test_mutex_exit_by_non_owner_panics(dom: Substrate) -> None:
    m = dom.new_mutex("m")
    with ThreadFactory.adopt(dom, "main"), pytest.raises(KernelPanic) as e:
        mutex_exit(m)
    assert "does not own" in str(e.value)
    assert dom.panic_report().kind == "panic"


def _start_cv_waiters(dom: Substrate, n: int):
    m = dom.new_mutex("m")
    cv = dom.new_cv("cv")
    state = {"go": 0, "woken": 0}

    def waiter() -> None:
        mutex_enter(m)
        while state["go"] == 0:
            cv_wait(cv, m)
        state["go"] -= 1
        state["woken"] += 1
        mutex_exit(m)

    f = ThreadFactory(dom)
    ts = [f.spawn(waiter, name=f"cvw{i}") for i in range(n)]
    wait_until(lambda: cv.s.nwaiters == n)
    return m, cv, state, ts


def test_cv_signal_wakes_exactly_one(dom: Substrate) -> None:
    m, cv, state, ts = _start_cv_waiters(dom, 3)
    with ThreadFactory.adopt(dom, "signaller"):
        mutex_enter(m)
        state["go"] = 1
        cv_signal(cv)
        mutex_exit(m)
        wait_until(lambda: state["woken"] == 1)
        time.sleep(0.2)  # nobody else wakes
        assert state["woken"] == 1 and cv.s.nwaiters == 2
        mutex_enter(m)
        state["go"] = 2
        cv_broadcast(cv)
        mutex_exit(m)
    join_all(ts)
    assert state["woken"] == 3


def test_cv_broadcast_wakes_all(dom: Substrate) -> None:
    m, cv, state, ts = _start_cv_waiters(dom, 5)
    with ThreadFactory.adopt(dom, "broadcaster"):
        mutex_enter(m)
        state["go"] = 5
        cv_broadcast(cv)
        mutex_exit(m)
    join_all(ts)
    assert state["woken"] == 5 and cv.s.nwaiters == 0


def test_cv_timedwait_times_out(dom: Substrate) -> None:
    m = dom.new_mutex("m")
    cv = dom.new_cv("cv")
    with ThreadFactory.adopt(dom, "main"):
        mutex_enter(m)
        t0 = time.monotonic()
        assert cv_reltimedwait(cv, m, 100_000_000) == -1
        assert time.monotonic() - t0 >= 0.09
        assert MUTEX_HELD(m)  # reacquired
        assert cv.s.nwaiters == 0
        assert cv_timedwait(cv, m, time.monotonic_ns() - 1) == -1
        mutex_exit(m)
    assert not dom.panicked


def test_cv_timedwait_signalled_before_timeout(dom: Substrate) -> None:
    m = dom.new_mutex("m")
    cv = dom.new_cv("cv")
    result = []

    def waiter() -> None:
        mutex_enter(m)
        result.append(cv_reltimedwait(cv, m, 60_000_000_000))  # the signal ends it
        mutex_exit(m)

    t = ThreadFactory(dom).spawn(waiter)
    wait_until(lambda: cv.s.nwaiters == 1)
    with ThreadFactory.adopt(dom, "main"):
        mutex_enter(m)
        cv_signal(cv)
        mutex_exit(m)
    join_all([t])
    assert result == [1]


def test_cv_wait_sig_returns_early_on_pending_signal(
        dom: Substrate, monkeypatch: pytest.MonkeyPatch) -> None:
    from realfork.sync import sleepq

    slept: list[int] = []
    real = sleepq.sleep

    def sleep(d: Substrate, t, lk, wchan: int) -> int:
        slept.append(wchan)
        return real(d, t, lk, wchan)

    monkeypatch.setattr(sleepq, "sleep", sleep)
    m = dom.new_mutex("m")
    cv = dom.new_cv("cv")
    with ThreadFactory.adopt(dom, "main") as t:
        t.s.t_sig_check = 1  # a signal or hold request is pending
        mutex_enter(m)
        assert cv_wait_sig(cv, m) == 0
        assert slept == []  # it never went to sleep
        assert MUTEX_HELD(m) and cv.s.nwaiters == 0
        mutex_exit(m)


def test_cv_wait_sig_interrupted_while_asleep(dom: Substrate) -> None:
    m = dom.new_mutex("m")
    cv = dom.new_cv("cv")
    result = []

    def sleeper() -> None:
        mutex_enter(m)
        result.append(cv_wait_sig(cv, m))
        mutex_exit(m)

    t = ThreadFactory(dom).spawn(sleeper)
    wait_until(lambda: t.s.t_state == TS_SLEEP)
    t.s.t_sig_check = 1
    assert wakeup_interruptible(dom, t.id)
    join_all([t])
    assert result == [0]


def test_uninterruptible_sleep_is_not_interrupted(dom: Substrate) -> None:
    m = dom.new_mutex("m")
    cv = dom.new_cv("cv")

    def sleeper() -> None:
        mutex_enter(m)
        cv_wait(cv, m)
        mutex_exit(m)

    t = ThreadFactory(dom).spawn(sleeper)
    wait_until(lambda: t.s.t_state == TS_SLEEP)
    assert not wakeup_interruptible(dom, t.id)
    with ThreadFactory.adopt(dom, "main"):
        mutex_enter(m)
        cv_signal(cv)
        mutex_exit(m)
    join_all([t])


def test_rwlock_readers_share_writers_exclude(dom: Substrate) -> None:
    rw = dom.new_rwlock("a_lock")
    inside = {"readers": 0, "max_readers": 0, "writer": 0, "bad": 0}
    guard = threading.Lock()
    barrier = threading.Barrier(3)

    def reader() -> None:
        for i in range(300):
            rw_enter(rw, RW_READER)
            with guard:
                inside["readers"] += 1
                inside["max_readers"] = max(inside["max_readers"], inside["readers"])
                inside["bad"] += inside["writer"]
            if i == 0:
                barrier.wait()  # all three readers inside together once
            with guard:
                inside["readers"] -= 1
            rw_exit(rw)

    def writer() -> None:
        for _ in range(300):
            rw_enter(rw, RW_WRITER)
            assert RW_WRITE_HELD(rw)
            with guard:
                inside["writer"] += 1
                inside["bad"] += inside["readers"]
            with guard:
                inside["writer"] -= 1
            rw_exit(rw)

    f = ThreadFactory(dom)
    readers = [f.spawn(reader, name=f"r{i}") for i in range(3)]
    join_all(readers)
    writers = [f.spawn(writer, name=f"w{i}") for i in range(2)]
    join_all(writers)
    assert inside["max_readers"] == 3
    assert inside["bad"] == 0
    assert rw.s.owner == 0 and rw.s.count == 0


def test_rwlock_mixed_contention(dom: Substrate) -> None:
    rw = dom.new_rwlock("as_lock")
    value = [0, 0]

    def writer() -> None:
        for _ in range(500):
            rw_enter(rw, RW_WRITER)
            value[0] += 1
            time.sleep(0)
            value[1] += 1
            rw_exit(rw)

    def reader(errors: list) -> None:
        for _ in range(500):
            rw_enter(rw, RW_READER)
            if value[0] != value[1]:
                errors.append(tuple(value))
            rw_exit(rw)

    errors: list = []
    f = ThreadFactory(dom)
    join_all([f.spawn(writer), f.spawn(writer), f.spawn(reader, errors),
              f.spawn(reader, errors)])
    assert errors == [] and value == [1000, 1000]
    assert not dom.panicked


def test_counting_semaphore(dom: Substrate) -> None:
    sp = dom.new_sema("slots", count=2)
    with ThreadFactory.adopt(dom, "main") as t:
        assert sema_tryp(sp) and sema_tryp(sp)
        assert not sema_tryp(sp)
        got = []
        th = ThreadFactory(dom).spawn(lambda: (sema_p(sp), got.append(1)))
        wait_until(lambda: sp.s.nwaiters == 1)
        assert got == []
        sema_v(sp)
        join_all([th])
        assert got == [1] and sp.s.count == 0
        t.s.t_sig_check = 1
        assert sema_p_sig(sp) == 1  # interrupted
        t.s.t_sig_check = 0
        sema_v(sp)
        assert sema_p_sig(sp) == 0


def test_curthread_outside_kernel_thread_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        curthread()


def test_patient_wait_outlives_the_deadline_while_the_kernel_progresses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with Substrate.boot(maxlwps=8, nsync=8, deadlock_timeout=0.3) as d:
        hook = Deadlines(monkeypatch, d)
        hook.progress = True  # the kernel moves on between any two deadlines
        m = d.new_mutex("m")
        cv = d.new_cv("cv")
        done = []

        def patient() -> None:
            mutex_enter(m)
            cv_wait(cv, m, patient=True)
            mutex_exit(m)
            done.append(1)

        t = ThreadFactory(d).spawn(patient)
        wait_until(lambda: hook.seen >= 3)  # three deadlines have passed
        assert not d.panicked and t.s.t_state == TS_SLEEP
        with ThreadFactory.adopt(d, "main"):
            mutex_enter(m)
            cv_signal(cv)
            mutex_exit(m)
        join_all([t])
        assert done == [1]
        # with no progress the same wait is a hang
        hook.progress = False
        t = ThreadFactory(d).spawn(patient)
        t.os_thread.join(10)
        rep = d.panic_report()
        assert rep is not None and rep.kind == "hang"


def _waiter_with_waker(d: Substrate, cv, m, waker: int, stuck=None) -> list:
    """Start a patient cv waiter that names ``waker``; the list gets its panic."""
    out: list = []

    def waiter() -> None:
        mutex_enter(m)
        try:
            cv_wait(cv, m, patient=True, waker=waker, stuck=stuck)
        except KernelPanic as e:
            out.append(e)
            return
        mutex_exit(m)
        out.append("woken")

    return [ThreadFactory(d).spawn(waiter, name="waiter"), out]


def test_cv_waiter_whose_waker_exited_is_a_hang_while_the_kernel_progresses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with Substrate.boot(maxlwps=8, nsync=8, deadlock_timeout=0.3) as d:
        hook = Deadlines(monkeypatch, d)
        hook.progress = True  # progress never stops, yet the waiter is found hung
        m = d.new_mutex("m")
        cv = d.new_cv("p_cv")
        f = ThreadFactory(d)
        gone = threading.Event()
        waker = f.spawn(gone.wait, name="waker")  # exits without signalling
        t, out = _waiter_with_waker(d, cv, m, waker.id)
        wait_until(lambda: cv.s.nwaiters == 1)
        rep = d.report()
        assert rep.thread(t.id).waker == waker.id and rep.hangs == []
        assert f"to be signalled by kthread {waker.id} 'waker'" in str(rep)
        hook.hold.clear()  # the waiter's next deadline waits for the report below
        wait_until(hook.held.is_set)
        gone.set()
        waker.os_thread.join(10)
        rep = d.report()  # before the waiter's deadline has had its look
        assert rep.hangs == [t.id] and rep.thread(t.id).waker_gone
        assert "hang: kthread" in str(rep) and "has exited" in str(rep)
        hook.hold.set()
        wait_until(lambda: bool(out))
        panic = d.panic_report()
        assert panic is not None and panic.kind == "hang" and panic.culprit == t.id
        assert "nobody will signal it: its waker kthread" in panic.message
        t.os_thread.join(10)


def test_cv_waiter_with_a_stuck_condition_is_a_hang_after_two_deadlines(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with Substrate.boot(maxlwps=8, nsync=8, deadlock_timeout=0.3) as d:
        hook = Deadlines(monkeypatch, d)
        hook.progress = True  # not stalled: only the stuck condition can end it
        m = d.new_mutex("m")
        cv = d.new_cv("p_cv")
        calls: list[float] = []

        def stuck() -> str:
            calls.append(time.monotonic())
            return "the flag is clear"

        t, out = _waiter_with_waker(d, cv, m, 0, stuck)
        wait_until(lambda: bool(out))
        assert len(calls) == 2  # suspected at the first deadline, confirmed at the second
        rep = d.panic_report()
        assert rep is not None and rep.kind == "hang"
        assert rep.message.endswith("nobody will signal it: the flag is clear")
        t.os_thread.join(10)


def test_cv_waiter_with_a_waker_is_woken_normally_and_forms_cycles() -> None:
    with Substrate.boot(maxlwps=8, nsync=8, deadlock_timeout=5.0) as d:
        m = d.new_mutex("m")
        lk = d.new_mutex("pidlock")
        cv = d.new_cv("p_cv")
        f = ThreadFactory(d)
        blocked = threading.Event()

        def waker_body() -> None:
            blocked.wait()
            mutex_enter(lk)  # held by the waiter: a cycle through the condvar
            mutex_exit(lk)
            mutex_enter(m)
            cv_signal(cv)
            mutex_exit(m)

        waker = f.spawn(waker_body, name="waker")
        out: list = []

        def waiter() -> None:
            mutex_enter(lk)
            mutex_enter(m)
            cv_wait(cv, m, patient=True, waker=waker.id)
            mutex_exit(m)
            mutex_exit(lk)
            out.append("woken")

        t = f.spawn(waiter, name="waiter")
        wait_until(lambda: cv.s.nwaiters == 1)
        blocked.set()
        wait_until(lambda: lk.s.nwaiters == 1)
        rep = d.report()
        assert rep.cycles == [sorted([t.id, waker.id])]
        text = rep.cycle_text(rep.cycles[0])
        assert text == (f"kthread {waker.id} 'waker' (waker_body) must signal p_cv, waits "
                        f"for pidlock held by kthread {t.id} 'waiter' (waiter), which waits "
                        "for p_cv")
        # break the cycle from outside: signal the cv ourselves
        with ThreadFactory.adopt(d, "main"):
            mutex_enter(m)
            cv_signal(cv)
            mutex_exit(m)
        join_all([t, waker])
        assert out == ["woken"] and not d.panicked
