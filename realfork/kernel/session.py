"""Sessions and process groups (``os/session.c``, ``os/pgrp.c``), as much as fork needs:
the session hold taken by ``getproc`` and ``pgjoin``/``pgexit`` under pidlock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..sync.mutex import MUTEX_HELD
from .proc import Proc
from .structs import NIL

if TYPE_CHECKING:
    from .kernel import Kernel


def sess_create(K: Kernel, sid: int) -> int:
    slot = K.sessions.alloc()
    assert slot is not None
    K.sessions.zero(slot)
    s = K.sessions.slots[slot]
    s.s_sid, s.s_ref = sid, 0
    return slot + 1


def sess_hold(K: Kernel, sess: int) -> None:
    K.sessions.slots[sess - 1].s_ref += 1  # SESS_HOLD (pidlock)


def sess_rele(K: Kernel, sess: int) -> None:
    s = K.sessions.slots[sess - 1]
    s.s_ref -= 1
    if s.s_ref == 0:
        K.sessions.free(sess - 1)


def pgrp_create(K: Kernel, pgid: int, sess: int) -> int:
    slot = K.pgrps.alloc()
    assert slot is not None
    K.pgrps.zero(slot)
    pg = K.pgrps.slots[slot]
    pg.pg_id, pg.pg_sess = pgid, sess
    sess_hold(K, sess)
    return slot + 1


def pgjoin(K: Kernel, p: Proc, pgrp: int) -> None:
    """Make ``p`` a member of process group ``pgrp`` (requires pidlock)."""
    assert MUTEX_HELD(K.pidlock)
    pg = K.pgrps.slots[pgrp - 1]
    p.s.p_pgrp = pgrp
    p.s.p_pgid = pg.pg_id
    p.s.p_pglink = pg.pg_head
    p.s.p_ppglink = NIL
    if pg.pg_head:
        K.proc(pg.pg_head).s.p_ppglink = p.id
    pg.pg_head = p.id
    pg.pg_members += 1


def pgexit(K: Kernel, p: Proc) -> None:
    """Leave the process group; the last member frees it (requires pidlock)."""
    assert MUTEX_HELD(K.pidlock)
    pgrp = p.s.p_pgrp
    pg = K.pgrps.slots[pgrp - 1]
    s = p.s
    # the member list is doubly linked, as illumos's is: no walk to unlink
    if pg.pg_head == p.id:
        pg.pg_head = s.p_pglink
    if s.p_ppglink:
        K.proc(s.p_ppglink).s.p_pglink = s.p_pglink
    if s.p_pglink:
        K.proc(s.p_pglink).s.p_ppglink = s.p_ppglink
    pg.pg_members -= 1
    s.p_pgrp = NIL
    s.p_pglink = s.p_ppglink = NIL
    if pg.pg_members == 0:
        sess_rele(K, pg.pg_sess)
        K.pgrps.free(pgrp - 1)


def pgmembers(K: Kernel, pgrp: int) -> list[int]:
    out = []
    cur = K.pgrps.slots[pgrp - 1].pg_head
    while cur:
        out.append(cur)
        cur = K.proc(cur).s.p_pglink
    return out
