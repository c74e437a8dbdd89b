"""The stress metrics document, rendered: aligned tables and YAML.

``format_tables`` renders the document (``stress.metrics.Metrics.finish``, or
the stress result document's ``metrics``) as aligned tables (stress-ng's
metrics table, then lockstat-like ones); ``to_yaml`` writes it with
stress-ng's key names where they apply.
"""

from __future__ import annotations

import os
from typing import Any

from .dist import PERCENTILES

# -- tables -------------------------------------------------------------------------


def fmt_ns(ns: float) -> str:
    """A duration for a table: ns, us, ms or s with three significant digits."""
    if ns < 1000:
        return f"{ns:.0f}ns"
    for unit, div in (("us", 1e3), ("ms", 1e6)):
        v = ns / div
        if v < 1000:
            return f"{v:.3g}{unit}" if v < 100 else f"{v:.0f}{unit}"
    v = ns / 1e9
    return f"{v:.3g}s" if v < 100 else f"{v:.0f}s"


def _table(head: list[str], rows: list[list[str]], left: int = 1,
           head2: list[str] | None = None) -> list[str]:
    """Rows aligned under ``head``: the first ``left`` columns to the left,
    the others to the right."""
    heads = [head] + ([head2] if head2 else [])
    w = [max(len(r[i]) for r in heads + rows) for i in range(len(head))]

    def line(r: list[str]) -> str:
        cells = [c.ljust(w[i]) if i < left else c.rjust(w[i]) for i, c in enumerate(r)]
        return "  ".join(cells).rstrip()

    return [line(r) for r in heads + rows]


def format_tables(doc: dict[str, Any]) -> str:
    """The metrics document as aligned tables (stress-ng's, then lockstat-like)."""
    out: list[str] = []
    st = doc.get("stressors", {})
    rows = [[name, str(m["instances"]), str(m["bogo_ops"]), f"{m.get('real_time', 0):.2f}",
             f"{m.get('usr_time', 0):.2f}", f"{m.get('sys_time', 0):.2f}",
             f"{m.get('ops_per_s', 0):.2f}", f"{m.get('ops_per_s_usr_sys', 0):.2f}",
             f"{m.get('cpu_usage_per_instance', 0):.2f}"] for name, m in st.items()]
    out += _table(["stressor", "instances", "bogo ops", "real time", "usr time", "sys time",
                   "bogo ops/s", "bogo ops/s", "CPU used per"], rows,
                  head2=["", "", "", "(secs)", "(secs)", "(secs)", "(real time)",
                         "(usr+sys time)", "instance (%)"])
    sysc = doc.get("syscalls", {})
    if sysc:
        c = doc.get("counters", {})
        returned = sum(m["count"] for m in sysc.values())
        entered = c.get("syscalls")
        note = (f" ({entered} entered; {entered - returned} never returned: exit, "
                f"lwp_exit, killed)" if entered is not None else "")
        out += ["", f"system calls: {returned} returned{note}"]
        rows = []
        for name, m in sysc.items():
            lat = m["latency_ns"]
            errs = ", ".join(f"{k} {v}" for k, v in m["errno"].items())
            rows.append([name, str(m["count"]), str(m["errors"]), fmt_ns(lat["avg"]),
                         *(fmt_ns(lat[f"p{p}"]) for p in PERCENTILES), fmt_ns(lat["max"]),
                         errs])
        out += _table(["system call", "count", "errors", "avg",
                       *(f"p{p}" for p in PERCENTILES), "max", "errnos"], rows)
    locks = doc.get("locks", {})
    if locks:
        out += ["", "lock classes (lockstat): contentions (spun or slept), sleep times, "
                "hold times"]
        rows = []
        for name, m in locks.items():
            w, h = m["wait_ns"], m["hold_ns"]
            pct = 100 * m["contentions"] / m["acquisitions"] if m["acquisitions"] else 0.0
            slept = m.get("blocks", 0)
            rows.append([name, m["type"], str(m["acquisitions"]), str(m["contentions"]),
                         f"{pct:.1f}", str(m["spins"]), str(slept),
                         *((fmt_ns(w["total"]), fmt_ns(w["avg"]), fmt_ns(w["max"])) if slept
                           else ("-", "-", "-")),
                         fmt_ns(h["avg"]) if h and h["count"] else "-",
                         fmt_ns(h["max"]) if h and h["count"] else "-"])
        out += _table(["lock class", "type", "acquired", "contended", "%", "spun", "slept",
                       "wait total", "wait avg", "wait max", "hold avg", "hold max"], rows)
        chained = [(name, m) for name, m in locks.items() if m["chains"]]
        if chained:
            out += ["", "top call chains blocking on each lock class (sampled waits)"]
            for name, m in chained:
                out.append(f"  {name} ({m['chains_sampled']} waits sampled)")
                for ch in m["chains"]:
                    out.append(f"    {ch['count']:6d}  {ch['chain']}")
    waits = []
    holds = doc.get("holds", {})
    for label, key in (("holdlwps (the forking lwp)", "holdlwps"),
                       ("held lwps (parked by holdlwps)", "held")):
        if key in holds:
            waits.append((label, holds[key]))
    if "vfork_waits" in doc:
        waits.append(("vfork parent (vfwait)", doc["vfork_waits"]))
    if waits:
        out += ["", "waits"]
        rows = []
        for label, m in waits:
            d = m["wait_ns"]
            rows.append([label, str(d["count"]), str(m["unpaired"]), fmt_ns(d["total"]),
                         fmt_ns(d["avg"]), *(fmt_ns(d[f"p{p}"]) for p in PERCENTILES),
                         fmt_ns(d["max"])])
        out += _table(["wait", "count", "unpaired", "total", "avg",
                       *(f"p{p}" for p in PERCENTILES), "max"], rows)
    ff = doc.get("fork_failures")
    if ff is not None:
        out += ["", f"fork failures: {ff['total']}"]
        if ff["by_errno_site"]:
            out += _table(["errno", "site", "count"],
                          [[r["errno"], r["site"], str(r["count"])]
                           for r in ff["by_errno_site"]], left=2)
    pr = doc.get("probes")
    if pr is not None:
        out += ["", f"probes: {pr['events']} events, {pr['dropped']} dropped"]
        if pr["dropped"]:
            out.append("  the ring was full at times, so the counts above fall short of the "
                       "kernel's; a larger --probe-capacity keeps every probe")
    series = doc.get("series") or []
    rates = sorted(s["ops_per_s"] for s in series if not s.get("final"))
    if len(rates) >= 2:
        out.append(f"bogo ops/s per second: min {rates[0]:.0f}, median "
                   f"{rates[(len(rates) - 1) // 2]:.0f}, max {rates[-1]:.0f} "
                   f"({len(rates)} samples)")
    return "\n".join(out)


# -- YAML ---------------------------------------------------------------------------


def _r(v: float) -> float:
    return float(f"{v:.6g}")


def stress_ng_metrics(m: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-stressor entries with stress-ng's YAML key names."""
    out = []
    for name, s in m.get("stressors", {}).items():
        out.append({
            "stressor": name,
            "bogo-ops": s["bogo_ops"],
            "bogo-ops-per-second-usr-sys-time": _r(s.get("ops_per_s_usr_sys", 0.0)),
            "bogo-ops-per-second-real-time": _r(s.get("ops_per_s", 0.0)),
            "wall-clock-time": _r(s.get("real_time", 0.0)),
            "user-time": _r(s.get("usr_time", 0.0)),
            "system-time": _r(s.get("sys_time", 0.0)),
            "cpu-usage-per-instance": _r(s.get("cpu_usage_per_instance", 0.0)),
            "instances": s["instances"],
        })
    return out


_DATA_KEYS = {"errno", "by_errno", "by_site", "by_flag", "by_name", "ops"}  # keys are names


def _hyphen(d: Any, data: bool = False) -> Any:
    """Dict keys with ``_`` as ``-`` (stress-ng's YAML style), recursively;
    the keys of maps whose keys are names (errnos, fault sites, ...) stay."""
    if isinstance(d, dict):
        return {(k if data or not isinstance(k, str) else k.replace("_", "-")):
                _hyphen(v, isinstance(k, str) and k in _DATA_KEYS) for k, v in d.items()}
    if isinstance(d, list):
        return [_hyphen(v) for v in d]
    return d


def yaml_document(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (the stress result document with the metrics under ``metrics``,
    or the metrics document alone) laid out as stress-ng's YAML: ``metrics`` a
    list of per-stressor maps, then realfork's own sections."""
    if isinstance(doc.get("metrics"), dict) and "stressors" in doc["metrics"]:
        m, rest = doc["metrics"], {k: v for k, v in doc.items() if k != "metrics"}
    else:
        m, rest = doc, {}
    out: dict[str, Any] = {}
    cfg = rest.get("config") or {}
    boot = cfg.get("boot") or {}
    info = {"realfork-version": _version(), "cpus": os.cpu_count(),
            "backend": boot.get("backend", "threads") if cfg else None,
            "runs": m.get("runs"), "kernels": rest.get("kernels")}
    out["system-info"] = {k: v for k, v in info.items() if v is not None}
    out["metrics"] = stress_ng_metrics(m)
    usr = sum(s.get("usr_time", 0.0) for s in m.get("stressors", {}).values())
    sys_ = sum(s.get("sys_time", 0.0) for s in m.get("stressors", {}).values())
    un = m.get("unattributed", {})
    usr += un.get("usr_time", 0.0)
    sys_ += un.get("sys_time", 0.0)
    out["times"] = {"run-time": _r(m.get("run_time", m.get("elapsed", 0.0))),
                    "user-time": _r(usr), "system-time": _r(sys_),
                    "total-time": _r(usr + sys_)}
    out["system-calls"] = [{"system-call": name, **_hyphen(v)}
                           for name, v in m.get("syscalls", {}).items()]
    out["lock-classes"] = [{"lock-class": name, **_hyphen(v)}
                           for name, v in m.get("locks", {}).items()]
    for key in ("holds", "vfork_waits", "fork_failures", "processes", "unattributed",
                "probes", "counters"):
        if key in m:
            out[key.replace("_", "-")] = _hyphen(m[key])
    for k, v in rest.items():
        out[k.replace("_", "-")] = v
    out["series"] = _hyphen(m.get("series", []))
    return out


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("realfork")
    except PackageNotFoundError:
        return None


def to_yaml(doc: dict[str, Any]) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # a value shown twice is written twice: no &id001 anchors

    return yaml.dump(yaml_document(doc), Dumper=Dumper, sort_keys=False, explicit_start=True,
                     explicit_end=True, default_flow_style=False, width=100)


__all__ = ["fmt_ns", "format_tables", "stress_ng_metrics", "to_yaml", "yaml_document"]
