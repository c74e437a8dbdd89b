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

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
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
             f"fork failures {snap.fork_failures:,}  ")
    t.append(f"findings {snap.findings}",
             style="bold red" if snap.findings else "")
    t.append(f" (lock order {snap.lock_order_reports}, panic {'yes' if snap.panic else 'no'})"
             f"  probes dropped {snap.probes_dropped:,}")
    t.append(f"\nmachine: CPU {m['cpu_percent']:.0f}% of {m['ncpus']:.0f}  memory "
             f"{m['mem_used'] / 2**30:.1f}/{m['mem_total'] / 2**30:.1f} GiB "
             f"({m['mem_percent']:.0f}%)")
    sup = next((h for h in snap.hosts if h.role == "supervisor"), None)
    if sup is not None:
        t.append(f"  supervisor pid {sup.pid}: CPU {_pct(sup.cpu_percent)}%  "
                 f"RSS {_mib(sup.rss)}  threads {_num(sup.threads)}")
    if snap.backend == "processes":
        nh = sum(1 for h in snap.hosts if h.role == "host")
        idle = sum(1 for h in snap.hosts if h.role == "idle host")
        t.append(f"  hosts {nh} (+{idle} idle)")
    if snap.panic:
        t.append(f"\nPANIC: {snap.panic}", style="bold red")
    return t


def process_table(snap: Snapshot, sort: str, rows: int) -> Table:
    procs = sort_processes(snap.processes, sort)
    shown = procs[:rows]
    title = f"emulated processes (sorted by {sort}"
    title += f", {len(shown)} of {len(procs)})" if len(shown) < len(procs) else ")"
    tb = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
               header_style="bold", title_style="bold")
    for col, just in (("PID", "right"), ("PPID", "right"), ("STATE", "left"),
                      ("FLAGS", "left"), ("LWPS", "right"), ("HOST", "right"),
                      ("CPU%", "right"), ("RSS", "right"), ("THR", "right"),
                      ("VCSW", "right"), ("NVCSW", "right")):
        tb.add_column(col, justify=just, no_wrap=col != "FLAGS")  # type: ignore[arg-type]
    threads = snap.backend == "threads"
    if threads:
        tb.add_column("LWP:CPU%", overflow="fold")
    for r in shown:
        flags = ",".join(r.flags)
        style = "bold yellow" if any(f in ("SVFWAIT", "SHOLDFORK", "SHOLDFORK1", "SVFORK")
                                     for f in r.flags) else ""
        cells = [str(r.pid), str(r.ppid), r.state, Text(flags or "-", style=style),
                 str(r.lwps), str(r.host_pid or "-"), _pct(r.cpu_percent), _mib(r.rss),
                 _num(r.threads), _num(r.ctx_voluntary), _num(r.ctx_involuntary)]
        if threads:
            cells.append(" ".join(f"{lw.lwpid}:{_pct(lw.cpu_percent)}"
                                  for lw in r.lwp_threads[:6])
                         + (" ..." if len(r.lwp_threads) > 6 else ""))
        tb.add_row(*cells)
    return tb


def lock_table(snap: Snapshot, rows: int = 8) -> Table:
    tb = Table(title=f"hottest lock classes (threads blocked on each, sampled every "
                     f"{LOCK_PERIOD:g} s)", title_justify="left",
               box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold", title_style="bold")
    for col in ("CLASS", "WAITING", "NOW ms", "CONTENTIONS", "WAIT ms"):
        tb.add_column(col, justify="left" if col == "CLASS" else "right", no_wrap=True)
    for r in snap.locks[:rows]:
        tb.add_row(r.lock_class, str(r.waiting), f"{r.wait_ms_now:.1f}", f"{r.contentions:,}",
                   f"{r.wait_ms_total:,.1f}")
    if not snap.locks:
        tb.add_row("(no lock waits seen yet)", "", "", "", "")
    return tb


def wait_table(snap: Snapshot, rows: int = 6) -> Table:
    tb = Table(title=f"wait-for summary: {snap.blocked} blocked, {len(snap.cycles)} cycles",
               title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
               header_style="bold", title_style="bold")
    tb.add_column("COUNT", justify="right", no_wrap=True)
    tb.add_column("SOBJ", no_wrap=True)
    tb.add_column("CHAIN (innermost first)", overflow="ellipsis", no_wrap=True, max_width=48)
    tb.add_column("THREADS", overflow="fold", max_width=70)
    for s in snap.stacks[:rows]:
        chain = " < ".join(s["chain"].split(";")[:6]) if s["chain"] else "-"
        shown = s["threads"][:3]
        more = f" (+{s['count'] - len(shown)})" if s["count"] > len(shown) else ""
        tb.add_row(str(s["count"]), s["kind"] or "-", chain, ", ".join(shown) + more)
    return tb


def render(snap: Snapshot, sort: str = "cpu", rows: int = 20, note: str = "") -> Group:
    parts: list[Any] = [header(snap, note), process_table(snap, sort, rows),
                        lock_table(snap), wait_table(snap)]
    for c in snap.cycles:
        parts.append(Text("cycle: " + c, style="bold red"))
    for h in snap.hangs[:3]:
        parts.append(Text("hang: " + h, style="bold red"))
    return Group(*parts)


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
