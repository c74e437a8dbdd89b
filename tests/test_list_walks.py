"""A circular kernel list that does not come back to its head is a panic
naming the walker, never a walk that never ends (it would fill memory: a
walker of a torn p_tlist once grew a list by millions of entries a second)."""

from __future__ import annotations

import pytest
from helpers import boot_checked

from realfork.errors import KernelPanic

pytestmark = pytest.mark.timeout(60)


def test_a_p_tlist_that_does_not_come_back_is_a_panic() -> None:
    with boot_checked() as system:
        K = system.K
        # pageout (pid 2), a kernel process with one lwp, idle from the end of boot
        init = next(K.proc(i + 1) for i in K.procs.used() if K.procs.slots[i].p_pid == 2)
        lwps = init.threads()
        assert len(lwps) == 1
        # a second lwp that points at itself: the list never returns to the head
        spare = next(i for i in range(len(K.lwps)) if i not in set(K.dom.kthreads.used()))
        first = init.s.p_tlist
        saved = K.lwps[first - 1].t_forw
        K.lwps[first - 1].t_forw = spare + 1
        K.lwps[spare].t_forw = spare + 1
        try:
            with pytest.raises(KernelPanic):
                init.threads()
            assert system.panicked
            rep = system.panic_report()
            assert rep is not None and "p_tlist of pid 2 does not come back" in rep.message
        finally:
            K.lwps[first - 1].t_forw = saved
            K.lwps[spare].t_forw = 0
