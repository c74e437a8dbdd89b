"""The kernel invariant checker (see docs/kernel.md, "Invariants: the checker").

``violations(K)`` reads every kernel table in the segment and returns one
message per broken invariant; ``check_kernel(K)`` raises
``InvariantViolation`` listing them all.  Each message starts with the code
of the invariant (``A1`` ... ``H33``; ``X`` when a check could not finish) and
names the pids involved, for example ``A1 nproc 5 != practive length 4``.

The checks are read-only and take no kernel lock: run them at quiescent
points (between runs, after a run ends, or while every lwp sleeps on a
condition variable).  Boot ends at such a point: ``kernel_main`` returns
only once pageout and fsflush sleep in their idle wait, holding no lock.
A corrupted table cannot make the checker loop or raise: every list walk
is bounded, every pointer is range-checked, and an unexpected error inside
one group of checks becomes a violation of its own.

A running kernel.  ``violations(K, running=True)`` is for a kernel paused
while programs run (``realfork.verify.quiesce.check_running``): live
processes and lwps, zombies nobody has reaped yet, vfork children sharing
their SVFWAIT parent's address space, lwps held by ``lwp_suspend`` or
stopped by /proc, lwps parked at the pause gate or asleep in system calls.
Every invariant below already allows those, because each describes what
holds whenever no kernel operation is half done, and ``pause`` only accepts
such a point: it waits while a fork, exit, exec or vfork wait is caught at
one of its sleeps (an SIDL child, ``p_poolcnt``, a hold flag, SFORKING,
P_PR_EXEC, ``fork_fail_pending``; see ``pause``), letting the operation run
to its end.  So A4's "no SIDL proc", A6, C14, D16 and D18 stay checked as
between runs (a hold flag or barrier count that no sleeping thread of the
process can be carrying out is a leak, and is reported).  Two checks differ,
each because the running kernel has a legitimate holder the idle one has not:

* D17's "no proc has P_PR_LOCK": a ``prlock`` system call holds P_PR_LOCK
  across its delay, asleep, for as long as the program asked.  Running, the
  check is that no more procs have P_PR_LOCK than there are lwps inside
  ``prlock``.
* D17's "no kernel thread holds a lock": p0's threads (kthreads with pid 0)
  are left out.  The supervisor's ``sched`` thread polls ``run_cv`` under
  ``pidlock`` while the run goes on, and may itself be the caller running
  the checker; neither is part of the state being checked.  Every user and
  system lwp is still checked (``pause`` only accepts points where none
  holds a lock).

What is checked (the code of each group in brackets):

* [A1] ``practive`` is a consistent doubly-linked list whose length equals
  ``nproc``, the number of used proc slots and the number of active pid
  table entries; ``nproc <= v_proc``; the proc table's free list plus its
  used slots is its capacity; slot 0 is p0 (pid 0, SSYS).
* [A2] every proc's pid is in the pid table exactly once, active, naming its
  slot; no pid table entry is stale (names a free slot or another pid) or
  left inactive; pids are unique; the slot's ``p_lock`` carries the pid.
* [A4] no proc is SIDL; every proc but p0 is in a process group: on its
  pgrp's member list exactly once (``p_ppglink`` linking back),
  ``p_pgid == pg_id``, ``pg_members`` right, no empty pgrp left allocated;
  a child is in its parent's session;
  ``p_sid`` is the session's sid; every proc but p0 holds a session
  (``p_sessp``, where the model records it), the one its pgrp is in.  The
  session hold counts are checked as a G32 balance: ``s_ref`` = one per pgrp
  of the session + one per proc holding it (``getproc``'s SESS_HOLD, dropped
  by ``pid_exit``; without ``p_sessp``, every proc on practive but p0).
* [A5] ``up_count`` of every (ruid, zone) is the number of procs on practive
  (live or zombie, p0 excluded) with that real uid and zone; no entry with a
  count <= 0, no duplicate entry, every entry reachable by the probe
  sequence of ``_upcount_find``; the counts sum to ``nproc - 1``.
* [A6] ``fork_fail_pending == 0``.
* [B7] each child list (``p_child``/``p_sibling``) holds exactly the procs
  whose ``p_parent`` is the owner, ``p_psibling`` links back (NULL for the
  first), ``p_ppid`` is the parent's pid; every proc but p0 has a parent.
* [B8] every proc but p0 is exactly once on the orphan chain
  (``p_orphan``/``p_nextorph``) of its ``p_nextofkin``, and every member of a
  chain names the chain's owner as next of kin.  The init special case
  needs no exemption: an exiting init keeps its orphan chain, so every
  member still names it.
* [B9] ``p_child_ns`` holds only SZOMB children of its owner, each once.
* [C11] every live proc is exactly once on its task's member ring
  (``p_tasknext``/``p_taskprev`` consistent both ways), zombies are on no
  ring and have ``p_task == task0``; ``tk_hold_count >=`` members.
* [C12] ``tk_nlwps`` is the sum of ``p_lwpcnt`` over the task's live
  members, ``kpj_nlwps`` the sum of ``tk_nlwps`` over the project's tasks,
  ``zone_nlwps`` the sum of ``p_lwpcnt`` over the zone's live procs.
* [C13] ``pool_ref`` of every pool is the number of procs with ``p_pool``
  naming it that are not PEXITED (p0 included); every proc names an
  allocated pool; a free pool slot has no references.
* [C14] no proc is inside a pool barrier (``p_poolcnt == 0``), no PBWAIT,
  ``pool_barrier_count == 0``.
* [C15] ``conp_nmembers`` of every contract is its number of live member
  procs; every live non-system proc is a member of one allocated contract;
  zombies are members of none.  p0 names the system contract without being
  a member (it is assigned at boot, without ``contract_process_fork``).
* [D16] no proc has SHOLDFORK, SHOLDFORK1, SFORKING, SHOLDWATCH or SEXITLWPS
  set; SVFWAIT only on the parent of an SVFORK child.
* [D17] no proc has P_PR_LOCK; ``p_prowner`` (its holder) is set exactly when
  P_PR_LOCK is, and names a kernel thread that still exists; no kernel thread
  holds a lock or is blocked on a mutex or rwlock (condition-variable
  sleepers are fine).
* [D18] an lwp of a live proc is SUSPENDED only if it has TP_HOLDLWP
  (``lwp_suspend``) or its proc is an SVFWAIT vfork parent.
* [D19] ``p_lwprcnt`` equals the number of the proc's lwps that are not
  SUSPENDED.
* [E21] ``p_lwpcnt`` equals the length of the ``p_tlist`` ring, the ring is
  consistent (``t_forw``/``t_back``), every lwp on it is an allocated kernel
  thread whose ``t_procp`` is the proc; every allocated kernel thread that
  belongs to a proc (``t_procp`` set, not LWP_ZOMB, not sched's borrowed
  thread of p0) is on that proc's ring (E27's "on the all-threads list with
  ``t_procp == cp``, and only those").
* [E22] ``p_lwpdir_sz`` is one of the directory sizes (2, 6, 14, 30 ...),
  the block is allocated in that size class, ``p_tidhash_sz`` is
  ``(sz + 2) / 2`` (a power of two); no directory block is shared or leaked.
* [E23] every used directory entry is on exactly one hash chain, the one of
  bucket ``lwpid & (tidhash_sz - 1)``; every free entry is on the free list
  exactly once; used + free == size.
* [E24] each lwp's ``t_dslot`` names the entry whose ``le_thread`` is that
  lwp and ``le_lwpid == t_tid``; every entry's ``le_thread`` is an lwp of the
  proc; lwpids are unique and (without SLWPWRAP) at most ``p_lwpid``; the
  kernel thread's ``t_pid``/``t_lwpid`` name the same pid and lwpid.
* [E25] ``p_zombcnt`` equals the entries with ``le_thread == 0``;
  ``p_lwpdaemon`` equals the TP_DAEMON lwps.
* [F28] a proc with SVFORK shares ``p_as`` with its parent; otherwise no two
  procs share an address space (kas aside); ``a_nprocs`` of every address
  space is the number of procs using it; every proc's ``p_as`` is allocated;
  no address space is leaked.
* [F29] while a child has SVFORK the shared address space has no watched
  pages (they are stashed in the parent's ``p_wpage``).
* [F30] a proc without SVFWAIT has no stashed watched pages (``p_wpage``).
* [F31] neither an SVFWAIT parent nor the parent of an SVFORK child is a
  zombie.
* [G32] reference balances, each against what a fresh boot holds: ``fcnt``
  is the sum of ``p_fcnt``; ``cr_ref`` of every credential is the number of
  procs (live or zombie) using it and no credential is unused; ``v_count``
  of every vnode is 1 (``vn_create``'s own reference) + the ``u_cdir``,
  ``u_rdir``, ``p_exec`` and ``p_execdir`` holds of all procs; the session
  holds (see A4); ``tk_hold_count`` equals the task's members and
  ``kpj_ntasks`` the project's tasks; every core-file pattern and content
  object's ``cc_ref`` is the procs holding it (``p_corefile``,
  ``p_content``) plus the kernel's one on each of the two defaults, and none
  is unused;
  ``ct_ref`` is 1 (the creator's) + the members; every live proc owns one
  rctl set of its own (``rcs_ref == 1``) and no set is leaked.
* [H33] a zombie has no lwps (``p_tlist``, ``p_lwpcnt``, ``p_lwprcnt``), no
  directory or tid hash, ``p_task == task0``, ``p_pool == pool_default``,
  PEXITED, ``p_as == kas``, no files, vnodes, rctl set or contract, and is on
  its parent's ``p_child_ns``; a live proc is not PEXITED.
* [X] a group of checks could not finish (a table is too broken to read);
  the other groups still run.

Skipped, because the model does not represent them or they are not
observable at a quiescent point:

* A3, A6's "value before the call", B10, C14's "value before the call", D20,
  E26 and the "new child" halves of B8 and E21/E22/E25: they compare a fork's
  before and after (a failed fork leaving everything as it was, the clone's
  registers, T_FORKALL until the first ``post_syscall``).  At quiescence
  what they leave behind is covered by A1, A2, A5, B7-B9, C11-C15, E21-E25
  and G32.
* A2's ``p_lockp == &proc_lock[lockslot(slot)]``: the model allocates
  ``p_lock`` per slot at boot, so it cannot point elsewhere; what is checked
  instead is that the slot's lock carries the slot's current pid.
* D18's "continuelwps ran exactly once": not observable afterwards; its
  consequence (no lwp left SUSPENDED without a reason, D18/D19) is checked.
* F29/F30 watchpoint contents and F30's brk/stack copy: the model has no
  watchpoint system calls (``a_wpage`` is never set) and keeps no record of
  the child's last brk; only the stash invariants are checked.
* G32's cwd refstr: not modelled.  The open-file table is one counter
  (``fcnt``), so its balance is the sum of ``p_fcnt``.
* ``tk_hold_count``/``pool_ref``/``ct_ref`` "before the fork" values and
  the nprocs counters of newer illumos (C12): not modelled.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from ..errors import RealforkError
from ..kernel.proc import NPROCSYNC
from ..kernel.structs import (
    CORECTL_CONTENT,
    CORECTL_PATH,
    LWP_STOPPED,
    LWP_ZOMB,
    P_PR_LOCK,
    PBWAIT,
    PEXITED,
    SEXITLWPS,
    SFORKING,
    SHOLDFORK,
    SHOLDFORK1,
    SHOLDWATCH,
    SIDL,
    SLWPWRAP,
    SSYS,
    STAT_NAMES,
    SVFORK,
    SVFWAIT,
    SZOMB,
    TP_DAEMON,
    TP_HOLDLWP,
    TS_CSTART,
    TS_UNPAUSE,
)
from ..kernel.systab import SYSNUM

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel

__all__ = ["InvariantViolation", "check_kernel", "violations"]

QUIESCENT_FLAGS = {"SHOLDFORK": SHOLDFORK, "SHOLDFORK1": SHOLDFORK1, "SFORKING": SFORKING,
                   "SHOLDWATCH": SHOLDWATCH, "SEXITLWPS": SEXITLWPS}


class InvariantViolation(RealforkError):
    """The kernel's state breaks one or more invariants; ``violations`` lists them."""

    def __init__(self, violations: list[str]) -> None:
        self.violations = list(violations)
        super().__init__(self._text())

    def _text(self) -> str:
        n = len(self.violations)
        head = f"{n} invariant violation{'s' if n != 1 else ''}"
        return "\n".join([head, *(f"  {v}" for v in self.violations)])

    def __str__(self) -> str:
        return self._text()


def violations(K: Kernel, running: bool = False) -> list[str]:
    """Every invariant violation in ``K``'s tables (empty when all hold).

    ``running``: ``K`` is paused while programs run, not between runs (see the
    module docstring for the two checks that differ)."""
    return _Checker(K, running).run()


def check_kernel(K: Kernel, running: bool = False) -> None:
    """Raise ``InvariantViolation`` naming every broken invariant of ``K``."""
    found = violations(K, running)
    if found:
        raise InvariantViolation(found)


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class _Checker:
    def __init__(self, K: Kernel, running: bool = False) -> None:
        self.K = K
        self.running = running
        self.g = K.g
        self.out: list[str] = []
        self.P = K.procs.slots
        self.cap = K.procs.capacity
        self.used = K.procs.used()
        self.used_set = set(self.used)
        self.active: list[int] = []  # slots on practive, in list order
        self.active_set: set[int] = set()
        self.lwps_of: dict[int, list[int]] = {}  # proc slot -> kthread ids on p_tlist

    # -- helpers -------------------------------------------------------------------------

    def bad(self, code: str, msg: str) -> None:
        self.out.append(f"{code} {msg}")

    def pslot(self, ptr: int) -> int | None:
        """The used proc slot pointer ``ptr`` names, or None."""
        if 1 <= ptr <= self.cap and self.P[ptr - 1].slot_inuse:
            return ptr - 1
        return None

    def who(self, slot: int) -> str:
        if 0 <= slot < self.cap:
            s = self.P[slot]
            return f"pid {s.p_pid}" if s.slot_inuse else f"free slot {slot}"
        return f"bad slot {slot}"

    def whop(self, ptr: int) -> str:
        """A proc pointer for messages."""
        if ptr == 0:
            return "NULL"
        if not 1 <= ptr <= self.cap:
            return f"bad pointer {ptr}"
        return self.who(ptr - 1)

    def walk(self, head: int, link: str, limit: int | None = None) -> tuple[list[int], str]:
        """Follow proc pointers from ``head`` through field ``link``: the slots
        visited and a problem ("" if none): a bad pointer or a cycle."""
        limit = self.cap + 1 if limit is None else limit
        out: list[int] = []
        seen: set[int] = set()
        ptr = head
        while ptr:
            slot = self.pslot(ptr)
            if slot is None:
                return out, f"reaches {self.whop(ptr)} (not an allocated proc)"
            if slot in seen:
                return out, f"loops back to {self.who(slot)}"
            seen.add(slot)
            out.append(slot)
            if len(out) > limit:
                return out, "is longer than the proc table"
            ptr = getattr(self.P[slot], link)
        return out, ""

    def live(self, slot: int) -> bool:
        return self.P[slot].p_stat not in (SZOMB, SIDL, 0)

    def procs(self) -> list[int]:
        """The procs the accounting covers: practive, or every used slot when
        practive is broken beyond use."""
        return self.active if self.active else self.used

    # -- driver ----------------------------------------------------------------------------

    def run(self) -> list[str]:
        for section in (self.check_practive, self.check_pids, self.check_pgrps,
                        self.check_upcounts, self.check_globals, self.check_family,
                        self.check_tasks, self.check_pools, self.check_contracts,
                        self.check_flags, self.check_locks, self.check_lwps,
                        self.check_dirs, self.check_as, self.check_refs,
                        self.check_zombies):
            try:
                section()
            except Exception as e:  # a table too broken to read: report, go on
                self.bad("X", f"checker section {section.__name__} failed: {e!r}")
        return self.out

    # -- A1: practive, nproc, the proc table -------------------------------------------------

    def check_practive(self) -> None:
        g, P = self.g, self.P
        act, problem = self.walk(g.practive, "p_next")
        if problem:
            self.bad("A1", f"practive {problem}")
        self.active, self.active_set = act, set(act)
        prev = 0
        for slot in act:
            if P[slot].p_prev != prev:
                self.bad("A1", f"practive: {self.who(slot)} has p_prev {self.whop(P[slot].p_prev)}"
                               f", expected {self.whop(prev)}")
            prev = slot + 1
        if g.nproc != len(act):
            self.bad("A1", f"nproc {g.nproc} != practive length {len(act)}")
        if g.nproc != len(self.used):
            self.bad("A1", f"nproc {g.nproc} != used proc slots {len(self.used)}")
        if g.nproc > g.v_proc:
            self.bad("A1", f"nproc {g.nproc} > v_proc {g.v_proc}")
        for slot in self.used:
            if slot not in self.active_set:
                stat = STAT_NAMES.get(P[slot].p_stat, "?")
                self.bad("A1", f"{self.who(slot)} (slot {slot}, {stat}) is allocated but not "
                               f"on practive")
        hdr = self.K.procs.hdr
        if hdr.nused != len(self.used):
            self.bad("A1", f"proc table header counts {hdr.nused} used slots, {len(self.used)} are")
        nfree, i, seen = 0, hdr.free_head, set()
        while i >= 0 and nfree <= self.cap:
            if i >= self.cap or i in seen:
                self.bad("A1", f"proc table free list is broken at slot {i}")
                break
            seen.add(i)
            if P[i].slot_inuse:
                self.bad("A1", f"proc table free list holds the allocated slot {i} ({self.who(i)})")
            nfree += 1
            i = P[i].slot_next
        if nfree + len(self.used) != self.cap:
            self.bad("A1", f"proc table: {len(self.used)} used + {nfree} free != v_proc {self.cap}")
        if not P[0].slot_inuse or P[0].p_pid != 0 or not P[0].p_flag & SSYS:
            self.bad("A1", "slot 0 is not p0 (sched, pid 0, SSYS)")
        npid = sum(1 for e in self.K.pidtab if e.pid_used and not e.pid_prinactive)
        if npid != g.nproc:
            self.bad("A1", f"nproc {g.nproc} != active pid table entries {npid}")

    # -- A2: the pid table -------------------------------------------------------------------

    def check_pids(self) -> None:
        K, P = self.K, self.P
        tab = K.pidtab
        maxpid = len(tab) - 1
        owners: dict[int, list[int]] = {}
        for slot in self.used:
            owners.setdefault(P[slot].p_pid, []).append(slot)
        for pid, slots in owners.items():
            if len(slots) > 1:
                self.bad("A2", f"pid {pid} is used by {len(slots)} procs (slots {slots})")
        for slot in self.used:
            pid = P[slot].p_pid
            if not 0 <= pid <= maxpid:
                self.bad("A2", f"slot {slot} has pid {pid} outside 0..{maxpid}")
                continue
            e = tab[pid]
            if not e.pid_used:
                self.bad("A2", f"pid {pid} (slot {slot}) is not in the pid table")
            elif e.pid_prinactive:
                self.bad("A2", f"pid {pid} (slot {slot}) is marked inactive in the pid table")
            elif e.pid_prslot != slot + 1:
                self.bad("A2", f"pid {pid} is at slot {slot} but its pid table entry names "
                               f"slot {e.pid_prslot - 1}")
        for pid in range(maxpid + 1):
            e = tab[pid]
            if not e.pid_used:
                continue
            if e.pid_prinactive:
                self.bad("A2", f"pid {pid} is left inactive in the pid table (never unhashed)")
                continue
            named = self.pslot(e.pid_prslot)
            if named is None:
                self.bad("A2", f"stale pid table entry: pid {pid} names slot "
                               f"{e.pid_prslot - 1}, which holds no proc")
            elif P[named].p_pid != pid:
                self.bad("A2", f"stale pid table entry: pid {pid} names slot {named}, which "
                               f"holds {self.who(named)}")
        # the slot's persistent p_lock is named after its current pid
        base = K.kg_sync.procsync_base
        if base:
            for slot in self.used:
                inst = K.dom.syncs[base + slot * NPROCSYNC].inst
                if slot and inst != P[slot].p_pid:
                    self.bad("A2", f"{self.who(slot)}: its p_lock is named for pid {inst}")
        init = self.g.proc_init
        if init:
            if self.pslot(init) is None:
                self.bad("A2", f"proc_init names {self.whop(init)}")

    # -- A4 (+ G32 session holds): process groups and sessions ---------------------------------

    def check_pgrps(self) -> None:
        K, P = self.K, self.P
        pgrps, sessions = K.pgrps, K.sessions
        member_of: dict[int, list[int]] = {}
        for gi in pgrps.used():
            pg = pgrps.slots[gi]
            members, problem = self.walk(pg.pg_head, "p_pglink")
            if problem:
                self.bad("A4", f"pgrp {pg.pg_id} member list {problem}")
            prev = 0  # the proc pointer (slot + 1) p_ppglink should hold
            for slot in members:
                if P[slot].p_ppglink != prev:
                    self.bad("A4", f"pgrp {pg.pg_id}: {self.who(slot)} has p_ppglink "
                                   f"{self.whop(P[slot].p_ppglink)}, expected {self.whop(prev)}")
                prev = slot + 1
                member_of.setdefault(slot, []).append(gi)
                if P[slot].p_pgrp != gi + 1:
                    self.bad("A4", f"{self.who(slot)} is on pgrp {pg.pg_id}'s list but its "
                                   f"p_pgrp is {P[slot].p_pgrp}")
            if pg.pg_members != len(members):
                self.bad("A4", f"pgrp {pg.pg_id} pg_members {pg.pg_members} != "
                               f"{len(members)} on its list")
            if not members:
                self.bad("A4", f"pgrp {pg.pg_id} (slot {gi}) is empty but still allocated")
            if not (1 <= pg.pg_sess <= sessions.capacity
                    and sessions.slots[pg.pg_sess - 1].slot_inuse):
                self.bad("A4", f"pgrp {pg.pg_id} names session pointer {pg.pg_sess}, "
                               f"not an allocated session")
        for slot in self.procs():
            s = P[slot]
            if s.p_stat == SIDL:
                self.bad("A4", f"{self.who(slot)} is still SIDL")
            if slot == 0 and not s.p_pgrp:
                continue
            if not s.p_pgrp:
                self.bad("A4", f"{self.who(slot)} is in no process group")
                continue
            gi = s.p_pgrp - 1
            if not (0 <= gi < pgrps.capacity and pgrps.slots[gi].slot_inuse):
                self.bad("A4", f"{self.who(slot)} has p_pgrp {s.p_pgrp}, not an allocated pgrp")
                continue
            n = member_of.get(slot, []).count(gi)
            if n != 1:
                self.bad("A4", f"{self.who(slot)} appears {n} times on its pgrp "
                               f"{pgrps.slots[gi].pg_id}'s member list")
            if s.p_pgid != pgrps.slots[gi].pg_id:
                self.bad("A4", f"{self.who(slot)} p_pgid {s.p_pgid} != its pgrp's id "
                               f"{pgrps.slots[gi].pg_id}")
        for slot, gis in member_of.items():
            if len(gis) > 1:
                self.bad("A4", f"{self.who(slot)} is on {len(gis)} pgrp member lists")
        # sessions: sid, child in parent's session, s_ref.  A proc's session is
        # the one it holds (p_sessp, where the model records it) or its pgrp's.
        has_sessp = hasattr(P[0], "p_sessp")
        sess_of: dict[int, int] = {}
        holders: dict[int, int] = {}
        for slot in self.procs():
            s = P[slot]
            gi = s.p_pgrp - 1
            pg_sess = (pgrps.slots[gi].pg_sess
                       if 0 <= gi < pgrps.capacity and pgrps.slots[gi].slot_inuse else 0)
            held = s.p_sessp if has_sessp else (pg_sess if slot else 0)
            if has_sessp and slot and not held:
                self.bad("A4", f"{self.who(slot)} holds no session (p_sessp is NULL)")
            if has_sessp and held and pg_sess and held != pg_sess:
                self.bad("A4", f"{self.who(slot)} holds session {held} but its pgrp is in "
                               f"session {pg_sess}")
            if held or pg_sess:
                sess_of[slot] = held or pg_sess
            if held:
                holders[held] = holders.get(held, 0) + 1
        for slot, sp in sess_of.items():
            si = sp - 1
            if not (0 <= si < sessions.capacity and sessions.slots[si].slot_inuse):
                self.bad("A4", f"{self.who(slot)} names session {sp}, not an allocated session")
                continue
            if P[slot].p_sid != sessions.slots[si].s_sid:
                self.bad("A4", f"{self.who(slot)} p_sid {P[slot].p_sid} != its session's sid "
                               f"{sessions.slots[si].s_sid}")
            par = self.pslot(P[slot].p_parent)
            if par is not None and par in sess_of and sess_of[par] != sp:
                self.bad("A4", f"{self.who(slot)} is not in its parent {self.who(par)}'s session")
        for si in sessions.used():
            ss = sessions.slots[si]
            npg = sum(1 for gi in pgrps.used() if pgrps.slots[gi].pg_sess == si + 1)
            nproc = holders.get(si + 1, 0)
            if ss.s_ref != npg + nproc:
                self.bad("G32", f"session sid {ss.s_sid} s_ref {ss.s_ref} != {npg + nproc} "
                                f"({npg} pgrp + {nproc} process holds)")
            if npg == 0 and nproc == 0:
                self.bad("G32", f"session sid {ss.s_sid} (slot {si}) is allocated but unused")

    # -- A5: upcounts --------------------------------------------------------------------------

    def check_upcounts(self) -> None:
        K, P = self.K, self.P
        expect: Counter[tuple[int, int]] = Counter()
        for slot in self.procs():
            if slot == 0:
                continue  # p0 is never counted
            cr = P[slot].p_cred
            if not (1 <= cr <= K.creds.capacity and K.creds.slots[cr - 1].slot_inuse):
                continue  # reported by G32
            c = K.creds.slots[cr - 1]
            expect[(c.cr_ruid, c.cr_zone)] += 1
        tab = K.upcounts
        n = len(tab)
        have: dict[tuple[int, int], int] = {}
        total = 0
        for i in range(n):
            e = tab[i]
            if not e.up_used:
                continue
            key = (e.up_uid, e.up_zone)
            if key in have:
                self.bad("A5", f"upcount uid {e.up_uid} zone {e.up_zone} has two entries")
            have[key] = have.get(key, 0) + e.up_count
            total += e.up_count
            if e.up_count <= 0:
                self.bad("A5", f"upcount uid {e.up_uid} zone {e.up_zone} is in use with "
                               f"count {e.up_count}")
            # reachable by _upcount_find's probe sequence
            h = (e.up_uid * 31 + e.up_zone) % n
            for k in range(n):
                j = (h + k) % n
                if j == i:
                    break
                f = tab[j]
                if not f.up_used and f.up_zone == 0:
                    self.bad("A5", f"upcount uid {e.up_uid} zone {e.up_zone} (entry {i}) is "
                                   f"unreachable: its probe sequence ends at entry {j}")
                    break
        for key in sorted(set(expect) | set(have)):
            if expect.get(key, 0) != have.get(key, 0):
                uid, zone = key
                pids = [P[s].p_pid for s in self.procs() if s and P[s].p_cred and
                        1 <= P[s].p_cred <= K.creds.capacity and
                        (K.creds.slots[P[s].p_cred - 1].cr_ruid,
                         K.creds.slots[P[s].p_cred - 1].cr_zone) == key]
                self.bad("A5", f"upcount uid {uid} zone {zone} is {have.get(key, 0)}, but "
                               f"{expect.get(key, 0)} procs have that real uid and zone "
                               f"(pids {pids})")
        if total != self.g.nproc - 1:
            self.bad("A5", f"upcounts sum to {total}, not nproc - 1 = {self.g.nproc - 1}")

    # -- A6, C14: global counters --------------------------------------------------------------

    def check_globals(self) -> None:
        g = self.g
        if g.fork_fail_pending != 0:
            self.bad("A6", f"fork_fail_pending is {g.fork_fail_pending}, not 0")
        if g.pool_barrier_count != 0:
            self.bad("C14", f"pool_barrier_count is {g.pool_barrier_count}, not 0")

    # -- B7-B9: family lists -------------------------------------------------------------------

    def check_family(self) -> None:
        P = self.P
        procs = self.procs()
        children_of: dict[int, list[int]] = {}
        for slot in procs:
            s = P[slot]
            if slot == 0:
                if s.p_parent:
                    self.bad("B7", f"p0 has a parent ({self.whop(s.p_parent)})")
                continue
            par = self.pslot(s.p_parent)
            if par is None:
                self.bad("B7", f"{self.who(slot)} has no parent (p_parent "
                               f"{self.whop(s.p_parent)})")
                continue
            if par == slot:
                self.bad("B7", f"{self.who(slot)} is its own parent")
                continue
            children_of.setdefault(par, []).append(slot)
            if s.p_ppid != P[par].p_pid:
                self.bad("B7", f"{self.who(slot)} p_ppid {s.p_ppid} != its parent's pid "
                               f"{P[par].p_pid}")
        for slot in procs:
            s = P[slot]
            kids, problem = self.walk(s.p_child, "p_sibling")
            if problem:
                self.bad("B7", f"{self.who(slot)}'s child list {problem}")
            prev = 0
            for c in kids:
                if P[c].p_parent != slot + 1:
                    self.bad("B7", f"{self.who(c)} is on {self.who(slot)}'s child list but its "
                                   f"parent is {self.whop(P[c].p_parent)}")
                if P[c].p_psibling != prev:
                    self.bad("B7", f"{self.who(c)} p_psibling is {self.whop(P[c].p_psibling)}, "
                                   f"expected {self.whop(prev)} (child list of "
                                   f"{self.who(slot)})")
                prev = c + 1
            want = set(children_of.get(slot, []))
            for c in sorted(want - set(kids)):
                self.bad("B7", f"{self.who(c)} names {self.who(slot)} as parent but is not on "
                               f"its child list")
        # B8: orphan chains
        on_chain: Counter[int] = Counter()
        for slot in procs:
            s = P[slot]
            orph, problem = self.walk(s.p_orphan, "p_nextorph")
            if problem:
                self.bad("B8", f"{self.who(slot)}'s orphan chain {problem}")
            for q in orph:
                on_chain[q] += 1
                if P[q].p_nextofkin != slot + 1:
                    self.bad("B8", f"{self.who(q)} is on {self.who(slot)}'s orphan chain but "
                                   f"its next of kin is {self.whop(P[q].p_nextofkin)}")
        for slot in procs:
            if slot == 0:
                continue
            s = P[slot]
            nok = self.pslot(s.p_nextofkin)
            if nok is None:
                self.bad("B8", f"{self.who(slot)} has no next of kin (p_nextofkin "
                               f"{self.whop(s.p_nextofkin)})")
            if on_chain[slot] != 1:
                self.bad("B8", f"{self.who(slot)} is on {on_chain[slot]} orphan chains, not 1")
        if on_chain[0]:
            self.bad("B8", "p0 is on an orphan chain")
        # B9: p_child_ns
        on_ns: Counter[int] = Counter()
        for slot in procs:
            ns, problem = self.walk(P[slot].p_child_ns, "p_sibling_ns")
            if problem:
                self.bad("B9", f"{self.who(slot)}'s p_child_ns list {problem}")
            for q in ns:
                on_ns[q] += 1
                if P[q].p_stat != SZOMB:
                    self.bad("B9", f"{self.who(q)} is on {self.who(slot)}'s p_child_ns but is "
                                   f"{STAT_NAMES.get(P[q].p_stat, P[q].p_stat)}, not SZOMB")
                if P[q].p_parent != slot + 1:
                    self.bad("B9", f"{self.who(q)} is on {self.who(slot)}'s p_child_ns but its "
                                   f"parent is {self.whop(P[q].p_parent)}")
        for q, n in on_ns.items():
            if n > 1:
                self.bad("B9", f"{self.who(q)} is on p_child_ns lists {n} times")
        self.on_ns = on_ns

    # -- C11, C12 (+ G32 task and project counts): tasks ---------------------------------------

    def check_tasks(self) -> None:
        K, P, g = self.K, self.P, self.g
        tasks, projects, zones = K.tasks, K.projects, K.zones
        ring_of: dict[int, list[int]] = {}
        for ti in tasks.used():
            tk = tasks.slots[ti]
            members: list[int] = []
            head = tk.tk_memb_list
            ptr, prev = head, 0
            while ptr:
                slot = self.pslot(ptr)
                if slot is None:
                    self.bad("C11", f"task {tk.tk_tkid} member ring reaches "
                                    f"{self.whop(ptr)}")
                    break
                if slot in members:
                    self.bad("C11", f"task {tk.tk_tkid} member ring loops back to "
                                    f"{self.who(slot)} without closing at its head")
                    break
                if prev and P[slot].p_taskprev != prev:
                    self.bad("C11", f"task {tk.tk_tkid}: {self.who(slot)} p_taskprev is "
                                    f"{self.whop(P[slot].p_taskprev)}, expected "
                                    f"{self.whop(prev)}")
                members.append(slot)
                prev = ptr
                ptr = P[slot].p_tasknext
                if ptr == head:
                    if P[self.pslot(head) or 0].p_taskprev != prev:
                        self.bad("C11", f"task {tk.tk_tkid}: ring head {self.whop(head)} "
                                        f"p_taskprev does not name the last member "
                                        f"{self.whop(prev)}")
                    break
                if len(members) > self.cap:
                    break
            ring_of[ti] = members
            for slot in members:
                if P[slot].p_task != ti + 1:
                    self.bad("C11", f"{self.who(slot)} is on task {tk.tk_tkid}'s ring but its "
                                    f"p_task is {P[slot].p_task}")
                if not self.live(slot):
                    self.bad("C11", f"{self.who(slot)} "
                                    f"({STAT_NAMES.get(P[slot].p_stat, '?')}) is on task "
                                    f"{tk.tk_tkid}'s member ring")
            if tk.tk_hold_count < len(members):
                self.bad("C11", f"task {tk.tk_tkid} tk_hold_count {tk.tk_hold_count} < "
                                f"{len(members)} members")
            elif tk.tk_hold_count != len(members):
                self.bad("G32", f"task {tk.tk_tkid} tk_hold_count {tk.tk_hold_count} != "
                                f"{len(members)} members (a leaked task hold)")
            if not (1 <= tk.tk_proj <= projects.capacity
                    and projects.slots[tk.tk_proj - 1].slot_inuse):
                self.bad("C11", f"task {tk.tk_tkid} names no allocated project "
                                f"({tk.tk_proj})")
        rings: Counter[int] = Counter()
        for members in ring_of.values():
            rings.update(members)
        for slot in self.procs():
            s = P[slot]
            if self.live(slot):
                ti = s.p_task - 1
                if not (0 <= ti < tasks.capacity and tasks.slots[ti].slot_inuse):
                    self.bad("C11", f"{self.who(slot)} p_task {s.p_task} is not an "
                                    f"allocated task")
                elif ring_of.get(ti, []).count(slot) != 1 or rings[slot] != 1:
                    self.bad("C11", f"{self.who(slot)} is not exactly once on its task "
                                    f"{tasks.slots[ti].tk_tkid}'s member ring "
                                    f"(on {rings[slot]} rings)")
                elif s.p_zone != tasks.slots[ti].tk_zone:
                    self.bad("C11", f"{self.who(slot)} p_zone {s.p_zone} != its task "
                                    f"{tasks.slots[ti].tk_tkid}'s zone {tasks.slots[ti].tk_zone}")
            elif s.p_stat == SZOMB:
                if s.p_task != g.task0:
                    self.bad("C11", f"zombie {self.who(slot)} has p_task {s.p_task}, not task0")
                if rings[slot] or s.p_tasknext or s.p_taskprev:
                    self.bad("C11", f"zombie {self.who(slot)} is still linked on a task ring")
        # C12: lwp counts
        for ti, members in ring_of.items():
            tk = tasks.slots[ti]
            want = sum(P[s].p_lwpcnt for s in members if self.live(s))
            if tk.tk_nlwps != want:
                pids = [P[s].p_pid for s in members]
                self.bad("C12", f"task {tk.tk_tkid} tk_nlwps {tk.tk_nlwps} != {want} lwps of "
                                f"its live members (pids {pids})")
        for pj in projects.used():
            pr = projects.slots[pj]
            mine = [ti for ti in tasks.used() if tasks.slots[ti].tk_proj == pj + 1]
            want = sum(tasks.slots[ti].tk_nlwps for ti in mine)
            if pr.kpj_nlwps != want:
                self.bad("C12", f"project {pr.kpj_id} kpj_nlwps {pr.kpj_nlwps} != {want}, the "
                                f"sum of tk_nlwps over its {len(mine)} tasks")
            if pr.kpj_ntasks != len(mine):
                self.bad("G32", f"project {pr.kpj_id} kpj_ntasks {pr.kpj_ntasks} != "
                                f"{len(mine)} tasks")
        for zi in zones.used():
            z = zones.slots[zi]
            mine = [s for s in self.procs() if P[s].p_zone == zi + 1 and self.live(s)]
            want = sum(P[s].p_lwpcnt for s in mine)
            if z.zone_nlwps != want:
                self.bad("C12", f"zone {z.zone_id} zone_nlwps {z.zone_nlwps} != {want} lwps of "
                                f"its live procs (pids {[P[s].p_pid for s in mine]})")
        for slot in self.procs():
            zp = P[slot].p_zone
            if not (1 <= zp <= zones.capacity and zones.slots[zp - 1].slot_inuse):
                self.bad("C12", f"{self.who(slot)} p_zone {zp} is not an allocated zone")

    # -- C13, C14: pools and the pool barrier --------------------------------------------------

    def check_pools(self) -> None:
        K, P, g = self.K, self.P, self.g
        pools = K.pools
        refs: Counter[int] = Counter()
        for slot in self.procs():
            s = P[slot]
            if s.p_stat == SZOMB:
                continue  # H33 checks the zombie's pool
            if s.p_poolflag & PEXITED:
                self.bad("C13", f"live {self.who(slot)} has PEXITED set")
                continue
            pp = s.p_pool
            if not (1 <= pp <= pools.capacity and pools.slots[pp - 1].slot_inuse):
                self.bad("C13", f"{self.who(slot)} p_pool {pp} is not an allocated pool")
                continue
            refs[pp - 1] += 1
        for pi in range(pools.capacity):
            pl = pools.slots[pi]
            if not pl.slot_inuse:
                if pl.pool_ref:
                    self.bad("C13", f"free pool slot {pi} has pool_ref {pl.pool_ref} (references "
                                    f"taken through a bad p_pool pointer)")
                continue
            if pl.pool_ref != refs[pi]:
                pids = [P[s].p_pid for s in self.procs()
                        if P[s].p_pool == pi + 1 and P[s].p_stat != SZOMB]
                self.bad("C13", f"pool {pl.pool_id} pool_ref {pl.pool_ref} != {refs[pi]} procs "
                                f"bound to it (pids {pids})")
        if g.pool_default and not (1 <= g.pool_default <= pools.capacity):
            self.bad("C13", f"pool_default {g.pool_default} is not a pool")
        for slot in self.procs():
            s = P[slot]
            if s.p_poolcnt != 0:
                self.bad("C14", f"{self.who(slot)} p_poolcnt {s.p_poolcnt}: a pool barrier "
                                f"was entered and not left")
            if s.p_poolflag & PBWAIT:
                self.bad("C14", f"{self.who(slot)} has PBWAIT set")

    # -- C15 (+ G32 ct_ref): contracts ---------------------------------------------------------

    def check_contracts(self) -> None:
        K, P = self.K, self.P
        cts = K.contracts
        members: Counter[int] = Counter()
        for slot in self.procs():
            s = P[slot]
            ct = s.p_ct_process
            if s.p_stat == SZOMB:
                continue  # H33
            if slot == 0:
                continue  # p0: assigned at boot, not a counted member
            if not ct:
                if not s.p_flag & SSYS and self.live(slot):
                    self.bad("C15", f"{self.who(slot)} is a member of no process contract")
                continue
            if not (1 <= ct <= cts.capacity and cts.slots[ct - 1].slot_inuse):
                self.bad("C15", f"{self.who(slot)} p_ct_process {ct} is not an allocated "
                                f"contract")
                continue
            members[ct - 1] += 1
        for ci in cts.used():
            c = cts.slots[ci]
            if c.conp_nmembers != members[ci]:
                pids = [P[s].p_pid for s in self.procs() if s and P[s].p_ct_process == ci + 1
                        and P[s].p_stat != SZOMB]
                self.bad("C15", f"contract {c.ct_id} conp_nmembers {c.conp_nmembers} != "
                                f"{members[ci]} live members (pids {pids})")
            if c.ct_ref != 1 + members[ci]:
                self.bad("G32", f"contract {c.ct_id} ct_ref {c.ct_ref} != 1 + {members[ci]} "
                                f"member holds")

    # -- D16, D17, F28-F31: flags --------------------------------------------------------------

    def check_flags(self) -> None:
        P = self.P
        for slot in self.procs():
            s = P[slot]
            left = [n for n, f in QUIESCENT_FLAGS.items() if s.p_flag & f]
            if left:
                self.bad("D16", f"{self.who(slot)} has {', '.join(left)} set at quiescence")
            if s.p_proc_flag & P_PR_LOCK and not self.running:
                self.bad("D17", f"{self.who(slot)} has P_PR_LOCK set at quiescence")
            self._check_prowner(slot)
        if self.running:
            self._check_prlocks()
        vfork_children: dict[int, list[int]] = {}
        for slot in self.procs():
            s = P[slot]
            if not s.p_flag & SVFORK:
                continue
            par = self.pslot(s.p_parent)
            if par is None:
                self.bad("F28", f"SVFORK {self.who(slot)} has no parent")
                continue
            vfork_children.setdefault(par, []).append(slot)
            ps = P[par]
            if s.p_as != ps.p_as:
                self.bad("F28", f"SVFORK {self.who(slot)} does not share its parent "
                                f"{self.who(par)}'s address space ({s.p_as} != {ps.p_as})")
            if not ps.p_flag & SVFWAIT:
                self.bad("D16", f"SVFORK {self.who(slot)}'s parent {self.who(par)} does not "
                                f"have SVFWAIT")
            if ps.p_stat == SZOMB:
                self.bad("F31", f"SVFORK {self.who(slot)}'s parent {self.who(par)} is a zombie")
            a = s.p_as
            if 1 <= a <= self.K.ases.capacity and self.K.ases.slots[a - 1].a_wpage:
                self.bad("F29", f"the address space {self.who(slot)} borrows with SVFORK "
                                f"still has watched pages")
        for slot in self.procs():
            s = P[slot]
            if s.p_flag & SVFWAIT:
                n = len(vfork_children.get(slot, []))
                if n != 1:
                    self.bad("D16", f"{self.who(slot)} has SVFWAIT but {n} SVFORK children")
                if s.p_stat == SZOMB:
                    self.bad("F31", f"zombie {self.who(slot)} has SVFWAIT")
            elif s.p_wpage:
                self.bad("F30", f"{self.who(slot)} has stashed watched pages (p_wpage) "
                                f"without SVFWAIT")

    def _check_prowner(self, slot: int) -> None:
        s = self.P[slot]
        owner, locked = s.p_prowner, bool(s.p_proc_flag & P_PR_LOCK)
        kts = self.K.dom.kthreads.slots
        if bool(owner) != locked:
            self.bad("D17", f"{self.who(slot)} has p_prowner {owner} with P_PR_LOCK "
                            f"{'set' if locked else 'clear'}")
        elif owner and not (1 <= owner <= len(kts) and kts[owner - 1].slot_inuse):
            self.bad("D17", f"{self.who(slot)}'s P_PR_LOCK is held by kthread {owner}, "
                            f"which has exited")

    def _check_prlocks(self) -> None:
        """Running: every P_PR_LOCK is held by an lwp inside ``prlock``."""
        K, P = self.K, self.P
        locked = [slot for slot in self.procs() if P[slot].p_proc_flag & P_PR_LOCK]
        if not locked:
            return
        kts = K.dom.kthreads.slots
        holders = sum(1 for i in K.dom.kthreads.used()
                      if kts[i].t_pid and K.lwps[i].t_sysnum == SYSNUM["prlock"])
        if len(locked) > holders:
            self.bad("D17", f"{[self.who(s) for s in locked]} have P_PR_LOCK set but only "
                            f"{holders} lwps are inside prlock")

    # -- D17: locks -----------------------------------------------------------------------------

    def check_locks(self) -> None:
        from ..sync.report import snapshot

        rep = snapshot(self.K.dom)
        kts = self.K.dom.kthreads.slots
        for t in rep.threads:
            if self.running and not kts[t.id - 1].t_pid:
                continue  # p0's: sched polling run_cv under pidlock, or the checker
            if t.held:
                self.bad("D17", f"{t.label} [kthread {t.id}] holds {', '.join(t.held)} at "
                                f"quiescence")
            if t.wchan >= 0 and t.wchan_kind in ("mutex", "rwlock"):
                self.bad("D17", f"{t.label} [kthread {t.id}] is blocked on {t.wchan_kind} "
                                f"{t.wchan_name} at quiescence")

    # -- D18, D19, E21: lwps -------------------------------------------------------------------

    def _suspended(self, tid: int) -> bool:
        lw = self.K.lwps[tid - 1]
        return lw.t_kstate == LWP_STOPPED and not (
            lw.t_schedflag & TS_CSTART and lw.t_schedflag & TS_UNPAUSE)

    def check_lwps(self) -> None:
        K, P = self.K, self.P
        nkt = K.dom.kthreads.capacity
        kts = K.dom.kthreads.slots
        for slot in self.procs():
            s = P[slot]
            tids: list[int] = []
            first = s.p_tlist
            tid, prev = first, 0
            while tid:
                if not 1 <= tid <= nkt:
                    self.bad("E21", f"{self.who(slot)} p_tlist reaches bad kthread id {tid}")
                    break
                if tid in tids:
                    self.bad("E21", f"{self.who(slot)} lwp list loops back to kthread {tid} "
                                    f"without closing at p_tlist")
                    break
                lw = K.lwps[tid - 1]
                if prev and lw.t_back != prev:
                    self.bad("E21", f"{self.who(slot)} lwp {lw.t_tid} (kthread {tid}) t_back is "
                                    f"{lw.t_back}, expected {prev}")
                tids.append(tid)
                prev = tid
                tid = lw.t_forw
                if tid == first:
                    if K.lwps[first - 1].t_back != prev:
                        self.bad("E21", f"{self.who(slot)} first lwp's t_back "
                                        f"{K.lwps[first - 1].t_back} is not the last lwp {prev}")
                    break
                if len(tids) > nkt:
                    break
                if tid == 0:
                    self.bad("E21", f"{self.who(slot)} lwp list is not circular")
            self.lwps_of[slot] = tids
            if s.p_agenttp and s.p_agenttp not in tids:
                self.bad("E21", f"{self.who(slot)} p_agenttp names kthread {s.p_agenttp}, which "
                                f"is not one of its lwps")
            if s.p_lwpcnt != len(tids):
                self.bad("E21", f"{self.who(slot)} p_lwpcnt {s.p_lwpcnt} != {len(tids)} lwps on "
                                f"p_tlist")
            for t in tids:
                lw = K.lwps[t - 1]
                if not kts[t - 1].slot_inuse:
                    self.bad("E21", f"{self.who(slot)} lwp {lw.t_tid} is kthread {t}, which is "
                                    f"not allocated")
                if lw.t_procp != slot + 1:
                    self.bad("E21", f"{self.who(slot)} lwp {lw.t_tid} (kthread {t}) has t_procp "
                                    f"{self.whop(lw.t_procp)}")
                if lw.t_kstate == LWP_ZOMB:
                    self.bad("E21", f"{self.who(slot)} lwp {lw.t_tid} is LWP_ZOMB but still on "
                                    f"p_tlist")
            if self.live(slot):
                nsusp = sum(1 for t in tids if self._suspended(t))
                want = len(tids) - nsusp
                if s.p_lwprcnt != want:
                    self.bad("D19", f"{self.who(slot)} p_lwprcnt {s.p_lwprcnt} != {want} lwps "
                                    f"not SUSPENDED ({len(tids)} lwps, {nsusp} suspended)")
                for t in tids:
                    lw = K.lwps[t - 1]
                    if (self._suspended(t) and not lw.t_proc_flag & TP_HOLDLWP
                            and not s.p_flag & SVFWAIT):
                        self.bad("D18", f"{self.who(slot)} lwp {lw.t_tid} is left SUSPENDED "
                                        f"without TP_HOLDLWP or a vfork wait")
        on_list = {t: slot for slot, ts in self.lwps_of.items() for t in ts}
        for i in K.dom.kthreads.used():
            lw = K.lwps[i]
            tid = i + 1
            if not lw.t_procp or lw.t_kstate == LWP_ZOMB:
                continue
            owner = self.pslot(lw.t_procp)
            if owner == 0 and tid not in on_list:
                continue  # sched's borrowed thread works for p0 without being its lwp
            if owner is None:
                self.bad("E21", f"kthread {tid} belongs to {self.whop(lw.t_procp)}, "
                                f"not an allocated proc")
            elif on_list.get(tid) != owner:
                self.bad("E21", f"kthread {tid} (lwp {lw.t_tid}) belongs to {self.who(owner)} "
                                f"but is not on its p_tlist")

    # -- E22-E25: lwp directories --------------------------------------------------------------

    def check_dirs(self) -> None:
        K, P = self.K, self.P
        sizes = K.dir_sizes
        owners: dict[tuple[int, int], list[int]] = {}
        for slot in self.procs():
            s = P[slot]
            if not s.p_lwpdir:
                if self.live(slot):
                    self.bad("E22", f"live {self.who(slot)} has no lwp directory")
                continue
            ptr = s.p_lwpdir
            k, bslot = (ptr - 1) >> 24, (ptr - 1) & 0xFFFFFF
            sz = s.p_lwpdir_sz
            if sz not in sizes:
                self.bad("E22", f"{self.who(slot)} p_lwpdir_sz {sz} is not a directory size "
                                f"{sizes[:4]}...")
                continue
            if not (0 <= k < len(sizes) and sizes[k] == sz and bslot < K.dirs[k].capacity
                    and K.dirs[k].slots[bslot].slot_inuse):
                self.bad("E22", f"{self.who(slot)} p_lwpdir {ptr} is not an allocated block of "
                                f"size {sz}")
                continue
            owners.setdefault((k, bslot), []).append(slot)
            hsz = s.p_tidhash_sz
            if hsz != (sz + 2) // 2 or not _is_pow2(hsz):
                self.bad("E22", f"{self.who(slot)} p_tidhash_sz {hsz} != (p_lwpdir_sz {sz} + 2)"
                                f" / 2 = {(sz + 2) // 2}")
                continue
            self._check_dir(slot, K.dirs[k].slots[bslot].ld, sz, hsz)
        for (k, bslot), slots in owners.items():
            if len(slots) > 1:
                self.bad("E22", f"lwp directory block {k}/{bslot} is shared by "
                                f"{[self.who(s) for s in slots]}")
        for k, table in enumerate(K.dirs):
            for bslot in table.used():
                if (k, bslot) not in owners:
                    self.bad("G32", f"lwp directory block of size {sizes[k]} (slot {bslot}) is "
                                    f"allocated but no proc owns it")

    def _check_dir(self, slot: int, ld: Any, sz: int, hsz: int) -> None:
        K, P = self.K, self.P
        s = P[slot]
        who = self.who(slot)
        on_chain: Counter[int] = Counter()
        for b in range(hsz):
            i, n = ld[b].ld_hash, 0
            while i >= 0 and n <= sz:
                if i >= sz:
                    self.bad("E23", f"{who} hash bucket {b} reaches entry {i} >= size {sz}")
                    break
                on_chain[i] += 1
                if on_chain[i] > 1:
                    self.bad("E23", f"{who} directory entry {i} is on hash chains "
                                    f"{on_chain[i]} times (or a chain loops)")
                    break
                e = ld[i]
                if not e.ld_used:
                    self.bad("E23", f"{who} free directory entry {i} is on hash chain {b}")
                elif e.le_lwpid & (hsz - 1) != b:
                    self.bad("E23", f"{who} lwpid {e.le_lwpid} (entry {i}) is on hash chain {b}, "
                                    f"not {e.le_lwpid & (hsz - 1)}")
                i, n = e.ld_next, n + 1
        free: list[int] = []
        i = s.p_lwpfree
        while i >= 0 and len(free) <= sz:
            if i >= sz:
                self.bad("E23", f"{who} free list reaches entry {i} >= size {sz}")
                break
            if i in free:
                self.bad("E23", f"{who} directory free list loops at entry {i}")
                break
            free.append(i)
            if ld[i].ld_used:
                self.bad("E23", f"{who} used directory entry {i} (lwpid {ld[i].le_lwpid}) is on "
                                f"the free list")
            i = ld[i].ld_next
        used = [i for i in range(sz) if ld[i].ld_used]
        for i in used:
            if on_chain[i] == 0:
                self.bad("E23", f"{who} lwpid {ld[i].le_lwpid} (entry {i}) is on no hash chain")
        free_set = set(free)
        for i in range(sz):
            if not ld[i].ld_used and i not in free_set:
                self.bad("E23", f"{who} free directory entry {i} is not on the free list")
        if len(used) + len(free_set) != sz:
            self.bad("E23", f"{who} directory: {len(used)} used + {len(free_set)} free != size "
                            f"{sz}")
        # E24: threads and entries
        ids = Counter(ld[i].le_lwpid for i in used)
        for lid, n in ids.items():
            if n > 1:
                self.bad("E24", f"{who} lwpid {lid} is in its directory {n} times")
        if not s.p_flag & SLWPWRAP:
            for i in used:
                if ld[i].le_lwpid > s.p_lwpid:
                    self.bad("E24", f"{who} lwpid {ld[i].le_lwpid} > p_lwpid {s.p_lwpid} "
                                    f"without SLWPWRAP")
        tids = self.lwps_of.get(slot, [])
        kts = K.dom.kthreads.slots
        ndaemon = 0
        for t in tids:
            lw = K.lwps[t - 1]
            if lw.t_proc_flag & TP_DAEMON:
                ndaemon += 1
            ds = lw.t_dslot
            if not 0 <= ds < sz or not ld[ds].ld_used or ld[ds].le_thread != t:
                self.bad("E24", f"{who} lwp {lw.t_tid} (kthread {t}) t_dslot {ds} does not name "
                                f"its directory entry")
            elif ld[ds].le_lwpid != lw.t_tid:
                self.bad("E24", f"{who} lwp {lw.t_tid} directory entry {ds} has lwpid "
                                f"{ld[ds].le_lwpid}")
            kt = kts[t - 1]
            if kt.slot_inuse and (kt.t_pid != s.p_pid or kt.t_lwpid != lw.t_tid):
                self.bad("E24", f"{who} lwp {lw.t_tid}: kthread {t} is labelled pid {kt.t_pid} "
                                f"lwp {kt.t_lwpid}")
        tidset = set(tids)
        zomb = 0
        for i in used:
            th = ld[i].le_thread
            if th == 0:
                zomb += 1
            elif th not in tidset:
                self.bad("E24", f"{who} directory entry {i} (lwpid {ld[i].le_lwpid}) names "
                                f"kthread {th}, not one of its lwps")
        if s.p_zombcnt != zomb:
            self.bad("E25", f"{who} p_zombcnt {s.p_zombcnt} != {zomb} zombie directory entries")
        if s.p_lwpdaemon != ndaemon:
            self.bad("E25", f"{who} p_lwpdaemon {s.p_lwpdaemon} != {ndaemon} TP_DAEMON lwps")

    # -- F28: address spaces -------------------------------------------------------------------

    def check_as(self) -> None:
        K, P, g = self.K, self.P, self.g
        ases = K.ases
        users: dict[int, list[int]] = {}
        for slot in self.procs():
            a = P[slot].p_as
            if not (1 <= a <= ases.capacity and ases.slots[a - 1].slot_inuse):
                self.bad("F28", f"{self.who(slot)} p_as {a} is not an allocated address space")
                continue
            users.setdefault(a, []).append(slot)
        for ai in ases.used():
            a = ai + 1
            if a == g.kas:
                continue
            who = users.get(a, [])
            n = ases.slots[ai].a_nprocs
            if n != len(who):
                self.bad("F28", f"address space {a} a_nprocs {n} != {len(who)} procs using it "
                                f"({[self.who(s) for s in who]})")
            if not who:
                self.bad("G32", f"address space {a} is allocated but no proc uses it")
            if len(who) > 1:
                vf = [s for s in who if P[s].p_flag & SVFORK]
                rest = [s for s in who if not P[s].p_flag & SVFORK]
                if len(rest) != 1 or any(P[s].p_parent != rest[0] + 1 for s in vf):
                    self.bad("F28", f"address space {a} is shared by "
                                    f"{[self.who(s) for s in who]} without a vfork")

    # -- G32: reference balances ---------------------------------------------------------------

    def check_refs(self) -> None:
        K, P, g = self.K, self.P, self.g
        procs = self.procs()
        # open files
        total = sum(P[s].p_fcnt for s in procs)
        if g.fcnt != total:
            self.bad("G32", f"fcnt {g.fcnt} != {total}, the sum of p_fcnt")
        # credentials
        creds = K.creds
        crusers: Counter[int] = Counter()
        for slot in procs:
            cr = P[slot].p_cred
            if not (1 <= cr <= creds.capacity and creds.slots[cr - 1].slot_inuse):
                self.bad("G32", f"{self.who(slot)} p_cred {cr} is not an allocated credential")
                continue
            crusers[cr - 1] += 1
        for ci in creds.used():
            c = creds.slots[ci]
            if c.cr_ref != crusers[ci]:
                self.bad("G32", f"cred {ci + 1} (uid {c.cr_uid}) cr_ref {c.cr_ref} != "
                                f"{crusers[ci]} procs using it")
        # vnodes
        vn = K.vnodes
        holds: Counter[int] = Counter()
        for slot in procs:
            s = P[slot]
            if not s.u_cdir and self.live(slot):
                self.bad("G32", f"live {self.who(slot)} has no current directory (u_cdir)")
            for f in ("u_cdir", "u_rdir", "p_exec", "p_execdir"):
                v = getattr(s, f)
                if not v:
                    continue
                if not (1 <= v <= vn.capacity and vn.slots[v - 1].slot_inuse):
                    self.bad("G32", f"{self.who(slot)} {f} {v} is not an allocated vnode")
                    continue
                holds[v - 1] += 1
        for vi in vn.used():
            v = vn.slots[vi]
            if v.v_count != 1 + holds[vi]:
                name = v.v_name.decode(errors="replace")
                self.bad("G32", f"vnode {name!r} v_count {v.v_count} != 1 + {holds[vi]} proc "
                                f"holds")
        # corectl: every pattern and content object's count is its procs'
        # holds, plus the kernel's on the two defaults; none is unused
        cc = K.corectls
        ccholds: Counter[int] = Counter()
        for slot in procs:
            s = P[slot]
            for f, kind in (("p_corefile", CORECTL_PATH), ("p_content", CORECTL_CONTENT)):
                c = getattr(s, f)
                if not c:
                    continue
                if not (1 <= c <= cc.capacity and cc.slots[c - 1].slot_inuse):
                    self.bad("G32", f"{self.who(slot)} {f} {c} is not an allocated corectl object")
                    continue
                if cc.slots[c - 1].cc_kind != kind:
                    self.bad("G32", f"{self.who(slot)} {f} {c} is a corectl object of kind "
                                    f"{cc.slots[c - 1].cc_kind}")
                ccholds[c - 1] += 1
        for f in ("corectl_path", "corectl_content"):
            c = getattr(g, f)
            if not (1 <= c <= cc.capacity and cc.slots[c - 1].slot_inuse
                    and cc.slots[c - 1].cc_default):
                self.bad("G32", f"the default {f} {c} is not an allocated default object")
        for ci in cc.used():
            c = cc.slots[ci]
            want = c.cc_default + ccholds[ci]
            what = "pattern" if c.cc_kind == CORECTL_PATH else "content"
            if c.cc_ref != want:
                self.bad("G32", f"core-file {what} {ci + 1} cc_ref {c.cc_ref} != "
                                f"{c.cc_default} + {ccholds[ci]} proc holds")
        # rctl sets: one private set per live proc
        rcs = K.rctlsets
        rusers: dict[int, list[int]] = {}
        for slot in procs:
            r = P[slot].p_rctls
            if not r:
                if self.live(slot):
                    self.bad("G32", f"live {self.who(slot)} has no rctl set")
                continue
            if not (1 <= r <= rcs.capacity and rcs.slots[r - 1].slot_inuse):
                self.bad("G32", f"{self.who(slot)} p_rctls {r} is not an allocated rctl set")
                continue
            rusers.setdefault(r - 1, []).append(slot)
        for ri in rcs.used():
            who = rusers.get(ri, [])
            if not who:
                self.bad("G32", f"rctl set {ri + 1} is allocated but no proc uses it")
            elif len(who) > 1:
                self.bad("G32", f"rctl set {ri + 1} is shared by {[self.who(s) for s in who]}")
            elif rcs.slots[ri].rcs_ref != 1:
                self.bad("G32", f"rctl set {ri + 1} of {self.who(who[0])} rcs_ref "
                                f"{rcs.slots[ri].rcs_ref} != 1")

    # -- H33: zombies --------------------------------------------------------------------------

    def check_zombies(self) -> None:
        P, g = self.P, self.g
        on_ns: Counter[int] = getattr(self, "on_ns", None) or Counter()
        for slot in self.procs():
            s = P[slot]
            if s.p_stat != SZOMB:
                continue
            who = f"zombie {self.who(slot)}"
            wrong = []
            for f, want in (("p_tlist", 0), ("p_lwpcnt", 0), ("p_lwprcnt", 0), ("p_lwpdir", 0),
                            ("p_lwpdir_sz", 0), ("p_tidhash_sz", 0), ("p_task", g.task0),
                            ("p_pool", g.pool_default), ("p_as", g.kas), ("p_fcnt", 0),
                            ("u_cdir", 0), ("u_rdir", 0), ("p_exec", 0), ("p_execdir", 0),
                            ("p_rctls", 0), ("p_ct_process", 0), ("p_zombcnt", 0)):
                if getattr(s, f) != want:
                    wrong.append(f"{f} {getattr(s, f)} (want {want})")
            if not s.p_poolflag & PEXITED:
                wrong.append("no PEXITED")
            if wrong:
                self.bad("H33", f"{who}: {', '.join(wrong)}")
            if on_ns[slot] == 0 and self.pslot(s.p_parent) is not None:
                self.bad("H33", f"{who} is not on its parent "
                                f"{self.whop(s.p_parent)}'s p_child_ns list")
