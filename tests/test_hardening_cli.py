"""The command line and boot parameters refuse what they cannot do: up front, in one line.

Each test is a case that once gave a traceback, a hang or a wrong exit status.
No kernel is booted: ``realfork.boot`` and the stress runner are replaced by
stubs that fail the test if anything gets that far when it should not.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import realfork
from realfork.cli import build_parser, main
from realfork.errors import BadInput
from realfork.kernel.params import make_params

pytestmark = pytest.mark.timeout(120)
EXAMPLE = str(Path(__file__).resolve().parent.parent / "examples" / "signals.rf")


class Booted(Exception):
    pass


def _boot(**params: Any) -> Any:
    raise Booted


class _Run:
    def __init__(self, *a: Any, **k: Any) -> None:
        raise Booted


@contextlib.contextmanager
def no_boot() -> Iterator[None]:
    with mock.patch("realfork.boot", _boot), \
            mock.patch("realfork.stress.command.StressRun", _Run), \
            mock.patch("realfork.cli.top_command", _boot):
        yield


def cli(*argv: str) -> tuple[int | str, str]:
    """Status of ``main(argv)`` ("booted" if it got to booting) and its stderr."""
    err = io.StringIO()
    with no_boot(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status: int | str = main(list(argv))
        except Booted:
            status = "booted"
    return status, err.getvalue()


def refused(*argv: str) -> str:
    status, err = cli(*argv)
    assert status == 2, (status, err)
    assert err.count("\n") == 1 and len(err) < 500, err
    return err


def refused_in_child(*argv: str) -> str:
    """``refused`` in a child process whose memory is capped at 2 GiB, for inputs
    (``/dev/zero``) that an unbounded read would turn into all of the machine's."""
    import os
    import resource
    import subprocess
    import sys

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    r = subprocess.run([sys.executable, "-m", "realfork", *argv], capture_output=True,
                       text=True, env=env, timeout=60, preexec_fn=cap)
    assert r.returncode == 2, (r.returncode, r.stderr[-500:])
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr[-500:]
    return r.stderr


# -- program text ------------------------------------------------------------------------


def test_a_huge_literal_is_bad_input_with_its_line() -> None:
    for lit in ("9" * 5000, "-" + "9" * 5000, "0x" + "f" * 5000, "9223372036854775808",
                "0x10000000000000000"):
        with pytest.raises(BadInput) as e:
            realfork.parse(f"main:\n    mov r1, {lit}\n    exit 0\n")
        assert str(e.value).startswith("line 2, column 13: ") and len(str(e.value)) < 200


def test_leading_zeros_and_the_widest_words_still_parse() -> None:
    p = realfork.parse("mov r1, " + "0" * 40 + "7\nmov r2, -9223372036854775808\n"
                       "mov r3, 0x7fffffffffffffff\nexit 0\n")
    assert [i.args[1].value for i in p.code[:3]] == [7, -(2 ** 63), 2 ** 63 - 1]


def test_a_long_token_is_cut_in_the_message() -> None:
    for text in ("x" * 100_000 + "\n", "mov r1, " + "y" * 100_000 + "\n",
                 "jmp " + "z" * 100_000 + "\n"):
        with pytest.raises(BadInput) as e:
            realfork.parse(text)
        assert len(str(e.value)) < 200, str(e.value)[:300]


# -- inputs ------------------------------------------------------------------------------


def test_run_of_a_device_or_fifo_is_refused_unread(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "fifo")
    for path in ("/dev/zero", str(tmp_path / "fifo"), str(tmp_path)):
        assert "program" in refused_in_child("run", path)


def test_a_job_file_device_is_refused() -> None:
    assert "cannot read job file" in refused_in_child("stress", "--job", "/dev/zero")


@pytest.mark.parametrize("line, word", [
    ("exec-chain 1000000000", "line 2"), ("forkk 1", "unknown setting"),
    ("help", "unknown setting"), ("timeout nan", "finite"), ("ti 3", "unknown setting"),
    ("noise-prob 2", "probability"),
])
def test_a_job_file_is_checked_line_by_line(tmp_path: Path, line: str, word: str) -> None:
    job = tmp_path / "j.job"
    job.write_text(f"fork 1\n{line}\n")
    assert word in refused("stress", "--job", str(job), "--quiet")


# -- numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["run", EXAMPLE, "--noise-seed", "18446744073709551616"],
    ["run", EXAMPLE, "--maxlwps", "8191"],
    ["run", EXAMPLE, "--seed", "99999999999999999999"],
    ["run", EXAMPLE, "--probe-capacity", str(1 << 24)],
    ["run", EXAMPLE, "--noise-sleep-us", "1000000"],
    ["run", EXAMPLE, "--timeout", "inf"],
    ["run", EXAMPLE, "--deadlock-timeout", "nan"],
    ["stress", "--check-interval", "nan"],
    ["stress", "--exec-chain", "1000000000"],
    ["stress", "--forkall-lwps", "1000000000"],
    ["stress", "--proc-hold-ms", "1000000000"],
    ["stress", "--fork", "9" * 5000],
    ["stress", "--ops", "-1"],
    ["top", "--interval", "inf"],
    ["top", "--rows", "0"],
])
def test_out_of_range_numbers_are_usage_errors_before_anything_runs(argv: list[str]) -> None:
    refused(*argv)


def test_a_seed_out_of_range_is_bad_input_not_a_resource() -> None:
    with pytest.raises(BadInput):
        make_params(seed=1 << 70)
    with pytest.raises(BadInput):
        make_params(noise={"mode": "contest", "seed": 1 << 64})
    with pytest.raises(BadInput):
        make_params(deadlock_timeout=float("nan"))


def test_the_command_line_and_the_api_share_their_bounds() -> None:
    from realfork.kernel.params import LIMITS

    flags = {"nproc": "--nproc", "maxlwps": "--maxlwps", "maxpid": "--maxpid",
             "ncpus": "--ncpus", "probe_capacity": "--probe-capacity",
             "deadlock_timeout": "--deadlock-timeout", "seed": "--seed"}
    parser = build_parser()
    for name, flag in flags.items():
        low, high = LIMITS[name]
        kw = {"maxpid": 999_999} if name == "nproc" else {}
        kw = {"nproc": 9} if name == "maxpid" else kw
        for v in (low, high):
            parser.parse_args(["run", "f", flag, str(v)])
            make_params(**{name: v}, **kw)
        step = 1 if isinstance(low, int) else low
        for v in (low - step, high + step):
            with pytest.raises(SystemExit):
                with contextlib.redirect_stderr(io.StringIO()):
                    parser.parse_args(["run", "f", flag, str(v)])
            with pytest.raises(BadInput):
                make_params(**{name: v}, **kw)


def test_every_stressor_option_shows_and_checks_its_range() -> None:
    from realfork.stress.stressors import STRESSORS, check_options

    text = build_parser()._subparsers._group_actions[0].choices["stress"].format_help()
    for name, st in STRESSORS.items():
        for opt, (low, high) in st.ranges.items():
            assert f"{low:,}..{high:,}" in text
            check_options(name, {opt: high} if opt != "sleepers" else {opt: 0})
            with pytest.raises(BadInput):
                check_options(name, {opt: high + 1})


def test_the_segment_has_room_for_maxlwps_max_with_both_backends() -> None:
    from realfork.api import WANT_IDLE
    from realfork.kernel.kernel import declare_kernel
    from realfork.kernel.params import MAXLWPS_MAX
    from realfork.machine.hosts import declare as declare_hosts
    from realfork.shm.segment import MAX_REGIONS, Layout
    from realfork.sync.domain import Substrate, validate_params

    def regions(maxlwps: int) -> int:
        p = make_params(maxlwps=maxlwps) if maxlwps <= MAXLWPS_MAX else None
        if p is None:
            p = make_params()
            object.__setattr__(p, "maxlwps", maxlwps)
        layout = Layout()
        Substrate.declare(layout, validate_params({"maxlwps": maxlwps}))
        declare_kernel(layout, p)
        declare_hosts(layout, p.nproc + WANT_IDLE + 4)
        return len(layout.specs)

    assert regions(MAXLWPS_MAX) <= MAX_REGIONS
    assert regions(8191) > MAX_REGIONS  # what --maxlwps 8191 used to meet at boot


# -- outputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--json", "--yaml", "--report"])
@pytest.mark.parametrize("where", ["/nonexistent/dir/out", "/proc/x", "DIR", "/etc/passwd/x"])
def test_stress_outputs_are_checked_before_booting(tmp_path: Path, flag: str,
                                                   where: str) -> None:
    path = str(tmp_path) if where == "DIR" else where
    refused("stress", "--fork", "1", "--quiet", "--findings", str(tmp_path / "f"), flag, path)


@pytest.mark.parametrize("where", ["/nonexistent/dir/f", "/proc/x", "/etc/passwd"])
def test_stress_findings_place_is_checked_before_booting(where: str) -> None:
    refused("stress", "--fork", "1", "--quiet", "--findings", where)


@pytest.mark.parametrize("where", ["/nonexistent/dir/t", "/proc/x", "DIR", "/dev/null"])
def test_run_trace_is_checked_before_booting(tmp_path: Path, where: str) -> None:
    refused("run", EXAMPLE, "--trace", str(tmp_path) if where == "DIR" else where)


def test_good_outputs_get_to_booting(tmp_path: Path) -> None:
    assert cli("run", EXAMPLE, "--trace", str(tmp_path / "t"))[0] == "booted"
    assert cli("stress", "--fork", "1", "--quiet", "--findings", str(tmp_path / "f"),
               "--json", str(tmp_path / "m.json"))[0] == "booted"


def test_run_writes_its_trace_by_replacing_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    trace = tmp_path / "trace"
    trace.symlink_to(victim)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", EXAMPLE, "--trace", str(trace), "--timeout", "20"]) in (0, 1)
    assert victim.read_text() == "keep" and not trace.is_symlink()


# -- echoes ------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["frobnicate" + "x" * 100_000],
    ["stress", "--fork", "x" * 100_000],
    ["stress", "--" + "y" * 100_000],
    ["run", "z" * 100_000],
    ["run", EXAMPLE, "--bug", "b" * 100_000],
    ["stress", "--lockdep", "l" * 100_000],
])
def test_echoed_tokens_are_cut(argv: list[str]) -> None:
    refused(*argv)
