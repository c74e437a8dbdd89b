"""The ``threads`` backend's thread factory: every kernel thread is a real OS
thread of this process, bound to its kthread slot for its whole life."""

from __future__ import annotations

import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import KernelPanic
from ..sync.domain import Substrate
from ..sync.kthread import KThread, _cpu, set_curthread
from ..sync.structs import TS_ZOMB


def _thread_body(dom: Substrate, t: KThread, fn: Callable[..., Any], args: tuple) -> None:
    dom.kthread_bind(t)
    set_curthread(t)
    try:
        fn(*args)
    except KernelPanic:
        pass  # the kernel panicked: unwind quietly, the report is in the segment
    except BaseException as e:  # a bug in kernel code: that is a panic too
        where = "".join(traceback.format_exception(e)[-3:]).strip().replace("\n", " | ")
        try:
            dom.panic(f"kernel thread {dom.thread_name(t.id)} died: {e!r} ({where})",
                      culprit=t.id)
        except KernelPanic:
            pass
    finally:
        set_curthread(None)
        t.s.t_state = TS_ZOMB
        dom.kthread_free(t)
        dom.local_threads.discard(t)  # a pooled OS thread lives on without it


class ThreadFactory:
    """Creates kernel threads as OS threads of the calling process.

    With ``pooled``, an OS thread whose kernel thread has ended waits (idle,
    at most ``POOL_MAX`` of them) to be bound to the next one: starting a
    Python thread costs a thread creation and a wait for it to start, which
    was the largest single cost of an emulated fork.  A kernel thread is
    still bound to one OS thread for its whole life.
    """

    POOL_MAX = 64

    def __init__(self, dom: Substrate, pooled: bool = False) -> None:
        self.dom = dom
        self.pooled = pooled
        self._cv = threading.Condition(threading.Lock())
        self._jobs: deque[tuple[KThread, Callable[..., Any], tuple]] = deque()
        self._idle = 0
        self._workers: list[threading.Thread] = []
        self._closing = False
        if pooled:
            dom.on_shutdown.append(self.close)

    def spawn(self, fn: Callable[..., Any], *args: Any, name: str = "", pid: int = 0,
              lwpid: int = 0) -> KThread:
        t = self.dom.kthread_create(name, pid, lwpid)
        self.start(t, fn, *args)
        return t

    def start(self, t: KThread, fn: Callable[..., Any], *args: Any) -> None:
        """Bind an allocated kthread to an OS thread running ``fn(*args)``."""
        if self.pooled:
            self._start_pooled(t, fn, args)
            return
        dom = self.dom
        name = t.s.t_name.decode()
        th = threading.Thread(target=_thread_body, args=(dom, t, fn, args),
                              name=f"realfork-kt{t.id}" + (f"-{name}" if name else ""),
                              daemon=True)
        t.os_thread = th
        dom.local_threads.add(t)
        th.start()

    @staticmethod
    @contextmanager
    def adopt(dom: Substrate, name: str = "", pid: int = 0, lwpid: int = 0) -> Iterator[KThread]:
        """Run the calling OS thread as a kernel thread for the ``with`` block."""
        t = dom.kthread_create(name, pid, lwpid)
        dom.kthread_bind(t)
        set_curthread(t)
        try:
            yield t
        finally:
            # The block may be left from another OS thread (a watchdog closing
            # the kernel): only the adopting thread's own record is cleared.
            if getattr(_cpu, "t", None) is t:
                set_curthread(None)
            dom.local_threads.discard(t)
            dom.kthread_free(t)

    # -- the pool ------------------------------------------------------------------

    def _start_pooled(self, t: KThread, fn: Callable[..., Any], args: tuple) -> None:
        self.dom.local_threads.add(t)
        with self._cv:
            self._jobs.append((t, fn, args))
            if self._idle:
                self._idle -= 1
                self._cv.notify()
                return
            th = threading.Thread(target=self._worker, daemon=True,
                                  name=f"realfork-pool{len(self._workers)}")
            self._workers.append(th)
        th.start()

    def _worker(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cv:
                while not self._jobs:
                    if self._closing or self._idle >= self.POOL_MAX:
                        self._workers.remove(me)
                        return
                    self._idle += 1
                    self._cv.wait()
                t, fn, args = self._jobs.popleft()
            t.os_thread = me
            _thread_body(self.dom, t, fn, args)

    def close(self) -> None:
        """Let idle workers go and wait for them (busy ones end with their lwp)."""
        with self._cv:
            self._closing = True
            self._idle = 0
            self._cv.notify_all()
            workers = list(self._workers)
        for th in workers:
            if th is not threading.current_thread():
                th.join(5.0)
