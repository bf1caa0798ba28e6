"""Idle upstream connections beyond ``max_idle``: kept for ``surplus_timeout``, then closed.

A burst leaves more idle connections than ``max_idle``. With the surplus kept, the next burst
reuses them instead of connecting again (the churn that cost pavis CPU whenever more
requests were in flight than ``max_idle``); once traffic stops they are closed, down to
``max_idle``. ``surplus_timeout: 0s`` closes them at once, as nginx's ``keepalive N`` does.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

from tests.e2e.helpers_worker import Workers, echo, seal_yaml
from tests.helpers import one_cluster, unique_instance
from tests.upstream import Upstream, launch

BURST = 4


def _established_to(port: int) -> int:
    """Established IPv4 connections whose remote end is 127.0.0.1:``port`` (the workers')."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for r in rows if r[2] == want and r[3] == "01")


def _burst(w: Workers, ms: int) -> set[int]:
    """BURST requests at once, each held ``ms`` by the upstream: the connections they used."""
    with ThreadPoolExecutor(BURST) as ex:
        answers = list(ex.map(lambda i: echo(w.port, f"/delay/{ms}?i={i}"), range(BURST)))
    assert [a[0] for a in answers] == [200] * BURST, answers
    return {a[2]["conn"] for a in answers}


def _settle(up: Upstream, want: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while (got := _established_to(up.port)) != want:
        assert time.monotonic() < deadline, f"{got} connections to the upstream, want {want}"
        time.sleep(0.05)


def _pool(surplus: str) -> str:
    return f"    pool: {{max_connections: 8, max_idle: 1, surplus_timeout: {surplus}}}\n"


def test_a_burst_reuses_the_surplus_of_the_last_one_then_it_is_closed() -> None:
    up = launch("surplus")
    try:
        with Workers(unique_instance(), 1) as w:
            w.start(seal_yaml(one_cluster(w.port, up.address, cluster_extra=_pool("5s"))))
            first = _burst(w, 300)
            assert len(first) == BURST  # four requests in flight: four connections
            second = _burst(w, 100)
            assert second <= first  # the surplus was kept: no new connection
            _settle(up, 1)  # traffic stopped: closed down to max_idle by the timer
            third = _burst(w, 100)
            assert len(third - first) >= BURST - 1  # the surplus is gone: new connections
    finally:
        up.stop()


def test_surplus_timeout_zero_closes_the_surplus_at_once() -> None:
    up = launch("nosurplus")
    try:
        with Workers(unique_instance(), 1) as w:
            w.start(seal_yaml(one_cluster(w.port, up.address, cluster_extra=_pool("0s"))))
            first = _burst(w, 300)
            assert len(first) == BURST
            _settle(up, 1, within=2.0)
            second = _burst(w, 100)
            assert len(second - first) >= BURST - 1
    finally:
        up.stop()


def test_the_loopback_address_is_what_proc_net_tcp_shows() -> None:
    """The helper above reads /proc/net/tcp: check its reading on a connection of our own."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    try:
        assert _established_to(port) == 1
    finally:
        for s in (client, accepted, server):
            s.close()
