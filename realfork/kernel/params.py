"""Boot parameters of a kernel, checked once with clear errors.

``LIMITS`` is the one table of the numeric parameters' bounds: ``make_params``
checks against it, and the command line builds its option types from it, so a
value the command line accepts is one ``realfork.boot`` accepts too.  A value
outside its bounds is bad input (exit status 2), whatever its size; only a
value within them that the machine cannot hold (memory, /dev/shm) is a
``ResourceError``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..bounds import check_number as _check_number
from ..bounds import check_whole as _check_whole
from ..bounds import shown as _shown
from ..errors import BadInput
from ..probes.ring import MAX_CAPACITY as PROBE_CAPACITY_MAX
from ..sync import noise as _noise
from ..sync.noise import make_config as make_noise_config
from .bugnames import NAMES as BUG_NAMES
from .profiles import DEFAULT_KERNEL, PROFILES, RETIRED_BUGS

RESERVED_PROCS = 5  # illumos reserved_procs: slots only root may use

# The largest maxlwps whose segment can be laid out.  The segment header has
# room for 64 regions (realfork.shm.segment.MAX_REGIONS, fixed: the header's
# layout is what other realfork versions read); the kernel's lwp directory
# takes two (a table and its header) per size class 2, 6, 14, ..., 2**k * 4 - 2,
# up to the first class of at least maxlwps + 2 entries.  With the processes
# backend's host table, the per-lwp thread_lock and the corectl and DTrace
# tables, the ten classes up to 2,046 fill the header (eleven, up to 4,094, no
# longer fit).  tests/test_hardening_cli.py lays the segment out at this bound
# with both backends, so a new region fails a test rather than a boot.
MAXLWPS_MAX = 2044

WORD_MIN, WORD_MAX = -(1 << 63), (1 << 63) - 1  # seeds are recorded as signed 64-bit

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
    **_noise.NOISE_LIMITS,
}



def check_whole(name: str, v: Any) -> int:
    """``v`` if it is a whole number within ``LIMITS[name]``."""
    return _check_whole(name, v, LIMITS[name])


def check_number(name: str, v: Any) -> float:
    """``v`` if it is a finite number within ``LIMITS[name]``."""
    return _check_number(name, v, LIMITS[name])


check_noise = _noise.check_noise  # the noise bounds live with the noise (sync/noise.py)

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
    # the kernel profile (realfork.kernel.profiles): "fixed" or "2006"
    kernel: str = DEFAULT_KERNEL
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
    if not isinstance(p.kernel, str) or p.kernel not in PROFILES:
        raise BadInput(f"kernel must be {' or '.join(map(repr, PROFILES))}, not "
                       f"{_shown(p.kernel)}")
    if not isinstance(p.bugs, (list, tuple)):
        raise BadInput("bugs must be a list of bug names")
    for b in p.bugs:
        if isinstance(b, str) and b in RETIRED_BUGS:
            raise BadInput(f"bug {b!r} is the 2006 kernel's own code now (the absence of "
                           f"illumos fix {RETIRED_BUGS[b]}): boot with kernel '2006' "
                           f"(--kernel 2006) instead")
        if not isinstance(b, str) or b not in KNOWN_BUGS:
            raise BadInput(f"unknown bug {_shown(b)} (known: {', '.join(KNOWN_BUGS)})")
    return p
