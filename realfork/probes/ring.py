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
import time
from dataclasses import dataclass
from typing import Any

from ..shm.segment import Layout, Segment
from ..shm.turnstile import ChainLocks

NARGS = 4
MAXPROBES = 256
RING_CHAIN = 1  # chain lock index serialising reservation and registration


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


@dataclass(frozen=True)
class ProbeEvent:
    name: str
    ts: int
    pid: int
    lwpid: int
    args: tuple[int, ...]
    tid: int = 0  # kernel thread id

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ts": self.ts, "pid": self.pid, "lwpid": self.lwpid,
                "tid": self.tid, "args": list(self.args)}


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
        """Take every published record, oldest first (single consumer)."""
        h = self.hdr
        out: list[ProbeEvent] = []
        seq = h.tail
        head = h.head
        if limit is not None:
            head = min(head, seq + limit)
        cap = self.capacity
        while seq < head:
            r = self.recs[seq % cap]
            if r.seq != seq + 1:
                break  # reserved but not yet published
            out.append(ProbeEvent(self.name_of(r.probe), r.ts, r.pid, r.lwpid,
                                  tuple(r.args), r.tid))
            seq += 1
        with self._lock:
            h.tail = seq
        return out

    @property
    def dropped(self) -> int:
        return self.hdr.dropped

    def pending(self) -> int:
        return self.hdr.head - self.hdr.tail
