"""``realfork top``: a live terminal dashboard of a running kernel (rich).

    realfork top [NAME] [--interval S] [--sort cpu|pid|lwps|rss] [--once] [--json]

It attaches to kernel NAME (or to this user's one running kernel), samples
it every ``--interval`` seconds (``realfork.top.snapshot``: read-only, no
kernel lock, the probe ring left to the supervisor) and redraws in place
until the kernel goes away or the user presses Ctrl-C; leaving only unmaps.
``--once`` prints one frame (``--json``: one snapshot as JSON) taken over
one interval, for scripts.  ``realfork stress --dashboard`` shows the same
view during a run (``StressDashboard``).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from ..errors import BadInput
from .command import LOCK_PERIOD
from .snapshot import Observer, Snapshot, sort_processes

# -- formatting ------------------------------------------------------------------------


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}M"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _num(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _uptime(s: float) -> str:
    s = int(s)
    h, m = divmod(s, 3600)
    m, s = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def header(snap: Snapshot, note: str = "") -> Text:
    c = snap.counters
    m = snap.machine
    state_style = {"running": "green", "panicked": "bold red"}.get(snap.state, "yellow")
    t = Text()
    t.append("realfork top  ", style="bold")
    t.append(f"kernel {snap.kernel}  backend {snap.backend}  up {_uptime(snap.uptime_s)}  ")
    t.append(snap.state, style=state_style)
    if note:
        t.append(f"  {note}", style="dim")
    t.append(f"\nprocesses {snap.nproc}  lwps {snap.nlwps}  forks/s: ")
    t.append(f"fork1 {snap.forks_per_s['fork1']:.1f}  vfork {snap.forks_per_s['vfork']:.1f}"
             f"  forkall {snap.forks_per_s['forkall']:.1f}", style="bold")
    t.append(f"  (total fork1 {c['sysfork']:,} vfork {c['sysvfork']:,} "
             f"forkall {c['sysforkall']:,})")
    t.append(f"\nvfork waits {c['vfork_waits']:,} (waiting now {snap.vfork_waiting})  "
             f"holds {c['holds']:,} (in progress {snap.holds_in_progress})  "
             f"fork failures {snap.fork_failures:,}  probes dropped {snap.probes_dropped:,}\n")
    t.append(f"findings {snap.findings}", style="bold red" if snap.findings else "")
    t.append(f" (lock order {snap.lock_order_reports}, panic {'yes' if snap.panic else 'no'})"
             f"  machine: CPU {m['cpu_percent']:.0f}% of {m['ncpus']:.0f}  memory "
             f"{m['mem_used'] / 2**30:.1f}/{m['mem_total'] / 2**30:.1f} GiB "
             f"({m['mem_percent']:.0f}%)")
    sup = next((h for h in snap.hosts if h.role == "supervisor"), None)
    if sup is not None:
        t.append(f"\nsupervisor pid {sup.pid}: CPU {_pct(sup.cpu_percent)}%  "
                 f"RSS {_mib(sup.rss)}  threads {_num(sup.threads)}")
    if snap.backend == "processes":
        nh = sum(1 for h in snap.hosts if h.role == "host")
        idle = sum(1 for h in snap.hosts if h.role == "idle host")
        fs = next((h for h in snap.hosts if h.role == "forkserver"), None)
        t.append(f"  hosts {nh} (+{idle} idle)")
        if fs is not None:
            t.append(f"  fork server pid {fs.pid}: CPU {_pct(fs.cpu_percent)}%")
    if snap.panic:
        t.append(f"\nPANIC: {snap.panic}", style="bold red")
    return t


# The tables are laid out in fixed columns, like top(1), and drawn as one rich
# Text: measuring a rich Table of a hundred cells costs ~50 ms of CPU a frame,
# which ``stress --dashboard`` would take from the kernel's threads (the GIL).
HOT_FLAGS = frozenset({"SVFWAIT", "SHOLDFORK", "SHOLDFORK1", "SVFORK"})
PROC_COLS = (("PID", 6), ("PPID", 6), ("STATE", -7), ("LWPS", 5), ("HOST", 8), ("CPU%", 6),
             ("RSS", 7), ("THR", 4), ("VCSW", 9), ("NVCSW", 9), ("FLAGS", -22))


def _cols(cells: list[str], spec: tuple[tuple[str, int], ...]) -> str:
    return " ".join(c.ljust(-w) if w < 0 else c.rjust(w) for c, (_, w) in zip(cells, spec,
                                                                            strict=False))


def _title(t: Text, text: str) -> None:
    t.append("\n\n" + text + "\n", style="bold")


def process_table(t: Text, snap: Snapshot, sort: str, rows: int) -> None:
    procs = sort_processes(snap.processes, sort)
    shown = procs[:rows]
    title = f"emulated processes (sorted by {sort}"
    _title(t, title + (f", {len(shown)} of {len(procs)})" if len(shown) < len(procs) else ")"))
    threads = snap.backend == "threads"
    t.append(_cols([c for c, _ in PROC_COLS], PROC_COLS) + (" LWP:CPU%" if threads else ""),
             style="reverse")
    for r in shown:
        cells = [str(r.pid), str(r.ppid), r.state, str(r.lwps), str(r.host_pid or "-"),
                 _pct(r.cpu_percent), _mib(r.rss), _num(r.threads), _num(r.ctx_voluntary),
                 _num(r.ctx_involuntary)]
        t.append("\n" + _cols(cells, PROC_COLS[:-1]) + " ")
        flags = ",".join(r.flags) or "-"
        t.append(flags.ljust(-PROC_COLS[-1][1]),
                 style="bold yellow" if HOT_FLAGS.intersection(r.flags) else "")
        if threads:
            t.append(" " + " ".join(f"{lw.lwpid}:{_pct(lw.cpu_percent)}"
                                    for lw in r.lwp_threads[:8])
                     + (" ..." if len(r.lwp_threads) > 8 else ""), style="dim")


LOCK_COLS = (("CLASS", -24), ("WAITING", 8), ("NOW ms", 10), ("CONTENTIONS", 12),
             ("WAIT ms", 12))


def lock_table(t: Text, snap: Snapshot, rows: int = 8) -> None:
    _title(t, f"hottest lock classes (threads blocked on a mutex or rwlock, sampled every "
              f"{LOCK_PERIOD:g} s)")
    t.append(_cols([c for c, _ in LOCK_COLS], LOCK_COLS), style="reverse")
    for r in snap.locks[:rows]:
        t.append("\n" + _cols([r.lock_class, str(r.waiting), f"{r.wait_ms_now:.1f}",
                               f"{r.contentions:,}", f"{r.wait_ms_total:,.1f}"], LOCK_COLS),
                 style="bold" if r.waiting else "")
    if not snap.locks:
        t.append("\n(no lock waits seen yet)", style="dim")


WAIT_COLS = (("COUNT", 5), ("SOBJ", -8), ("CHAIN (innermost first)", -52), ("THREADS", -1))


def wait_table(t: Text, snap: Snapshot, rows: int = 6) -> None:
    _title(t, f"wait-for summary: {snap.blocked} blocked, {len(snap.cycles)} cycles")
    t.append(_cols([c for c, _ in WAIT_COLS], WAIT_COLS), style="reverse")
    for s in snap.stacks[:rows]:
        chain = " < ".join(s["chain"].split(";")[:6]) if s["chain"] else "-"
        if len(chain) > 52:
            chain = chain[:51] + "~"
        shown = s["threads"][:3]
        more = f" (+{s['count'] - len(shown)})" if s["count"] > len(shown) else ""
        t.append("\n" + _cols([str(s["count"]), s["kind"] or "-", chain,
                               ", ".join(shown) + more], WAIT_COLS))


class Frame:
    """One dashboard frame: lines longer than the terminal are cut, not wrapped."""

    def __init__(self, text: Text) -> None:
        self.text = text

    def __rich_console__(self, console: Console, options: Any) -> Any:
        yield from self.text.__rich_console__(
            console, options.update(no_wrap=True, overflow="ellipsis"))

    @property
    def plain(self) -> str:
        return self.text.plain


def render(snap: Snapshot, sort: str = "cpu", rows: int = 20, note: str = "") -> Frame:
    t = header(snap, note)
    process_table(t, snap, sort, rows)
    lock_table(t, snap)
    wait_table(t, snap)
    for c in snap.cycles:
        t.append("\ncycle: " + c, style="bold red")
    for h in snap.hangs[:3]:
        t.append("\nhang: " + h, style="bold red")
    return Frame(t)


def rows_for(console: Console) -> int:
    return max(5, console.size.height - 30)


# -- the live views --------------------------------------------------------------------


def watch(obs: Observer, console: Console, interval: float, sort: str,
          stop: threading.Event | None = None, screen: bool = False,
          rows: int | None = None) -> str:
    """Redraw ``obs`` every ``interval`` s until the kernel goes away or ``stop``;
    why it ended."""
    stop = stop or threading.Event()
    with Live(console=console, auto_refresh=False, screen=screen,
              redirect_stdout=False, redirect_stderr=False) as live:
        while not stop.is_set():
            snap = obs.sample()
            live.update(render(snap, sort, rows or rows_for(console),
                               f"refresh {interval:g} s, Ctrl-C quits"), refresh=True)
            if snap.state == "gone":
                return f"kernel {obs.name} has shut down"
            scan_locks(obs, interval, stop)
    return "stopped"


def scan_locks(obs: Observer, seconds: float, stop: threading.Event | None = None) -> None:
    """Wait ``seconds``, scanning for lock waits every ``LOCK_PERIOD`` meanwhile
    (waits are short: one look per refresh would miss most of them)."""
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0 or (stop is not None and stop.is_set()):
            return
        time.sleep(min(LOCK_PERIOD, left))
        if not obs.dom.closed:
            obs.sample_locks()


# -- the command -----------------------------------------------------------------------


def snapshot_once(obs: Observer, interval: float) -> Snapshot:
    """A snapshot whose rates are over ``interval`` seconds."""
    obs.sample()
    scan_locks(obs, interval)
    return obs.sample()


def top_main(args: argparse.Namespace, console: Console | None = None) -> int:
    """``realfork top``; BadInput (exit 2) for a kernel that cannot be watched."""
    if args.json and not args.once:
        raise BadInput("--json needs --once")
    obs = Observer.attach(args.name)
    try:
        if args.once:
            snap = snapshot_once(obs, args.interval)
            if args.json:
                print(json.dumps(snap.to_dict(), indent=1))
            else:
                console = console or Console()
                console.print(render(snap, args.sort, args.rows or len(snap.processes)))
            return 0
        console = console or Console()
        try:
            why = watch(obs, console, args.interval, args.sort, screen=console.is_terminal,
                        rows=args.rows)
        except KeyboardInterrupt:
            why = "stopped"
        if why != "stopped":
            print(f"realfork top: {why}", file=sys.stderr)
        return 0
    finally:
        obs.close()
