"""Concurrent paths through fork: competing holders, exit against fork,
SIGKILL of a vfork parent, forkall clones resuming where they were held, and
the contract refusal for a SIGKILLed parent."""

from __future__ import annotations

import pytest
from helpers import boot_checked, run_clean

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("backend")]


run = run_clean


@pytest.mark.parametrize("second", ["fork1", "forkall", "vfork"])
def test_two_lwps_forking_at_once(second: str) -> None:
    # Two lwps of one process fork concurrently, 20 times each.  A competing
    # fork1/vfork holder waits in holdlwps' conflict loop; against a forkall
    # holder the call fails with EINTR and is retried.
    r = run(f"""
        lwp_create other
        mov r7, 20
    mine:
        fork1
        beq rv, 0, child
        blt rv, 0, retry_mine
        wait rv
        sub r7, 1
    retry_mine:
        bne r7, 0, mine
    reap_other:
        lwp_wait 0               ; a forkall by the other lwp interrupts it: EINTR
        beq err, EINTR, reap_other
        load r1, 1
        exit r1                  ; the other lwp's count of EINTR retries
    other:
        mov r6, 20
    theirs:
        {second}
        beq rv, 0, child
        blt rv, 0, retry
        wait rv
        sub r6, 1
        jmp again
    retry:
        bne err, EINTR, bad
        load r2, 1
        add r2, 1
        store 1, r2
    again:
        bne r6, 0, theirs
        lwp_exit
    child:
        exit 0
    bad:
        exit 99
    """)
    assert r.status is not None and r.status < 99
    forks = r.counters["sysfork"] + r.counters["sysforkall"] + r.counters["sysvfork"]
    if second == "forkall":
        # a forkall child holds a clone of the other lwp, which may fork on
        # from where it was held before the child exits
        assert forks >= 40
    else:
        assert forks == 40


def test_exit_while_another_lwp_forks() -> None:
    r = run("""
        fork1
        beq rv, 0, victim
        wait rv                  ; the victim itself, not a grandchild given to init
        exit st
    victim:
        lwp_create forker
        sleep 30
        exit 5                   ; exitlwps must stop the forker wherever it is
    forker:
        fork1
        beq rv, 0, grandchild
        wait
        jmp forker
    grandchild:
        exit 0
    """)
    assert r.status == 5


def test_sigkilled_vfork_parent_waits_for_relvm() -> None:
    r = run("""
        sigaction SIGUSR1, catch
        fork1
        beq rv, 0, parent
        mov r6, rv
    nap:
        sleep 60000              ; until a SIGUSR1 from the vfork child (EINTR)
        bne err, EINTR, nap
        sigaction SIGUSR1, ignore
        kill r6, SIGKILL         ; the parent is vforked: it dies only after relvm
        wait r6
        exit st
    parent:
        vfork
        beq rv, 0, vchild
        exit 0
    vchild:
        mov r7, 30
    tell:
        kill 1, SIGUSR1          ; tell init, again and again, that we are vforked
        sleep 10
        sub r7, 1
        bne r7, 0, tell
        exit 0
    """)
    assert r.status == 128 + 9
    relvm = [e.ts for e in r.probes if e.name == "proc:::relvm" and e.args[0] == 4]
    assert r.counters["vfork_waits"] == 1
    died = [e.ts for e in r.probes if e.name == "proc:::exit" and e.pid == 4]
    # the vfork child (relvm argument: its parent, pid 4) let go before its parent died
    assert relvm and died and relvm[0] < died[0]


def test_forkall_clones_resume_where_their_originals_were_held() -> None:
    # A counting lwp is held by forkall in the middle of a user-mode loop; its
    # clone in the child carries on from the same point with the same registers.
    r = run("""
        lwp_create counter
    wait_started:
        load r1, 2
        beq r1, 0, wait_started
        forkall
        beq rv, 0, child
        store 3, 1               ; stop our counter
        lwp_wait 0
        wait
        exit st
    child:
        store 3, 1               ; stop the clone
        lwp_wait 0
        load r2, 2               ; the clone's last count: at least the one copied
        blt r2, 1, bad
        exit 0
    bad:
        exit 1
    counter:
        add r5, 1
        store 2, r5
        load r4, 3
        beq r4, 0, counter
        lwp_exit
    """)
    assert r.status == 0
    assert r.counters["sysforkall"] == 1


def test_contract_refuses_a_child_of_a_sigkilled_parent() -> None:
    from realfork.kernel.resources import contract_process_fork
    from realfork.kernel.structs import SKILLED
    from realfork.machine.threads import ThreadFactory

    with boot_checked() as system:
        K = system.K
        p0, pageout = K.procs_h(0), K.procs_h(1)
        with ThreadFactory.adopt(K.dom, "test"):
            before = K.contracts.slots[p0.s.p_ct_process - 1].conp_nmembers
            saved = pageout.s.p_ct_process
            p0.s.p_flag |= SKILLED
            try:
                assert contract_process_fork(K, 0, pageout, p0, True) == 0
                # a kernel caller that cannot fail is not refused
                ct = contract_process_fork(K, 0, pageout, p0, False)
                assert ct == p0.s.p_ct_process
                c = K.contracts.slots[ct - 1]
                assert c.conp_nmembers == before + 1
                c.conp_nmembers -= 1  # undo, so the checker sees boot state
                c.ct_ref -= 1
                pageout.s.p_ct_process = saved
            finally:
                p0.s.p_flag &= ~SKILLED
