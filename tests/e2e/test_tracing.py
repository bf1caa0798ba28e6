"""Tracing end to end: W3C traceparent handling by real workers, and one span per request
exported to an OTLP/HTTP receiver the test runs (decoded with opentelemetry-proto).

Invariants: without ``tracing`` the trace fields pass unchanged; with it a valid trace
continues (unchanged without an exporter, with pavis's span as the upstream's parent with
one), an invalid one is replaced and its tracestate dropped; the span the receiver gets has
the trace id the upstream and the access log saw, the client's span as parent, and the
request's method, route, status and upstream address; a receiver that is down or never
answers fails no request, and every span it did not take is counted as dropped.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pavis import stats
from tests.e2e.helpers_proc import Serve, direct_config, get, wait_for
from tests.e2e.helpers_worker import Workers, echo, header_pairs, seal_yaml
from tests.helpers import one_cluster, unique_instance
from tests.upstream import Upstream, launch

trace_service_pb2 = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2", reason="the otel extra"
)

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"
VALID = f"00-{TID}-{PID}-01"


class Receiver:
    """An OTLP/HTTP receiver: POST /v1/traces, protobuf; records every span it decodes.
    ``hang``: it reads the request and never answers (until closed)."""

    def __init__(self, hang: bool = False) -> None:
        self.spans: list[Any] = []
        self.resources: list[Any] = []
        self.posts = 0
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server interface)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts += 1
                if hang:
                    outer.release.wait(30)
                    return
                req = trace_service_pb2.ExportTraceServiceRequest()
                req.ParseFromString(body)
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        outer.resources.extend([rs.resource] * len(ss.spans))
                        outer.spans.extend(ss.spans)
                ok = self.path == "/v1/traces" and self.headers["Content-Type"] == (
                    "application/x-protobuf"
                )
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def up() -> Iterator[Upstream]:
    u = launch("traced")
    try:
        yield u
    finally:
        u.stop()


def traced(port: int, up: Upstream, tracing: str, log: Path) -> bytes:
    extra = f'access_log: {{path: "{log}"}}\ntracing: {tracing}\n'
    return seal_yaml(one_cluster(port, up.address, extra=extra))


def log_lines(log: Path, n: int) -> list[dict[str, Any]]:
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= n, 10, f"{n} lines")
    return [json.loads(x) for x in log.read_text().splitlines()]


def worker_stats(w: Workers) -> stats.WorkerStats:
    snap = stats.decode(w.pub.stats(0))
    assert snap is not None
    return snap


def forwarded(port: int, headers: dict[str, str]) -> dict[str, list[str]]:
    status, _, body = echo(port, "/echo", headers=headers)
    assert status == 200
    return header_pairs(body)


def test_without_tracing_the_fields_pass_unchanged(up: Upstream, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    extra = f'access_log: {{path: "{log}"}}\n'
    bad = "00-" + TID.upper() + "-" + PID + "-01"
    with Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(one_cluster(w.port, up.address, extra=extra)))
        seen = forwarded(w.port, {"traceparent": VALID, "tracestate": "a=1"})
        assert (seen["traceparent"], seen["tracestate"]) == ([VALID], ["a=1"])
        seen = forwarded(w.port, {"traceparent": bad, "tracestate": "a=1"})
        assert (seen["traceparent"], seen["tracestate"]) == ([bad], ["a=1"])
        assert "traceparent" not in forwarded(w.port, {})
    assert [r["trace_id"] for r in log_lines(log, 3)] == [TID, "", ""]


def test_traces_continue_or_start_without_an_exporter(up: Upstream, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with Workers(unique_instance(), 1) as w:
        w.start(traced(w.port, up, "{}", log))
        seen = forwarded(w.port, {"traceparent": VALID, "tracestate": "a=1"})
        assert (seen["traceparent"], seen["tracestate"]) == ([VALID], ["a=1"])
        bad = forwarded(w.port, {"traceparent": "00-" + TID + "-" + "0" * 16 + "-01",
                                 "tracestate": "a=1"})  # fmt: skip
        assert "tracestate" not in bad
        new = bad["traceparent"][0]
        version, trace_id, parent, flags = new.split("-")
        assert (version, flags, len(trace_id), len(parent)) == ("00", "01", 32, 16)
        assert trace_id != TID
        fresh = forwarded(w.port, {})["traceparent"][0]
        assert fresh.split("-")[1] not in (TID, trace_id)
    assert [r["trace_id"] for r in log_lines(log, 3)] == [TID, trace_id, fresh.split("-")[1]]


def test_one_span_per_request_reaches_the_receiver(up: Upstream, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    rx = Receiver()
    try:
        tracing = f'{{otlp: {{endpoint: "http://127.0.0.1:{rx.port}/v1/traces", timeout: 2s, service_name: edge}}}}'  # fmt: skip
        with Workers(unique_instance(), 1) as w:
            w.start(traced(w.port, up, tracing, log))
            seen = forwarded(w.port, {"traceparent": VALID, "tracestate": "a=1",
                                      "User-Agent": "probe/1"})  # fmt: skip
            version, trace_id, span_id, flags = seen["traceparent"][0].split("-")
            assert (version, trace_id, flags) == ("00", TID, "01") and span_id != PID
            assert seen["tracestate"] == ["a=1"]
            started = forwarded(w.port, {})["traceparent"][0].split("-")
            unsampled = f"00-{'1' * 32}-{PID}-00"  # the client's decision stands: no span
            assert forwarded(w.port, {"traceparent": unsampled})["traceparent"][0].endswith("-00")
            wait_for(lambda: len(rx.spans) >= 2, 10, "two spans")
            wait_for(lambda: worker_stats(w).spans_exported == 2, 5, "the exports counted")
            assert worker_stats(w).spans_dropped == 0
        recs = log_lines(log, 3)
    finally:
        rx.close()
    assert len(rx.spans) == 2
    by_trace = {s.trace_id.hex(): s for s in rx.spans}
    span = by_trace[TID]
    assert span.span_id.hex() == span_id and span.parent_span_id.hex() == PID
    attrs = {a.key: a.value for a in span.attributes}
    assert span.name == "GET all"
    assert span.kind == span.SPAN_KIND_SERVER
    assert attrs["http.request.method"].string_value == "GET"
    assert attrs["url.path"].string_value == "/echo"
    assert attrs["pavis.route"].string_value == "all"
    assert attrs["http.response.status_code"].int_value == 200
    assert attrs["pavis.upstream.address"].string_value == up.address
    assert attrs["pavis.upstream.status_code"].int_value == 200
    assert attrs["user_agent.original"].string_value == "probe/1"
    assert attrs["network.protocol.version"].string_value == "1.1"
    assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
    assert {r.attributes[0].value.string_value for r in rx.resources} == {"edge"}
    other = by_trace[started[1]]
    assert other.span_id.hex() == started[2] and other.parent_span_id == b""
    assert [r["trace_id"] for r in recs] == [TID, started[1], "1" * 32]
    assert recs[0]["request_id"] == attrs["pavis.request_id"].string_value


def refusing_port() -> tuple[socket.socket, int]:
    """A port bound and not listening: every connect to it is refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


@pytest.mark.parametrize("receiver", ["down", "hanging"])
def test_a_receiver_that_fails_never_fails_requests(
    receiver: str, up: Upstream, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    rx: Receiver | None = None
    hold: socket.socket | None = None
    if receiver == "down":
        hold, port = refusing_port()
    else:
        rx = Receiver(hang=True)
        port = rx.port
    n = 40
    try:
        tracing = f'{{otlp: {{endpoint: "http://127.0.0.1:{port}/v1/traces", timeout: 300ms, queue: 4}}}}'  # fmt: skip
        with Workers(unique_instance(), 1) as w:
            w.start(traced(w.port, up, tracing, log))
            for _ in range(n):
                assert echo(w.port, "/echo")[0] == 200
            # Every span is lost: refused or timed out in export, or no room in the queue.
            wait_for(lambda: worker_stats(w).spans_dropped == n, 15, "every span dropped")
            assert worker_stats(w).spans_exported == 0
            assert echo(w.port, "/echo")[0] == 200
        if rx is not None:
            wait_for(lambda: rx.posts >= 1, 10, "the receiver to be asked")
            assert rx.spans == []
    finally:
        if rx is not None:
            rx.close()
        if hold is not None:
            hold.close()
    assert len(log_lines(log, n + 1)) == n + 1


def exposed(sv: Serve, name: str) -> float:
    for line in get(sv.admin_port, "/metrics")[1].decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


def test_protobuf_is_loaded_only_to_send_a_span(tmp_path: Path) -> None:
    """Workers start without the exporter's wire format: a ``pavis serve`` worker whose
    generation has ``otlp`` maps protobuf's extension only once it has a span to send, and
    the span a refusing receiver did not take is counted in the supervisor's ``/metrics``."""
    hold, port = refusing_port()
    sv = Serve(tmp_path, workers=1)
    try:
        cfg = tmp_path / "t.yaml"
        otlp = f'tracing: {{otlp: {{endpoint: "http://127.0.0.1:{port}/v1/traces"}}}}\n'
        cfg.write_text(direct_config(sv.port, "A", sv.admin_port) + otlp)
        sv.start(cfg)
        maps = Path(f"/proc/{sv.status()['workers'][0]['pid']}/maps")
        assert "/google/_upb/" not in maps.read_text()
        assert get(sv.port, "/")[0] == 200
        wait_for(lambda: "/google/_upb/" in maps.read_text(), 10, "the exporter to load")
        # The refused export reaches the supervisor's exposition as a dropped span.
        wait_for(lambda: exposed(sv, "pavis_trace_spans_dropped_total") == 1, 10, "the drop")
        assert exposed(sv, "pavis_trace_spans_exported_total") == 0
    finally:
        sv.cleanup()
        hold.close()
