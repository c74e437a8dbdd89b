"""Pausing a running kernel at a quiescent point, so the invariant checker
can look at it while programs run.

``pause(K, timeout)`` parks every user lwp and waits, at most ``timeout``
seconds, until the kernel is quiescent; ``resume(K)`` lets the lwps go;
``check_running(K, timeout)`` pauses, runs ``violations(K, running=True)``,
makes sure nothing moved while the checker read, and resumes.

The gate.  ``pause`` raises ``kglobals.pausing`` (a count: pauses may
overlap) and posts an AST to every user lwp, as
``aston`` does (``t_astflag``, no lock).  The interpreter takes the AST trap
at its next instruction boundary (a ``spin`` is cut short, a ``sleep`` or
other system call runs on).  ``sig_check`` -- the AST trap and the way out of
every system call, where the lwp holds no lock -- calls ``pause_gate``
(``realfork.kernel.pause``: the gate is the kernel's, this module only drives it): while
``pausing`` is set the lwp sleeps on ``pause_cv``.  The sleep is *idle* (its
deadline re-arms, so a pause is never a hang) and *interruptible*: to the rest
of the kernel a parked lwp is an lwp in user mode, so a hold (``holdlwps`` of
fork1, forkall, vfork, exit or exec; ``lwp_suspend``), a /proc stop or a
signal wakes it like any interruptible sleep; it leaves the gate, takes the
request in ``sig_check`` (stops, exits, ...) and parks again at its next
instruction boundary.  So a fork, exit or exec in progress runs to its end
while everything around it stands still.  ``resume`` lowers the count and,
at zero, broadcasts ``pause_cv``.  Both backends: the flag, the lock, the
condition variable and the lwps' AST flags are in the segment, so lwps hosted
by other OS processes park the same way.  While lwps are parked the pauser
counts progress for them (``sync_globals.progress``), as they would have
while running: a patient waiter does not call a pause a hang, and a kernel
where nobody parked (everyone asleep) gets none, so a real hang stays one.

Quiescence.  The kernel is quiescent when

* every kernel thread but the pauser's sleeps (``TS_SLEEP``, still queued) on
  a condition variable holding no lock (``t_held[0] == 0``): parked at the
  gate, in a system call that sleeps (``wait``, ``sleep``, ``lwp_wait``,
  vfwait, a hold or /proc stop, ``pageout``/``fsflush`` idle (from the
  end of boot on: ``kernel_main`` waits until they are), the
  supervisor's ``sched`` thread waiting for init in ``run``/``poll``).  A
  running thread, one blocked on a mutex or rwlock, one woken but not yet
  running (``t_wchan`` cleared) or one between queueing itself and dropping
  its mutex is not; and
* no operation is caught half way at one of its sleeps: a fork (SIDL child,
  ``p_poolcnt``, SHOLDFORK/SHOLDFORK1 while it holds the others, SFORKING,
  ``fork_fail_pending`` while a failed fork is punished), an exit or exec
  (SEXITLWPS, ``p_poolcnt``, P_PR_EXEC), the end of a vfork wait (an lwp
  with T_VFPARENT, or in the 2006 kernel one returning from vfork, whose
  process no longer has SVFWAIT).  Such a state counts
  only while some thread of the process (of its parent, for an SIDL child;
  any forker or p0 thread, for the global counters) sleeps in the kernel,
  i.e. could be the one carrying the operation out.  When every thread of
  the process is parked nobody is, so the state is a leak: it does not hold
  the pause up, and the checker reports it (A4, A6, C14, D16, D18 ...).
* while a run is ending (init has exited and another thread may be running
  ``_end_run``), the kernel is not quiescent.

Stable reads.  A sleeper whose timed wait ends (``sleep``, a /proc
``prlock`` delay, the supervisor's 20 ms poll) may run while the checker
reads.  ``check_running`` therefore takes a fingerprint of every kernel
thread at quiescence -- slot generation, ``t_wchan`` and ``t_sleep_ns``,
the time it queued itself, read in that order -- and again after the check;
a thread that woke in between either is not asleep any more or has queued
itself again with a later ``t_sleep_ns``.  If anything differs (or the run
changed, or the kernel panicked) the result is thrown away and the checker
runs again at the next quiescent point, within the same ``timeout``.
``check_running(K, timeout, when)`` checks only at a point where
``when(K)`` holds, read between the two fingerprints.  ``pause`` alone
makes no such promise: a timed sleep (``sleep``, a ``prlock`` delay, the
heartbeat of a long ``sleep`` every half deadline) may end while it holds,
and its lwp run on, holding ``p_lock`` for a moment, until it parks; a
caller reading the kernel under ``pause`` must know that no timed sleep
can end meanwhile.  The
``sched`` thread's waits on ``run_cv`` are exempt (in ``run``/``poll`` it
only drains probes); instead ``run_seq``, ``init_exited`` and ``proc_init``
must not change.

Who may call.  Any OS thread of the process that booted the kernel, kernel
thread or not: the pauser needs none (``resume`` wakes the parked lwps
without taking ``pause_lock``, see ``_end``).  A caller that is a kernel
thread -- the one that called ``System.start`` and ``poll``s, between polls
-- is not waited for.  While a run is in progress its ``sched`` thread must
otherwise be waiting in ``run``/``poll``, not running the caller's own code,
or the kernel never looks quiescent: call from the thread that drives
``start``/``poll``, or from another thread while that one waits in ``run``.

A parked lwp holds no lock, and the only waits on it that do not wake it
are patient ones (``wait``, ``lwp_wait``, vfwait: see progress above); the
others (holds, stops, signals) wake it.  So deadlines keep their meaning,
and a parked lwp itself never expires.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import KernelPanic
from ..kernel.structs import (
    P_PR_EXEC,
    SEXITLWPS,
    SFORKING,
    SHOLDFORK,
    SHOLDFORK1,
    SHOLDWATCH,
    SIDL,
    SVFWAIT,
    T_VFPARENT,
    proc_t,
)
from ..kernel.syscall import vfwait_due
from ..kernel.systab import FORKS
from ..sync.condvar import cv_broadcast
from ..sync.kthread import _cpu
from ..sync.structs import KIND_NAMES, STATE_NAMES, SYNC_CV, TS_SLEEP
from .check import violations

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel

__all__ = ["check_running", "pause", "quiescence", "resume"]

POLL_S = 0.002  # between looks while waiting for quiescence
IN_PROGRESS = SHOLDFORK | SHOLDFORK1 | SHOLDWATCH | SEXITLWPS | SFORKING

# Fingerprint: kthread id -> (slot generation, t_wchan, t_sleep_ns); key 0 holds
# (run_seq, init_exited, proc_init).  A run_cv sleeper is (generation, -1, 0).
Fingerprint = dict[int, tuple[int, int, int]]

_count = threading.Lock()  # changes of kglobals.pausing (pausers run in the supervisor)


# -- the pauser ------------------------------------------------------------------------


def _me() -> int:
    """The calling thread's kthread id (0 if it is none): not waited for."""
    me = getattr(_cpu, "t", None)
    return me.id if me is not None else 0


def _begin(K: Kernel) -> None:
    with _count:
        K.g.pausing += 1


def _parked_progress(K: Kernel) -> None:
    """Count progress for the lwps parked at the gate: they were running user
    code and would have (patient waiters re-arm their deadlines instead of
    calling a pause a hang).  A kernel where nobody parked, all asleep, gets
    none, so a real hang is still one."""
    if K.pause_cv.s.whead:
        K.progress()


def _end(K: Kernel) -> None:
    """Lower ``pausing``; at zero, wake every parked lwp.

    No kernel thread needed (one adopted here could be the one a full thread
    table no longer has, and the lwps would stay parked).  Instead of holding
    ``pause_lock`` while clearing the flag, broadcast until ``pause_lock`` is
    seen free (under its chain lock, after the flag is clear): an lwp that
    read the flag still set held the lock until it was queued on
    ``pause_cv``, so that broadcast finds it; one that takes the lock later
    reads the flag clear."""
    m, cv = K.pause_lock, K.pause_cv
    dom = K.dom
    try:
        with _count:
            g = K.g
            if g.pausing <= 0:
                return
            g.pausing -= 1
            if g.pausing:
                return
            _parked_progress(K)
            while True:
                dom.chain_enter(m.lk)
                free = not m.s.owner and not m.s.whead
                m.lk.release()
                cv_broadcast(cv)
                if free:
                    break
                time.sleep(0.0002)
    except KernelPanic:
        pass  # every sleeper, parked or not, is unwinding anyway


def _post_asts(K: Kernel) -> None:
    """An AST to every user lwp not parked yet (no lock, like aston)."""
    slots = K.dom.kthreads.slots
    pause_w = K.kg_sync.pause_cv + 1
    for i in K.dom.kthreads.used():
        ts = slots[i]
        if ts.t_pid and ts.t_wchan != pause_w:
            ts.t_astflag = 1


def _scan(K: Kernel, me: int) -> tuple[Fingerprint | None, str]:
    """The fingerprint of a quiescent kernel, or (None, why it is not)."""
    dom = K.dom
    if dom.g.panicked or dom.g.shutting_down:
        return None, "the kernel has panicked or is shutting down"
    g = K.g
    slots = dom.kthreads.slots
    syncs = dom.syncs
    pause_w = K.kg_sync.pause_cv + 1
    run_w = K.kg_sync.run_cv + 1
    fp: Fingerprint = {0: (g.run_seq, g.init_exited, g.proc_init)}
    busy: set[int] = set()  # procs with a thread asleep in the kernel (not parked)
    vfparent: set[int] = set()  # procs with a T_VFPARENT lwp
    forking = False  # a forker or p0 thread asleep in the kernel
    others_p0 = False  # another p0 thread (the run's sched) is there
    for i in dom.kthreads.used():
        tid = i + 1
        if tid == me:
            continue
        ts = slots[i]
        gen = ts.slot_gen
        state = ts.t_state
        w = ts.t_wchan  # before t_sleep_ns: see "Stable reads"
        since = ts.t_sleep_ns
        if state != TS_SLEEP or not w or syncs[w - 1].kind != SYNC_CV or ts.t_held[0]:
            return None, _not_asleep(K, tid, state, w)
        lw = K.lwps[i]
        if w == run_w:  # sched, in run or poll
            fp[tid] = (gen, -1, 0)
            others_p0 = True
            continue
        fp[tid] = (gen, w, since)
        if not ts.t_pid:  # a p0 thread asleep in the kernel: sched in newproc (init)
            others_p0 = forking = True
            if lw.t_procp:
                busy.add(lw.t_procp)
            continue  # (the rest of its klwp may be stale)
        if lw.t_flag & T_VFPARENT or (not K.fixed("6533431")
                                      and vfwait_due(K, lw, lw.t_sysnum)):
            vfparent.add(lw.t_procp)  # the 2006 kernel has no mark: the return values
        if w == pause_w:
            continue
        if lw.t_procp:
            busy.add(lw.t_procp)
        if lw.t_sysnum in FORKS:
            forking = True
    if g.init_exited and g.proc_init and others_p0:
        return None, "the run is ending (init has exited)"
    if forking and g.fork_fail_pending:
        return None, f"fork_fail_pending is {g.fork_fail_pending} (a failed fork is punished)"
    if forking and g.pool_barrier_count:
        return None, f"pool_barrier_count is {g.pool_barrier_count}"
    P = K.procs.slots
    ptr, n = g.practive, 0
    while ptr and n <= K.procs.capacity:
        s = P[ptr - 1]
        why = _in_progress(s, ptr in vfparent)
        if why and (s.p_parent if s.p_stat == SIDL else ptr) in busy:
            return None, f"pid {s.p_pid} {why}"
        ptr, n = s.p_next, n + 1
    return fp, ""


def _in_progress(s: proc_t, vfparent: bool) -> str:
    """What operation proc ``s`` is in the middle of, or ""."""
    if s.p_stat == SIDL:
        return "is being created (SIDL)"
    if s.p_poolcnt:
        return "is inside a pool barrier (fork, exit or exec)"
    if s.p_flag & IN_PROGRESS:
        return "is held, forking or exiting its lwps"
    if s.p_proc_flag & P_PR_EXEC:
        return "is in exec"
    if vfparent and not s.p_flag & SVFWAIT:
        return "is finishing a vfork wait"
    return ""


def _not_asleep(K: Kernel, tid: int, state: int, w: int) -> str:
    dom = K.dom
    who = dom.thread_name(tid)
    if state == TS_SLEEP and w:
        kind = KIND_NAMES.get(dom.syncs[w - 1].kind, "?")
        if kind != "condvar":
            return f"{who} is blocked on a {kind}"
        return f"{who} sleeps holding a lock"
    if state == TS_SLEEP:
        return f"{who} has been woken and is about to run"
    return f"{who} is {STATE_NAMES.get(state, state)}"


def _wait_quiescent(K: Kernel, me: int, deadline: float) -> Fingerprint | None:
    while True:
        # ASTs first: an lwp asleep in a system call now parks on its way out
        # instead of running on when its sleep ends (and moving under the checker)
        _post_asts(K)
        fp, _why = _scan(K, me)
        if fp is not None:
            return fp
        if K.dom.g.panicked or time.monotonic() >= deadline:
            return None
        _parked_progress(K)
        time.sleep(POLL_S)


def _stable(K: Kernel, me: int, fp: Fingerprint) -> bool:
    """Has no kernel thread moved since ``fp`` was taken?"""
    dom = K.dom
    g = K.g
    if dom.g.panicked or fp[0] != (g.run_seq, g.init_exited, g.proc_init):
        return False
    slots = dom.kthreads.slots
    now = [i + 1 for i in dom.kthreads.used() if i + 1 != me]
    if len(now) != len(fp) - 1:
        return False
    for tid in now:
        was = fp.get(tid)
        if was is None:
            return False
        ts = slots[tid - 1]
        if ts.slot_gen != was[0]:
            return False
        if was[1] == -1:
            continue  # sched polling run_cv: run_seq and init_exited say it stayed
        w = ts.t_wchan
        if ts.t_state != TS_SLEEP or w != was[1] or ts.t_sleep_ns != was[2]:
            return False
    return True


# -- the API ---------------------------------------------------------------------------


def pause(K: Kernel, timeout: float) -> bool:
    """Park every user lwp and wait, at most ``timeout`` seconds, until the
    kernel is quiescent.  True: it is, and stays paused until ``resume(K)``
    (timed sleeps may still end, and their lwps park).  False: it did not
    get there in time (or has panicked); the lwps are let go again."""
    deadline = time.monotonic() + timeout
    _begin(K)
    try:
        fp = _wait_quiescent(K, _me(), deadline)
    except BaseException:
        _end(K)
        raise
    if fp is None:
        _end(K)
        return False
    return True


def resume(K: Kernel) -> None:
    """End one ``pause``: when none is left, the parked lwps run on."""
    _end(K)


def check_running(K: Kernel, timeout: float,
                  when: Callable[[Kernel], bool] | None = None) -> list[str] | None:
    """Pause, run the invariant checker on the live kernel, resume.

    The violations (empty when every invariant holds), or None when the
    kernel did not reach a quiescent point, with nothing moving while the
    checker read, within ``timeout`` seconds.  With ``when``, only a
    quiescent point at which ``when(K)`` holds (read while paused, so it
    still holds when the checker reads) will do: at the others the lwps are
    let go for a moment, and the pause is tried again."""
    deadline = time.monotonic() + timeout
    me = _me()
    _begin(K)
    try:
        while True:
            fp = _wait_quiescent(K, me, deadline)
            if fp is None:
                return None
            if when is None or when(K):
                found = violations(K, running=True)
                if _stable(K, me, fp):
                    return found
            elif _stable(K, me, fp):
                # quiescent, but not yet the state looked for: let it run on
                _end(K)
                time.sleep(POLL_S)
                _begin(K)
            if time.monotonic() >= deadline:
                return None  # something kept moving under the checker
            time.sleep(POLL_S)
    finally:
        _end(K)


def quiescence(K: Kernel) -> str:
    """Why the kernel is not quiescent right now ("" if it is); for reports."""
    return _scan(K, _me())[1]
