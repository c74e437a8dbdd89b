"""Schedule noise: make rare interleavings common.

Real concurrency explores interleavings by chance; noise pushes the chance
up.  At every noise point (before ``mutex_enter`` and ``rw_enter``, and after
``mutex_exit``; every hold point of the kernel takes ``p_lock``, so it is one
too) a thread may be delayed.
Two modes, both seeded per kernel thread so the settings of a run can be
repeated (the interleaving itself is up to the OS scheduler):

``contest`` (after IBM's ConTest)
    With probability ``prob`` the thread yields the processor, sleeps up to
    ``sleep_us`` microseconds, or spins for about as long.
``pct`` (after PCT, probabilistic concurrency testing)
    Each thread draws a priority.  With probability ``prob`` a thread is
    delayed in proportion to its priority rank (the highest-priority thread
    is not delayed at all, the lowest by ``sleep_us``), so one thread tends
    to run ahead of the others.  ``depth - 1`` change points are drawn
    among the first ``steps`` noise points of the kernel: the thread that
    reaches one drops to the lowest priority.

The configuration lives in the kernel's parameters (every attached process
sees the same); this module's ``ON`` mirrors "some kernel of this process has
noise", so the lock fast paths test a Python global only.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..bounds import check_number, check_whole
from ..errors import BadInput

if TYPE_CHECKING:
    from .domain import Substrate
    from .kthread import KThread

MODES = ("off", "contest", "pct")
ON = False

_WORD_MAX = (1 << 63) - 1
# Noise delays are bounded so that a run cannot outlast its --timeout by more
# than a little: every lock operation may be a noise point, and a run's end
# takes a few hundred of them per thread.  With every point delayed
# (probability 1), a 3 s stress campaign of every stressor took 5.0 s with
# 10 ms delays, 7.9 s with 100 ms, and 40 s for a 5 s one with 1 s.
NOISE_SLEEP_US_MAX = 10_000

# The bounds of the noise settings, by the names the boot parameters give them
# (part of realfork.kernel.params.LIMITS, which the command line builds its
# option types from).
NOISE_LIMITS: dict[str, tuple[int | float, int | float]] = {
    "noise_prob": (0.0, 1.0),
    "noise_sleep_us": (0, NOISE_SLEEP_US_MAX),
    "noise_seed": (0, _WORD_MAX),
    "noise_depth": (0, 1000),  # pct change points + 1, drawn at boot
    "noise_steps": (0, _WORD_MAX),
}


def check_noise(noise: dict[str, Any]) -> None:
    """Noise settings (a ``NoiseConfig.to_dict()``) within ``NOISE_LIMITS``."""
    check_number("noise_prob", noise["prob"], NOISE_LIMITS["noise_prob"])
    for field_, name in (("sleep_us", "noise_sleep_us"), ("seed", "noise_seed"),
                         ("depth", "noise_depth"), ("steps", "noise_steps")):
        check_whole(name, noise[field_], NOISE_LIMITS[name])


@dataclass(frozen=True)
class NoiseConfig:
    mode: str = "off"
    prob: float = 0.05  # chance that a noise point acts
    sleep_us: int = 200  # longest delay
    seed: int = 0
    depth: int = 3  # pct: priority change points + 1
    steps: int = 20000  # pct: change points fall among this many first points

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.mode == "off":
            return "off"
        extra = f", depth {self.depth}" if self.mode == "pct" else ""
        return f"{self.mode} (p={self.prob:g}, up to {self.sleep_us} us{extra}, seed {self.seed})"


def make_config(spec: dict[str, Any] | NoiseConfig | None) -> NoiseConfig:
    """A validated configuration; BadInput names the bad field."""
    if isinstance(spec, NoiseConfig):
        spec = spec.to_dict()
    spec = dict(spec or {})
    known = NoiseConfig.__dataclass_fields__
    for k in spec:
        if k not in known:
            raise BadInput(f"unknown noise setting {k!r} (known: {', '.join(known)})")
    cfg = NoiseConfig(**spec)
    if cfg.mode not in MODES:
        raise BadInput(f"noise mode must be one of {', '.join(MODES)}, not {cfg.mode!r}")
    if isinstance(cfg.prob, bool) or not isinstance(cfg.prob, (int, float)) \
            or not 0 <= cfg.prob <= 1:
        raise BadInput(f"noise probability must be between 0 and 1, not {cfg.prob!r}")
    for k in ("sleep_us", "seed", "depth", "steps"):
        v = getattr(cfg, k)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise BadInput(f"noise {k} must be a whole number >= 0, not {v!r}")
    if cfg.sleep_us > 1_000_000:
        raise BadInput(f"noise sleep_us of {cfg.sleep_us} is more than a second")
    return cfg


class Noise:
    """The noise source of one kernel, in one OS process."""

    def __init__(self, dom: Substrate, cfg: NoiseConfig) -> None:
        self.dom = dom
        self.cfg = cfg
        self.pct = cfg.mode == "pct"
        rng = random.Random(cfg.seed ^ 0x5EED)
        n = max(cfg.depth - 1, 0)
        self.change_points = frozenset(rng.randrange(max(cfg.steps, 1)) for _ in range(n))

    def _state(self, t: KThread) -> list[Any]:
        # [rng, priority in [0, 1): 0 runs ahead]; reset when the slot is reused
        st = t.noise
        if st is None:
            rng = random.Random((self.cfg.seed << 32) ^ (t.id << 8) ^ t.s.slot_gen)
            st = t.noise = [rng, rng.random()]
        return st

    def point(self, t: KThread) -> None:
        cfg = self.cfg
        st = self._state(t)
        rng: random.Random = st[0]
        if self.pct:
            g = self.dom.g
            step = g.noise_steps
            g.noise_steps = step + 1  # racy on purpose: an approximate clock is enough
            if step in self.change_points:
                st[1] = 1.0  # this thread drops to the lowest priority
        if rng.random() >= cfg.prob:
            return
        self.dom.g.noise_delays += 1
        if self.pct:
            time.sleep(st[1] * cfg.sleep_us / 1e6)
            return
        what = rng.random()
        if what < 0.4:
            os.sched_yield()
        elif what < 0.8:
            time.sleep(rng.random() * cfg.sleep_us / 1e6)
        else:
            until = time.monotonic_ns() + int(rng.random() * cfg.sleep_us * 1000)
            while time.monotonic_ns() < until:
                pass


def attach(dom: Substrate, spec: dict[str, Any] | None) -> Noise | None:
    """Set up the noise of ``dom`` in this process; None when it is off."""
    global ON
    cfg = make_config(spec)
    if cfg.mode == "off":
        return None
    ON = True
    return Noise(dom, cfg)


def point(dom: Substrate, t: KThread) -> None:
    """A noise point of thread ``t`` (callers test ``ON`` first)."""
    n = dom.noise
    if n is not None:
        n.point(t)
