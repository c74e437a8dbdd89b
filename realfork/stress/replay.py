"""``realfork replay DIR``: re-run a saved finding and say how often it reproduces.

A finding directory (``realfork stress`` saves one per signature, see
``findings.py``) holds the campaign's settings and the seed of the run that
found it.  One *attempt* re-runs exactly that campaign
(``run_stress(StressConfig.from_dict(config))``, never ``keep_going``) and
stops at the first finding; it *reproduces* when a finding with the same
signature appears.  A different finding is reported as such, with its
signature, and does not count.  The budget of an attempt is the saved
``timeout`` unless one is given.

    $ realfork replay findings/3b743ccb2ec8 -n 3
    replay 3b743ccb2ec8 (lock-order): lock order: p_lock/1 -> p_lock (relvm) against ...
    settings: vfork x1; 10 s; backend threads, seed 0, noise off, bugs relvm_parent_first
    attempt 1/3: reproduced after 0.13 s
    attempt 2/3: reproduced after 0.12 s
    attempt 3/3: reproduced after 0.12 s
    reproduced 3/3

Exit status: 0 it reproduced at least once; 1 it never did; 2 bad usage or
``DIR`` is not a finding; 3 the machine could not give the resources asked for.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..cmdline import positive_float, positive_int
from ..errors import BadInput
from ..safeio import shorten
from .config import StressConfig
from .findings import Finding, load_finding, one_line

DEFAULT_TIMES = 5
EXIT_REPRODUCED, EXIT_NOT_REPRODUCED = 0, 1


@dataclass
class Attempt:
    """One re-run of a finding's campaign."""

    reproduced: bool
    signature: str | None  # the finding's own when reproduced, else the first other one
    detected: float | None  # seconds into the run when that finding was made
    elapsed: float  # wall-clock seconds of the whole attempt (boot to shutdown)
    finding: Finding | None = None  # the reproducing finding (report, program)

    @property
    def outcome(self) -> str:
        """``reproduced``, ``different`` (another finding) or ``nothing``."""
        if self.reproduced:
            return "reproduced"
        return "different" if self.signature is not None else "nothing"


@dataclass
class ReplayResult:
    finding: Finding  # what was replayed
    config: StressConfig  # the settings each attempt ran with
    attempts: list[Attempt] = field(default_factory=list)
    program_matches: bool | None = None  # saved program.rfm == the one composed now

    @property
    def times(self) -> int:
        return len(self.attempts)

    @property
    def reproduced(self) -> int:
        return sum(a.reproduced for a in self.attempts)

    @property
    def detection_times(self) -> list[float]:
        return [a.detected for a in self.attempts if a.reproduced and a.detected is not None]

    def summary(self) -> str:
        return f"reproduced {self.reproduced}/{self.times}"


def replay_config(finding: Finding, where: object = "finding",
                  timeout: float | None = None) -> StressConfig:
    """The settings to re-run ``finding`` with: its saved config and seed,
    stopping at the first finding, with ``timeout`` if given."""
    shown = one_line(shorten(str(where)))
    if not isinstance(finding.config, dict):
        raise BadInput(f"{shown}: the saved settings are not a table")
    d = dict(finding.config)
    d["seed"] = finding.seed
    d["keep_going"] = False
    if timeout is not None:
        d["timeout"] = timeout
    try:
        return StressConfig.from_dict(d)
    except BadInput as e:
        raise BadInput(one_line(f"{shown}: bad saved settings: {e}")) from None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError,
            RecursionError) as e:
        raise BadInput(one_line(f"{shown}: damaged saved settings: "
                                f"{shorten(str(e) or type(e).__name__)}")) from None


def composed_program(cfg: StressConfig, where: object = None) -> bytes:
    """The init program (msgpack) a campaign with ``cfg`` runs; BadInput (naming
    ``where``, the finding, if given) when the settings compose none."""
    from ..user.codec import to_msgpack
    from ..user.parser import parse
    from .stressors import compose

    try:
        return to_msgpack(parse(compose(cfg.instances(), cfg.seed)))
    except BadInput as e:
        if where is None:
            raise
        raise BadInput(one_line(f"{shorten(str(where))}: the saved settings compose no "
                                f"valid program: {e}")) from None


def run_attempt(cfg: StressConfig, signature: str) -> Attempt:
    """Run the campaign ``cfg`` once (to its first finding or its budget)."""
    from .runner import run_stress

    if cfg.keep_going:
        cfg = dataclasses.replace(cfg, keep_going=False)
    t0 = time.monotonic()
    result = run_stress(cfg)
    elapsed = time.monotonic() - t0
    if result.interrupted:  # unwind as the signal would have: 143 for SIGTERM, else 130
        if result.signal == signal.SIGTERM:
            raise SystemExit(128 + signal.SIGTERM)
        raise KeyboardInterrupt
    for f in result.findings:
        if f.signature == signature:
            return Attempt(True, f.signature, f.elapsed, elapsed, f)
    if result.findings:
        f = result.findings[0]
        return Attempt(False, f.signature, f.elapsed, elapsed)
    return Attempt(False, None, None, elapsed)


def format_attempt(i: int, n: int, a: Attempt, timeout: float) -> str:
    head = f"attempt {i}/{n}: "
    if a.outcome == "reproduced":
        return head + f"reproduced after {a.detected:.2f} s"
    if a.outcome == "different":
        return head + f"not reproduced (different finding after {a.detected:.2f} s: " \
                      f"{a.signature})"
    return head + f"not reproduced (nothing found in {timeout:g} s)"


def replay(finding_dir: str | Path, times: int = DEFAULT_TIMES, timeout: float | None = None,
           progress: Callable[[str], None] | None = None) -> ReplayResult:
    """Re-run the finding saved in ``finding_dir`` ``times`` times.

    ``timeout`` (seconds) replaces the saved budget of each attempt.
    ``progress`` gets one line per attempt as it ends.  BadInput when
    ``finding_dir`` is not a finding or its settings are damaged.
    """
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise BadInput(f"times must be a whole number >= 1, not {times!r}")
    if timeout is not None and not timeout > 0:
        raise BadInput(f"timeout must be a positive number of seconds, not {timeout!r}")
    finding = load_finding(finding_dir)
    return replay_finding(finding, replay_config(finding, finding_dir, timeout), times,
                          progress)


def replay_finding(finding: Finding, cfg: StressConfig, times: int,
                   progress: Callable[[str], None] | None = None) -> ReplayResult:
    """``replay`` of a loaded finding with settings ``cfg`` (see ``replay_config``)."""
    out = ReplayResult(finding, cfg)
    if finding.program:
        out.program_matches = composed_program(cfg, f"finding {finding.id}") == finding.program
    for i in range(1, times + 1):
        a = run_attempt(cfg, finding.signature)
        out.attempts.append(a)
        if progress is not None:
            progress(format_attempt(i, times, a, cfg.timeout))
    return out


# -- the command line ---------------------------------------------------------------------

REPLAY_HELP = """Re-run a finding saved by realfork stress (its settings and seed) N
times, each to its first finding or its budget, and print how often the same
signature comes back.

Exit status: 0 it reproduced at least once; 1 it never reproduced; 2 bad
usage or DIR is not a finding; 3 the machine could not give the resources
asked for."""


def add_replay_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("replay", help="re-run a saved finding and count reproductions",
                       description=REPLAY_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("dir", metavar="DIR", help="a finding directory (findings/<id>)")
    r.add_argument("-n", "--times", type=positive_int, default=DEFAULT_TIMES, metavar="N",
                   help=f"attempts (default {DEFAULT_TIMES})")
    r.add_argument("--timeout", type=positive_float, default=None, metavar="S",
                   help="budget of each attempt in seconds (default: the saved one)")


def header_lines(finding: Finding, cfg: StressConfig) -> list[str]:
    return [f"replay {finding.id} ({finding.kind}): {finding.signature}",
            f"settings: {cfg.describe()}"]


def replay_command(args: argparse.Namespace) -> int:
    finding = load_finding(args.dir)
    cfg = replay_config(finding, args.dir, args.timeout)
    for line in header_lines(finding, cfg):
        print(line, flush=True)
    if finding.program and composed_program(cfg, args.dir) != finding.program:
        print("note: program.rfm differs from the program these settings compose now "
              "(the stressors changed since the finding was saved?)", flush=True)
    result = replay_finding(finding, cfg, args.times,
                            progress=lambda line: print(line, flush=True))
    print(result.summary())
    return EXIT_REPRODUCED if result.reproduced else EXIT_NOT_REPRODUCED


__all__ = ["Attempt", "ReplayResult", "add_replay_parser", "composed_program", "replay",
           "replay_command", "replay_config", "replay_finding", "run_attempt"]
