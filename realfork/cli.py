"""The ``realfork`` command line.

Exit status: 0 clean; 1 a bug was found (deadlock, panic, invariant
violation); 2 bad usage or bad input (one line on stderr, no traceback);
3 the machine could not give the resources asked for.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import TYPE_CHECKING, NoReturn

from .errors import BadInput, ResourceError
from .top.command import add_top_parser, top_command

if TYPE_CHECKING:
    from .kernel.params import KernelParams

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
    from .kernel.bugs import add_bugs_parser

    add_bugs_parser(sub)
    return p


STRESS_HELP = """Hammer a kernel with concurrent stressors, check it while it runs, and
report findings (deduplicated, saved with a reproducer) and metrics.

With no stressor options, one instance of every stressor runs for 30 s.

Exit status: 0 clean; 1 a finding (deadlock, hang, panic, lock-order
inversion, invariant violation); 2 bad usage or bad input; 3 the machine
could not give the resources asked for."""


def add_stress_parser(sub: argparse._SubParsersAction) -> None:
    from .stress.stressors import STRESSORS

    s = sub.add_parser("stress", help="run the stress tester", description=STRESS_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = s.add_argument_group("stressors (instances of each; default: one of every stressor)")
    g.add_argument("--all", type=int, default=None, metavar="N",
                   help="N instances of every stressor")
    for name, st in STRESSORS.items():
        g.add_argument(f"--{name}", type=int, default=None, metavar="N",
                       help=f"{st.help} (bogo op: {st.op_probe})")
    o = s.add_argument_group("stressor options")
    for name, st in STRESSORS.items():
        for opt, default in st.options.items():
            o.add_argument(f"--{name}-{opt.replace('_', '-')}", type=int, default=None,
                           metavar="N", dest=f"opt__{name}__{opt}",
                           help=f"(default {default})")
    s.add_argument("--timeout", type=_positive_float, default=None, metavar="S",
                   help="seconds of stress (default 30)")
    s.add_argument("--ops", type=int, default=0, metavar="N",
                   help="stop each stressor once it has done N bogo ops")
    s.add_argument("--check-interval", type=float, default=5.0, metavar="S",
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
    p.add_argument("--backend", choices=("threads", "processes"), default="threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nproc", type=_positive_int, default=None, metavar="N")
    p.add_argument("--maxlwps", type=_positive_int, default=None, metavar="N")
    p.add_argument("--maxpid", type=_positive_int, default=None, metavar="N")
    p.add_argument("--maxup", type=_positive_int, default=None, metavar="N")
    p.add_argument("--ncpus", type=_positive_int, default=None, metavar="N")
    p.add_argument("--deadlock-timeout", type=_positive_float, default=None, metavar="S")
    p.add_argument("--probe-capacity", type=_positive_int, default=None, metavar="N",
                   help="records in the probe ring (more if a run reports probes dropped)")
    p.add_argument("--faults", action="append", default=[], metavar="SPEC",
                   help="fault point, e.g. as_dup:nth=1:errno=ENOMEM (repeatable)")
    p.add_argument("--bug", action="append", default=[], metavar="NAME",
                   help="switch on a catalogued kernel bug (repeatable)")
    p.add_argument("--lockdep", choices=("off", "warn", "panic"), default=None,
                   help="the lock-order validator (default warn)")
    p.add_argument("--noise", choices=("off", "contest", "pct"), default=None,
                   help="schedule noise at every lock operation (default off)")
    p.add_argument("--noise-prob", type=float, default=None, metavar="P",
                   help="chance that a noise point delays its thread (default 0.05)")
    p.add_argument("--noise-sleep-us", type=int, default=None, metavar="US",
                   help="longest noise delay in microseconds (default 200)")
    p.add_argument("--noise-seed", type=int, default=None, metavar="N",
                   help="seed of the noise (default: --seed)")


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
    from .user.codec import from_msgpack
    from .user.parser import parse

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror}") from None
    if data[:1] and (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF)):  # a msgpack map
        return from_msgpack(data)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise BadInput(f"{path} is neither program text nor msgpack") from None
    try:
        return parse(text)
    except BadInput as e:
        raise BadInput(f"{path}: {e}") from None


def _run(args: argparse.Namespace) -> int:
    import json

    import msgpack

    import realfork

    from .kernel.check import InvariantViolation

    program = read_program(args.file)
    with realfork.boot(**boot_params(args)) as system:
        result = system.run(program, timeout=args.timeout)  # type: ignore[arg-type]
        inversions = [] if system.dom.closed else system.dom.lockdep_reports()
        violation = None
        if result.report is None:
            try:
                system.check()
            except InvariantViolation as e:
                violation = e
    if args.trace:
        with open(args.trace, "wb") as f:
            f.write(msgpack.packb([e.to_dict() for e in result.probes]))
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
            from .kernel.bugs import bugs_command

            return bugs_command(args)
    except BadInput as e:
        print(f"realfork: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ResourceError as e:
        print(f"realfork: error: {e}", file=sys.stderr)
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
