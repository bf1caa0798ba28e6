"""The data-plane benchmark's figures: medians over rounds, the verdict against the goal, the report.

Owns: turning the raw runs (one per proxy, scenario and round) into per-scenario medians —
of each round's pavis / nginx ratios, which compare two runs seconds apart, and of the
absolute figures — the figures particular to a scenario (bytes/s and CPU per MiB of body,
memory per idle connection, the CPU a feature adds per request), the one-line verdicts, the
printed table and the optional plot.
Must not: run anything; it reads ``Run`` records only.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.dataplane_scenarios import (
    CPU_MAX_CLOSE,
    CPU_MAX_KEEPALIVE,
    MIB,
    P99_MAX,
    RPS_MIN,
    Scenario,
)


@dataclass
class Run:
    """One wrk run of one proxy in one round."""

    round: int
    scenario: str
    target: str  # pavis | nginx | pavis-plain | nginx-plain (the same proxy on plain_path)
    order: int  # position in the round's run order for this scenario
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    failed: int  # socket errors + answers >= 400, as wrk counts them
    cpu_s: float  # utime+stime of the proxy's whole process tree over the run
    cpu_us_per_req: float
    worker_cpu_split: list[float] = field(default_factory=list)
    pss_before: int = 0  # idle scenario: PSS of the proxy's processes before / with the idle
    pss_after: int = 0  # connections open (bytes)
    idle_open: int = -1  # idle connections still open after the load (-1: none held)
    lost_workers: int = 0  # workers of the proxy that died during the run
    command: str = ""


def _med(values: Iterable[float]) -> float:
    vals = [v for v in values if v == v]  # drop NaN
    return statistics.median(vals) if vals else float("nan")


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _by_round(runs: Sequence[Run], target: str) -> dict[int, Run]:
    return {r.round: r for r in runs if r.target == target}


def summarise(
    scenario: Scenario, runs: Sequence[Run], skipped: str | None = None
) -> dict[str, Any]:
    """Medians of one scenario's runs, its particular figures, and its verdict."""
    out: dict[str, Any] = {"scenario": scenario.name, "what": scenario.what}
    if skipped is not None:
        out["skipped"] = skipped
        out["verdict"] = {"met": None, "line": f"{scenario.name}: skipped — {skipped}"}
        return out
    mine = [r for r in runs if r.scenario == scenario.name]
    pv, ng = _by_round(mine, "pavis"), _by_round(mine, "nginx")
    rounds = sorted(set(pv) & set(ng))
    out["rounds"] = len(rounds)
    for name, by in (("pavis", pv), ("nginx", ng)):
        rs = list(by.values())
        out[name] = {
            "rps": _med(r.rps for r in rs),
            "p50_ms": _med(r.p50_ms for r in rs),
            "p99_ms": _med(r.p99_ms for r in rs),
            "cpu_us_per_req": _med(r.cpu_us_per_req for r in rs),
            "failed": sum(r.failed for r in rs),
            "lost_workers": sum(r.lost_workers for r in rs),
            "busiest_worker_share": _med(max(r.worker_cpu_split or [0.0]) for r in rs),
        }
    out["rps_ratio"] = _med(_ratio(pv[i].rps, ng[i].rps) for i in rounds)
    out["p99_ratio"] = _med(_ratio(pv[i].p99_ms, ng[i].p99_ms) for i in rounds)
    out["cpu_ratio"] = _med(_ratio(pv[i].cpu_us_per_req, ng[i].cpu_us_per_req) for i in rounds)
    per_req = scenario.upload_bytes or (scenario.body_bytes if scenario.body_bytes > 1024 else 0)
    if per_req:
        for name, by in (("pavis", pv), ("nginx", ng)):
            out[name]["mib_per_s"] = _med(r.rps * per_req / MIB for r in by.values())
            out[name]["cpu_us_per_mib"] = _med(
                r.cpu_s * 1e6 / (r.requests * per_req / MIB) for r in by.values() if r.requests
            )
    if scenario.close and scenario.listener != "plain":
        for name in ("pavis", "nginx"):
            out[name]["handshakes_per_s"] = out[name]["rps"]
    if scenario.idle:
        for name, by in (("pavis", pv), ("nginx", ng)):
            out[name]["bytes_per_idle_conn"] = _med(
                (r.pss_after - r.pss_before) / scenario.idle for r in by.values()
            )
            out[name]["idle_open_min"] = min((r.idle_open for r in by.values()), default=-1)
    if scenario.plain_path:
        for name, by in (("pavis", pv), ("nginx", ng)):
            plain = _by_round(mine, f"{name}-plain")
            both = sorted(set(by) & set(plain))
            out[name]["plain_cpu_us_per_req"] = _med(plain[i].cpu_us_per_req for i in both)
            out[name]["feature_cpu_us_per_req"] = _med(
                by[i].cpu_us_per_req - plain[i].cpu_us_per_req for i in both
            )
    out["verdict"] = verdict(scenario, out)
    return out


def verdict(scenario: Scenario, s: dict[str, Any]) -> dict[str, Any]:
    """Whether the scenario meets the goal, and the line that says so."""
    checks = [
        ("req/s", s["rps_ratio"], RPS_MIN, s["rps_ratio"] >= RPS_MIN),
        ("p99", s["p99_ratio"], P99_MAX, s["p99_ratio"] <= P99_MAX),
        ("CPU/req", s["cpu_ratio"], scenario.cpu_max, s["cpu_ratio"] <= scenario.cpu_max),
    ]
    met = all(ok for *_, ok in checks)
    parts = [
        f"{what} {_f(value, '.2f')}x ({'>=' if what == 'req/s' else '<='} {goal:.2f}) "
        f"{'ok' if ok else 'MISSED'}"
        for what, value, goal, ok in checks
    ]
    notes = []
    if s["pavis"]["failed"]:
        met = False  # figures of a proxy that failed requests do not count
        notes.append(f"pavis failed {s['pavis']['failed']} requests")
    if s["nginx"]["failed"]:
        notes.append(f"nginx failed {s['nginx']['failed']} requests")
    for name in ("pavis", "nginx"):
        if s[name]["lost_workers"]:
            met = met and name != "pavis"
            notes.append(f"{name} workers died during runs: {s[name]['lost_workers']}")
    if scenario.idle:
        for name in ("pavis", "nginx"):
            left = s[name].get("idle_open_min", -1)
            if 0 <= left < scenario.idle:
                notes.append(f"{name} closed {scenario.idle - left} idle connections")
                met = met and name != "pavis"
    if s["rounds"] == 0:
        met = False
        notes.append("no round measured both proxies")
    line = f"{scenario.name}: {'met' if met else 'MISSED'} — " + ", ".join(parts)
    if notes:
        line += " (" + "; ".join(notes) + ")"
    return {"met": met, "line": line, "checks": [list(c) for c in checks]}


def overall(summaries: Sequence[dict[str, Any]]) -> str:
    judged = [s for s in summaries if s["verdict"]["met"] is not None]
    missed = [s["scenario"] for s in judged if not s["verdict"]["met"]]
    skipped = [s["scenario"] for s in summaries if s["verdict"]["met"] is None]
    head = "met" if judged and not missed else "MISSED"
    line = f"overall: {head} — {len(judged) - len(missed)} of {len(judged)} scenarios meet the goal"
    if missed:
        line += f"; missed: {', '.join(missed)}"
    if skipped:
        line += f"; skipped: {', '.join(skipped)}"
    return line


def _f(v: float, fmt: str) -> str:
    return "-" if v != v else format(v, fmt)


def format_report(summaries: Sequence[dict[str, Any]]) -> str:
    """The table (medians over rounds), the scenarios' own figures, the verdicts."""
    lines = [
        f"{'scenario':12} {'req/s pavis':>11} {'nginx':>8} {'ratio':>5}  "
        f"{'p99 ms pavis':>12} {'nginx':>6} {'ratio':>5}  "
        f"{'CPU µs/req pavis':>16} {'nginx':>6} {'ratio':>5}  {'busiest':>7}"
    ]
    for s in summaries:
        if "skipped" in s:
            lines.append(f"{s['scenario']:12} skipped")
            continue
        p, n = s["pavis"], s["nginx"]
        lines.append(
            f"{s['scenario']:12} {_f(p['rps'], '11.0f')} {_f(n['rps'], '8.0f')} "
            f"{_f(s['rps_ratio'], '5.2f')}  {_f(p['p99_ms'], '12.2f')} {_f(n['p99_ms'], '6.2f')} "
            f"{_f(s['p99_ratio'], '5.2f')}  {_f(p['cpu_us_per_req'], '16.1f')} "
            f"{_f(n['cpu_us_per_req'], '6.1f')} {_f(s['cpu_ratio'], '5.2f')}  "
            f"{_f(p['busiest_worker_share'], '7.2f')}"
        )
    extra = [line for s in summaries if "skipped" not in s for line in _extras(s)]
    if extra:
        lines += ["", *extra]
    lines += ["", *(f"verdict {s['verdict']['line']}" for s in summaries), overall(summaries)]
    return "\n".join(lines)


def _extras(s: dict[str, Any]) -> list[str]:
    p, n, name = s["pavis"], s["nginx"], s["scenario"]
    out = []
    if "mib_per_s" in p:
        out.append(
            f"{name}: MiB/s pavis {_f(p['mib_per_s'], '.0f')} / nginx {_f(n['mib_per_s'], '.0f')}; "
            f"CPU µs per MiB pavis {_f(p['cpu_us_per_mib'], '.0f')} / "
            f"nginx {_f(n['cpu_us_per_mib'], '.0f')}"
        )
    if "handshakes_per_s" in p:
        out.append(
            f"{name}: handshakes/s pavis {_f(p['handshakes_per_s'], '.0f')} / "
            f"nginx {_f(n['handshakes_per_s'], '.0f')}"
        )
    if "bytes_per_idle_conn" in p:
        out.append(
            f"{name}: memory per idle connection (PSS) pavis "
            f"{_f(p['bytes_per_idle_conn'] / 1024, '.1f')} KiB / nginx "
            f"{_f(n['bytes_per_idle_conn'] / 1024, '.1f')} KiB; idle connections still open "
            f"after the load: pavis {p['idle_open_min']}, nginx {n['idle_open_min']}"
        )
    if "feature_cpu_us_per_req" in p:
        out.append(
            f"{name}: CPU µs/req the feature adds: pavis "
            f"{_f(p['feature_cpu_us_per_req'], '+.1f')} (plain route "
            f"{_f(p['plain_cpu_us_per_req'], '.1f')}), nginx "
            f"{_f(n['feature_cpu_us_per_req'], '+.1f')} (plain {_f(n['plain_cpu_us_per_req'], '.1f')})"
        )
    return out


def plot(summaries: Sequence[dict[str, Any]], path: Path) -> bool:
    """A bar chart of the three ratios per scenario, with the goal's bounds (dashed: req/s and
    p99, dotted: CPU); False (and nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [s for s in summaries if "skipped" not in s]
    if not rows:
        return False
    names = [s["scenario"] for s in rows]
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.9), 4))
    width = 0.27
    for k, (key, label) in enumerate(
        (("rps_ratio", "req/s"), ("p99_ratio", "p99"), ("cpu_ratio", "CPU/req"))
    ):
        xs = [i + (k - 1) * width for i in range(len(names))]
        ax.bar(xs, [s[key] for s in rows], width, label=f"{label} pavis / nginx")
    for y, style in (
        (RPS_MIN, "--"),
        (P99_MAX, "--"),
        (CPU_MAX_KEEPALIVE, ":"),
        (CPU_MAX_CLOSE, ":"),
    ):
        ax.axhline(y, color="grey", linewidth=0.8, linestyle=style)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("pavis / nginx (median over rounds)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
