"""The host table of the ``processes`` backend, in the segment.

A host is an OS process that runs the lwps of one emulated process at a time.
Hosts are made ahead of need by the fork server and wait IDLE; ``assign``
gives one to a new emulated process (waiting, and counting the wait, only if
none is idle); the kernel starts lwps there by posting kthread ids to the
host's mailbox and its semaphore; a host whose lwps have all ended goes back
to IDLE.  Table changes happen under one chain lock; the semaphores are
plain in-segment ``sem_t`` (machine plumbing, not kernel objects).
"""

from __future__ import annotations

import ctypes
import time
from typing import Any

from ..errors import KernelPanic
from ..shm import libc
from ..shm.segment import Layout, Segment
from ..shm.turnstile import ChainLocks

HOST_CHAIN = 6
MAILBOX = 128

H_FREE, H_STARTING, H_IDLE, H_ASSIGNED, H_DEAD = 0, 1, 2, 3, 4
STATE_NAMES = {H_FREE: "free", H_STARTING: "starting", H_IDLE: "idle",
               H_ASSIGNED: "assigned", H_DEAD: "dead"}


class host_t(ctypes.Structure):
    _fields_ = [
        ("state", ctypes.c_int32),
        ("os_pid", ctypes.c_int32),
        ("proc", ctypes.c_int32),  # emulated proc slot + 1 while ASSIGNED
        ("pid", ctypes.c_int32),  # its emulated pid (for reports after it is gone)
        ("head", ctypes.c_uint32),  # mailbox of kthread ids to start
        ("tail", ctypes.c_uint32),
        ("mailbox", ctypes.c_int32 * MAILBOX),
        ("served", ctypes.c_uint64),  # emulated processes hosted so far
        ("sem", ctypes.c_uint64 * 4),  # sem_t: wakes the host's dispatcher
    ]


class hostpool_t(ctypes.Structure):
    _fields_ = [
        ("forkserver_pid", ctypes.c_int32),
        ("want_idle", ctypes.c_int32),  # the fork server keeps this many idle
        ("nidle", ctypes.c_int32),
        ("created", ctypes.c_uint64),
        ("assigned", ctypes.c_uint64),
        ("waits", ctypes.c_uint64),  # assignments that found no idle host
        ("closing", ctypes.c_int32),
        ("req_sem", ctypes.c_uint64 * 4),  # wakes the fork server
        ("avail_sem", ctypes.c_uint64 * 4),  # a host became idle
    ]


def declare(layout: Layout, nhosts: int) -> None:
    layout.add("hostpool", hostpool_t)
    layout.add("hosts", host_t, nhosts)


class HostTable:
    def __init__(self, seg: Segment, chains: ChainLocks) -> None:
        self.pool: hostpool_t = seg.region("hostpool", hostpool_t)
        hosts = seg.region("hosts", host_t)
        if not isinstance(hosts, ctypes.Array):
            hosts = (host_t * 1).from_address(ctypes.addressof(hosts))
        self.hosts: Any = hosts
        self.lock = chains.chain(HOST_CHAIN)
        base = ctypes.addressof(self.pool)
        self.req_sem = base + hostpool_t.req_sem.offset
        self.avail_sem = base + hostpool_t.avail_sem.offset

    def format(self, want_idle: int) -> None:
        libc.sem_init(self.req_sem, 1, 0)
        libc.sem_init(self.avail_sem, 1, 0)
        for h in self.hosts:
            libc.sem_init(self.host_sem(h), 1, 0)
        self.pool.want_idle = want_idle

    @staticmethod
    def host_sem(h: host_t) -> int:
        return ctypes.addressof(h) + host_t.sem.offset

    # -- the fork server's side -------------------------------------------------------

    def reserve_slot(self) -> int:
        """A FREE slot marked STARTING for a host about to be forked; -1 if full."""
        with self.lock:
            for i, h in enumerate(self.hosts):
                if h.state in (H_FREE, H_DEAD):
                    h.state = H_STARTING
                    h.os_pid = 0
                    h.proc = h.pid = 0
                    h.head = h.tail = 0
                    return i
        return -1

    def shortfall(self) -> int:
        p = self.pool
        starting = sum(1 for h in self.hosts if h.state == H_STARTING)
        return p.want_idle - p.nidle - starting

    # -- a host's side --------------------------------------------------------------------

    def become_idle(self, i: int) -> None:
        with self.lock:
            h = self.hosts[i]
            h.state = H_IDLE
            h.proc = 0
            self.pool.nidle += 1
        libc.sem_post(self.avail_sem)

    def take_starts(self, i: int) -> list[int]:
        with self.lock:
            h = self.hosts[i]
            out = []
            while h.tail != h.head:
                out.append(h.mailbox[h.tail % MAILBOX])
                h.tail += 1
        return out

    # -- the kernel's side ------------------------------------------------------------------

    def assign(self, proc_slot: int, pid: int, deadline_ns: int, is_dead: Any) -> int:
        """Give an idle host to emulated process ``proc_slot``; its index.

        Waits (and counts the wait) only when no host is idle.
        """
        waited = False
        while True:
            with self.lock:
                i = next((k for k, h in enumerate(self.hosts) if h.state == H_IDLE), -1)
                if i >= 0:
                    h = self.hosts[i]
                    h.state = H_ASSIGNED
                    h.proc = proc_slot + 1
                    h.pid = pid
                    h.served += 1
                    p = self.pool
                    p.nidle -= 1
                    p.assigned += 1
                    if waited:
                        p.waits += 1
                    low = p.nidle < p.want_idle
                else:
                    low = True
            if low:
                libc.sem_post(self.req_sem)  # the fork server tops the pool up
            if i >= 0:
                return i
            waited = True
            if is_dead():
                raise KernelPanic("kernel panicked")
            if time.monotonic_ns() > deadline_ns:
                raise TimeoutError("no host became available")
            libc.sem_wait_until(self.avail_sem, time.monotonic_ns() + 50_000_000)

    def post_start(self, i: int, tid: int) -> None:
        with self.lock:
            h = self.hosts[i]
            if h.head - h.tail >= MAILBOX:
                raise RuntimeError("host mailbox full")
            h.mailbox[h.head % MAILBOX] = tid
            h.head += 1
        libc.sem_post(self.host_sem(self.hosts[i]))

    def host_of_os_pid(self, os_pid: int) -> int:
        for i, h in enumerate(self.hosts):
            if h.os_pid == os_pid and h.state != H_FREE:
                return i
        return -1
