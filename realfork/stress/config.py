"""The settings of a stress campaign: stressors, budget, boot parameters, noise.

A ``StressConfig`` is what a finding saves and a replay re-runs, so it is
plain data (``to_dict``/``from_dict``).  ``from_args`` builds one from the
command line; a job file holds the same options, one per line (``#`` starts a
comment), for repeatable campaigns:

    # two minutes of vfork against /proc, with noise
    vfork 4
    proc 1
    timeout 120
    noise contest
    seed 7
"""

from __future__ import annotations

import math
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import BadInput
from ..kernel.params import make_params
from ..safeio import read_bounded, shorten
from .stressors import ORDER, check_options

DEFAULT_STRESSORS = {"fork": 1, "forkall": 1, "vfork": 1, "exec": 1, "lwp": 1, "signal": 1,
                     "proc": 1, "usdt": 1, "bomb": 1, "mix": 1, "zone": 1}
DEFAULT_TIMEOUT = 30.0
MAX_INSTANCES = 64  # of one stressor
# Boot parameters a campaign's kernels take unless the settings say otherwise
# (realfork stress --help shows them).  The ring holds three to four seconds of a
# busy campaign's probes (lockstat on), so a supervisor that falls behind for a
# while loses none.
KERNEL_DEFAULTS: dict[str, Any] = {"deadlock_timeout": 5.0, "nproc": 256, "maxlwps": 1024,
                                   "probe_capacity": 1 << 18}
MAX_TIMEOUT = 7 * 86400.0  # seconds; also the longest check interval
MAX_OPS = 10 ** 9
MAX_JOB_BYTES = 1 << 20  # a job file is a few lines


@dataclass
class StressConfig:
    stressors: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_STRESSORS))
    options: dict[str, dict[str, int]] = field(default_factory=dict)  # per stressor
    timeout: float = DEFAULT_TIMEOUT  # seconds of stress
    ops: int = 0  # stop each stressor after this many bogo ops (0: no limit)
    seed: int = 0
    boot: dict[str, Any] = field(default_factory=dict)  # realfork.boot parameters
    check_interval: float = 5.0  # seconds between checks while running (0: only at the end)
    keep_going: bool = False  # record findings and restart instead of stopping
    swarm: float = 0.0  # seconds per swarm run (a random half of stressors and faults); 0 off

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.stressors, dict) or not isinstance(self.options, dict) \
                or not isinstance(self.boot, dict):
            raise BadInput("stressors, options and boot must be maps")
        if not self.stressors or not any(self.stressors.values()):
            raise BadInput("no stressor to run (give at least one instance)")
        for name, n in self.stressors.items():
            if name not in ORDER:
                raise BadInput(f"unknown stressor {shorten(repr(name))} "
                               f"(known: {', '.join(ORDER)})")
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_INSTANCES:
                raise BadInput(f"{name} instances must be a whole number in "
                               f"0..{MAX_INSTANCES}, not {shorten(repr(n))}")
        for name, opts in self.options.items():
            check_options(name, opts)
        if not _finite(self.timeout) or not 0 < self.timeout <= MAX_TIMEOUT:
            raise BadInput(f"timeout must be a number of seconds in (0, {MAX_TIMEOUT:g}], "
                           f"not {shorten(repr(self.timeout))}")
        if isinstance(self.ops, bool) or not isinstance(self.ops, int) \
                or not 0 <= self.ops <= MAX_OPS:
            raise BadInput(f"ops must be a whole number in 0..{MAX_OPS:,}, "
                           f"not {shorten(repr(self.ops))}")
        if not _finite(self.check_interval) or not 0 <= self.check_interval <= MAX_TIMEOUT:
            raise BadInput(f"check interval must be a number of seconds in 0..{MAX_TIMEOUT:g}, "
                           f"not {shorten(repr(self.check_interval))}")
        if not _finite(self.swarm) or not 0 <= self.swarm <= MAX_TIMEOUT:
            raise BadInput(f"swarm must be a number of seconds in 0..{MAX_TIMEOUT:g}, "
                           f"not {shorten(repr(self.swarm))}")
        if not isinstance(self.keep_going, bool):
            raise BadInput("keep_going must be true or false, "
                           f"not {shorten(repr(self.keep_going))}")
        params = make_params(**self.kernel_params())
        hold = self.options.get("proc", {}).get("hold_ms", 0)
        if self.stressors.get("proc") and hold * 4 > params.deadlock_timeout * 1000:
            raise BadInput(f"--proc-hold-ms {hold} is more than a quarter of the deadlock "
                           f"timeout ({params.deadlock_timeout:g} s): its waiters would be "
                           "reported as hung")
        self._check_program()

    def _check_program(self) -> None:
        """Refuse, before any kernel boots, an init program too large to run."""
        from ..kernel.structs import PROGRAM_BYTES
        from ..user.codec import to_msgpack
        from ..user.parser import parse
        from ..user.program import ProgramError
        from .stressors import compose

        too_big = ("the stressors' init program is too large for the kernel ({}); "
                   "give fewer instances or smaller options")
        try:
            program = parse(compose(self.instances(), self.seed))
        except ProgramError as e:
            raise BadInput(too_big.format(e.message)) from None
        size = len(to_msgpack(program))
        if size > PROGRAM_BYTES:
            raise BadInput(too_big.format(f"{size:,} bytes, at most {PROGRAM_BYTES:,}"))

    def instances(self) -> list[tuple[str, dict[str, int]]]:
        """Every instance, in stressor order."""
        out = []
        for name in ORDER:
            opts = check_options(name, self.options.get(name, {}))
            out += [(name, opts)] * self.stressors.get(name, 0)
        return out

    def kernel_params(self) -> dict[str, Any]:
        p = dict(KERNEL_DEFAULTS)
        p.update(self.boot)
        p.setdefault("seed", self.seed)
        # The zone stressor's zone_create fails at times: it arms newproc's
        # lwp_create fault site, unless the boot faults configure that site.
        if self.stressors.get("zone"):
            pct = check_options("zone", self.options.get("zone", {}))["fail_percent"]
            faults = dict(p.get("faults") or {})
            if pct and "newproc.lwp_create" not in faults:
                faults["newproc.lwp_create"] = {"probability": pct}
                p["faults"] = faults
        if p.get("noise") and p["noise"].get("mode", "off") != "off":
            p["noise"] = dict(p["noise"])
            p["noise"].setdefault("seed", self.seed & 0x7FFFFFFF)
        return p

    def describe(self) -> str:
        inst = ", ".join(f"{n} x{k}" for n, k in self.stressors.items() if k)
        kp = self.kernel_params()
        noise = kp.get("noise") or {}
        extra = [f"backend {kp.get('backend', 'threads')}", f"seed {self.seed}",
                 f"noise {noise.get('mode', 'off')}"]
        if kp.get("kernel", "fixed") != "fixed":
            extra.append(f"kernel {kp['kernel']}")
        if kp.get("bugs"):
            extra.append("bugs " + ",".join(kp["bugs"]))
        if kp.get("faults"):
            extra.append("faults " + ",".join(kp["faults"]))
        if self.swarm:
            extra.append(f"swarm {self.swarm:g} s")
        budget = f"{self.timeout:g} s" + (f" or {self.ops} ops" if self.ops else "")
        return f"{inst}; {budget}; " + ", ".join(extra)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StressConfig:
        known = cls.__dataclass_fields__
        bad = [k for k in d if k not in known]
        if bad:
            raise BadInput(f"unknown stress settings: {', '.join(bad)}")
        return cls(**d)


def _finite(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def read_job_file(path: str) -> list[tuple[int, list[str]]]:
    """The options of a job file, line by line: (line number, ``--name value...``)."""
    shown = shorten(path)
    try:
        data = read_bounded(path, MAX_JOB_BYTES, "")
    except BadInput as e:
        raise BadInput(f"cannot read job file:{e}") from None
    try:
        lines = data.decode().splitlines()
    except UnicodeDecodeError:
        raise BadInput(f"job file {shown} is not text") from None
    out: list[tuple[int, list[str]]] = []
    for n, line in enumerate(lines, 1):
        try:
            parts = shlex.split(line, comments=True)
        except ValueError as e:
            raise BadInput(f"job file {shown}, line {n}: {e}") from None
        if not parts:
            continue
        name = parts[0]
        out.append((n, [name if name.startswith("-") else "--" + name, *parts[1:]]))
    return out
