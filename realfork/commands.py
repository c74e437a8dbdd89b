"""The small subcommands: ``realfork demo``, ``run``, ``report`` and ``list``.

Each is an ``add_<name>_parser(sub)`` and ``<name>_command(args)`` pair, as
every subcommand is (``realfork.cli`` assembles them).  Whatever a command
needs beyond the parser is imported when it runs.
"""

from __future__ import annotations

import argparse

from .cmdline import (
    EXIT_CLEAN,
    EXIT_FOUND,
    MAX_COUNT,
    MAX_SECONDS,
    add_boot_options,
    boot_params,
    positive_float,
    positive_int,
)
from .errors import BadInput

# -- realfork demo ----------------------------------------------------------------------

DEMO_HELP = """The synchronization substrate at work across two OS processes.

Part one: kernel threads in this OS process and in a second one increment a
counter in the shared segment under one kernel mutex and hand a token back and
forth through a condition variable.  Part two (--deadlock): two OS processes
take two locks in opposite orders; the deadline fires and the report names the
cycle.

Exit status: 0 clean; 1 the counter came out wrong or a kernel panicked, or
(--deadlock) the deadlock was reported."""


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="run the substrate across two OS processes",
                       description=DEMO_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--deadlock", action="store_true",
                   help="also seed an ABBA deadlock and print its report (exit 1)")
    d.add_argument("--deadlock-timeout", type=positive_float, default=3.0, metavar="S",
                   help=f"seconds a wait may last before the deadline reports it (default 3; "
                        f"at most {MAX_SECONDS:,})")
    d.add_argument("--increments", type=positive_int, default=20_000, metavar="N",
                   help=f"increments by each of the two counting threads (default 20,000; "
                        f"1..{MAX_COUNT:,})")


def demo_command(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.deadlock, args.deadlock_timeout, args.increments)


# -- realfork run -----------------------------------------------------------------------

RUN_HELP = """Boot a kernel, run the program in FILE as init until every process has
ended, check the kernel's invariants and print what happened.

Exit status: 0 clean; 1 a bug was found (deadlock, panic, invariant violation,
lock-order report); 2 bad usage or bad input; 3 the machine could not give the
resources asked for."""


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="boot a kernel and run a program as init",
                         description=RUN_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("file", metavar="FILE", help="program: text (.rf) or msgpack")
    add_boot_options(run)
    run.add_argument("--timeout", type=positive_float, default=None, metavar="S",
                     help=f"give up (and report a hang) after S seconds (default: no limit; "
                          f"at most {MAX_SECONDS:,})")
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    run.add_argument("--trace", metavar="FILE", help="write the probes to FILE (msgpack)")


def read_program(path: str) -> object:
    """The program in file ``path``: msgpack if it starts with a msgpack map, else text."""
    from .safeio import read_bounded, shorten
    from .user.codec import from_msgpack
    from .user.parser import MAX_TEXT_BYTES, parse

    data = read_bounded(path, MAX_TEXT_BYTES, "program")
    shown = shorten(path)
    if data[:1] and (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF)):  # a msgpack map
        try:
            return from_msgpack(data)
        except BadInput as e:
            raise BadInput(f"{shown}: {e}") from None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise BadInput(f"{shown} is neither program text nor msgpack") from None
    try:
        return parse(text)
    except BadInput as e:
        raise BadInput(f"{shown}: {e}") from None


def run_command(args: argparse.Namespace) -> int:
    import json

    import msgpack

    import realfork

    from .kernel.params import make_params
    from .safeio import check_output_path, write_replacing
    from .verify.check import InvariantViolation

    params = boot_params(args)
    make_params(**params)  # every parameter checked before the program is read
    program = read_program(args.file)
    if args.trace:
        check_output_path(args.trace, "--trace")  # before the run, not after it
    with realfork.boot(**params) as system:
        result = system.run(program, timeout=args.timeout)  # type: ignore[arg-type]
        inversions = [] if system.dom.closed else system.dom.lockdep_reports()
        violation = None
        if result.report is None:
            try:
                system.check()
            except InvariantViolation as e:
                violation = e
    if args.trace:
        write_replacing(args.trace, msgpack.packb([e.to_dict() for e in result.probes]),
                        "--trace")
    found = result.report is not None or violation is not None or bool(inversions)
    if args.json:
        doc = result.to_dict()
        doc["kernel"] = system.name
        doc["invariant_violations"] = violation.violations if violation else []
        doc["lock_order_reports"] = [r.text for r in inversions]
        print(json.dumps(doc))
    else:
        print(f"kernel {system.name}: init exited with status {result.status} "
              f"after {result.elapsed:.3f} s")
        c = result.counters
        print(f"  fork1 {c['sysfork']}  forkall {c['sysforkall']}  vfork {c['sysvfork']}  "
              f"fork failures {c['fork_fail']}  exec {c['nexec']}  exits {c['nexit']}  "
              f"lwps created {c['nlwp_create']}  system calls {c['syscalls']}  "
              f"probes {len(result.probes)} (dropped {c['probes_dropped']})")
        if result.killed:
            print(f"  killed at the end of the run: pids {result.killed}")
        if result.report is not None:
            print(result.report)
        if violation is not None:
            print(violation)
        for rep in inversions:
            print(rep.text)
    return EXIT_FOUND if found else EXIT_CLEAN


# -- realfork report --------------------------------------------------------------------


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("report", help="print the wait-for report of a running kernel")
    r.add_argument("--attach", required=True, metavar="NAME", help="kernel name (realfork-...)")


def report_command(args: argparse.Namespace) -> int:
    from .sync.domain import Substrate

    dom = Substrate.attach(args.attach)
    try:
        rep = dom.panic_report() or dom.report()
        print(rep)
        return EXIT_FOUND if rep.kind != "snapshot" or rep.cycles else EXIT_CLEAN
    finally:
        dom.shutdown()


# -- realfork list ----------------------------------------------------------------------


def add_list_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("list", help="list this user's running kernels")


def list_command(args: argparse.Namespace) -> int:
    import os

    from .shm import segment as sg

    # read from each file without mapping it; the pid is its creator's as seen
    # in the creator's PID namespace
    states = {sg.ALIVE: "running", sg.STALE: "stale", sg.LEGACY_ALIVE: "running (older realfork)",
              sg.LEGACY_STALE: "stale (older realfork)", sg.UNBORN: "incomplete"}
    for name, st in sg.list_segments(os.geteuid()):
        state, h = sg.probe(name)
        if state == sg.GONE or (state == sg.ALIVE and not h.magic):
            continue  # gone, or still booting
        print(f"{name}  pid {h.creator_pid}  {st.st_size:,} bytes  {states[state]}")
    return EXIT_CLEAN


__all__ = ["add_demo_parser", "add_list_parser", "add_report_parser", "add_run_parser",
           "demo_command", "list_command", "read_program", "report_command", "run_command"]
