"""Run real workers (``workers.main.run`` in forked children) against a test Publisher.

Owns: the worker harness of the data-plane tests — a listener bound by the test, a shm
Publisher with a unique instance name, forked workers, generation flips, and cleanup by pid
and by unlinking every segment of the instance. Also small raw-HTTP client helpers.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pavis import artifact
from pavis.compiler import compile_text
from shm import Publisher
from tests.e2e.rawupstream import Handler, RawUpstream
from tests.helpers import config, unique_instance

REPO = Path(__file__).resolve().parents[2]


def seal_yaml(text: str) -> bytes:
    return artifact.seal(compile_text(text, "yaml"))


RAW_ROUTES = """
      - name: all
        match: {prefix: /}
        forward: {cluster: c, timeout: 5s}
"""


@contextlib.contextmanager
def behind_raw(handler: Handler, routes: str = RAW_ROUTES) -> Iterator[tuple[Workers, RawUpstream]]:
    """One worker in front of a ``RawUpstream(handler)`` as cluster ``c``; ``routes`` is the
    YAML of virtual host ``main``'s route list (domains ``*``)."""
    with RawUpstream(handler) as up, Workers(unique_instance(), 1) as w:
        body = (
            f'clusters:\n  - name: c\n    endpoints: ["{up.address}"]\n'
            f'virtual_hosts:\n  - name: main\n    domains: ["*"]\n    routes:{routes}'
        )
        w.start(seal_yaml(config(w.port, body)))
        yield w, up


class Workers:
    """A Publisher, a bound listener and ``n`` forked workers serving it."""

    def __init__(self, name: str, n: int = 1) -> None:
        self.name = name
        self.n = n
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port: int = self.sock.getsockname()[1]
        self.pub = Publisher(name, slots=8)
        self.pids: dict[int, int] = {}
        self.generation = 0

    def start(self, artifact_bytes: bytes, timeout: float = 15.0) -> int:
        gen = self.pub.publish(artifact_bytes)
        self.pub.activate(gen)
        for slot in range(self.n):
            self.spawn(slot)
        self.pub.wait_acked(gen, timeout)
        self.generation = gen
        return gen

    def spawn(self, slot: int) -> int:
        fd = self.pub.open_slot(slot)
        pid = os.fork()
        if pid == 0:  # the child never returns into pytest
            try:
                from workers.main import run

                run(self.name, slot, fd, {"public": self.sock})
            finally:
                os._exit(70)
        self.pids[slot] = pid
        return pid

    def flip(self, artifact_bytes: bytes, timeout: float = 15.0) -> int:
        gen = self.pub.publish(artifact_bytes)
        self.pub.activate(gen)
        self.pub.wait_acked(gen, timeout)
        self.generation = gen
        return gen

    def wait_exit(self, pid: int, timeout: float = 10.0) -> int | None:
        """The child's exit code; None if it is still running after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                raise AssertionError(
                    f"worker {pid} was reaped by someone else in this process"
                ) from None
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.01)
        return None

    def stop(self) -> dict[int, int | None]:
        codes: dict[int, int | None] = {}
        for slot, pid in self.pids.items():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            try:
                code = self.wait_exit(pid)
            except AssertionError:  # already reaped elsewhere: nothing left to stop
                codes[slot] = None
                continue
            if code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                code = self.wait_exit(pid)
            codes[slot] = code
        self.pids.clear()
        return codes

    def close(self) -> None:
        self.stop()
        self.pub.close(unlink=True)
        self.sock.close()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- clients


def request(
    port: int,
    method: str = "GET",
    path: str = "/",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.headers, data
    finally:
        conn.close()


def echo(port: int, path: str = "/", **kw: Any) -> tuple[int, http.client.HTTPMessage, Any]:
    status, headers, data = request(port, path=path, **kw)
    return status, headers, json.loads(data) if data.startswith(b"{") else data


def raw(port: int, data: bytes, timeout: float = 5.0, read_until_close: bool = True) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or times out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                if not read_until_close:
                    break
        return out


def header_pairs(echo_body: dict[str, Any]) -> dict[str, list[str]]:
    """The upstream's view of request headers: lower-case name → values."""
    out: dict[str, list[str]] = {}
    for k, v in echo_body["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


def run_program(name: str) -> subprocess.CompletedProcess[str]:
    """Run ``tests/e2e/programs/<name>.py`` with ``python -m`` in a fresh interpreter (gevent
    never runs inside the pytest process) and require that it exits 0 after printing exactly
    ``ok``; returns the run for more checks."""
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", f"tests.e2e.programs.{name}"],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr
    return out
