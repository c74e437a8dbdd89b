"""The kernel profiles: which later illumos fixes a booted kernel carries.

A leaf (it imports nothing).  The seed realfork emulates is illumos's
``fork.c`` of June 2006.  illumos later fixed several mistakes in it; each fix
is a named delta here, by its bug id, and ``K.fixed(id)`` tells the kernel
whether to take the fixed path or the 2006 one.  Two profiles:

* ``2006`` -- the seed as written, its mistakes included;
* ``fixed`` -- ``2006`` plus every fix below (the default: a clean run
  stays clean).

What each fix changed, where, and what it restores is in
``realfork.verify.history`` (above the kernel, with the finding the 2006
kernel produces and the campaign that finds it) and in docs/profiles.md.
The classic, non-historical mistakes of ``realfork.verify.bugs`` are
switched on top of either profile.
"""

from __future__ import annotations

__all__ = ["DEFAULT_KERNEL", "FIXES", "PROFILES", "RETIRED_BUGS", "fixes_of"]

FIXES: tuple[str, ...] = (
    "6446530",  # cfork: corectl holds taken under the parent's p_lock
    "6439016",  # getproc: p_zone set before pid_assign makes the child visible
    "6533743",  # cfork: P_PR_LOCK dropped before fork_fail after as_dup fails
    "6556673",  # cfork: P_PR_LOCK dropped after the fasttrap fork, before shmfork
    "6869037",  # newproc: a kernel process releases its exec vnode holds
    "7412",     # newproc/forklwperr: the failed child is disowned before pid_exit
    "6533431",  # post_syscall: the vfwait caller is the lwp cfork marked
)
"""illumos bug ids of the fixes, in the order the code meets them."""

PROFILES: dict[str, frozenset[str]] = {
    "2006": frozenset(),
    "fixed": frozenset(FIXES),
}

DEFAULT_KERNEL = "fixed"

RETIRED_BUGS: dict[str, str] = {
    "fork_fail_under_prlock": "6533743",
    "zone_set_late": "6439016",
    "failed_child_not_disowned": "7412",
}
"""Seeded bugs of earlier releases that are now the 2006 kernel's own
behaviour: the name, to the fix whose absence it was."""


def fixes_of(profile: str) -> frozenset[str]:
    """The fixes profile ``profile`` carries (KeyError if there is none)."""
    return PROFILES[profile]
