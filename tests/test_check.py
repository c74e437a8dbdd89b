"""The invariant checker (``realfork.verify.check``): clean on a fresh boot and
after real programs, and it names the invariant whenever one field of the
kernel's shared memory is corrupted."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import realfork
from realfork.api import RunResult, System
from realfork.kernel.kernel import Kernel
from realfork.kernel.structs import (
    P_PR_LOCK,
    PEXITED,
    SHOLDFORK,
    SHOLDFORK1,
    SIDL,
    SVFORK,
    SVFWAIT,
    SZOMB,
    TP_DAEMON,
)
from realfork.verify.check import InvariantViolation, check_kernel, violations
from realfork.verify.quiesce import check_running

pytestmark = pytest.mark.timeout(120)

BOOT = {"nproc": 32, "maxlwps": 64, "deadlock_timeout": 5}

# At boot: p0 in slot 0, pageout (pid 2) in slot 1, fsflush (pid 3) in slot 2.
PAGEOUT, FSFLUSH = 1, 2


@contextmanager
def booted() -> Iterator[System]:
    with realfork.boot(**BOOT) as system:
        yield system


def run_ok(system: System, text: str) -> RunResult:
    r = system.run(text, timeout=60)
    assert r.report is None, str(r.report)
    return r


def assert_clean(K: Kernel) -> None:
    found = violations(K)
    assert found == [], "\n".join(found)


# -- the API ------------------------------------------------------------------------------


def test_fresh_boot_passes() -> None:
    with booted() as system:
        assert_clean(system.K)
        check_kernel(system.K)
        system.check()


def test_invariant_violation_lists_every_violation() -> None:
    with booted() as system:
        K = system.K
        K.g.nproc += 1
        K.g.fork_fail_pending += 2
        try:
            with pytest.raises(InvariantViolation) as ei:
                system.check()
        finally:
            K.g.nproc -= 1
            K.g.fork_fail_pending -= 2
        e = ei.value
        assert isinstance(e, realfork.errors.RealforkError)
        assert any(v.startswith("A1 nproc 4 != practive length 3") for v in e.violations)
        assert any(v.startswith("A6 fork_fail_pending is 2") for v in e.violations)
        lines = str(e).splitlines()
        assert lines[0] == f"{len(e.violations)} invariant violations"
        assert len(lines) == 1 + len(e.violations)
        assert all(v in str(e) for v in e.violations)
        assert_clean(K)


def _tables(K: Kernel) -> bytes:
    arrays = [K.procs.slots, K.pidtab, K.upcounts, K.lwps, K.ases.slots, K.creds.slots,
              K.vnodes.slots, K.tasks.slots, K.projects.slots, K.zones.slots, K.pools.slots,
              K.pgrps.slots, K.sessions.slots, K.contracts.slots, K.rctlsets.slots,
              *(d.slots for d in K.dirs)]
    return b"".join(bytes(a) for a in arrays) + bytes(K.g)


def test_checker_is_read_only_and_survives_a_cycle() -> None:
    with booted() as system:
        K = system.K
        before = _tables(K)
        violations(K)
        assert _tables(K) == before
        # a cycle in practive, in a child list and in a task ring: reported, no hang
        p0, po = K.procs.slots[0], K.procs.slots[PAGEOUT]
        saved = (p0.p_next, po.p_sibling, po.p_tasknext)
        p0.p_next = K.g.practive
        po.p_sibling = PAGEOUT + 1
        po.p_tasknext = PAGEOUT + 1
        try:
            found = violations(K)
        finally:
            p0.p_next, po.p_sibling, po.p_tasknext = saved
        assert any(v.startswith("A1 practive loops back") for v in found), found
        assert any(v.startswith("B7 pid 0's child list loops back") for v in found), found
        assert any(v.startswith("C11 task 0 member ring") for v in found), found
        assert not any(v.startswith("X ") for v in found), found
        assert_clean(K)


# -- real programs ----------------------------------------------------------------------------

PROGRAMS: dict[str, tuple[str, int]] = {
    "fork1_wait": ("""
        fork1
        beq rv, 0, child
        mov r1, rv
        wait
        bne rv, r1, bad
        exit st
    bad:
        exit 1
    child:
        exit 7
    """, 7),
    # the end of the run reaps zombies that are on other procs' lists: the
    # filler's children passed to init (p_child_ns) and to the measurer, the
    # filler's next of kin (p_orphan), and init never waits for them
    "zombies_left_to_init": ("""
        fork1
        beq rv, 0, measurer
        wait rv
        exit st
    measurer:
        fork1
        beq rv, 0, filler
        wait rv
        mov r7, 5
    again:
        fork1
        beq rv, 0, child
        sub r7, 1
        bne r7, 0, again
        exit 4
    filler:
        mov r7, 40
    more:
        fork1
        beq rv, 0, child
        sub r7, 1
        bne r7, 0, more
        exit 0
    child:
        exit 0
    """, 4),
    "vfork_exit": ("""
        store 0, 11
        vfork
        beq rv, 0, child
        wait
        load r2, 0
        bne r2, 22, bad         ; the child wrote the borrowed address space
        exit st
    bad:
        exit 1
    child:
        store 0, 22
        exit 3
    """, 3),
    "forkall_lwps": ("""
        lwp_create worker
        lwp_create worker
        lwp_create quitter
        lwp_wait 0              ; leaves no zombie lwp behind, but exercises the hash
        forkall
        beq rv, 0, child
        wait
        exit st
    child:
        exit 5
    worker:
        sleep 300
        jmp worker
    quitter:
        lwp_exit
    """, 5),
    "fork_bomb_maxup": ("""
        setuid 100              ; unprivileged: the maxup limit applies
    bomb:
        fork1
        blt rv, 0, full
        jmp bomb                ; parent and child both fork again
    full:
        bne err, EAGAIN, bad
        sleep 200
        exit 0
    bad:
        exit 1
    """, 0),
    "setuid_child": ("""
        fork1
        beq rv, 0, child
        wait
        exit st
    child:
        setuid 42
        fork1
        beq rv, 0, grandchild
        wait
        bne st, 1, bad
        exit 9
    grandchild:
        exit 1
    bad:
        exit 2
    """, 9),
    "orphans_reaped_by_init": ("""
        fork1
        beq rv, 0, mid
        wait                    ; mid
        bne st, 2, bad
        wait                    ; the grandchild, orphaned and given to init
        bne st, 4, bad
        wait
        bne err, ECHILD, bad
        exit 0
    bad:
        exit 1
    mid:
        fork1
        beq rv, 0, gc
        exit 2                  ; exits before its child
    gc:
        sleep 100
        exit 4
    """, 0),
    "init_exits_first": ("""
        fork1
        beq rv, 0, child
        fork1
        beq rv, 0, zombie
        exit 0                  ; leaves a live child and a zombie for System.run
    zombie:
        exit 6
    child:
        lwp_create sleeper
        fork1
        sleep 2000
        exit 1
    sleeper:
        sleep 2000
        lwp_exit
    """, 0),
}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_program_leaves_the_kernel_consistent(name: str) -> None:
    text, status = PROGRAMS[name]
    with booted() as system:
        r = run_ok(system, text)
        assert r.status == status
        if name == "fork_bomb_maxup":
            assert r.counters["fork_fail"] > 0
        if name == "init_exits_first":
            assert r.killed
        assert_clean(system.K)


def test_many_programs_in_one_kernel_leak_nothing() -> None:
    with booted() as system:
        for _ in range(2):
            for text, status in PROGRAMS.values():
                assert run_ok(system, text).status == status
                assert_clean(system.K)


# -- quiescent points inside a run --------------------------------------------------------------


def _states(K: Kernel) -> list[tuple[int, int, int]]:
    out = []
    q = K.g.practive
    while q and len(out) <= K.procs.capacity:
        s = K.procs.slots[q - 1]
        out.append((s.p_pid, s.p_stat, s.p_flag))
        q = s.p_next
    return out


def check_midrun(system: System, text: str,
                 want: Callable[[list[tuple[int, int, int]]], bool]) -> list[str]:
    """Start ``text``; at a quiescent point (the pause's: every lwp parked or
    asleep, nothing moving while the checker reads) where ``want`` holds for
    the procs, return the violations; then end the run (``stop`` kills and
    reaps what is left).  The programs hold their states with long sleeps,
    so however slowly the machine brings them about, they are still there
    when the checker comes; nothing depends on a sleep ending first."""
    K = system.K
    found: list[str] | None = None
    deadline = time.monotonic() + 90
    system.start(text)
    try:
        while found is None and system.running:
            assert time.monotonic() < deadline, "the run never reached the point looked for"
            system.poll(0.02)
            found = check_running(K, 1.0, when=lambda K: want(_states(K)))
    finally:
        r = system.stop()
    assert r.report is None, str(r.report)
    assert found is not None, "the run ended before the point looked for"
    return found


def test_quiescent_point_with_zombies_vfork_and_orphans() -> None:
    text = """
        lwp_create worker
        fork1
        beq rv, 0, zchild       ; a zombie init does not reap yet
        fork1
        beq rv, 0, vparent
        fork1
        beq rv, 0, orphaner
        sleep 600000            ; until the test ends the run
        exit 0
    zchild:
        exit 6
    vparent:
        setuid 7
        vfork
        beq rv, 0, vchild       ; parent SVFWAIT, child SVFORK, sharing the as
        wait
        exit 0
    vchild:
        sleep 600000
        exit 1
    orphaner:
        fork1
        beq rv, 0, orphan
        exit 2                  ; its child goes to init
    orphan:
        sleep 600000
        exit 4
    worker:
        sleep 600000
        lwp_exit
    """

    def want(procs: list[tuple[int, int, int]]) -> bool:
        stats = [st for _, st, _ in procs]
        return (stats.count(SZOMB) == 2 and any(f & SVFORK for *_, f in procs)
                and any(f & SVFWAIT for *_, f in procs) and len(procs) == 9)

    with booted() as system:
        found = check_midrun(system, text, want)
        assert found == [], "\n".join(found)
        assert_clean(system.K)


def test_quiescent_point_with_suspended_and_zombie_lwps() -> None:
    text = """
        lwp_create sleeper
        mov r1, rv
        lwp_create quitter      ; leaves a zombie lwp (TP_TWAIT)
        lwp_create quitter
        lwp_suspend r1          ; suspended with TP_HOLDLWP, cloned as such
        forkall
        beq rv, 0, child
        sleep 600000            ; until the test ends the run
        exit 0
    child:
        sleep 600000
        exit 5
    sleeper:
        sleep 600000
        lwp_exit
    quitter:
        lwp_exit
    """

    def want(procs: list[tuple[int, int, int]]) -> bool:
        return len(procs) == 5

    with booted() as system:
        found = check_midrun(system, text, want)
        assert found == [], "\n".join(found)
        assert_clean(system.K)


# -- corruption: one field at a time -------------------------------------------------------------

Restore = Callable[[], None]


def setf(obj: Any, field: str, value: int) -> Restore:
    old = getattr(obj, field)
    setattr(obj, field, value)
    return lambda: setattr(obj, field, old)


def addf(obj: Any, field: str, delta: int) -> Restore:
    return setf(obj, field, getattr(obj, field) + delta)


def proc(K: Kernel, slot: int) -> Any:
    return K.procs.slots[slot]


def dir_of(K: Kernel, slot: int) -> Any:
    return K.dir_block(proc(K, slot).p_lwpdir)


def lwp_of(K: Kernel, slot: int) -> Any:
    return K.lwps[proc(K, slot).p_tlist - 1]


def upcount_entry(K: Kernel) -> Any:
    return next(e for e in K.upcounts if e.up_used and e.up_uid == 0)


def stale_pid(K: Kernel) -> Restore:
    e = K.pidtab[77]
    e.pid_used, e.pid_prslot = 1, PAGEOUT + 1

    def restore() -> None:
        e.pid_used = e.pid_prslot = 0
    return restore


def unused_as(K: Kernel) -> Restore:
    from realfork.kernel.vm import as_alloc

    a = as_alloc(K)  # a_nprocs 1, but no proc uses it

    def restore() -> None:
        K.ases.slots[a - 1].a_nprocs = 0
        K.ases.free(a - 1)
    return restore


def leaked_rctl_set(K: Kernel) -> Restore:
    from realfork.kernel.resources import rctl_set_create, rctl_set_free

    r = rctl_set_create(K)
    return lambda: rctl_set_free(K, r)


def zombie_pageout(K: Kernel) -> Restore:
    s = proc(K, PAGEOUT)
    r1 = setf(s, "p_stat", SZOMB)
    r2 = setf(s, "p_task", K.g.task0)

    def restore() -> None:
        r2()
        r1()
    return restore


def first_used_bucket(K: Kernel, slot: int) -> Restore:
    s = proc(K, slot)
    ld = dir_of(K, slot)
    b = lwp_of(K, slot).t_tid & (s.p_tidhash_sz - 1)
    return setf(ld[b], "ld_hash", -1)


CORRUPTIONS: dict[str, tuple[Callable[[Kernel], Restore], str, str]] = {
    # name: (corrupt, invariant code, text the message must contain)
    "nproc": (lambda K: addf(K.g, "nproc", 1), "A1", "nproc 4 != practive length 3"),
    "practive_prev": (lambda K: setf(proc(K, PAGEOUT), "p_prev", 0), "A1",
                      "pid 2 has p_prev NULL"),
    "stale_pid_entry": (stale_pid, "A2", "stale pid table entry: pid 77"),
    "pid_not_hashed": (lambda K: setf(K.pidtab[3], "pid_used", 0), "A2",
                       "pid 3 (slot 2) is not in the pid table"),
    "sidl_left": (lambda K: setf(proc(K, FSFLUSH), "p_stat", SIDL), "A4", "pid 3 is still SIDL"),
    "pg_members": (lambda K: addf(K.pgrps.slots[0], "pg_members", 1), "A4", "pg_members 4 != 3"),
    "pgrp_back_link": (lambda K: setf(proc(K, PAGEOUT), "p_ppglink", 0), "A4",
                       "pid 2 has p_ppglink NULL, expected pid 3"),
    "session_hold": (lambda K: addf(K.sessions.slots[0], "s_ref", 1), "G32", "s_ref 4 != 3"),
    "upcount": (lambda K: addf(upcount_entry(K), "up_count", 1), "A5",
                "upcount uid 0 zone 1 is 3, but 2 procs"),
    "fork_fail_pending": (lambda K: addf(K.g, "fork_fail_pending", 1), "A6",
                          "fork_fail_pending is 1"),
    "sibling_link": (lambda K: setf(proc(K, FSFLUSH), "p_sibling", 0), "B7",
                     "pid 2 names pid 0 as parent but is not on its child list"),
    "psibling_link": (lambda K: setf(proc(K, PAGEOUT), "p_psibling", 0), "B7",
                      "pid 2 p_psibling is NULL"),
    "ppid": (lambda K: setf(proc(K, PAGEOUT), "p_ppid", 9), "B7", "pid 2 p_ppid 9"),
    "orphan_chain": (lambda K: setf(proc(K, FSFLUSH), "p_nextorph", 0), "B8",
                     "pid 2 is on 0 orphan chains"),
    "child_ns_live": (lambda K: setf(proc(K, 0), "p_child_ns", PAGEOUT + 1), "B9",
                      "pid 2 is on pid 0's p_child_ns but is SRUN"),
    "task_ring": (lambda K: setf(proc(K, PAGEOUT), "p_taskprev", 0), "C11", "p_taskprev"),
    "tk_hold_count": (lambda K: addf(K.tasks.slots[0], "tk_hold_count", -1), "C11",
                      "tk_hold_count 2 < 3 members"),
    "tk_hold_leak": (lambda K: addf(K.tasks.slots[0], "tk_hold_count", 1), "G32",
                     "tk_hold_count 4 != 3 members"),
    "tk_nlwps": (lambda K: addf(K.tasks.slots[0], "tk_nlwps", 1), "C12", "task 0 tk_nlwps"),
    "kpj_nlwps": (lambda K: addf(K.projects.slots[0], "kpj_nlwps", -1), "C12",
                  "project 0 kpj_nlwps"),
    "zone_nlwps": (lambda K: addf(K.zones.slots[0], "zone_nlwps", 1), "C12",
                   "zone 0 zone_nlwps"),
    "pool_ref": (lambda K: addf(K.pools.slots[0], "pool_ref", 1), "C13",
                 "pool 0 pool_ref 4 != "),
    "pexited_live": (lambda K: addf(proc(K, FSFLUSH), "p_poolflag", PEXITED), "C13",
                     "live pid 3 has PEXITED"),
    "pool_barrier": (lambda K: setf(proc(K, PAGEOUT), "p_poolcnt", 1), "C14",
                     "pid 2 p_poolcnt 1"),
    "contract_members": (lambda K: setf(K.contracts.slots[0], "conp_nmembers", 1), "C15",
                         "conp_nmembers 1 != 0"),
    "contract_ref": (lambda K: addf(K.contracts.slots[0], "ct_ref", 1), "G32", "ct_ref 2 != 1"),
    "stray_sholdfork": (lambda K: addf(proc(K, PAGEOUT), "p_flag", SHOLDFORK), "D16",
                        "pid 2 has SHOLDFORK set"),
    "stray_sholdfork1": (lambda K: addf(proc(K, FSFLUSH), "p_flag", SHOLDFORK1), "D16",
                         "pid 3 has SHOLDFORK1 set"),
    "svfwait_alone": (lambda K: addf(proc(K, PAGEOUT), "p_flag", SVFWAIT), "D16",
                      "pid 2 has SVFWAIT but 0 SVFORK children"),
    "svfork_alone": (lambda K: addf(proc(K, PAGEOUT), "p_flag", SVFORK), "D16",
                     "SVFORK pid 2's parent pid 0 does not have SVFWAIT"),
    "pr_lock_left": (lambda K: addf(proc(K, PAGEOUT), "p_proc_flag", P_PR_LOCK), "D17",
                     "pid 2 has P_PR_LOCK set"),
    "lwprcnt": (lambda K: setf(proc(K, PAGEOUT), "p_lwprcnt", 0), "D19",
                "pid 2 p_lwprcnt 0 != 1"),
    "lwpcnt": (lambda K: setf(proc(K, FSFLUSH), "p_lwpcnt", 2), "E21",
               "pid 3 p_lwpcnt 2 != 1 lwps"),
    "tlist_lost": (lambda K: setf(proc(K, FSFLUSH), "p_tlist", 0), "E21",
                   "belongs to pid 3 but is not on its p_tlist"),
    "tidhash_size": (lambda K: setf(proc(K, PAGEOUT), "p_tidhash_sz", 4), "E22",
                     "pid 2 p_tidhash_sz 4 != (p_lwpdir_sz 2 + 2) / 2 = 2"),
    "lwpdir_size": (lambda K: setf(proc(K, PAGEOUT), "p_lwpdir_sz", 6), "E22",
                    "is not an allocated block of size 6"),
    "lost_free_entry": (lambda K: setf(proc(K, PAGEOUT), "p_lwpfree", -1), "E23",
                        "pid 2 free directory entry 1 is not on the free list"),
    "hash_chain": (lambda K: first_used_bucket(K, FSFLUSH), "E23", "is on no hash chain"),
    "t_dslot": (lambda K: setf(lwp_of(K, PAGEOUT), "t_dslot", 1), "E24", "t_dslot 1"),
    "le_lwpid": (lambda K: setf(dir_of(K, PAGEOUT)[0], "le_lwpid", 5), "E24", "has lwpid 5"),
    "zombcnt": (lambda K: setf(proc(K, PAGEOUT), "p_zombcnt", 1), "E25",
                "pid 2 p_zombcnt 1 != 0"),
    "lwpdaemon": (lambda K: addf(lwp_of(K, FSFLUSH), "t_proc_flag", TP_DAEMON), "E25",
                  "pid 3 p_lwpdaemon 0 != 1"),
    "a_nprocs": (unused_as, "F28", "a_nprocs 1 != 0 procs"),
    "wpage": (lambda K: setf(proc(K, PAGEOUT), "p_wpage", 3), "F30", "pid 2 has stashed"),
    "fcnt": (lambda K: addf(K.g, "fcnt", 1), "G32", "fcnt 3 != 2"),
    "cr_ref": (lambda K: addf(K.creds.slots[0], "cr_ref", 1), "G32", "cr_ref 4 != 3"),
    "v_count": (lambda K: addf(K.vnodes.slots[0], "v_count", -1), "G32",
                "vnode '/' v_count 3 != 1 + 3"),
    "corectl": (lambda K: addf(K.corectls.slots[K.g.corectl_content - 1], "cc_ref", 1), "G32",
                "cc_ref 2 != 1 + 0 proc holds"),
    "rctl_leak": (leaked_rctl_set, "G32", "is allocated but no proc uses it"),
    "zombie": (zombie_pageout, "H33", "zombie pid 2: p_tlist"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruption_is_named(name: str) -> None:
    corrupt, code, text = CORRUPTIONS[name]
    with booted() as system:
        K = system.K
        baseline = violations(K)
        restore = corrupt(K)
        try:
            found = violations(K)
            with pytest.raises(InvariantViolation) as ei:
                check_kernel(K)
        finally:
            restore()
        new = [v for v in found if v not in baseline]
        assert any(v.startswith(code + " ") and text in v for v in new), \
            f"no {code} violation mentioning {text!r} in:\n" + "\n".join(found)
        assert ei.value.violations == found
        assert violations(K) == baseline


def test_held_lock_is_reported() -> None:
    from realfork.machine.threads import ThreadFactory
    from realfork.sync.mutex import mutex_enter, mutex_exit

    with booted() as system:
        K = system.K
        with ThreadFactory.adopt(system.dom, "checker-test") as t:
            mutex_enter(K.pidlock)
            try:
                found = violations(K)
            finally:
                mutex_exit(K.pidlock)
        assert any(v.startswith("D17 ") and f"[kthread {t.id}] holds pidlock" in v
                   for v in found), found
        assert_clean(K)


def test_stale_upcount_probe_chain_is_reported() -> None:
    # An entry after a never-used slot on its probe sequence cannot be found.
    with booted() as system:
        K = system.K
        e = upcount_entry(K)
        n = len(K.upcounts)
        home = (e.up_uid * 31 + e.up_zone) % n
        moved = K.upcounts[(home + 1) % n]
        assert not moved.up_used
        saved = (e.up_used, e.up_uid, e.up_zone, e.up_count)
        ctypes.memmove(ctypes.addressof(moved), ctypes.addressof(e), ctypes.sizeof(e))
        e.up_used = e.up_uid = e.up_zone = e.up_count = 0
        try:
            found = violations(K)
        finally:
            moved.up_used = moved.up_uid = moved.up_zone = moved.up_count = 0
            e.up_used, e.up_uid, e.up_zone, e.up_count = saved
        assert any(v.startswith("A5 ") and "unreachable" in v for v in found), found
        assert_clean(K)
