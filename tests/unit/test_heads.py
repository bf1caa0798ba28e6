"""workers.heads in-process: the hop-by-hop sets, the fields copied from an upstream and the
one builder of every response head the proxy writes."""

from __future__ import annotations

from workers import heads
from workers.heads import (
    HOP_AND_FRAMING,
    SKIP_REQUEST,
    connection_tokens,
    disposition,
    error_response,
    own_fields,
    response_fields,
    response_head,
    status_line,
)


def test_hop_by_hop_and_framing_never_cross_and_the_proxy_writes_its_own_request_fields():
    for name in (b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer"):
        assert name in HOP_AND_FRAMING
    assert {b"transfer-encoding", b"content-length", b"upgrade"} <= HOP_AND_FRAMING
    assert HOP_AND_FRAMING <= SKIP_REQUEST
    written = {b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"via"}
    assert written | {b"x-request-id", b"expect"} <= SKIP_REQUEST
    assert b"cookie" not in SKIP_REQUEST and b"authorization" not in HOP_AND_FRAMING


def test_connection_tokens_name_extra_hop_by_hop_fields():
    assert connection_tokens(None) is None
    assert connection_tokens(b"Keep-Alive") is None and connection_tokens(b"close") is None
    assert connection_tokens(b"close, X-Secret ,Foo") == {b"close", b"x-secret", b"foo"}


def test_status_lines_and_the_connection_field():
    assert status_line(200) == b"HTTP/1.1 200 OK\r\n"
    assert status_line(299) == b"HTTP/1.1 299 Unknown\r\n"
    assert disposition(False, False) == disposition(False, True) == b"Connection: close\r\n"
    assert disposition(True, True) == b"Connection: keep-alive\r\n"
    assert disposition(True, False) == b""


def test_the_head_is_built_in_the_callers_list_in_order():
    fields = [b"A: 1\r\n", b"B: 2\r\n"]
    parts = response_head(404, fields, b"Content-Length: 0\r\n", b"Connection: close\r\n")
    assert parts is fields  # the caller appends its body and joins once
    assert b"".join(parts) == (
        b"HTTP/1.1 404 Not Found\r\nA: 1\r\nB: 2\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    assert b"".join(response_head(101, [], b"Upgrade: ws\r\n", b"")).endswith(b"ws\r\n\r\n")


def test_the_proxys_own_fields():
    assert own_fields(200, 2, b"text/plain", b"", frozenset()) == (
        b"Server: pavis\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
    )
    # A redirect: its Location, no Content-Type for an empty body without one.
    assert own_fields(302, 0, b"", b"/new", frozenset()) == (
        b"Server: pavis\r\nLocation: /new\r\nContent-Length: 0\r\n"
    )
    # No body for 204 and 304: no length; names a route removes are left out, in any case.
    assert own_fields(204, 5, b"text/plain", b"", frozenset()) == b"Server: pavis\r\n"
    dropped = own_fields(200, 2, b"text/plain", b"", frozenset((b"server", b"content-type")))
    assert dropped == b"Content-Length: 2\r\n"


def test_error_answers():
    assert error_response(502, False, False) == (
        b"HTTP/1.1 502 Bad Gateway\r\nServer: pavis\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\n"
        b"Connection: close\r\n\r\nBad Gateway\n"
    )
    head_only = error_response(503, True, True)
    assert head_only.endswith(b"Content-Length: 20\r\n\r\n")  # the length of the GET answer
    assert heads.error_body(503) == b"Service Unavailable\n"


def test_upstream_fields_relayed():
    up = [
        (b"Content-Type", b"text/html"),
        (b"Connection", b"close, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"10"),
        (b"Upgrade", b"websocket"),
        (b"Set-Cookie", b"a=1"),
        (b"X-Internal", b"secret"),
        (b"set-cookie", b"b=2"),
    ]
    fields, upgrade = response_fields(up, b"close, X-Hop", frozenset((b"x-internal",)), False)
    assert b"".join(fields) == b"Content-Type: text/html\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n"
    assert upgrade == b"websocket"
    # Without a body to frame, the upstream's Content-Length says what a GET would get.
    fields, _ = response_fields(up, None, frozenset(), True)
    joined = b"".join(fields)
    assert b"Content-Length: 10\r\n" in joined and b"X-Hop: 1\r\n" in joined
    assert b"Transfer-Encoding" not in joined


def test_the_interim_continue_head():
    assert heads.interim_head(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert error_response(400, True, False) == error_response(400, True, False)
    assert b"Connection" not in error_response(400, True, False)  # keep: nothing said
