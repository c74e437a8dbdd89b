"""``realfork demo``: the substrate at work, until the fork kernel runs on it.

Part one: kernel threads in this OS process and in a second OS process
(started with ``multiprocess``) increment a counter in the segment under one
kernel mutex and hand a token back and forth through a condition variable.
Part two (``--deadlock``): two OS processes take two locks in opposite
orders; the deadline fires and the report names the cycle.
"""

from __future__ import annotations

import ctypes
import time
from typing import Any

import multiprocess

from .errors import KernelPanic
from .machine.threads import ThreadFactory
from .shm.segment import Layout
from .sync.condvar import cv_signal, cv_wait
from .sync.domain import Substrate
from .sync.mutex import mutex_enter, mutex_exit
from .sync.sema import sema_p, sema_v


def _words(layout: Layout) -> None:
    layout.add("demo_words", ctypes.c_int64, 8)


def _count(name: str, midx: int, n: int) -> None:
    dom = Substrate.attach(name)
    words = dom.seg.region("demo_words", ctypes.c_int64)
    try:
        with ThreadFactory.adopt(dom, "counter"):
            m = dom.handle(midx)
            for _ in range(n):
                mutex_enter(m)  # type: ignore[arg-type]
                words[0] += 1
                mutex_exit(m)  # type: ignore[arg-type]
    finally:
        dom.shutdown()


def _pingpong(name: str, midx: int, cvidx: int, rounds: int, me: int) -> None:
    dom = Substrate.attach(name)
    words = dom.seg.region("demo_words", ctypes.c_int64)
    try:
        with ThreadFactory.adopt(dom, f"pingpong{me}"):
            m, cv = dom.handle(midx), dom.handle(cvidx)
            mutex_enter(m)  # type: ignore[arg-type]
            for _ in range(rounds):
                while words[1] != me:
                    cv_wait(cv, m)  # type: ignore[arg-type]
                words[1] = 1 - me
                cv_signal(cv)  # type: ignore[arg-type]
            mutex_exit(m)  # type: ignore[arg-type]
    finally:
        dom.shutdown()


def _abba(name: str, first: int, second: int, mine: int, theirs: int) -> None:
    dom = Substrate.attach(name)
    try:
        with ThreadFactory.adopt(dom, "abba"):
            mutex_enter(dom.handle(first))  # type: ignore[arg-type]
            sema_v(dom.handle(mine))  # type: ignore[arg-type]
            sema_p(dom.handle(theirs))  # type: ignore[arg-type]
            mutex_enter(dom.handle(second))  # type: ignore[arg-type]
    except KernelPanic:
        pass
    finally:
        dom.shutdown()


def run_demo(deadlock: bool, deadlock_timeout: float, increments: int,
             out: Any = print) -> int:
    ctx = multiprocess.get_context("fork")
    with Substrate.boot(maxlwps=16, nsync=16, deadlock_timeout=deadlock_timeout,
                        extra_layout=_words) as dom:
        out(f"booted kernel {dom.name}")
        words = dom.seg.region("demo_words", ctypes.c_int64)
        m = dom.new_mutex("counter_lock")
        cv = dom.new_cv("token_cv")
        # Fork the helper OS processes first, while this process has one thread.
        t0 = time.monotonic()
        procs = [ctx.Process(target=_count, args=(dom.name, m.idx, increments), daemon=True),
                 ctx.Process(target=_pingpong, args=(dom.name, m.idx, cv.idx, 2000, 1),
                             daemon=True)]
        for p in procs:
            p.start()
        f = ThreadFactory(dom)
        ts = [f.spawn(_local_count, m, words, increments, name="counter"),
              f.spawn(_local_pingpong, m, cv, words, 2000, name="pingpong0")]
        for p in procs:
            p.join()
        for t in ts:
            assert t.os_thread is not None
            t.os_thread.join()
        dt = time.monotonic() - t0
        out(f"counter = {words[0]:,} (expected {2 * increments:,}) after {dt:.2f} s: "
            f"2 OS processes, 4 kernel threads, one kernel mutex")
        out("cross-process condition-variable ping-pong: 4,000 handoffs")
        if dom.panicked or words[0] != 2 * increments:
            out(str(dom.panic_report()))
            return 1
        if not deadlock:
            return 0
        out(f"seeding an ABBA deadlock between two OS processes "
            f"(deadlock_timeout {deadlock_timeout:g} s) ...")
        a, b = dom.new_mutex("lock_a"), dom.new_mutex("lock_b")
        r1, r2 = dom.new_sema("ready", inst=1), dom.new_sema("ready", inst=2)
        procs = [ctx.Process(target=_abba, args=(dom.name, a.idx, b.idx, r1.idx, r2.idx)),
                 ctx.Process(target=_abba, args=(dom.name, b.idx, a.idx, r2.idx, r1.idx))]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        rep = dom.panic_report()
        out(str(rep))
        return 1 if rep is not None else 0


def _local_count(m: Any, words: Any, n: int) -> None:
    for _ in range(n):
        mutex_enter(m)
        words[0] += 1
        mutex_exit(m)


def _local_pingpong(m: Any, cv: Any, words: Any, rounds: int) -> None:
    mutex_enter(m)
    for _ in range(rounds):
        while words[1] != 0:
            cv_wait(cv, m)
        words[1] = 1
        cv_signal(cv)
    mutex_exit(m)
