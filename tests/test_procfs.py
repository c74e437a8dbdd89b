"""/proc control meeting fork: P_PR_LOCK, the agent lwp, inherit-on-fork
tracing and stop on exit from fork; and the proc provider's probes."""

from __future__ import annotations

import pytest
from helpers import boot_checked, lwp_in_syscall, opening, proc_of, prstopped

from realfork.kernel.structs import P_PR_FORK, P_PR_STOPFORK, P_PR_TRACE

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("backend")]

PROBES = ("proc:::create", "proc:::exec", "proc:::exit", "proc:::lwp-create",
          "proc:::lwp-start", "proc:::lwp-exit", "proc:::fork-fail",
          "proc:::vfork-wait-start", "proc:::vfork-wait-done", "proc:::relvm",
          "proc:::hold-start", "proc:::hold-done")


def test_stop_on_exit_from_fork_until_prrun() -> None:
    with boot_checked() as system:
        r = system.run("""
            getpid
            prstopfork rv, 1        ; our lwps stop on exit from fork
            fork1
            beq rv, 0, child
            exit 0                  ; never reached before the controller's prrun
        child:
            exit 0
        """, timeout=5)
        # init stopped itself with the fork's result; nothing runs it again
        assert r.report is not None and r.report.kind == "hang"


def test_stopped_child_is_released_by_prrun() -> None:
    # The controller sets the flags only once the parent is past its fork1
    # and asleep in wait: set while the parent is still on its way out of
    # fork1, they would stop it there (PR_SYSEXIT) with nobody to run it.
    gates = {63: lambda K: lwp_in_syscall(K, 1, 1, "wait")}
    with boot_checked() as system, opening(system.K, gates):
        r = system.run("""
            fork1
            beq rv, 0, controller
            mov r6, rv
            wait                    ; until the controller is done with us
            exit st
        controller:
            sleep 1
            load r0, 63             ; the gate: the parent is asleep in wait
            beq r0, 0, controller
            getppid
            mov r5, rv
            prstopfork r5, 1        ; the parent's children stop on exit from fork
            prfork r5, 1            ; and inherit tracing
            exit 0
        """, timeout=30)
        assert r.report is None and r.status == 0


def test_fork_child_stops_and_prrun_starts_it() -> None:
    def flags_set(K) -> bool:
        s = proc_of(K, 1)
        want = P_PR_FORK | P_PR_STOPFORK
        return s is not None and s.p_proc_flag & want == want

    def both_stopped(K) -> bool:  # init and its child (pid 5), on exit from fork
        return prstopped(1, 1)(K) and prstopped(5, 1)(K)

    # in that order; the controller sets the flags only once init is past
    # its first fork1 (set earlier, they would stop init on its way out of it)
    gates = {63: lambda K: lwp_in_syscall(K, 1, 1, "sleep"), 62: flags_set, 61: both_stopped}
    with boot_checked() as system, opening(system.K, gates):
        r = system.run("""
            fork1
            beq rv, 0, controller
            mov r6, rv
        flags:
            sleep 1
            load r0, 62             ; the gate: the controller has set our tracing flags
            beq r0, 0, flags
            fork1                   ; we and our child both stop on exit from fork
            beq rv, 0, child
            mov r5, rv              ; here only after the controller's prrun
            prrun r5                ; set the child running
            mov r1, rv              ; lwps set running: 1
            wait r5
            add r1, st
            wait r6
            exit r1
        child:
            exit 10
        controller:
            sleep 1
            load r0, 63             ; the gate: init is past its first fork1
            beq r0, 0, controller
            getppid
            mov r4, rv
            prfork r4, 1            ; the parent's children inherit its tracing
            prstopfork r4, 1        ; and the parent stops on exit from fork
        stopped:
            sleep 1
            load r0, 61             ; the gate: the parent and its child have stopped
            beq r0, 0, stopped
            prrun r4
            exit 0
        """, timeout=60)
        assert r.report is None, str(r.report)
        assert r.status == 11


def _run_in_background(system, text: str):
    import threading

    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("r", system.run(text, timeout=30)))
    th.start()
    return th, out


def _flags_of(system, pid: int, timeout: float = 20.0) -> int | None:
    import time

    K = system.K
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i in K.procs.used():
            s = K.procs.slots[i]
            if s.p_pid == pid and s.p_stat == 2:  # SRUN
                time.sleep(0.05)
                return int(s.p_proc_flag)
        time.sleep(0.005)
    return None


@pytest.mark.parametrize("inherit", [True, False])
def test_inherit_on_fork_copies_tracing_flags(inherit: bool) -> None:
    with boot_checked() as system:
        th, out = _run_in_background(system, f"""
            getpid
            prfork rv, {int(inherit)}
            fork1
            beq rv, 0, child
            wait
            exit 0
        child:
            sleep 400
            exit 0
        """)
        flags = _flags_of(system, 4)  # init is pid 1; pageout 2, fsflush 3
        th.join(60)
        assert out["r"].report is None
        assert flags is not None
        assert bool(flags & P_PR_FORK) == inherit
        assert bool(flags & P_PR_TRACE) == inherit


def test_every_proc_probe_fires_with_pid_and_lwpid() -> None:
    with boot_checked(faults={"as_dup": {"nth": 2}}) as system:
        r = system.run("""
            lwp_create worker
            vfork
            beq rv, 0, vchild
            wait
            fork1                   ; fails: as_dup (fork-fail)
            fork1
            beq rv, 0, child
            wait
            store 0, 1
            lwp_wait 0
            exit 0
        vchild:
            exec image
        image:
            exit 0
        child:
            exit 0
        worker:
            load r1, 0
            bne r1, 0, out
            sleep 5
            jmp worker
        out:
            lwp_exit
        """, timeout=30)
        assert r.report is None and r.status == 0
        names = {e.name for e in r.probes}
        for probe in PROBES:
            assert probe in names, probe
        for e in r.probes:
            if e.name.startswith("proc:::"):
                assert e.pid >= 1 and e.lwpid >= 1 and e.ts > 0, e
