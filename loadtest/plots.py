"""PNG plots of a benchmark result (matplotlib, an optional extra: ``pip install pavis[bench]``).

Owns: turning the harness's result dict into four pictures — throughput and p99 by proxy;
flip/reload latency vs route count; worker memory vs route count; failures during the reload
storm.
Must not: measure anything or fail the run: without matplotlib, or without the data a plot
needs, it says so and moves on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"direct": "#7f7f7f", "nginx": "#2ca02c", "pavis": "#1f77b4"}
# bench_flip's strategies, in colours the three targets above do not use.
VARIANT_COLORS = ("#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22")


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a display
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def write_all(result: dict[str, Any], out: Path) -> tuple[list[Path], list[str]]:
    """Write every plot the result has data for; return (written files, messages)."""
    plt = _pyplot()
    if plt is None:
        return [], ["plots skipped: matplotlib is not installed (pip install matplotlib)"]
    written: list[Path] = []
    messages: list[str] = []
    for fn in (throughput, flip_latency, worker_memory, reload_failures):
        try:
            path = fn(plt, result, out)
        except (KeyError, TypeError, ValueError) as exc:
            messages.append(f"{fn.__name__}: not plotted ({exc!r})")
            continue
        if path is None:
            messages.append(f"{fn.__name__}: no data")
        else:
            written.append(path)
    return written, messages


def throughput(plt: Any, result: dict[str, Any], out: Path) -> Path | None:
    summary = (result.get("proxy") or {}).get("summary")
    if not summary:
        return None
    scenarios = [s for s in ("keepalive-c10", "keepalive-c50", "keepalive-c100", "close-c50")
                 if s in summary]  # fmt: skip
    targets = [t for t in ("direct", "nginx", "pavis") if any(t in summary[s] for s in scenarios)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(1, len(targets))
    for i, t in enumerate(targets):
        xs = [j + i * width for j in range(len(scenarios))]
        rps = [summary[s].get(t, {}).get("rps", 0) / 1000 for s in scenarios]
        p99 = [summary[s].get(t, {}).get("p99_ms", 0) for s in scenarios]
        ax1.bar(xs, rps, width, label=t, color=COLORS.get(t))
        ax2.bar(xs, p99, width, label=t, color=COLORS.get(t))
    for ax, title in ((ax1, "throughput (k req/s, higher is better)"),
                      (ax2, "p99 latency (ms, lower is better)")):  # fmt: skip
        ax.set_xticks([j + width * (len(targets) - 1) / 2 for j in range(len(scenarios))])
        ax.set_xticklabels(scenarios, fontsize=8)
        ax.set_title(title)
        ax.legend()
    fig.suptitle("wrk on loopback, 3-byte bodies; wrk, upstream and proxy share the cores")
    fig.tight_layout()
    return _save(plt, fig, out / "throughput_p99.png")


def _scale_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return list(((result.get("reload") or {}).get("scale") or {}).get("rows") or [])


def _flip_series(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """bench_flip rows by variant, for its smallest worker count, sorted by route count."""
    rows = [r for r in (result.get("flip") or {}).get("rows") or []
            if isinstance(r, dict) and isinstance(r.get("routes"), int)
            and isinstance(r.get("median_ms"), int | float)]  # fmt: skip
    if not rows:
        return {}
    fewest = min(r.get("workers", 0) for r in rows)
    series: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: r["routes"]):
        if r.get("workers", 0) == fewest:
            series.setdefault(str(r.get("variant", "flip")), []).append(r)
    return series


def flip_latency(plt: Any, result: dict[str, Any], out: Path) -> Path | None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plotted = False
    for i, (variant, rows) in enumerate(_flip_series(result).items()):
        ax.plot([r["routes"] for r in rows], [r["median_ms"] for r in rows], "o-",
                color=VARIANT_COLORS[i % len(VARIANT_COLORS)],
                label=f"shm flip, {variant} (bench_flip)")  # fmt: skip
        plotted = True
    scale = _scale_rows(result)
    for key, label, color in (
        ("pavis_reload_ms", "pavis: pavctl reload --wait (CLI start included)", "#17becf"),
        ("pavis_server_ms", "pavis: supervisor's reload time", COLORS["pavis"]),
        ("pavis_artifact_reload_ms", "pavis: pavctl reload ARTIFACT --wait", "#aec7e8"),
        ("nginx_visible_ms", "nginx: SIGHUP → change visible", COLORS["nginx"]),
    ):
        pts = [(r["routes"], r[key]) for r in scale if isinstance(r.get(key), int | float)]
        if pts:
            ax.plot(*zip(*pts, strict=True), "s--", color=color, label=label)
            plotted = True
    if not plotted:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("routes (nginx: locations)")
    ax.set_ylabel("ms (median)")
    ax.set_title("time until a new configuration serves, by table size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(plt, fig, out / "flip_latency.png")


def worker_memory(plt: Any, result: dict[str, Any], out: Path) -> Path | None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plotted = False
    for key, label, color in (
        ("pavis_worker_private_mib", "pavis worker (private)", COLORS["pavis"]),
        ("nginx_worker_private_mib", "nginx worker (private)", COLORS["nginx"]),
    ):
        pts = [(r["routes"], r[key]) for r in _scale_rows(result)
               if isinstance(r.get(key), int | float)]  # fmt: skip
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", color=color, label=label)
            plotted = True
    for i, (variant, rows) in enumerate(_flip_series(result).items()):
        pts = [(r["routes"], r["private_mb"]) for r in rows
               if isinstance(r.get("private_mb"), int | float)]  # fmt: skip
        if pts:
            ax.plot(*zip(*pts, strict=True), "s--", color=VARIANT_COLORS[i % len(VARIANT_COLORS)],
                    label=f"flip worker, {variant} (bench_flip)")  # fmt: skip
            plotted = True
    if not plotted:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("routes (nginx: locations)")
    ax.set_ylabel("MiB per worker")
    ax.set_title("worker memory by table size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(plt, fig, out / "worker_memory.png")


def reload_failures(plt: Any, result: dict[str, Any], out: Path) -> Path | None:
    res = (result.get("reload") or {}).get("results") or {}
    names = [n for n in ("nginx", "pavis") if n in res]
    if not names:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    failed = [res[n]["failed"] or 0 for n in names]
    bars = ax1.bar(names, failed, color=[COLORS[n] for n in names])
    for b, n in zip(bars, names, strict=True):
        r = res[n]
        ax1.annotate(f"{r['failed']} of {r['requests']}\n{r['reloads']} reloads",
                     (b.get_x() + b.get_width() / 2, b.get_height()),
                     ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax1.margins(y=0.2)
    ax1.set_title("failed requests during the reload storm")
    ax1.set_ylabel("non-2xx + socket errors")
    for n in names:
        v = res[n].get("visible_ms") or []
        if v:
            ax2.plot(range(len(v)), v, ".", color=COLORS[n], label=f"{n} (median "
                     f"{res[n]['visible_ms_median']:.1f} ms)")  # fmt: skip
    ax2.set_title("per reload: time until the change is visible")
    ax2.set_yscale("log")
    ax2.set_xlabel("reload #")
    ax2.set_ylabel("ms")
    ax2.legend(fontsize=8)
    cfg = (result.get("reload") or {}).get("config", {})
    fig.suptitle(f"keep-alive load, 50 connections; a reload every "
                 f"{cfg.get('interval_s', 0.1) * 1000:.0f} ms for {cfg.get('duration_s', '?')} s")  # fmt: skip
    fig.tight_layout()
    return _save(plt, fig, out / "reload_failures.png")


def _save(plt: Any, fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
