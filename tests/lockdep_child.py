"""Another OS process attached to a kernel, for the lock-order validator tests.

Usage: python lockdep_child.py NAME ROLE [ARGS...]
  take IDX...   take the locks with these ksync indexes in order, release them
  reports       write what it reads of the recorded reports into "test_words":
                [0] how many, [1] held class and [2] acquired class of the first,
                [3] os pid of the thread that attempted it
"""

from __future__ import annotations

import ctypes
import sys

from realfork.errors import KernelPanic
from realfork.machine.threads import ThreadFactory
from realfork.sync import lockdep
from realfork.sync.domain import Substrate
from realfork.sync.mutex import mutex_enter, mutex_exit


def child_takes_in_order(locks: list) -> None:
    for m in locks:
        mutex_enter(m)
    for m in reversed(locks):
        mutex_exit(m)


def main() -> int:
    name, role, *args = sys.argv[1:]
    dom = Substrate.attach(name)
    words = dom.seg.region("test_words", ctypes.c_int64)
    try:
        with ThreadFactory.adopt(dom, f"child-{role}"):
            if role == "take":
                child_takes_in_order([dom.handle(int(a)) for a in args])
                return 0
            if role == "reports":
                reps = lockdep.reports(dom)
                words[0] = len(reps)
                if reps:
                    words[1], words[2] = reps[0].classes
                    words[3] = reps[0].os_pid
                return 0
            raise SystemExit(f"unknown role {role}")
    except KernelPanic:
        return 7
    finally:
        dom.shutdown()


if __name__ == "__main__":
    sys.exit(main())
