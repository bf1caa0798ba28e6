"""Markdown tables from one or more ``results.json`` of ``python -m loadtest.bench``.

    python -m loadtest.report bench-results-1 bench-results-2 bench-results-3

Owns: the medians across runs (each run's proxy figures are already medians over its rounds)
and the ratios against nginx and the direct upstream, in the tables docs/bench/*.md show.
Must not: measure anything.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

SCENARIOS = ("keepalive-c10", "keepalive-c50", "keepalive-c100", "close-c50")
TARGETS = ("direct", "nginx", "pavis")


def _med(xs: list[float]) -> float | None:
    xs = [x for x in xs if isinstance(x, int | float)]
    return statistics.median(xs) if xs else None


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "–" if x is None else format(x, fmt)


def _range(xs: list[float], fmt: str) -> str:
    xs = [x for x in xs if isinstance(x, int | float)]
    if len(xs) < 2:
        return ""
    return f" ({format(min(xs), fmt)}–{format(max(xs), fmt)})"


def proxy_table(runs: list[dict[str, Any]]) -> str:
    rows = [
        "| scenario | target | req/s | p50 ms | p99 ms | proxy CPU µs/req | req/s vs nginx "
        "| p99 vs nginx | CPU vs nginx | req/s vs direct | failed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in SCENARIOS:
        for t in TARGETS:
            cells = [r["proxy"].get("summary", {}).get(s, {}).get(t) for r in runs if "proxy" in r]
            cells = [c for c in cells if c]
            if not cells:
                continue

            def col(key: str, cs: list[dict[str, Any]] = cells) -> list[float]:
                return [c[key] for c in cs if key in c]

            rows.append(
                f"| {s} | {t} | {_f(_med(col('rps')), ',.0f')}{_range(col('rps'), ',.0f')} "
                f"| {_f(_med(col('p50_ms')), '.2f')} | {_f(_med(col('p99_ms')), '.2f')} "
                f"| {_f(_med(col('cpu_us_per_req')))} "
                f"| {_f(_med(col('rps_vs_nginx')), '.2f')}{_range(col('rps_vs_nginx'), '.2f')} "
                f"| {_f(_med(col('p99_vs_nginx')), '.2f')} | {_f(_med(col('cpu_vs_nginx')), '.2f')} "
                f"| {_f(_med(col('rps_vs_direct')), '.2f')} | {sum(col('failed')):.0f} |"
            )
    return "\n".join(rows)


def memory_table(runs: list[dict[str, Any]]) -> str:
    rows = ["| target | processes | private MiB per worker (median) | root private MiB |",
            "|---|---:|---:|---:|"]  # fmt: skip
    for t in TARGETS:
        mems = [r["proxy"].get("memory", {}).get(t) for r in runs if "proxy" in r]
        mems = [m for m in mems if m]
        if not mems:
            continue
        per_worker = [b / 2**20 for m in mems for b in m["worker_private_bytes"]]
        rows.append(
            f"| {t} | {mems[0]['processes']} | {_f(_med(per_worker))} "
            f"| {_f(_med([m['root_private_bytes'] / 2**20 for m in mems]))} |"
        )
    return "\n".join(rows)


def storm_table(runs: list[dict[str, Any]]) -> str:
    rows = [
        "| proxy | reloads (per s) | requests | failed | failed share | reload ms median / p99 "
        "| visible ms median / p99 | pavctl ms median / p99 | supervisor ms median / p99 "
        "| stale after return | processes max | private MiB max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in ("nginx", "pavis"):
        for i, r in enumerate(runs):
            x = (r.get("reload") or {}).get("results", {}).get(p)
            if not x:
                continue
            share = (x["failed"] or 0) / x["requests"] if x.get("requests") else None
            rows.append(
                f"| {p} (run {i + 1}) | {x['reloads']} ({x['reloads_per_s']:.1f}) "
                f"| {x['requests']:,} | {x['failed']:,} | {_f(share * 100 if share is not None else None, '.3f')} % "
                f"| {_f(x['reload_ms_median'])} / {_f(x['reload_ms_p99'])} "
                f"| {_f(x['visible_ms_median'])} / {_f(x['visible_ms_p99'])} "
                f"| {_f(x.get('pavctl_ms_median'))} / {_f(x.get('pavctl_ms_p99'))} "
                f"| {_f(x.get('server_elapsed_ms_median'))} / {_f(x.get('server_elapsed_ms_p99'))} "
                f"| {x['stale_after_return'] if p == 'pavis' else '–'} | {x['processes_max']} "
                f"| {x['private_bytes_max'] / 2**20:.1f} |"
            )
    return "\n".join(rows)


def scale_table(runs: list[dict[str, Any]]) -> str:
    rows = [
        "| routes | nginx: SIGHUP → visible ms | pavctl reload CONFIG --wait ms "
        "| supervisor ms (of which compile+decode) | pavctl reload ARTIFACT --wait ms "
        "| supervisor ms | nginx MiB/worker | pavis MiB/worker |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_n: dict[int, list[dict[str, Any]]] = {}
    for r in runs:
        for row in ((r.get("reload") or {}).get("scale") or {}).get("rows", []):
            by_n.setdefault(row["routes"], []).append(row)
    for n in sorted(by_n):
        rs = by_n[n]

        def m(key: str, rs: list[dict[str, Any]] = rs) -> str:
            return _f(_med([x.get(key) for x in rs]))  # type: ignore[misc]

        rows.append(
            f"| {n:,} | {m('nginx_visible_ms')} | {m('pavis_reload_ms')} | {m('pavis_server_ms')} "
            f"({m('pavis_load_ms')}) | {m('pavis_artifact_reload_ms')} "
            f"| {m('pavis_artifact_server_ms')} "
            f"| {m('nginx_worker_private_mib')} | {m('pavis_worker_private_mib')} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    dirs = [Path(d) for d in (argv if argv is not None else sys.argv[1:])]
    if not dirs:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    runs = [json.loads((d / "results.json").read_text()) for d in dirs]
    print(f"{len(runs)} run(s): " + ", ".join(f"{r['started']} ({r['mode']})" for r in runs))
    print("\n### Proxy throughput (medians across runs; range in brackets)\n")
    print(proxy_table(runs))
    print("\n### Memory per worker\n")
    print(memory_table(runs))
    print("\n### Reload storm\n")
    print(storm_table(runs))
    print("\n### Reload and memory by table size (medians across runs)\n")
    print(scale_table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
