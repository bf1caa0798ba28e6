"""The request framing corpus: hostile and odd client request heads against real workers.

Each vector is data: the raw client bytes, the statuses the client must get, and what the
upstream (a ``RawUpstream`` recording every byte) must and must not receive. After every vector a
victim request on a fresh connection must get its own answer, and the worker must still run.
The expectations are what an nginx or HAProxy operator expects (docs/SECURITY.md).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.helpers_framing import echo_once, exchange, read_responses, victim
from tests.e2e.helpers_worker import Workers, seal_yaml
from tests.e2e.rawupstream import RawUpstream
from tests.helpers import config, routing_config, unique_instance

CRLF = b"\r\n"


def head(*lines: bytes, body: bytes = b"") -> bytes:
    return CRLF.join(lines) + CRLF + CRLF + body


def post(*fields: bytes, body: bytes = b"", target: bytes = b"/up") -> bytes:
    return head(b"POST " + target + b" HTTP/1.1", b"Host: a", *fields, body=body)


CHUNKED = b"Transfer-Encoding: chunked"


@dataclass(frozen=True)
class V:
    name: str
    raw: bytes
    statuses: tuple[int, ...]  # what the client gets, in order
    upstream: int = 0  # requests the upstream receives
    has: tuple[bytes, ...] = ()  # must be in what the upstream receives
    lacks: tuple[bytes, ...] = ()  # must not be (case-insensitive)
    closes: bool | None = None  # the proxy closes the client connection after answering


REJECT = {"upstream": 0, "closes": True}

# fmt: off
VECTORS = [
    # ---- regressions: well-formed requests
    V("plain", head(b"GET /ok HTTP/1.1", b"Host: a"), (200,), 1,
      has=(b"GET /ok HTTP/1.1\r\n", b"Host: a\r\n"), closes=False),
    V("exact admin is blocked", head(b"GET /admin HTTP/1.1", b"Host: a"), (403,), closes=False),
    V("exact admin with a query", head(b"GET /admin?x=1 HTTP/1.1", b"Host: a"), (403,)),
    V("header matcher", head(b"GET /x HTTP/1.1", b"Host: a", b"X-Debug: 1"), (403,)),
    # ---- a client cannot claim a verified certificate identity (TLS listeners set these)
    V("forged client-certificate identity", head(b"GET /ok HTTP/1.1", b"Host: a",
      b"X-Client-Cert-Subject: CN=admin", b"x-client-cert-san: URI=spiffe://admin"), (200,), 1,
      lacks=(b"x-client-cert-subject", b"x-client-cert-san", b"spiffe://admin"), closes=False),
    # ---- a query is forwarded as written, however its separators are piled up
    V("query of empty parameters", head(b"GET /ok?&&=&a=1&&a HTTP/1.1", b"Host: a"), (200,), 1,
      has=(b"GET /ok?&&=&a=1&&a HTTP/1.1\r\n",), closes=False),
    V("obs-text value", head(b"GET /t HTTP/1.1", b"Host: a", b"X-N: caf\xe9"), (200,), 1,
      has=(b"X-N: caf\xe9\r\n",)),
    # ---- a User-Agent built to break or forge an access-log line is forwarded as written
    # (the log side: tests/e2e/test_accesslog_fields.py)
    V("hostile user agent", head(b"GET /ok HTTP/1.1", b"Host: a",
      b'User-Agent: q" \\ "status": 500 \x85 \xff\xfe'), (200,), 1,
      has=(b'User-Agent: q" \\ "status": 500 \x85 \xff\xfe\r\n',), closes=False),
    V("pipelined pair", head(b"GET /one HTTP/1.1", b"Host: a") + head(b"GET /admin HTTP/1.1",
      b"Host: a"), (200, 403), 1, has=(b"GET /one ",), lacks=(b"/admin",)),
    V("GET with a body", head(b"GET /g HTTP/1.1", b"Host: a", b"Content-Length: 3", body=b"abc"),
      (200,), 1, has=(b"Content-Length: 3\r\n\r\nabc",)),
    V("Transfer-Encoding CHUNKED", post(b"Transfer-Encoding: CHUNKED", body=b"3\r\nabc\r\n0\r\n\r\n"),
      (200,), 1, has=(b"Content-Length: 3\r\n", b"abc"), lacks=(b"transfer-encoding",)),
    V("Transfer-Encoding with OWS", post(b"Transfer-Encoding: \tchunked ",
      body=b"1\r\nx\r\n0\r\n\r\n"), (200,), 1, has=(b"Content-Length: 1\r\n",)),
    V("chunk extension is not forwarded", post(CHUNKED, body=b"3;ext=1\r\nabc\r\n0\r\n\r\n"),
      (200,), 1, has=(b"abc",), lacks=(b"ext=1",)),
    V("host with port", head(b"GET /h HTTP/1.1", b"Host: a.example:8080"), (200,), 1,
      has=(b"Host: a.example:8080\r\n",)),
    V("IPv6 literal host", head(b"GET /h HTTP/1.1", b"Host: [::1]:80"), (200,), 1,
      has=(b"Host: [::1]:80\r\n",)),
    V("OPTIONS * has no route", head(b"OPTIONS * HTTP/1.1", b"Host: a"), (404,)),
    # ---- request smuggling classics: one framing or none, never two readings
    V("CL.TE", post(b"Content-Length: 6", CHUNKED, body=b"0\r\n\r\nG"), (400,), **REJECT),
    V("TE.CL", post(CHUNKED, b"Content-Length: 3", body=b"0\r\n\r\n"), (400,), **REJECT),
    V("duplicate Content-Length", post(b"Content-Length: 3", b"Content-Length: 3", body=b"abc"),
      (400,), **REJECT),
    V("differing Content-Length", post(b"Content-Length: 3", b"Content-Length: 4", body=b"abcd"),
      (400,), **REJECT),
    V("Content-Length list", post(b"Content-Length: 3, 3", body=b"abc"), (400,), **REJECT),
    V("Content-Length with a sign", post(b"Content-Length: +3", body=b"abc"), (400,), **REJECT),
    V("Content-Length negative", post(b"Content-Length: -1"), (400,), **REJECT),
    V("space before the colon", post(b"Transfer-Encoding : chunked", body=b"0\r\n\r\n"),
      (400,), **REJECT),
    V("header name with a space", head(b"GET / HTTP/1.1", b"Host: a", b"X Y: 1"), (400,), **REJECT),
    V("Host with a space before the colon", head(b"GET / HTTP/1.1", b"Host : a"), (400,),
      **REJECT),
    V("xchunked", post(b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n"), (400,), **REJECT),
    V("chunked, chunked", post(b"Transfer-Encoding: chunked, chunked", body=b"0\r\n\r\n"),
      (400,), **REJECT),
    V("gzip alone", post(b"Transfer-Encoding: gzip", body=b"0\r\n\r\n"), (400,), **REJECT),
    V("chunked with a parameter", post(b"Transfer-Encoding: chunked;q=1", body=b"0\r\n\r\n"),
      (400,), **REJECT),
    V("obs-fold", head(b"GET / HTTP/1.1", b"Host: a", b"X-A: 1", b" folded"), (400,), **REJECT),
    V("obs-fold of Transfer-Encoding", post(b"Transfer-Encoding:", b" chunked",
      body=b"0\r\n\r\n"), (400,), **REJECT),
    V("NUL in a header value", head(b"GET / HTTP/1.1", b"Host: a", b"X-A: a\x00b"), (400,),
      **REJECT),
    V("NUL in the target", head(b"GET /a\x00b HTTP/1.1", b"Host: a"), (400,), **REJECT),
    V("bare CR in a value", head(b"GET / HTTP/1.1", b"Host: a", b"X-A: a\rb"), (400,), **REJECT),
    V("bare CR line ends", b"GET / HTTP/1.1\rHost: a\r\r", (400,), **REJECT),
    V("LF-only line ends", b"GET / HTTP/1.1\nHost: a\n\n", (400,), **REJECT),
    V("LF-only end of head", b"GET / HTTP/1.1\r\nHost: a\n\r\n", (400,), **REJECT),
    V("LF-only chunk lines", post(CHUNKED, body=b"3\nabc\n0\n\n"), (400,), **REJECT),
    V("Transfer-Encoding with an empty element", post(b"Transfer-Encoding: , chunked",
      body=b"1\r\nx\r\n0\r\n\r\n"), (200,), 1, has=(b"Content-Length: 1\r\n",)),
    V("bad chunk size", post(CHUNKED, body=b"zz\r\nabc\r\n0\r\n\r\n"), (400,), **REJECT),
    V("0x chunk size", post(CHUNKED, body=b"0x3\r\nabc\r\n0\r\n\r\n"), (400,), **REJECT),
    V("oversized chunk size", post(CHUNKED, body=b"F" * 17 + b"\r\nabc\r\n0\r\n\r\n"), (400,),
      **REJECT),
    V("chunk longer than its size", post(CHUNKED, body=b"3\r\nabcd\r\n0\r\n\r\n"), (400,),
      **REJECT),
    V("two spaces in the request line", head(b"GET  /sp HTTP/1.1", b"Host: a"), (200,), 1,
      has=(b"GET /sp HTTP/1.1\r\n",)),
    V("header line without a colon", head(b"GET / HTTP/1.1", b"Host: a", b"Nocolon"), (400,),
      **REJECT),
    V("two Host headers", head(b"GET / HTTP/1.1", b"Host: a", b"Host: b"), (400,), **REJECT),
    V("absolute-form with userinfo", head(b"GET http://u@a/x HTTP/1.1", b"Host: a"), (400,),
      **REJECT),
    V("asterisk-form on GET", head(b"GET * HTTP/1.1", b"Host: a"), (400,), **REJECT),
    # ---- 4: trailers are dropped, never headers
    V("trailer X-Debug", post(CHUNKED, body=b"3\r\nabc\r\n0\r\nX-Debug: 1\r\n\r\n"), (200,), 1,
      has=(b"abc",), lacks=(b"x-debug",)),
    V("trailer Upgrade", post(CHUNKED, body=b"3\r\nabc\r\n0\r\nUpgrade: h2c\r\n\r\n"), (200,), 1,
      has=(b"Content-Length: 3\r\n", b"abc"), lacks=(b"upgrade",)),
    V("trailer Host", post(CHUNKED, body=b"1\r\nx\r\n0\r\nHost: evil\r\n\r\n"), (200,), 1,
      has=(b"Host: a\r\n",), lacks=(b"evil",)),
    # ---- 5: a fragment is not part of a request target
    V("fragment on an exact route", head(b"GET /admin#x HTTP/1.1", b"Host: a"), (400,),
      **REJECT),
    V("fragment after a query", head(b"GET /x?a=1#x HTTP/1.1", b"Host: a"), (400,), **REJECT),
    V("absolute-form", head(b"GET http://a.example/ab?q=1 HTTP/1.1", b"Host: b"), (200,), 1,
      has=(b"GET /ab?q=1 HTTP/1.1\r\n", b"Host: a.example\r\n"), lacks=(b"http://",)),
    V("absolute-form reaches exact /admin", head(b"GET HTTP://x/admin HTTP/1.1", b"Host: x"),
      (403,)),
    # ---- 6: Host
    V("empty Host", head(b"GET / HTTP/1.1", b"Host: "), (400,), **REJECT),
    V("Host with a space", head(b"GET / HTTP/1.1", b"Host: a b"), (400,), **REJECT),
    V("Host with a slash", head(b"GET / HTTP/1.1", b"Host: a/b"), (400,), **REJECT),
    V("Host with a comma", head(b"GET / HTTP/1.1", b"Host: a,b"), (400,), **REJECT),
    V("Host with two ports", head(b"GET / HTTP/1.1", b"Host: a:1:2"), (400,), **REJECT),
    V("Host with a bad IPv6 literal", head(b"GET / HTTP/1.1", b"Host: [zz]"), (400,), **REJECT),
    V("Host with a zone id", head(b"GET / HTTP/1.1", b"Host: [fe80::1%25eth0]"), (400,),
      **REJECT),
    V("Host with a quote", head(b"GET / HTTP/1.1", b'Host: "a'), (400,), **REJECT),
    V("HTTP/1.1 without Host", head(b"GET / HTTP/1.1"), (400,), **REJECT),
    V("HTTP/1.0 without Host", head(b"GET /old HTTP/1.0"), (200,), 1,
      has=(b"GET /old HTTP/1.1\r\n", b"Host: 127.0.0.1:")),
    # ---- 7: versions and codings
    V("HTTP/2.0", head(b"GET / HTTP/2.0", b"Host: a"), (505,), **REJECT),
    V("HTTP/0.9", head(b"GET / HTTP/0.9", b"Host: a"), (505,), **REJECT),
    V("HTTP/3.1", head(b"GET / HTTP/3.1", b"Host: a"), (505,), **REJECT),
    V("gzip, chunked", post(b"Transfer-Encoding: gzip, chunked", body=b"3\r\nabc\r\n0\r\n\r\n"),
      (501,), **REJECT),
    V("gzip then chunked fields", post(b"Transfer-Encoding: gzip", CHUNKED,
      body=b"0\r\n\r\n"), (501,), **REJECT),
    V("identity, chunked", post(b"Transfer-Encoding: identity, chunked", body=b"0\r\n\r\n"),
      (501,), **REJECT),
    V("chunked in HTTP/1.0", head(b"POST /up HTTP/1.0", b"Host: a", CHUNKED,
      body=b"0\r\n\r\n"), (400,), **REJECT),
    V("CONNECT", head(b"CONNECT a.example:443 HTTP/1.1", b"Host: a.example:443"), (501,),
      **REJECT),
]
# fmt: on


@pytest.fixture(scope="module")
def proxy() -> Iterator[tuple[Workers, RawUpstream]]:
    with RawUpstream(echo_once) as up, Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(routing_config(w.port, up.address)))
        yield w, up


@pytest.mark.parametrize("v", VECTORS, ids=[v.name for v in VECTORS])
def test_request_vector(proxy: tuple[Workers, RawUpstream], v: V) -> None:
    w, up = proxy
    up.reset(echo_once)
    got, closed = exchange(w.port, v.raw, len(v.statuses))
    assert [r.status for r in got] == list(v.statuses), got
    if v.closes is not None:
        assert closed == v.closes
    seen = up.received()
    assert len([c for c in up.conns if c.received]) == v.upstream, seen
    for part in v.has:
        assert part in seen, seen
    for part in v.lacks:
        assert part.lower() not in seen.lower(), seen
    for r in got:  # item 12: an answer of the proxy's own names nothing internal
        if r.status >= 400 and b"blocked" not in r.body:
            assert r.body.count(b"\n") == 1 and b":" not in r.body, r.body
    victim(w.port)
    assert os.waitpid(w.pids[0], os.WNOHANG) == (0, 0)


def test_pipelined_gets_in_large_writes_are_all_answered() -> None:
    """Item 8: 6,000 pipelined requests in 40,000-byte writes. A read that ends inside a head
    must count only that head's bytes against the limit, not the requests before it."""
    n = 6000
    data = head(b"GET /p/x HTTP/1.1", b"Host: a") * n
    with RawUpstream(echo_once) as up, Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(routing_config(w.port, up.address)))
        with socket.create_connection(("127.0.0.1", w.port), timeout=10) as s:

            def send() -> None:
                for i in range(0, len(data), 40000):
                    s.sendall(data[i : i + 40000])

            t = threading.Thread(target=send, daemon=True)
            t.start()
            got, closed = read_responses(s, n, timeout=30)
            t.join(10)
        assert len(got) == n and {r.status for r in got} == {200}, (len(got), got[-1:])
        assert not closed


def test_a_line_longer_than_the_limit_is_still_cut() -> None:
    """The accounting above still bounds one header line that never ends."""
    with RawUpstream(echo_once) as up, Workers(unique_instance(), 1) as w:
        lim = "limits: {max_request_line: 256, max_header_bytes: 1KiB}\n"
        w.start(seal_yaml(routing_config(w.port, up.address, extra=lim)))
        with socket.create_connection(("127.0.0.1", w.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ")
            status = 0
            for _ in range(20):
                try:
                    s.sendall(b"v" * 200)
                except OSError:
                    break
                time.sleep(0.01)
            got, _ = read_responses(s, 1)
            status = got[0].status if got else 0
        assert status == 431
        assert up.received() == b""


def test_refused_upstream_error_body_names_nothing_internal(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Item 12: a 503 for a refused connect says "Service Unavailable" only; the address
    and the errno text go to the worker's log."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there: connect is refused
    with Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(routing_config(w.port, f"127.0.0.1:{port}")))
        got, _ = exchange(w.port, head(b"GET /x HTTP/1.1", b"Host: a"), 1)
    assert [r.status for r in got] == [503]
    body = got[0].body
    assert body == b"Service Unavailable\n"
    for leak in (str(port).encode(), b"127.0.0.1", b"refused", b"connect"):
        assert leak not in body
    err = capfd.readouterr().err  # the forked worker shares this process's stderr
    assert "answered 503 route all" in err and str(port) in err, err


def test_rejected_heads_get_an_access_log_line(tmp_path: Path) -> None:
    """Item 13b: 400, 414 and 431 heads are logged with what was read of them."""
    log = tmp_path / "access.log"
    extra = f'access_log: {{path: "{log}"}}\nlimits: {{max_request_line: 128, max_headers: 4}}\n'
    body = """clusters:
  - name: c
    endpoints: ["127.0.0.1:9"]
virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - {name: all, match: {prefix: /}, direct: {status: 200}}
"""
    with Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(config(w.port, body, extra=extra)))
        bad = [
            (head(b"GET /frag#x HTTP/1.1", b"Host: a"), 400),
            (head(b"GET /" + b"x" * 200 + b" HTTP/1.1", b"Host: a"), 414),
            (head(b"GET /many HTTP/1.1", b"Host: a", *[b"X-%d: 1" % i for i in range(6)]), 431),
            (head(b"GET /nohost HTTP/1.1"), 400),
        ]
        for raw, status in bad:
            got, _ = exchange(w.port, raw, 1)
            assert [r.status for r in got] == [status]
        deadline = time.monotonic() + 3
        while len(log.read_text().splitlines() if log.exists() else []) < len(bad):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["status"] for r in recs] == [s for _, s in bad]
    assert recs[0]["method"] == "GET" and recs[0]["path"] == "/frag#x"
    assert recs[0]["error"] == "invalid request target"
    assert recs[3]["error"] == "missing Host header"
    assert all(r["client"] == "127.0.0.1" and r["route"] == "" for r in recs)


AGREE = [  # (method, Host, target) the worker and ``pavctl explain`` must answer alike
    ("GET", "a", "/admin"),
    ("GET", "a", "/admin#x"),
    ("GET", "a", "/admin?q#x"),
    ("GET", "a", "/x?q=1"),
    ("GET", "b", "http://a.example/admin"),
    ("GET", "b", "http://a.example/x?y"),
    ("GET", "a", "*"),
    ("OPTIONS", "a", "*"),
    ("GET", "", "/x"),
    ("GET", "a,b", "/x"),
    ("GET", "a:1:2", "/x"),
    ("GET", "[::1]:8", "/x"),
    ("CONNECT", "a:443", "a:443"),
]


def test_explain_answers_as_the_worker_does(proxy: tuple[Workers, RawUpstream]) -> None:
    """Item 5: one reading of the target (``pavis.lookup.split_target``) for both."""
    from pavis.compiler import compile_text
    from pavis.explain import explain

    w, up = proxy
    model = compile_text(routing_config(w.port, up.address), "yaml").model
    for method, host, target in AGREE:
        report = explain(model, method, host, target)
        expected = 200 if report.get("outcome") == "forward" else report["status"]
        raw = head(f"{method} {target} HTTP/1.1".encode(), f"Host: {host}".encode())
        got, _ = exchange(w.port, raw, 1)
        assert [r.status for r in got] == [expected], (method, host, target, report)
        if expected == 200:
            assert got[0].body == report["upstream"]["target"].encode()
