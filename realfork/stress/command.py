"""``realfork stress``: its options, and from parsed options to a campaign, tables and
exit status."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from ..cmdline import (
    EXIT_CLEAN,
    EXIT_FOUND,
    MAX_COUNT,
    MAX_SECONDS,
    add_boot_options,
    boot_params,
    build_parser,
    float_in,
    int_in,
    positive_float,
)
from ..errors import BadInput
from ..safeio import check_output_path, shorten, write_replacing
from .config import KERNEL_DEFAULTS, MAX_INSTANCES, StressConfig, read_job_file
from .runner import StressResult, StressRun
from .stressors import STRESSORS, option_help

STRESS_HELP = """Hammer a kernel with concurrent stressors, check it while it runs, and
report findings (deduplicated, saved with a reproducer) and metrics.

With no stressor options, one instance of every stressor runs for 30 s.

Exit status: 0 clean; 1 a finding (deadlock, hang, panic, lock-order
inversion, invariant violation); 2 bad usage or bad input; 3 the machine
could not give the resources asked for."""


def add_stress_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("stress", help="run the stress tester", description=STRESS_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = s.add_argument_group("stressors (instances of each; default: one of every stressor)")
    instances = int_in(0, MAX_INSTANCES, "a number of instances")
    g.add_argument("--all", type=instances, default=None, metavar="N",
                   help=f"N instances of every stressor (0..{MAX_INSTANCES})")
    for name, st in STRESSORS.items():
        g.add_argument(f"--{name}", type=instances, default=None, metavar="N",
                       help=f"{st.help} (bogo op: {st.op_probe})")
    o = s.add_argument_group("stressor options")
    for name, st in STRESSORS.items():
        for opt in st.options:
            low, high = st.ranges[opt]
            o.add_argument(f"--{name}-{opt.replace('_', '-')}", type=int_in(low, high),
                           default=None, metavar="N", dest=f"opt__{name}__{opt}",
                           help=option_help(name, opt))
    s.add_argument("--timeout", type=positive_float, default=None, metavar="S",
                   help=f"seconds of stress (default 30; at most {MAX_SECONDS:,})")
    s.add_argument("--ops", type=int_in(0, MAX_COUNT), default=0, metavar="N",
                   help="stop each stressor once it has done N bogo ops")
    s.add_argument("--check-interval", type=float_in(0.0, MAX_SECONDS), default=5.0,
                   metavar="S",
                   help="pause and run the invariant checker every S seconds (0: only at "
                        "the end)")
    s.add_argument("--keep-going", action="store_true",
                   help="after a finding, record it and restart on a fresh kernel")
    s.add_argument("--swarm", type=float_in(0.0, MAX_SECONDS), default=None, metavar="S",
                   help="swarm testing: runs of at most S seconds, each on a fresh kernel "
                        "with a random half of the stressors and fault sites (default off)")
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
    add_boot_options(s, KERNEL_DEFAULTS)


def _stress_parser(raise_errors: bool = False) -> argparse.ArgumentParser:
    """A ``realfork`` parser that knows only ``stress`` (for job files): it parses a
    stress command line as the whole command line does."""
    return build_parser(STRESS_HELP, [add_stress_parser], raise_errors)


def config_from_args(args: argparse.Namespace) -> StressConfig:
    stressors: dict[str, int] = {}
    if args.all is not None:
        stressors = {name: args.all for name in STRESSORS}
    for name in STRESSORS:
        n = getattr(args, name)
        if n is not None:
            stressors[name] = n
    options: dict[str, dict[str, int]] = {}
    for key, v in vars(args).items():
        if key.startswith("opt__") and v is not None:
            _, name, opt = key.split("__")
            options.setdefault(name, {})[opt] = v
    kw: dict = {"options": options, "ops": args.ops, "seed": args.seed,
                "boot": boot_params(args), "check_interval": args.check_interval,
                "keep_going": args.keep_going, "swarm": args.swarm or 0.0}
    if stressors:
        kw["stressors"] = stressors
    if args.timeout is not None:
        kw["timeout"] = args.timeout
    return StressConfig(**kw)


def apply_job_file(args: argparse.Namespace, argv: list[str] | None) -> argparse.Namespace:
    """``args`` with the options of ``args.job`` under those of the command line.

    Each line is checked on its own, as the command line checks the same
    option (so an error names its line): its key must be a stress option
    spelt out in full, and its value must pass that option's check.
    """
    shown = shorten(args.job)
    checker = _stress_parser(raise_errors=True)
    group = checker._subparsers  # the subcommands' group: _stress_parser added one
    assert group is not None
    subcommands = group._group_actions[0]
    assert isinstance(subcommands, argparse._SubParsersAction)
    stress = subcommands.choices["stress"]
    known = stress._option_string_actions
    words: list[str] = []
    for n, line in read_job_file(args.job):
        key = line[0]
        where = f"job file {shown}, line {n}"
        if key not in known or key in ("-h", "--help", "--job"):
            raise BadInput(f"{where}: unknown setting {shorten(repr(key.lstrip('-')), 60)}")
        try:
            checker.parse_args(["stress", *line])
        except BadInput as e:
            raise BadInput(f"{where}: {e}") from None
        words += line
    rest = list(sys.argv[1:] if argv is None else argv)
    i = rest.index("stress")
    return _stress_parser().parse_args(rest[:i + 1] + words + rest[i + 1:])


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any kernel boots, outputs that could not be written at the end."""
    for path, what in ((args.json, "--json"), (args.yaml, "--yaml"), (args.report, "--report")):
        if path is not None:
            check_output_path(path, what)
    if args.findings is not None:
        _check_findings_parent(args.findings)


def _check_findings_parent(path: str) -> None:
    """The findings store's own check of its root (``check_root``), and what
    that leaves to the command line: no place under /proc, /sys or /dev, and a
    parent this user may write in when the directory is still to be made."""
    from .findings import check_root

    check_root(path)
    shown = shorten(path)
    absolute = os.path.abspath(path)
    for root in ("/proc", "/sys", "/dev"):
        if absolute == root or absolute.startswith(root + "/"):
            raise BadInput(f"--findings {shown}: refusing to write under {root}")
    parent = os.path.dirname(absolute) or "/"
    if not os.path.lexists(path) and not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"--findings {shown}: directory {shorten(parent)} is not writable")


def stress_command(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Run ``realfork stress``; ``argv`` is the whole command line (default
    ``sys.argv[1:]``), read again with a job file's options under it."""
    if args.job:
        args = apply_job_file(args, argv)
    cfg = config_from_args(args)
    check_outputs(args)
    progress = None
    if not args.quiet:
        tty = sys.stderr.isatty()

        def progress(line: str) -> None:
            if line.startswith("finding:"):
                print(("\r\033[K" if tty else "") + line, file=sys.stderr, flush=True)
            else:
                print(("\r\033[K" + line) if tty else line, end="" if tty else "\n",
                      file=sys.stderr, flush=True)

    run = StressRun(cfg, args.findings, progress)  # refuses a bad findings root first
    if progress is not None:
        print(f"realfork stress: {cfg.describe()}", file=sys.stderr, flush=True)
    from ..top.stresswatch import watch_stress

    with watch_stress(run, args.dashboard, bool(args.report)) as watch:
        result = run.run()
    if progress is not None and sys.stderr.isatty():
        print(file=sys.stderr)
    write_outputs(result, args)
    if args.report:
        watch.write_report(args.report, result_document(result),
                           f"realfork stress: {cfg.describe()}")
    print(format_result(result))
    if result.interrupted:
        # as a shell reports a command ended by the signal: 130 for SIGINT
        # (also a KeyboardInterrupt of unknown origin), 143 for SIGTERM
        return 128 + (result.signal or signal.SIGINT)
    return EXIT_FOUND if result.findings else EXIT_CLEAN


def write_outputs(result: StressResult, args: argparse.Namespace) -> None:
    from .render import to_yaml

    doc = result_document(result)
    if args.json:
        write_replacing(args.json, json.dumps(doc, indent=2) + "\n", "--json")
    if args.yaml:
        write_replacing(args.yaml, to_yaml(doc) + "\n", "--yaml")


def result_document(result: StressResult) -> dict:
    return {"config": result.config.to_dict(), "elapsed": round(result.elapsed, 3),
            "runs": result.runs, "kernels": result.kernels,
            "checks": {"while_running": result.checks, "skipped": result.checks_skipped},
            "metrics": result.metrics,
            "findings": [f.to_dict() for f in result.findings]}


def format_result(result: StressResult) -> str:
    from .render import format_tables

    lines = [format_tables(result.metrics)]
    lines.append(f"invariant checks while running: {result.checks} "
                 f"(skipped, no quiescent point: {result.checks_skipped})")
    if result.findings:
        lines.append(f"findings: {len(result.findings)}")
        for f in result.findings:
            lines.append(f"  [{f.id}] {f.signature}  (seen {f.count}x, seed {f.seed}, "
                         f"at {f.elapsed:.1f} s)")
    else:
        lines.append("findings: none")
    if result.interrupted:
        how = signal.Signals(result.signal).name if result.signal else "an interrupt"
        lines.append(f"interrupted by {how} after {result.elapsed:.1f} s "
                     f"(runs: {result.runs}; the kernel was stopped, checked and closed)")
    return "\n".join(lines)
