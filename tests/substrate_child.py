"""A separate OS process that attaches to a kernel by name (for cross-process tests).

Usage: python substrate_child.py NAME ROLE [ARGS...]
The test word region "test_words" (c_int64 * 64) carries results back.
"""

from __future__ import annotations

import ctypes
import sys
import time

from realfork.errors import KernelPanic
from realfork.machine.threads import ThreadFactory
from realfork.sync.condvar import cv_wait
from realfork.sync.domain import Substrate
from realfork.sync.mutex import mutex_enter, mutex_exit
from realfork.sync.sema import sema_p, sema_v


def main() -> int:
    name, role, *args = sys.argv[1:]
    dom = Substrate.attach(name)
    words = dom.seg.region("test_words", ctypes.c_int64)
    try:
        with ThreadFactory.adopt(dom, f"child-{role}"):
            if role == "count":
                m = dom.handle(int(args[0]))
                n = int(args[1])
                for _ in range(n):
                    mutex_enter(m)
                    words[0] += 1
                    mutex_exit(m)
                return 0
            if role == "abba":
                first, second = dom.handle(int(args[0])), dom.handle(int(args[1]))
                mine, theirs = dom.handle(int(args[2])), dom.handle(int(args[3]))
                slot = int(args[4])
                mutex_enter(first)
                sema_v(mine)  # I hold my first lock
                sema_p(theirs)  # so does the other process
                words[slot] = time.monotonic_ns()
                mutex_enter(second)  # ABBA: never returns
                return 3
            if role == "cvwait":
                m, cv = dom.handle(int(args[0])), dom.handle(int(args[1]))
                mutex_enter(m)
                while words[1] == 0:
                    cv_wait(cv, m)
                words[2] += 1
                mutex_exit(m)
                return 0
            raise SystemExit(f"unknown role {role}")
    except KernelPanic:
        return 7
    finally:
        dom.shutdown()


if __name__ == "__main__":
    sys.exit(main())
