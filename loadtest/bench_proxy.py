"""Proxy throughput benchmark: the upstream directly vs nginx vs pavis, in one run.

Owns: the benchmark configurations (pavis YAML, nginx conf), the run order (every scenario of a
round runs against every target back to back, so ratios compare like with like), and the
summary (medians over repeats, ratios against nginx and against the direct upstream, proxy CPU
per request, private memory per worker).
Must not: judge the figures — it measures and reports.

wrk, the upstream and the proxy share the machine's cores, so requests/s describes the whole
box; the proxy's own CPU per request (utime+stime of its process tree from /proc divided by
requests) is the figure that belongs to the proxy alone.

``busiest`` in the table is the busiest worker's share of the workers' CPU: 0.50 is an even
split over two workers, 1.00 means one worker served everything.

``run`` is the proxy step of ``python -m loadtest.bench`` (the upstream directly, nginx and
pavis, small GETs). Run alone, ``python -m loadtest.bench_proxy [--rounds N] [--duration S]
[--scenarios a,b] [--json OUT]`` runs the data-plane scenarios of ``loadtest.dataplane``:
TLS, large bodies, uploads, idle connections, 4 workers, rate limiting, beside nginx.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest import dataplane, nginx, procstat, servers, wrk
from loadtest.dataplane_setup import pavis_config
from tests.helpers import free_port

Progress = Callable[[str], None]


def stderr_progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Scenario:
    name: str
    connections: int
    headers: tuple[str, ...] = ()


SCENARIOS = (
    Scenario("keepalive-c10", 10),
    Scenario("keepalive-c50", 50),
    Scenario("keepalive-c100", 100),
    Scenario("close-c50", 50, ("Connection: close",)),
)


@dataclass
class Target:
    """Something wrk can hit, with the root pid whose tree is "the proxy"."""

    name: str
    port: int
    root_pid: int
    workers: Callable[[], list[int]]
    stop: Callable[[], None]


@dataclass
class Upstream:
    kind: str  # "nginx" (static, 1 worker) or "python" (tests.upstream)
    port: int
    path: str  # the cheap GET path
    pid: int
    stop: Callable[[], None]


def start_upstream(kind: str, work: Path) -> Upstream:
    port = free_port()
    if kind == "nginx":
        up = nginx.Nginx("upstream", work / "upstream")
        (work / "upstream").mkdir(parents=True, exist_ok=True)
        up.start(nginx.static_conf(up.prefix, port, workers=1), (port,))
        return Upstream(kind, port, "/", up.pid, up.stop)
    proc = servers.start_python_upstream(port, work)

    def stop() -> None:
        proc.stop()

    return Upstream(kind, port, servers.PYTHON_UPSTREAM_PATH, proc.pid, stop)


def start_nginx_proxy(work: Path, upstream: Upstream, workers: int = 2) -> Target:
    port = free_port()
    ng = nginx.Nginx("proxy", work / "nginx")
    (work / "nginx").mkdir(parents=True, exist_ok=True)
    inc = ng.write("which.conf", nginx.which_location("A"))
    ng.start(nginx.proxy_conf(ng.prefix, port, upstream.port, workers, include=str(inc)), (port,))
    return Target("nginx", port, ng.pid, ng.workers, ng.stop)


def start_pavis(
    work: Path,
    upstream: Upstream,
    workers: int = 2,
    name: str = "pavis",
    env: dict[str, str] | None = None,
) -> Target:
    """``pavis serve`` on the benchmark config; ``env`` replaces its environment (A/B runs)."""
    port = free_port()
    (work / name).mkdir(parents=True, exist_ok=True)
    config = work / name / "bench.yaml"
    config.write_text(pavis_config(port, upstream.port))
    pv = servers.Pavis(work / name, workers)
    pv.start(config, port, env=env)
    return Target(name, port, pv.pid, pv.worker_pids, pv.stop)


@dataclass
class Measurement:
    target: str
    scenario: str
    repeat: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    failed: int
    errors: dict[str, int]
    non2xx: int
    cpu_us_per_req: float  # the target's own process tree
    upstream_cpu_us_per_req: float
    command: str
    # Each worker's share of the workers' CPU in this run: a proxy whose connections all
    # landed on one worker shows up here (e.g. [0.99, 0.01]) before it shows in req/s.
    worker_cpu_split: list[float] = field(default_factory=list)


def measure(
    t: Target, s: Scenario, repeat: int, duration: float, upstream: Upstream
) -> Measurement:
    before = procstat.tree_cpu_seconds(t.root_pid)
    up_before = procstat.tree_cpu_seconds(upstream.pid)
    workers = t.workers()
    w_before = [procstat.cpu_seconds(p) for p in workers]
    r = wrk.run(
        f"http://127.0.0.1:{t.port}{upstream.path}",
        connections=s.connections,
        duration=duration,
        headers=s.headers,
    )
    cpu = procstat.tree_cpu_seconds(t.root_pid) - before
    up_cpu = procstat.tree_cpu_seconds(upstream.pid) - up_before
    w_cpu = [procstat.cpu_seconds(p) - b for p, b in zip(workers, w_before, strict=True)]
    split = [round(c / sum(w_cpu), 3) for c in w_cpu] if sum(w_cpu) > 0 else []
    n = max(1, r.requests)
    return Measurement(
        t.name, s.name, repeat, r.rps, r.p50_ms, r.p99_ms, r.requests, r.failed, r.errors,
        r.non2xx, cpu / n * 1e6, up_cpu / n * 1e6, r.command, split,
    )  # fmt: skip


@dataclass
class ProxyResult:
    config: dict[str, Any]
    measurements: list[Measurement] = field(default_factory=list)
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """scenario → target → median figures, plus ratios against nginx and direct."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for s in {m.scenario for m in self.measurements}:
            rows: dict[str, dict[str, float]] = {}
            for t in {m.target for m in self.measurements if m.scenario == s}:
                ms = [m for m in self.measurements if m.scenario == s and m.target == t]
                rows[t] = {
                    "rps": statistics.median(m.rps for m in ms),
                    "p50_ms": statistics.median(m.p50_ms for m in ms),
                    "p99_ms": statistics.median(m.p99_ms for m in ms),
                    "cpu_us_per_req": statistics.median(m.cpu_us_per_req for m in ms),
                    "failed": sum(m.failed for m in ms),
                    "runs": len(ms),
                    "busiest_worker_share": statistics.median(
                        max(m.worker_cpu_split or [0.0]) for m in ms
                    ),
                }
            for ref in ("nginx", "direct"):
                if ref not in rows:
                    continue
                for t, row in rows.items():
                    if t == ref:
                        continue
                    base = rows[ref]
                    row[f"rps_vs_{ref}"] = row["rps"] / base["rps"] if base["rps"] else 0.0
                    row[f"p99_vs_{ref}"] = row["p99_ms"] / base["p99_ms"] if base["p99_ms"] else 0.0
                    if ref == "nginx" and base["cpu_us_per_req"]:
                        row["cpu_vs_nginx"] = row["cpu_us_per_req"] / base["cpu_us_per_req"]
            out[s] = rows
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "summary": self.summary(),
            "memory": self.memory,
            "notes": self.notes,
            "measurements": [m.__dict__ for m in self.measurements],
        }


def _memory(t: Target) -> dict[str, Any]:
    root = procstat.sample(t.root_pid)
    workers = t.workers()
    return {
        "root_pid": t.root_pid,
        "processes": root.count,
        "root_private_bytes": root.private.get(t.root_pid, 0),
        "worker_private_bytes": [root.private.get(p, procstat.private_bytes(p)) for p in workers],
        "worker_rss_bytes": [root.rss.get(p, procstat.rss_bytes(p)) for p in workers],
    }


def run(
    *,
    duration: float,
    repeats: int,
    upstream_kind: str = "nginx",
    targets: tuple[str, ...] = ("direct", "nginx", "pavis"),
    scenarios: tuple[Scenario, ...] = SCENARIOS,
    workers: int = 2,
    progress: Progress = stderr_progress,
) -> ProxyResult:
    """Start the upstream and every target, run all scenarios, stop everything."""
    work = servers.workdir("proxy")
    result = ProxyResult(
        config={
            "duration_s": duration, "repeats": repeats, "upstream": upstream_kind,
            "workers": workers, "targets": list(targets),
            "scenarios": [s.__dict__ for s in scenarios], "wrk_threads": 2,
        }
    )  # fmt: skip
    stops: list[Callable[[], None]] = []
    try:
        up = start_upstream(upstream_kind, work)
        stops.append(up.stop)
        live: list[Target] = []
        if "direct" in targets:
            live.append(
                Target("direct", up.port, up.pid, lambda: procstat.tree(up.pid)[1:], up.stop)
            )
        if "nginx" in targets:
            t = start_nginx_proxy(work, up, workers)
            stops.append(t.stop)
            live.append(t)
        if "pavis" in targets:
            try:
                t = start_pavis(work, up, workers)
                stops.append(t.stop)
                live.append(t)
            except (RuntimeError, OSError) as exc:
                result.notes.append(f"pavis skipped: {exc}"[:600])
                progress(f"proxy: pavis skipped ({str(exc)[:200]})")
        for t in live:  # warm up pools and caches, and check every target answers
            status, _ = servers.http_get(t.port, up.path)
            if status != 200:
                result.notes.append(f"{t.name}: GET {up.path} answered {status}")
            wrk.run(f"http://127.0.0.1:{t.port}{up.path}", connections=50, duration=1)
        total = repeats * len(scenarios) * len(live)
        done = 0
        for rep in range(repeats):
            for s in scenarios:
                for t in live:
                    done += 1
                    m = measure(t, s, rep, duration, up)
                    result.measurements.append(m)
                    progress(
                        f"proxy {done}/{total}: {t.name:6} {s.name:15} {m.rps:9.0f} req/s "
                        f"p99 {m.p99_ms:6.2f} ms  {m.cpu_us_per_req:5.1f} µs CPU/req "
                        f"failed {m.failed}  worker split {m.worker_cpu_split}"
                    )
        for t in live:
            result.memory[t.name] = _memory(t)
    finally:
        for stop in reversed(stops):
            stop()
        shutil.rmtree(work, ignore_errors=True)
    return result


def format_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        f"{'scenario':15} {'target':7} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'CPU µs/req':>10} {'vs nginx':>8} {'p99/ng':>6} {'vs direct':>9} {'failed':>6} "
        f"{'busiest':>7}"
    ]
    for s in [sc.name for sc in SCENARIOS if sc.name in summary]:
        for t in ("direct", "nginx", "pavis"):
            r = summary[s].get(t)
            if r is None:
                continue
            vs_ng = f"{r['rps_vs_nginx']:.2f}" if "rps_vs_nginx" in r else "-"
            p99_ng = f"{r['p99_vs_nginx']:.2f}" if "p99_vs_nginx" in r else "-"
            vs_d = f"{r['rps_vs_direct']:.2f}" if "rps_vs_direct" in r else "-"
            lines.append(
                f"{s:15} {t:7} {r['rps']:9.0f} {r['p50_ms']:7.2f} {r['p99_ms']:7.2f} "
                f"{r['cpu_us_per_req']:10.1f} {vs_ng:>8} {p99_ng:>6} {vs_d:>9} {r['failed']:6.0f} "
                f"{r['busiest_worker_share']:7.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m loadtest.bench_proxy``: every data-plane scenario, pavis beside nginx, in
    rounds, with the verdict against the goal (``loadtest.dataplane``)."""
    return dataplane.main(argv)


if __name__ == "__main__":
    sys.exit(main())
