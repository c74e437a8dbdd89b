"""The ``realfork top`` command line (kept free of heavy imports: the parser
is built for every ``realfork`` command)."""

from __future__ import annotations

import argparse

from ..cmdline import float_in, int_in  # the command line's own number checks

SORT_KEYS = ("cpu", "pid", "lwps", "rss")
DEFAULT_INTERVAL = 1.0
MAX_INTERVAL = 60.0  # seconds: --once waits one interval before it prints
MAX_ROWS = 10_000
LOCK_PERIOD = 0.1  # seconds between scans for lock waits

TOP_HELP = """Watch a running kernel: a live dashboard refreshing in place.

It attaches to kernel NAME (or to your one running kernel), samples it every
--interval seconds and redraws until the kernel goes away or you press Ctrl-C.
It only reads: no kernel lock is taken, the probe ring is left to the
supervisor, nothing is written, and leaving only unmaps.

Exit status: 0 clean; 2 no such kernel, another user's kernel, or bad usage."""


def add_top_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("top", help="live dashboard of a running kernel",
                       description=TOP_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("name", nargs="?", metavar="NAME",
                   help="kernel name (default: your one running kernel)")
    t.add_argument("--interval", type=float_in(0.0, MAX_INTERVAL, low_open=True),
                   default=DEFAULT_INTERVAL, metavar="S",
                   help=f"seconds between refreshes (default {DEFAULT_INTERVAL:g}, at most "
                        f"{MAX_INTERVAL:g}); with --once, the window rates are measured over")
    t.add_argument("--sort", choices=SORT_KEYS, default="cpu",
                   help="order of the process table (default cpu)")
    t.add_argument("--once", action="store_true", help="print one snapshot and exit")
    t.add_argument("--json", action="store_true", help="with --once: the snapshot as JSON")
    t.add_argument("--rows", type=int_in(1, MAX_ROWS), default=None, metavar="N",
                   help=f"process rows shown (default: what fits; 1..{MAX_ROWS:,})")


def top_command(args: argparse.Namespace) -> int:
    from .dashboard import top_main

    return top_main(args)
