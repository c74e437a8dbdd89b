"""Helpers shared by the tests (imported as a plain module: tests/ is on sys.path)."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from realfork.shm.segment import Layout

HERE = Path(__file__).parent
DEFAULT_BACKEND = "threads"  # the ``backend`` fixture switches it per test


def tool(name: str) -> ModuleType:
    """The script tools/<name>.py, imported as a module (tools/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE.parent / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None, name
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def words_layout(layout: Layout) -> None:
    layout.add("test_words", ctypes.c_int64, 64)



def run_child(name: str, role: str, *args: object, timeout: float = 60) -> subprocess.Popen:
    """Start tests/substrate_child.py in a new OS process attached to ``name``."""
    env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep +
               os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, str(HERE / "substrate_child.py"), name, role, *map(str, args)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def boot_checked(**params: object):
    """Boot a kernel; on leaving, run the invariant checker (unless it panicked)
    and shut it down."""
    import contextlib

    import realfork

    @contextlib.contextmanager
    def cm():
        params.setdefault("backend", DEFAULT_BACKEND)
        params.setdefault("nproc", 48)
        params.setdefault("maxlwps", 128)
        params.setdefault("deadlock_timeout", 10.0)
        system = realfork.boot(**params)
        try:
            yield system
            if not system.dom.panicked:
                system.check()
        finally:
            system.close()

    return cm()


def probe_names(result) -> list[str]:
    return [e.name.split(":::")[-1] for e in result.probes]


def run_clean(text: str, timeout: float = 90, **params: object):
    """Run ``text`` on a fresh kernel (checked on the way out); the result,
    which must carry no panic or deadlock report."""
    with boot_checked(**params) as system:
        result = system.run(text, timeout=timeout)
        assert result.report is None, str(result.report)
        return result


# -- gates: states a program cannot see, opened by the test ------------------------------

GATE = 63  # the address-space words gated programs poll: GATE, GATE - 1, ...


def lwp_in_syscall(K, pid: int, lwpid: int, name: str) -> bool:
    """Is lwp ``lwpid`` of ``pid`` asleep inside system call ``name`` (queued
    on a condition variable, no lock held)?"""
    from realfork.kernel.systab import SYSNUM
    from realfork.sync.structs import SYNC_CV, TS_SLEEP

    kts = K.dom.kthreads
    for i in kts.used():
        ts = kts.slots[i]
        if ts.t_pid == pid and ts.t_lwpid == lwpid:
            w = ts.t_wchan
            return (ts.t_state == TS_SLEEP and bool(w) and not ts.t_held[0]
                    and K.dom.syncs[w - 1].kind == SYNC_CV
                    and K.lwps[i].t_sysnum == SYSNUM[name])
    return False


def proc_of(K, pid: int):
    """The proc slot of ``pid`` (live or zombie), or None."""
    for i in K.procs.used():
        s = K.procs.slots[i]
        if s.p_pid == pid:
            return s
    return None


def opening(K, gates: dict):
    """A context manager: while it lasts, a watcher opens each gate
    ``word: predicate`` of ``gates`` (stores 1 into that word of every
    address space) once ``predicate(K)`` holds, in descending word order,
    each after the one before.  For a program that must wait for a state it
    cannot observe itself (an lwp asleep inside a system call, an lwp or a
    process that has exited, a fork that failed) instead of sleeping and
    hoping it came: it polls the word (``sleep 1; load r, word``)."""
    import contextlib
    import threading

    @contextlib.contextmanager
    def cm():
        stop = threading.Event()
        order = sorted(gates, reverse=True)

        def watch() -> None:
            for word in order:
                while not gates[word](K):
                    if stop.wait(0.002):
                        return
                for i in K.ases.used():
                    K.ases.slots[i].a_words[word] = 1

        watcher = threading.Thread(target=watch, name="gate-watcher", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join(30)

    return cm()


def run_gated(text: str, gates: dict, timeout: float = 90, **params: object):
    """Run ``text`` on a fresh kernel (checked on the way out) with ``gates``
    opened as the kernel gets there (``opening``); the result, which must
    carry no panic or deadlock report."""
    with boot_checked(**params) as system:
        with opening(system.K, gates):
            result = system.run(text, timeout=timeout)
        assert result.report is None, str(result.report)
        return result


def exited(pid: int, nexit: int = 1):
    """A gate: process ``pid``, the ``nexit``-th process to exit (counting
    from boot), has exited: a zombie, or reaped already.  (The count tells a
    pid that is gone from one that does not exist yet.)"""
    from realfork.kernel.structs import SZOMB

    def gate(K) -> bool:
        if K.g.nexit < nexit:
            return False
        s = proc_of(K, pid)
        return s is None or s.p_stat == SZOMB
    return gate


def reaped(pid: int, nexit: int = 1):
    """A gate: process ``pid``, the ``nexit``-th process to exit, has exited
    and been reaped (its slot is free)."""
    def gate(K) -> bool:
        return K.g.nexit >= nexit and proc_of(K, pid) is None
    return gate


def _lwps_asleep_stopped(pid: int, n: int, stopped: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """A gate: ``n`` lwps of process ``pid`` are stopped as ``stopped(lw)``
    says and asleep there (queued at the stop, not on the way to it)."""
    from realfork.kernel.structs import LWP_STOPPED
    from realfork.sync.structs import TS_SLEEP

    def gate(K) -> bool:
        kts = K.dom.kthreads
        return sum(1 for i in kts.used()
                   if kts.slots[i].t_pid == pid and kts.slots[i].t_state == TS_SLEEP
                   and K.lwps[i].t_kstate == LWP_STOPPED and stopped(K.lwps[i])) >= n
    return gate


# A gate names the stop it waits for, never "stopped, for any reason": every
# new lwp starts out stopped (PR_SUSPENDED, waiting for its creator's
# TS_CREATE), so such a gate on a child opens as the child is made, before
# the stop the test means, and what the program then does comes too early.
# A prrun then finds nothing /proc-stopped and withdraws the stop request
# not yet honoured (it returns 0 and the target runs on), or comes before
# the request is made (the target stops later with nobody to set it running).


def prstopped(pid: int, n: int = 1) -> Callable[[Any], bool]:
    """A gate: ``n`` lwps of process ``pid`` are stopped by /proc
    (PR_SYSEXIT: the forking lwp's stop on exit from a traced fork;
    PR_REQUESTED: a /proc stop request, such as the other lwps' stop on exit
    from fork, or a forking holder's stop in sympathy with one) and asleep
    there: exactly the stops ``prrun`` releases (``pr_setrun``)."""
    from realfork.kernel.structs import PR_REQUESTED, PR_SYSEXIT

    return _lwps_asleep_stopped(pid, n, lambda lw: lw.t_whystop in (PR_REQUESTED, PR_SYSEXIT))


def suspended(pid: int, n: int) -> Callable[[Any], bool]:
    """A gate: ``n`` lwps of process ``pid`` are suspended by ``lwp_suspend``
    (PR_SUSPENDED with TP_HOLDLWP) and asleep there; not a new lwp still
    waiting for its creator (TS_CREATE not given yet), which is PR_SUSPENDED
    with TP_HOLDLWP too."""
    from realfork.kernel.structs import PR_SUSPENDED, TP_HOLDLWP, TS_CREATE

    return _lwps_asleep_stopped(
        pid, n, lambda lw: lw.t_whystop == PR_SUSPENDED and bool(lw.t_proc_flag & TP_HOLDLWP)
        and bool(lw.t_schedflag & TS_CREATE))


def fork_failed(K) -> bool:
    """A gate: some fork has failed (the process table or maxup is full)."""
    return K.g.fork_fail >= 1
