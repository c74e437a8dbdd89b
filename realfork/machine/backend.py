"""Where lwps run.  The ``threads`` backend starts every lwp on a new OS
thread of this process; the kernel asks for that through ``start_lwp``.

The body an lwp runs is given by the layer that boots the kernel (the user
layer's interpreter), so this layer never imports the layers above it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import StaleReference
from ..sync.kthread import KThread
from .threads import ThreadFactory

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel

LwpBody = Callable[["Kernel", KThread], None]


def _run_lwp(body: LwpBody, K: Kernel, t: KThread) -> None:
    from ..kernel.lwp import LwpExit

    try:
        body(K, t)
    except LwpExit:
        pass  # the lwp has ended; its slot is freed on the way out
    except StaleReference as e:  # a freed or reused slot followed: a panic that says so
        from ..kernel.detect import stale_reference

        stale_reference(K, e)


class ThreadsMachine:
    """Every lwp a thread of this OS process."""

    name = "threads"

    def __init__(self, K: Kernel, user_body: LwpBody, system_body: LwpBody) -> None:
        self.K = K
        self.factory = ThreadFactory(K.dom, pooled=True)
        self.user_body = user_body
        self.system_body = system_body

    def start_lwp(self, t: KThread) -> None:
        K = self.K
        body = self.system_body if K.lwps[t.slot].pc == -2 else self.user_body
        self.factory.start(t, _run_lwp, body, K, t)
