"""The admin listener: /ready, /status and /metrics over plain HTTP, served by the supervisor.

Owns: the admin socket's HTTP handling — a minimal HTTP/1.x GET server on ``intake`` (a
request head must arrive within ``HEAD_DEADLINE``, a bounded number are answered at once,
one answer per connection, then close). Must not: change anything — every page is a read of
the supervisor's state (``Arbiter.ready()``, ``Arbiter.status()``) and of the workers' shm
stats (``pavis.supervisor.metrics``, sampled every second by its own thread so that a
restarted worker's counts are kept) — or keep a thread per waiting client.
"""

from __future__ import annotations

import json
import socket
from typing import Any, Protocol

from pavis.supervisor import metrics
from pavis.supervisor.generations import Generations
from pavis.supervisor.intake import Intake
from pavis.supervisor.metrics import Collector, Sampler


class Supervisor(Protocol):
    """What the pages are read from (``arbiter.Arbiter``)."""

    gens: Generations

    def ready(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...


HEAD_DEADLINE = 5.0  # seconds for a client to send its request head
SEND_TIMEOUT = 5.0  # seconds for a client to take its answer
MAX_HEAD = 16 * 1024
MAX_PENDING = 256  # clients still sending their head (the oldest is dropped past it)
MAX_RUNNING = 8  # answers being produced or sent at once; past it, 503
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}  # fmt: skip


class AdminServer:
    def __init__(self, sock: socket.socket, arbiter: Supervisor) -> None:
        self.socket = sock
        self._arbiter = arbiter
        self.collector = Collector()
        self._intake = Intake(
            sock, "admin", terminator=b"\r\n\r\n", max_head=MAX_HEAD, deadline=HEAD_DEADLINE,
            max_pending=MAX_PENDING, max_running=MAX_RUNNING, handle=self._handle, busy=_busy,
        )  # fmt: skip
        self._sampler = Sampler(self.collector, lambda: arbiter.gens.publisher)
        self._registry = metrics.registry(arbiter, self.collector)

    def start(self) -> None:
        self._intake.start()
        self._sampler.start()

    def close(self) -> None:
        self._sampler.close()
        self._intake.close()
        self.socket.close()

    def child_fds(self) -> list[int]:
        """Descriptors a forked worker must not keep (the listening socket aside)."""
        return self._intake.child_fds()

    def _handle(self, conn: socket.socket, head: bytes) -> None:
        status, body, ctype = self._page(head)
        conn.settimeout(SEND_TIMEOUT)
        conn.sendall(_response(status, body, ctype, head_only=head.startswith(b"HEAD ")))

    def _page(self, head: bytes) -> tuple[int, bytes, str]:
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, b"bad request\n", "text/plain"
        method, target = parts[0], parts[1].decode("latin-1")
        if method not in (b"GET", b"HEAD"):
            return 405, b"only GET and HEAD\n", "text/plain"
        path = target.split("?", 1)[0]
        arbiter = self._arbiter
        if path == "/ready":
            ok = arbiter.ready()
            return (200, b"ready\n", "text/plain") if ok else (503, b"not ready\n", "text/plain")
        if path == "/status":
            return 200, json.dumps(arbiter.status(), indent=2).encode() + b"\n", "application/json"
        if path == "/metrics":
            return 200, metrics.page(self._registry), metrics.CONTENT_TYPE
        return 404, b"not found: try /ready, /status or /metrics\n", "text/plain"


def _response(status: int, body: bytes, ctype: str, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Server: pavis-admin\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + body


def _busy(conn: socket.socket) -> None:
    conn.send(_response(503, b"busy\n", "text/plain"))
