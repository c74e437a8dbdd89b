"""``realfork bugs``: list the catalogue of seeded kernel bugs
(``realfork.verify.bugs``)."""

from __future__ import annotations

import argparse

from .errors import BadInput
from .verify.bugs import BUGS, NAMES, describe_stress

__all__ = ["BUGS_HELP", "add_bugs_parser", "bugs_command"]


BUGS_HELP = """List the catalogue of seeded kernel bugs: each one's name, origin, the
finding it must produce, and (with --verbose) its description, expected signature and
the stress campaign that finds it (run it with: realfork stress --bug NAME ...)."""


def add_bugs_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bugs", help="list the seeded kernel bugs (--bug NAME)",
                       description=BUGS_HELP)
    b.add_argument("--verbose", "-v", action="store_true",
                   help="also the description, signature and stress campaign of each")
    b.add_argument("names", nargs="*", metavar="NAME", help="only these bugs")


def bugs_command(args: argparse.Namespace) -> int:
    names = args.names or list(NAMES)
    for n in names:
        if n not in BUGS:
            raise BadInput(f"unknown bug {n!r} (known: {', '.join(NAMES)})")
    width = max(len(n) for n in names)
    for n in names:
        b = BUGS[n]
        print(f"{b.name:<{width}}  {b.kind:<10} {b.origin:<16} {b.description}")
        if args.verbose:
            print(f"    where:     {b.where}")
            print(f"    signature: {b.signature}")
            print(f"    detector:  {b.detector}")
            print(f"    stress:    realfork stress --bug {b.name} "
                  f"{describe_stress(b.stress)}")
    return 0
