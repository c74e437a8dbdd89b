"""lockstat probes, after DTrace's lockstat provider.

Off by default.  The switch lives in the segment (any process may flip it)
and is mirrored in this module's ``ON`` so the lock fast paths test a Python
global, not shared memory; a host process calls ``refresh`` at system-call
entry to pick up a change made elsewhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .domain import Substrate

ON = False

ADAPTIVE_ACQUIRE = "lockstat:::adaptive-acquire"  # (lock, class)
ADAPTIVE_BLOCK = "lockstat:::adaptive-block"  # (lock, class, wait ns)
ADAPTIVE_RELEASE = "lockstat:::adaptive-release"  # (lock, class, hold ns)
RW_ACQUIRE = "lockstat:::rw-acquire"  # (lock, class, writer?)
RW_BLOCK = "lockstat:::rw-block"  # (lock, class, wait ns, writer?)
RW_RELEASE = "lockstat:::rw-release"  # (lock, class, hold ns, writer?)
PROBES = (ADAPTIVE_ACQUIRE, ADAPTIVE_BLOCK, ADAPTIVE_RELEASE, RW_ACQUIRE, RW_BLOCK,
          RW_RELEASE)


def enable(dom: Substrate, on: bool = True) -> None:
    global ON
    dom.g.lockstat = int(on)
    ON = on


def refresh(dom: Substrate) -> None:
    global ON
    ON = bool(dom.g.lockstat)
