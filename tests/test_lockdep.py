"""The lock-order validator: learned and declared orders, inversions reported once
with both chains, modes, subclasses, and the graph shared across OS processes."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import boot_checked, tool, words_layout

from realfork.errors import BadInput, KernelPanic
from realfork.machine.threads import ThreadFactory
from realfork.sync import lockdep
from realfork.sync.domain import Substrate
from realfork.sync.mutex import mutex_enter, mutex_enter_nested, mutex_exit, mutex_tryenter
from realfork.sync.rwlock import RW_READER, RW_WRITER, rw_enter, rw_exit

pytestmark = pytest.mark.timeout(120)

HERE = Path(__file__).parent
SCENARIO_BA = """\
       CPU0                    CPU1
       ----                    ----
  lock(lock_b);
                               lock(lock_a);
                               lock(lock_b);
  lock(lock_a);
"""


def boot(mode: str = "warn", **kw: Any) -> Substrate:
    return Substrate.boot(maxlwps=16, nsync=64, deadlock_timeout=10.0, lockdep=mode, **kw)


def run(dom: Substrate, fn: Callable[..., Any], *args: Any, name: str = "") -> None:
    """Run ``fn`` on a new kernel thread and wait for it."""
    t = ThreadFactory(dom).spawn(fn, *args, name=name or fn.__name__)
    assert t.os_thread is not None
    t.os_thread.join(60)
    assert not t.os_thread.is_alive()


def take_in_order(*locks: Any) -> None:
    for m in locks:
        mutex_enter(m)
    for m in reversed(locks):
        mutex_exit(m)


def order_ab(a: Any, b: Any) -> None:
    take_in_order(a, b)


def order_ba(a: Any, b: Any, done: list[int]) -> None:
    take_in_order(b, a)
    done.append(1)


def inversions(dom: Substrate) -> list[tuple[int, ...]]:
    return [e.args for e in dom.ring.drain() if e.name == lockdep.PROBE]


# -- two locks, two orders ----------------------------------------------------------------


def test_ab_then_ba_reported_once_with_both_chains_and_the_run_goes_on() -> None:
    with boot() as dom:
        a, b = dom.new_mutex("lock_a"), dom.new_mutex("lock_b")
        done: list[int] = []
        run(dom, order_ab, a, b)
        assert lockdep.reports(dom) == []
        run(dom, order_ba, a, b, done)  # never deadlocks: the threads run one by one
        run(dom, order_ba, a, b, done)  # the same inversion again: not reported twice
        assert done == [1, 1] and not dom.panicked
        (rep,) = dom.lockdep_reports()
        assert rep.kind == "circular"
        assert (rep.held_name, rep.new_name) == ("lock_b", "lock_a")
        assert rep.classes == (b.s.lclass, a.s.lclass)
        # both chains: this acquisition's, and the one that made lock_a -> lock_b
        assert rep.chain.startswith("take_in_order;order_ba")
        (dep,) = rep.path
        assert (dep.src, dep.dst, dep.declared) == ("lock_a", "lock_b", False)
        assert dep.chain.startswith("take_in_order;order_ab")
        assert rep.chains == (rep.chain, [dep.chain])
        # who did what
        assert rep.os_pid == dep.os_pid == os.getpid()
        assert rep.who.startswith("kthread") and "'order_ba'" in rep.who
        assert "'order_ab'" in dep.who
        text = str(rep)
        assert "WARNING: possible circular locking dependency detected" in text
        assert SCENARIO_BA in text
        assert "at: take_in_order < order_ba" in text
        assert "at: take_in_order < order_ab" in text
        assert "CPU1: kthread" in text and "'order_ab'" in text
        assert [args[:2] for args in inversions(dom)] == [(b.s.lclass, a.s.lclass)]


def test_panic_mode_panics_with_kind_lock_order_before_taking_the_lock() -> None:
    with boot("panic") as dom:
        a, b = dom.new_mutex("lock_a"), dom.new_mutex("lock_b")
        done: list[int] = []
        run(dom, order_ab, a, b)
        run(dom, order_ba, a, b, done)
        assert dom.panicked and done == []
        assert a.s.owner == 0  # it panicked before taking lock_a
        rep = dom.panic_report()
        assert rep is not None and rep.kind == "lock-order"
        assert "possible circular locking dependency" in rep.message
        assert SCENARIO_BA in rep.message
        assert len(lockdep.reports(dom)) == 1


def test_off_mode_records_nothing() -> None:
    with boot("off") as dom:
        a, b = dom.new_mutex("lock_a"), dom.new_mutex("lock_b")
        done: list[int] = []
        run(dom, order_ab, a, b)
        run(dom, order_ba, a, b, done)
        assert done == [1] and not dom.panicked
        assert dom.lockdep is None and lockdep.mode(dom) == "off"
        assert lockdep.reports(dom) == [] and lockdep.edges(dom) == []
        r = dom.seg.region("lockdep", lockdep.lockdep_t)
        assert r.nedges == 0 and r.nreports == 0
        assert inversions(dom) == []


def test_the_mode_is_a_boot_parameter() -> None:
    with pytest.raises(BadInput):
        Substrate.boot(maxlwps=4, nsync=4, lockdep="loud")
    with Substrate.boot(maxlwps=4, nsync=4) as dom:
        assert lockdep.mode(dom) == "warn" and dom.params["lockdep"] == "warn"


def test_three_lock_cycle_is_detected() -> None:
    with boot() as dom:
        a, b, c = (dom.new_mutex(n) for n in ("lock_a", "lock_b", "lock_c"))

        def order_bc() -> None:
            take_in_order(b, c)

        def order_ca() -> None:
            take_in_order(c, a)

        run(dom, order_ab, a, b)
        run(dom, order_bc)
        assert lockdep.reports(dom) == []
        run(dom, order_ca)
        (rep,) = lockdep.reports(dom)
        assert (rep.held_name, rep.new_name) == ("lock_c", "lock_a")
        assert [(d.src, d.dst) for d in rep.path] == [("lock_a", "lock_b"),
                                                      ("lock_b", "lock_c")]
        assert [d.chain.split(";")[1] for d in rep.path] == ["order_ab", "order_bc"]
        assert "lock_a --> lock_b --> lock_c" in rep.text
        assert ("  lock(lock_c);\n" + " " * 31 + "lock(lock_b);\n" + " " * 31
                + "lock(lock_c);\n  lock(lock_a);\n") in rep.text


def test_rwlocks_take_part() -> None:
    with boot() as dom:
        m, rw = dom.new_mutex("pidlock"), dom.new_rwlock("as_lock")

        def rw_then_mutex() -> None:
            rw_enter(rw, RW_READER)
            take_in_order(m)
            rw_exit(rw)

        def mutex_then_rw() -> None:
            mutex_enter(m)
            rw_enter(rw, RW_WRITER)
            rw_exit(rw)
            mutex_exit(m)

        run(dom, rw_then_mutex)
        run(dom, mutex_then_rw)
        (rep,) = lockdep.reports(dom)
        assert (rep.held_name, rep.new_name) == ("pidlock", "as_lock")


def test_a_trylock_adds_no_edge_of_its_own() -> None:
    with boot() as dom:
        a, b = dom.new_mutex("lock_a"), dom.new_mutex("lock_b")

        def try_b_under_a() -> None:
            mutex_enter(a)
            assert mutex_tryenter(b)
            mutex_exit(b)
            mutex_exit(a)

        run(dom, try_b_under_a)
        assert lockdep.edges(dom) == []
        run(dom, order_ba, a, b, [])  # cannot deadlock with a trylock
        assert lockdep.reports(dom) == []


# -- declared orders ----------------------------------------------------------------------


def test_declared_order_is_silent_and_its_reverse_reported_the_first_time() -> None:
    with boot() as dom:
        pidlock = dom.new_mutex("pidlock")
        p1, p2 = dom.new_mutex("p_lock", 1, "slot"), dom.new_mutex("p_lock", 2, "slot")
        assert ("pidlock", "p_lock", True) in lockdep.edges(dom)

        def pidlock_then_p_lock() -> None:
            take_in_order(pidlock, p1)

        def p_lock_then_pidlock() -> None:
            take_in_order(p2, pidlock)

        run(dom, pidlock_then_p_lock)
        assert lockdep.reports(dom) == []
        run(dom, p_lock_then_pidlock)
        (rep,) = lockdep.reports(dom)
        assert (rep.held_lock, rep.new_lock) == ("p_lock[slot 2]", "pidlock")
        assert [(d.src, d.dst, d.declared) for d in rep.path] == [("pidlock", "p_lock", True)]
        assert "pidlock -> p_lock: declared" in rep.text
        assert "CPU1: any thread following the declared order" in rep.text


def test_reverse_of_a_declared_order_never_taken_forward() -> None:
    with boot() as dom:
        ct, p = dom.new_mutex("ct_lock", 1, "ct"), dom.new_mutex("p_lock", 1, "slot")
        pidlock = dom.new_mutex("pidlock")

        def p_lock_then_ct_lock() -> None:
            take_in_order(p, ct)

        run(dom, p_lock_then_ct_lock)
        (rep,) = lockdep.reports(dom)
        assert rep.path[0].declared and (rep.path[0].src, rep.path[0].dst) == (
            "ct_lock", "p_lock")
        # ct_lock -> pidlock -> p_lock, seeded whatever the registration order
        assert {("ct_lock", "pidlock", True), ("pidlock", "p_lock", True)} <= set(
            lockdep.edges(dom))
        take = pidlock  # the other classes of the chain are untouched
        assert take.s.owner == 0


def test_declared_orders_form_no_cycle() -> None:
    pairs = lockdep.declared_pairs()
    succ: dict[tuple[str, int], set[tuple[str, int]]] = {}
    for x, y in pairs:
        succ.setdefault(x, set()).add(y)
    state: dict[tuple[str, int], int] = {}

    def visit(n: tuple[str, int]) -> None:
        state[n] = 1
        for m in succ.get(n, ()):
            assert state.get(m) != 1, f"declared orders cycle through {m}"
            if m not in state:
                visit(m)
        state[n] = 2

    for n in list(succ):
        if n not in state:
            visit(n)


# -- subclasses ---------------------------------------------------------------------------


def test_nested_subclass_allows_child_then_parent_p_lock() -> None:
    with boot() as dom:
        lockdep.set_strict(dom, "p_lock")
        child, parent = dom.new_mutex("p_lock", 7, "slot"), dom.new_mutex("p_lock", 3, "slot")

        def relvm_like() -> None:
            mutex_enter(child)  # the child's lock first
            mutex_enter_nested(parent, 1)
            mutex_exit(parent)
            mutex_exit(child)

        def parent_first() -> None:
            mutex_enter_nested(parent, 1)
            mutex_enter(child)
            mutex_exit(child)
            mutex_exit(parent)

        def unannotated() -> None:
            take_in_order(child, parent)

        run(dom, relvm_like)
        run(dom, relvm_like)
        assert lockdep.reports(dom) == []
        assert not lockdep.NESTED  # mutex_exit dropped the subclass
        run(dom, unannotated)
        (rec,) = lockdep.reports(dom)
        assert rec.kind == "recursive" and (rec.held_name, rec.new_name) == ("p_lock", "p_lock")
        assert "WARNING: possible recursive locking detected" in rec.text
        assert "missing lock nesting notation" in rec.text
        run(dom, parent_first)
        rec2 = lockdep.reports(dom)[1]
        assert rec2.kind == "circular"
        assert (rec2.held_name, rec2.new_name) == ("p_lock/1", "p_lock")
        assert [(d.src, d.dst, d.declared) for d in rec2.path] == [("p_lock", "p_lock/1", True)]


def test_same_class_nesting_is_silent_unless_the_class_is_strict() -> None:
    with boot() as dom:  # tk_lock: a class nobody marked strict
        child, parent = dom.new_mutex("tk_lock", 7, "slot"), dom.new_mutex("tk_lock", 3, "slot")
        run(dom, take_in_order, child, parent)
        run(dom, take_in_order, parent, child)
        assert lockdep.reports(dom) == []


def test_a_parent_p_lock_held_nested_orders_against_other_classes() -> None:
    with boot() as dom:
        pidlock = dom.new_mutex("pidlock")
        child, parent = dom.new_mutex("p_lock", 7, "slot"), dom.new_mutex("p_lock", 3, "slot")

        def parent_p_lock_then_pidlock() -> None:
            mutex_enter(child)
            mutex_enter_nested(parent, 1)
            mutex_exit(child)
            take_in_order(pidlock)  # pidlock -> p_lock -> p_lock/1 is declared
            mutex_exit(parent)

        run(dom, parent_p_lock_then_pidlock)
        (rep,) = lockdep.reports(dom)
        assert (rep.held_name, rep.new_name) == ("p_lock/1", "pidlock")
        assert "pidlock --> p_lock --> p_lock/1" in rep.text


def test_bad_subclass_is_refused() -> None:
    with boot() as dom, ThreadFactory.adopt(dom):
        m = dom.new_mutex("m")
        with pytest.raises(ValueError):
            mutex_enter_nested(m, lockdep.NSUB)


# -- across OS processes ------------------------------------------------------------------


def child(name: str, role: str, *args: object) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, str(HERE / "lockdep_child.py"), name, role,
                        *map(str, args)], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    return p


def test_an_order_learned_in_one_os_process_catches_an_inversion_in_another() -> None:
    with boot(extra_layout=words_layout) as dom:
        a, b = dom.new_mutex("lock_a"), dom.new_mutex("lock_b")
        c, d = dom.new_mutex("lock_c"), dom.new_mutex("lock_d")
        words = dom.seg.region("test_words", ctypes.c_int64)
        child(dom.name, "take", a.idx, b.idx)  # lock_a -> lock_b, in another process
        assert ("lock_a", "lock_b", False) in lockdep.edges(dom)
        done: list[int] = []
        run(dom, order_ba, a, b, done)  # inverted here: first time in this process
        (rep,) = lockdep.reports(dom)
        assert rep.os_pid == os.getpid() and done == [1]
        (dep,) = rep.path
        assert dep.os_pid not in (0, os.getpid())
        assert dep.chain.startswith("child_takes_in_order;main")
        # the other way round: learned here, inverted there, read everywhere
        run(dom, take_in_order, c, d)
        child(dom.name, "take", d.idx, c.idx)
        reps = lockdep.reports(dom)
        assert len(reps) == 2
        assert (reps[1].held_name, reps[1].new_name) == ("lock_d", "lock_c")
        assert reps[1].os_pid not in (0, os.getpid())
        child(dom.name, "reports")
        assert words[0] == 2
        assert (words[1], words[2], words[3]) == (b.s.lclass, a.s.lclass, os.getpid())
        # already reported in this kernel: another process does not report it again
        child(dom.name, "take", b.idx, a.idx)
        assert len(lockdep.reports(dom)) == 2


def test_reports_survive_and_are_read_by_attach() -> None:
    with boot() as dom:
        a, b = dom.new_mutex("lock_a"), dom.new_mutex("lock_b")
        run(dom, order_ab, a, b)
        run(dom, order_ba, a, b, [])
        other = Substrate.attach(dom.name)
        try:
            mine, theirs = lockdep.reports(dom), other.lockdep_reports()
            assert len(theirs) == 1 and theirs[0].to_dict() == mine[0].to_dict()
            assert lockdep.mode(other) == "warn"
            assert lockdep.edges(other) == lockdep.edges(dom)
        finally:
            other.shutdown()


# -- the kernel, and the cost ---------------------------------------------------------------


VFORK_AND_FORK = """
    vfork
    beq rv, 0, vchild
    mov r6, rv
    wait r6
    fork1
    beq rv, 0, fchild
    wait
    exit st
vchild:
    store 7, 5
    exit 0
fchild:
    exit 3
"""


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_the_kernel_runs_clean_and_learns_its_orders(backend: str) -> None:
    with boot_checked(backend=backend, nproc=16, maxlwps=32) as system:
        result = system.run(VFORK_AND_FORK)
        assert result.status == 3
        assert lockdep.reports(system.dom) == []
        edges = lockdep.edges(system.dom)
        assert ("pidlock", "p_lock", True) in edges
        assert ("pidlock", "p_lock", False) not in edges  # declared: never re-learned


def test_bench_measures_both_modes() -> None:
    got = tool("bench_lockdep").bench(n=2000, trials=1)
    assert set(got) == {"off_ns", "off_nested_ns", "warn_ns", "warn_nested_ns"}
    assert all(v > 0 for v in got.values())


def test_inverting_thread_keeps_unwinding_on_panic_in_panic_mode() -> None:
    with boot("panic") as dom:
        a, b = dom.new_mutex("lock_a"), dom.new_mutex("lock_b")
        run(dom, order_ab, a, b)
        with ThreadFactory.adopt(dom, "adopted"):
            mutex_enter(b)
            with pytest.raises(KernelPanic):
                mutex_enter(a)
            mutex_exit(b)
        assert dom.panic_report().kind == "lock-order"
