"""The upstream-response framing corpus: what a hostile or broken upstream can make pavis do.

Each vector is an upstream that writes exactly the bytes it chooses (``tests.rawupstream``);
the test checks what the client gets and, after each vector, that a victim request on a fresh
client connection gets its own answer — never bytes meant for another client.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.helpers_worker import Workers, behind_raw, raw
from tests.e2e.rawupstream import RawConn, RawUpstream, echo_path, ok, path_of


@pytest.fixture()
def env() -> Iterator[tuple[Workers, RawUpstream]]:
    with behind_raw(echo_path) as pair:
        yield pair


def get(port: int, path: str, timeout: float = 5.0) -> bytes:
    return raw(
        port,
        b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode(),
        timeout=timeout,
    )


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def body_of(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in response else b""


def victims(port: int, n: int = 4) -> None:
    """Fresh clients, each must get exactly its own path back."""
    for i in range(n):
        token = f"/victim/{i}-{time.monotonic_ns()}"
        resp = get(port, token)
        assert status_of(resp) == 200, resp
        assert body_of(resp) == token.encode(), resp


def test_stray_bytes_after_a_response_never_reach_the_next_client(
    env: tuple[Workers, RawUpstream],
) -> None:
    w, up = env

    def late_second_response(conn: RawConn) -> None:
        req = conn.read_request()
        conn.send(ok(b"ok"))
        time.sleep(0.1)
        conn.send(ok(b"STRAY-" + path_of(req)))
        while True:  # then behave, so a reused connection would answer the victims
            req = conn.read_request()
            conn.send(ok(path_of(req)))

    up.reset(late_second_response)
    resp = get(w.port, "/first")
    assert status_of(resp) == 200 and body_of(resp) == b"ok", resp
    time.sleep(0.3)
    up.reset()  # later connections echo their path
    victims(w.port)


def test_bytes_beyond_the_framing_in_the_same_write(env: tuple[Workers, RawUpstream]) -> None:
    w, up = env

    def glued(conn: RawConn) -> None:
        conn.read_request()
        conn.send(ok(b"ok") + b"EXTRA!!!")
        while True:
            req = conn.read_request()
            conn.send(ok(path_of(req)))

    up.reset(glued)
    resp = get(w.port, "/first")
    # The response's own framing holds: two bytes, and the connection is not reused.
    assert body_of(resp) in (b"ok", b""), resp
    if status_of(resp) == 200:
        assert b"Content-Length: 2\r\n" in resp
    up.reset()
    victims(w.port)


# ----------------------------------------------------------------------------- the corpus

HEAD_FLOOD = b"HTTP/1.1 200 OK\r\n" + b"X-Flood: " + b"a" * 100 + b"\r\n"
# (name, what the upstream answers the vector's request with, expected client status;
#  0 = the client connection is closed without a complete response)
VECTORS: list[tuple[str, bytes, int]] = [
    ("cl_and_te", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 502),
    ("duplicate_cl", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk", 502),
    ("te_gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxyz", 502),
    ("te_gzip_chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n", 502),
    ("te_twice", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 502),
    ("status_000", b"HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n", 502),
    ("status_999", b"HTTP/1.1 999 Big\r\nContent-Length: 0\r\n\r\n", 502),
    ("http2_status_line", b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", 502),
    ("not_http", b"SSH-2.0-OpenSSH_9.2\r\n", 502),
    ("lf_only", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 502),
    ("obs_fold", b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok", 502),
    ("nul_in_name", b"HTTP/1.1 200 OK\r\nX\x00A: a\r\nContent-Length: 2\r\n\r\nok", 502),
    ("ctl_in_value", b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 2\r\n\r\nok", 502),
    ("bare_cr_in_value", b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok", 502),
    ("negative_cl", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok", 502),
    ("bad_chunk_size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n", 502),
    ("head_too_large", HEAD_FLOOD * 700, 502),
    ("too_many_headers", b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * 150 + b"Content-Length: 0\r\n\r\n", 502),
    ("endless_interim", b"HTTP/1.1 100 Continue\r\n\r\n" * 4000, 502),
    ("unasked_101", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET /tunnelled HTTP/1.1\r\n\r\n", 502),
    ("bare_101", b"HTTP/1.1 101 Switching Protocols\r\n\r\n", 502),
    ("short_body_then_close", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0),
    ("close_before_head", b"", 502),
    # Well-framed answers whose extra bytes must not survive on the connection.
    ("second_response_glued", ok(b"ok") + ok(b"NOT-YOURS"), 200),
    ("body_after_204", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", 204),
    ("interim_then_final", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok(b"ok"), 200),
]  # fmt: skip


def _answer_once(answer: bytes) -> Callable[[RawConn], None]:
    def handler(conn: RawConn) -> None:
        conn.read_request()
        conn.send(answer)
        if not answer.startswith(b"HTTP/1.1 200") and not answer.startswith(b"HTTP/1.1 204"):
            return  # the handler closes the connection
        while True:  # a connection the proxy wrongly reuses answers every victim wrongly
            conn.read_request()
            conn.send(ok(b"WRONG"))

    return handler


@pytest.mark.parametrize(("name", "answer", "expected"), VECTORS, ids=[v[0] for v in VECTORS])
def test_upstream_response_vector(
    env: tuple[Workers, RawUpstream], name: str, answer: bytes, expected: int
) -> None:
    w, up = env
    up.reset(_answer_once(answer))
    resp = get(w.port, f"/vector/{name}")
    if expected == 0:
        assert status_of(resp) in (0, 200), resp
        if status_of(resp) == 200:  # the head left before the body failed: a short body
            assert resp.endswith(b"abc"), resp
    else:
        assert status_of(resp) == expected, resp
    if expected == 502:
        # The client learns the status, nothing of the upstream's bytes or addresses.
        assert up.address.encode() not in resp and b"127.0.0.1" not in resp, resp
    if name == "second_response_glued":
        assert resp.endswith(b"\r\n\r\nok") and b"NOT-YOURS" not in resp, resp
    up.reset()
    victims(w.port)
    assert os.kill(next(iter(w.pids.values())), 0) is None  # the worker is alive


def test_an_idle_connection_the_upstream_closes_is_closed_at_once(
    env: tuple[Workers, RawUpstream],
) -> None:
    """An upstream's FIN on an idle pooled connection is answered by the proxy's close
    (no CLOSE-WAIT until the endpoint gets traffic again)."""
    w, up = env
    closed: list[bool] = []

    def answer_then_hang_up(conn: RawConn) -> None:
        conn.read_request()
        conn.send(ok(b"ok"))
        time.sleep(0.1)  # the connection is idle in the pool by now
        conn.sock.shutdown(socket.SHUT_WR)
        closed.append(conn.wait_closed(3.0))

    up.reset(answer_then_hang_up)
    assert body_of(get(w.port, "/once")) == b"ok"
    deadline = time.monotonic() + 5
    while not closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert closed == [True]
