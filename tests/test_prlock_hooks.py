"""cfork's fork hooks and P_PR_LOCK (illumos 6556673, 6871629).

The 2006 cfork ran shmfork and the DTrace helpers fork under the parent's
P_PR_LOCK; the helpers fork takes dtrace_lock (and mod_lock), which a DTrace
consumer holds while it sprlocks the process whose USDT probes it enables or
tears down.  The fixed kernel drops P_PR_LOCK right after the fasttrap fork.
Here: the hooks copy what they should, the helpers fork runs with P_PR_LOCK
in the 2006 kernel and without it in the fixed one (SFORKING set in both),
and the ``usdt`` stressor's campaign finds the deadlock in the 2006 kernel
and nothing in the fixed one.
"""

from __future__ import annotations

import re

import pytest
from helpers import boot_checked

from realfork.kernel.errno_defs import EMFILE, ENOENT, ESRCH
from realfork.kernel.structs import P_PR_LOCK
from realfork.stress.config import StressConfig
from realfork.stress.runner import run_stress

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("backend")]

# The finding's signature as the stress runner normalizes it.  Most often
# the two-way cycle "deadlock: dtrace_helpers_duplicate, sprlock on
# dtrace_lock, pr_pid_cv" (the helpers fork waits for dtrace_lock, the
# consumer holding it waits in sprlock for the parent's P_PR_LOCK); sometimes
# a longer form, the helpers fork further on (dtrace_register) waiting for
# mod_lock or dtrace_lock, or a second forking victim waiting for
# dtrace_meta_lock.  Every form has a consumer in sprlock on pr_pid_cv.
SIGNATURE = re.compile(r"deadlock: (dtrace_\w+, )+sprlock on "
                       r"(dtrace_lock, )?(dtrace_meta_lock, )?(mod_lock, )?pr_pid_cv")

# One consumer, two forking victims: the campaign that finds the deadlock.
# The deadlock timeout is the stress default (5 s); the finding must come
# within the campaign's own 20 s.
CAMPAIGN = {"stressors": {"usdt": 1}, "timeout": 20.0, "seed": 0, "check_interval": 5.0}

# init registers a helper and attaches the segment, forks a child that
# forks a grandchild; each reports what it inherited through its exit status.
INHERIT = """
    dtrace_helper           ; rv = 1
    bne rv, 1, bad
    shmat                   ; rv = 1
    bne rv, 1, bad
    fork1
    beq rv, 0, child
    wait rv
    bne st, 0, bad
    exit 0
bad:
    exit 99
child:
    dtrace_helper           ; the helpers fork copied init's one: rv = 2
    bne rv, 2, cbad
    shmat                   ; shmfork copied init's attachment: rv = 2
    bne rv, 2, cbad
    fork1
    beq rv, 0, gchild
    wait rv
    exit st
cbad:
    exit 98
gchild:
    dtrace_helper           ; two inherited: rv = 3
    bne rv, 3, gbad
    exit 0
gbad:
    exit 97
"""


def _helpers_forks(kernel: str) -> list[tuple[int, ...]]:
    """Fork once with a helper registered; the ``proc:::helpers-fork`` probes."""
    prog = """
    dtrace_helper
    fork1
    beq rv, 0, child
    wait rv
    exit 0
child:
    exit 0
"""
    with boot_checked(kernel=kernel) as system:
        r = system.run(prog, timeout=60)
        assert r.report is None and r.status == 0
    return [e.args for e in r.probes if e.name == "proc:::helpers-fork"]


def test_fixed_kernel_runs_the_helpers_fork_without_p_pr_lock() -> None:
    events = _helpers_forks("fixed")
    assert len(events) == 1
    _child, prlocked, sforking = events[0][:3]
    assert prlocked == 0  # dropped right after the fasttrap fork
    assert sforking == 1  # still forking: USDT enabling may find the child SIDL


def test_2006_kernel_runs_the_helpers_fork_under_p_pr_lock() -> None:
    events = _helpers_forks("2006")
    assert len(events) == 1
    _child, prlocked, sforking = events[0][:3]
    assert prlocked == 1
    assert sforking == 1


def test_no_helpers_no_helpers_fork() -> None:
    with boot_checked() as system:
        r = system.run("fork1\nbeq rv, 0, c\nwait rv\nexit 0\nc:\nexit 0\n", timeout=60)
        assert r.status == 0
    assert not [e for e in r.probes if e.name == "proc:::helpers-fork"]


@pytest.mark.parametrize("kernel", ["fixed", "2006"])
def test_fork_hooks_copy_helpers_and_attachments(kernel: str) -> None:
    with boot_checked(kernel=kernel) as system:
        r = system.run(INHERIT, timeout=60)
        assert r.report is None
        assert r.status == 0


def test_usdt_enable_needs_a_provider_and_a_process() -> None:
    prog = f"""
    getpid
    mov r5, rv
    usdt_enable r5, 1       ; no helper registered yet: nothing to enable
    bne err, {ENOENT}, bad
    usdt_enable 99999, 1    ; no such process
    bne err, {ESRCH}, bad
    dtrace_helper
    usdt_enable r5, 1       ; one tracepoint enabled
    bne rv, 1, bad
    usdt_enable r5, 1
    bne rv, 2, bad
    usdt_enable r5, 0       ; torn down again
    bne rv, 1, bad
    exit 0
bad:
    exit 99
"""
    with boot_checked() as system:
        r = system.run(prog, timeout=60)
        assert r.report is None
        assert r.status == 0


def test_attachments_and_helpers_are_bounded() -> None:
    prog = "\n".join(["    shmat"] * 8 + [f"    shmat\n    bne err, {EMFILE}, bad"]
                     + ["    dtrace_helper"] * 8
                     + [f"    dtrace_helper\n    bne err, {EMFILE}, bad", "    exit 0",
                        "bad:", "    exit 99"]) + "\n"
    with boot_checked() as system:
        r = system.run(prog, timeout=60)
        assert r.status == 0


def test_consumer_holds_p_pr_lock_only_inside_dtrace_lock() -> None:
    """After a consumer's enable and tear-down, nothing keeps P_PR_LOCK (the
    invariant checker runs on leaving boot_checked, and D17 would say)."""
    prog = """
    dtrace_helper
    getpid
    usdt_enable rv, 1
    getpid
    usdt_enable rv, 0
    exit 0
"""
    with boot_checked() as system:
        r = system.run(prog, timeout=60)
        assert r.status == 0
        K = system.K
        assert not any(K.procs.slots[i].p_proc_flag & P_PR_LOCK
                       for i in range(K.procs.capacity) if K.procs.slots[i].slot_inuse)


def _campaign(kernel: str, backend: str) -> list[tuple[str, str]]:
    cfg = StressConfig(**CAMPAIGN, boot={"kernel": kernel, "backend": backend})
    return [(f.kind, f.signature) for f in run_stress(cfg).findings]


def test_2006_kernel_deadlocks_on_the_helpers_fork(backend: str) -> None:
    found = _campaign("2006", backend)
    assert len(found) == 1, found
    kind, signature = found[0]
    assert kind == "deadlock"
    assert SIGNATURE.fullmatch(signature), signature


def test_fixed_kernel_survives_the_same_campaign(backend: str) -> None:
    assert _campaign("fixed", backend) == []
