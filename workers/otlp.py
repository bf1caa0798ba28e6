"""One span per request, exported to an OTLP/HTTP receiver without ever holding up a request.

Owns: the worker's span queue (bounded by ``tracing.otlp.queue``; a span that does not fit
is dropped and counted), the greenlet that sends it in batches — protobuf
``ExportTraceServiceRequest`` POSTed to the configured URL, each request bounded by the
configured timeout — and the counters of exported and lost spans (``workers.metrics``).
Must not: decide which requests are traced or sampled (``workers.trace``), or import the
protobuf classes before a span is to be sent: they come with the optional ``otel`` extra
(opentelemetry-proto), and a worker without tracing never loads them.

Why a greenlet and not the OpenTelemetry SDK's exporter: the worker patches gevent without
``thread``, and the SDK's HTTP exporter waits between retries on a ``threading.Event``,
which would stop the whole hub; its batch processor drops spans it cannot queue without
counting them. Here the request path only appends to a deque; the exporter's socket is a
gevent socket (patched ``http.client``), so a receiver that is down or hangs delays only
the exporter, whose queue then fills and drops.
"""

from __future__ import annotations

import http.client
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import gevent
from gevent.event import Event

from pavis.schema import Otlp
from workers.accesslog import Exchange, protocol
from workers.metrics import METRICS
from workers.request import Request
from workers.trace import Trace

BATCH_MAX = 512  # spans per export request
INTERVAL_S = 1.0  # a partial batch waits at most this long
COMPLAIN_S = 10.0  # one stderr line per this long about failing exports

# trace id, span id, parent id (hex bytes), start and end (unix ns), method, host, target,
# route, cluster, status, upstream status, upstream address, attempts, client, protocol,
# user agent, request id, error
Span = tuple[
    bytes, bytes, bytes, int, int, bytes, bytes, bytes, str, str, int, int, str, int, str, str,
    bytes, bytes, str,
]  # fmt: skip


def record(cfg: Otlp, tr: Trace, ex: Exchange, req: Request, client: str) -> None:
    """Queue the span of a finished request (``cfg``: its generation's exporter)."""
    exp = EXPORTER
    if exp.config is not cfg:
        exp.configure(cfg)
    ua = b""
    for name, value in req.headers:
        if len(name) == 10 and name.lower() == b"user-agent":
            ua = value
            break
    end = time.time_ns()
    start = int(req.started * 1e9) if req.started else end
    exp.add(
        (
            tr.trace_id, tr.span_id, tr.parent_id, start, end, req.method, req.host or b"",
            req.target, ex.route, ex.cluster, ex.status, ex.upstream_status, ex.upstream_address,
            ex.attempts, client, protocol(req), ua, ex.request_id or req.request_id or b"",
            ex.error,
        )
    )  # fmt: skip


class Exporter:
    """This worker's span queue and the greenlet that empties it."""

    def __init__(self) -> None:
        self.config: Otlp | None = None
        self.spans: deque[Span] = deque()
        self.wake = Event()
        self.runner: Any = None
        self.conn: http.client.HTTPConnection | None = None
        self.encode: Callable[[list[Span], str], bytes] | None = None
        self.complained = 0.0
        self.lost_since = 0  # spans lost since the last stderr line

    def configure(self, cfg: Otlp) -> None:
        old = self.config
        self.config = cfg
        if old is not None and old.endpoint != cfg.endpoint and self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.runner is None:
            self.runner = gevent.spawn(self._run)

    def add(self, span: Span) -> None:
        cfg = self.config
        spans = self.spans
        if cfg is None or len(spans) >= cfg.queue:
            METRICS.spans_dropped += 1
            return
        spans.append(span)
        if len(spans) == BATCH_MAX:
            self.wake.set()

    def _run(self) -> None:
        while True:
            self.wake.wait(INTERVAL_S)
            self.wake.clear()
            while self.spans:
                self.send(BATCH_MAX)

    def send(self, most: int, limit: float = 0.0) -> None:
        """Export up to ``most`` queued spans, within ``limit`` seconds (default: the
        configured timeout); on any failure they are lost, and counted."""
        spans = self.spans
        batch = [spans.popleft() for _ in range(min(most, len(spans)))]
        cfg = self.config
        if not batch or cfg is None:
            return
        why = ""
        try:
            body = self._encoder()(batch, cfg.service_name)
            status = self._post(cfg, body, limit or cfg.timeout_ms / 1000.0)
            if not 200 <= status < 300:
                why = f"the receiver answered {status}"
        except ImportError as exc:
            why = f"{exc.name or exc} is not installed (pip install 'pavis[otel]')"
        except gevent.Timeout:
            why = f"no answer within {cfg.timeout_ms} ms"
        except (OSError, http.client.HTTPException) as exc:
            why = str(exc) or type(exc).__name__
        if not why:
            METRICS.spans_exported += len(batch)
            return
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        METRICS.spans_dropped += len(batch)
        self.lost_since += len(batch)
        now = time.monotonic()
        if now - self.complained >= COMPLAIN_S:
            self.complained = now
            print(f"pavis worker: span export to {cfg.endpoint} failed: {why}; "
                  f"{self.lost_since} spans lost", file=sys.stderr)  # fmt: skip
            self.lost_since = 0

    def _encoder(self) -> Callable[[list[Span], str], bytes]:
        if self.encode is None:
            from workers.otlp_proto import encode  # the optional extra, loaded on first use

            self.encode = encode
        return self.encode

    def _post(self, cfg: Otlp, body: bytes, limit: float) -> int:
        """POST ``body``; the status. The whole exchange, connect included, gets ``limit``."""
        timer = gevent.Timeout(limit)
        timer.start()
        try:
            url = urlsplit(cfg.endpoint)
            conn = self.conn
            if conn is None:
                https = url.scheme == "https"
                kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
                conn = self.conn = kind(url.hostname or "", url.port, timeout=limit)
            target = (url.path or "/") + (f"?{url.query}" if url.query else "")
            conn.request("POST", target, body, {"Content-Type": "application/x-protobuf"})
            resp = conn.getresponse()
            resp.read()
            if resp.will_close:
                conn.close()
                self.conn = None
            return resp.status
        finally:
            timer.close()

    def close(self, wait: float) -> None:
        """At worker exit: one last export of what is queued, within ``wait`` seconds."""
        if self.runner is None or not self.spans or self.config is None:
            return
        self.runner.kill(block=False)
        deadline = time.monotonic() + wait
        while self.spans and (left := deadline - time.monotonic()) > 0:
            self.send(BATCH_MAX, left)
        METRICS.spans_dropped += len(self.spans)
        self.spans.clear()


EXPORTER = Exporter()  # one per worker process
