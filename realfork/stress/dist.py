"""Distributions of non-negative integers (nanoseconds) for the stress metrics.

``Dist`` keeps count, total, min and max, and percentiles: exact (nearest
rank) over the first ``EXACT_CAP`` values; past that a log-linear histogram
takes over whose reported percentiles are never below the exact ones and at
most 1/128 above (``exact: false`` in the summary).
"""

from __future__ import annotations

from array import array
from typing import Any

PERCENTILES = (50, 90, 99)
EXACT_CAP = 1 << 17  # values kept exactly per distribution before the histogram
SUB_BITS = 7  # histogram: 2**SUB_BITS buckets per power of two (error < 1/128)

def _bucket(v: int) -> int:
    """Histogram bucket of ``v`` >= 0: exact below 2**(SUB_BITS+1), then
    2**SUB_BITS buckets per power of two."""
    if v < 2 << SUB_BITS:
        return v
    shift = v.bit_length() - SUB_BITS - 1
    return (shift << SUB_BITS) + (v >> shift)


def _bucket_bounds(i: int) -> tuple[int, int]:
    """The smallest and largest value of bucket ``i``."""
    if i < 2 << SUB_BITS:
        return i, i
    shift = (i >> SUB_BITS) - 1
    mant = i - (shift << SUB_BITS)
    return mant << shift, ((mant + 1) << shift) - 1


def nearest_rank(n: int, p: float) -> int:
    """The 1-based rank of the ``p``-th percentile of ``n`` values (nearest
    rank: the smallest value with at least ``p`` percent of them at or below)."""
    k = -(-p * n // 100)
    return min(max(int(k), 1), n)


def percentile(values: list[int], p: float) -> int:
    """Exact nearest-rank percentile of ``values`` (not empty)."""
    s = sorted(values)
    return s[nearest_rank(len(s), p) - 1]


class Dist:
    """A distribution of non-negative integers (nanoseconds): count, total,
    min, max, and percentiles (exact up to ``cap`` values)."""

    __slots__ = ("cap", "hist", "max", "min", "n", "total", "vals")

    def __init__(self, cap: int = EXACT_CAP) -> None:
        self.n = 0
        self.total = 0
        self.min = -1
        self.max = 0
        self.vals: array[int] = array("q")
        self.hist: dict[int, int] | None = None
        self.cap = cap

    def add(self, v: int) -> None:
        if v < 0:
            v = 0
        self.n += 1
        self.total += v
        if v > self.max:
            self.max = v
        if v < self.min or self.min < 0:
            self.min = v
        h = self.hist
        if h is None:
            self.vals.append(v)
            if len(self.vals) >= self.cap:
                self._to_hist()
        else:
            i = _bucket(v)
            h[i] = h.get(i, 0) + 1

    def _to_hist(self) -> None:
        h: dict[int, int] = {}
        for v in self.vals:
            i = _bucket(v)
            h[i] = h.get(i, 0) + 1
        self.hist = h
        self.vals = array("q")

    @property
    def exact(self) -> bool:
        return self.hist is None

    def percentiles(self, ps: tuple[float, ...] = PERCENTILES) -> list[int]:
        if not self.n:
            return [0 for _ in ps]
        ranks = [nearest_rank(self.n, p) for p in ps]
        if self.hist is None:
            s = sorted(self.vals)
            return [s[k - 1] for k in ranks]
        out = []
        items = sorted(self.hist.items())
        for k in ranks:
            cum = 0
            for i, c in items:
                cum += c
                if cum >= k:
                    # the bucket's top: never below the exact value, at most
                    # 1/2**SUB_BITS above it; within [min, max] like it
                    out.append(max(min(_bucket_bounds(i)[1], self.max), self.min))
                    break
        return out

    def summary(self) -> dict[str, Any]:
        d: dict[str, Any] = {"count": self.n, "total": self.total,
                             "avg": round(self.total / self.n) if self.n else 0,
                             "min": max(self.min, 0)}
        for p, v in zip(PERCENTILES, self.percentiles(), strict=True):
            d[f"p{p}"] = v
        d["max"] = self.max
        d["exact"] = self.exact
        return d


__all__ = ["EXACT_CAP", "PERCENTILES", "SUB_BITS", "Dist", "nearest_rank", "percentile"]
