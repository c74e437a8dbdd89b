"""Stop signals (SIGINT, SIGTERM) that never land inside a kernel operation.

Python runs a signal handler in the main thread only, between two bytecodes
of whatever that thread is executing.  A handler that raises (SIGINT's
``KeyboardInterrupt``, the command line's ``SystemExit`` for SIGTERM) can
therefore raise in the middle of any kernel code the main thread runs: after
a chain lock's acquire and before its release, between two field updates
under it, between ``mutex_enter`` and ``mutex_exit``, or while the thread is
queued on a sleep queue.  Those words then stay half updated: a chain lock
held by nobody, a mutex owned by a thread that has unwound, a waiter handed a
lock it is never woken for.  The supervisor's own clean-up then waits on
them (a ``realfork stress`` interrupted that way hung for the whole
"would not die" deadline).

No window can be narrowed enough against that, so the main thread never
takes such an exception while it drives a kernel: within ``deferred()`` the
two handlers only *record* the signal; the loop that drives the kernel looks
at ``Deferral.signum`` at its safe points (between whole kernel operations)
and winds down from there.  On leaving the block the previous handlers come
back, and, unless the caller took charge of the signals (``replay=False``),
every recorded signal is raised again, so it reaches the previous handler
(or the default action) at a point where no kernel operation is in progress.

Processes that only serve the kernel (the ``processes`` backend's fork server
and hosts) ignore both signals altogether (``ignore_stop_signals``): their
supervisor tells them when to stop, and they die with it otherwise.
``blocked()`` keeps the signals pending across a ``fork`` so that a child
never runs its parent's handler before it has set its own.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_Handler = Callable[[int, Any], Any] | int | None


class Deferral:
    """The signals recorded by one ``deferred()`` block (outermost)."""

    def __init__(self, replay: bool) -> None:
        self.replay = replay
        self.received: list[int] = []
        self.saved: dict[int, _Handler] = {}

    @property
    def signum(self) -> int:
        """The first signal received in the block, or 0."""
        return self.received[0] if self.received else 0

    def _record(self, signum: int, frame: object) -> None:
        # no lock, no kernel word, nothing that can raise: only the record
        # (a supervisor's waits are short, so none needs waking)
        self.received.append(signum)


_active: Deferral | None = None


def active() -> Deferral | None:
    """The deferral in force in this process, if any."""
    return _active


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def deferred(replay: bool = True) -> Iterator[Deferral]:
    """Within the block SIGINT and SIGTERM only record themselves (see the
    module docstring).  Nested blocks share the outermost one's record.  From
    a thread other than the main one the block changes nothing (no handler
    can raise in this thread) and its record stays empty."""
    global _active
    if _active is not None:
        yield _active
        return
    d = Deferral(replay)
    if not _in_main_thread():
        yield d
        return
    try:
        for sig in STOP_SIGNALS:
            d.saved[sig] = signal.signal(sig, d._record)
        _active = d
        yield d
    finally:
        _active = None
        for signum, prev in d.saved.items():
            signal.signal(signum, signal.SIG_DFL if prev is None else prev)
        if d.replay:
            pending, d.received = d.received, []
            for signum in pending:
                # the previous handler runs now, in this thread, before
                # raise_signal returns: it raises here, or the default
                # action ends the process, as the signal would have
                signal.raise_signal(signum)


@contextmanager
def blocked() -> Iterator[None]:
    """Keep SIGINT and SIGTERM pending (not delivered) in the calling thread
    for the block: around a ``fork`` whose child must set its own handlers
    before any signal reaches it."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def ignore_stop_signals(unblock: bool = True) -> None:
    """In a process that only serves the kernel: ignore SIGINT and SIGTERM
    (a terminal's ^C reaches the whole process group), then, with ``unblock``,
    let signals through again (the mask was inherited from ``blocked()``)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if unblock:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


__all__ = ["STOP_SIGNALS", "Deferral", "active", "blocked", "deferred", "ignore_stop_signals"]
