"""Command-line plumbing shared by every ``realfork`` subcommand and the pytest plugin.

What lives here: the exit statuses, the argparse parser class (one short error
line, realfork's exit status), the number checks options are typed with, the
boot options every kernel-booting subcommand takes (and their way back from a
``KernelParams`` to a command line, for reproducers), and the builder of a
top-level parser from subcommands' own ``add_<name>_parser`` functions.

Each subcommand owns its parser and its command (``add_<name>_parser(sub)`` and
``<name>_command(args)`` in its own module); ``realfork.cli`` only assembles
them and maps exceptions to exit statuses.  This module imports nothing above
the kernel's parameter table, and that lazily: every ``realfork`` command
builds its parser.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import BadInput

if TYPE_CHECKING:
    from .kernel.params import KernelParams

EXIT_CLEAN, EXIT_FOUND, EXIT_USAGE, EXIT_RESOURCES = 0, 1, 2, 3

AddParser = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
"""A subcommand's ``add_<name>_parser``: adds its parser to the subparsers given."""


class Parser(argparse.ArgumentParser):
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


class RaisingParser(Parser):
    """A ``Parser`` whose errors raise ``BadInput``."""

    raise_errors = True


def build_parser(description: str, adders: Iterable[AddParser],
                 raise_errors: bool = False) -> argparse.ArgumentParser:
    """A ``realfork`` parser with the subcommands ``adders`` add, in that order;
    the subcommand's name is ``args.command``.  With ``raise_errors``, errors
    raise ``BadInput``."""
    # an ArgumentParser class, so that the subparsers action is the
    # _SubParsersAction[ArgumentParser] that AddParser functions take
    cls: type[argparse.ArgumentParser] = RaisingParser if raise_errors else Parser
    p = cls(prog="realfork", description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=cls,
                           help="the command to run (realfork COMMAND --help lists its options)")
    for add in adders:
        add(sub)
    return p


def one_line(e: Exception) -> str:
    """An error's message as one line of bounded length (each echoed token is
    already cut where it is quoted; this is the last guard)."""
    from .safeio import shorten

    return shorten(" ".join(str(e).split()), 400)


# -- number checks ------------------------------------------------------------------

# Bounds of the options that are not boot parameters (those are in
# realfork.kernel.params.LIMITS): durations in seconds, counts.
MAX_SECONDS = 7 * 86400  # the longest --timeout, --check-interval, --budget
MAX_COUNT = 10 ** 9  # the largest count an option takes (--ops, --increments, --times)


def _shown(text: str) -> str:
    from .safeio import shorten

    return repr(shorten(text, 40))


def float_in(low: float, high: float, what: str = "a number of seconds",
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


def int_in(low: int, high: int, what: str = "a whole number") -> Callable[[str], int]:
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


positive_float = float_in(0.0, MAX_SECONDS, low_open=True)
positive_int = int_in(1, MAX_COUNT)


def limit(name: str, what: str | None = None) -> Callable[[str], Any]:
    """The argparse type of boot parameter ``name``, with the bounds ``realfork.boot`` checks."""
    from .kernel.params import LIMITS

    low, high = LIMITS[name]
    if isinstance(low, float) or isinstance(high, float):
        return float_in(float(low), float(high), what or "a number of seconds")
    return int_in(int(low), int(high), what or "a whole number")


def bounds(name: str) -> str:
    """Boot parameter ``name``'s range as help text shows it, e.g. ``9..999,999``."""
    from .kernel.params import LIMITS

    low, high = LIMITS[name]
    return f"{low:,}..{high:,}" if isinstance(low, int) else f"{low:g}..{high:g}"


# -- boot options -------------------------------------------------------------------


def add_boot_options(p: argparse.ArgumentParser, defaults: Mapping[str, Any] | None = None
                     ) -> None:
    """The options of ``realfork.boot``'s parameters (``boot_params`` reads them back).

    Each help line gives the default and the range (``LIMITS``, which
    ``realfork.boot`` checks).  The default is ``KernelParams``'s (or the noise
    configuration's) unless ``defaults`` names the one the subcommand boots
    with instead; it only shows in the help, since an option left out is not
    passed to ``realfork.boot`` at all.
    """
    from types import SimpleNamespace

    from .kernel.params import RESERVED_PROCS, KernelParams
    from .kernel.profiles import PROFILES
    from .sync.noise import NoiseConfig

    d = SimpleNamespace(**{**KernelParams().to_dict(), **(defaults or {})})
    n = NoiseConfig()
    p.add_argument("--backend", choices=("threads", "processes"), default="threads",
                   help="what runs each lwp: an OS thread of this process, or an OS process "
                        f"of a pool (default {d.backend})")
    p.add_argument("--seed", type=limit("seed"), default=0,
                   help=f"seed of the run (default {d.seed}; a signed 64-bit integer, "
                        f"{bounds('seed')})")
    p.add_argument("--nproc", type=limit("nproc"), default=None, metavar="N",
                   help=f"process table slots (default {d.nproc:,}; {bounds('nproc')})")
    p.add_argument("--maxlwps", type=limit("maxlwps"), default=None, metavar="N",
                   help=f"lwps of all processes together (default {d.maxlwps:,}; "
                        f"{bounds('maxlwps')})")
    p.add_argument("--maxpid", type=limit("maxpid"), default=None, metavar="N",
                   help=f"pids wrap on reaching N, the largest is N-1 (default {d.maxpid:,}; "
                        f"{bounds('maxpid')}; at least "
                        "--nproc)")
    p.add_argument("--maxup", type=limit("maxup"), default=None, metavar="N",
                   help=f"processes per user (default --nproc minus {RESERVED_PROCS}, the "
                        f"slots only root may use; {bounds('maxup')})")
    p.add_argument("--ncpus", type=limit("ncpus"), default=None, metavar="N",
                   help=f"CPUs (default {d.ncpus}; {bounds('ncpus')})")
    p.add_argument("--deadlock-timeout", type=limit("deadlock_timeout"), default=None,
                   metavar="S",
                   help=f"seconds a wait may last before it is reported as a deadlock "
                        f"(default {d.deadlock_timeout:g}; {bounds('deadlock_timeout')})")
    p.add_argument("--probe-capacity", type=limit("probe_capacity"), default=None,
                   metavar="N",
                   help=f"records in the probe ring (default {d.probe_capacity:,}; "
                        f"{bounds('probe_capacity')}; more if a run reports probes dropped)")
    p.add_argument("--faults", action="append", default=[], metavar="SPEC",
                   help="fault point, e.g. as_dup:nth=1:errno=ENOMEM (repeatable; default "
                        "none)")
    p.add_argument("--kernel", choices=tuple(PROFILES), default=None,
                   help=f"the kernel profile: 2006 is the seed as written, fixed adds the "
                        f"later illumos fixes (default {d.kernel}; docs/profiles.md)")
    p.add_argument("--bug", action="append", default=[], metavar="NAME",
                   help="switch on a catalogued kernel bug (repeatable; default none; "
                        "realfork bugs lists them)")
    p.add_argument("--lockdep", choices=("off", "warn", "panic"), default=None,
                   help=f"the lock-order validator (default {d.lockdep})")
    p.add_argument("--noise", choices=("off", "contest", "pct"), default=None,
                   help=f"schedule noise at every lock operation (default {n.mode}; contest "
                        "if another --noise option is given)")
    p.add_argument("--noise-prob", type=limit("noise_prob", "a probability"), default=None,
                   metavar="P",
                   help=f"chance that a noise point delays its thread (default {n.prob:g}; "
                        f"{bounds('noise_prob')})")
    p.add_argument("--noise-sleep-us", type=limit("noise_sleep_us"), default=None,
                   metavar="US",
                   help=f"longest noise delay in microseconds (default {n.sleep_us}; "
                        f"{bounds('noise_sleep_us')})")
    p.add_argument("--noise-seed", type=limit("noise_seed"), default=None, metavar="N",
                   help=f"seed of the noise (default: --seed; {bounds('noise_seed')})")


def boot_params(args: argparse.Namespace) -> dict:
    """The ``realfork.boot`` keyword arguments of the boot options in ``args``."""
    from .kernel.faults import parse_fault_specs

    params: dict = {"backend": args.backend, "seed": args.seed,
                    "faults": parse_fault_specs(args.faults), "bugs": list(args.bug)}
    for k in ("nproc", "maxlwps", "maxpid", "maxup", "ncpus", "deadlock_timeout", "lockdep",
              "probe_capacity", "kernel"):
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
    if p.kernel != d.kernel:
        opts.append(f"--kernel {p.kernel}")
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


__all__ = ["EXIT_CLEAN", "EXIT_FOUND", "EXIT_RESOURCES", "EXIT_USAGE", "MAX_COUNT",
           "MAX_SECONDS", "AddParser", "Parser", "RaisingParser", "add_boot_options",
           "boot_options", "boot_params", "bounds", "build_parser", "float_in", "int_in",
           "limit", "one_line", "positive_float", "positive_int"]
