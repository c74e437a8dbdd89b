"""Findings: what a stress run found, deduplicated by a normalized signature.

A signature is a short title after syzkaller's: the kind of finding and the
kernel functions and lock classes involved, with every pid, lwp id and
instance number removed, so the same bug found twice (or by two seeds)
has one signature:

    deadlock: relvm, vfwait on p_lock
    hang: vfwait on p_cv
    lock order: p_lock -> p_lock/1 (relvm) against p_lock/1 -> p_lock
    invariant: A1, B7
    panic: stale reference to proc slot (cfork)

Each distinct finding is saved to ``<root>/<signature hash>/``:
``finding.json`` (kind, signature, seed, settings, times seen),
``report.txt`` (the full report) and ``program.rfm`` (the init program that
was running, msgpack, runnable with ``realfork run``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..sync.lockdep import LockdepReport
from ..sync.report import WaitReport

_INSTANCE = re.compile(r"\[[^\]]*\]")
_NUMBERS = re.compile(r"\b(pid|lwp|kthread|tid|slot|gen|generation)\s+\d+")
_DIGITS = re.compile(r"\d+")


# kernel helpers that wrap a wait: a signature names their caller instead
WRAPPERS = frozenset({"kcv_wait_sig", "cv_wait", "cv_wait_sig", "delay", "stop", "holdlwp"})


def where(chain: str, fallback: str = "") -> str:
    """The first function of a ``;``-separated chain that is not a wait wrapper."""
    fns = chain.split(";") if chain else []
    for fn in fns:
        if fn not in WRAPPERS:
            return fn
    return fns[0] if fns else fallback


def lock_class(name: str) -> str:
    """``p_lock[pid 7]`` -> ``p_lock``."""
    return _INSTANCE.sub("", name).strip()


def _normalize(text: str) -> str:
    text = _NUMBERS.sub(r"\1 N", text)
    return _DIGITS.sub("N", _INSTANCE.sub("", text)).strip()


@dataclass
class Finding:
    kind: str  # deadlock, hang, panic, lock-order, invariant
    signature: str
    report: str  # the full text
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    program: bytes = b""  # the init program (msgpack)
    elapsed: float = 0.0  # seconds into the run when found
    count: int = 1  # times seen in this campaign

    @property
    def id(self) -> str:
        return signature_hash(self.signature)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("program")
        d["id"] = self.id
        return d


def signature_hash(signature: str) -> str:
    return hashlib.sha1(signature.encode()).hexdigest()[:12]


def from_wait_report(rep: WaitReport) -> tuple[str, str]:
    """(kind, signature) of a panic, deadlock or hang report."""
    if rep.kind == "deadlock" and rep.cycles:
        ids = {i for c in rep.cycles for i in c}
        ts = [t for t in rep.threads if t.id in ids]
        fns = sorted({where(t.chain) for t in ts if t.chain})
        locks = sorted({lock_class(t.wchan_name) for t in ts if t.wchan_name})
        return "deadlock", f"deadlock: {', '.join(fns)} on {', '.join(locks)}"
    if rep.kind in ("deadlock", "hang"):
        try:
            t = rep.thread(rep.culprit)
        except KeyError:
            return "hang", f"hang: {_normalize(rep.message)}"
        obj = lock_class(t.wchan_name) if t.wchan_name else "?"
        why = ""
        if "nobody will signal it" in rep.message:
            why = " (lost wake-up)"
        return "hang", f"hang: {where(t.chain, t.name)} on {obj}{why}"
    fn = ""
    if rep.culprit:
        try:
            fn = where(rep.thread(rep.culprit).chain)
        except KeyError:
            fn = ""
    msg = _normalize(rep.message)
    return "panic", f"panic: {msg}" + (f" ({fn})" if fn else "")


def from_lockdep(rep: LockdepReport) -> tuple[str, str]:
    fn = where(rep.chain)
    existing = " -> ".join([rep.path[0].src, *(d.dst for d in rep.path)]) if rep.path else ""
    sig = f"lock order: {rep.held_name} -> {rep.new_name}"
    if fn:
        sig += f" ({fn})"
    if existing:
        sig += f" against {existing}"
    return "lock-order", sig


def from_violations(violations: list[str]) -> tuple[str, str]:
    codes = sorted({v.split(" ", 1)[0] for v in violations})
    return "invariant", "invariant: " + ", ".join(codes)


class FindingStore:
    """Deduplicated findings of a campaign, saved under ``root``."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root) if root is not None else None
        self.by_sig: dict[str, Finding] = {}

    def add(self, f: Finding) -> bool:
        """Record ``f``; True when its signature is new."""
        old = self.by_sig.get(f.signature)
        if old is not None:
            old.count += 1
            if self.root is not None:
                self._write_meta(old)
            return False
        self.by_sig[f.signature] = f
        if self.root is not None:
            self.save(f)
        return True

    def __len__(self) -> int:
        return len(self.by_sig)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.by_sig.values())

    def directory(self, f: Finding) -> Path:
        assert self.root is not None
        return self.root / f.id

    def save(self, f: Finding) -> Path:
        d = self.directory(f)
        d.mkdir(parents=True, exist_ok=True)
        (d / "report.txt").write_text(f.report + "\n")
        (d / "program.rfm").write_bytes(f.program)
        self._write_meta(f)
        return d

    def _write_meta(self, f: Finding) -> None:
        meta = f.to_dict()
        meta.pop("report")
        meta["saved"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        tmp = self.directory(f) / "finding.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        tmp.replace(self.directory(f) / "finding.json")


def load_finding(path: str | os.PathLike[str]) -> Finding:
    """A finding saved by ``FindingStore``; BadInput if ``path`` is not one."""
    d = Path(path)
    try:
        meta = json.loads((d / "finding.json").read_text())
        report = (d / "report.txt").read_text().rstrip("\n")
        program = (d / "program.rfm").read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path} is not a finding directory (no finding.json, report.txt "
                       "or program.rfm)") from None
    except (OSError, ValueError) as e:
        raise BadInput(f"cannot read finding {path}: {e}") from None
    try:
        return Finding(kind=meta["kind"], signature=meta["signature"], report=report,
                       seed=meta.get("seed", 0), config=meta.get("config", {}),
                       program=program, elapsed=meta.get("elapsed", 0.0),
                       count=meta.get("count", 1))
    except (KeyError, TypeError) as e:
        raise BadInput(f"finding {path} is damaged: {e}") from None
