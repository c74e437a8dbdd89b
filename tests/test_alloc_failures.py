"""Allocation failures illumos cannot have (its KM_SLEEP allocations sleep
until memory is free): realfork's fixed tables that cannot fill panic when
they do; the ones a program can fill fail only as an illumos failure does
(docs/kernel.md, "Allocation failures")."""

from __future__ import annotations

import pytest
from helpers import boot_checked, run_clean

from realfork.errors import KernelPanic
from realfork.kernel.kernel import dir_capacity, dir_sizes
from realfork.kernel.lwpdir import dir_alloc
from realfork.kernel.resources import rctl_set_create

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("backend")]

EAGAIN = 11


def _fill(table) -> list[int]:
    taken = []
    while (slot := table.alloc()) is not None:
        taken.append(slot)
    return taken


def test_a_full_rctl_set_table_panics_as_cannot_happen() -> None:
    with boot_checked() as system:
        K = system.K
        assert K.rctlsets.capacity > K.params.nproc  # one set per proc slot, at most
        _fill(K.rctlsets)
        with pytest.raises(KernelPanic, match=r"table rctlset full .*: cannot happen"):
            rctl_set_create(K)
        assert system.dom.panicked


def test_a_full_two_entry_directory_class_panics_as_cannot_happen() -> None:
    with boot_checked() as system:
        K = system.K
        assert K.dirs[0].capacity == 2 * K.params.nproc  # one per proc, one more in exec
        _fill(K.dirs[0])
        with pytest.raises(KernelPanic, match=r"table lwpdir0 full .*: cannot happen"):
            dir_alloc(K, 2)
        assert system.dom.panicked


def test_a_full_larger_directory_class_is_a_failure_not_a_panic() -> None:
    with boot_checked(maxlwps=8) as system:
        K = system.K
        sizes = K.dir_sizes
        assert sizes == dir_sizes(8) == [2, 6, 14]
        assert K.dirs[2].capacity == dir_capacity(2, sizes, K.params.nproc, 8)
        taken = _fill(K.dirs[2])
        assert dir_alloc(K, 14) == 0 and not system.dom.panicked
        for slot in taken:
            K.dirs[2].free(slot)


# The children exec and exit; as zombies they keep their proc slots until
# the parent, done forking, reaps them.
FORK_UNTIL_EAGAIN = """
again:
    fork1
    bne err, 0, out
    beq rv, 0, child
    jmp again
out:
    mov r6, err
reap:
    wait
    beq err, 0, reap
    bne r6, 11, bad
    exit 0
bad:
    exit 1
child:
    exec image
image:
    exit 0
"""


def test_filling_the_process_table_fails_fork_with_eagain_and_never_a_table_that_cannot_fill(
        ) -> None:
    """Every proc slot in use, each child having exec'd (exec holds a second
    two-entry directory for a moment): fork fails with EAGAIN (the proc
    table or maxup, failures illumos has), and neither the rctl set table nor
    the two-entry directories run out."""
    r = run_clean(FORK_UNTIL_EAGAIN, nproc=16, maxup=11, timeout=120)
    assert r.status == 0


# The kernel thread table full is the lwp stack cache running dry in illumos:
# lwp_create fails with EAGAIN and gives its counts back (the checker, on the
# way out, sees them balanced).
LWPS_UNTIL_EAGAIN = """
again:
    lwp_create sleeper
    beq err, 0, again
    bne err, 11, bad
    exit 0
bad:
    exit 1
sleeper:
    sleep 60000
    lwp_exit
"""


def test_a_full_kernel_thread_table_fails_lwp_create_with_eagain() -> None:
    r = run_clean(LWPS_UNTIL_EAGAIN, maxlwps=16)
    assert r.status == 0


# Zombie lwps (never lwp_waited for) keep their directory entries, so a
# process's directory outgrows the largest size class (14 entries with
# maxlwps=8): the 14th lwp_create fails with EAGAIN as for want of an lwp
# stack.  A kernel thread shortage (workers not yet gone) is retried: it
# passes, the directory's does not.  Exit status: the lwps created, 13.
ZOMBIES_UNTIL_EAGAIN = """
    mov r7, 0
again:
    mov r6, 0
retry:
    lwp_create worker
    beq err, 0, made
    bne err, 11, bad
    add r6, 1
    sleep 5
    bne r6, 400, retry
    exit r7
made:
    add r7, 1
    jmp again
bad:
    exit 100
worker:
    lwp_exit
"""


def test_a_directory_outgrowing_its_largest_class_fails_lwp_create_with_eagain() -> None:
    r = run_clean(ZOMBIES_UNTIL_EAGAIN, maxlwps=8, timeout=120)
    assert r.status == 13
