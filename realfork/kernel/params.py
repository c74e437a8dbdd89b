"""Boot parameters of a kernel, checked once with clear errors.

``LIMITS`` is the one table of the numeric parameters' bounds: ``make_params``
checks against it, and the command line builds its option types from it, so a
value the command line accepts is one ``realfork.boot`` accepts too.  A value
outside its bounds is bad input (exit status 2), whatever its size; only a
value within them that the machine cannot hold (memory, /dev/shm) is a
``ResourceError``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import BadInput
from ..probes.ring import MAX_CAPACITY as PROBE_CAPACITY_MAX
from ..sync.noise import make_config as make_noise_config
from .bugnames import NAMES as BUG_NAMES

RESERVED_PROCS = 5  # illumos reserved_procs: slots only root may use

# The largest maxlwps whose segment can be laid out.  The segment header has
# room for 64 regions (realfork.shm.segment.MAX_REGIONS); the kernel's lwp
# directory takes two (a table and its header) per size class 2, 6, 14, ...,
# 2**k * 4 - 2, up to the first class of at least maxlwps + 2 entries, and with
# the processes backend's host table the eleven classes up to 4,094 fill the
# header exactly.  tests/test_hardening_cli.py lays the segment out at this
# bound with both backends, so a new region fails a test rather than a boot.
MAXLWPS_MAX = 4092

WORD_MIN, WORD_MAX = -(1 << 63), (1 << 63) - 1  # seeds are recorded as signed 64-bit

# Noise delays are bounded so that a run cannot outlast its --timeout by more
# than a little: every lock operation may be a noise point, and a run's end
# takes a few hundred of them per thread.  With every point delayed
# (probability 1), a 3 s stress campaign of every stressor took 5.0 s with
# 10 ms delays, 7.9 s with 100 ms, and 40 s for a 5 s one with 1 s.
NOISE_SLEEP_US_MAX = 10_000

# name -> (lowest, highest), both included.  Durations are in seconds.
LIMITS: dict[str, tuple[int | float, int | float]] = {
    "nproc": (RESERVED_PROCS + 4, 999_999),  # at most maxpid
    "maxlwps": (8, MAXLWPS_MAX),
    "maxpid": (RESERVED_PROCS + 4, 999_999),  # illumos MAXPID; at least nproc
    "maxup": (1, 999_999),
    "ncpus": (1, 4096),
    "seed": (WORD_MIN, WORD_MAX),
    "probe_capacity": (16, PROBE_CAPACITY_MAX),
    "deadlock_timeout": (0.001, 86400.0),
    "noise_prob": (0.0, 1.0),
    "noise_sleep_us": (0, NOISE_SLEEP_US_MAX),
    "noise_seed": (0, WORD_MAX),
    "noise_depth": (0, 1000),  # pct change points + 1, drawn at boot
    "noise_steps": (0, WORD_MAX),
}


def check_whole(name: str, v: Any, bounds: tuple[int | float, int | float] | None = None) -> int:
    """``v`` if it is a whole number within ``bounds`` (default ``LIMITS[name]``)."""
    low, high = LIMITS[name] if bounds is None else bounds
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadInput(f"{name} must be a whole number, not {_shown(v)}")
    if not low <= v <= high:
        raise BadInput(f"{name} must be between {low:,} and {high:,}, not {_shown(v)}")
    return v


def check_number(name: str, v: Any, bounds: tuple[int | float, int | float] | None = None) -> float:
    """``v`` if it is a finite number within ``bounds`` (default ``LIMITS[name]``)."""
    low, high = LIMITS[name] if bounds is None else bounds
    if isinstance(v, bool) or not isinstance(v, (int, float)) \
            or (isinstance(v, float) and not math.isfinite(v)):
        raise BadInput(f"{name} must be a finite number, not {_shown(v)}")
    if not low <= v <= high:
        raise BadInput(f"{name} must be between {low:g} and {high:g}, not {_shown(v)}")
    return v


def _shown(v: Any) -> str:
    from ..safeio import shorten

    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 10 ** 30:
        return f"an integer of {len(str(abs(v))):,} digits"
    return shorten(repr(v))


def check_noise(noise: dict[str, Any]) -> None:
    """The bounds the command line gives noise settings (after noise's own checks)."""
    check_number("noise_prob", noise["prob"])
    check_whole("noise_sleep_us", noise["sleep_us"])
    check_whole("noise_seed", noise["seed"])
    check_whole("noise_depth", noise["depth"])
    check_whole("noise_steps", noise["steps"])

# Kernel bugs that can be switched on (each a small change to the real code path):
# the catalogue in realfork.verify.bugs, the names in realfork.kernel.bugnames.
KNOWN_BUGS = BUG_NAMES


@dataclass
class KernelParams:
    backend: str = "threads"
    nproc: int = 128  # v.v_proc: size of the process table (p0 included)
    maxlwps: int = 512  # kernel threads, all processes together
    maxpid: int = 30000
    maxup: int | None = None  # v.v_maxup; default nproc - RESERVED_PROCS
    ncpus: int = 2
    deadlock_timeout: float = 10.0
    seed: int = 0
    faults: dict[str, Any] = field(default_factory=dict)
    probe_capacity: int = 1 << 16
    bugs: list[str] = field(default_factory=list)
    lockdep: str = "warn"  # the lock-order validator: off, warn or panic
    # schedule noise (realfork.sync.noise.NoiseConfig fields), e.g. {"mode": "contest"}
    noise: dict[str, Any] = field(default_factory=dict)

    @property
    def v_maxupttl(self) -> int:
        return self.nproc - RESERVED_PROCS

    @property
    def v_maxup(self) -> int:
        return self.v_maxupttl if self.maxup is None else min(self.maxup, self.v_maxupttl)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_params(**kw: Any) -> KernelParams:
    """Build and check boot parameters; BadInput names the bad one."""
    known = set(KernelParams.__dataclass_fields__)
    for k in kw:
        if k not in known:
            raise BadInput(f"unknown boot parameter {k!r} (known: {', '.join(sorted(known))})")
    p = KernelParams(**kw)
    if not isinstance(p.backend, str) or p.backend not in ("threads", "processes"):
        raise BadInput(f"backend must be 'threads' or 'processes', not {_shown(p.backend)}")
    for name in ("nproc", "maxlwps", "maxpid", "ncpus", "seed", "probe_capacity"):
        check_whole(name, getattr(p, name))
    if p.maxpid < p.nproc:
        raise BadInput(f"maxpid ({p.maxpid}) must be at least nproc ({p.nproc})")
    if p.maxup is not None:
        check_whole("maxup", p.maxup)
    check_number("deadlock_timeout", p.deadlock_timeout)
    if not isinstance(p.faults, dict):
        raise BadInput("faults must be a dict of site -> settings")
    if not isinstance(p.lockdep, str) or p.lockdep not in ("off", "warn", "panic"):
        raise BadInput(f"lockdep must be 'off', 'warn' or 'panic', not {_shown(p.lockdep)}")
    if not isinstance(p.noise, dict):
        raise BadInput("noise must be a dict of settings, e.g. {'mode': 'contest'}")
    p.noise = make_noise_config(p.noise).to_dict()
    check_noise(p.noise)
    if not isinstance(p.bugs, (list, tuple)):
        raise BadInput("bugs must be a list of bug names")
    for b in p.bugs:
        if not isinstance(b, str) or b not in KNOWN_BUGS:
            raise BadInput(f"unknown bug {_shown(b)} (known: {', '.join(KNOWN_BUGS)})")
    return p
