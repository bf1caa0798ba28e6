"""The access log line: one JSON object per request, rejected heads included.

Owns: ``Exchange`` (what the stages of the request path report about one request), the
field names and their encoding (docs/CONFIG.md lists them). A rejected head (400, 408, 414,
431...) is logged with what was read of it: fields not read yet are empty. Values taken from
the request are shown byte for byte (each byte one latin-1 character) inside JSON strings,
whose escapes leave no raw control character; the three characters some line readers also
split on (U+0085, U+2028, U+2029) are escaped too, so one request is always one line.
Must not: open or write files (``workers.state`` keeps the file per generation,
``workers.logfile`` writes it) or decide whether to log (the artifact does).
"""

from __future__ import annotations

import time

import msgspec

from workers.request import Request
from workers.runtime import new_request_id
from workers.state import State
from workers.trace import Trace, incoming_trace_id

_ENCODER = msgspec.json.Encoder()
ERROR_MAX = 200  # characters of an error detail; the worker's stderr has no more


class Exchange:
    """What the access log reports about one request."""

    __slots__ = (
        "status",
        "route",
        "cluster",
        "endpoint",
        "upstream_ms",
        "bytes",
        "request_id",
        "error",
        "attempts",
        "client_cert",
        "upstream_status",
        "upstream_address",
        "rate_limit",
        "trace",
    )

    def __init__(self) -> None:
        self.attempts = 0  # requests sent upstream for this one: > 1 means it was replayed
        self.status = 0
        self.route = ""
        self.cluster = ""
        self.endpoint = ""
        self.upstream_ms = 0.0
        self.bytes = 0
        self.request_id = b""
        self.error = ""  # the detail of an error the proxy answered itself
        self.client_cert = ""  # the verified client certificate's subject (x-client-cert-subject)
        self.upstream_status = 0  # status of the last upstream response head received
        self.upstream_address = ""  # ip:port the last attempt was connected to
        self.rate_limit = "-"  # the rate limiter's decision; "-": none applied
        self.trace: Trace | None = None  # set when the generation has tracing


def _text(b: bytes | None) -> str:
    return b.decode("latin-1") if b is not None else ""


_UA = b"user-agent"
_REFERER = b"referer"
# UTF-8 of NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR: legal raw in JSON, line breaks to some
# readers (Python's str.splitlines, some log shippers); C2 85 / E2 80 A8 / E2 80 A9 can only
# be these characters in UTF-8.
_BREAKS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


def protocol(req: Request) -> str:
    """HTTP/1.0 or HTTP/1.1; "" for a head rejected before it was read whole."""
    if not req.headers_done:
        return ""
    return "HTTP/1.0" if req.http10 else "HTTP/1.1"


def request_bytes(req: Request) -> int:
    """The request as received: request line, header fields and line ends as parsed (the
    optional whitespace around values not counted), and the body bytes read (the data of a
    chunked body, without its chunk framing)."""
    if not req.method and not req.target:
        return 0
    # "METHOD SP target SP HTTP/1.x CRLF", each field "name: value CRLF", the empty line.
    head = len(req.method) + len(req.target) + 12 + req.hbytes + (2 if req.headers_done else 0)
    return head + req.body_bytes


def line(
    ex: Exchange, req: Request, state: State, client: str, tls_version: str = "-", sni: str = "-"
) -> bytes:
    now = time.time()
    ua = b""
    referer = b""
    for name, value in req.headers:
        n = len(name)
        if n == 10 and name.lower() == _UA:
            ua = value
        elif n == 7 and name.lower() == _REFERER:
            referer = value
    tr = ex.trace
    trace_id = tr.trace_id if tr is not None else incoming_trace_id(req.headers)
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        + f".{int(now * 1000) % 1000:03d}Z",
        "client": client,
        "method": _text(req.method),
        "host": _text(req.host),
        "path": _text(req.target),
        "status": ex.status,
        "route": ex.route,
        "cluster": ex.cluster,
        "endpoint": ex.endpoint,
        "upstream_ms": round(ex.upstream_ms, 3),
        "attempts": ex.attempts,
        "total_ms": round((now - req.started) * 1000.0, 3) if req.started else 0.0,
        "bytes": ex.bytes,
        # Every line has one: the client's, the one sent upstream, or one made for it now.
        "request_id": _text(ex.request_id or req.request_id or new_request_id()),
        "generation": state.generation,
        "checksum": state.checksum,
        "error": ex.error[:ERROR_MAX],
        "client_cert": ex.client_cert,
        "protocol": protocol(req),
        "user_agent": _text(ua),
        "referer": _text(referer),
        "request_bytes": request_bytes(req),
        "upstream_status": ex.upstream_status,
        "upstream_address": ex.upstream_address,
        "tls_version": tls_version,
        "sni": sni,
        "rate_limit": ex.rate_limit,
        "trace_id": _text(trace_id),
    }
    data = _ENCODER.encode(record)
    if not data.isascii():
        for raw, escaped in _BREAKS:
            data = data.replace(raw, escaped)
    return data + b"\n"
