"""A process's lwp directory and tid hash (``lwp_hash_in``/``out``/``lookup``).

A directory of size ``n`` (2, 6, 14, 30 ... = 2 * old + 2) is one block of
``n`` entries from the size class's table; the tid hash has ``(n + 2) / 2``
buckets (a power of two) whose heads live in the first entries' ``ld_hash``.
Free entries are chained through ``ld_next`` from ``p_lwpfree`` in index order.

illumos allocates a directory with KM_SLEEP, which does not fail; realfork's
size classes are fixed tables (docs/kernel.md, "Allocation failures").  The
two-entry class cannot fill, so running out of it panics.  The larger
classes can: a process keeps its directory's size after its lwps exit (and
forkall gives its child that size), and zombie lwps keep their entries.  A
larger class running out fails the lwp's creation, as illumos's lwp_create
fails when it cannot get the new lwp's stack (``segkp_cache_get``): EAGAIN
from lwp_create, forklwp's failure in cfork.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .proc import Proc

if TYPE_CHECKING:
    from .kernel import Kernel


def dir_alloc(K: Kernel, size: int) -> int:
    """Takes no lock but the table's chain lock.  A zero-filled directory
    block of ``size`` entries; its pointer, or 0 when a larger size class is
    out of blocks.

    The two-entry class never runs out: it has two blocks per proc slot, a
    proc holds one at most, and only exec holds a second while it swaps them
    (kernel.dir_capacity).  Running out of it is a table that cannot fill
    filling: a panic, not a failure illumos could have."""
    k = K.dir_sizes.index(size)
    slot = K.dirs[k].alloc()
    if slot is None:
        if k == 0:
            K.dom.panic(f"table lwpdir0 full ({K.dirs[0].capacity} two-entry directories "
                        f"for {K.params.nproc} proc slots): cannot happen")
        return 0
    K.dirs[k].zero(slot)
    return ((k << 24) | slot) + 1


def dir_free(K: Kernel, ptr: int) -> None:
    if ptr:
        K.dirs[(ptr - 1) >> 24].free((ptr - 1) & 0xFFFFFF)


def dir_install(K: Kernel, p: Proc, ptr: int, size: int) -> None:
    """Give ``p`` the empty directory ``ptr``: every entry free, in index order."""
    ld = K.dir_block(ptr)
    for i in range(size):
        e = ld[i]
        e.ld_used = 0
        e.ld_next = i + 1 if i + 1 < size else -1
        e.ld_hash = -1
    s = p.s
    s.p_lwpdir = ptr
    s.p_lwpdir_sz = size
    s.p_lwpfree = 0
    s.p_tidhash_sz = (size + 2) // 2


def lwp_hash_in(K: Kernel, p: Proc, lwpid: int, tid: int, start_ns: int | None = None) -> int:
    """Store an lwpent in a free entry and hash it; the entry's index."""
    s = p.s
    ld = K.dir_block(s.p_lwpdir)
    i = s.p_lwpfree
    if i < 0:
        K.dom.panic(f"lwp_hash_in: directory of pid {s.p_pid} is full")
    e = ld[i]
    s.p_lwpfree = e.ld_next
    e.ld_used = 1
    e.le_lwpid = lwpid
    e.le_thread = tid
    e.le_start = time.monotonic_ns() if start_ns is None else start_ns
    b = ld[lwpid & (s.p_tidhash_sz - 1)]
    e.ld_next = b.ld_hash
    b.ld_hash = i
    if tid:
        K.lwps[tid - 1].t_dslot = i
    return i


def lwp_hash_lookup(K: Kernel, p: Proc, lwpid: int) -> int:
    """The directory index of ``lwpid``, or -1."""
    s = p.s
    if not s.p_lwpdir:
        return -1
    ld = K.dir_block(s.p_lwpdir)
    i = ld[lwpid & (s.p_tidhash_sz - 1)].ld_hash
    while i >= 0:
        if ld[i].le_lwpid == lwpid:
            return i
        i = ld[i].ld_next
    return -1


def lwp_hash_out(K: Kernel, p: Proc, lwpid: int) -> None:
    """Unhash ``lwpid`` and put its entry back on the free list."""
    s = p.s
    ld = K.dir_block(s.p_lwpdir)
    b = ld[lwpid & (s.p_tidhash_sz - 1)]
    prev = -1
    i = b.ld_hash
    while i >= 0 and ld[i].le_lwpid != lwpid:
        prev, i = i, ld[i].ld_next
    if i < 0:
        return
    if prev < 0:
        b.ld_hash = ld[i].ld_next
    else:
        ld[prev].ld_next = ld[i].ld_next
    e = ld[i]
    e.ld_used = 0
    e.le_lwpid = 0
    e.le_thread = 0
    e.ld_next = s.p_lwpfree
    s.p_lwpfree = i


def dir_entries(K: Kernel, p: Proc) -> list[tuple[int, int, int, int]]:
    """(index, lwpid, kthread id, start) of every used entry, in directory order."""
    s = p.s
    if not s.p_lwpdir:
        return []
    ld = K.dir_block(s.p_lwpdir)
    return [(i, ld[i].le_lwpid, ld[i].le_thread, ld[i].le_start)
            for i in range(s.p_lwpdir_sz) if ld[i].ld_used]


def dir_grow(K: Kernel, p: Proc) -> bool:
    """Called with p->p_lock held.  Move to the next directory size when the
    free list is empty; False when there is no larger size class or it is out
    of blocks (lwp_create then fails as for want of an lwp stack: see the
    module's docstring)."""
    s = p.s
    old, oldsz = s.p_lwpdir, s.p_lwpdir_sz
    k = K.dir_sizes.index(oldsz)
    if k + 1 >= len(K.dir_sizes):
        return False
    newsz = K.dir_sizes[k + 1]
    new = dir_alloc(K, newsz)
    if not new:
        return False
    entries = dir_entries(K, p)
    dir_install(K, p, new, newsz)
    for _, lwpid, tid, start in entries:
        lwp_hash_in(K, p, lwpid, tid, start)
    dir_free(K, old)
    return True
