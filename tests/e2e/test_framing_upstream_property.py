"""Property: whatever bytes an upstream answers with, no response crosses clients.

Hypothesis mutates a well-formed upstream response (byte flips, inserted CR / LF / NUL /
colons / spaces, truncation, duplicated header lines, bytes appended past the framing); a
raw upstream answers the mutated bytes, then keeps the connection open and answers later
requests on it correctly. Invariants: the worker stays up, the client gets a status it can
parse or a closed connection, and victim requests afterwards get exactly their own answers —
no byte of a mutated answer (a glued ``EVIL`` response, a body longer than its framing)
reaches another client.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.helpers_worker import Workers, behind_raw
from tests.e2e.rawupstream import RawConn, RawUpstream, ok, path_of

BASE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
INSERTS = [b"\r", b"\n", b"\r\n", b"\x00", b":", b" ", b"\t", b"0", b"\r\n\r\n", ok(b"EVIL")]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([BASE, CHUNKED])))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "truncate", "duplicate", "append"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(INSERTS))
        elif kind == "truncate":
            del data[at:]
        elif kind == "duplicate":
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
        else:
            data += draw(st.sampled_from(INSERTS))
    return bytes(data)


ANSWERS: dict[bytes, bytes] = {}


def handler(conn: RawConn) -> None:
    while True:
        req = conn.read_request(timeout=10)
        path = path_of(req)
        answer = ANSWERS.get(path)
        if answer is None:  # a victim: its own path, unless this connection was poisoned
            conn.send(ok(path))
            continue
        conn.send(answer)  # then, if the proxy reuses the connection, it behaves again


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[Workers, RawUpstream]]:
    # Mutated answers time out quickly (a truncated head waits for the rest); victims, on the
    # same cluster and pool, get time to spare on a busy machine, so a slow victim is never
    # mistaken for a crossed answer.
    routes = """
      - name: victim
        match: {prefix: /victim/}
        forward: {cluster: c, timeout: 10s}
      - name: all
        match: {prefix: /}
        forward: {cluster: c, timeout: 400ms}
"""
    with behind_raw(handler, routes) as pair:
        yield pair


def exchange(port: int, path: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(answer=mutated())
def test_no_upstream_answer_crosses_clients(
    env: tuple[Workers, RawUpstream], answer: bytes
) -> None:
    w, _ = env
    path = b"/m/%d" % time.monotonic_ns()
    ANSWERS[path] = answer
    resp = exchange(w.port, path)
    assert resp == b"" or resp.startswith(b"HTTP/1.1 "), resp
    for _ in range(2):
        victim = b"/victim/%d" % time.monotonic_ns()
        got = exchange(w.port, victim)
        assert got.startswith(b"HTTP/1.1 200 "), got
        assert got.endswith(b"\r\n\r\n" + victim), (answer, got)
    assert os.kill(next(iter(w.pids.values())), 0) is None
