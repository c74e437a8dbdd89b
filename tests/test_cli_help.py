"""Every ``--help`` explains every option, in plain text.

Each subcommand's help is run through the parser itself (``realfork --help``
and ``realfork NAME --help``, no process started): every option and
positional argument has a help line, no RST or Markdown markup shows, and the
boot options state their default and the range ``realfork.boot`` checks.
"""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from realfork.cli import build_parser
from realfork.cmdline import bounds

pytestmark = pytest.mark.timeout(60)

# boot option -> its parameter in realfork.kernel.params.LIMITS
BOOT_LIMITS = {"--seed": "seed", "--nproc": "nproc", "--maxlwps": "maxlwps",
               "--maxpid": "maxpid", "--maxup": "maxup", "--ncpus": "ncpus",
               "--deadlock-timeout": "deadlock_timeout", "--probe-capacity": "probe_capacity",
               "--noise-prob": "noise_prob", "--noise-sleep-us": "noise_sleep_us",
               "--noise-seed": "noise_seed"}
BOOTING = ("run", "stress")  # the subcommands that take the boot options


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = parser._subparsers._group_actions[0]  # type: ignore[union-attr]
    return dict(sub.choices)  # type: ignore[attr-defined]


COMMANDS = sorted(_subparsers(build_parser()))


def _parser(command: str | None) -> argparse.ArgumentParser:
    top = build_parser()
    return top if command is None else _subparsers(top)[command]


def _help_text(command: str | None) -> str:
    """What ``realfork [command] --help`` prints, through the parser itself."""
    out = io.StringIO()
    argv = ["--help"] if command is None else [command, "--help"]
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 0
    return out.getvalue()


def test_every_command_is_checked() -> None:
    assert {"demo", "top", "run", "report", "list", "stress", "replay", "minimize",
            "bugs"} <= set(COMMANDS)


@pytest.mark.parametrize("command", [None, *COMMANDS], ids=lambda c: c or "realfork")
def test_every_option_has_a_help_line(command: str | None) -> None:
    missing = [a.option_strings[0] if a.option_strings else a.dest
               for a in _parser(command)._actions
               if not a.help or a.help == argparse.SUPPRESS or not a.help.strip()]
    assert not missing, f"options without help in {command or 'realfork'}: {missing}"


@pytest.mark.parametrize("command", [None, *COMMANDS], ids=lambda c: c or "realfork")
def test_help_shows_no_markup(command: str | None) -> None:
    text = _help_text(command)
    assert text.strip()
    assert "`" not in text, text
    assert "**" not in text, text


@pytest.mark.parametrize("command", BOOTING)
def test_boot_options_state_their_default_and_range(command: str) -> None:
    actions = {s: a for a in _parser(command)._actions for s in a.option_strings}
    for option, name in BOOT_LIMITS.items():
        text = actions[option].help or ""
        assert "default" in text, (option, text)
        assert bounds(name) in text, (option, text)
    for option in ("--backend", "--lockdep", "--noise", "--faults", "--bug"):
        assert "default" in (actions[option].help or ""), option
