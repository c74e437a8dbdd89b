"""Shared-memory layouts of the synchronization layer.

``kthread_t`` holds what every observer needs to see of a kernel thread: its
state, what it sleeps on (``t_wchan``), the locks it holds in order, its
kernel call chain when it blocked, and the in-segment semaphore it sleeps on.
``ksync_t`` is any synchronization object: a mutex, condition variable,
rwlock or counting semaphore is a few words plus a FIFO of waiting threads
linked through ``kthread_t.t_wnext``.  Both are only changed under the chain
lock of the object (see ``realfork.shm.turnstile``), except the fields a
thread writes about itself.
"""

from __future__ import annotations

import ctypes

from ..shm.table import Slot

MAXHELD = 24  # locks one thread may hold at once
CHAIN_BYTES = 192  # the recorded kernel call chain, text

# kthread_t.t_state
TS_FREE = 0
TS_ONPROC = 1  # running (or runnable: realfork does not model a run queue)
TS_SLEEP = 2  # blocked on t_wchan
TS_STOPPED = 3  # stopped by the kernel (hold, suspend, /proc)
TS_ZOMB = 4  # finished, slot not yet freed
STATE_NAMES = {TS_FREE: "free", TS_ONPROC: "onproc", TS_SLEEP: "sleep",
               TS_STOPPED: "stopped", TS_ZOMB: "zomb"}

# kthread_t.t_sflag: how the thread sleeps
T_WAKEABLE = 0x2  # interruptible sleep (cv_wait_sig): holds and signals wake it
T_WANTWRITE = 0x100  # blocked on an rwlock as a writer (else as a reader)

# kthread_t.t_wake: why a sleeping thread was woken
WAKE_NONE = 0
WAKE_SIGNALLED = 1  # cv_signal / cv_broadcast / mutex release / sema_v
WAKE_INTERRUPTED = 2  # an interruptible sleep was broken (signal, hold)
WAKE_TIMEOUT = 3

# ksync_t.kind
SYNC_MUTEX = 1
SYNC_CV = 2
SYNC_RW = 3
SYNC_SEMA = 4
KIND_NAMES = {SYNC_MUTEX: "mutex", SYNC_CV: "condvar", SYNC_RW: "rwlock", SYNC_SEMA: "sema"}


class kthread_t(Slot):
    _fields_ = [
        ("t_id", ctypes.c_int32),  # slot + 1; what owner and wait fields store
        ("t_state", ctypes.c_int32),
        ("t_os_pid", ctypes.c_int32),  # the real process running this thread
        ("t_os_tid", ctypes.c_int32),  # the real thread (native id)
        ("t_pid", ctypes.c_int32),  # the emulated process and lwp, set by the kernel
        ("t_lwpid", ctypes.c_int32),
        ("t_wchan", ctypes.c_int32),  # ksync index + 1 it sleeps on, 0 if none
        ("t_wnext", ctypes.c_int32),  # next waiter on the same object
        ("t_wake", ctypes.c_int32),
        ("t_sflag", ctypes.c_int32),
        ("t_astflag", ctypes.c_int32),  # set without a lock, like illumos aston()
        ("t_sig_check", ctypes.c_int32),
        ("t_sleep_ns", ctypes.c_int64),  # CLOCK_MONOTONIC when the wait began
        ("t_deadline_ns", ctypes.c_int64),  # when the wait panics
        ("t_waker", ctypes.c_int32),  # cv waits: the kthread expected to signal, 0 unknown
        ("t_waker_gen", ctypes.c_uint32),  # its slot generation when the wait began
        ("t_held", ctypes.c_int32 * MAXHELD),  # ksync index + 1, in order, 0-ended
        ("t_name", ctypes.c_char * 32),
        ("t_chain", ctypes.c_char * CHAIN_BYTES),  # "innermost;caller;...", at block
        ("t_sem", ctypes.c_uint64 * 4),  # sem_t, pshared: the thread's sleep semaphore
    ]


class ksync_t(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("lclass", ctypes.c_uint16),  # index into the lock class table
        ("inst", ctypes.c_int32),  # instance number shown in names, -1 none
        ("owner", ctypes.c_int32),  # mutex owner / rwlock writer (kthread id)
        ("count", ctypes.c_int32),  # rwlock readers / semaphore count
        ("whead", ctypes.c_int32),  # first and last waiting kthread id
        ("wtail", ctypes.c_int32),
        ("nwaiters", ctypes.c_int32),
        ("wwriters", ctypes.c_int32),  # rwlock: writers among the waiters
    ]


class lockclass_t(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char * 32),
        ("inst_label", ctypes.c_char * 8),  # "pid", "slot", "" ...
    ]


MAXCLASSES = 128
PANIC_BYTES = 256 * 1024


class sync_globals_t(ctypes.Structure):
    _fields_ = [
        ("deadlock_timeout_ns", ctypes.c_int64),
        ("panicked", ctypes.c_int32),  # set once; every waiter unwinds
        ("shutting_down", ctypes.c_int32),
        ("panic_thread", ctypes.c_int32),
        ("panic_len", ctypes.c_uint32),  # bytes of msgpack report in "panic"
        ("lockstat", ctypes.c_int32),  # lockstat probes on
        ("nsync", ctypes.c_int32),  # ksync objects handed out (bump allocator)
        ("nclasses", ctypes.c_int32),
        ("boot_ns", ctypes.c_int64),
        ("progress", ctypes.c_uint64),  # bumped by layers above while they make progress
        ("noise_steps", ctypes.c_uint64),  # noise points passed (pct clock; approximate)
        ("noise_delays", ctypes.c_uint64),  # noise points that delayed their thread
    ]
