"""No client can wedge the control plane: half-sent requests on the admin listener and the
control socket, at the descriptor limit, and reload inputs that block.

Each test drives a real ``pavis serve`` and proves a reload still goes through (and the
supervisor still answers) while the misbehaving clients are there.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers_proc import CLI, Serve, get, needs_workers

pytestmark = needs_workers
FLOOD = 1100  # more than the supervisor's descriptor limit below
NOFILE = ["prlimit", "--nofile=1024:1024", "--"]


@contextlib.contextmanager
def many_fds(n: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 256
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"needs {want} descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def flood(family: int, addr: object, data: bytes, n: int = FLOOD) -> Iterator[None]:
    """``n`` clients that connect, send ``data`` (half a request), then trickle one more
    byte each second and never finish: a per-read timeout never fires on them."""
    socks = []
    for _ in range(n):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setblocking(False)
        socks.append(s)
    # A Unix socket's connect fails (EAGAIN) while the backlog is full: try again for a while.
    waiting = list(socks)
    deadline = time.monotonic() + 5.0
    while waiting and time.monotonic() < deadline:
        again = []
        for s in waiting:
            err = s.connect_ex(addr)  # type: ignore[arg-type]
            if err in (errno.EAGAIN, errno.ECONNREFUSED) and family == socket.AF_UNIX:
                again.append(s)
        waiting = again
        time.sleep(0.02)
    for s in socks:
        with contextlib.suppress(OSError):
            s.send(data)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1.0):
            for s in socks:
                with contextlib.suppress(OSError):
                    s.send(b"x")

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        for s in socks:
            s.close()


def reload_ok(sv: Serve, path: Path, timeout: float = 30.0) -> None:
    try:
        r = sv.pavctl("reload", str(path), "--timeout", "10", timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pavctl reload hung for {timeout:.0f} s")
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit")
def test_half_requests_on_the_admin_listener_at_the_fd_limit_do_not_block_reloads(
    sv: Serve,
) -> None:
    sv.start(sv.config("A"), wrap=NOFILE)
    b = sv.config("B")
    half = b"GET /ready HTTP/1.1\r\nX: "
    with many_fds(FLOOD), flood(socket.AF_INET, ("127.0.0.1", sv.admin_port), half):
        reload_ok(sv, b)
        assert get(sv.admin_port, "/ready", timeout=10)[0] == 200
        assert get(sv.port)[1] == b"B"
    time.sleep(1)
    st = sv.status()  # no stall once they are gone either
    assert st["ready"]
    logs = sv.logs()
    assert "Traceback" not in logs
    assert len(logs.splitlines()) < 100, logs[-3000:]  # one line per condition, not per client
    metrics = get(sv.admin_port, "/metrics")[1].decode()
    assert 'pavis_control_events_total{event="admin_shed"}' in metrics


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit")
def test_stuck_control_clients_at_the_fd_limit_do_not_block_reloads(sv: Serve) -> None:
    sv.start(sv.config("A"), wrap=NOFILE)
    b = sv.config("B")
    with many_fds(FLOOD), flood(socket.AF_UNIX, sv.control, b'{"op": "status", "x": "'):
        reload_ok(sv, b)
        assert get(sv.port)[1] == b"B"
    assert "Traceback" not in sv.logs()


def test_a_reload_of_a_fifo_is_refused_at_once(sv: Serve) -> None:
    sv.start(sv.config("A"))
    fifo = sv.tmp / "cfg.yaml"
    os.mkfifo(fifo)
    try:
        r = sv.pavctl("reload", str(fifo), timeout=20)
    except subprocess.TimeoutExpired:
        # Unblock the supervisor's read so that cleanup can stop it.
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail("a reload of a FIFO hung")
    assert r.returncode == 1
    assert "not a regular file" in r.stderr and "FIFO" in r.stderr, r.stderr
    assert sv.history()[-1]["outcome"] == "rejected"
    reload_ok(sv, sv.config("B"))
    assert get(sv.port)[1] == b"B"


def test_a_request_whose_client_gave_up_is_dropped_not_executed(sv: Serve) -> None:
    sv.start(sv.config("A"))
    worker = sv.status()["workers"][0]["pid"]
    b, c = sv.config("B"), sv.config("C")
    os.kill(worker, signal.SIGSTOP)  # the reload of B waits for this worker, holding the lock
    try:
        slow = subprocess.Popen(
            [*CLI, "reload", str(b), "--timeout", "10", "--control", sv.control],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(0.7)
        with socket.socket(socket.AF_UNIX) as quitter:  # asks for C, gives up before its turn
            quitter.connect(sv.control)
            quitter.sendall(json.dumps({"op": "reload", "path": str(c)}).encode() + b"\n")
            time.sleep(0.5)
    finally:
        os.kill(worker, signal.SIGCONT)
    out, err = slow.communicate(timeout=30)
    assert slow.returncode == 0, err
    time.sleep(1.5)
    sources = [e["source"] for e in sv.history()]
    assert str(c) not in sources, sv.history()
    assert get(sv.port)[1] == b"B"
    assert "dropped" in sv.logs()


def test_a_client_that_half_closes_after_its_request_still_gets_it_done(sv: Serve) -> None:
    sv.start(sv.config("A"))
    b = sv.config("B")
    with socket.socket(socket.AF_UNIX) as client:  # like `nc -N -U`: send, shut down, read
        client.settimeout(30)
        client.connect(sv.control)
        client.sendall(json.dumps({"op": "reload", "path": str(b)}).encode() + b"\n")
        client.shutdown(socket.SHUT_WR)
        answer = json.loads(client.makefile("rb").readline())
    assert answer["ok"] and answer["outcome"] == "accepted", answer
    assert get(sv.port)[1] == b"B"
