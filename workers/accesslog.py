"""The access log line: one JSON object per request, rejected heads included.

Owns: ``Exchange`` (what the stages of the request path report about one request), the
field names and their encoding. A rejected head (400, 408, 414, 431...) is logged
with what was read of it: fields not read yet are empty. Must not: open files
(``workers.state`` keeps the file per generation) or decide whether to log (the artifact does).
"""

from __future__ import annotations

import time

import msgspec

from workers.request import Request
from workers.runtime import new_request_id
from workers.state import State

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


def _text(b: bytes | None) -> str:
    return b.decode("latin-1") if b is not None else ""


def line(ex: Exchange, req: Request, state: State, client: str) -> bytes:
    now = time.time()
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
    }
    return _ENCODER.encode(record) + b"\n"
