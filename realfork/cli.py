"""The ``realfork`` command line.

Exit status: 0 clean; 1 a bug was found (deadlock, panic, invariant
violation); 2 bad usage or bad input (one line on stderr, no traceback);
3 the machine could not give the resources asked for.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import BadInput, ResourceError
from .top.command import add_top_parser, top_command

if TYPE_CHECKING:
    from .kernel.params import KernelParams

EXIT_CLEAN, EXIT_FOUND, EXIT_USAGE, EXIT_RESOURCES = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse with realfork's exit status, one short error line and no usage text.

    With ``raise_errors`` (job files), an error raises ``BadInput`` instead of
    exiting, so the caller can say which line of which file it came from.
    """

    raise_errors = False

    def error(self, message: str) -> NoReturn:
        from .safeio import shorten

        message = " ".join(message.split())  # one line, whatever argparse quoted
        if self.raise_errors:
            raise BadInput(shorten(message, 200))
        self.exit(EXIT_USAGE, f"{self.prog}: error: {shorten(message, 200)}\n")


# Bounds of the options that are not boot parameters (those are in
# realfork.kernel.params.LIMITS): durations in seconds, counts.
MAX_SECONDS = 7 * 86400  # the longest --timeout, --check-interval, --budget
MAX_COUNT = 10 ** 9  # the largest count an option takes (--ops, --increments, --times)


def _shown(text: str) -> str:
    from .safeio import shorten

    return repr(shorten(text, 40))


def _float_in(low: float, high: float, what: str = "a number of seconds",
              low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (or (low, high])."""
    def check(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {_shown(text)}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number: {_shown(text)}")
        if v < low or (low_open and v == low) or v > high:
            side = "more than" if low_open else "at least"
            raise argparse.ArgumentTypeError(
                f"must be {what} {side} {low:g} and at most {high:g}, not {_shown(text)}")
        return v

    check.__name__ = "number"
    return check


def _int_in(low: int, high: int, what: str = "a whole number") -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high]."""
    def check(text: str) -> int:
        t = text.strip()
        if len(t.lstrip("+-").lstrip("0")) > 30 and t.lstrip("+-").isdigit():
            raise argparse.ArgumentTypeError(
                f"must be {what} between {low:,} and {high:,}, not a number of "
                f"{len(t):,} digits")
        try:
            v = int(t)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {_shown(text)}") from None
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(
                f"must be {what} between {low:,} and {high:,}, not {_shown(text)}")
        return v

    check.__name__ = "whole number"
    return check


def _limit(name: str, what: str | None = None) -> Callable[[str], Any]:
    """The argparse type of boot parameter ``name``, with the bounds ``realfork.boot`` checks."""
    from .kernel.params import LIMITS

    low, high = LIMITS[name]
    if isinstance(low, float) or isinstance(high, float):
        return _float_in(float(low), float(high), what or "a number of seconds")
    return _int_in(int(low), int(high), what or "a whole number")


_positive_float = _float_in(0.0, MAX_SECONDS, low_open=True)
_positive_int = _int_in(1, MAX_COUNT)


class _RaisingParser(_Parser):
    raise_errors = True


def build_parser(raise_errors: bool = False) -> argparse.ArgumentParser:
    """The whole command line; with ``raise_errors``, errors raise ``BadInput``."""
    cls = _RaisingParser if raise_errors else _Parser
    p = cls(prog="realfork", description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=cls)
    d = sub.add_parser("demo", help="run the substrate across two OS processes")
    d.add_argument("--deadlock", action="store_true",
                   help="also seed an ABBA deadlock and print its report (exit 1)")
    d.add_argument("--deadlock-timeout", type=_positive_float, default=3.0, metavar="S")
    d.add_argument("--increments", type=_positive_int, default=20_000, metavar="N")
    add_top_parser(sub)
    run = sub.add_parser("run", help="boot a kernel and run a program as init")
    run.add_argument("file", metavar="FILE", help="program: text (.rf) or msgpack")
    add_boot_options(run)
    run.add_argument("--timeout", type=_positive_float, default=None, metavar="S",
                     help="give up (and report a hang) after S seconds")
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    run.add_argument("--trace", metavar="FILE", help="write the probes to FILE (msgpack)")
    r = sub.add_parser("report", help="print the wait-for report of a running kernel")
    r.add_argument("--attach", required=True, metavar="NAME", help="kernel name (realfork-...)")
    sub.add_parser("list", help="list this user's running kernels")
    add_stress_parser(sub)
    from .stress.minimize import add_minimize_parser
    from .stress.replay import add_replay_parser

    add_replay_parser(sub)
    add_minimize_parser(sub)
    from .bugs_command import add_bugs_parser

    add_bugs_parser(sub)
    return p


STRESS_HELP = """Hammer a kernel with concurrent stressors, check it while it runs, and
report findings (deduplicated, saved with a reproducer) and metrics.

With no stressor options, one instance of every stressor runs for 30 s.

Exit status: 0 clean; 1 a finding (deadlock, hang, panic, lock-order
inversion, invariant violation); 2 bad usage or bad input; 3 the machine
could not give the resources asked for."""


def add_stress_parser(sub: argparse._SubParsersAction) -> None:
    from .stress.config import MAX_INSTANCES
    from .stress.stressors import STRESSORS, option_help

    s = sub.add_parser("stress", help="run the stress tester", description=STRESS_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = s.add_argument_group("stressors (instances of each; default: one of every stressor)")
    instances = _int_in(0, MAX_INSTANCES, "a number of instances")
    g.add_argument("--all", type=instances, default=None, metavar="N",
                   help=f"N instances of every stressor (0..{MAX_INSTANCES})")
    for name, st in STRESSORS.items():
        g.add_argument(f"--{name}", type=instances, default=None, metavar="N",
                       help=f"{st.help} (bogo op: {st.op_probe})")
    o = s.add_argument_group("stressor options")
    for name, st in STRESSORS.items():
        for opt in st.options:
            low, high = st.ranges[opt]
            o.add_argument(f"--{name}-{opt.replace('_', '-')}", type=_int_in(low, high),
                           default=None, metavar="N", dest=f"opt__{name}__{opt}",
                           help=option_help(name, opt))
    s.add_argument("--timeout", type=_positive_float, default=None, metavar="S",
                   help=f"seconds of stress (default 30; at most {MAX_SECONDS:,})")
    s.add_argument("--ops", type=_int_in(0, MAX_COUNT), default=0, metavar="N",
                   help="stop each stressor once it has done N bogo ops")
    s.add_argument("--check-interval", type=_float_in(0.0, MAX_SECONDS), default=5.0,
                   metavar="S",
                   help="pause and run the invariant checker every S seconds (0: only at "
                        "the end)")
    s.add_argument("--keep-going", action="store_true",
                   help="after a finding, record it and restart on a fresh kernel")
    s.add_argument("--findings", default="findings", metavar="DIR",
                   help="where findings are saved (default ./findings)")
    s.add_argument("--json", metavar="FILE", help="write the metrics as JSON")
    s.add_argument("--yaml", metavar="FILE", help="write the metrics as YAML")
    s.add_argument("--job", metavar="FILE", help="read options from a job file")
    s.add_argument("--quiet", action="store_true", help="no progress line")
    s.add_argument("--dashboard", action="store_true",
                   help="show the realfork top view of the running kernel during the run")
    s.add_argument("--report", metavar="FILE.html",
                   help="write a self-contained HTML report with charts and tables")
    add_boot_options(s)


def add_boot_options(p: argparse.ArgumentParser) -> None:
    from .kernel.params import LIMITS

    def bounds(name: str) -> str:
        low, high = LIMITS[name]
        return f"{low:,}..{high:,}" if isinstance(low, int) else f"{low:g}..{high:g}"

    p.add_argument("--backend", choices=("threads", "processes"), default="threads")
    p.add_argument("--seed", type=_limit("seed"), default=0,
                   help="seed of the run (a signed 64-bit integer)")
    p.add_argument("--nproc", type=_limit("nproc"), default=None, metavar="N",
                   help=f"process table slots ({bounds('nproc')})")
    p.add_argument("--maxlwps", type=_limit("maxlwps"), default=None, metavar="N",
                   help=f"lwps of all processes together ({bounds('maxlwps')})")
    p.add_argument("--maxpid", type=_limit("maxpid"), default=None, metavar="N",
                   help=f"largest pid ({bounds('maxpid')}; at least --nproc)")
    p.add_argument("--maxup", type=_limit("maxup"), default=None, metavar="N",
                   help=f"processes per user ({bounds('maxup')})")
    p.add_argument("--ncpus", type=_limit("ncpus"), default=None, metavar="N",
                   help=f"CPUs ({bounds('ncpus')})")
    p.add_argument("--deadlock-timeout", type=_limit("deadlock_timeout"), default=None,
                   metavar="S", help=f"seconds a wait may last ({bounds('deadlock_timeout')})")
    p.add_argument("--probe-capacity", type=_limit("probe_capacity"), default=None,
                   metavar="N",
                   help=f"records in the probe ring ({bounds('probe_capacity')}; more if a run "
                        "reports probes dropped)")
    p.add_argument("--faults", action="append", default=[], metavar="SPEC",
                   help="fault point, e.g. as_dup:nth=1:errno=ENOMEM (repeatable)")
    p.add_argument("--bug", action="append", default=[], metavar="NAME",
                   help="switch on a catalogued kernel bug (repeatable)")
    p.add_argument("--lockdep", choices=("off", "warn", "panic"), default=None,
                   help="the lock-order validator (default warn)")
    p.add_argument("--noise", choices=("off", "contest", "pct"), default=None,
                   help="schedule noise at every lock operation (default off)")
    p.add_argument("--noise-prob", type=_limit("noise_prob", "a probability"), default=None,
                   metavar="P",
                   help="chance that a noise point delays its thread (default 0.05; 0..1)")
    p.add_argument("--noise-sleep-us", type=_limit("noise_sleep_us"), default=None,
                   metavar="US",
                   help=f"longest noise delay in microseconds (default 200; "
                        f"{bounds('noise_sleep_us')})")
    p.add_argument("--noise-seed", type=_limit("noise_seed"), default=None, metavar="N",
                   help=f"seed of the noise (default: --seed; {bounds('noise_seed')})")


def boot_params(args: argparse.Namespace) -> dict:
    from .kernel.faults import parse_fault_specs

    params: dict = {"backend": args.backend, "seed": args.seed,
                    "faults": parse_fault_specs(args.faults), "bugs": list(args.bug)}
    for k in ("nproc", "maxlwps", "maxpid", "maxup", "ncpus", "deadlock_timeout", "lockdep",
              "probe_capacity"):
        v = getattr(args, k)
        if v is not None:
            params[k] = v
    noise: dict = {}
    for k, opt in (("mode", "noise"), ("prob", "noise_prob"), ("sleep_us", "noise_sleep_us"),
                   ("seed", "noise_seed")):
        v = getattr(args, opt)
        if v is not None:
            noise[k] = v
    if noise:
        noise.setdefault("mode", "contest")
        noise.setdefault("seed", args.seed & 0x7FFFFFFF)
        params["noise"] = noise
    return params


def boot_options(p: KernelParams) -> str:
    """The command-line options that boot a kernel like ``p`` (for reproducers)."""
    from .kernel.faults import format_fault_spec
    from .kernel.params import KernelParams as Defaults

    d = Defaults()
    opts = [f"--backend {p.backend}", f"--seed {p.seed}"]
    for k in ("nproc", "maxlwps", "maxpid", "maxup", "ncpus", "deadlock_timeout", "lockdep"):
        v = getattr(p, k)
        if v != getattr(d, k):
            opts.append(f"--{k.replace('_', '-')} {v:g}" if isinstance(v, float)
                        else f"--{k.replace('_', '-')} {v}")
    opts += [f"--faults {format_fault_spec(s, k)}" for s, k in p.faults.items()]
    opts += [f"--bug {b}" for b in p.bugs]
    noise = p.noise or {}
    if noise.get("mode", "off") != "off":
        opts.append(f"--noise {noise['mode']} --noise-prob {noise['prob']:g} "
                    f"--noise-sleep-us {noise['sleep_us']} --noise-seed {noise['seed']}")
    return " ".join(opts)


def read_program(path: str) -> object:
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


def _run(args: argparse.Namespace) -> int:
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


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every shutdown() on the way out


def _one_line(e: Exception) -> str:
    """An error's message as one line of bounded length (each echoed token is
    already cut where it is quoted; this is the last guard)."""
    from .safeio import shorten

    return shorten(" ".join(str(e).split()), 400)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # bad usage (one line already printed), or --help
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args.deadlock, args.deadlock_timeout, args.increments)
        if args.command == "top":
            return top_command(args)
        if args.command == "run":
            return _run(args)
        if args.command == "report":
            return _report(args.attach)
        if args.command == "list":
            return _list()
        if args.command == "stress":
            from .stress.command import stress_command

            return stress_command(args, argv)
        if args.command == "replay":
            from .stress.replay import replay_command

            return replay_command(args)
        if args.command == "minimize":
            from .stress.minimize import minimize_command

            return minimize_command(args)
        if args.command == "bugs":
            from .bugs_command import bugs_command

            return bugs_command(args)
    except BadInput as e:
        print(f"realfork: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except ResourceError as e:
        print(f"realfork: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_RESOURCES
    except KeyboardInterrupt:
        print("realfork: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_CLEAN
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
