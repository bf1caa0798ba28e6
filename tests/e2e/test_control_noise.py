"""Noise that hides signal: clients that hang up early and a worker at its descriptor limit
each give one log line per condition and interval, and a counter in /metrics."""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import time

import pytest

from tests.e2e.helpers_proc import Serve, get, needs_workers

pytestmark = needs_workers


def metric(sv: Serve, name: str) -> float:
    total = 0.0
    for line in get(sv.admin_port, "/metrics")[1].decode().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_admin_clients_that_hang_up_early_log_no_traceback(sv: Serve) -> None:
    sv.start(sv.config("A"))
    for _ in range(40):
        with socket.create_connection(("127.0.0.1", sv.admin_port)) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            # Reset, not close: the answer meets a connection that is gone.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    for _ in range(40):
        with socket.create_connection(("127.0.0.1", sv.admin_port)) as s:
            s.sendall(b"GET /status HT")  # and gone before the head is complete
    time.sleep(0.5)
    assert get(sv.admin_port, "/ready")[0] == 200
    logs = sv.logs()
    assert "Traceback" not in logs and "Error" not in logs, logs
    assert len([ln for ln in logs.splitlines() if " admin: " in ln]) <= 2, logs
    assert metric(sv, 'pavis_control_events_total{event="admin_hangup"}') >= 1


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit")
def test_a_worker_at_its_descriptor_limit_says_so_once(sv: Serve) -> None:
    sv.start(sv.config("A"), wrap=["prlimit", "--nofile=128:128", "--"])
    clients = []
    try:
        for _ in range(300):  # more than the worker can hold: it keeps hitting EMFILE
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", sv.port))
            clients.append(s)
        time.sleep(2.5)  # accepting pauses 0.1 s at a time: some 25 failures
        failures = metric(sv, "pavis_accept_errors_total")
    finally:
        for s in clients:
            s.close()
    lines = [ln for ln in sv.logs().splitlines() if "accept:" in ln]
    assert failures >= 5, sv.logs()[-2000:]
    assert 1 <= len(lines) <= 2, lines
