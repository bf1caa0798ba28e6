"""Fleet convergence benchmark: publish → every host serving the new checksum.

Owns: a real 3-member etcd cluster (``tests.e2e.fleet_etcd``), H real ``pavis serve --etcd``
hosts (1 worker each, their own names, ports and state dirs, ``--bind`` for their listener),
N publishes of distinct R-route artifacts, and the figures: for each publish, the time from the
start of the publish (``pavis.fleet.publish.publish``: store the chunks, one guarded
transaction) until every host's report says its supervisor and every worker serve the new
checksum; p50/p99/max over the N publishes; and the wrk load held on host 0 throughout, with
its failed requests (socket errors + non-2xx/3xx). Compiling each artifact happens before its
publish and is not timed (``pavctl publish CONFIG`` would add the compile).
Must not: judge the figures, or run under pytest (it is a script: ``python -m
loadtest.bench_fleet [--hosts 3] [--routes 100] [--publishes 30] [--json]``).

Convergence is observed the way ``pavctl publish --wait`` observes it (host reports in etcd,
read, then watched: each report write is seen when etcd commits it), so a figure includes the
host's report write (a host writes its report as soon as it applied an artifact).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from loadtest import servers, wrk
from pavis import artifact
from pavis.compiler import compile_text
from pavis.fleet.publish import publish
from pavis.fleet.reports import follow_reports
from pavis.fleet.store import Store
from tests.helpers import free_port


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def config(routes: int, tag: str, port: int) -> str:
    lines = [
        "version: 1",
        "listeners:",
        f'  - {{name: public, address: "127.0.0.1:{port}"}}',
        "virtual_hosts:",
        "  - name: main",
        '    domains: ["*"]',
        "    routes:",
    ]
    for i in range(routes - 1):
        lines.append(
            f"      - {{name: r{i}, match: {{exact: /r{i}}}, "
            f'direct: {{status: 200, body: "{tag}-{i}"}}}}'
        )
    lines.append(
        f'      - {{name: all, match: {{prefix: /}}, direct: {{status: 200, body: "{tag}"}}}}'
    )
    return "\n".join(lines) + "\n"


def sealed(routes: int, tag: str, port: int) -> bytes:
    return artifact.seal(compile_text(config(routes, tag, port), "yaml"))


class Host:
    def __init__(self, root: Path, index: int, etcd: str, fleet: str) -> None:
        self.dir = root / f"h{index}"
        self.dir.mkdir()
        self.host_id = f"h{index}"
        self.port = free_port()
        self.name = f"bf{index}x{uuid.uuid4().hex[:8]}"
        argv = [*servers.pavis_argv(), "serve", "--workers", "1", "--name", self.name,
                "--state-dir", str(self.dir / "state"), "--control", str(self.dir / "c.sock"),
                "--etcd", etcd, "--fleet", fleet, "--host-id", self.host_id,
                "--bind", f"public=127.0.0.1:{self.port}"]  # fmt: skip
        self.proc = servers.Proc(argv, self.dir / "serve.log")

    def stop(self) -> None:
        self.proc.stop()
        for entry in Path("/dev/shm").glob(f"pavis.{self.name}.*"):
            entry.unlink(missing_ok=True)


def converge(store: Store, checksum: str, hosts: int, timeout: float) -> float:
    """Seconds until ``hosts`` reports serve ``checksum`` (raises on timeout or a rejection),
    seen as ``pavctl publish --wait`` sees it: reports read, then watched for changes."""
    t0 = time.monotonic()
    reports: dict[str, Any] = {}
    for reports in follow_reports(store, t0 + timeout):
        for r in reports.values():
            if r.rejection is not None and r.rejection.checksum == checksum:
                raise RuntimeError(f"{r.host_id} rejected {checksum}: {r.rejection.reason}")
        if len(reports) >= hosts and all(r.on(checksum) and r.workers for r in reports.values()):
            return time.monotonic() - t0
    raise RuntimeError(f"not every host on {checksum} after {timeout:g}s: {reports}")


def run(
    hosts: int, routes: int, publishes: int, connections: int, progress: bool
) -> dict[str, Any]:
    sys.path.insert(0, str(servers.REPO))
    from tests.e2e.fleet_etcd import start_cluster, stop_cluster

    root = servers.workdir("fleet")
    (root / "etcd").mkdir()
    cluster = start_cluster(root / "etcd")
    fleet = f"bench{uuid.uuid4().hex[:8]}"
    nominal = free_port()  # the artifact's address; every host binds its own
    started: list[Host] = []
    load: dict[str, Any] = {}
    times: list[float] = []
    store = Store(cluster.endpoints, fleet)
    try:
        publish(store, sealed(routes, "p0", nominal), "bench p0")
        for i in range(hosts):
            started.append(Host(root, i, cluster.endpoints, fleet))
        first = store.desired()
        assert first is not None
        converge(store, first[0].checksum, hosts, 120)
        duration = 10.0 + publishes * (0.5 + routes / 5000)
        wrk_thread = threading.Thread(
            target=lambda: load.update(
                wrk.run(f"http://127.0.0.1:{started[0].port}/", connections=connections,
                        duration=duration).as_dict()
            ),
            daemon=True,
        )  # fmt: skip
        if wrk.available():
            wrk_thread.start()
            time.sleep(1.0)
        for n in range(1, publishes + 1):
            data = sealed(routes, f"p{n}", nominal)  # compiled outside the timing
            t0 = time.monotonic()
            # As `pavctl publish CONFIG` does: bytes it just compiled are not decoded again.
            desired, _ = publish(store, data, f"bench p{n}", decode=False)
            publish_s = time.monotonic() - t0
            total = publish_s + converge(store, desired.checksum, hosts, 60)
            times.append(total * 1000)
            if progress:
                print(f"publish {n}/{publishes}: {total * 1000:.1f} ms", file=sys.stderr)
        if wrk_thread.is_alive():
            wrk_thread.join(duration + 30)
    finally:
        store.close()
        for h in started:
            h.stop()
        stop_cluster(cluster)
        shutil.rmtree(root, ignore_errors=True)
    return {
        "hosts": hosts,
        "routes": routes,
        "publishes": publishes,
        "converged_ms": {
            "p50": round(_pct(times, 50), 1),
            "p99": round(_pct(times, 99), 1),
            "max": round(max(times), 1) if times else None,
            "mean": round(statistics.fmean(times), 1) if times else None,
        },
        "samples_ms": [round(t, 1) for t in times],
        "wrk_on_host0": load or None,
        "failed_requests": load.get("failed") if load else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--routes", type=int, default=100)
    ap.add_argument("--publishes", type=int, default=30)
    ap.add_argument("--connections", type=int, default=8, help="wrk connections on host 0")
    ap.add_argument("--json", action="store_true", help="Print the result as JSON only.")
    args = ap.parse_args()
    result = run(args.hosts, args.routes, args.publishes, args.connections, not args.json)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    c = result["converged_ms"]
    print(
        f"fleet: {args.hosts} hosts x 1 worker, {args.routes} routes, {args.publishes} publishes\n"
        f"publish -> every host on the new checksum: p50 {c['p50']} ms  p99 {c['p99']} ms  "
        f"max {c['max']} ms"
    )
    w = result["wrk_on_host0"]
    if w:
        print(
            f"wrk on host 0: {w['requests']} requests, {w['rps']:.0f} req/s, "
            f"failed {w['failed']} (socket errors {w['socket_errors']}, non-2xx {w['non2xx']})"
        )
    else:
        print("wrk not installed: no load held")


if __name__ == "__main__":
    main()
