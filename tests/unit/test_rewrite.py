"""workers.rewrite.request_head in-process: the request head a route sends upstream, and
the proxy's own answers built once per route (``RouteRT``)."""

from __future__ import annotations

from tests.unit.routes_inprocess import request, route, state_of
from workers.heads import response_head
from workers.rewrite import request_head

ROUTES = """\
      - name: api
        match: {prefix: /api/}
        request_headers: {set: {x-env: prod}, remove: [cookie, x-forwarded-for]}
        forward: {cluster: c, rewrite: {prefix: /v2/, host: api.internal}}
      - name: moved
        match: {exact: /old}
        response_headers: {remove: [server], set: {x-moved: "yes"}}
        redirect: {status: 301, location: "https://example.com/new"}
      - name: hello
        match: {exact: /hello}
        direct: {status: 200, body: "hi", content_type: text/plain}
      - name: all
        match: {prefix: /}
        forward: {cluster: c}
"""


def test_the_head_sent_upstream_without_route_ops():
    state = state_of(ROUTES)
    req = request(
        b"GET",
        b"/x?q=1",
        (b"Host", b"example.com"),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Hop", b"dropped"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Accept", b"*/*"),
        (b"X-Forwarded-For", b"10.0.0.1"),
        (b"Via", b"1.0 edge"),
    )
    head = request_head(req, route(state, "all"), b"", b"rid1", b"192.0.2.7", b"http")
    assert head == (
        b"GET /x?q=1 HTTP/1.1\r\nAccept: */*\r\nHost: example.com\r\n"
        b"X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\nX-Forwarded-Proto: http\r\n"
        b"X-Forwarded-Host: example.com\r\nVia: 1.0 edge, 1.1 pavis\r\nX-Request-Id: rid1\r\n\r\n"
    )


def test_a_route_rewrites_the_target_and_host_and_its_ops_win_over_the_proxys_fields():
    state = state_of(ROUTES)
    req = request(
        b"POST",
        b"/api/users?id=3",
        (b"Host", b"example.com"),
        (b"Cookie", b"s=1"),
        (b"X-Env", b"dev"),
    )
    framing = b"Content-Length: 4\r\n"
    head = request_head(req, route(state, "api"), framing, b"rid2", b"192.0.2.7", b"https")
    assert head == (
        b"POST /v2/users?id=3 HTTP/1.1\r\nHost: api.internal\r\nX-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: example.com\r\nVia: 1.1 pavis\r\nX-Request-Id: rid2\r\n"
        b"x-env: prod\r\nContent-Length: 4\r\n\r\n"
    )


def test_local_answers_are_built_once_with_the_routes_response_ops():
    state = state_of(ROUTES)
    moved = route(state, "moved")
    head = b"".join(response_head(moved.status, [moved.local_fields], b"", b""))
    assert head == (
        b"HTTP/1.1 301 Moved Permanently\r\nLocation: https://example.com/new\r\n"
        b"Content-Length: 0\r\nx-moved: yes\r\n\r\n"
    )
    hello = route(state, "hello")
    assert hello.local_body == b"hi"
    assert hello.local_fields == (
        b"Server: pavis\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
    )
