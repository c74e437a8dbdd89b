"""``realfork minimize DIR``: shrink a finding's reproducer, after syzkaller.

The reproducer of a finding is its stress settings (``StressConfig``) and
seed.  The minimizer first measures the finding as saved (R attempts, see
``replay.py``), then makes greedy passes over the settings, each change tried
on its own against the current best:

1. drop whole stressors (while more than one is left), the biggest first
   (in instructions: a big one may do what a small one does, as mix runs
   vfork too);
2. fewer instances of each stressor: 1, half, one less;
3. simpler boot settings: processes -> threads, noise off, each fault point
   off in turn, no invariant checks while running (lockdep settings and the
   seeded ``bugs`` are kept: they are what is being reproduced);
4. smaller stressor options (fewer instructions: the mix stressor's
   generated programs get shorter with ``length``, ``procs`` and ``lwps``;
   forkall ``lwps``/``sleepers``, signal/proc ``victims``, exec ``chain``,
   vfork ``exec_every`` (0: children never exec) and ``image_ms``, then
   every other option but bomb's ``uid``): smallest first, then half, then
   a quarter less, again from each value kept;
5. a shorter budget (``timeout``): after every measurement it drops to
   ``FACTOR`` times the slowest detection (at least ``MIN_TIMEOUT``), which
   cannot change an attempt that found it earlier; then halving is tried.

**Rule.** A change is kept when the same signature reproduces in at least
ceil(R/2) of R attempts (2 of 3 by default).  Attempts stop early once the
answer is known (2 successes keep it, 2 failures reject it).  A change that
was rejected is not tried again in a later round (a stressor needed by a
bigger reproducer is taken to be needed by a smaller one); rounds repeat
while something was kept.

The search stops when what is left of ``budget`` seconds would not cover a
worst-case candidate plus the final measurement.  The result is measured
once more (all R attempts: its reliability) and written as a new finding
directory, ``DIR/minimized/`` by default (``finding.json`` with the reduced
settings, ``report.txt`` from a reproducing attempt, ``program.rfm``
recomposed), plus ``minimize.json`` (before, after, every step).

Exit status: 0 the result reproduces in at least ceil(R/2) of R attempts;
1 it does not, or the finding did not reproduce at all (nothing is written
then); 2 bad usage or DIR is not a finding; 3 the machine could not give the
resources asked for.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cmdline import positive_float, positive_int
from ..errors import BadInput
from ..safeio import create_new, shorten
from .config import StressConfig
from .findings import Finding, FindingStore, load_finding, one_line
from .replay import Attempt, composed_program, replay_config, run_attempt
from .stressors import STRESSORS, check_options

DEFAULT_ATTEMPTS = 3
DEFAULT_BUDGET = 300.0  # seconds for the whole minimization
FACTOR = 3.0  # the budget of an attempt: this many times the slowest detection...
MIN_TIMEOUT = 3.0  # ... but at least this many seconds (boot included)
EXIT_MINIMIZED, EXIT_UNRELIABLE = 0, 1

# stressor options that make a stressor smaller when lowered, tried first and in
# this order; every other option is lowered after them, except those in KEEP
# (not a size: bomb's uid 0 would be root, exempt from maxup)
REDUCIBLE: dict[str, tuple[str, ...]] = {
    "forkall": ("lwps", "sleepers"),
    "vfork": ("exec_every", "image_ms"),
    "exec": ("chain",),
    "lwp": ("spin",),
    "signal": ("victims", "kill_percent"),
    "proc": ("victims", "hold_ms"),
    "bomb": ("child_ms",),
    "mix": ("length", "procs", "lwps"),
}
KEEP = {("bomb", "uid")}
LOWEST = {("signal", "victims"): 1, ("proc", "victims"): 1, ("exec", "chain"): 1,
          ("mix", "procs"): 1, ("mix", "length"): 1, ("mix", "lwps"): 1}


def needed(attempts: int) -> int:
    """Reproductions out of ``attempts`` that keep a change: ceil(attempts / 2)."""
    return (attempts + 1) // 2


@dataclass
class Step:
    change: str  # e.g. "drop fork x2", "mix length 30 -> 15"
    kept: bool
    reproduced: int | None = None  # None: no attempt was needed
    tried: int = 0  # attempts run (they stop once the answer is known)


@dataclass
class MinimizeResult:
    finding: Finding  # the original
    before: StressConfig
    after: StressConfig
    attempts: int  # R
    before_reliability: tuple[int, int]  # (reproduced, attempts) as saved
    reliability: tuple[int, int]  # ... of the result
    steps: list[Step] = field(default_factory=list)
    instructions: tuple[int, int] = (0, 0)  # of the init program, before and after
    elapsed: float = 0.0
    budget_spent: bool = False
    output: Path | None = None  # the minimized finding directory (None: nothing written)

    @property
    def reliable(self) -> bool:
        return self.reliability[0] >= needed(self.attempts)


class _BudgetSpent(Exception):
    pass


class _Minimizer:
    def __init__(self, finding: Finding, cfg: StressConfig, attempts: int, budget: float,
                 progress: Callable[[str], None] | None) -> None:
        self.finding = finding
        self.cur = cfg
        self.R = attempts
        self.need = needed(attempts)
        self.t0 = time.monotonic()
        self.deadline = self.t0 + budget
        self.progress = progress
        self.steps: list[Step] = []
        self.tried: set[tuple[Any, ...]] = set()
        self.best: Finding | None = None  # a reproducing finding of the current settings
        self.changed = False

    def say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)

    # -- measuring ----------------------------------------------------------------------

    def measure(self, cfg: StressConfig, full: bool) -> list[Attempt]:
        """Attempts of ``cfg``; unless ``full``, only until the rule's answer is known."""
        out: list[Attempt] = []
        for _ in range(self.R):
            out.append(run_attempt(cfg, self.finding.signature))
            k = sum(a.reproduced for a in out)
            if not full and (k >= self.need or len(out) - k > self.R - self.need):
                break
        return out

    def adopt(self, cfg: StressConfig, attempts: list[Attempt]) -> None:
        """``cfg`` is the new best; tighten its budget from ``attempts``."""
        for a in attempts:
            if a.reproduced:
                self.best = a.finding
        self.cur = cfg
        times = [a.detected for a in attempts if a.reproduced and a.detected is not None]
        if not times:
            return
        slowest = max(times)
        tight = max(MIN_TIMEOUT, round(FACTOR * slowest + 0.05, 1))
        if tight < cfg.timeout:
            self.steps.append(Step(f"timeout {cfg.timeout:g} s -> {tight:g} s", True))
            self.say(f"  timeout {cfg.timeout:g} s -> {tight:g} s ({FACTOR:g}x the slowest "
                     f"detection, {slowest:.2f} s; at least {MIN_TIMEOUT:g} s)")
            self.cur = dataclasses.replace(cfg, timeout=tight)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def attempt_cost(self, cfg: StressConfig) -> float:
        return self.R * (cfg.timeout + 0.5)  # 0.5 s: boot and shutdown

    # -- one change ---------------------------------------------------------------------

    def try_change(self, key: tuple[Any, ...], change: str, d: dict[str, Any]) -> bool:
        """Try settings ``d`` (the current ones with one change); keep them if the rule says."""
        if key in self.tried:
            return False
        self.tried.add(key)
        try:
            cand = StressConfig.from_dict(d)
            instruction_count(cand)  # the stressors accept their options
        except BadInput:
            return False  # not a valid campaign: nothing to try
        if self.left() < self.attempt_cost(cand) + self.attempt_cost(self.cur):
            raise _BudgetSpent
        attempts = self.measure(cand, full=False)
        k = sum(a.reproduced for a in attempts)
        kept = k >= self.need
        self.steps.append(Step(change, kept, k, len(attempts)))
        self.say(f"  {change}: {'kept' if kept else 'rejected'} (reproduced {k}/{len(attempts)})")
        if kept:
            self.adopt(cand, attempts)
            self.changed = True
        return kept

    def reduce(self, key: tuple[Any, ...], label: str, get: Callable[[StressConfig], int],
               put: Callable[[dict[str, Any], int], None], low: int, fine: bool) -> None:
        """Lower the number ``get`` reads: smallest first, then half, then a quarter
        less (``fine``: one less), again from each value kept."""
        while True:
            v = get(self.cur)
            for c in sorted({low, v // 2, v - 1 if fine else v - max(1, v // 4)}):
                if not low <= c < v:
                    continue
                d = self.cur.to_dict()
                put(d, c)
                if self.try_change((*key, c), f"{label} {v} -> {c}", d):
                    break
            else:
                return

    # -- the passes ---------------------------------------------------------------------

    def active(self) -> list[str]:
        return [name for name, n in self.cur.stressors.items() if n]

    def pass_stressors(self) -> None:
        def size(name: str) -> int:  # instructions of its instances
            n = self.cur.stressors[name]
            return n * instruction_count(StressConfig(
                stressors={name: 1}, options={name: self.cur.options.get(name, {})},
                seed=self.cur.seed))

        # the biggest first: the finding is likelier to need a small one, and a
        # bigger one may do what a smaller one does (mix runs vfork too)
        for name in sorted(self.active(), key=size, reverse=True):
            if len(self.active()) < 2:
                return
            n = self.cur.stressors.get(name, 0)
            if not n:
                continue
            d = self.cur.to_dict()
            del d["stressors"][name]
            d["options"].pop(name, None)
            self.try_change(("drop", name), f"drop {name} x{n}", d)

    def pass_instances(self) -> None:
        for name in self.active():
            def get(cfg: StressConfig, name: str = name) -> int:
                return cfg.stressors.get(name, 0)

            def put(d: dict[str, Any], c: int, name: str = name) -> None:
                d["stressors"][name] = c

            self.reduce(("instances", name), f"{name} instances", get, put, 1, True)

    def pass_settings(self) -> None:
        kp = self.cur.kernel_params()
        if kp.get("backend", "threads") == "processes":
            d = self.cur.to_dict()
            d["boot"]["backend"] = "threads"
            self.try_change(("backend",), "backend processes -> threads", d)
        noise = self.cur.kernel_params().get("noise") or {}
        if noise.get("mode", "off") != "off":
            d = self.cur.to_dict()
            d["boot"].pop("noise", None)
            self.try_change(("noise",), f"noise {noise['mode']} -> off", d)
        for site in list(self.cur.boot.get("faults") or {}):
            d = self.cur.to_dict()
            del d["boot"]["faults"][site]
            self.try_change(("fault", site), f"fault {site} off", d)
        if self.cur.check_interval > 0:
            d = self.cur.to_dict()
            d["check_interval"] = 0
            self.try_change(("check_interval",), f"checks while running every "
                            f"{self.cur.check_interval:g} s -> only at the end", d)

    def pass_options(self) -> None:
        for name in self.active():
            first = REDUCIBLE.get(name, ())
            rest = [o for o in STRESSORS[name].options if o not in first]
            for opt in (*first, *rest):
                if (name, opt) in KEEP:
                    continue
                def get(cfg: StressConfig, name: str = name, opt: str = opt) -> int:
                    return check_options(name, cfg.options.get(name, {}))[opt]

                def put(d: dict[str, Any], c: int, name: str = name, opt: str = opt) -> None:
                    o = d["options"].setdefault(name, {})
                    o[opt] = c
                    if name == "forkall" and opt == "lwps":  # sleepers <= lwps
                        sleepers = o.get("sleepers", STRESSORS[name].options["sleepers"])
                        o["sleepers"] = min(c, sleepers)

                self.reduce(("option", name, opt), f"{name} {opt}", get, put,
                            LOWEST.get((name, opt), 0), False)

    def pass_timeout(self) -> None:
        while True:
            t = self.cur.timeout
            c = max(MIN_TIMEOUT, round(t / 2, 1))
            if not c < t:
                return
            d = self.cur.to_dict()
            d["timeout"] = c
            if not self.try_change(("timeout", c), f"timeout {t:g} s -> {c:g} s", d):
                return

    def passes(self) -> Iterator[Callable[[], None]]:
        yield from (self.pass_stressors, self.pass_instances, self.pass_settings,
                    self.pass_options, self.pass_timeout)

    def search(self) -> bool:
        """Every pass, in rounds while something was kept; False if the budget ran out."""
        try:
            while True:
                self.changed = False
                for p in self.passes():
                    p()
                if not self.changed:
                    return True
        except _BudgetSpent:
            return False


# -- describing settings --------------------------------------------------------------------


def instruction_count(cfg: StressConfig) -> int:
    from ..user.parser import parse
    from .stressors import compose

    return len(parse(compose(cfg.instances(), cfg.seed)).code)


def describe_lines(cfg: StressConfig) -> list[str]:
    """Stressors and instances; their options; the other settings; the program size."""
    stressors = ", ".join(f"{n} x{k}" for n, k in cfg.stressors.items() if k)
    opts = []
    for name, k in cfg.stressors.items():
        if k and STRESSORS[name].options:
            o = check_options(name, cfg.options.get(name, {}))
            opts.append(name + " " + " ".join(f"{a}={v}" for a, v in o.items()))
    kp = cfg.kernel_params()
    noise = (kp.get("noise") or {}).get("mode", "off")
    faults = ",".join(kp.get("faults") or {}) or "none"
    settings = [f"timeout {cfg.timeout:g} s", f"backend {kp.get('backend', 'threads')}",
                f"noise {noise}", f"faults {faults}", f"lockdep {kp.get('lockdep', 'warn')}",
                f"checks every {cfg.check_interval:g} s" if cfg.check_interval
                else "checks at the end", f"seed {cfg.seed}"]
    if kp.get("kernel", "fixed") != "fixed":
        settings.append(f"kernel {kp['kernel']}")
    if kp.get("bugs"):
        settings.append("bugs " + ",".join(kp["bugs"]))
    return [f"stressors: {stressors}",
            f"options: {'; '.join(opts) or 'none'}",
            f"settings: {', '.join(settings)}",
            f"program: {instruction_count(cfg)} instructions"]


def _rate(r: tuple[int, int]) -> str:
    return f"{r[0]}/{r[1]}"


# -- writing the result -----------------------------------------------------------------------


class _OneDirStore(FindingStore):
    """A store whose one finding is saved in ``root`` itself."""

    def directory(self, f: Finding) -> Path:
        assert self.root is not None
        return self.root


_VIRTUAL = ("/proc", "/sys", "/dev")


def _check_output(out: Path) -> None:
    """Refuse, before any work, an output directory minimize could not write or
    must not replace: under /proc, /sys or /dev; in a directory that is missing,
    not a directory or not writable; a link; a file; a directory of another
    user's or writable by others; one that holds something but no finding."""
    p = os.fspath(out)
    shown = one_line(shorten(p))
    if not p or "\0" in p:
        raise BadInput(f"output {shown!r}: not a usable directory name")
    absolute = os.path.abspath(p)
    for root in _VIRTUAL:
        if absolute == root or absolute.startswith(root + "/"):
            raise BadInput(f"output {shown}: refusing to write under {root}")
    parent = os.path.dirname(absolute) or "/"
    try:
        pst = os.stat(parent)
    except OSError:
        raise BadInput(f"output {shown}: directory {one_line(shorten(parent))} does not "
                       "exist") from None
    if not stat.S_ISDIR(pst.st_mode):
        raise BadInput(f"output {shown}: {one_line(shorten(parent))} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"output {shown}: directory {one_line(shorten(parent))} is not "
                       "writable")
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return
    except OSError as e:
        raise BadInput(f"output {shown}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise BadInput(f"output {shown} is a symbolic link; refusing to replace what it "
                       "points to")
    if not stat.S_ISDIR(st.st_mode):
        raise BadInput(f"{shown} exists and is not a finding directory: not replacing it")
    if st.st_uid != os.geteuid():
        raise BadInput(f"output {shown} belongs to another user (uid {st.st_uid}); "
                       "not replacing it")
    if st.st_mode & 0o022:
        raise BadInput(f"output {shown} is writable by other users "
                       f"(mode {stat.S_IMODE(st.st_mode):o}); not replacing it")
    try:
        entries = os.listdir(p)
    except OSError as e:
        raise BadInput(f"output {shown}: {e.strerror}") from None
    if entries and "finding.json" not in entries:
        raise BadInput(f"{shown} exists and is not a finding directory: not replacing it")


def _write(out: Path, f: Finding, summary: dict[str, Any]) -> None:
    """Write the result to a fresh private directory beside ``out`` and rename it
    to ``out``; an earlier result there is renamed away first, then removed."""
    _check_output(out)
    parent = os.path.dirname(os.path.abspath(out)) or "/"
    shown = one_line(shorten(os.fspath(out)))
    try:
        tmp = tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent)
    except OSError as e:
        raise BadInput(f"output {shown}: {e.strerror}") from None
    old: str | None = None
    try:
        _OneDirStore(tmp).save(f)
        create_new(Path(tmp) / "minimize.json", (json.dumps(summary, indent=2) + "\n").encode())
        _check_output(out)  # again: what is there now is what is replaced
        try:
            if os.path.lexists(out):
                old = tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=parent)
                os.rename(out, old)  # onto an empty directory: replaces it
            try:
                os.rename(tmp, out)
            except OSError:
                if old is not None:
                    os.rename(old, out)
                    old = None
                raise
        except OSError as e:
            raise BadInput(f"output {shown}: {e.strerror}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone once renamed
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# -- the minimizer ------------------------------------------------------------------------------


def minimize(finding_dir: str | Path, attempts: int = DEFAULT_ATTEMPTS,
             budget: float = DEFAULT_BUDGET, output: str | Path | None = None,
             progress: Callable[[str], None] | None = None) -> MinimizeResult:
    """Shrink the reproducer saved in ``finding_dir`` (see the module docstring).

    ``attempts`` is R; ``budget`` the seconds the search may take; ``output``
    the directory to write (default ``finding_dir/minimized``); ``progress``
    gets a line per measurement and per change tried.
    """
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise BadInput(f"attempts must be a whole number >= 1, not {attempts!r}")
    if not budget > 0:
        raise BadInput(f"budget must be a positive number of seconds, not {budget!r}")
    finding = load_finding(finding_dir)
    before = replay_config(finding, finding_dir)
    composed_program(before, finding_dir)  # the settings compose a program
    out = Path(output) if output is not None else Path(finding_dir) / "minimized"
    _check_output(out)
    m = _Minimizer(finding, before, attempts, budget, progress)

    base = m.measure(before, full=True)
    k0 = sum(a.reproduced for a in base)
    m.say(f"as saved: reproduced {k0}/{attempts}")
    result = MinimizeResult(finding, before, before, attempts, (k0, attempts), (k0, attempts))
    if k0 == 0:
        result.elapsed = time.monotonic() - m.t0
        return result
    m.adopt(before, base)
    result.budget_spent = not m.search()
    after = dataclasses.replace(m.cur, keep_going=False)

    if after == before:
        final = base
    else:
        final = m.measure(after, full=True)
    k = sum(a.reproduced for a in final)
    m.say(f"result: reproduced {k}/{attempts}")
    for a in final:
        if a.reproduced:
            m.best = a.finding
            break
    result.after = after
    result.reliability = (k, attempts)
    result.steps = m.steps
    result.instructions = (instruction_count(before), instruction_count(after))
    best = m.best if m.best is not None else finding
    saved = dataclasses.replace(best, config={**after.to_dict(), "seed": after.seed},
                                seed=after.seed, program=composed_program(after), count=1)
    result.elapsed = time.monotonic() - m.t0
    summary = {
        "from": str(finding_dir), "id": finding.id, "signature": finding.signature,
        "attempts": attempts, "rule": f"kept when reproduced in >= {needed(attempts)} "
                                      f"of {attempts}",
        "before": before.to_dict(), "after": after.to_dict(),
        "reliability_before": list(result.before_reliability),
        "reliability": list(result.reliability),
        "instructions": list(result.instructions),
        "steps": [dataclasses.asdict(s) for s in m.steps],
        "elapsed": round(result.elapsed, 3), "budget_spent": result.budget_spent,
    }
    _write(out, saved, summary)
    result.output = out
    return result


# -- the command line ---------------------------------------------------------------------


MINIMIZE_HELP = f"""Shrink the reproducer of a finding saved by realfork stress, after
syzkaller: fewer stressors and instances, smaller stressor options (fewer
instructions), simpler settings (threads, noise off, faults off), a shorter
budget, always keeping the same signature.  A change is kept when the
signature reproduces in at least ceil(R/2) of R attempts.  The result is
written to DIR/minimized (a finding directory: realfork replay runs it)
with its reliability measured over R attempts.

Exit status: 0 the result reproduces in at least ceil(R/2) of R attempts;
1 it does not, or the finding never reproduced (nothing written); 2 bad
usage or DIR is not a finding; 3 the machine could not give the resources
asked for.  Default budget {DEFAULT_BUDGET:g} s."""


def add_minimize_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("minimize", help="shrink a saved finding's reproducer",
                       description=MINIMIZE_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", metavar="DIR", help="a finding directory (findings/<id>)")
    p.add_argument("--attempts", type=positive_int, default=DEFAULT_ATTEMPTS, metavar="R",
                   help=f"attempts per change and for the result (default {DEFAULT_ATTEMPTS})")
    p.add_argument("--budget", type=positive_float, default=DEFAULT_BUDGET, metavar="S",
                   help=f"seconds the whole minimization may take (default {DEFAULT_BUDGET:g})")
    p.add_argument("-o", "--output", default=None, metavar="OUT",
                   help="where to write the result (default DIR/minimized)")


def minimize_command(args: argparse.Namespace) -> int:
    finding = load_finding(args.dir)
    before = replay_config(finding, args.dir)
    composed_program(before, args.dir)  # the settings compose a program
    _check_output(Path(args.output) if args.output is not None
                  else Path(args.dir) / "minimized")
    R = args.attempts
    print(f"minimize {finding.id} ({finding.kind}): {finding.signature}")
    print(f"rule: keep a change when the signature reproduces in at least {needed(R)} of "
          f"{R} attempts; budget {args.budget:g} s")
    print("before:")
    for line in describe_lines(before):
        print("  " + line)
    print(flush=True)
    result = minimize(args.dir, R, args.budget, args.output,
                      progress=lambda line: print(line, flush=True))
    if result.output is None:
        print(f"the finding did not reproduce in {R} attempts: nothing to minimize")
        return EXIT_UNRELIABLE
    print("after:")
    for line in describe_lines(result.after):
        print("  " + line)
    kept = sum(s.kept and s.reproduced is not None for s in result.steps)
    tried = sum(s.reproduced is not None for s in result.steps)
    print(f"reliability: reproduced {_rate(result.reliability)} "
          f"(as saved: {_rate(result.before_reliability)})")
    print(f"written: {result.output}")
    print(f"minimized in {result.elapsed:.1f} s ({tried} changes tried, {kept} kept"
          + ("; budget spent" if result.budget_spent else "") + ")")
    return EXIT_MINIMIZED if result.reliable else EXIT_UNRELIABLE


__all__ = ["MinimizeResult", "Step", "add_minimize_parser", "describe_lines", "minimize",
           "minimize_command", "needed"]
