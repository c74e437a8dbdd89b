"""Boot parameters of a kernel, checked once with clear errors."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import BadInput, ResourceError
from ..sync.noise import make_config as make_noise_config
from .bugs import NAMES as BUG_NAMES

RESERVED_PROCS = 5  # illumos reserved_procs: slots only root may use

# Kernel bugs that can be switched on (each a small change to the real code path):
# the catalogue in realfork.kernel.bugs.
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


def _whole(name: str, v: Any, low: int, high: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadInput(f"{name} must be a whole number, not {v!r}")
    if v < low:
        raise BadInput(f"{name} must be at least {low}, not {v}")
    if v > high:
        raise ResourceError(f"{name}={v:,} is more than realfork can lay out (at most {high:,})")
    return v


def make_params(**kw: Any) -> KernelParams:
    """Build and check boot parameters; BadInput names the bad one."""
    known = set(KernelParams.__dataclass_fields__)
    for k in kw:
        if k not in known:
            raise BadInput(f"unknown boot parameter {k!r} (known: {', '.join(sorted(known))})")
    p = KernelParams(**kw)
    if p.backend not in ("threads", "processes"):
        raise BadInput(f"backend must be 'threads' or 'processes', not {p.backend!r}")
    _whole("nproc", p.nproc, RESERVED_PROCS + 4, 1 << 20)
    _whole("maxlwps", p.maxlwps, 8, 1 << 20)
    _whole("maxpid", p.maxpid, 2, 999_999)
    if p.maxpid < p.nproc:
        raise BadInput(f"maxpid ({p.maxpid}) must be at least nproc ({p.nproc})")
    if p.maxup is not None:
        _whole("maxup", p.maxup, 1, 1 << 20)
    _whole("ncpus", p.ncpus, 1, 4096)
    _whole("seed", p.seed, -(1 << 63), (1 << 63) - 1)
    _whole("probe_capacity", p.probe_capacity, 16, 1 << 24)
    dt = p.deadlock_timeout
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not 0 < dt <= 86400:
        raise BadInput(f"deadlock_timeout must be a number of seconds in (0, 86400], not {dt!r}")
    if not isinstance(p.faults, dict):
        raise BadInput("faults must be a dict of site -> settings")
    if p.lockdep not in ("off", "warn", "panic"):
        raise BadInput(f"lockdep must be 'off', 'warn' or 'panic', not {p.lockdep!r}")
    if not isinstance(p.noise, dict):
        raise BadInput("noise must be a dict of settings, e.g. {'mode': 'contest'}")
    p.noise = make_noise_config(p.noise).to_dict()
    if not isinstance(p.bugs, (list, tuple)):
        raise BadInput("bugs must be a list of bug names")
    for b in p.bugs:
        if b not in KNOWN_BUGS:
            raise BadInput(f"unknown bug {b!r} (known: {', '.join(KNOWN_BUGS)})")
    return p
