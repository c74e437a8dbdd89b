"""realfork: the illumos fork subsystem as a real concurrent program.

Run realfork COMMAND --help for the options of each command.

Exit status: 0 clean; 1 a bug was found (deadlock, panic, invariant
violation); 2 bad usage or bad input (one line on stderr, no traceback);
3 the machine could not give the resources asked for.
"""

# The dispatcher: the top parser is built from each subcommand's own
# add_<name>_parser, main runs its <name>_command and maps exceptions to exit
# statuses.  Shared plumbing (parser class, number checks, boot options, exit
# statuses) is in realfork.cmdline; nothing but __main__ and the console
# script imports this module.

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable

from .bugs_command import add_bugs_parser, bugs_command
from .cmdline import EXIT_CLEAN, EXIT_RESOURCES, EXIT_USAGE, AddParser, one_line
from .cmdline import build_parser as _build
from .commands import (
    add_demo_parser,
    add_list_parser,
    add_report_parser,
    add_run_parser,
    demo_command,
    list_command,
    report_command,
    run_command,
)
from .errors import BadInput, ResourceError
from .stress.command import add_stress_parser, stress_command
from .stress.minimize import add_minimize_parser, minimize_command
from .stress.replay import add_replay_parser, replay_command
from .top.command import add_top_parser, top_command

Command = Callable[[argparse.Namespace, "list[str] | None"], int]


# Every subcommand, in the order ``realfork --help`` lists them: the function
# that adds its parser, and how it runs (given the parsed options and the
# whole command line).  The lambdas look their command up when they run, so
# a test may replace one (``mock.patch("realfork.cli.top_command", ...)``).
SUBCOMMANDS: dict[str, tuple[AddParser, Command]] = {
    "demo": (add_demo_parser, lambda args, argv: demo_command(args)),
    "top": (add_top_parser, lambda args, argv: top_command(args)),
    "run": (add_run_parser, lambda args, argv: run_command(args)),
    "report": (add_report_parser, lambda args, argv: report_command(args)),
    "list": (add_list_parser, lambda args, argv: list_command(args)),
    "stress": (add_stress_parser, lambda args, argv: stress_command(args, argv)),
    "replay": (add_replay_parser, lambda args, argv: replay_command(args)),
    "minimize": (add_minimize_parser, lambda args, argv: minimize_command(args)),
    "bugs": (add_bugs_parser, lambda args, argv: bugs_command(args)),
}


def build_parser(raise_errors: bool = False) -> argparse.ArgumentParser:
    """The whole command line; with ``raise_errors``, errors raise ``BadInput``."""
    return _build(__doc__, [add for add, _ in SUBCOMMANDS.values()], raise_errors)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every shutdown() on the way out


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # bad usage (one line already printed), or --help
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    signal.signal(signal.SIGTERM, _terminate)
    try:
        entry = SUBCOMMANDS.get(args.command)
        if entry is None:
            return EXIT_USAGE
        return entry[1](args, argv)
    except BadInput as e:
        print(f"realfork: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except ResourceError as e:
        print(f"realfork: error: {one_line(e)}", file=sys.stderr)
        return EXIT_RESOURCES
    except KeyboardInterrupt:
        print("realfork: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_CLEAN


if __name__ == "__main__":
    sys.exit(main())
