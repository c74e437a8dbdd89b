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

The hash is predictable from the signature, and realfork runs as root on
shared machines, so the store writes nothing another user could redirect
(see ``realfork/safeio.py``):

* the root and every finding directory are private (``private_dir``: 0700,
  owned by this user, not a link); a root that is a link, belongs to another
  user or is writable by others is refused when the store is built, that is
  before the campaign starts;
* ``report.txt`` and ``program.rfm`` are created (``O_EXCL|O_NOFOLLOW``) and
  ``finding.json`` is replaced by a rename, never written through; a link or
  anything but a regular file under one of those names is refused;
* a finding already saved by an earlier campaign keeps what was saved (its
  report, program, seed and settings: the first reproducer); only its
  ``count`` grows and ``last_seen`` is set.

``load_finding`` trusts nothing it reads: sizes are bounded, every field of
``finding.json`` is checked (type and range) and ``program.rfm`` must decode
as a program; every problem is one ``BadInput`` line naming the file and
the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from ..errors import BadInput
from ..safeio import create_new, private_dir, read_bounded, shorten, write_replacing
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


KINDS = ("deadlock", "hang", "panic", "lock-order", "invariant")


@dataclass
class Finding:
    kind: str  # one of KINDS
    signature: str
    report: str  # the full text
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    program: bytes = b""  # the init program (msgpack)
    elapsed: float = 0.0  # seconds into the run when found
    count: int = 1  # times seen in this campaign (finding.json: in every campaign)

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


# -- the store ----------------------------------------------------------------------------

META, REPORT, PROGRAM = "finding.json", "report.txt", "program.rfm"
FILES = (META, REPORT, PROGRAM)


def one_line(text: str) -> str:
    """``text`` with every control character escaped: a message is one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _shown(path: str | os.PathLike[str]) -> str:
    return one_line(shorten(os.fspath(path)))


def _file(d: str | os.PathLike[str], name: str) -> str:
    """``d/name`` for a message: the directory may be cut short, the name is kept."""
    return f"{_shown(d)}/{name}"


def _one_line_errors(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, its BadInput made one line (a path may hold a newline)."""
    try:
        return fn(*args)
    except BadInput as e:
        raise BadInput(one_line(str(e))) from None


def check_root(root: str | os.PathLike[str]) -> None:
    """Refuse, before a campaign, a findings root that ``FindingStore`` would not
    write to: a link, a non-directory, another user's directory, one writable by
    others, or a missing one whose parent is not a directory."""
    p = os.fspath(root)
    if not p or "\0" in p:
        raise BadInput(f"findings directory {_shown(p)!r}: not a usable name")
    if os.path.lexists(p):
        _one_line_errors(private_dir, p, "findings directory")  # exists: only checked
        return
    parent = os.path.dirname(os.path.abspath(p))
    try:
        st = os.stat(parent)
    except OSError:
        raise BadInput(f"findings directory {_shown(p)}: its parent directory does not "
                       "exist") from None
    if not stat.S_ISDIR(st.st_mode):
        raise BadInput(f"findings directory {_shown(p)}: {_shown(parent)} is not a directory")


def _check_entries(d: Path) -> None:
    """Refuse a finding directory holding a link or a non-file under one of FILES."""
    for name in FILES:
        try:
            st = os.lstat(d / name)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise BadInput(f"finding {_file(d, name)}: {e.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            raise BadInput(f"finding {_file(d, name)} is a symbolic link; refusing to "
                           "write through it")
        if not stat.S_ISREG(st.st_mode):
            raise BadInput(f"finding {_file(d, name)} is not a regular file; refusing to "
                           "write there")


class FindingStore:
    """Deduplicated findings of a campaign, saved under ``root`` (see the module
    docstring).  The root is checked here, when the store is built: a campaign
    that could not save its findings is refused before it runs."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root) if root is not None else None
        self.by_sig: dict[str, Finding] = {}
        # finding.json as an earlier campaign saved it, by signature: its count
        # grows, the rest is kept
        self.earlier: dict[str, dict[str, Any]] = {}
        if self.root is not None:
            check_root(self.root)

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

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.by_sig.values())

    def directory(self, f: Finding) -> Path:
        assert self.root is not None
        return self.root / f.id

    def _private(self, f: Finding) -> Path:
        assert self.root is not None
        _one_line_errors(private_dir, self.root, "findings directory")
        d = self.directory(f)
        if d != self.root:
            _one_line_errors(private_dir, d, "finding directory")
        _check_entries(d)
        return d

    def save(self, f: Finding) -> Path:
        d = self._private(f)
        saved = os.path.lexists(d / META)
        if saved:  # an earlier campaign's: keep its reproducer, count this one
            self.earlier[f.signature] = _earlier_meta(d, f.signature)
        for name, data in ((REPORT, (f.report + "\n").encode()), (PROGRAM, f.program)):
            if not os.path.lexists(d / name):
                _one_line_errors(create_new, d / name, data)
            elif not saved:  # left by a save that stopped before finding.json
                _one_line_errors(write_replacing, d / name, data, f"finding {name}")
        self._write_meta(f)
        return d

    def _write_meta(self, f: Finding) -> None:
        d = self._private(f)
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        earlier = self.earlier.get(f.signature)
        if earlier is not None:
            meta = dict(earlier)
            meta["count"] = earlier.get("count", 1) + f.count
            meta["last_seen"] = now
        else:
            meta = f.to_dict()
            meta.pop("report")
            meta["saved"] = now
        _one_line_errors(write_replacing, d / META, json.dumps(meta, indent=2) + "\n",
                         "finding")


def _earlier_meta(d: Path, signature: str) -> dict[str, Any]:
    """finding.json in ``d`` (saved before), checked; refused when it is damaged or
    another signature's (nothing saved is overwritten)."""
    meta = read_meta(d)
    if meta["signature"] != signature:
        raise BadInput(f"{_file(d, META)} holds another finding "
                       f"({one_line(shorten(meta['signature']))}); not replacing it")
    return meta


# -- loading ------------------------------------------------------------------------------

MAX_META_BYTES = 1 << 20  # finding.json: a few KiB in practice
MAX_REPORT_BYTES = 16 << 20
MAX_SIGNATURE = 4096  # characters
MAX_DEPTH = 32  # nesting of finding.json (config.boot.faults.<site> is 5 deep)
MAX_COUNT = 1 << 62
SEED_RANGE = (-(1 << 63), (1 << 63) - 1)  # the kernel's (make_params)
META_FIELDS = {"kind", "signature", "seed", "config", "elapsed", "count", "id", "saved",
               "last_seen"}
# stressor options each of whose units is at least one instruction of the composed
# program (lwps created, images chained, instructions generated): a campaign whose
# instances add up to more than the program limit could not have run
SIZE_OPTIONS = {("forkall", "lwps"), ("exec", "chain"), ("mix", "length")}


def _problem(where: str, field: str, problem: str) -> BadInput:
    return BadInput(one_line(f"{where}: {field}: {problem}"))


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _check_shape(doc: object, where: str) -> None:
    """Depth at most MAX_DEPTH; every string (keys too) valid UTF-8 (no lone
    surrogates, which could not be printed)."""
    stack: list[tuple[object, int, str]] = [(doc, 1, "(top)")]
    while stack:
        v, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            raise _problem(where, path, f"nested more than {MAX_DEPTH} deep")
        if isinstance(v, str):
            try:
                v.encode()
            except UnicodeEncodeError:
                raise _problem(where, path, "a string that is not valid Unicode") from None
        elif isinstance(v, dict):
            for k, x in v.items():
                stack.append((k, depth + 1, path))
                stack.append((x, depth + 1, f"{path}.{shorten(str(k), 40)}"))
        elif isinstance(v, list):
            stack += [(x, depth + 1, f"{path}[{i}]") for i, x in enumerate(v)]


def _int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_config(config: object, where: str) -> None:
    """The saved stress settings: known keys, the right types, values StressConfig
    accepts, and a program that could have been composed."""
    from ..user.isa import IMM_MAX
    from ..user.program import MAX_INSTRUCTIONS
    from .config import MAX_INSTANCES, StressConfig
    from .stressors import ORDER

    if not isinstance(config, dict):
        raise _problem(where, "config", f"must be a table of settings, not {_kind(config)}")
    known = StressConfig.__dataclass_fields__
    for k in config:
        if k not in known:
            raise _problem(where, "config", f"unknown setting {shorten(repr(k), 60)} "
                                            f"(known: {', '.join(known)})")
    stressors = config.get("stressors", {})
    if not isinstance(stressors, dict):
        raise _problem(where, "config.stressors",
                       f"must be a table of stressor -> instances, not {_kind(stressors)}")
    for name, n in stressors.items():
        if name not in ORDER:
            raise _problem(where, "config.stressors", f"unknown stressor "
                                                      f"{shorten(repr(name), 60)}")
        if not _int(n) or not 0 <= n <= MAX_INSTANCES:
            raise _problem(where, f"config.stressors.{name}", "bad saved settings: instances "
                           f"must be a whole number in 0..{MAX_INSTANCES}, "
                           f"not {shorten(repr(n), 60)}")
    options = config.get("options", {})
    if not isinstance(options, dict):
        raise _problem(where, "config.options",
                       f"must be a table of stressor -> options, not {_kind(options)}")
    for name, opts in options.items():
        if name not in ORDER:
            raise _problem(where, "config.options", f"unknown stressor "
                                                    f"{shorten(repr(name), 60)}")
        if not isinstance(opts, dict):
            raise _problem(where, f"config.options.{name}",
                           f"must be a table of option -> value, not {_kind(opts)}")
        for opt, v in opts.items():
            if not _int(v) or not 0 <= v <= IMM_MAX:
                raise _problem(where, f"config.options.{name}.{shorten(str(opt), 40)}",
                               f"must be a whole number in 0..{IMM_MAX}, "
                               f"not {shorten(repr(v), 60)}")
            n = stressors.get(name, 0) if _int(stressors.get(name, 0)) else 0
            if (name, opt) in SIZE_OPTIONS and n * v > MAX_INSTRUCTIONS:
                raise _problem(where, f"config.options.{name}.{opt}",
                               f"{v} x {n} instances is more than a program of "
                               f"{MAX_INSTRUCTIONS} instructions holds")
    for key in ("timeout", "check_interval"):
        if key in config and not _number(config[key]):
            raise _problem(where, f"config.{key}",
                           f"must be a number of seconds, not {shorten(repr(config[key]), 60)}")
    if "ops" in config and not (_int(config["ops"]) and 0 <= config["ops"] <= MAX_COUNT):
        raise _problem(where, "config.ops", f"must be a whole number in 0..{MAX_COUNT}, "
                                            f"not {shorten(repr(config['ops']), 60)}")
    if "seed" in config:
        _check_seed(config["seed"], where, "config.seed")
    if "keep_going" in config and not isinstance(config["keep_going"], bool):
        raise _problem(where, "config.keep_going",
                       f"must be true or false, not {shorten(repr(config['keep_going']), 60)}")
    boot = config.get("boot", {})
    if not isinstance(boot, dict):
        raise _problem(where, "config.boot", f"must be a table of boot parameters, "
                                             f"not {_kind(boot)}")
    try:
        StressConfig.from_dict(config)
    except BadInput as e:
        raise _problem(where, "config", f"bad saved settings: {e}") from None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError,
            RecursionError) as e:
        raise _problem(where, "config", f"damaged saved settings: "
                                        f"{shorten(str(e) or type(e).__name__)}") from None


def _check_seed(seed: object, where: str, field: str) -> None:
    lo, hi = SEED_RANGE
    if not _int(seed) or not lo <= seed <= hi:
        raise _problem(where, field, f"must be a whole number in {lo}..{hi}, "
                                     f"not {shorten(repr(seed), 60)}")


def check_meta(meta: object, where: str) -> dict[str, Any]:
    """``meta`` (finding.json, parsed) if every field is what FindingStore writes."""
    if not isinstance(meta, dict):
        raise _problem(where, "(top)", f"must be a table, not {_kind(meta)}")
    _check_shape(meta, where)
    for k in meta:
        if k not in META_FIELDS:
            raise _problem(where, shorten(str(k), 40), "not a field of a finding "
                           f"(fields: {', '.join(sorted(META_FIELDS))})")
    for k in ("kind", "signature"):
        if k not in meta:
            raise _problem(where, k, "missing")
    kind = meta["kind"]
    if kind not in KINDS:
        raise _problem(where, "kind", f"must be one of {', '.join(KINDS)}, "
                                      f"not {shorten(repr(kind), 60)}")
    sig = meta["signature"]
    if not isinstance(sig, str) or not sig:
        raise _problem(where, "signature", f"must be a non-empty string, not {_kind(sig)}")
    if len(sig) > MAX_SIGNATURE or "\0" in sig:
        raise _problem(where, "signature", f"must be at most {MAX_SIGNATURE} characters "
                                           f"without NUL, not {shorten(repr(sig), 60)}")
    if "seed" in meta:
        _check_seed(meta["seed"], where, "seed")
    if "elapsed" in meta and not (_number(meta["elapsed"]) and meta["elapsed"] >= 0):
        raise _problem(where, "elapsed", f"must be a number of seconds >= 0, "
                                         f"not {shorten(repr(meta['elapsed']), 60)}")
    if "count" in meta and not (_int(meta["count"]) and 1 <= meta["count"] <= MAX_COUNT):
        raise _problem(where, "count", f"must be a whole number in 1..{MAX_COUNT}, "
                                       f"not {shorten(repr(meta['count']), 60)}")
    for k in ("id", "saved", "last_seen"):
        if k in meta and not (isinstance(meta[k], str) and len(meta[k]) <= 64):
            raise _problem(where, k, f"must be a string of at most 64 characters, "
                                     f"not {shorten(repr(meta[k]), 60)}")
    _check_config(meta.get("config", {}), where)
    return meta


def _finding_dir(path: str | os.PathLike[str]) -> Path:
    d = Path(path)
    shown = _shown(path)
    try:
        st = os.stat(d)
    except FileNotFoundError:
        raise BadInput(f"finding {shown}: no such directory") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the name
        raise BadInput(f"finding {shown}: {getattr(e, 'strerror', None) or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise BadInput(f"finding {shown} is not a directory")
    if not os.path.lexists(d / META):
        raise BadInput(f"{shown} is not a finding directory (no {META})")
    return d


def _read(d: Path, name: str, limit: int) -> bytes:
    """``d/name`` read bounded (a regular file only); a refusal names the file."""
    try:
        return read_bounded(d / name, limit, "finding file")
    except BadInput as e:
        # read_bounded names the whole path, perhaps cut short: name the file
        _head, shown, rest = str(e).partition(shorten(os.fspath(d / name)))
        if not shown:
            raise
        raise BadInput(one_line(f"{_file(d, name)}{rest}")) from None


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """finding.json of the finding directory ``path``, read bounded and checked."""
    d = _finding_dir(path)
    where = _file(d, META)
    raw = _read(d, META, MAX_META_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{where}: not UTF-8 text (byte {e.start})") from None
    try:
        meta = json.loads(text)
    except RecursionError:
        raise BadInput(f"{where}: nested too deep") from None
    except ValueError as e:  # JSONDecodeError, and integers of over 4300 digits
        raise BadInput(one_line(f"{where}: not JSON ({shorten(str(e))})")) from None
    return check_meta(meta, where)


def load_finding(path: str | os.PathLike[str]) -> Finding:
    """A finding saved by ``FindingStore``; BadInput (one line naming the file and
    the field) if ``path`` is not one."""
    from ..user.codec import MAX_BYTES, from_msgpack

    meta = read_meta(path)
    d = Path(path)
    for name in (REPORT, PROGRAM):
        if not os.path.lexists(d / name):
            raise BadInput(f"{_shown(path)} is not a finding directory (no {name})")
    raw = _read(d, REPORT, MAX_REPORT_BYTES)
    try:
        report = raw.decode("utf-8").rstrip("\n")
    except UnicodeDecodeError as e:
        raise BadInput(f"{_file(d, REPORT)}: not UTF-8 text (byte {e.start})") from None
    program = _read(d, PROGRAM, MAX_BYTES)
    if program:  # empty: no program was running
        try:
            from_msgpack(program)
        except BadInput as e:
            raise BadInput(one_line(f"{_file(d, PROGRAM)}: {e}")) from None
        except (ValueError, TypeError, KeyError, IndexError, OverflowError,
                RecursionError) as e:
            raise BadInput(one_line(f"{_file(d, PROGRAM)}: not a program "
                                    f"({shorten(str(e) or type(e).__name__)})")) from None
    return Finding(kind=meta["kind"], signature=meta["signature"], report=report,
                   seed=meta.get("seed", 0), config=meta.get("config", {}),
                   program=program, elapsed=meta.get("elapsed", 0.0),
                   count=meta.get("count", 1))
