"""The admin listener: /ready, /status and /metrics over plain HTTP, served by the supervisor.

Owns: the admin socket's HTTP handling in a background thread. Must not: change anything —
every page is a read of the supervisor's state (``Arbiter.ready()``, ``Arbiter.status()``)
and of the workers' shm stats (``pavis.supervisor.metrics``, sampled every second by its own
thread so that a restarted worker's counts are kept).
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from pavis.supervisor.metrics import Collector, Sampler, render

if TYPE_CHECKING:
    from pavis.supervisor.arbiter import Arbiter


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    arbiter: Arbiter
    collector: Collector


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "pavis-admin"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        arbiter = self.server.arbiter
        if path == "/ready":
            ok = arbiter.ready()
            self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n", "text/plain")
        elif path == "/status":
            body = json.dumps(arbiter.status(), indent=2).encode() + b"\n"
            self._send(200, body, "application/json")
        elif path == "/metrics":
            pub = arbiter.publisher
            view = self.server.collector.sample(pub) if pub is not None else None
            body = render(arbiter.status(), view).encode()
            self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
        else:
            self._send(404, b"not found: try /ready, /status or /metrics\n", "text/plain")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # health checks every second would drown the supervisor's log


class AdminServer:
    def __init__(self, sock: socket.socket, arbiter: Arbiter) -> None:
        self.socket = sock
        server = _Server(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock  # bound by the supervisor before fork, like every listener
        server.arbiter = arbiter
        server.collector = Collector()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="admin", daemon=True)
        self._sampler = Sampler(server.collector, lambda: arbiter.publisher)

    def start(self) -> None:
        self._thread.start()
        self._sampler.start()

    def close(self) -> None:
        self._sampler.close()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
