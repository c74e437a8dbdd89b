"""The probe ring: fixed-size event records in shared memory.

Like a DTrace buffer, it is lossless while the consumer keeps up and counts
what it drops when it does not: a writer that finds the ring full increments
``dropped`` and discards its record, so ``dropped`` is never zero when
records were lost.  Writers reserve a sequence number under one chain lock,
then fill the record outside it and publish it by writing its ``seq`` last;
the single consumer stops at the first record not yet published.

Probe names ("proc:::create", "lockstat:::adaptive-block", ...) are
registered in a name table in the segment, so any attached process decodes
records without sharing Python state.
"""

from __future__ import annotations

import ctypes
import struct
import time
from typing import Any, NamedTuple

from ..shm.segment import Layout, Segment
from ..shm.turnstile import ChainLocks

NARGS = 4
MAXPROBES = 256
RING_CHAIN = 1  # chain lock index serialising reservation and registration

# Records a ring may hold.  The header keeps the capacity in a 32-bit field, and
# 4,194,304 records (64 bytes each, 268 MB of /dev/shm) hold well over a minute
# of the busiest stress campaign's probes; the kernel's own parameters
# (realfork.kernel.params) and the substrate's (validate_params) both take
# their bounds from here.
MIN_CAPACITY = 1
MAX_CAPACITY = 1 << 22


class probe_rec_t(ctypes.Structure):
    _fields_ = [
        ("seq", ctypes.c_uint64),  # sequence + 1 once published
        ("ts", ctypes.c_int64),  # CLOCK_MONOTONIC ns
        ("probe", ctypes.c_int32),
        ("tid", ctypes.c_int32),  # kthread id that fired it
        ("pid", ctypes.c_int32),
        ("lwpid", ctypes.c_int32),
        ("args", ctypes.c_int64 * NARGS),
    ]


class probe_ring_t(ctypes.Structure):
    _fields_ = [
        ("head", ctypes.c_uint64),  # next sequence to reserve
        ("tail", ctypes.c_uint64),  # next sequence the consumer reads
        ("dropped", ctypes.c_uint64),
        ("capacity", ctypes.c_uint32),
        ("nprobes", ctypes.c_uint32),
        ("names", (ctypes.c_char * 48) * MAXPROBES),
    ]


class ProbeEvent(NamedTuple):
    # a tuple, not a dataclass: the consumer makes one per record, and a frozen
    # dataclass's constructor costs several times a tuple's
    name: str
    ts: int
    pid: int
    lwpid: int
    args: tuple[int, ...]
    tid: int = 0  # kernel thread id

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ts": self.ts, "pid": self.pid, "lwpid": self.lwpid,
                "tid": self.tid, "args": list(self.args)}


# probe_rec_t as struct sees it, for the consumer's bulk decoding
_REC = struct.Struct(f"=Qqiiii{NARGS}q")
_REC_WORDS = _REC.size // 8
assert _REC.size == ctypes.sizeof(probe_rec_t)


def declare_ring(layout: Layout, capacity: int) -> None:
    layout.add("probe_ring", probe_ring_t)
    layout.add("probe_recs", probe_rec_t, capacity)


class ProbeRing:
    def __init__(self, seg: Segment, chains: ChainLocks) -> None:
        self.hdr: probe_ring_t = seg.region("probe_ring", probe_ring_t)
        recs = seg.region("probe_recs", probe_rec_t)
        if not isinstance(recs, ctypes.Array):
            recs = (probe_rec_t * 1).from_address(ctypes.addressof(recs))
        self.recs = recs
        self.capacity = len(recs)
        self._lock = chains.chain(RING_CHAIN)
        self._ids: dict[str, int] = {}
        self._names: list[str] = []

    def format(self) -> None:
        self.hdr.capacity = self.capacity

    # -- names ------------------------------------------------------------------

    def probe_id(self, name: str) -> int:
        """The id of probe ``name``, registering it on first use."""
        pid = self._ids.get(name)
        if pid is not None:
            return pid
        raw = name.encode()
        if len(raw) >= 48:
            raise ValueError(f"probe name too long: {name!r}")
        with self._lock:
            h = self.hdr
            for i in range(h.nprobes):
                if h.names[i].value == raw:
                    break
            else:
                i = h.nprobes
                if i >= MAXPROBES:
                    raise ValueError("too many probe names")
                h.names[i].value = raw
                h.nprobes = i + 1
        self._ids[name] = i
        return i

    def name_of(self, probe: int) -> str:
        names = self._names
        if probe >= len(names):
            h = self.hdr
            self._names = names = [h.names[i].value.decode() for i in range(h.nprobes)]
        return names[probe] if probe < len(names) else f"probe#{probe}"

    # -- writers ------------------------------------------------------------------

    def fire(self, probe: int, tid: int, pid: int, lwpid: int,
             a0: int = 0, a1: int = 0, a2: int = 0, a3: int = 0) -> None:
        ts = time.monotonic_ns()
        lk = self._lock
        lk.acquire()
        h = self.hdr
        seq = h.head
        if seq - h.tail >= self.capacity:
            h.dropped += 1
            lk.release()
            return
        h.head = seq + 1
        lk.release()
        r = self.recs[seq % self.capacity]
        r.ts = ts
        r.probe = probe
        r.tid = tid
        r.pid = pid
        r.lwpid = lwpid
        args = r.args
        args[0] = a0
        args[1] = a1
        args[2] = a2
        args[3] = a3
        r.seq = seq + 1  # publish

    # -- the consumer -------------------------------------------------------------

    def drain(self, limit: int | None = None) -> list[ProbeEvent]:
        """Take every published record, oldest first (single consumer).

        Done in bulk, since the consumer must keep up with every kernel thread
        at once: first the ``seq`` words alone, to find how many records in
        order are published, then one copy of those records, unpacked in C.
        A record seen published stays as it is until ``tail`` passes it.
        """
        h = self.hdr
        tail = h.tail
        head = h.head
        if limit is not None:
            head = min(head, tail + limit)
        cap = self.capacity
        out: list[ProbeEvent] = []
        seq = tail
        while seq < head:  # at most two pieces: up to the ring's end, then from 0
            start = seq % cap
            n = min(head - seq, cap - start)
            ready = self._published(start, n, seq)
            if ready:
                self._decode(start, ready, out)
                seq += ready
            if ready < n:
                break  # reserved but not yet published
        with self._lock:
            h.tail = seq
        return out

    def _published(self, start: int, n: int, seq: int) -> int:
        """How many records from slot ``start`` are published in order."""
        words = (ctypes.c_uint64 * (n * _REC_WORDS)).from_address(
            ctypes.addressof(self.recs) + start * _REC.size)
        seqs = memoryview(words).cast("B").cast("Q")[::_REC_WORDS].tolist()
        if seqs == list(range(seq + 1, seq + n + 1)):  # the common case
            return n
        for i, s in enumerate(seqs):
            if s != seq + 1 + i:
                return i
        return n

    def _decode(self, start: int, n: int, out: list[ProbeEvent]) -> None:
        raw = ctypes.string_at(ctypes.addressof(self.recs) + start * _REC.size, n * _REC.size)
        names = self._names
        new = tuple.__new__  # ProbeEvent's own __new__ is Python code; this is not
        for _seq, ts, probe, tid, pid, lwpid, a0, a1, a2, a3 in _REC.iter_unpack(raw):
            try:
                name = names[probe]
            except IndexError:  # registered since the last look
                name = self.name_of(probe)
                names = self._names
            out.append(new(ProbeEvent, (name, ts, pid, lwpid, (a0, a1, a2, a3), tid)))

    @property
    def dropped(self) -> int:
        return self.hdr.dropped

    def pending(self) -> int:
        return self.hdr.head - self.hdr.tail
