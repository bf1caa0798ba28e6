"""The admin listener: /ready, /status and /metrics over plain HTTP, served by the supervisor.

Owns: the admin socket's HTTP handling in a background thread. Must not: change anything —
every page is a read of the supervisor's state (``Arbiter.ready()``, ``Arbiter.status()``).
Per-request metrics belong to workers; this page exports what the supervisor knows.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pavis.supervisor.arbiter import Arbiter


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    arbiter: Arbiter


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
            self._send(200, metrics(arbiter.status()).encode(), "text/plain; version=0.0.4")
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
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="admin", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


def metrics(status: dict[str, Any]) -> str:
    """Supervisor-level Prometheus text (exposition format 0.0.4)."""
    lines = [
        "# HELP pavis_generation Current generation.",
        "# TYPE pavis_generation gauge",
        f"pavis_generation {status['generation']}",
        "# HELP pavis_config_info Checksum of the current artifact.",
        "# TYPE pavis_config_info gauge",
        f'pavis_config_info{{checksum="{status["checksum"] or ""}"}} 1',
        "# HELP pavis_ready 1 when every worker serves the current generation.",
        "# TYPE pavis_ready gauge",
        f"pavis_ready {int(status['ready'])}",
        "# HELP pavis_workers Worker slots with a live process.",
        "# TYPE pavis_workers gauge",
        f"pavis_workers {sum(1 for w in status['workers'] if w['pid'])}",
        "# HELP pavis_reloads_total Reloads and rollbacks by outcome.",
        "# TYPE pavis_reloads_total counter",
    ]
    for outcome in ("accepted", "rejected", "timeout", "unchanged"):
        lines.append(
            f'pavis_reloads_total{{result="{outcome}"}} {status["reloads"].get(outcome, 0)}'
        )
    lines += [
        "# HELP pavis_worker_requests_total Requests served by each worker process.",
        "# TYPE pavis_worker_requests_total counter",
    ]
    for w in status["workers"]:
        lines.append(f'pavis_worker_requests_total{{slot="{w["slot"]}"}} {w["requests"]}')
    lines += [
        "# HELP pavis_worker_generation Generation each worker serves.",
        "# TYPE pavis_worker_generation gauge",
    ]
    for w in status["workers"]:
        lines.append(f'pavis_worker_generation{{slot="{w["slot"]}"}} {w["generation"]}')
    lines += [
        "# HELP pavis_worker_restarts_total Worker restarts by slot.",
        "# TYPE pavis_worker_restarts_total counter",
    ]
    for w in status["workers"]:
        lines.append(f'pavis_worker_restarts_total{{slot="{w["slot"]}"}} {w["restarts"]}')
    return "\n".join(lines) + "\n"
