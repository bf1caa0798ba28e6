"""Upgrades happen only where the artifact allows them and the client asked correctly.

An ``Upgrade`` header is otherwise one more hop-by-hop header: dropped, with the request's
body forwarded, and nothing the client sends after it reaches the upstream unrouted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.helpers_worker import Workers, behind_raw, raw
from tests.e2e.rawupstream import RawConn, RawUpstream, ok, path_of

ROUTES = """
      - name: private
        match: {prefix: /private}
        direct: {status: 403, body: "no\\n"}
      - name: ws
        match: {prefix: /ws}
        forward: {cluster: c, upgrades: [websocket]}
      - name: all
        match: {prefix: /}
        forward: {cluster: c}
"""

SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"


def switch_then_echo_raw(conn: RawConn) -> None:
    """Accepts any upgrade, then echoes whatever arrives as the tunnel's bytes; a request
    that asked for none gets its path back."""
    req = conn.read_request()
    if b"\r\nupgrade:" not in req.lower():
        conn.send(ok(path_of(req)))
        while True:
            req = conn.read_request()
            conn.send(ok(path_of(req)))
    conn.send(SWITCH)
    while True:
        conn._more(time.monotonic() + 30)
        conn.send(bytes(conn.buf))
        conn.buf.clear()


@pytest.fixture()
def env() -> Iterator[tuple[Workers, RawUpstream]]:
    with behind_raw(switch_then_echo_raw, ROUTES) as pair:
        yield pair


def test_a_correct_websocket_upgrade_on_an_allowing_route_tunnels(
    env: tuple[Workers, RawUpstream],
) -> None:
    w, up = env
    resp = raw(
        w.port,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n"
        b"\r\nping",
        timeout=1.0,
    )
    assert resp.startswith(b"HTTP/1.1 101 "), resp
    assert resp.endswith(b"ping")  # the tunnel echoed the bytes after the head
    sent = up.received()
    assert b"Upgrade: websocket\r\n" in sent and b"ping" in sent


@pytest.mark.parametrize(
    "head",
    [
        # no Connection: upgrade
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
        # a route that allows no upgrade
        b"GET /plain HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        # h2c is never upgraded, even on a route that allows websocket
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        # two protocols, an empty value, HTTP/1.0
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket, foo\r\nConnection: upgrade\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade:\r\nConnection: upgrade\r\n\r\n",
        b"GET /ws HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    ],
    ids=["no_connection_token", "route_allows_none", "h2c", "two_protocols", "empty", "http10"],
)
def test_an_upgrade_not_allowed_is_a_plain_request_and_nothing_follows_it_unrouted(
    env: tuple[Workers, RawUpstream], head: bytes
) -> None:
    w, up = env
    # What follows the head would be tunnel bytes if the upgrade were honoured: here a
    # request for a route the proxy answers 403 itself.
    resp = raw(w.port, head + b"GET /private HTTP/1.1\r\nHost: x\r\n\r\n", timeout=2.0)
    assert resp.startswith(b"HTTP/1.1 200 "), resp
    assert b" 101 " not in resp
    sent = up.received()
    assert sent.count(b" HTTP/1.1\r\n") == 1, sent  # one request, sent as HTTP/1.1
    assert b"/private" not in sent, sent
    assert b"upgrade" not in sent.lower() and b"http2-settings" not in sent.lower(), sent


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
        b"Content-Length: 5\r\n\r\nhelloGET /private HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /plain HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: upgrade\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
    ],
    ids=["content_length", "chunked"],
)
def test_a_body_with_an_upgrade_header_is_forwarded_with_the_request(
    env: tuple[Workers, RawUpstream], request_bytes: bytes
) -> None:
    w, up = env
    resp = raw(w.port, request_bytes, timeout=2.0)
    assert resp.startswith(b"HTTP/1.1 200 "), resp
    sent = up.received()
    assert sent.endswith(b"\r\n\r\nhello"), sent
    assert b"Content-Length: 5\r\n" in sent and b"upgrade" not in sent.lower()
    assert b"/private" not in sent
