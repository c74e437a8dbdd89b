"""Pausing a running kernel at a quiescent point and checking its invariants
(``realfork.verify.quiesce``, ``System.check_running``), on both backends.

Busy programs fork, vfork, forkall (with sleeping lwps), create, suspend and
reap lwps, signal, hold P_PR_LOCK and wait, while the checker runs many times;
it must never report anything, and the programs must still compute what they
compute unpaused.  A field corrupted while paused, or a leaked "operation in
progress" mark, must be reported.  Programs order events with sleeps of at
least 200 ms and states they need last seconds; waits are bounded generously.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from helpers import boot_checked, opening

from realfork.api import RunResult, System
from realfork.kernel.structs import (
    LWP_STOPPED,
    P_PR_LOCK,
    SIDL,
    SRUN,
    SVFORK,
    SVFWAIT,
    SZOMB,
    TP_HOLDLWP,
)
from realfork.user.generate import generate
from realfork.verify.check import violations
from realfork.verify.quiesce import pause, quiescence, resume

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("backend")]

# Every worker (18 of them: with init and one child each, about 37 processes)
# runs ITERS rounds of: fork1 (child exits 3), vfork (child execs), forkall
# with its ticker lwp asleep (the clone's sleep is cut short), fork1 of a
# sleeper killed by SIGTERM, a caught SIGUSR1 to itself, lwp_create +
# lwp_wait, lwp_suspend + lwp_continue of the ticker, prlock of init for
# 1 ms.  Every exit status is checked: init exits 0 only if all were right.
# After its rounds a worker goes on until the test opens gate 63 (word 63 of
# every address space, ``helpers.opening``): a test that needs so many checks
# while the workers are busy opens it once it has them, however slow the
# machine makes the checks, instead of counting what fits in the run.
BUSY = """
main:
    sigaction SIGUSR1, catch
    mov r7, {workers}
spawn:
    fork1
    beq rv, 0, worker
    sub r7, 1
    bne r7, 0, spawn
reap:
    wait
    blt rv, 0, reaped
    beq st, 0, reap
    mov r5, 1
    jmp reap
reaped:
    exit r5

worker:
    lwp_create ticker
    mov r4, rv
    mov r6, {iters}
loop:
    spin 200
    fork1
    beq rv, 0, quick
    wait rv
    bne st, 3, bad
    vfork
    beq rv, 0, vchild
    wait rv
    bne st, 0, bad
    forkall
    beq rv, 0, fachild
    wait rv
    bne st, 0, bad
    fork1
    beq rv, 0, sleepy
    mov r3, rv
    sleep 1
    kill r3, SIGTERM
    wait r3
    bne st, 143, bad
    getpid
    kill rv, SIGUSR1
    lwp_create short
    lwp_wait rv
    bne err, 0, bad
    lwp_suspend r4
    lwp_continue r4
    getppid
    prlock rv, 1
    sleep 2
    sub r6, 1
    bne r6, 0, loop
    load r0, 63             ; at least iters rounds, and on until the test's gate
    beq r0, 0, loop
    store 0, 1
    lwp_wait r4
    exit 0
bad:
    exit 1
quick:
    spin 100
    exit 3
vchild:
    store 2, 1
    exec vtail
vtail:
    spin 10
    exit 0
fachild:
    sleep 3
    exit 0
sleepy:
    sleep 5000
    exit 0
short:
    spin 50
    lwp_exit
ticker:
    sleep 5
    load r0, 0
    beq r0, 0, ticker
    lwp_exit
"""

# Long-lived states a running kernel legitimately has, all at once for about
# 12 s: an unreaped zombie, an SVFWAIT vfork parent whose child sleeps in the
# borrowed address space, a forkall child with copies of sleeping lwps, an
# lwp held by lwp_suspend (in its parent and in the forkall child), P_PR_LOCK
# held by a prlock, and a process spinning in user mode (parked at the gate).
# The spinner goes on until init, having reaped the others, kills it.
# The tests read the kernel directly while ``pause`` holds it, and a pause
# parks the lwps at the gate but lets timed sleeps end: so no sleep of STATES
# may end, or wake for its heartbeat (every half deadline), while they read,
# however slowly the machine brings the states about.  The sleeps last 12 s
# and the kernel has a 60 s deadline (heartbeats every 30 s).
STATES_BOOT: dict[str, object] = {"nproc": 48, "maxlwps": 128, "deadlock_timeout": 60.0}
STATES = """
main:
    fork1
    beq rv, 0, spinner
    mov r6, rv
    fork1
    beq rv, 0, zombie_maker
    fork1
    beq rv, 0, vparent
    fork1
    beq rv, 0, multi
    fork1
    beq rv, 0, locker
    mov r7, 4
reap:
    wait
    sub r7, 1
    bne r7, 0, reap
    kill r6, SIGKILL
    wait r6
    bne st, 137, bad
    exit 0
bad:
    exit 1
spinner:
    spin 1000
    jmp spinner
zombie_maker:
    fork1
    beq rv, 0, quick
    sleep 12000
    wait
    exit 0
quick:
    exit 5
vparent:
    vfork
    beq rv, 0, vchild
    exit 0
vchild:
    sleep 12000
    exit 0
multi:
    lwp_create napper
    lwp_create napper
    mov r5, rv
    lwp_suspend r5
    forkall
    beq rv, 0, fchild
    sleep 12000
    lwp_continue r5
    wait
    exit 0
fchild:
    sleep 12000
    exit 0
napper:
    sleep 12000
    sleep 12000
    lwp_exit
locker:
    getppid
    prlock rv, 12000
    exit 0
"""

# init forks while a child holds init's P_PR_LOCK: cfork waits for it with an
# SIDL child (a fork caught half way) for seconds.  The locker tells init it
# is about to lock (SIGUSR1 cuts init's sleep short; should the signal come
# before init sleeps, the sleep ends by itself, still inside the lock), then
# locks for 8 s.
FORK_UNDER_PRLOCK = """
main:
    sigaction SIGUSR1, catch
    getpid
    mov r6, rv
    fork1
    beq rv, 0, locker
    sleep 3000
    sleep 300
    fork1
    beq rv, 0, kid
    wait
    wait
    exit 7
locker:
    kill r6, SIGUSR1
    prlock r6, 8000
    exit 0
kid:
    exit 0
"""


@contextmanager
def running(system: System, program: object, timeout: float = 200) -> Iterator[dict]:
    """Run ``program`` on another thread for the ``with`` block; the dict gets
    the result when the run ends (the block waits for it on the way out)."""
    out: dict = {}

    def body() -> None:
        out["result"] = system.run(program, timeout=timeout)  # type: ignore[arg-type]

    th = threading.Thread(target=body, name="pause-test-run")
    th.start()
    try:
        yield out
    finally:
        th.join(timeout + 30)
        assert not th.is_alive(), "the run did not end"


def wait_for(what: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "the program never reached the state"
        time.sleep(0.01)


def procs(system: System) -> list:
    K = system.K
    return [K.procs.slots[i] for i in K.procs.used()]


def clean(result: RunResult, status: int) -> None:
    assert result.report is None, str(result.report)
    assert result.status == status


# -- no false findings --------------------------------------------------------------------


def test_checks_while_busy_programs_run_find_nothing(backend: str) -> None:
    """The checker's own thread drives nothing: the run waits in ``run`` on
    another thread, and checks follow each other with short gaps."""
    with boot_checked(nproc=64, maxlwps=256) as system:
        found, done, skipped, nprocs = [], 0, 0, []
        enough = {63: lambda K: done >= 3}
        with opening(system.K, enough), running(system, BUSY.format(workers=18, iters=4)) as out:
            while "result" not in out:
                r = system.check_running(timeout=5)
                if r is None:
                    skipped += 1
                else:
                    done += 1
                    found += r
                    nprocs.append(system.K.g.nproc)
                time.sleep(0.02)
        clean(out["result"], 0)
        assert found == []
        assert done >= 3, (done, skipped)
        assert max(nprocs) >= 10


CHECKS = 300  # back-to-back checks per generated run (seconds of work, not minutes)


def test_checks_back_to_back_on_generated_programs_find_nothing(backend: str) -> None:
    """Random programs (every system call but /proc's), some with fork
    failures injected; the checker pauses the kernel again as soon as it has
    let it go.

    Back to back, the lwps move about one instruction between two checks, so
    a whole program checked that way takes minutes on a busy machine: each
    run is checked back to back for its first ``CHECKS`` quiescent points (or
    until it ends), then left to finish, so the test's length does not depend
    on the machine's speed."""
    found: list[str] = []
    done = 0
    for seed, faults in ((11, {}), (12, {"as_dup": {"probability": 30}}),
                         (13, {"getproc.maxup": {"probability": 30}}),
                         (14, {"forklwp": {"probability": 30}})):
        with boot_checked(nproc=48, maxlwps=192, faults=faults) as system:
            program = generate(seed, max_procs=20, max_lwps=5, length=150)
            with running(system, program) as out:
                checked = 0
                while "result" not in out and checked < CHECKS:
                    r = system.check_running(timeout=5)
                    if r is not None:
                        checked += 1
                        found += [f"seed {seed}: {v}" for v in r]
                done += checked
            assert out["result"].report is None, f"seed {seed}: {out['result'].report}"
    assert found == []
    assert done >= 4


@pytest.mark.skipif(not hasattr(System, "poll"), reason="System.start/poll not available")
def test_checks_from_the_thread_that_polls_find_nothing(backend: str) -> None:
    """The stress runner's way: the thread that started the run is the
    kernel's sched thread, and checks between two polls."""
    found, done = [], 0
    with boot_checked(nproc=64, maxlwps=256) as system, \
            opening(system.K, {63: lambda K: done >= 3}):
        system.start(BUSY.format(workers=18, iters=3))  # type: ignore[attr-defined]
        while system.running:  # type: ignore[attr-defined]
            system.poll(0.02)  # type: ignore[attr-defined]
            r = system.check_running(timeout=5)
            if r is not None:
                done += 1
                found += r
        clean(system.stop(), 0)  # type: ignore[attr-defined]
        assert found == []
        assert done >= 3


def test_live_states_are_legitimate(backend: str) -> None:
    """Zombies, an SVFWAIT parent sharing its address space with its vfork
    child, forkall copies of sleeping lwps, suspended lwps, P_PR_LOCK held by
    prlock and lwps parked at the gate: all there, and nothing reported."""
    with boot_checked(**STATES_BOOT) as system:
        K = system.K

        def everything_there() -> bool:
            ps = procs(system)
            return (any(s.p_stat == SZOMB for s in ps)
                    and any(s.p_flag & SVFWAIT for s in ps)
                    and any(s.p_proc_flag & P_PR_LOCK for s in ps)
                    and sum(1 for s in ps if s.p_lwpcnt == 3) >= 2)  # multi, its child

        with running(system, STATES) as out:
            wait_for(everything_there)
            assert system.check_running(timeout=5) == []
            assert pause(K, 5)
            try:
                ps = procs(system)
                assert everything_there()
                vf = [s for s in ps if s.p_flag & SVFORK]
                assert vf and all(
                    any(q.p_as == s.p_as and q.p_flag & SVFWAIT for q in ps) for s in vf)
                held = [i for i in K.dom.kthreads.used()
                        if K.lwps[i].t_proc_flag & TP_HOLDLWP
                        and K.lwps[i].t_kstate == LWP_STOPPED]
                assert len(held) >= 2  # the suspended napper and its forkall copy
                parked = [i for i in K.dom.kthreads.used()
                          if K.dom.kthreads.slots[i].t_wchan == K.kg_sync.pause_cv + 1]
                assert parked  # the spinner, at least
                assert violations(K, running=True) == []
            finally:
                resume(K)
        clean(out["result"], 0)


# -- and yet it finds ----------------------------------------------------------------------


def spinner(system: System) -> object:
    """STATES's spinner: the proc whose only lwp is parked at the gate."""
    K = system.K
    pw = K.kg_sync.pause_cv + 1
    kts = K.dom.kthreads
    for j in K.procs.used():
        s = K.procs.slots[j]
        tids = [i for i in kts.used() if K.lwps[i].t_procp == j + 1]
        if s.p_ppid == 1 and s.p_lwpcnt == 1 and tids and all(
                kts.slots[i].t_wchan == pw for i in tids):
            return s
    raise AssertionError("no process parked at the gate")


def test_a_field_corrupted_while_paused_is_reported(backend: str) -> None:
    with boot_checked(**STATES_BOOT) as system:
        K = system.K
        with running(system, STATES) as out:
            wait_for(lambda: any(s.p_flag & SVFWAIT for s in procs(system)))
            assert pause(K, 5)
            try:
                assert violations(K, running=True) == []
                K.g.nproc += 1
                found = violations(K, running=True)
                K.g.nproc -= 1
                assert any(v.startswith("A1 nproc") for v in found), found
                s = spinner(system)
                s.p_proc_flag |= P_PR_LOCK  # nobody is inside prlock for it
                found = violations(K, running=True)
                s.p_proc_flag &= ~P_PR_LOCK
                assert any(v.startswith("D17") and "P_PR_LOCK" in v for v in found), found
                assert violations(K, running=True) == []
            finally:
                resume(K)
        clean(out["result"], 0)


def test_a_leaked_operation_mark_is_reported_not_waited_for(backend: str) -> None:
    """A pool barrier count on a process whose only lwp is parked at the gate
    cannot belong to an operation in progress: the pause does not wait for
    it to go away, the checker reports it."""
    with boot_checked(**STATES_BOOT) as system:
        K = system.K
        with running(system, STATES) as out:
            wait_for(lambda: any(s.p_flag & SVFWAIT for s in procs(system)))
            assert pause(K, 5)
            try:
                s = spinner(system)
                s.p_poolcnt += 1
            finally:
                resume(K)
            found = system.check_running(timeout=5)
            assert pause(K, 5)
            try:
                s.p_poolcnt -= 1
            finally:
                resume(K)
            assert found is not None
            assert any(v.startswith("C14") and f"pid {s.p_pid} " in v for v in found), found
        clean(out["result"], 0)


# -- when it cannot, it says so and lets go -----------------------------------------------


def test_a_fork_caught_half_way_is_waited_for_then_given_up(backend: str) -> None:
    with boot_checked(nproc=32, maxlwps=64) as system:
        K = system.K
        with running(system, FORK_UNDER_PRLOCK) as out:
            def caught() -> bool:
                ps = procs(system)
                init = next((s for s in ps if s.p_pid == 1), None)
                return init is not None and bool(init.p_proc_flag & P_PR_LOCK) and any(
                    s.p_stat == SIDL and s.p_ppid == 1 for s in ps)

            wait_for(caught)
            t0 = time.monotonic()
            paused = pause(K, 0.3)
            if paused:
                resume(K)
            assert not paused
            assert system.check_running(timeout=0.3) is None
            assert time.monotonic() - t0 < 30
            assert K.g.pausing == 0  # let go again
            wait_for(lambda: "being created (SIDL)" in quiescence(K), timeout=5)
        clean(out["result"], 7)  # the fork went on once the lock was released
        assert system.check_running(timeout=5) == []  # between runs


NAPS = """
    mov r7, 2000
nap:
    sleep 1
    sub r7, 1
    bne r7, 0, nap
    exit 0
"""


def test_a_lone_napper_is_parked_not_read_under(backend: str) -> None:
    """The only lwp sleeps 1 ms at a time: the kernel looks quiescent while it
    sleeps, but every check outlasts the nap.  It must park on its way out
    (the pause posts its AST first), so the check completes, in time."""
    with boot_checked(nproc=16, maxlwps=32) as system:
        with running(system, NAPS) as out:
            wait_for(lambda: system.K.g.syscalls > 20)
            for _ in range(5):
                t0 = time.monotonic()
                assert system.check_running(timeout=5) == []
                assert time.monotonic() - t0 < 10
        clean(out["result"], 0)


STUCK = """
    getpid
    prstopfork rv, 1        ; init stops after its fork: nobody restarts it
    fork1
    beq rv, 0, child
    wait
    exit 0
child:
    exit 0
"""


def test_checks_do_not_hide_a_hang(backend: str) -> None:
    """Everybody asleep, nobody parked: checking over and over adds no
    progress, so the stuck lwp's deadline still ends the run as a hang.  (The
    deadline is the window in which the checks must come: 6 s, so a test
    thread kept off the CPU for seconds still checks; a check that made
    progress would push the end past the run's own 60 s limit.)"""
    with boot_checked(nproc=16, maxlwps=32, deadlock_timeout=6.0) as system:
        with running(system, STUCK, timeout=60) as out:
            done = 0
            while "result" not in out:
                if system.check_running(timeout=1) == []:
                    done += 1
                time.sleep(0.05)
        report = out["result"].report
        assert report is not None and report.kind == "hang", report
        assert out["result"].elapsed < 30
        assert done >= 1


def test_boot_returns_with_the_system_processes_asleep(
        backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """pageout's and fsflush's lwps are held, by a hook, between taking their
    p_lock and their idle sleep (where a loaded machine may leave them when
    their OS threads start late): boot must not return before they sleep,
    so the kernel is quiescent as soon as it is booted and after a short run
    (the checker ran between the two and found "D17 ... holds p_lock")."""
    import multiprocessing

    import realfork.kernel.main as kmain

    release = multiprocessing.get_context("fork").Event()  # shared with the hosts
    first = True
    real_cv_wait = kmain.cv_wait

    def held_on_the_way(cv: object, m: object, **kw: object) -> None:
        nonlocal first  # per OS process: each host has its own copy
        if first:
            first = False
            # p_lock is held here: hold the thread until the test has looked,
            # or 3 s (a boot that waits for the sleep must not hang)
            release.wait(3.0)
        real_cv_wait(cv, m, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(kmain, "cv_wait", held_on_the_way)
    try:
        with boot_checked(nproc=16, maxlwps=32) as system:
            K = system.K
            seen = quiescence(K)
            found = violations(K)
            r = system.run("exit 0", timeout=60)
            after = violations(K)
            release.set()
            assert (seen, found) == ("", [])
            clean(r, 0)
            assert after == []
    finally:
        release.set()


def test_pause_nests_and_an_idle_kernel_is_quiescent(backend: str) -> None:
    with boot_checked(nproc=16, maxlwps=32) as system:
        K = system.K
        assert quiescence(K) == ""  # boot has waited for pageout and fsflush to sleep
        assert pause(K, 5) and pause(K, 5)
        assert K.g.pausing == 2
        assert violations(K, running=True) == []
        resume(K)
        assert K.g.pausing == 1
        resume(K)
        resume(K)  # one too many: ignored
        assert K.g.pausing == 0
        assert system.check_running(timeout=5) == []
        assert K.dom.kthreads.hdr.nused == 2  # pageout and fsflush: no pauser left


def test_paused_lwps_run_on_with_the_same_results(backend: str) -> None:
    """Pause and resume often while the busy program runs: every exit status
    it checks is still right (BUSY exits 0 only then)."""
    with boot_checked(nproc=64, maxlwps=256) as system:
        K = system.K
        paused = 0
        # not gated on the pauses: a pause attempt that fails parks every lwp
        # for up to 2 s, and workers that went on until one succeeded might
        # never end.  The gate opens once the six workers run: they do their
        # rounds and stop, as before
        def workers_run(K: object) -> bool:
            return sum(1 for s in procs(system) if s.p_ppid == 1 and s.p_stat == SRUN) >= 6

        with opening(K, {63: workers_run}), \
                running(system, BUSY.format(workers=6, iters=4)) as out:
            while "result" not in out:
                if pause(K, 2):
                    paused += 1
                    time.sleep(0.02)  # parked for a while
                    resume(K)
                time.sleep(0.01)
        clean(out["result"], 0)
        assert paused >= 1
