"""Cluster and endpoint choice, retries and passive ejection, against real upstreams.

Weighted cluster split, round_robin honouring endpoint weights (exactly, it walks the
compiler's schedule), random, least_request by in-flight count; the retry budget on statuses
and connect errors; the one extra try on a fresh connection when a pooled one went stale;
outlier ejection that expires.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import Counter

from tests.e2e.helpers_worker import Workers, echo, request, seal_yaml
from tests.helpers import config, free_port, unique_instance
from tests.upstream import Upstream


def _serve(body: str) -> Workers:
    w = Workers(unique_instance(), 1)
    try:
        w.start(seal_yaml(config(w.port, body)))
    except BaseException:
        w.close()
        raise
    return w


def _names(port: int, n: int, path: str = "/") -> Counter[str]:
    return Counter(echo(port, path)[2]["name"] for _ in range(n))


def test_weighted_cluster_choice(ups: tuple[Upstream, Upstream]) -> None:
    a, b = ups
    body = f"""clusters:
  - {{name: ca, endpoints: ["{a.address}"]}}
  - {{name: cb, endpoints: ["{b.address}"]}}
virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - name: split
        match: {{prefix: /}}
        forward: {{clusters: [{{name: ca, weight: 3}}, {{name: cb, weight: 1}}]}}
"""
    with _serve(body) as w:
        counts = _names(w.port, 400)
    assert counts["a"] + counts["b"] == 400
    assert 240 <= counts["a"] <= 360


def _cluster(
    ups: tuple[Upstream, Upstream],
    lb: str,
    extra: str = "",
    endpoints: str | None = None,
    route: str = "",
) -> str:
    a, b = ups
    eps = endpoints or f'["{a.address}", {{address: "{b.address}", weight: 2}}]'
    return f"""clusters:
  - name: c
    endpoints: {eps}
    lb: {lb}
{extra}virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - name: all
        match: {{prefix: /}}
        forward: {{cluster: c{route}}}
"""


def test_round_robin_honours_weights_exactly(ups: tuple[Upstream, Upstream]) -> None:
    with _serve(_cluster(ups, "round_robin")) as w:
        counts = _names(w.port, 30)
    assert counts == {"a": 10, "b": 20}


def test_random_uses_every_endpoint(ups: tuple[Upstream, Upstream]) -> None:
    with _serve(_cluster(ups, "random")) as w:
        counts = _names(w.port, 150)
    assert 20 <= counts["a"] <= 85  # expected 50 of 150 (weight 1 of 3)


def test_least_request_avoids_the_busy_endpoint(ups: tuple[Upstream, Upstream]) -> None:
    a, b = ups
    eps = f'["{a.address}", "{b.address}"]'
    with _serve(_cluster(ups, "least_request", endpoints=eps)) as w:
        slow: dict[str, str] = {}

        def busy() -> None:
            slow["name"] = echo(w.port, "/delay/800")[2]["name"]

        t = threading.Thread(target=busy)
        t.start()
        time.sleep(0.2)
        during = _names(w.port, 6)
        t.join(5)
    assert len(during) == 1
    assert slow["name"] not in during


def test_retry_on_status_within_budget(ups: tuple[Upstream, Upstream]) -> None:
    route = ', retry: {attempts: 3, on: ["503"], backoff: {base: 5ms, max: 20ms}}'
    eps = f'["{ups[0].address}"]'  # the flaky counter lives in one upstream process
    with _serve(_cluster(ups, "round_robin", endpoints=eps, route=route)) as w:
        key = uuid.uuid4().hex
        status, _, body = request(w.port, path=f"/flaky/{key}/2")
        assert status == 200  # 2 failures, the 3rd try wins
        assert body.startswith(b"{")  # nothing of the retried 503 bodies leaks into it
        key = uuid.uuid4().hex
        assert request(w.port, path=f"/flaky/{key}/3")[0] == 503  # budget exhausted


def test_retry_on_connect_error_moves_to_another_endpoint(ups: tuple[Upstream, Upstream]) -> None:
    a = ups[0]
    eps = f'["127.0.0.1:{free_port()}", "{a.address}"]'
    route = ", retry: {attempts: 2, on: [connect_error]}"
    with _serve(_cluster(ups, "round_robin", endpoints=eps, route=route)) as w:
        statuses = [request(w.port, path="/bytes3")[0] for _ in range(6)]
    assert statuses == [200] * 6


def test_stale_pooled_connection_is_retried_once_on_a_fresh_one(
    ups: tuple[Upstream, Upstream],
) -> None:
    a = ups[0]
    with _serve(_cluster(ups, "round_robin", endpoints=f'["{a.address}"]')) as w:
        for _ in range(3):
            first = echo(w.port, "/drop")[2]["conn"]
            time.sleep(0.2)  # the upstream has closed the idle pooled connection by now
            status, _, body = echo(w.port, "/")
            assert status == 200
            assert body["conn"] != first
        # A streamed (non-replayable) upload checks the pooled connection before using it.
        echo(w.port, "/drop")
        time.sleep(0.2)
        status, _, data = request(w.port, "POST", "/upload", body=b"u" * 300_000)
        assert status == 200
        assert b'"length": 300000' in data


def test_outlier_ejection_and_its_expiry(ups: tuple[Upstream, Upstream]) -> None:
    a = ups[0]
    eps = f'["127.0.0.1:{free_port()}", "{a.address}"]'
    extra = "    outlier: {consecutive_failures: 1, eject_for: 400ms}\n"
    with _serve(_cluster(ups, "round_robin", extra=extra, endpoints=eps)) as w:
        statuses = [request(w.port, path="/bytes3")[0] for _ in range(10)]
        assert statuses.count(503) == 1  # one failure ejects the dead endpoint
        time.sleep(0.6)  # the ejection expires: nothing is learned
        statuses = [request(w.port, path="/bytes3")[0] for _ in range(4)]
        assert statuses.count(503) == 1


def test_per_try_timeout_retries_on_another_endpoint(ups: tuple[Upstream, Upstream]) -> None:
    """An endpoint that accepts but never answers: the per-try timeout moves the request on."""
    a = ups[0]
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        eps = f'["127.0.0.1:{silent.getsockname()[1]}", "{a.address}"]'
        route = ", timeout: 3s, retry: {attempts: 2, on: [timeout], per_try_timeout: 200ms}"
        with _serve(_cluster(ups, "round_robin", endpoints=eps, route=route)) as w:
            t0 = time.monotonic()
            status, _, body = echo(w.port, "/")
            elapsed = time.monotonic() - t0
    finally:
        silent.close()
    assert (status, body["name"]) == (200, "a")
    assert elapsed >= 0.15  # the first try waited for its per-try timeout
