"""The run report of ``realfork stress --report FILE.html``: one self-contained
HTML file (every chart an inline PNG, the style inline: nothing is fetched,
so it opens offline) with charts over time, the metrics tables and the
findings.

Its data: the stress result document (``stress.command.result_document``:
the config, the metrics of ``stress.metrics.Metrics.finish`` with its
per-second ``series``, the findings) and the samples ``StressWatch`` took
during the run (per-host CPU and RSS from psutil, lock waits by class from
the thread table, processes in vfork waits and holds).  Charts are drawn
with matplotlib (the Agg renderer, no display needed).
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import time
from typing import Any

from ..safeio import write_replacing

MAX_LINES = 8  # lines per chart before the rest are left out (named in the legend)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em;
       border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
.finding { color: #b00; font-weight: bold; } .ok { color: #070; font-weight: bold; }
img { max-width: 100%; display: block; margin: 0.4em 0; }
.note { color: #666; font-size: 0.85em; }
"""


# -- charts ----------------------------------------------------------------------------


def _figure(title: str, ylabel: str) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode()


def _legend(ax: Any, dropped: int = 0) -> None:
    ax.set_ylim(bottom=0)
    if not ax.get_lines() and not ax.containers:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes,
                color="#888")
        return
    title = f"(+{dropped} smaller not shown)" if dropped else None
    ax.legend(fontsize=7, ncols=4 if len(ax.get_lines()) > 8 else 2, title=title,
              title_fontsize=7, loc="upper left", framealpha=0.7)


def _rates(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Per-second rates of a cumulative counter sampled at (t, value)."""
    xs, ys = [], []
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if t1 - t0 > 0.05:
            xs.append(t1)
            ys.append(max(0.0, (v1 - v0) / (t1 - t0)))
    return xs, ys


def chart_ops(series: list[dict[str, Any]]) -> str:
    fig, ax = _figure("bogo ops/s per stressor", "ops/s")
    names: list[str] = []
    for s in series:
        names += [n for n in s.get("ops", {}) if n not in names]
    ranked = []
    for n in names:
        xs, ys = _rates([(s["t"], s["ops"].get(n, 0)) for s in series if "ops" in s])
        ranked.append((sum(ys), n, xs, ys))
    ranked.sort(key=lambda r: -r[0])
    for _, n, xs, ys in ranked[:MAX_LINES]:
        ax.plot(xs, ys, label=n, linewidth=1.2)
    _legend(ax, max(0, len(ranked) - MAX_LINES))
    return _png(fig)


def chart_forks(samples: list[dict[str, Any]]) -> str:
    fig, ax = _figure("forks/s by kind (kernel counters, at each dashboard sample)",
                      "forks/s")
    xs = [s["t"] for s in samples[1:]]
    for kind in ("fork1", "vfork", "forkall"):
        ax.plot(xs, [s["forks_per_s"].get(kind, 0.0) for s in samples[1:]], label=kind)
    _legend(ax)
    return _png(fig)


def _host_lines(samples: list[dict[str, Any]], field: str,
                scale: float = 1.0) -> dict[str, list[tuple[float, float]]]:
    """(t, value) per host OS process, plus the sum over the emulated
    processes' hosts when there are several."""
    lines: dict[str, list[tuple[float, float]]] = {}
    total: dict[float, float] = {}
    for s in samples:
        for h in s["hosts"]:
            v = h.get(field)
            if v is None:
                continue
            lines.setdefault(f"{h['role']} {h['pid']}", []).append((s["t"], v * scale))
            if h["role"] == "host":
                total[s["t"]] = total.get(s["t"], 0.0) + v * scale
    if sum(1 for k in lines if k.startswith("host ")) > 1:
        lines["all hosts (sum)"] = sorted(total.items())
    return lines


def chart_hosts(samples: list[dict[str, Any]], field: str, title: str, ylabel: str,
                scale: float = 1.0) -> str:
    fig, ax = _figure(title, ylabel)
    lines = _host_lines(samples, field, scale)
    fixed = [k for k in lines if not k.startswith("host ")]
    hosts = sorted((k for k in lines if k.startswith("host ")),
                   key=lambda k: -sum(v for _, v in lines[k]))
    room = max(0, MAX_LINES - len(fixed))
    for k in fixed + hosts[:room]:
        pts = lines[k]
        ax.plot([t for t, _ in pts], [v for _, v in pts], label=k,
                linewidth=2 if not k.startswith("host ") else 1,
                linestyle="--" if k.startswith("all") else "-")
    _legend(ax, max(0, len(hosts) - room))
    return _png(fig)


def chart_lock_waits(samples: list[dict[str, Any]]) -> str:
    fig, ax = _figure("lock wait per class (threads blocked on a mutex or rwlock, sampled)",
                      "wait ms per second")
    classes: dict[str, float] = {}
    for s in samples:
        for k, v in s["lock_wait_ms"].items():
            classes[k] = max(classes.get(k, 0.0), v)
    ranked = sorted(classes, key=lambda k: -classes[k])
    for k in ranked[:MAX_LINES]:
        xs, ys = _rates([(s["t"], s["lock_wait_ms"].get(k, 0.0)) for s in samples])
        ax.plot(xs, ys, label=k)
    _legend(ax, max(0, len(ranked) - MAX_LINES))
    return _png(fig)


def chart_lockstat(locks: dict[str, Any]) -> str:
    from matplotlib.figure import Figure

    rows = sorted(((v.get("wait_ns", {}).get("total", 0) / 1e6, k) for k, v in locks.items()),
                  reverse=True)[:12]
    fig = Figure(figsize=(10, 0.6 + 0.28 * max(len(rows), 1)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title("lockstat: total wait per lock class over the run", fontsize=11, loc="left")
    ax.barh([k for _, k in reversed(rows)], [v for v, _ in reversed(rows)], color="#c44")
    ax.set_xlabel("wait ms")
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)


def chart_holds(series: list[dict[str, Any]], samples: list[dict[str, Any]]) -> str:
    fig, ax = _figure("holds and vfork waits", "started per second")
    for key, label in (("holds", "lwp holds started/s"),
                       ("vfork_waits", "vfork waits started/s")):
        xs, ys = _rates([(s["t"], s[key]) for s in series if key in s])
        ax.plot(xs, ys, label=label)
    if samples:
        ax2 = ax.twinx()
        ax2.set_ylabel("processes, at the sample")
        ax2.plot([s["t"] for s in samples], [s["holds_in_progress"] for s in samples],
                 linestyle=":", color="C2", label="holding lwps now (SHOLDFORK*)")
        ax2.plot([s["t"] for s in samples], [s["vfork_waiting"] for s in samples],
                 linestyle=":", color="C3", label="in vfork wait now (SVFWAIT)")
        ax2.legend(fontsize=7, loc="upper right", framealpha=0.7)
    _legend(ax)
    return _png(fig)


# -- tables ----------------------------------------------------------------------------


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if v != int(v) else f"{v:,.0f}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_cell(x)}" for k, x in v.items()) or "-"
    if isinstance(v, list):
        if v and isinstance(v[0], dict):
            return "; ".join(", ".join(f"{_cell(x)}" for x in d.values()) for d in v[:3])
        return ", ".join(_cell(x) for x in v) or "-"
    return "-" if v is None else str(v)


def _flat(d: dict[str, Any]) -> dict[str, Any]:
    """One level of nested dicts flattened to ``outer.inner`` columns."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and all(not isinstance(x, (dict, list))
                                             for x in v.values()):
            for k2, x in v.items():
                out[f"{k}.{k2}"] = x
        else:
            out[k] = v
    return out


def table_of(rows: dict[str, dict[str, Any]], key: str) -> str:
    """A table with one row per entry of ``rows`` and the union of their fields."""
    if not rows:
        return '<p class="note">none</p>'
    flat = {name: _flat(r) if isinstance(r, dict) else {"value": r} for name, r in rows.items()}
    cols: list[str] = []
    for r in flat.values():
        cols += [c for c in r if c not in cols]
    out = ["<table><tr>", f'<th class="l">{html.escape(key)}</th>']
    out += [f"<th>{html.escape(c)}</th>" for c in cols]
    out.append("</tr>")
    for name, r in flat.items():
        out.append(f'<tr><td class="l">{html.escape(str(name))}</td>')
        for c in cols:
            v = r.get(c)
            cls = ' class="l"' if isinstance(v, (str, list, dict)) else ""
            out.append(f"<td{cls}>{html.escape(_cell(v))}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def kv_table(d: dict[str, Any]) -> str:
    out = ["<table>"]
    for k, v in d.items():
        out.append(f'<tr><th class="l">{html.escape(str(k))}</th>'
                   f'<td class="l">{html.escape(_cell(v))}</td></tr>')
    out.append("</table>")
    return "".join(out)


# -- the page --------------------------------------------------------------------------


def build_report(doc: dict[str, Any], samples: list[dict[str, Any]], title: str = "") -> str:
    """The HTML text of the report."""
    m = doc.get("metrics", {})
    series = [s for s in m.get("series", []) if "t" in s]
    findings = doc.get("findings", [])
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
             f"<title>{html.escape(title or 'realfork stress report')}</title>"
             f"<style>{STYLE}</style></head><body>"]
    parts.append(f"<h1>{html.escape(title or 'realfork stress report')}</h1>")
    verdict = (f'<span class="finding">{len(findings)} finding(s)</span>' if findings
               else '<span class="ok">no findings</span>')
    checks = doc.get("checks", {})
    parts.append(f"<p>{verdict}; {doc.get('runs', 1)} run(s) over "
                 f"{doc.get('elapsed', 0):.1f} s on kernel(s) "
                 f"{html.escape(', '.join(doc.get('kernels', [])))}; invariant checks while "
                 f"running: {checks.get('while_running', 0)} (skipped "
                 f"{checks.get('skipped', 0)}). Written {time.strftime('%Y-%m-%d %H:%M:%S')}."
                 f"</p>")
    parts.append("<h2>Findings</h2>")
    if findings:
        rows = {f"{i + 1}": {"kind": f.get("kind"), "signature": f.get("signature"),
                             "seen": f.get("count"), "seed": f.get("seed"),
                             "at s": f.get("elapsed")} for i, f in enumerate(findings)}
        parts.append(table_of(rows, "#"))
        for i, f in enumerate(findings):
            parts.append(f"<details><summary>{i + 1}. {html.escape(str(f.get('signature')))}"
                         f"</summary><pre>{html.escape(str(f.get('report', '')))}</pre>"
                         f"</details>")
    else:
        parts.append("<p>none</p>")

    parts.append("<h2>Charts</h2>")
    charts: list[tuple[str, str]] = []
    if series:
        charts.append(("bogo ops per second, per stressor", chart_ops(series)))
    if samples:
        charts.append(("forks per second", chart_forks(samples)))
        charts.append(("CPU per host", chart_hosts(
            samples, "cpu_percent", "CPU % per host OS process (psutil)", "CPU %")))
        charts.append(("RSS per host", chart_hosts(
            samples, "rss", "RSS per host OS process (psutil)", "MiB", 1 / 2**20)))
        charts.append(("lock wait per class", chart_lock_waits(samples)))
    if m.get("locks"):
        charts.append(("lockstat wait totals", chart_lockstat(m["locks"])))
    if series or samples:
        charts.append(("holds and vfork waits", chart_holds(series, samples)))
    if not charts:
        parts.append('<p class="note">no samples were taken (the run was too short)</p>')
    for alt, data in charts:
        parts.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
    if samples:
        parts.append(f'<p class="note">{len(samples)} samples of the kernel and its host '
                     f"processes, one per dashboard interval; lock waits are sampled "
                     f"several times a second from the thread table (waits shorter than a "
                     f"sample period can be missed: the lockstat table below counts every "
                     f"one).</p>")

    parts.append("<h2>Metrics</h2>")
    if m.get("stressors"):
        parts.append("<h3>Stressors</h3>" + table_of(m["stressors"], "stressor"))
    if m.get("locks"):
        parts.append("<h3>Locks (lockstat)</h3>" + table_of(m["locks"], "class"))
    if m.get("syscalls"):
        parts.append("<h3>System calls</h3>" + table_of(m["syscalls"], "system call"))
    if m.get("holds"):
        parts.append("<h3>Holds</h3>" + table_of(m["holds"], "wait"))
    if m.get("vfork_waits"):
        parts.append("<h3>vfork waits</h3>" + table_of({"vfork": m["vfork_waits"]}, "wait"))
    ff = m.get("fork_failures")
    if ff:
        rows = {str(i + 1): r for i, r in enumerate(ff.get("by_errno_site", []))}
        parts.append(f"<h3>Fork failures: {ff.get('total', 0)}</h3>" + table_of(rows, "#"))
    for key in ("processes", "counters", "unattributed"):
        if isinstance(m.get(key), dict):
            parts.append(f"<h3>{key.capitalize()}</h3>" + kv_table(m[key]))
    try:
        from ..stress.render import format_tables

        text = format_tables(m)
        parts.append(f"<h3>As printed</h3><pre>{html.escape(text)}</pre>")
    except Exception:  # the document is someone else's: its text form is a bonus
        pass
    if doc.get("config"):
        parts.append("<h2>Configuration</h2>" + kv_table(doc["config"]))
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(path: str, doc: dict[str, Any], samples: list[dict[str, Any]],
                 title: str = "") -> None:
    write_replacing(path, build_report(doc, samples, title), "--report")
