"""Generation flips through real shm: no dropped request, each request on one generation.

Every generation G marks its requests (request header ``x-gen: G`` seen by the upstream) and
its responses (``x-gen: G``), so a response mixing two generations would show.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator

import pytest
import websocket

from shm import WorkerRejected
from tests.e2e.helpers_worker import Workers, echo, header_pairs, request, seal_yaml
from tests.helpers import config, unique_instance
from tests.upstream import Upstream


def gen_config(port: int, gen: int, up: Upstream) -> bytes:
    body = f"""clusters:
  - name: c
    endpoints: ["{up.address}"]
virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - name: all
        match: {{prefix: /}}
        forward: {{cluster: c, timeout: 10s, upgrades: [websocket]}}
        request_headers: {{set: {{x-gen: "{gen}"}}}}
        response_headers: {{set: {{x-gen: "{gen}"}}}}
"""
    return seal_yaml(config(port, body))


@pytest.fixture
def workers() -> Iterator[Workers]:
    with Workers(unique_instance(), 2) as w:
        yield w


def _check(status: int, headers: http.client.HTTPMessage, body: dict[str, object]) -> str:
    assert status == 200
    gens = headers.get_all("x-gen") or []
    assert len(gens) == 1, gens
    seen = header_pairs(body)["x-gen"]  # type: ignore[arg-type]
    assert seen == gens, (seen, gens)  # request and response ran on the same generation
    return gens[0]


def test_burst_during_flip_has_no_failures(
    workers: Workers, ups: tuple[Upstream, Upstream]
) -> None:
    a = ups[0]
    workers.start(gen_config(workers.port, 1, a))
    results: list[str] = []
    errors: list[BaseException] = []
    start = threading.Event()

    def client(n: int, keep_alive: bool) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", workers.port, timeout=10)
        try:
            start.wait()
            for _ in range(n):
                if not keep_alive:
                    conn.close()
                conn.request("GET", "/burst")
                resp = conn.getresponse()
                body = json.loads(resp.read())
                results.append(_check(resp.status, resp.headers, body))
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(20, i % 2 == 0)) for i in range(10)]
    for t in threads:
        t.start()
    start.set()
    time.sleep(0.01)
    workers.flip(gen_config(workers.port, 2, a))
    workers.flip(gen_config(workers.port, 3, a))
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    assert len(results) == 200
    assert set(results) <= {"1", "2", "3"}
    _, headers, _ = echo(workers.port, "/after")
    assert headers["x-gen"] == "3"


def test_slow_request_finishes_on_its_generation(
    workers: Workers, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    workers.start(gen_config(workers.port, 1, a))
    out: dict[str, object] = {}

    def slow() -> None:
        status, headers, body = echo(workers.port, "/delay/1200")
        out["gen"] = _check(status, headers, body)
        out["upstream"] = body["name"]

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    workers.flip(gen_config(workers.port, 2, b))  # the new generation points elsewhere
    status, headers, body = echo(workers.port, "/fast")
    assert (_check(status, headers, body), body["name"]) == ("2", "b")
    t.join(10)
    assert out == {"gen": "1", "upstream": "a"}


def test_keep_alive_connection_moves_to_the_new_generation(
    workers: Workers, ups: tuple[Upstream, Upstream]
) -> None:
    a = ups[0]
    workers.start(gen_config(workers.port, 1, a))
    conn = http.client.HTTPConnection("127.0.0.1", workers.port, timeout=5)
    try:
        conn.request("GET", "/one")
        resp = conn.getresponse()
        assert _check(resp.status, resp.headers, json.loads(resp.read())) == "1"
        workers.flip(gen_config(workers.port, 2, a))
        conn.request("GET", "/two")
        resp = conn.getresponse()
        assert _check(resp.status, resp.headers, json.loads(resp.read())) == "2"
    finally:
        conn.close()


def test_upstream_pool_survives_a_flip_with_the_same_cluster(
    ups: tuple[Upstream, Upstream],
) -> None:
    a = ups[0]
    with Workers(unique_instance(), 1) as w:
        w.start(gen_config(w.port, 1, a))
        before = echo(w.port, "/")[2]["conn"]
        w.flip(gen_config(w.port, 2, a))
        status, headers, body = echo(w.port, "/")
        assert headers["x-gen"] == "2"
        assert body["conn"] == before  # same pooled upstream connection


def test_websocket_survives_a_flip(workers: Workers, ups: tuple[Upstream, Upstream]) -> None:
    a = ups[0]
    workers.start(gen_config(workers.port, 1, a))
    ws = websocket.create_connection(f"ws://127.0.0.1:{workers.port}/ws", timeout=5)
    try:
        ws.send("before")
        assert ws.recv() == "before"
        workers.flip(gen_config(workers.port, 2, a))
        ws.send("after")
        assert ws.recv() == "after"
    finally:
        ws.close()


def test_rejected_generation_keeps_the_old_one_serving(
    workers: Workers, ups: tuple[Upstream, Upstream]
) -> None:
    a = ups[0]
    workers.start(gen_config(workers.port, 1, a))
    good = gen_config(workers.port, 2, a)
    corrupt = good[:-1] + bytes([good[-1] ^ 0xFF])  # payload no longer matches its checksum
    with pytest.raises(WorkerRejected) as info:
        workers.flip(corrupt)
    assert "checksum_mismatch" in str(info.value)
    with pytest.raises(WorkerRejected) as info:
        workers.flip(b"NOPE" + good[4:])
    assert "bad_magic" in str(info.value)
    _, headers, _ = echo(workers.port, "/")
    assert headers["x-gen"] == "1"
    workers.flip(gen_config(workers.port, 4, a))
    _, headers, _ = echo(workers.port, "/")
    assert headers["x-gen"] == "4"


def _big(port: int, n: int, tag: str) -> bytes:
    routes = "".join(
        f'      - {{name: r{i}, match: {{exact: /r/{i}}}, direct: {{status: 200, body: "{i}-{tag}"}}}}\n'
        for i in range(n)
    )
    return seal_yaml(
        config(port, f'virtual_hosts:\n  - name: main\n    domains: ["*"]\n    routes:\n{routes}')
    )


def test_large_table_flips_with_lazy_route_decoding() -> None:
    n = 3000  # above workers.state.EAGER_ROUTES: routes are decoded on first use
    with Workers(unique_instance(), 2) as w:
        w.start(_big(w.port, n, "g1"))
        assert request(w.port, path=f"/r/{n - 1}")[2] == f"{n - 1}-g1".encode()
        second = _big(w.port, n, "g2")
        t0 = time.monotonic()
        w.flip(second)
        print(f"flip of {n} routes acknowledged by 2 workers in {time.monotonic() - t0:.3f} s")
        for i in (0, n // 2, n - 1):
            assert request(w.port, path=f"/r/{i}")[2] == f"{i}-g2".encode()
        assert request(w.port, path=f"/r/{n}")[0] == 404
