"""Every error status the worker answers itself, and that the worker survives each one.

Upstream side: no route 404, connect refused / connect timeout / no healthy endpoint / pool
overflow 503, reset and bad response 502, route timeout 504. Client side: bad bytes 400,
long request line 414, large or many headers 431, large body 413 (Content-Length and
chunked), slow head 408. Limits come from the artifact.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.e2e.helpers_worker import Workers, raw, request, seal_yaml
from tests.helpers import config, free_port, unique_instance
from tests.upstream import Upstream, launch

LIMITS = (
    "max_request_line: 256, max_header_bytes: 1024, max_headers: 12, "
    "max_body_bytes: 1000, header_timeout: 300ms, keepalive_timeout: 600ms"
)

ROUTES = """clusters:
  - name: c
    endpoints: ["{up}"]
  - name: refused
    endpoints: ["127.0.0.1:{refused}"]
  - name: blackhole
    endpoints: ["127.0.0.1:{blackhole}"]
    connect_timeout: 200ms
  - name: sick
    endpoints: ["{sick}"]
    health_check: {{path: /healthz, interval: 100ms, timeout: 100ms, unhealthy_after: 1, healthy_after: 1}}
  - name: tiny
    endpoints: ["{up}"]
    pool: {{max_connections: 1, max_idle: 1, max_pending: 0}}
  - name: queue
    endpoints: ["{up}"]
    pool: {{max_connections: 1, max_idle: 1, max_pending: 4}}
virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - name: timeout
        match: {{prefix: /timeout/}}
        forward: {{cluster: c, timeout: 300ms, rewrite: {{prefix: /delay/}}}}
      - {{name: refused, match: {{prefix: /refused/}}, forward: {{cluster: refused}}}}
      - {{name: blackhole, match: {{prefix: /blackhole/}}, forward: {{cluster: blackhole}}}}
      - {{name: sick, match: {{prefix: /sick/}}, forward: {{cluster: sick}}}}
      - name: tiny
        match: {{prefix: /tiny/}}
        forward: {{cluster: tiny, rewrite: {{prefix: /delay/}}}}
      - name: queue
        match: {{prefix: /queue/}}
        forward: {{cluster: queue, rewrite: {{prefix: /delay/}}}}
      - {{name: up, match: {{prefix: /up/}}, forward: {{cluster: c, rewrite: {{prefix: /}}}}}}
"""


@pytest.fixture(scope="module")
def ups() -> Iterator[tuple[Upstream, Upstream]]:
    a, sick = launch("a"), launch("sick")
    yield a, sick
    a.stop()
    sick.stop()


@pytest.fixture(scope="module")
def blackhole() -> Iterator[int]:
    """A listener whose accept queue is full: SYNs to it go unanswered (connect timeout)."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.1)
    yield port
    for s in fillers:
        s.close()
    lst.close()


@pytest.fixture(scope="module")
def port(ups: tuple[Upstream, Upstream], blackhole: int) -> Iterator[int]:
    a, sick = ups
    routes = ROUTES.format(
        up=a.address, refused=free_port(), blackhole=blackhole, sick=sick.address
    )
    with Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(config(w.port, routes, LIMITS)))
        yield w.port


def test_no_route_is_404(port: int) -> None:
    assert request(port, path="/nothing/here")[0] == 404


def test_connect_refused_is_503(port: int) -> None:
    assert request(port, path="/refused/x")[0] == 503


def test_connect_timeout_is_503(port: int) -> None:
    t0 = time.monotonic()
    assert request(port, path="/blackhole/x")[0] == 503
    assert time.monotonic() - t0 >= 0.15  # it waited for the connect timeout


def test_no_healthy_endpoint_is_503(port: int, ups: tuple[Upstream, Upstream]) -> None:
    sick = ups[1]
    assert request(port, path="/sick/x")[0] == 200
    request(sick.port, path="/admin/unhealthy")
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            status, _, body = request(port, path="/sick/x")
            if status == 503:
                break
            time.sleep(0.05)
        assert status == 503
        assert body == b"Service Unavailable\n"  # the cluster's name stays in the log
    finally:
        request(sick.port, path="/admin/healthy")
    deadline = time.monotonic() + 5
    while request(port, path="/sick/x")[0] != 200:
        assert time.monotonic() < deadline, "endpoint never came back"
        time.sleep(0.05)


def test_pool_overflow_is_503(port: int) -> None:
    results: list[int] = []

    def one() -> None:
        results.append(request(port, path="/tiny/400")[0])

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results)[0] == 200
    assert 503 in results


def test_pending_requests_wait_for_a_free_connection(port: int) -> None:
    results: list[tuple[int, int]] = []

    def one() -> None:
        status, _, body = request(port, path="/queue/200")
        results.append((status, json.loads(body)["conn"]))

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [s for s, _ in results] == [200, 200, 200]
    assert len({c for _, c in results}) == 1  # one connection, used in turn


def test_upstream_reset_is_502(port: int) -> None:
    assert request(port, path="/up/reset")[0] == 502


def test_bad_upstream_response_is_502(port: int) -> None:
    assert request(port, path="/up/garbage")[0] == 502


def test_route_timeout_is_504(port: int) -> None:
    t0 = time.monotonic()
    assert request(port, path="/timeout/2000")[0] == 504
    assert time.monotonic() - t0 < 1.5


def test_upstream_error_keeps_client_connection(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/up/reset")
        resp = conn.getresponse()
        assert resp.status == 502
        resp.read()
        conn.request("GET", "/up/bytes3")
        assert conn.getresponse().read() == b"abc"
    finally:
        conn.close()


def _status(data: bytes) -> int:
    assert data.startswith(b"HTTP/1.1 "), data[:100]
    return int(data[9:12])


def test_bad_bytes_are_400(port: int) -> None:
    assert _status(raw(port, b"THIS IS NOT HTTP\r\n\r\n")) == 400
    assert _status(raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n")) == 400
    assert _status(raw(port, b"GET / HTTP/1.1\r\n\r\n")) == 400  # HTTP/1.1 needs a Host


def test_long_request_line_is_414(port: int) -> None:
    assert _status(raw(port, b"GET /" + b"a" * 400 + b" HTTP/1.1\r\nHost: x\r\n\r\n")) == 414


def test_large_or_many_headers_are_431(port: int) -> None:
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 2000 + b"\r\n\r\n"
    assert _status(raw(port, big)) == 431
    many = (
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: 1\r\n" % i for i in range(20))
        + b"\r\n"
    )
    assert _status(raw(port, many)) == 431


def test_large_body_is_413(port: int) -> None:
    head = b"POST /up/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
    assert _status(raw(port, head)) == 413
    chunked = (
        b"POST /up/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"400\r\n"
        + b"z" * 1024
        + b"\r\n0\r\n\r\n"
    )
    assert _status(raw(port, chunked)) == 413
    expect = (
        b"POST /up/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
    )
    assert _status(raw(port, expect)) == 413  # refused before any 100 Continue


def test_slow_head_is_408(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /up/bytes3 HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        data = s.recv(65536)
        waited = time.monotonic() - t0
    assert _status(data) == 408
    assert 0.2 <= waited < 3


def test_worker_survives_everything(port: int) -> None:
    assert request(port, path="/up/bytes3")[2] == b"abc"


def test_silent_new_connection_is_closed_after_the_header_timeout(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        t0 = time.monotonic()
        data = s.recv(65536)
        waited = time.monotonic() - t0
    assert data == b""  # closed without an answer: no request was started
    assert 0.2 <= waited < 3


def test_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /up/bytes3 HTTP/1.1\r\nHost: x\r\n\r\n")
        first = s.recv(65536)
        assert first.endswith(b"abc")
        t0 = time.monotonic()
        assert s.recv(65536) == b""  # closed quietly once idle for the keep-alive timeout
        waited = time.monotonic() - t0
    assert 0.5 <= waited < 3
