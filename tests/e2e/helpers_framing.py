"""Client-side helpers of the request framing tests: a raw client that reads whole responses,
and the victim check.

Owns: reading the responses a raw request gets (framed by Content-Length, as the proxy and
``RawUpstream`` write them), and ``victim``: a request on a fresh connection that must get its
own answer. The routing config the framing corpus and the property test share (routes an
attacker wants to get past) is ``tests.helpers.routing_config``.
Must not: start workers or upstreams (``helpers_worker.py``, ``rawupstream.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import time
from dataclasses import dataclass

from tests.e2e.rawupstream import RawConn, ok, path_of


def echo_once(conn: RawConn) -> None:
    """Upstream handler: one request per connection, answered with its path, then close. The
    proxy pools nothing, so every request the upstream sees is on a connection of its own."""
    req = conn.read_request()
    conn.send(ok(path_of(req), b"Connection: close\r\n"))


@dataclass
class Response:
    status: int
    head: bytes
    body: bytes


def read_responses(
    sock: socket.socket, n: int, timeout: float = 3.0, check_close: bool = True
) -> tuple[list[Response], bool]:
    """Up to ``n`` whole responses, and whether the connection closed after them (waited for
    briefly once ``n`` arrived, if ``check_close``)."""
    deadline = time.monotonic() + timeout
    buf = b""
    out: list[Response] = []
    closed = False

    def more() -> bool:
        nonlocal buf, closed
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:
            closed = True
            return False
        if not data:
            closed = True
            return False
        buf += data
        return True

    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            if not more():
                return out, closed
        end = buf.index(b"\r\n\r\n") + 4
        head = buf[:end]
        status = int(head.split(b" ", 2)[1])
        if 100 <= status < 200 and status != 101:
            buf = buf[end:]
            continue
        length = 0
        for line in head.lower().split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while len(buf) < end + length:
            if not more():
                return out, closed
        out.append(Response(status, head, buf[end : end + length]))
        buf = buf[end + length :]
    if check_close and not closed and not buf:
        sock.settimeout(0.3)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        except OSError:
            closed = True
    return out, closed


def exchange(
    port: int, data: bytes, n: int, timeout: float = 3.0, check_close: bool = True
) -> tuple[list[Response], bool]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        # The proxy may close before it has read everything: its answer still counts.
        with contextlib.suppress(OSError):
            s.sendall(data)
        return read_responses(s, n, timeout, check_close)


_victims = itertools.count(1)


def victim(port: int, prefix: bytes = b"/") -> None:
    """A well-formed request on a fresh connection gets its own path back from the upstream."""
    token = b"%svictim/%d" % (prefix, next(_victims))
    got, _ = exchange(port, b"GET %s HTTP/1.1\r\nHost: v\r\n\r\n" % token, 1, check_close=False)
    assert [(r.status, r.body) for r in got] == [(200, token)], got
