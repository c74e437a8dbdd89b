"""fork(2) and vfork(2) as the illumos manual pages describe them, driven by
real concurrent lwps through programs."""

from __future__ import annotations

import pytest
from helpers import (
    boot_checked,
    fork_failed,
    lwp_in_syscall,
    opening,
    probe_names,
    run_clean,
    run_gated,
)

from realfork.kernel.errno_defs import EAGAIN, ECHILD, EINTR
from realfork.kernel.structs import P_PR_LOCK

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("backend")]

SIGUSR1 = 16


run = run_clean


@pytest.mark.parametrize("call", ["fork1", "forkall", "vfork"])
def test_return_values_pids_and_ppid(call: str) -> None:
    # parent: rv = child pid; child: rv = 0, getppid = parent, getpid = the parent's rv
    r = run(f"""
        getpid
        mov r5, rv              ; my pid
        {call}
        beq rv, 0, child
        mov r1, rv              ; child pid as the parent sees it
        wait
        bne rv, r1, bad         ; wait reaped that child
        bne st, 0, bad          ; the child verified everything
        beq r1, r5, bad         ; a new pid
        exit 0
    child:
        getppid
        bne rv, r5, bad_child
        getpid
        beq rv, r5, bad_child
        exit 0
    bad_child:
        exit 3
    bad:
        exit 1
    """)
    assert r.status == 0


def test_wait_reports_exit_status_and_echild() -> None:
    r = run("""
        fork1
        beq rv, 0, child
        wait
        mov r1, st
        wait                    ; no children left
        bne err, ECHILD, bad
        bne rv, -1, bad
        exit r1
    child:
        exit 42
    bad:
        exit 1
    """)
    assert r.status == 42
    assert ECHILD == 10


@pytest.mark.parametrize("call, lwps", [("fork1", 1), ("vfork", 1), ("forkall", 3)])
def test_child_lwp_count(call: str, lwps: int) -> None:
    r = run(f"""
        lwp_create worker
        lwp_create worker
        spin 2000
        {call}
        beq rv, 0, child
        wait
        store 10, 1             ; let the workers go
        lwp_wait 0
        lwp_wait 0
        exit st
    child:
        exit 0
    worker:
        load r1, 10
        beq r1, 0, worker_wait
        lwp_exit
    worker_wait:
        sleep 5
        jmp worker
    """)
    creates = [e for e in r.probes if e.name == "proc:::create" and e.args[1] in (0, 1, 2)]
    assert len(creates) == 1
    assert creates[0].args[2] == lwps  # the child's p_lwpcnt when it was published


def test_child_has_no_pending_signals() -> None:
    r = run("""
        sigaction SIGUSR1, catch
        sigmask SIGUSR1, 1
        getpid
        kill rv, SIGUSR1        ; pending, blocked
        fork1
        beq rv, 0, child
        wait
        mov r1, st
        sigmask SIGUSR1, 0      ; the parent's is still pending: caught, consumed
        exit r1
    child:
        sigaction SIGUSR1, default
        sigmask SIGUSR1, 0      ; a pending SIGUSR1 would kill the child now
        exit 5
    """)
    assert r.status == 5


@pytest.mark.parametrize("call, expect", [("vfork", 128 + SIGUSR1), ("fork1", 0)])
def test_caught_handlers_reset_in_vfork_child(call: str, expect: int) -> None:
    r = run(f"""
        sigaction SIGUSR1, catch
        {call}
        beq rv, 0, child
        wait
        exit st
    child:
        getpid
        kill rv, SIGUSR1        ; vfork child: SIG_DFL again, so this kills it
        exit 0
    """)
    assert r.status == expect


def test_fork_copies_the_address_space() -> None:
    r = run("""
        store 7, 100
        fork1
        beq rv, 0, child
        wait
        load r1, 7              ; the child's store did not reach us
        add r1, st              ; the child saw 100, exited 100 - 100
        exit r1
    child:
        load r2, 7
        store 7, 555
        sub r2, 100
        exit r2
    """)
    assert r.status == 100


def test_vfork_shares_the_address_space() -> None:
    r = run("""
        store 7, 100
        vfork
        beq rv, 0, child
        load r1, 7
        wait
        exit r1
    child:
        store 7, 123
        exit 0
    """)
    assert r.status == 123


def sleeper_program(call: str, report: str) -> str:
    """An lwp sleeps interruptibly while the main lwp calls ``call``.  The
    sleeper stores its errno in word 0; ``report`` picks whose errno init
    exits with: the parent's sleeper, or the child's clone of it.  Run it
    with ``run_gated(..., SLEEPER_ASLEEP)``: the main lwp calls once the
    kernel shows the sleeper asleep, and forkall's sleeper sleeps long
    enough (forkall ends it early) to be still asleep then, however slow."""
    return f"""
        lwp_create sleeper
    wait_asleep:
        sleep 1
        load r3, 63             ; the test's gate: the sleeper is inside its sleep
        beq r3, 0, wait_asleep
        {call}
        beq rv, 0, child
        lwp_wait 0
        load r1, 0              ; the parent's sleeper: its errno
        wait
        mov r2, st              ; the child's exit status
        {"exit r1" if report == "parent" else "exit r2"}
    child:
        lwp_wait 0              ; forkall: the clone of the sleeper (else ESRCH at once)
        load r1, 0
        exit r1
    sleeper:
        sleep {5000 if call == "forkall" else 400}
        store 0, err
        lwp_exit
    """


SLEEPER_ASLEEP = {63: lambda K: lwp_in_syscall(K, 1, 2, "sleep")}  # init's lwp 2


@pytest.mark.parametrize("report", ["parent", "child"])
def test_forkall_interrupts_sleepers_with_eintr_in_parent_and_child(report: str) -> None:
    r = run_gated(sleeper_program("forkall", report), SLEEPER_ASLEEP)
    assert r.status == EINTR


def test_fork1_does_not_interrupt_sleepers() -> None:
    r = run_gated(sleeper_program("fork1", "parent"), SLEEPER_ASLEEP)
    assert r.status == 0  # the sleep ran to its end
    names = probe_names(r)
    assert "hold-start" in names and "hold-done" in names


def test_vfork_parent_waits_for_relvm_and_its_other_lwps_stay_held() -> None:
    r = run("""
        lwp_create counter
        spin 5000
        vfork
        beq rv, 0, child
        load r1, 3              ; the counter's progress while the child ran
        store 10, 1             ; stop the counter
        lwp_wait 0
        wait
        exit r1
    child:
        load r2, 1
        sleep 100               ; the counter would advance now if it ran
        load r3, 1
        sub r3, r2
        store 3, r3
        exit 0
    counter:
        load r4, 10
        bne r4, 0, done
        add r5, 1
        store 1, r5
        jmp counter
    done:
        lwp_exit
    """)
    assert r.status == 0
    names = [n for n in probe_names(r) if n in ("vfork-wait-start", "relvm", "vfork-wait-done")]
    assert names[:3] == ["vfork-wait-start", "relvm", "vfork-wait-done"]


def test_relvm_retries_while_the_parent_is_proc_locked() -> None:
    def init_pr_locked(K) -> bool:
        s = next((K.procs.slots[i] for i in K.procs.used() if K.procs.slots[i].p_pid == 1),
                 None)
        return s is not None and bool(s.p_proc_flag & P_PR_LOCK)

    r = run_gated("""
        fork1
        beq rv, 0, controller
        mov r6, rv
    locked:
        sleep 1
        load r0, 63             ; the gate: the controller holds P_PR_LOCK on us
        beq r0, 0, locked
        vfork
        beq rv, 0, vchild
        wait
        wait
        exit 0
    vchild:
        exit 0                  ; relvm must wait until /proc lets go of the parent
    controller:
        getppid
        prlock rv, 3000         ; long enough for a slow machine to vfork inside it
        exit 0
    """, {63: init_pr_locked})
    assert r.status == 0
    ev = {e.name.split(":::")[-1]: e for e in r.probes}
    # the child's relvm happened only after the controller's hold ended, which
    # was at least 200 ms after the vfork unless the machine stalled for 2.8 s
    creates = [e for e in r.probes if e.name == "proc:::create" and e.args[1] == 1]
    relvm = [e for e in r.probes if e.name == "proc:::relvm" and e.args[0] == 1]
    assert creates and relvm
    assert relvm[0].ts - creates[0].ts >= 200_000_000
    assert "vfork-wait-done" in ev


def test_vfork_lwp_suspend_race_6339942_does_not_deadlock() -> None:
    r = run("""
        mov r7, 30
    again:
        lwp_create suspender
        vfork
        beq rv, 0, child
        lwp_wait 0
        wait
        sub r7, 1
        bne r7, 0, again
        exit 0
    child:
        exit 0
    suspender:
        lwp_suspend 1
        lwp_continue 1
        lwp_exit
    """)
    assert r.status == 0


def test_agent_lwp_may_not_fork() -> None:
    r = run("""
        fork1
        beq rv, 0, child
        mov r6, rv
        sleep 20
        pragent r6
        mov r1, rv
        kill r6, SIGKILL
        wait
        exit r1
    child:
        sleep 60000             ; alive until killed, however slow the parent
        exit 0
    """)
    assert r.status == 48  # ENOTSUP


def test_running_out_of_processes_then_back_to_boot_state() -> None:
    with boot_checked(nproc=24, maxup=10) as system:
        before = system.counters()["nproc"]
        with opening(system.K, {63: fork_failed}):
            r = system.run("""
                setuid 100           ; a plain user: maxup applies
            more:
                fork1
                beq rv, 0, child
                blt rv, 0, full
                add r1, 1
                jmp more
            full:
                mov r2, err
            reap:
                wait
                bne rv, -1, reap
                exit r2
            child:
                sleep 1
                load r0, 63          ; the gate: alive until the parent has filled the table
                beq r0, 0, child
                exit 0
            """, timeout=60)
        assert r.report is None
        assert r.status == EAGAIN
        assert r.counters["fork_fail"] >= 1
        assert system.counters()["nproc"] == before
