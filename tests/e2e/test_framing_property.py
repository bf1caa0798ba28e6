"""Mutated request heads against real workers: whatever the bytes, the worker survives,
answers no one else's request, and forwards nothing its routes would not.

Hypothesis mutates well-formed requests (byte flips; inserted CR, LF, NUL, spaces, colons,
commas, ``#``; duplicated, swapped and dropped lines; truncation) and sends each on a fresh
connection, half-closed so a cut-off head ends at once. Then: the worker process still runs,
a victim request on a new connection gets its own path, and every request the ``RawUpstream``
received is a clean HTTP/1.1 head for a path the forwarding route (``/up/`` only) matches,
with one valid Host and none of the headers or paths the other routes catch.
Bounded and deterministic (``derandomize``), so CI sees the same examples every run.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.helpers_framing import echo_once, read_responses, victim
from tests.e2e.helpers_worker import Workers, seal_yaml
from tests.e2e.rawupstream import RawUpstream
from tests.helpers import routing_config, unique_instance

BASES = [
    b"GET /up/a?q=1 HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\nX-A: 1\r\n\r\n",
    b"POST /up/b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nX-B: 2\r\n\r\nabc",
    b"POST /up/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-C: 3\r\n\r\n"
    b"3\r\nabc\r\n0\r\nX-Debug: 1\r\n\r\n",
    b"GET /up/d HTTP/1.0\r\nX-D: 4\r\n\r\n",
    b"GET /up/e HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"
    b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
]
INSERTS = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b"\t", b":", b",", b"#", b"\r\n\r\n",
           b"\r\nX-Debug: 1", b"\r\nTransfer-Encoding: chunked", b"\r\nContent-Length: 1",
           b"\r\nHost: b", b"/../admin"]  # fmt: skip

REQUEST_LINE = re.compile(rb"[A-Z]+ (/up/[^ #\x00-\x20]*) HTTP/1\.1")
# RFC 3986 host (reg-name without commas, or an IP-literal), an optional port.
HOST = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+;=%]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")
FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+): ([^\r\n\x00]*)")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "insert", "dup", "swap", "drop", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        lines = bytes(data).split(b"\r\n")
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(INSERTS))
        elif op in ("dup", "swap", "drop") and len(lines) > 2:
            i = draw(st.integers(1, len(lines) - 2))
            j = draw(st.integers(1, len(lines) - 2))
            if op == "dup":
                lines.insert(j, lines[i])
            elif op == "swap":
                lines[i], lines[j] = lines[j], lines[i]
            else:
                del lines[i]
            data = bytearray(b"\r\n".join(lines))
        elif op == "truncate":
            del data[at:]
    return bytes(data)


def check_forwarded(request: bytes) -> None:
    """One request as the upstream received it: clean, and one the routes forward."""
    head, sep, _ = request.partition(b"\r\n\r\n")
    assert sep, request
    first, *fields = head.split(b"\r\n")
    m = REQUEST_LINE.fullmatch(first)
    assert m is not None, request  # only /up/ is forwarded; no fragment, no other version
    hosts = []
    for line in fields:
        f = FIELD.fullmatch(line)
        assert f is not None, request
        name = f.group(1).lower()
        assert name not in (b"x-debug", b"upgrade", b"transfer-encoding") or (
            name == b"transfer-encoding" and f.group(2) == b"chunked"
        ), request
        if name == b"host":
            hosts.append(f.group(2))
    assert len(hosts) == 1 and HOST.fullmatch(hosts[0]), request


@pytest.fixture(scope="module")
def proxy() -> Iterator[tuple[Workers, RawUpstream]]:
    with RawUpstream(echo_once) as up, Workers(unique_instance(), 1) as w:
        lim = "limits: {header_timeout: 2s}\n"
        w.start(seal_yaml(routing_config(w.port, up.address, extra=lim, prefix="/up/")))
        yield w, up


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=mutated())
def test_mutated_heads_keep_the_invariants(proxy: tuple[Workers, RawUpstream], data: bytes) -> None:
    w, up = proxy
    up.reset(echo_once)
    with socket.create_connection(("127.0.0.1", w.port), timeout=5) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        got, _ = read_responses(s, 3, timeout=4)
    for r in got:
        assert 200 <= r.status < 600
    assert os.waitpid(w.pids[0], os.WNOHANG) == (0, 0), "the worker died"
    for conn in list(up.conns):
        if conn.received:
            check_forwarded(bytes(conn.received))
    victim(w.port, b"/up/")
