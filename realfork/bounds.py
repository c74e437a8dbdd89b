"""Checks of a number against its bounds, with one clear line when it is out.

A leaf (it imports only ``errors`` and ``safeio``), so every layer checks its
own parameters the same way: the kernel's boot parameters (``kernel.params``,
whose ``LIMITS`` table the command line builds its option types from), the
schedule noise's (``sync.noise``).  An integer too long to print is described
by its length, not echoed.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import BadInput
from .safeio import shorten

Bounds = tuple[int | float, int | float]  # (lowest, highest), both included


def shown(v: Any) -> str:
    """``v`` as an error line may quote it: cut, and a huge integer by its length."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 10 ** 30:
        return f"an integer of {len(str(abs(v))):,} digits"
    return shorten(repr(v))


def check_whole(name: str, v: Any, bounds: Bounds) -> int:
    """``v`` if it is a whole number within ``bounds``; BadInput naming ``name`` if not."""
    low, high = bounds
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadInput(f"{name} must be a whole number, not {shown(v)}")
    if not low <= v <= high:
        raise BadInput(f"{name} must be between {low:,} and {high:,}, not {shown(v)}")
    return v


def check_number(name: str, v: Any, bounds: Bounds) -> float:
    """``v`` if it is a finite number within ``bounds``; BadInput naming ``name`` if not."""
    low, high = bounds
    if isinstance(v, bool) or not isinstance(v, (int, float)) \
            or (isinstance(v, float) and not math.isfinite(v)):
        raise BadInput(f"{name} must be a finite number, not {shown(v)}")
    if not low <= v <= high:
        raise BadInput(f"{name} must be between {low:g} and {high:g}, not {shown(v)}")
    return v
