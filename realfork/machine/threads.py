"""The ``threads`` backend's thread factory: every kernel thread is a real OS
thread of this process, bound to its kthread slot for its whole life."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import KernelPanic
from ..sync.domain import Substrate
from ..sync.kthread import KThread, set_curthread
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


class ThreadFactory:
    """Creates kernel threads as OS threads of the calling process."""

    def __init__(self, dom: Substrate) -> None:
        self.dom = dom

    def spawn(self, fn: Callable[..., Any], *args: Any, name: str = "", pid: int = 0,
              lwpid: int = 0) -> KThread:
        t = self.dom.kthread_create(name, pid, lwpid)
        self.start(t, fn, *args)
        return t

    def start(self, t: KThread, fn: Callable[..., Any], *args: Any) -> None:
        """Bind an allocated kthread to a new OS thread running ``fn(*args)``."""
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
            set_curthread(None)
            dom.local_threads.discard(t)
            dom.kthread_free(t)
