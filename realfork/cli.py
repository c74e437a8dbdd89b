"""The ``realfork`` command line.

Exit status: 0 clean; 1 a bug was found (deadlock, panic, invariant
violation); 2 bad usage or bad input (one line on stderr, no traceback);
3 the machine could not give the resources asked for.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import NoReturn

from .errors import BadInput, ResourceError

EXIT_CLEAN, EXIT_FOUND, EXIT_USAGE, EXIT_RESOURCES = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="realfork", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    d = sub.add_parser("demo", help="run the substrate across two OS processes")
    d.add_argument("--deadlock", action="store_true",
                   help="also seed an ABBA deadlock and print its report (exit 1)")
    d.add_argument("--deadlock-timeout", type=_positive_float, default=3.0, metavar="S")
    d.add_argument("--increments", type=_positive_int, default=20_000, metavar="N")
    r = sub.add_parser("report", help="print the wait-for report of a running kernel")
    r.add_argument("--attach", required=True, metavar="NAME", help="kernel name (realfork-...)")
    sub.add_parser("list", help="list this user's running kernels")
    return p


def _report(name: str) -> int:
    from .sync.domain import Substrate

    dom = Substrate.attach(name)
    try:
        rep = dom.panic_report() or dom.report()
        print(rep)
        return EXIT_FOUND if rep.kind != "snapshot" or rep.cycles else EXIT_CLEAN
    finally:
        dom.shutdown()


def _list() -> int:
    import os

    from .shm.segment import Segment, creator_alive, list_segments

    for name, st in list_segments(os.geteuid()):
        try:
            seg = Segment.attach(name)
        except BadInput:
            continue
        try:
            state = "running" if creator_alive(seg) else "stale"
            print(f"{name}  pid {seg.header.creator_pid}  {st.st_size:,} bytes  {state}")
        finally:
            seg.unmap()
    return EXIT_CLEAN


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every shutdown() on the way out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args.deadlock, args.deadlock_timeout, args.increments)
        if args.command == "report":
            return _report(args.attach)
        if args.command == "list":
            return _list()
    except BadInput as e:
        print(f"realfork: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ResourceError as e:
        print(f"realfork: error: {e}", file=sys.stderr)
        return EXIT_RESOURCES
    except KeyboardInterrupt:
        print("realfork: interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
