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

import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import BadInput
from ..kernel.params import make_params
from .stressors import ORDER, check_options

DEFAULT_STRESSORS = {"fork": 1, "forkall": 1, "vfork": 1, "exec": 1, "lwp": 1, "signal": 1,
                     "proc": 1, "bomb": 1, "mix": 1}
DEFAULT_TIMEOUT = 30.0


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

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not self.stressors or not any(self.stressors.values()):
            raise BadInput("no stressor to run (give at least one instance)")
        for name, n in self.stressors.items():
            if name not in ORDER:
                raise BadInput(f"unknown stressor {name!r} (known: {', '.join(ORDER)})")
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 64:
                raise BadInput(f"{name} instances must be a whole number in 0..64, not {n!r}")
        for name, opts in self.options.items():
            check_options(name, opts)
        if not 0 < self.timeout <= 7 * 86400:
            raise BadInput(f"timeout must be a positive number of seconds, not {self.timeout!r}")
        if self.ops < 0:
            raise BadInput(f"ops must be >= 0, not {self.ops}")
        if self.check_interval < 0:
            raise BadInput("check interval must be >= 0")
        make_params(**self.kernel_params())

    def instances(self) -> list[tuple[str, dict[str, int]]]:
        """Every instance, in stressor order."""
        out = []
        for name in ORDER:
            opts = check_options(name, self.options.get(name, {}))
            out += [(name, opts)] * self.stressors.get(name, 0)
        return out

    def kernel_params(self) -> dict[str, Any]:
        # the ring holds three to four seconds of a busy campaign's probes (lockstat on),
        # so a supervisor that falls behind for a while loses none
        p = {"deadlock_timeout": 5.0, "nproc": 256, "maxlwps": 1024, "probe_capacity": 1 << 18}
        p.update(self.boot)
        p.setdefault("seed", self.seed)
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
        if kp.get("bugs"):
            extra.append("bugs " + ",".join(kp["bugs"]))
        if kp.get("faults"):
            extra.append("faults " + ",".join(kp["faults"]))
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


def read_job_file(path: str) -> list[str]:
    """The options of a job file as command-line words (``--name value``)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise BadInput(f"cannot read job file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise BadInput(f"job file {path} is not text") from None
    words: list[str] = []
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            parts = shlex.split(line)
        except ValueError as e:
            raise BadInput(f"{path}:{n}: {e}") from None
        name = parts[0]
        words.append(name if name.startswith("-") else "--" + name)
        words += parts[1:]
    return words
