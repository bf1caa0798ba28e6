"""A request that may have reached the upstream is sent again only when that is harmless.

The upstream here answers a first request on a connection, then reads the second one and
resets the connection without answering: the second request may have been processed.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from tests.e2e.helpers_worker import Workers, behind_raw, raw
from tests.e2e.rawupstream import RawConn, RawUpstream, ok, path_of

ROUTES = """
      - name: retry_any
        match: {prefix: /any/}
        forward: {cluster: c, retry: {attempts: 2, on: [reset], non_idempotent: true}}
      - name: retry
        match: {prefix: /retry/}
        forward: {cluster: c, retry: {attempts: 2, on: [reset, "503"]}}
      - name: once
        match: {prefix: /}
        forward: {cluster: c}
"""


def answer_then_reset(conn: RawConn) -> None:
    """The first connection answers one request, takes the next and resets; later
    connections answer everything."""
    first = conn.number == 0
    req = conn.read_request()
    conn.send(ok(path_of(req)))
    while True:
        req = conn.read_request()
        if first:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.sock.close()
            return
        conn.send(ok(path_of(req)))


@pytest.fixture()
def env() -> Iterator[tuple[Workers, RawUpstream]]:
    with behind_raw(answer_then_reset, ROUTES) as pair:
        yield pair


def send(port: int, method: str, path: str) -> bytes:
    body = b"x" if method in ("POST", "PATCH") else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    return raw(port, head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body)


@pytest.mark.parametrize(
    ("method", "prefix", "expected", "times"),
    [
        ("POST", "/", 502, 1),  # no policy: never sent twice
        ("PATCH", "/", 502, 1),
        ("POST", "/retry/", 502, 1),  # a policy on reset, but POST is not idempotent
        ("POST", "/any/", 200, 2),  # the policy says a replay is fine
        ("GET", "/", 200, 2),  # idempotent: the stale pooled connection is retried once
        ("PUT", "/retry/", 200, 2),
    ],
)
def test_a_request_is_replayed_only_when_harmless(
    env: tuple[Workers, RawUpstream], method: str, prefix: str, expected: int, times: int
) -> None:
    w, up = env
    first = send(w.port, "GET", prefix + "warm")  # leaves connection 0 idle in the pool
    assert first.startswith(b"HTTP/1.1 200 "), first
    resp = send(w.port, method, prefix + "target")
    assert resp.startswith(b"HTTP/1.1 %d " % expected), resp
    seen = up.received().count(f"{method} {prefix}target ".encode())
    assert seen == times, up.received()
