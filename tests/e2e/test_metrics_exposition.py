"""/metrics read the way Prometheus reads it (prometheus_client's own parser), on a real
`pavis serve` with two workers, a real test upstream and real reloads.

Invariants: the page parses as Prometheus text with the types the docs give; process metrics
exist for the supervisor and for each worker slot; request counters move by the traffic
sent; a rejected reload sets ``pavis_config_last_reload_successful`` to 0 and counts
``pavis_config_reloads_total{result="rejected"}`` while the success timestamp stays; an
accepted one sets it back to 1, moves the timestamp and every worker's generation; a probe
verdict change and an ejection (the upstream process killed) are counted and logged.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

import pavis
from tests.e2e.helpers_proc import Serve, get, needs_workers, wait_for
from tests.upstream import Upstream

pytestmark = needs_workers

Key = tuple[str, frozenset[tuple[str, str]]]


class Page:
    def __init__(self, text: str) -> None:
        self.types: dict[str, str] = {}
        self.samples: dict[Key, float] = {}
        for fam in text_string_to_metric_families(text):
            assert fam.name not in self.types, f"family {fam.name} twice"
            self.types[fam.name] = fam.type
            for s in fam.samples:
                key = (s.name, frozenset(s.labels.items()))
                assert key not in self.samples, f"duplicate sample {key}"
                self.samples[key] = s.value

    def __call__(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no sample {name}{labels}"
        return self.samples[key]

    def total(self, name: str) -> float:
        return sum(v for (n, _), v in self.samples.items() if n == name)

    def labels(self, name: str) -> list[dict[str, str]]:
        return [dict(lb) for n, lb in self.samples if n == name]


def scrape(sv: Serve) -> Page:
    status, body = get(sv.admin_port, "/metrics")
    assert status == 200
    return Page(body.decode())


def config(sv: Serve, upstream: str, body: str) -> str:
    return f"""version: 1
listeners:
  - {{name: public, address: "127.0.0.1:{sv.port}"}}
admin: {{address: "127.0.0.1:{sv.admin_port}"}}
clusters:
  - name: up
    endpoints: ["{upstream}"]
    outlier: {{consecutive_failures: 2, eject_for: 1m}}
  - name: probed
    endpoints: ["{upstream}"]
    health_check: {{path: /healthz, interval: 100ms, timeout: 100ms, unhealthy_after: 1,
                    healthy_after: 1}}
virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - name: direct
        match: {{prefix: /direct}}
        direct: {{status: 200, body: "{body}", content_type: text/plain}}
      - name: up
        match: {{prefix: /up/}}
        forward: {{cluster: up, timeout: 5s, rewrite: {{prefix: /}}}}
      - name: probed
        match: {{prefix: /probed}}
        forward: {{cluster: probed, timeout: 1s}}
"""


def test_exposition_after_traffic_a_rejected_reload_and_an_ejection(
    tmp_path: Path, upstream: Upstream
) -> None:
    sv = Serve(tmp_path, workers=2)
    cfg = tmp_path / "a.yaml"
    cfg.write_text(config(sv, upstream.address, "A"))
    booted = time.time()
    try:
        sv.start(cfg)
        st = sv.status()
        m = scrape(sv)
        for name, kind in {
            "pavis_config_generation": "gauge", "pavis_config_info": "gauge",
            "pavis_config_last_reload_successful": "gauge",
            "pavis_config_last_reload_success_timestamp_seconds": "gauge",
            "pavis_config_reloads": "counter", "pavis_reloads": "counter",
            "pavis_build_info": "gauge", "pavis_worker_generation": "gauge",
            "pavis_requests": "counter", "pavis_request_duration_seconds": "histogram",
            "pavis_endpoint_health_transitions": "counter", "process_cpu_seconds": "counter",
            "pavis_worker_process_resident_memory_bytes": "gauge",
        }.items():  # fmt: skip
            assert m.types.get(name) == kind, name
        assert m("pavis_build_info", version=pavis.__version__, **_py()) == 1
        assert m("pavis_config_generation") == st["generation"] == m("pavis_generation")
        assert m("pavis_config_info", checksum=st["checksum"]) == 1
        assert m("pavis_config_last_reload_successful") == 1
        boot_success = m("pavis_config_last_reload_success_timestamp_seconds")
        assert booted <= boot_success <= time.time()
        for w in st["workers"]:
            slot = str(w["slot"])
            assert m("pavis_worker_generation", slot=slot) == st["generation"]
            assert m("pavis_worker_process_resident_memory_bytes", slot=slot) > 1 << 20
            start = m("pavis_worker_process_start_time_seconds", slot=slot)
            assert booted - 5 <= start <= time.time() + 1
        assert m("process_resident_memory_bytes") > 1 << 20 and m("process_open_fds") > 0
        docs = (Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md").read_text()
        undocumented = [n for n in _series_names(m) if f"`{n}`" not in docs]
        assert undocumented == [], "families missing from docs/OPERATIONS.md#metrics"

        # Real traffic: exact counts once the workers' snapshots (1 s) catch up.
        for path, expect, n in (("/direct", 200, 5), ("/nothing", 404, 3), ("/up/echo", 200, 4)):
            for _ in range(n):
                assert get(sv.port, path)[0] == expect, path
        m = wait_for(lambda: (p := scrape(sv)).total("pavis_requests_total") == 12 and p, 10,
                     "the traffic in the snapshots")  # fmt: skip
        assert m("pavis_requests_total", code="2xx") == 9
        assert m("pavis_requests_total", code="4xx") == 3
        assert m("pavis_request_duration_seconds_count") == 12
        assert m("pavis_request_duration_seconds_bucket", le="+Inf") == 12
        assert m("pavis_upstream_requests_total", cluster="up", result="success") == 4
        assert m.total("pavis_worker_requests_total") == 12

        # A probe verdict turned, both ways, in each worker (each probes on its own).
        probed = {"cluster": "probed", "endpoint": upstream.address}
        assert m("pavis_endpoint_healthy", **probed) == 1
        assert get(sv.port, "/up/admin/unhealthy")[0] == 200
        m = wait_for(lambda: (p := scrape(sv))("pavis_endpoint_health_transitions_total",
                     to="unhealthy", **probed) == 2 and p, 10, "both workers to see it down")  # fmt: skip
        assert m("pavis_endpoint_healthy", **probed) == 0
        assert get(sv.port, "/probed")[0] == 503
        assert get(sv.port, "/up/admin/healthy")[0] == 200
        m = wait_for(lambda: (p := scrape(sv))("pavis_endpoint_health_transitions_total",
                     to="healthy", **probed) == 2 and p, 10, "both workers to see it up")  # fmt: skip
        assert m("pavis_endpoint_healthy", **probed) == 1
        logs = sv.logs()
        assert logs.count(f"endpoint {upstream.address} unhealthy after 1 failed probe of") == 2
        assert logs.count(f"endpoint {upstream.address} healthy again after 1 passing probe of") == 2

        # A rejected reload: the signal drops to 0, the success time stays, nothing flips.
        bad = tmp_path / "bad.yaml"
        bad.write_text(cfg.read_text().replace("status: 200", "status: 99999"))
        assert sv.pavctl("reload", str(bad)).returncode == 1
        m = scrape(sv)
        assert m("pavis_config_last_reload_successful") == 0
        assert m("pavis_config_reloads_total", result="rejected") == 1
        assert m("pavis_config_reloads_total", result="accepted") == 0
        assert m("pavis_reloads_total", result="rejected") == 1
        assert m("pavis_config_last_reload_success_timestamp_seconds") == boot_success
        assert m("pavis_config_generation") == st["generation"]

        # An accepted one: back to 1, the time moves, every worker on the new generation.
        good = tmp_path / "b.yaml"
        good.write_text(config(sv, upstream.address, "B"))
        assert sv.pavctl("reload", str(good)).returncode == 0
        st2 = sv.status()
        m = scrape(sv)
        assert m("pavis_config_last_reload_successful") == 1
        assert m("pavis_config_last_reload_success_timestamp_seconds") > boot_success
        assert m("pavis_config_reloads_total", result="accepted") == 1
        assert m("pavis_config_generation") == st2["generation"] > st["generation"]
        assert m.labels("pavis_config_info") == [{"checksum": st2["checksum"]}]
        assert {m("pavis_worker_generation", slot=str(w["slot"])) for w in st2["workers"]} == {
            st2["generation"]
        }

        # The upstream process killed: requests fail, the endpoint is ejected and says so.
        upstream.proc.send_signal(signal.SIGKILL)
        upstream.proc.wait(10)
        for _ in range(10):  # over two workers: at least one sees two failures in a row
            assert get(sv.port, "/up/echo")[0] in (502, 503)
        up = {"cluster": "up", "endpoint": upstream.address}
        m = wait_for(lambda: (p := scrape(sv))("pavis_endpoint_ejections_total", **up) >= 1
                     and p, 10, "the ejection in the snapshots")  # fmt: skip
        ejected = m("pavis_endpoint_ejections_total", **up)
        assert ejected <= 2  # one per worker at most: an ejection lasts a minute
        assert m("pavis_endpoint_healthy", **up) == 0
        assert m("pavis_upstream_requests_total", cluster="up", result="connect_error") >= 2
        assert sv.logs().count(
            f"endpoint {upstream.address} ejected for 60s after 2 consecutive failures"
        ) == ejected  # fmt: skip
        wait_for(lambda: scrape(sv)("pavis_endpoint_health_transitions_total", to="unhealthy",
                 **probed) == 4, 10, "the probes to fail too")  # fmt: skip
    finally:
        sv.cleanup()


def _series_names(m: Page) -> set[str]:
    """Family names as a query writes them: counters with _total, histograms bare."""
    return {n + ("_total" if m.types[n] == "counter" else "") for n in m.types}


def _py() -> dict[str, str]:
    import platform

    return {
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }
