"""Stress metrics, built from the probe stream and the kernel's counters.

The runner calls ``event`` for every probe it drains (with the stressor the
firing process belongs to, and whether the event is one of its bogo ops),
``attach``/``detach`` around each run, and ``finish`` at the end for the
whole document.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..api import System
    from ..probes.ring import ProbeEvent


class Metrics:
    def __init__(self, instance_names: list[str]) -> None:
        self.instances = Counter(instance_names)
        self.ops: Counter[str] = Counter()
        self.series: list[dict[str, Any]] = []
        self._t0 = time.monotonic()
        self._last_t = self._t0
        self._last_ops = 0
        self._rate = 0.0

    def attach(self, system: System) -> None:
        pass

    def detach(self, system: System) -> None:
        pass

    def event(self, e: ProbeEvent, stressor: str | None, is_op: bool) -> None:
        if is_op and stressor is not None:
            self.ops[stressor] += 1
        now = time.monotonic()
        if now - self._last_t >= 1.0:
            total = sum(self.ops.values())
            self._rate = (total - self._last_ops) / (now - self._last_t)
            self.series.append({"t": round(now - self._t0, 3), "ops": dict(self.ops),
                                "ops_per_s": round(self._rate, 1)})
            self._last_t, self._last_ops = now, total

    def all_reached(self, ops: int) -> bool:
        return all(self.ops[name] >= ops for name in self.instances)

    def recent_rate(self) -> float:
        return self._rate

    def last_sample(self) -> dict[str, Any]:
        return self.series[-1] if self.series else {}

    def finish(self, elapsed: float) -> dict[str, Any]:
        return {
            "elapsed": round(elapsed, 3),
            "stressors": {name: {"instances": n, "bogo_ops": self.ops[name],
                                 "ops_per_s": round(self.ops[name] / elapsed, 2)
                                 if elapsed else 0.0}
                          for name, n in self.instances.items()},
            "series": self.series,
        }


def format_tables(doc: dict[str, Any]) -> str:
    lines = [f"{'stressor':10s} {'instances':>9s} {'bogo ops':>10s} {'ops/s':>10s}"]
    for name, m in doc["stressors"].items():
        lines.append(f"{name:10s} {m['instances']:9d} {m['bogo_ops']:10d} "
                     f"{m['ops_per_s']:10.1f}")
    return "\n".join(lines)


def to_yaml(doc: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(doc, sort_keys=False)
