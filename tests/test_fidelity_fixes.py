"""Emulation mistakes of realfork's own (not illumos's), fixed in both kernel
profiles; each fix has a test here that fails on the old emulation.

1. pids wrap on *reaching* ``maxpid``: the largest pid is ``maxpid - 1``;
2. lwp 1 of init is ``lwp_wait()``able (exec makes it so in illumos), so is
   its clone in a fork1/forkall child, and ``lwp_wait`` of a live lwp without
   TP_TWAIT is ESRCH at once;
3. forklwp's source check is the whole ASSERT: the caller, or SUSPENDED with
   ``lwp_asleep == 0``;
4. an ``rctl_dup`` fault site that always fails cannot make a fork retry
   forever;
5. any error ``as_dup`` could return may be injected, and cfork maps all but
   ENOMEM to EAGAIN.

Ordering uses gates (``helpers.run_gated``) where an lwp must be in some
state before another acts; no test asserts how long anything took.
"""

from __future__ import annotations

import pytest
from helpers import boot_checked, lwp_in_syscall, run_gated, suspended

from realfork.errors import BadInput
from realfork.kernel import fork as fork_mod
from realfork.kernel.errno_defs import (
    EAGAIN,
    EFAULT,
    EINTR,
    EINVAL,
    EIO,
    ENOMEM,
    ENXIO,
    ESRCH,
)
from realfork.kernel.faults import RCTL_DUP_MAX_RETRIES, parse_fault_spec
from realfork.kernel.structs import TP_TWAIT

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("backend")]

# None of these is a profile delta: the fixed behaviour is the same in both.
PROFILES = pytest.mark.parametrize("profile", ["fixed", "2006"])


def run(text: str, gates: dict | None = None, **params: object):
    """Run ``text`` as init on a fresh kernel (checked on the way out); the
    run must end cleanly."""
    return run_gated(text, gates or {}, timeout=60, **params)


def fork_fails(result) -> list[int]:
    """The errnos of the run's failed forks (``proc:::fork-fail``)."""
    return [e.args[0] for e in result.probes if e.name == "proc:::fork-fail"]


# -- 1. pid_assign wraps on reaching maxpid ---------------------------------------------

NFORKS = 30
FORK_MANY = f"""
    mov r0, 0
again:
    fork1
    blt rv, 0, failed
    beq rv, 0, child
    wait
    add r0, 1
    blt r0, {NFORKS}, again
    exit 0
failed:
    exit err
child:
    exit 0
"""


@PROFILES
def test_pids_wrap_on_reaching_maxpid_so_maxpid_is_never_handed_out(profile: str) -> None:
    maxpid = 12
    r = run(FORK_MANY, nproc=12, maxpid=maxpid, kernel=profile)
    assert r.status == 0
    pids = [e.pid for e in r.probes if e.name == "proc:::create"]
    forked = pids[-NFORKS:]  # init's children (boot made the ones before)
    assert len(forked) == NFORKS
    assert maxpid not in pids
    assert max(forked) == maxpid - 1
    assert len(set(forked)) < NFORKS  # the search went round and reused pids


# -- 2. TP_TWAIT: lwp 1 of init and of its children is lwp_wait()able -----------------------

@PROFILES
def test_lwp_1_of_init_is_reaped_by_lwp_wait(profile: str) -> None:
    # The old init's lwp 1 lacked TP_TWAIT: it left no zombie, and lwp_wait 1
    # gave ESRCH.
    assert run("""
        lwp_create reaper
        lwp_exit                ; lwp 1 goes, the reaper carries on
    reaper:
        lwp_wait 1
        bne err, 0, failed
        bne rv, 1, wrong
        exit 0
    wrong:
        exit 99
    failed:
        exit err
    """, kernel=profile).status == 0


def test_lwp_1_of_a_fork1_child_is_reaped_by_lwp_wait() -> None:
    # The clone inherits the caller's TP_TWAIT: init's lwp 1 now has it.
    assert run("""
        fork1
        beq rv, 0, child
        wait
        exit st
    child:
        lwp_create reaper
        lwp_exit
    reaper:
        lwp_wait 1
        exit err                ; 0: reaped
    """).status == 0


def test_lwp_1_is_reaped_in_init_and_in_its_forkall_child() -> None:
    assert run("""
        lwp_create worker
        forkall
        beq rv, 0, child
        wait
        store 20, st            ; the child's status, for init's worker
        store 10, 1
        lwp_exit
    child:
        store 10, 1             ; the child's copy of the worker may reap us now
        lwp_exit
    worker:
        load r1, 10
        bne r1, 0, reap
        sleep 1                 ; forkall ends it with EINTR: go round again
        jmp worker
    reap:
        lwp_wait 1              ; in init, lwp 1; in the child, its clone
        bne err, 0, failed
        load r2, 20             ; in the child, 0
        exit r2
    failed:
        add err, 100
        exit err
    """).status == 0


def _detach_lwp_2_of_init_once_asleep(K) -> bool:
    """A gate with a side effect: once init's lwp 2 sleeps, take its TP_TWAIT
    away, as if it had been created LWP_DETACHED (the program language has
    no detached lwp_create).  It is asleep: nothing else writes its flags."""
    if not lwp_in_syscall(K, 1, 2, "sleep"):
        return False
    for t in K.proc(K.g.proc_init).threads():
        lw = K.lwps[t.slot]
        if lw.t_tid == 2:
            lw.t_proc_flag &= ~TP_TWAIT
            return True
    return False


def test_lwp_wait_of_a_live_lwp_without_twait_is_esrch_at_once() -> None:
    # illumos's lwp_wait refuses an lwp without TP_TWAIT before it sleeps.
    # The old emulation slept until the lwp was gone, and here the lwp goes
    # only after the waiter returns: the run hung.
    r = run("""
        lwp_create other
    gate:
        sleep 1
        load r1, 63             ; opened once lwp 2 is detached
        beq r1, 0, gate
        lwp_wait 2
        mov r3, err
        store 0, 1              ; let lwp 2 go
        exit r3
    other:
        load r1, 0
        bne r1, 0, out
        sleep 1
        jmp other
    out:
        lwp_exit
    """, {63: _detach_lwp_2_of_init_once_asleep})
    assert r.status == ESRCH


# -- 3. forklwp: the source is the caller, or held and not asleep -------------------------

def _lwp_2_suspended_asleep(K) -> bool:
    """A gate: init's lwp 2 is suspended in place inside its sleep (SUSPENDED
    with lwp_asleep set): the state forklwp must never copy."""
    if not suspended(1, 1)(K):
        return False
    return any(K.lwps[t.slot].t_tid == 2 and K.lwps[t.slot].lwp_asleep
               for t in K.proc(K.g.proc_init).threads())


FORKALL_BUSY = """
    lwp_create sleeper          ; lwp 2: suspended inside its sleep, below
    mov r6, rv
    lwp_create spinner          ; lwp 3: running user code
    lwp_create napper           ; lwp 4: in and out of short sleeps
asleep:
    sleep 1
    load r1, 63                 ; the sleeper is inside its sleep
    beq r1, 0, asleep
    lwp_suspend r6
held:
    sleep 1
    load r1, 62                 ; and is stopped there, lwp_asleep set
    beq r1, 0, held
    forkall                     ; must move it on to a clonable point first
    beq rv, 0, child
    lwp_continue r6
    lwp_wait r6
    load r2, 8
    bne r2, EINTR, bad          ; forkall ended the sleeper's sleep
    wait
    exit st
child:
    lwp_continue r6             ; the clone is suspended too
    lwp_wait r6
    load r2, 8                  ; the clone's copy of that sleep's errno
    exit r2
bad:
    exit 1
sleeper:
    sleep 100000
    store 8, err
    lwp_exit
spinner:
    spin 50
    jmp spinner
napper:
    sleep 2
    jmp napper
"""


def test_forklwp_check_does_not_fire_on_forkall_of_held_lwps() -> None:
    r = run(FORKALL_BUSY, {63: lambda K: lwp_in_syscall(K, 1, 2, "sleep"),
                           62: _lwp_2_suspended_asleep})
    assert r.status == EINTR  # the run ended cleanly: no panic


def test_forklwp_check_fires_on_a_held_lwp_that_is_asleep(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Construct the violation: when forkall clones an lwp it has held, mark
    that lwp ``lwp_asleep`` first (no program can: forkall's pokelwps moves
    a sleeper on before it is held).  The patch is in place before boot, so
    the processes backend's fork server and hosts inherit it."""
    from realfork.stress.findings import from_wait_report
    from realfork.sync.kthread import _cpu

    real = fork_mod.forklwp

    def forklwp_of_a_sleeper(K, src, cp, lwpid, forkall):  # type: ignore[no-untyped-def]
        if src.id != _cpu.t.id:
            K.lwps[src.slot].lwp_asleep = 1
        return real(K, src, cp, lwpid, forkall)

    monkeypatch.setattr(fork_mod, "forklwp", forklwp_of_a_sleeper)
    with boot_checked(deadlock_timeout=5.0) as system:
        r = system.run("""
            lwp_create worker
            forkall
            exit 0
        worker:
            sleep 5
            jmp worker
        """, timeout=60)
    assert r.report is not None
    kind, signature = from_wait_report(r.report)
    assert kind == "panic"
    assert "which is held asleep (lwp_asleep" in signature
    assert signature.endswith("(forklwp)")


# -- 4. rctl_dup: a site that always fails cannot spin the fork -------------------------

ONE_FORK = """
    fork1
    blt rv, 0, failed
    beq rv, 0, child
    wait
    exit st
failed:
    exit err
child:
    exit 7
"""


@PROFILES
def test_rctl_dup_always_failing_ends_the_loop_and_the_fork_succeeds(profile: str) -> None:
    # The old loop retried for as long as the site failed: for ever.
    with boot_checked(faults={"rctl_dup": {"probability": 100}}, kernel=profile) as system:
        r = system.run(ONE_FORK, timeout=60)
        assert r.report is None, str(r.report)
        assert r.status == 7
        assert fork_fails(r) == []
        stats = system.K.faults.stats()["rctl_dup"]
        assert stats["failures"] == RCTL_DUP_MAX_RETRIES  # then the set was left alone
        assert stats["calls"] == RCTL_DUP_MAX_RETRIES


def test_rctl_dup_nth_1_retries_once_and_succeeds() -> None:
    with boot_checked(faults={"rctl_dup": {"nth": 1}}) as system:
        r = system.run(ONE_FORK, timeout=60)
        assert r.report is None, str(r.report)
        assert r.status == 7
        assert fork_fails(r) == []
        stats = system.K.faults.stats()["rctl_dup"]
        assert stats["failures"] == 1 and stats["calls"] == 2


# -- 5. as_dup: any error it could return; fork returns ENOMEM or EAGAIN ---------------------

def test_as_dup_site_accepts_its_errors_and_refuses_others() -> None:
    for name in ("ENOMEM", "EAGAIN", "EFAULT", "EINVAL", "EIO", "ENXIO"):
        assert parse_fault_spec(f"as_dup:errno={name}") == ("as_dup", {"errno": name})
    with pytest.raises(BadInput, match="not allowed"):
        parse_fault_spec("as_dup:errno=EINTR")  # as_dup cannot be interrupted


@pytest.mark.parametrize("call", ["fork1", "forkall"])
def test_as_dup_errors_map_to_eagain_and_enomem_is_kept(call: str) -> None:
    program = ONE_FORK.replace("fork1", call)
    with boot_checked() as system:
        got = {}
        for err in (EFAULT, EINVAL, EIO, ENXIO, EAGAIN, ENOMEM):
            system.K.faults.configure("as_dup", nth=1, errno=err)
            r = system.run(program, timeout=60)
            assert r.report is None, str(r.report)
            assert fork_fails(r) == [r.status]
            got[err] = r.status
    assert got == {EFAULT: EAGAIN, EINVAL: EAGAIN, EIO: EAGAIN, ENXIO: EAGAIN,
                   EAGAIN: EAGAIN, ENOMEM: ENOMEM}


def test_getproc_asserts_a_pid_was_not_handed_out_beyond_the_table(backend: str) -> None:
    """fork.c:897, ASSERT(nproc < v.v_proc) once pid_assign has given a slot:
    with nproc corrupted up to v_proc the fork panics naming getproc."""
    import realfork

    with realfork.boot(backend=backend, deadlock_timeout=5.0) as system:
        K = system.K
        K.g.nproc = K.g.v_proc  # a count that says the table is full, with slots free
        r = system.run("fork1\nexit 0\n", timeout=30)
        assert r.report is not None and r.report.kind == "panic", r.report
        assert "assertion failed: nproc" in r.report.message
        assert "getproc" in str(r.report)
