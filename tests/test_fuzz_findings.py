"""Fuzzing ``realfork replay`` and ``realfork minimize`` with damaged findings.

Each example starts from a valid finding directory (a vfork campaign's
settings, the program they compose) and damages it: random JSON values at
fields of ``finding.json`` (top level and settings), fields removed or
added, a whole document replaced (deep nesting, huge strings and integers,
bytes that are not UTF-8, lone surrogates, truncation), ``program.rfm``
replaced or mutated, files missing or of the wrong type.  Both commands run
in-process through ``realfork.cli.main``; the campaigns themselves are
stubbed out (an attempt finds nothing), so a document that happens to be
valid costs no stress run.

Every run must end with exit status 2 and exactly one ``realfork: error:``
line on stderr, or, when the input is a valid finding, 0 or 1 and nothing on
stderr; an exception escaping ``main`` (a traceback) or a run over
``HANG_SECONDS`` (a hang) is a failure.  Every outcome is tallied and the
tally printed (``-s`` shows it); the test fails listing the first failures.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import realfork.stress.minimize as minimize_mod
import realfork.stress.replay as replay_mod
from realfork.cli import main
from realfork.stress.config import StressConfig
from realfork.stress.replay import Attempt, composed_program

pytestmark = pytest.mark.timeout(120)

EXAMPLES = 300
HANG_SECONDS = 10.0

CFG = StressConfig(stressors={"vfork": 1}, timeout=1, check_interval=0,
                   boot={"bugs": ["relvm_parent_first"], "deadlock_timeout": 1.0})
SIGNATURE = "lock order: p_lock/1 -> p_lock (relvm) against p_lock -> p_lock/1"


def base_meta() -> dict[str, Any]:
    return {"kind": "lock-order", "signature": SIGNATURE, "seed": 0,
            "config": {**CFG.to_dict(), "seed": 0}, "elapsed": 0.1, "count": 1,
            "id": "3b743ccb2ec8", "saved": "2026-01-01T00:00:00"}


PROGRAM = composed_program(CFG)

# where a random value goes: a path of keys into finding.json
FIELDS: list[tuple[str, ...]] = [
    ("kind",), ("signature",), ("seed",), ("config",), ("elapsed",), ("count",), ("id",),
    ("saved",), ("config", "stressors"), ("config", "stressors", "vfork"),
    ("config", "stressors", "mix"), ("config", "options"), ("config", "options", "vfork"),
    ("config", "options", "vfork", "image_ms"), ("config", "options", "mix", "length"),
    ("config", "timeout"), ("config", "ops"), ("config", "seed"), ("config", "boot"),
    ("config", "boot", "bugs"), ("config", "boot", "noise"), ("config", "boot", "faults"),
    ("config", "boot", "nproc"), ("config", "boot", "deadlock_timeout"),
    ("config", "check_interval"), ("config", "keep_going"), ("unknown",),
    ("config", "unknown"),
]

scalars = (st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
           | st.sampled_from(["lock-order", "hang", "vfork", "threads", "contest", "",
                              "relvm_parent_first", "\ud800", "a\nb"]))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4)
                           | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)


def _set(doc: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    for k in path[:-1]:
        nxt = doc.get(k)
        if not isinstance(nxt, dict):
            nxt = doc[k] = {}
        doc = nxt
    doc[path[-1]] = value


def _delete(doc: dict[str, Any], path: tuple[str, ...]) -> None:
    for k in path[:-1]:
        doc = doc.get(k)  # type: ignore[assignment]
        if not isinstance(doc, dict):
            return
    doc.pop(path[-1], None)


def _dumps(doc: object) -> bytes:
    return json.dumps(doc).encode("utf-8", "surrogatepass")


@st.composite
def finding_json(draw: st.DrawFn) -> tuple[str, bytes]:
    """(what was done, the bytes of finding.json)."""
    how = draw(st.sampled_from(["fields", "fields", "fields", "fields", "deep", "huge",
                                "bytes", "not-utf8", "truncated", "bigint", "valid"]))
    doc = base_meta()
    if how == "valid":
        return how, _dumps(doc)
    if how == "fields":
        done = []
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(FIELDS))
            if draw(st.booleans()) or path == ("unknown",):
                value = draw(json_values)
                _set(doc, path, value)
                done.append(f"{'.'.join(path)}={value!r:.60}")
            else:
                _delete(doc, path)
                done.append(f"del {'.'.join(path)}")
        return "fields " + ", ".join(done), _dumps(doc)
    if how == "deep":
        n = draw(st.sampled_from([40, 1_000, 100_000]))
        open_, close = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        nested = open_ * n + "1" + close * n
        where = draw(st.sampled_from(["top", "config.boot", "signature", "config.options"]))
        if where == "top":
            return f"deep {n} at top", nested.encode()
        text = json.dumps(doc)
        key = where.split(".")[-1]
        text = text.replace(f'"{key}": ', f'"{key}": {nested}, "x{key}": ', 1)
        return f"deep {n} at {where}", text.encode()
    if how == "huge":
        n = draw(st.sampled_from([5_000, 200_000, 2_000_000]))
        path = draw(st.sampled_from([("signature",), ("kind",), ("config", "boot", "bugs"),
                                     ("id",), ("config", "stressors")]))
        value: object = "x" * n if path[-1] != "stressors" else {f"s{i}": 1 for i in range(n // 10)}
        _set(doc, path, value)
        return f"huge {n} at {'.'.join(path)}", _dumps(doc)
    if how == "bytes":
        raw = draw(st.binary(max_size=200))
        return f"bytes {raw[:20]!r}", raw
    if how == "not-utf8":
        raw = _dumps(doc)
        at = draw(st.integers(0, len(raw)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]))
        return f"not-utf8 {bad!r} at {at}", raw[:at] + bad + raw[at:]
    if how == "truncated":
        raw = _dumps(doc)
        at = draw(st.integers(0, len(raw) - 1))
        return f"truncated at {at}", raw[:at]
    # bigint: an integer of more digits than Python converts
    path = draw(st.sampled_from([("seed",), ("count",), ("config", "timeout"),
                                 ("config", "stressors", "vfork")]))
    text = json.dumps(doc)
    _set(doc, path, "BIG")
    text = json.dumps(doc).replace('"BIG"', "9" * 5000)
    return f"bigint at {'.'.join(path)}", text.encode()


@st.composite
def program_rfm(draw: st.DrawFn) -> tuple[str, bytes]:
    how = draw(st.sampled_from(["valid", "valid", "valid", "bytes", "flip", "truncate",
                                "msgpack", "empty"]))
    if how == "valid":
        return how, PROGRAM
    if how == "empty":
        return how, b""
    if how == "bytes":
        return how, draw(st.binary(min_size=1, max_size=300))
    if how == "flip":
        at = draw(st.integers(0, len(PROGRAM) - 1))
        b = draw(st.integers(0, 255))
        return f"flip {at}={b}", PROGRAM[:at] + bytes([b]) + PROGRAM[at + 1:]
    if how == "truncate":
        at = draw(st.integers(1, len(PROGRAM) - 1))
        return f"truncate {at}", PROGRAM[:at]
    value = draw(json_values)
    try:
        return f"msgpack {value!r:.60}", msgpack.packb(value)
    except (TypeError, ValueError, OverflowError):
        return "msgpack nil", msgpack.packb(None)


LAYOUTS = ["normal"] * 12 + ["no-json", "no-report", "no-program", "json-dir",
                            "report-not-utf8", "dir-is-file", "dir-missing"]


class _Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Hang


def _lay_out(root: Path, layout: str, meta: bytes, program: bytes) -> Path:
    d = root / "finding"
    if layout == "dir-missing":
        return d
    if layout == "dir-is-file":
        d.write_bytes(meta)
        return d
    d.mkdir()
    if layout == "json-dir":
        (d / "finding.json").mkdir()
    elif layout != "no-json":
        (d / "finding.json").write_bytes(meta)
    if layout == "report-not-utf8":
        (d / "report.txt").write_bytes(b"\xff\xfe report\n")
    elif layout != "no-report":
        (d / "report.txt").write_bytes(b"a report\n")
    if layout != "no-program":
        (d / "program.rfm").write_bytes(program)
    return d


def _text(stream: io.TextIOWrapper) -> str:
    stream.flush()
    raw = stream.buffer.getvalue()  # type: ignore[attr-defined]
    return raw.decode("utf-8", "replace")


def run_cli(argv: list[str]) -> tuple[str, int | None, str]:
    """(outcome, exit status, stderr): outcome ``ok`` or what went wrong."""
    # like the real streams: stdout strict UTF-8 (a lone surrogate cannot be
    # printed), stderr with backslashes for what cannot be encoded
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    rc: int | None = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 2
    except _Hang:
        return "hang", None, _text(err)
    except Exception as e:  # anything escaping main is a traceback
        return f"traceback {type(e).__name__}", None, f"{type(e).__name__}: {e}"[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    text = _text(err)
    if rc == 2:
        if text.count("\n") != 1 or not text.endswith("\n") \
                or not text.startswith("realfork: error: "):
            return "not one line", rc, text[:300]
        if len(text) > 2000:
            return "a line too long", rc, text[:300]
        return "ok", rc, text
    if rc in (0, 1) and not text:
        return "ok", rc, text
    return f"exit {rc}", rc, text[:300]


@contextlib.contextmanager
def no_campaigns() -> Iterator[None]:
    """Attempts find nothing, at once: no stress run is needed to fuzz the loading."""
    def attempt(cfg: StressConfig, signature: str) -> Attempt:
        return Attempt(False, None, None, 0.0)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(replay_mod, "run_attempt", attempt)
        mp.setattr(minimize_mod, "run_attempt", attempt)
        yield


def fuzz(check: Callable[[str, list[str]], None]) -> None:
    @settings(derandomize=True, database=None, max_examples=EXAMPLES, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(finding_json(), program_rfm(), st.sampled_from(LAYOUTS))
    def one(meta: tuple[str, bytes], program: tuple[str, bytes], layout: str) -> None:
        with tempfile.TemporaryDirectory(prefix="realfork-fuzz-") as tmp:
            d = _lay_out(Path(tmp), layout, meta[1], program[1])
            check(f"{layout}; json {meta[0]}; program {program[0]}", [str(d)])

    one()


def test_damaged_findings_are_one_line_and_status_2() -> None:
    tally: Counter[str] = Counter()
    failures: list[str] = []

    def check(what: str, args: list[str]) -> None:
        for argv in (["replay", *args, "-n", "1"],
                     ["minimize", *args, "--attempts", "1", "--budget", "5",
                      "-o", os.path.join(os.path.dirname(args[0]), "min")]):
            outcome, rc, err = run_cli(argv)
            tally["runs"] += 1
            tally[outcome if outcome != "ok" else f"ok, exit {rc}"] += 1
            if outcome != "ok":
                failures.append(f"{argv[0]} [{what}]: {outcome}: {err.strip()[:200]}")

    with no_campaigns():
        fuzz(check)
    print(f"\nfuzz findings: {EXAMPLES} inputs, {tally['runs']} runs: {dict(tally)}")
    assert not failures, f"{len(failures)} failures, e.g.:\n" + "\n".join(failures[:8])
