"""Fault injection at the fork path's failure points, after Linux's
fault-injection framework (``Documentation/fault-injection``).

Every place where ``fork.c`` (or what it calls) can fail is a *site* named in
``SITES`` together with the errnos it may return.  A site is configured with
the Linux knobs:

* ``probability`` -- percent (0..100, fractions allowed; kept per million),
* ``interval``    -- only every Nth eligible call may fail (>= 1),
* ``times``       -- stop after this many failures (-1 or absent: unlimited),
* ``nth``         -- fail exactly the Nth call (1-based), once,
* ``errno``       -- name or number, one of those the site allows.

A call is counted; with ``nth`` set it fails iff the count equals ``nth``.
Otherwise it passes the interval gate (``count % interval == 0``), then
draws from the seeded PRNG against the probability, then spends one unit of
the ``times`` budget.  Counting starts when the site is (re)configured or
when the kernel is armed, whichever is later; before ``arm()`` (during boot)
nothing is counted and nothing fails.

All of this lives in one region (``"faults"``) of the kernel segment and is
changed only under chain lock ``FAULT_CHAIN``, so every attached OS process
shares the counters, the knobs and the PRNG, and a run is repeatable for a
given seed and call order.

Command-line form (repeatable): ``SITE[:KEY=VALUE]...``, e.g.
``as_dup:nth=1:errno=ENOMEM``, ``forklwp:probability=25:times=2``.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import BadInput
from ..shm.segment import Layout, Segment
from ..shm.turnstile import ChainLocks
from .errno_defs import (
    EAGAIN,
    EFAULT,
    EINTR,
    EINVAL,
    EIO,
    ENOMEM,
    ENXIO,
    ERRNO,
    ERRNO_NAMES,
)

AS_DUP_ERRNOS: tuple[int, ...] = (ENOMEM, EAGAIN, EFAULT, EINVAL, EIO, ENXIO)
"""What ``as_dup`` may fail with: ENOMEM first (the allocation failure, the
default), then errors a segment driver's dup routine can pass up (a bad
range or segment, an I/O error, a device mapping that cannot be copied).  cfork
keeps ENOMEM and maps every other one to EAGAIN (fork.c:266-270)."""

RCTL_DUP_MAX_RETRIES = 4
"""The most rounds the ``rctl_dup`` site can add to one duplication loop.

The site stands for the parent's rctl set growing between the count of what
a duplicate needs and the retaken ``rcs_lock``; cfork's loop then counts and
allocates again.  In illumos that loop cannot go round forever: each round
needs someone to add to the set meanwhile, and it only grows so far.  So a
site that keeps failing (``probability=100``) makes one fork's loop retry
this many times and then finds the set unchanged: the fork succeeds.  Calls
past the bound are not made, so not counted."""

SITES: dict[str, tuple[int, ...]] = {
    "getproc.memory": (EAGAIN,),
    "getproc.zone": (EAGAIN,),
    "pid_assign": (EAGAIN,),
    "getproc.maxup": (EAGAIN,),
    "as_dup": AS_DUP_ERRNOS,  # ENOMEM preserved, any other error gives EAGAIN
    "forklwp": (EAGAIN,),
    "contract_process_fork": (EAGAIN,),
    # no errno: the set grew meanwhile, the duplication loop goes round once
    # more, at most RCTL_DUP_MAX_RETRIES times per fork
    "rctl_dup": (),
    "holdlwps": (EINTR,),
    "newproc.lwp_create": (EAGAIN,),  # newproc's lwp 1 (zone_create's zsched)
}
"""Site name to the errnos it can return; the first is the default."""

SITE_NAMES: tuple[str, ...] = tuple(SITES)
"""The sites in index order (the index recorded by ``FAULT_PROBE``)."""

NSITES = len(SITE_NAMES)
SITE_INDEX: dict[str, int] = {name: i for i, name in enumerate(SITE_NAMES)}

FAIL_RETRY = -1
"""What ``should_fail`` returns for a failure at a site without an errno
(``rctl_dup``): truthy, and never a real errno."""

FAULT_PROBE = "fault:::inject"
"""Probe callers fire on an injected failure: args (site index, errno)."""

FAULT_CHAIN = 5  # chain lock serialising every change to the "faults" region
REGION = "faults"
KNOBS = ("probability", "interval", "times", "nth", "errno")
PPM = 1_000_000  # probability resolution: parts per million
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_I64 = (1 << 63) - 1


class fault_site_t(ctypes.Structure):
    _fields_ = [
        ("enabled", ctypes.c_uint32),
        ("errno", ctypes.c_int32),  # what a failure returns (FAIL_RETRY for rctl_dup)
        ("prob_ppm", ctypes.c_uint32),  # probability, per million
        ("interval", ctypes.c_uint32),
        ("times", ctypes.c_int64),  # budget as configured (-1 unlimited)
        ("times_left", ctypes.c_int64),  # budget remaining (-1 unlimited)
        ("nth", ctypes.c_uint64),  # 0: not set
        ("count", ctypes.c_uint64),  # calls since configured or armed (nth, interval)
        ("calls", ctypes.c_uint64),  # calls counted while armed, in all
        ("failures", ctypes.c_uint64),  # failures fired
    ]


class faults_t(ctypes.Structure):
    _fields_ = [
        ("armed", ctypes.c_uint32),
        ("nsites", ctypes.c_uint32),
        ("seed", ctypes.c_uint64),
        ("rng", ctypes.c_uint64),  # splitmix64 state
        ("sites", fault_site_t * NSITES),
    ]


def declare(layout: Layout) -> None:
    """Add the ``"faults"`` region to a kernel layout."""
    layout.add(REGION, faults_t)


# -- validation ---------------------------------------------------------------------


def _site_index(site: object) -> int:
    i = SITE_INDEX.get(site) if isinstance(site, str) else None
    if i is None:
        raise BadInput(f"unknown fault site {site!r}; valid sites: {', '.join(SITE_NAMES)}")
    return i


def _number(site: str, key: str, value: object, whole: bool) -> int | float:
    """``value`` (a number, or its text) as an int (``whole``) or a finite float."""
    what = "a whole number" if whole else "a number"
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text, 10) if whole else float(text)
        except ValueError:
            raise BadInput(f"fault {site}: bad number {key}={text!r}, expected {what}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInput(f"fault {site}: bad number {key}={value!r}, expected {what}")
    if whole:
        if isinstance(value, float):
            if not value.is_integer():
                raise BadInput(f"fault {site}: bad number {key}={value!r}, expected {what}")
            value = int(value)
        return value
    if not math.isfinite(value):
        raise BadInput(f"fault {site}: bad number {key}={value!r}, expected {what}")
    return value


def _errno(site: str, value: object) -> int:
    """The errno ``value`` (name or number) names, if ``site`` allows it."""
    allowed = SITES[site]
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        name = value.strip().upper()
        if name not in ERRNO:
            raise BadInput(f"fault {site}: unknown errno {value!r}")
        num = ERRNO[name]
    else:
        num = int(_number(site, "errno", value, whole=True))
    if num not in allowed:
        shown = ERRNO_NAMES.get(num, str(num))
        if not allowed:
            raise BadInput(f"fault {site}: errno {shown} not allowed, this site takes no errno")
        names = ", ".join(ERRNO_NAMES[e] for e in allowed)
        raise BadInput(f"fault {site}: errno {shown} not allowed here (allowed: {names})")
    return num


def normalize(site: str, knobs: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``knobs`` for ``site``; every knob filled in, numbers as numbers,
    ``errno`` as an int (``FAIL_RETRY`` for rctl_dup), ``nth`` 0 when unset."""
    _site_index(site)
    if not isinstance(knobs, Mapping):
        raise BadInput(f"fault {site}: knobs must be a mapping, not {knobs!r}")
    for k in knobs:
        if k not in KNOBS:
            raise BadInput(f"fault {site}: unknown key {k!r}; valid keys: {', '.join(KNOBS)}")
    out: dict[str, Any] = {"probability": 100.0, "interval": 1, "times": -1, "nth": 0,
                           "errno": SITES[site][0] if SITES[site] else FAIL_RETRY}
    p = knobs.get("probability")
    if p is not None:
        p = float(_number(site, "probability", p, whole=False))
        if not 0 <= p <= 100:
            raise BadInput(f"fault {site}: probability {p:g} out of range 0..100 (percent)")
        out["probability"] = p
    iv = knobs.get("interval")
    if iv is not None:
        iv = _number(site, "interval", iv, whole=True)
        if iv < 1:
            raise BadInput(f"fault {site}: interval must be at least 1, not {iv}")
        if iv > _U32:
            raise BadInput(f"fault {site}: interval {iv} is too large")
        out["interval"] = iv
    t = knobs.get("times")
    if t is not None:
        t = _number(site, "times", t, whole=True)
        if t < -1:
            raise BadInput(f"fault {site}: times must be -1 (unlimited) or at least 0, not {t}")
        if t > _I64:
            raise BadInput(f"fault {site}: times {t} is too large")
        out["times"] = t
    n = knobs.get("nth")
    if n is not None:
        n = _number(site, "nth", n, whole=True)
        if n < 1:
            raise BadInput(f"fault {site}: nth must be at least 1, not {n}")
        if n > _U64:
            raise BadInput(f"fault {site}: nth {n} is too large")
        out["nth"] = n
    e = knobs.get("errno")
    if e is not None:
        out["errno"] = _errno(site, e)
    return out


def validate_config(config: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Check a whole configuration ``{site: knobs}``; normalized copies."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise BadInput(f"fault configuration must be a mapping of site to knobs, not {config!r}")
    return {site: normalize(site, knobs) for site, knobs in config.items()}


# -- command-line specs -----------------------------------------------------------------


def parse_fault_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``"as_dup:nth=1:errno=ENOMEM"`` -> ``("as_dup", {"nth": 1, "errno": "ENOMEM"})``.

    Only the keys given are returned; numbers are ints (probability an int
    when whole, else a float) and errno is its upper-case name.
    """
    if not isinstance(text, str) or not text.strip():
        raise BadInput("empty fault spec; expected SITE[:KEY=VALUE]...")
    site, *parts = (p.strip() for p in text.strip().split(":"))
    if not site:
        raise BadInput(f"fault spec {text!r} names no site; valid sites: {', '.join(SITE_NAMES)}")
    _site_index(site)
    knobs: dict[str, Any] = {}
    for part in parts:
        key, eq, value = (s.strip() for s in part.partition("="))
        if not eq or not key or not value:
            raise BadInput(f"fault spec {text!r}: expected KEY=VALUE, not {part!r}")
        if key not in KNOBS:
            raise BadInput(f"fault {site}: unknown key {key!r}; valid keys: {', '.join(KNOBS)}")
        if key in knobs:
            raise BadInput(f"fault spec {text!r}: {key} given twice")
        if key == "errno":
            knobs[key] = ERRNO_NAMES[_errno(site, value)]
        elif key == "probability":
            p = float(_number(site, key, value, whole=False))
            knobs[key] = int(p) if p.is_integer() else p
        else:
            knobs[key] = _number(site, key, value, whole=True)
    normalize(site, knobs)  # range checks
    return site, knobs


def parse_fault_specs(texts: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Several specs (a repeatable option) as one configuration; a site twice
    is an error."""
    if isinstance(texts, str):
        texts = [texts]
    config: dict[str, dict[str, Any]] = {}
    for text in texts:
        site, knobs = parse_fault_spec(text)
        if site in config:
            raise BadInput(f"fault site {site} given twice")
        config[site] = knobs
    return config


def format_fault_spec(site: str, knobs: Mapping[str, Any]) -> str:
    """The spec string of ``(site, knobs)``: the inverse of ``parse_fault_spec``."""
    _site_index(site)
    parts = [site]
    for k, v in knobs.items():
        if k == "errno" and isinstance(v, int) and not isinstance(v, bool):
            v = ERRNO_NAMES.get(v, v)
        elif isinstance(v, float) and v.is_integer():
            v = int(v)
        parts.append(f"{k}={v}")
    return ":".join(parts)


# -- the shared state ----------------------------------------------------------------


def _splitmix64(state: int) -> tuple[int, int]:
    """One splitmix64 step: (new state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & _U64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
    return state, z ^ (z >> 31)


def _store(s: fault_site_t, k: Mapping[str, Any]) -> None:
    """Write normalized knobs into a site entry (chain lock held)."""
    s.prob_ppm = round(k["probability"] * PPM / 100)
    s.interval = k["interval"]
    s.times = k["times"]
    s.times_left = k["times"]
    s.nth = k["nth"]
    s.errno = k["errno"]
    s.count = 0
    s.enabled = 1


class FaultPoints:
    """One process's view of a kernel's fault-injection state."""

    def __init__(self, seg: Segment, chains: ChainLocks, seed: int = 0) -> None:
        self.f: faults_t = seg.region(REGION, faults_t)
        self.sites = self.f.sites
        self._lock = chains.chain(FAULT_CHAIN)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise BadInput(f"fault seed must be a whole number, not {seed!r}")
        self.seed = seed & _U64  # used by format(); attachers share the stored state

    def format(self, config: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Initialise the region (the creator, once): disarmed, seeded, configured."""
        norm = validate_config(config)
        with self._lock:
            ctypes.memset(ctypes.addressof(self.f), 0, ctypes.sizeof(faults_t))
            f = self.f
            f.nsites = NSITES
            f.seed = self.seed
            f.rng = self.seed
            for site, k in norm.items():
                _store(self.sites[SITE_INDEX[site]], k)

    # -- the hot path --------------------------------------------------------------

    def should_fail(self, site: str) -> int:
        """Count a call at ``site``: 0 to proceed, else what to fail with --
        the errno, or ``FAIL_RETRY`` (-1) at ``rctl_dup``, which has none.

        Fires no probe; a caller that fails may fire ``FAULT_PROBE`` with
        ``inject_probe_args(site)``.
        """
        i = SITE_INDEX.get(site)
        if i is None:
            _site_index(site)
        f = self.f
        if not f.armed:
            return 0
        with self._lock:
            if not f.armed:
                return 0
            s = f.sites[i]
            s.calls += 1
            if not s.enabled:
                return 0
            count = s.count + 1
            s.count = count
            nth = s.nth
            if nth:
                if count != nth:
                    return 0
            else:
                if count % s.interval:
                    return 0
                ppm = s.prob_ppm
                if ppm < PPM:
                    if ppm == 0:
                        return 0
                    f.rng, r = _splitmix64(f.rng)
                    if r % PPM >= ppm:
                        return 0
                left = s.times_left
                if left == 0:
                    return 0
                if left > 0:
                    s.times_left = left - 1
            s.failures += 1
            return s.errno

    def inject_probe_args(self, site: str) -> tuple[int, int]:
        """(site index, errno) for ``dom.fire(FAULT_PROBE, tid, pid, lwpid, *args)``."""
        i = _site_index(site)
        s = self.sites[i]
        if s.enabled:
            return i, s.errno
        allowed = SITES[site]
        return i, allowed[0] if allowed else FAIL_RETRY

    # -- arming ----------------------------------------------------------------------

    def arm(self) -> None:
        """Start counting (init begins the user's program); each site's count
        for ``nth`` and ``interval`` restarts.  Idempotent while armed."""
        with self._lock:
            f = self.f
            if f.armed:
                return
            for s in f.sites:
                s.count = 0
            f.armed = 1

    def disarm(self) -> None:
        """Stop counting and failing (knobs and totals are kept)."""
        with self._lock:
            self.f.armed = 0

    @property
    def armed(self) -> bool:
        return bool(self.f.armed)

    # -- run-time configuration -----------------------------------------------------

    def configure(self, site: str, **knobs: Any) -> None:
        """(Re)configure ``site``, replacing its knobs; its count restarts."""
        k = normalize(site, knobs)
        with self._lock:
            _store(self.sites[SITE_INDEX[site]], k)

    def clear(self, site: str) -> None:
        """Stop injecting at ``site`` (its totals are kept)."""
        i = _site_index(site)
        with self._lock:
            s = self.sites[i]
            s.enabled = 0
            s.count = 0

    def clear_all(self) -> None:
        """Stop injecting anywhere (totals are kept)."""
        with self._lock:
            for s in self.sites:
                s.enabled = 0
                s.count = 0

    # -- reading -------------------------------------------------------------------

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per site: ``calls``, ``failures``, ``times_left`` and ``config``
        (None when not injecting, else knobs ``configure`` accepts)."""
        with self._lock:
            raw = [(s.enabled, s.prob_ppm, s.interval, s.times, s.times_left, s.nth, s.errno,
                    s.calls, s.failures) for s in self.sites]
        out: dict[str, dict[str, Any]] = {}
        for site, (en, ppm, iv, times, left, nth, err, calls, fails) in zip(
                SITE_NAMES, raw, strict=True):
            config: dict[str, Any] | None = None
            if en:
                config = {"probability": ppm * 100 / PPM, "interval": iv, "times": times}
                if nth:
                    config["nth"] = nth
                if SITES[site]:
                    config["errno"] = ERRNO_NAMES.get(err, err)
            out[site] = {"calls": calls, "failures": fails,
                         "times_left": left if en else None, "config": config}
        return out


__all__ = [
    "AS_DUP_ERRNOS",
    "FAIL_RETRY",
    "FAULT_CHAIN",
    "FAULT_PROBE",
    "NSITES",
    "RCTL_DUP_MAX_RETRIES",
    "SITES",
    "SITE_INDEX",
    "SITE_NAMES",
    "FaultPoints",
    "declare",
    "format_fault_spec",
    "normalize",
    "parse_fault_spec",
    "parse_fault_specs",
    "validate_config",
]
