"""The admin `/metrics` page end to end: a real `pavis serve`, real traffic through its workers
to a real test upstream, then a scrape.

Invariants: counters move by exactly the traffic sent (summed over every worker); histogram
buckets are cumulative and end at ``_count``; counters survive a generation flip and a worker
restart; a rejected reload counts as ``reloads_total{result="rejected"}``; the page is valid
Prometheus text (every sample under a HELP and TYPE of its family).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
from pathlib import Path

from tests.e2e.helpers_proc import Serve, get, needs_workers, wait_for
from tests.helpers import free_port, kill_pid
from tests.upstream import Upstream

pytestmark = needs_workers

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Key = tuple[str, frozenset[tuple[str, str]]]


def scrape(port: int) -> dict[Key, float]:
    """Parse /metrics strictly: every sample belongs to a family declared just before it."""
    status, body = get(port, "/metrics")
    assert status == 200
    out: dict[Key, float] = {}
    typed: dict[str, str] = {}
    helped: set[str] = set()
    for line in body.decode().splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
            continue
        if line.startswith("# TYPE "):
            _, _, fam, kind = line.split()
            assert fam in helped and fam not in typed, line
            typed[fam] = kind
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.groups()
        fam = re.sub(r"_(bucket|sum|count)$", "", name) if name not in typed else name
        assert fam in typed, f"{name} has no TYPE"
        key = (name, frozenset(_LABEL.findall(labels or "")))
        assert key not in out, f"duplicate sample {line!r}"
        out[key] = float(value)
    return out


def val(m: dict[Key, float], name: str, **labels: str) -> float:
    return m.get((name, frozenset(labels.items())), 0.0)


def total(m: dict[Key, float], name: str) -> float:
    return sum(v for (n, _), v in m.items() if n == name)


def config(sv: Serve, upstream: str, dead: str, body: str = "ok") -> str:
    return f"""version: 1
listeners:
  - {{name: public, address: "127.0.0.1:{sv.port}"}}
admin: {{address: "127.0.0.1:{sv.admin_port}"}}
clusters:
  - name: up
    endpoints: ["{upstream}"]
  - name: narrow
    endpoints: ["{upstream}"]
    pool: {{max_connections: 1, max_idle: 1, max_pending: 0}}
  - name: dead
    endpoints: ["{dead}"]
    connect_timeout: 1s
  - name: probed
    endpoints: ["{dead}"]
    health_check: {{path: /healthz, interval: 100ms, timeout: 100ms, unhealthy_after: 1}}
virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - name: direct
        match: {{prefix: /direct}}
        direct: {{status: 200, body: "{body}", content_type: text/plain}}
      - name: up
        match: {{prefix: /up/}}
        forward: {{cluster: up, timeout: 30s, rewrite: {{prefix: /}}}}
      - name: short
        match: {{prefix: /short/}}
        forward: {{cluster: up, timeout: 200ms, rewrite: {{prefix: /}}}}
      - name: narrow
        match: {{prefix: /narrow/}}
        forward: {{cluster: narrow, timeout: 30s, rewrite: {{prefix: /}}}}
      - name: dead
        match: {{prefix: /dead}}
        forward:
          cluster: dead
          timeout: 5s
          retry: {{attempts: 3, on: [connect_error], per_try_timeout: 1s,
                   backoff: {{base: 1ms, max: 1ms}}}}
      - name: probed
        match: {{prefix: /probed}}
        forward: {{cluster: probed, timeout: 1s}}
"""


def closed_port() -> str:
    return f"127.0.0.1:{free_port()}"  # bound then closed: connecting is refused


def test_counters_move_by_exactly_the_traffic_sent(tmp_path: Path, upstream: Upstream) -> None:
    sv = Serve(tmp_path, workers=2)
    cfg = tmp_path / "a.yaml"
    cfg.write_text(config(sv, upstream.address, closed_port()))
    try:
        sv.start(cfg)
        before = scrape(sv.admin_port)
        assert total(before, "pavis_requests_total") == 0
        assert val(before, "pavis_workers") == 2
        st = sv.status()
        assert val(before, "pavis_generation") == st["generation"]
        assert val(before, "pavis_artifact_info", checksum=st["checksum"]) == 1

        sent = {"2xx": 0, "4xx": 0, "5xx": 0}

        def hit(path: str, expect: int, n: int) -> None:
            for _ in range(n):
                assert get(sv.port, path, timeout=10)[0] == expect, path
            sent[f"{expect // 100}xx"] += n

        hit("/direct", 200, 7)
        hit("/nothing-routes-here", 404, 3)
        hit("/up/echo", 200, 5)
        hit("/up/status/503", 503, 4)  # upstream answered: "5xx" result, not an error
        hit("/up/reset", 502, 2)
        hit("/up/garbage", 502, 1)
        hit("/short/delay/1000", 504, 2)
        hit("/dead", 503, 2)  # 3 attempts each: 6 connect errors, 4 retries
        hit("/up/delay/300", 200, 2)  # two slow ones for the histogram
        with socket.create_connection(("127.0.0.1", sv.port), timeout=10) as raw:
            raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")  # a bad head counts too
            assert raw.recv(100).startswith(b"HTTP/1.1 400 ")
        sent["4xx"] += 1

        # Concurrent requests on a pool of one connection with no queue: the rest overflow.
        answers: list[int] = []

        def slow() -> None:
            answers.append(get(sv.port, "/narrow/delay/500", timeout=10)[0])

        threads = [threading.Thread(target=slow) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(set(answers)) == [200, 503] and len(answers) == 6
        ok, overflowed = answers.count(200), answers.count(503)
        sent["2xx"] += ok
        sent["5xx"] += overflowed
        n = sum(sent.values())

        # Workers publish once a second: wait for the sums, then demand exact figures.
        m = wait_for(
            lambda: (s := scrape(sv.admin_port)) and total(s, "pavis_requests_total") == n and s,
            10,
            "the workers' snapshots",
        )
        for code, count in sent.items():
            assert val(m, "pavis_requests_total", code=code) == count, code
        assert (
            val(m, "pavis_requests_total", code="1xx")
            == val(m, "pavis_requests_total", code="3xx")
            == 0
        )

        up = {r: val(m, "pavis_upstream_requests_total", cluster="up", result=r) for r in
              ("success", "connect_error", "timeout", "reset", "bad_response", "5xx")}  # fmt: skip
        assert up == {"success": 7, "connect_error": 0, "timeout": 2, "reset": 2,
                      "bad_response": 1, "5xx": 4}  # fmt: skip
        assert val(m, "pavis_upstream_requests_total", cluster="dead", result="connect_error") == 6
        assert val(m, "pavis_retries_total", cluster="dead") == 4
        # The first /up/reset went out on a pooled connection, so the proxy (a GET: harmless)
        # sent it once more on a fresh one; the second found no idle connection.
        assert val(m, "pavis_retries_total", cluster="up") == 1
        assert val(m, "pavis_upstream_overflow_total", cluster="narrow") == overflowed
        assert val(m, "pavis_upstream_overflow_total", cluster="up") == 0
        assert val(m, "pavis_upstream_requests_total", cluster="narrow", result="success") == ok

        # The histogram: cumulative, ending at _count, which is every request.
        h = "pavis_request_duration_seconds"
        buckets = sorted(
            (float(dict(labels)["le"]), v)
            for (name, labels), v in m.items()
            if name == f"{h}_bucket"
        )
        assert buckets[-1] == (float("inf"), n) and val(m, f"{h}_count") == n
        counts = [v for _, v in buckets]
        assert counts == sorted(counts)
        assert [b for b, _ in buckets[:-1]] == [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
        ]  # fmt: skip
        slow_ones = 2 + ok  # /up/delay/300 and the narrow ones that waited 500 ms
        assert n - val(m, f"{h}_bucket", le="0.25") >= slow_ones
        assert val(m, f"{h}_sum") >= 0.3 * 2 + 0.5 * ok

        # Health: the probed endpoint fails its checks in every worker; "up" has no checks.
        dead = dict(next(iter(k[1] for k in m if k[0] == "pavis_endpoint_healthy"
                                and dict(k[1])["cluster"] == "probed")))  # fmt: skip
        wait_for(lambda: val(scrape(sv.admin_port), "pavis_endpoint_healthy", **dead) == 0,
                 10, "the probed endpoint to be unhealthy")  # fmt: skip
        assert val(m, "pavis_endpoint_healthy", cluster="up", endpoint=upstream.address) == 1
        assert get(sv.port, "/probed")[0] == 503  # no healthy endpoint: never tried

        # The per-worker heartbeat counts parsed requests: all but the bad head.
        assert total(m, "pavis_worker_requests_total") == n - 1
    finally:
        sv.cleanup()


def test_counters_survive_flips_and_restarts_and_reloads_are_counted(
    tmp_path: Path, upstream: Upstream
) -> None:
    sv = Serve(tmp_path, workers=2)
    dead = closed_port()
    cfg = tmp_path / "a.yaml"
    cfg.write_text(config(sv, upstream.address, dead, "A"))
    try:
        sv.start(cfg)
        for _ in range(10):
            assert get(sv.port, "/up/echo")[0] == 200
        m = wait_for(
            lambda: (s := scrape(sv.admin_port)) and total(s, "pavis_requests_total") == 10 and s,
            10,
            "the first snapshots",
        )
        reloads = {r: val(m, "pavis_reloads_total", result=r) for r in ("accepted", "rejected")}

        # A rejected reload: counted, nothing else moves.
        bad = tmp_path / "bad.yaml"
        bad.write_text(cfg.read_text().replace("status: 200", "status: 99999"))
        assert sv.pavctl("reload", str(bad)).returncode == 1
        m = scrape(sv.admin_port)
        assert val(m, "pavis_reloads_total", result="rejected") == reloads["rejected"] + 1
        assert val(m, "pavis_reloads_total", result="accepted") == reloads["accepted"]
        gen = val(m, "pavis_generation")

        # An accepted reload flips the generation and the checksum; counters carry on.
        good = tmp_path / "b.yaml"
        good.write_text(config(sv, upstream.address, dead, "B"))
        assert sv.pavctl("reload", str(good)).returncode == 0
        st = sv.status()
        m = scrape(sv.admin_port)
        assert val(m, "pavis_reloads_total", result="accepted") == reloads["accepted"] + 1
        assert val(m, "pavis_generation") == st["generation"] > gen
        infos = [k for k in m if k[0] == "pavis_artifact_info"]
        assert infos == [("pavis_artifact_info", frozenset({("checksum", st["checksum"])}))]
        for _ in range(5):
            assert get(sv.port, "/direct") == (200, b"B")
        m = wait_for(
            lambda: (s := scrape(sv.admin_port)) and total(s, "pavis_requests_total") == 15 and s,
            10,
            "counts across the flip",
        )
        assert val(m, "pavis_upstream_requests_total", cluster="up", result="success") == 10

        # A worker killed: its replacement starts at zero, the sums do not go back.
        victim = st["workers"][0]
        kill_pid(victim["pid"], signal.SIGKILL)
        wait_for(
            lambda: (
                (w := sv.status()["workers"][0])["pid"] not in (None, victim["pid"])
                and w["generation"] == st["generation"]
            ),
            20,
            "the worker to be replaced",
        )
        m = scrape(sv.admin_port)
        assert total(m, "pavis_requests_total") == 15
        assert val(m, "pavis_upstream_requests_total", cluster="up", result="success") == 10
        assert val(m, "pavis_request_duration_seconds_count") == 15
        assert val(m, "pavis_worker_requests_total", slot="0") == 0  # per worker: a reset
        assert val(m, "pavis_worker_restarts_total", slot="0") == 1
        for _ in range(4):
            assert get(sv.port, "/direct")[0] == 200
        wait_for(
            lambda: total(scrape(sv.admin_port), "pavis_requests_total") == 19,
            10,
            "counts after the restart",
        )
    finally:
        sv.cleanup()


def test_metrics_without_traffic_are_complete_and_zero(tmp_path: Path) -> None:
    sv = Serve(tmp_path, workers=1)
    try:
        sv.start(sv.config("A"))
        m = wait_for(
            lambda: (
                (s := scrape(sv.admin_port))
                and ("pavis_request_duration_seconds_count", frozenset()) in s
                and s
            ),
            10,
            "a first snapshot",
        )
        assert total(m, "pavis_requests_total") == 0
        assert val(m, "pavis_request_duration_seconds_bucket", le="+Inf") == 0
        assert val(m, "pavis_workers") == 1
        assert os.path.exists(f"/dev/shm/pavis.{sv.name}.ctl")
    finally:
        sv.cleanup()
