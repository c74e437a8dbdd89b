"""Fuzzing what a user hands realfork: program texts, msgpack programs, command lines.

Every input either works or is refused with exit status 2 and exactly one
line on stderr: never a traceback, never a hang.  The command lines are run
in-process through ``realfork.cli.main`` with the boot replaced by a stub
that checks the boot parameters and stops there, so no kernel is booted and
the file stays fast; the programs go through ``realfork.parse`` and
``from_msgpack``.

``python tests/test_fuzz_inputs.py [N]`` runs N seeded inputs of each kind
outside pytest and counts the tracebacks and hangs (5 s each): the figures
quoted in the commit that hardened these inputs.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.rf"))
TEXTS = [p.read_text() for p in EXAMPLES]

pytestmark = pytest.mark.timeout(240)

# Tokens a mutation inserts: huge, negative and odd numbers, long names, the
# punctuation of the grammar, and names of every kind.
HUGE = "9" * 5000
TOKENS = [HUGE, "-" + HUGE, "0x" + "f" * 40, "0x", "-0", "00000000000000000000000000001",
          "9223372036854775807", "9223372036854775808", "-9223372036854775808",
          "-9223372036854775809", "1e9", "nan", "inf", "+5", "--1", ",", ":", ",,", "::",
          "a" * 100_000, "r8", "r99", "rv", "err", "st", "main", "main:", "EINTR", "SIGKILL",
          "catch", "é", "\x00", "\t", ";", "#", "wait", "exit", "jmp main", "fork1"]


def _mutate_text(rng: random.Random, text: str, rounds: int) -> str:
    for _ in range(rounds):
        what = rng.randrange(7)
        i = rng.randrange(len(text) + 1)
        if what == 0:
            text = text[:i] + chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x300)])) \
                + text[i:]
        elif what == 1 and text:
            text = text[:i] + text[i + rng.randrange(1, 20):]
        elif what == 2 and text:
            text = text[:i] + chr(rng.randrange(32, 127)) + text[i + 1:]
        elif what == 3:
            text = text[:i] + " " + rng.choice(TOKENS) + " " + text[i:]
        elif what == 4:  # replace a whole token
            words = text.split(" ")
            words[rng.randrange(len(words))] = rng.choice(TOKENS)
            text = " ".join(words)
        elif what == 5:  # duplicate or drop a line
            lines = text.split("\n")
            k = rng.randrange(len(lines))
            if rng.random() < 0.5:
                lines.insert(k, lines[rng.randrange(len(lines))])
            else:
                del lines[k]
            text = "\n".join(lines)
        else:  # deep nesting of the one thing the grammar repeats: labels
            text = text[:i] + "x:" * rng.randrange(1, 2000) + text[i:]
    return text


def _leaf(rng: random.Random) -> Any:
    return rng.choice([2 ** 64, -(2 ** 63) - 1, 2 ** 63, -1, 0, 1.5, float("nan"), True, None,
                       "", "a" * 100_000, "r99", b"\x00\xff", [], {}, [[[[[]]]]], {"v": 1},
                       "main", "wait", 10 ** 18])


def _mutate_doc(rng: random.Random, doc: Any, rounds: int) -> Any:
    for _ in range(rounds):
        path: list[Any] = []
        node = doc
        while isinstance(node, (list, dict)) and node and rng.random() < 0.7:
            key = rng.randrange(len(node)) if isinstance(node, list) else rng.choice(list(node))
            path.append((node, key))
            node = node[key]
        if not path:
            doc = _leaf(rng) if rng.random() < 0.2 else doc
            continue
        parent, key = path[-1]
        r = rng.random()
        if r < 0.6:
            parent[key] = _leaf(rng)
        elif r < 0.8 and isinstance(parent, list):
            parent.insert(key, _leaf(rng))
        else:
            nested: Any = _leaf(rng)
            for _ in range(rng.randrange(1, 200)):
                nested = [nested]
            parent[key] = nested
    return doc


def _mutate_bytes(rng: random.Random, data: bytes, rounds: int) -> bytes:
    b = bytearray(data)
    for _ in range(rounds):
        what = rng.randrange(4)
        i = rng.randrange(len(b) + 1)
        if what == 0 and b:
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif what == 1:
            del b[i:]
        elif what == 2:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        else:
            b[i:i] = rng.choice([b"\xdc\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xcf" + b"\xff" * 8,
                                 b"\xd3\x80" + b"\x00" * 7, b"\xc1", b"\x91" * 300])
    return bytes(b)


def program_text(rng: random.Random) -> str:
    return _mutate_text(rng, rng.choice(TEXTS), rng.randrange(1, 6))


def program_msgpack(rng: random.Random) -> bytes:
    from realfork.user.codec import to_msgpack
    from realfork.user.parser import parse

    data = to_msgpack(parse(rng.choice(TEXTS)))
    if rng.random() < 0.5:
        return _mutate_bytes(rng, data, rng.randrange(1, 5))
    doc = msgpack.unpackb(data, raw=False)
    doc = _mutate_doc(rng, doc, rng.randrange(1, 4))
    try:
        return msgpack.packb(doc, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return data


# -- command lines -------------------------------------------------------------------


# /dev/zero is tried only by the counting run below, whose memory is capped: read
# without a bound (as it was), it takes all of a shared machine's memory.
# tests/test_hardening_cli.py tries it in a capped child process.
WITH_ZERO = False


def _places(tmp: str) -> list[str]:
    return ["/dev/zero"] * WITH_ZERO + ["/dev/null", "/proc/x", "/proc/self/status", "/sys/x", "/",
            "/nonexistent/dir/f", "/etc/passwd", "/etc/passwd/x", f"{tmp}/missing/f",
            f"{tmp}/dir", f"{tmp}/file", f"{tmp}/fifo", f"{tmp}/out", f"{tmp}/job",
            f"{tmp}/prog.rf", "", "a" * 100_000, "x\0y", "-", "../x", "realfork-" + "f" * 24]


VALUES = ["0", "1", "-1", "2", "7", "100", "1000000000", "18446744073709551616", HUGE,
          "-" + HUGE, "nan", "inf", "-inf", "1e309", "0.5", "1e-9", "", " ", "x" * 100_000,
          "0x10", "1_000", "٣", "off", "contest", "pct", "threads", "processes", "warn"]


def _options(parser: Any) -> dict[str, list[str]]:
    """Subcommand -> its option strings, from the parser itself."""
    sub = parser._subparsers._group_actions[0]
    out = {}
    for name, p in sub.choices.items():
        out[name] = [s for a in p._actions for s in a.option_strings if s not in ("-h", "--help")]
    return out


COMMANDS = ("run", "stress", "top", "report", "bugs")


def command_line(rng: random.Random, tmp: str) -> list[str]:
    from realfork.cli import build_parser

    opts = _options(build_parser())
    cmd = rng.choice(COMMANDS)
    places = _places(tmp)
    argv = [cmd]
    if cmd == "run":
        argv.append(rng.choice([f"{tmp}/prog.rf", *places]))
    if cmd == "report":
        argv += ["--attach", rng.choice([*places, "realfork-nonexistent"])]
    if cmd == "top" and rng.random() < 0.5:
        argv.append(rng.choice(["realfork-nonexistent", "x" * 100_000, "../x"]))
    for _ in range(rng.randrange(0, 5)):
        opt = rng.choice(opts[cmd] or ["--bogus"])
        argv.append(opt)
        if rng.random() < 0.85:
            argv.append(rng.choice(places if rng.random() < 0.3 else VALUES))
    if cmd == "stress" and rng.random() < 0.3:
        job = Path(tmp, "job")
        lines = [f"{rng.choice(opts['stress']).lstrip('-')} {rng.choice(VALUES)}"
                 for _ in range(rng.randrange(1, 4))]
        job.write_text("\n".join(lines) + "\n")
        argv += ["--job", str(job)]
    if rng.random() < 0.1:
        argv.insert(rng.randrange(len(argv) + 1), rng.choice(VALUES))
    return argv


class _WouldBoot(Exception):
    """Raised by the boot stub once every check before booting has passed."""


def _checked_boot(**params: Any) -> Any:
    from realfork.kernel.params import make_params

    make_params(**params)  # what realfork.boot checks first
    raise _WouldBoot


class _StressRun:
    def __init__(self, *args: Any, **kw: Any) -> None:
        raise _WouldBoot


@contextlib.contextmanager
def _no_boot() -> Iterator[None]:
    with mock.patch("realfork.boot", _checked_boot), \
            mock.patch("realfork.stress.command.StressRun", _StressRun), \
            mock.patch("realfork.cli.top_command", lambda args: 0):
        yield


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` with no kernel booted: its status and its stderr."""
    from realfork.cli import main

    err, out = io.StringIO(), io.StringIO()
    with _no_boot(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            status = main(argv)
        except _WouldBoot:
            status = 0
        except SystemExit as e:  # the old main let argparse exit
            status = e.code if isinstance(e.code, int) else 2
    return status, err.getvalue()


def _make_places(tmp: str) -> None:
    os.makedirs(f"{tmp}/dir", exist_ok=True)
    Path(tmp, "file").write_text("x")
    Path(tmp, "prog.rf").write_text(TEXTS[0])
    if not os.path.exists(f"{tmp}/fifo"):
        os.mkfifo(f"{tmp}/fifo")


# -- the checks ----------------------------------------------------------------------


def check_refusal(e: BaseException) -> None:
    from realfork.errors import BadInput

    if not isinstance(e, BadInput):
        raise e  # a traceback for the user
    text = str(e)
    assert "\n" not in text and len(text) < 500, text[:600]


def check_text(text: str) -> None:
    import realfork

    try:
        realfork.parse(text)
    except Exception as e:
        check_refusal(e)


def check_msgpack(data: bytes) -> None:
    from realfork.user.codec import from_msgpack

    try:
        from_msgpack(data)
    except Exception as e:
        check_refusal(e)


def check_cli(argv: list[str]) -> None:
    status, err = run_cli(argv)
    shown = [a[:40] for a in argv]
    assert "Traceback" not in err, (shown, err[-2000:])
    assert status in (0, 2), (shown, status, err[:500])
    if status == 2:
        assert err.count("\n") == 1 and err.endswith("\n"), (shown, err[:1000])
        assert len(err) < 500, (shown, err[:600])
    else:
        assert err.count("\n") <= 1, (shown, err[:1000])  # stress's description line


# -- hypothesis ----------------------------------------------------------------------

SEEDS = st.integers(min_value=0, max_value=2 ** 32)

def _fast(n: int) -> settings:
    return settings(derandomize=True, deadline=None, database=None, max_examples=n,
                    suppress_health_check=[HealthCheck.too_slow])


@_fast(200)
@given(SEEDS)
def test_mutated_program_texts_parse_or_are_refused_in_one_line(seed: int) -> None:
    check_text(program_text(random.Random(seed)))


@_fast(200)
@given(SEEDS)
def test_mutated_msgpack_programs_decode_or_are_refused_in_one_line(seed: int) -> None:
    check_msgpack(program_msgpack(random.Random(seed)))


@pytest.fixture(scope="module")
def places() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="realfork-fuzz-") as tmp:
        _make_places(tmp)
        yield tmp


@_fast(200)
@given(seed=SEEDS)
def test_command_lines_work_or_fail_in_one_line_with_status_2(seed: int, places: str) -> None:
    check_cli(command_line(random.Random(seed), places))


# -- counting, outside pytest -----------------------------------------------------------


def _count(kind: str, make: Callable[[random.Random], Any], check: Callable[[Any], None],
           n: int) -> tuple[int, int, int]:
    def alarm(signum: int, frame: object) -> None:
        raise TimeoutError

    signal.signal(signal.SIGALRM, alarm)
    tracebacks = other = hangs = 0
    for i in range(n):
        value = make(random.Random(f"{kind}:{i}"))
        signal.alarm(5)
        try:
            check(value)
        except TimeoutError:
            hangs += 1
        except AssertionError:  # a wrong status, or not exactly one short line
            other += 1
            if os.environ.get("FUZZ_VERBOSE"):
                traceback.print_exc(limit=1)
        except Exception:  # escaped: the user would see a traceback
            tracebacks += 1
            if os.environ.get("FUZZ_VERBOSE"):
                traceback.print_exc(limit=2)
        finally:
            signal.alarm(0)
    return tracebacks, other, hangs


def main(n: int) -> None:
    import resource

    global WITH_ZERO
    WITH_ZERO = True
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    with tempfile.TemporaryDirectory(prefix="realfork-fuzz-") as tmp:
        _make_places(tmp)
        for kind, make, check in (("text", program_text, check_text),
                                  ("msgpack", program_msgpack, check_msgpack),
                                  ("cli", lambda r: command_line(r, tmp), check_cli)):
            tracebacks, other, hung = _count(kind, make, check, n)
            print(f"{kind:8} inputs {n}  tracebacks {tracebacks}  "
                  f"wrong status or not one short line {other}  hangs {hung}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
