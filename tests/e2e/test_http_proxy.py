"""The forward path end to end: a real forked worker, a real test upstream, real sockets.

Covers actions (direct, redirect, forward), rewrites, header operations, proxy hygiene
(hop-by-hop both ways, X-Forwarded-*, Via, X-Request-Id), keep-alive on both sides,
pipelining, Connection: close, HTTP/1.0, HEAD/204/304, chunked bodies both ways,
Expect: 100-continue and the WebSocket tunnel.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
from collections.abc import Iterator

import pytest
import websocket

from tests.e2e.helpers_worker import Workers, echo, header_pairs, raw, request, seal_yaml
from tests.helpers import config, unique_instance
from tests.upstream import Upstream, launch

ROUTES = """clusters:
  - name: c
    endpoints: ["{up}"]
virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - name: direct
        match: {{exact: /direct}}
        direct: {{status: 200, body: "hello\\n", content_type: text/plain}}
        response_headers: {{set: {{x-direct: "1"}}}}
      - name: redirect
        match: {{prefix: /old/}}
        redirect: {{status: 301, location: "https://example.com/new"}}
      - name: rewrite
        match: {{prefix: /api/}}
        forward: {{cluster: c, rewrite: {{prefix: /v2/, host: api.internal}}}}
      - name: ops
        match: {{prefix: /ops/}}
        forward: {{cluster: c}}
        request_headers: {{set: {{x-env: prod}}, add: {{x-added: one}}, remove: [cookie]}}
        response_headers: {{set: {{x-resp: set}}, add: {{x-resp-add: a}}, remove: [x-upstream]}}
      - name: ws
        match: {{exact: /ws}}
        forward: {{cluster: c, upgrades: [websocket]}}
      - name: all
        match: {{prefix: /}}
        forward: {{cluster: c, timeout: 5s}}
"""


@pytest.fixture(scope="module")
def up() -> Iterator[Upstream]:
    u = launch("a")
    yield u
    u.stop()


@pytest.fixture(scope="module")
def port(up: Upstream) -> Iterator[int]:
    with Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(config(w.port, ROUTES.format(up=up.address))))
        yield w.port


def test_forward_keeps_method_path_query_and_body(port: int) -> None:
    status, headers, body = echo(port, "/some/path?x=1&y=%20", method="PUT", body=b"payload")
    assert status == 200
    assert body["method"] == "PUT"
    assert body["path"] == "/some/path?x=1&y=%20"
    assert body["body"] == "payload"
    assert headers["X-Upstream"] == "a"


def test_proxy_adds_forwarding_headers(port: int) -> None:
    _, _, body = echo(
        port,
        "/",
        headers={"Host": "example.org:8080", "X-Forwarded-For": "1.2.3.4", "Via": "1.0 edge"},
    )
    h = header_pairs(body)
    assert h["host"] == ["example.org:8080"]
    assert h["x-forwarded-for"] == ["1.2.3.4, 127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-host"] == ["example.org:8080"]
    assert h["via"] == ["1.0 edge, 1.1 pavis"]
    assert re.fullmatch(r"[0-9a-f]{32}", h["x-request-id"][0])


def test_request_id_passed_when_present(port: int) -> None:
    _, _, body = echo(port, "/", headers={"X-Request-Id": "abc-123"})
    assert header_pairs(body)["x-request-id"] == ["abc-123"]


def test_request_ids_are_unique(port: int) -> None:
    ids = {header_pairs(echo(port, "/")[2])["x-request-id"][0] for _ in range(5)}
    assert len(ids) == 5


def test_hop_by_hop_request_headers_are_removed(port: int) -> None:
    _, _, body = echo(
        port,
        "/",
        headers={
            "Connection": "keep-alive, X-Secret, X-Forwarded-For, Via",
            "X-Secret": "s",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Connection": "keep-alive",
            "Trailer": "x",
            "X-Kept": "k",
        },
    )
    h = header_pairs(body)
    for name in ("connection", "x-secret", "keep-alive", "te", "proxy-connection", "trailer"):
        assert name not in h, name
    assert h["x-kept"] == ["k"]
    # Naming a header in Connection never removes what the proxy itself adds.
    assert h["x-forwarded-for"] == ["127.0.0.1"]
    assert h["via"] == ["1.1 pavis"]


def test_hop_by_hop_response_headers_are_removed(port: int) -> None:
    q = "h=Connection:X-Up-Secret&h=X-Up-Secret:1&h=Keep-Alive:timeout%3D1&h=X-Up-Kept:2"
    status, headers, _ = request(port, path=f"/status/200?{q}")
    assert status == 200
    assert headers["X-Up-Secret"] is None
    assert headers["Keep-Alive"] is None
    assert headers["X-Up-Kept"] == "2"
    assert headers["Connection"] is None  # keep-alive is the HTTP/1.1 default


def test_request_and_response_header_ops(port: int) -> None:
    status, headers, body = echo(
        port, "/ops/x", headers={"Cookie": "secret=1", "X-Env": "dev", "X-Added": "zero"}
    )
    assert status == 200
    h = header_pairs(body)
    assert "cookie" not in h
    assert h["x-env"] == ["prod"]
    assert h["x-added"] == ["zero", "one"]
    assert headers["X-Resp"] == "set"
    assert headers["X-Resp-Add"] == "a"
    assert headers["X-Upstream"] is None


def test_prefix_and_host_rewrite(port: int) -> None:
    _, _, body = echo(port, "/api/users/7?full=1", headers={"Host": "public.example"})
    assert body["path"] == "/v2/users/7?full=1"
    h = header_pairs(body)
    assert h["host"] == ["api.internal"]
    assert h["x-forwarded-host"] == ["public.example"]


def test_direct_response(port: int) -> None:
    status, headers, body = request(port, path="/direct")
    assert (status, body) == (200, b"hello\n")
    assert headers["Content-Type"] == "text/plain"
    assert headers["X-Direct"] == "1"
    status, headers, body = request(port, "HEAD", "/direct")
    assert (status, body, headers["Content-Length"]) == (200, b"", "6")


def test_redirect(port: int) -> None:
    status, headers, _ = request(port, path="/old/page")
    assert status == 301
    assert headers["Location"] == "https://example.com/new"


def test_head_forwarded_without_body_and_connection_reused(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("HEAD", "/size/1000")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "1000"
        assert resp.read() == b""
        conn.request("GET", "/size/10")
        resp = conn.getresponse()
        assert resp.read() == b"x" * 10
    finally:
        conn.close()


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses(port: int, code: int) -> None:
    data = raw(
        port,
        f"GET /status/{code} HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /bytes3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
    )
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(f"HTTP/1.1 {code}".encode())
    assert b"Transfer-Encoding" not in first
    assert rest.startswith(b"HTTP/1.1 200 OK")  # nothing between: no body was relayed
    assert rest.endswith(b"abc")


def test_keep_alive_on_both_sides(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        seen = []
        for _ in range(4):
            conn.request("GET", "/")
            resp = conn.getresponse()
            seen.append(json.loads(resp.read())["conn"])
        # One worker and sequential requests: one pooled upstream connection carries them all.
        assert len(set(seen)) == 1
    finally:
        conn.close()


def test_pipelined_requests_answered_in_order(port: int) -> None:
    reqs = b"".join(
        f"GET /p{i} HTTP/1.1\r\nHost: x\r\n{'Connection: close' if i == 4 else 'X-N: 1'}\r\n\r\n".encode()
        for i in range(5)
    )
    data = raw(port, reqs)
    paths = re.findall(rb'"path": "(/p\d)"', data)
    assert paths == [b"/p0", b"/p1", b"/p2", b"/p3", b"/p4"]


def test_connection_close_is_honoured(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /bytes3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert b"Connection: close" in data
    assert data.endswith(b"abc")


def test_http10_client(port: int) -> None:
    data = raw(port, b"GET /stream/100 HTTP/1.0\r\nHost: x\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"chunked" not in head.lower()  # a 1.0 client gets a close-delimited body
    assert body == b"x" * 100


def test_chunked_upload_small_and_large(port: int) -> None:
    small = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    data = raw(
        port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + small,
    )
    body = json.loads(data.partition(b"\r\n\r\n")[2])
    assert body["body"] == "hello world"

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"y" * 50_000

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            "/upload",
            body=chunks(),
            encode_chunked=True,
            headers={"Transfer-Encoding": "chunked"},
        )
        result = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert result["length"] == 2_000_000


def test_chunked_and_close_delimited_downloads(port: int) -> None:
    status, headers, body = request(port, path="/stream/300000")
    assert (status, len(body)) == (200, 300000)
    assert headers["Transfer-Encoding"] == "chunked"
    status, headers, body = request(port, path="/nolength/5000")
    assert (status, len(body)) == (200, 5000)
    assert headers["Transfer-Encoding"] == "chunked"  # re-framed for the 1.1 client
    status, headers, body = request(port, path="/size/70000")
    assert headers["Content-Length"] == "70000"
    assert len(body) == 70000


def test_expect_100_continue(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        interim = s.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    echoed = json.loads(body)
    assert echoed["body"] == "hello"
    assert "expect" not in header_pairs(echoed)


def test_upstream_closing_its_connection_is_transparent(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/close")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.headers["Connection"] is None  # the client connection stays open
        resp.read()
        conn.request("GET", "/bytes3")
        assert conn.getresponse().read() == b"abc"
    finally:
        conn.close()


def test_websocket_tunnel(port: int) -> None:
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=5)
    try:
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send_binary(b"\x00\x01" * 40000)
        assert ws.recv() == b"\x00\x01" * 40000
    finally:
        ws.close()
