"""Local rate limiting end to end: a real `pavis serve` with two workers, its real bucket
segment, requests on fresh connections (so either worker may take each one), /metrics.

Invariants: two workers enforce one limit, not two (exactly the burst passes, whichever
worker served what); a rejection is a 429 with well-formed Retry-After, RateLimit-Policy
and RateLimit fields, keeps the connection, and leaves a pipelined request its own answer;
keys are counted apart, and a request without the key's header is not limited; a dry run
rejects nothing and counts what it would have rejected; the delayed mode makes requests
wait instead of refusing them, and refuses only past the burst; a bucket full of live keys
lets the next key through and counts it; every decision is on /metrics per route. Reload
behaviour is in test_rate_limit_reload.py.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shm import buckets
from tests.e2e.helpers_framing import read_responses
from tests.e2e.helpers_proc import CLI, Serve, needs_workers, wait_for
from tests.e2e.test_metrics import scrape, val
from tests.helpers import config

pytestmark = needs_workers


def _route(name: str, limit: str) -> str:
    return f"""      - name: {name}
        match: {{prefix: /{name}}}
        direct: {{status: 200, body: "{name}", content_type: text/plain}}
        rate_limit: {limit}
"""


ROUTES = {
    "exact": "{rate: 1/m, burst: 10, key: route}",
    "heads": "{rate: 1/m, burst: 2, key: route}",
    "pipelined": "{rate: 1/m, burst: 1, key: route}",
    "perkey": "{rate: 1/m, burst: 1, key: {header: X-Key}}",
    "perip": "{rate: 1/m, burst: 2}",
    "dry": "{rate: 1/m, burst: 2, key: route, dry_run: true}",
    "delayed": "{rate: 20/m, burst: 2, key: route, delay: true}",
    "full": "{rate: 1/m, burst: 1, key: {header: X-Key}}",
}


def limits_config(sv: Serve) -> str:
    routes = "".join(_route(name, limit) for name, limit in ROUTES.items())
    body = f"""virtual_hosts:
  - name: host
    domains: ["host.test"]
    rate_limit: {{rate: 1/m, burst: 3, key: route}}
    routes:
      - name: one
        match: {{prefix: /one}}
        direct: {{status: 200, body: "one"}}
      - name: two
        match: {{prefix: /two}}
        direct: {{status: 200, body: "two"}}
  - name: main
    domains: ["*"]
    routes:
{routes}      - name: rest
        match: {{prefix: /}}
        direct: {{status: 200, body: "rest"}}
"""
    return config(sv.port, body, extra=f'admin: {{address: "127.0.0.1:{sv.admin_port}"}}\n')


@pytest.fixture(scope="module")
def sv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    tmp = tmp_path_factory.mktemp("ratelimit")
    s = Serve(tmp, workers=2)
    try:
        path = tmp / "limits.yaml"
        path.write_text(limits_config(s))
        s.start(path)
        yield s
    finally:
        s.cleanup()


def request(
    sv: Serve, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, header fields by lower-case name, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", sv.port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def statuses(sv: Serve, path: str, n: int, headers: dict[str, str] | None = None) -> list[int]:
    return [request(sv, path, headers)[0] for _ in range(n)]


def decisions(sv: Serve, route: str, vhost: str = "main") -> dict[str, float]:
    m = scrape(sv.admin_port)
    names = ("allowed", "unkeyed", "untracked", "delayed", "dry_run", "rejected")
    return {
        d: val(m, "pavis_rate_limit_decisions_total", virtual_host=vhost, route=route, decision=d)
        for d in names
    }


def wait_decisions(sv: Serve, route: str, vhost: str = "main", **expected: float) -> None:
    """Workers publish their counters about once a second: wait until /metrics says it."""

    def seen() -> bool:
        got = decisions(sv, route, vhost)
        return all(got[k] == v for k, v in expected.items())

    try:
        wait_for(seen, 10.0, f"decisions of {route}: {expected}")
    except AssertionError:
        raise AssertionError(f"{route}: {decisions(sv, route, vhost)} != {expected}") from None


def test_two_workers_enforce_one_limit_exactly(sv: Serve) -> None:
    got = statuses(sv, "/exact", 30)
    assert got.count(200) == 10 and got.count(429) == 20, got
    assert got[:10] == [200] * 10  # the burst first, then nothing: 1/m refills nothing here
    wait_decisions(sv, "exact", allowed=10, rejected=20)


def test_a_virtual_host_limit_covers_all_its_routes(sv: Serve) -> None:
    host = {"Host": "host.test"}
    got = [request(sv, p, host)[0] for p in ("/one", "/two", "/one", "/two", "/one")]
    assert got == [200, 200, 200, 429, 429]
    wait_decisions(sv, "", "host", allowed=3, rejected=2)


def test_a_rejection_is_a_429_with_the_rate_limit_fields(sv: Serve) -> None:
    assert statuses(sv, "/heads", 2) == [200, 200]
    status, fields, body = request(sv, "/heads")
    assert status == 429 and body == b"Too Many Requests\n"
    assert fields["content-length"] == str(len(body))
    assert fields["content-type"].startswith("text/plain")
    retry_after = int(fields["retry-after"])
    assert 1 <= retry_after <= 60  # one request per minute comes back within a minute
    # draft-ietf-httpapi-ratelimit-headers: quota = burst, window = the burst's refill time
    assert fields["ratelimit-policy"] == '"route";q=2;w=120'
    m = re.fullmatch(r'"route";r=0;t=(\d+)', fields["ratelimit"])
    assert m and retry_after <= int(m.group(1)) <= 120, fields["ratelimit"]


def test_a_429_keeps_the_connection_and_a_pipelined_request_gets_its_own_answer(
    sv: Serve,
) -> None:
    assert statuses(sv, "/pipelined", 1) == [200]  # its whole burst
    sock = socket.create_connection(("127.0.0.1", sv.port), timeout=10)
    try:
        # POSTs with a body that the 429 leaves unread, then a GET in the same write. The
        # bodies (themselves requests) must not be read as requests.
        body = b"GET /rest HTTP/1.1\r\nHost: x\r\n\r\n"
        posts = b"".join(
            b"POST /pipelined HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
            for _ in range(3)
        )
        sock.sendall(posts + b"GET /rest HTTP/1.1\r\nHost: x\r\n\r\n")
        got, closed = read_responses(sock, 4, timeout=10.0, check_close=False)
    finally:
        sock.close()
    assert [r.status for r in got] == [429, 429, 429, 200], [r.head for r in got]
    assert [r.body for r in got][-1] == b"rest" and not closed


def test_keys_are_counted_apart_and_a_missing_key_is_not_limited(sv: Serve) -> None:
    assert statuses(sv, "/perkey", 2, {"X-Key": "alice"}) == [200, 429]
    assert statuses(sv, "/perkey", 2, {"X-Key": "bob"}) == [200, 429]
    assert statuses(sv, "/perkey", 3) == [200, 200, 200]  # no X-Key: not limited
    assert statuses(sv, "/perip", 3) == [200, 200, 429]  # one client address
    wait_decisions(sv, "perkey", allowed=2, rejected=2, unkeyed=3)


def test_a_dry_run_rejects_nothing_and_counts_what_it_would_have(sv: Serve) -> None:
    assert statuses(sv, "/dry", 6) == [200] * 6
    wait_decisions(sv, "dry", allowed=2, dry_run=4, rejected=0)


def test_the_delayed_mode_waits_within_the_burst_and_refuses_past_it(sv: Serve) -> None:
    # 20/m: one request every 3 s, burst 2. Requests sent together: the first passes, the
    # second waits its turn (about 3 s) instead of getting a 429, and the rest — past the
    # burst — are refused at once.
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    go = threading.Event()

    def one() -> None:
        go.wait()
        t0 = time.monotonic()
        status = request(sv, "/delayed")[0]
        with lock:
            results.append((status, time.monotonic() - t0))

    threads = [threading.Thread(target=one) for _ in range(5)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(30)
    codes = sorted(s for s, _ in results)
    assert codes == [200, 200, 429, 429, 429], results
    # The waiting one did wait (a lower bound only: a slow machine only makes it longer).
    assert max(d for s, d in results if s == 200) >= 1.0, results
    wait_decisions(sv, "delayed", allowed=1, delayed=1, rejected=3)


def _limit_id(sv: Serve, route: str) -> bytes:
    """The limit's identity as the served artifact has it (``pavctl inspect --json``)."""
    r = subprocess.run(
        [*CLI, "inspect", "--json", str(sv.tmp / "limits.yaml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    model = json.loads(r.stdout)["model"]
    found = [x for x in model["routes"] if x["name"] == route]
    return base64.b64decode(found[0]["rate_limit"]["limit_id"]["base64"])


def test_a_full_bucket_lets_the_next_key_through_and_counts_it(sv: Serve) -> None:
    """A client spraying distinct keys: nine keys aimed at one bucket of eight ways. The
    ninth finds no free way and passes untracked; the others stay limited."""
    with buckets.attach(sv.name) as seg:
        mask = seg.buckets - 1
        ways = seg.ways
        untracked_before = seg.counters()[0]
    limit = _limit_id(sv, "full")
    by_bucket: dict[int, list[str]] = {}
    i = 0
    while True:
        key = f"k{i}"
        i += 1
        keys = by_bucket.setdefault(buckets.key_hash(limit, key.encode()) & mask, [])
        keys.append(key)
        if len(keys) == ways + 1:
            break
    for key in keys[:ways]:
        assert statuses(sv, "/full", 2, {"X-Key": key}) == [200, 429], key
    last = keys[ways]
    assert statuses(sv, "/full", 2, {"X-Key": last}) == [200, 200]  # fails open
    wait_decisions(sv, "full", allowed=ways, rejected=ways, untracked=2)
    m = scrape(sv.admin_port)
    assert val(m, "pavis_rate_limit_untracked_total") == untracked_before + 2
    assert val(m, "pavis_rate_limit_segment_keys") == (mask + 1) * ways


def test_the_segment_is_made_for_the_first_limit_and_gone_when_the_supervisor_stops(
    tmp_path: Path,
) -> None:
    s = Serve(tmp_path, workers=2)
    segment = Path(f"/dev/shm/pavis.{s.name}.rl")
    limited = """      - name: limited
        match: {prefix: /limited}
        direct: {status: 200, body: "limited"}
        rate_limit: {rate: 1/m, burst: 1, key: route}
"""
    try:
        s.start(s.config("A"))
        assert not segment.exists()  # no limit, no segment
        r = s.pavctl("reload", str(s.config("B", extra=limited)))
        assert r.returncode == 0, r.stdout + r.stderr
        assert segment.exists()
        # Workers that booted without a segment attach it on the flip: the limit holds.
        assert statuses(s, "/limited", 3) == [200, 429, 429]
        assert s.stop() == 0
        assert not segment.exists()
    finally:
        s.cleanup()


def test_the_access_log_records_each_decision(tmp_path: Path) -> None:
    """Each request's line says what the limiter decided: allowed, rejected, or "-" on a
    route without a limit."""
    import json

    from tests.e2e.helpers_proc import get

    s = Serve(tmp_path, workers=1)
    log = tmp_path / "access.log"
    body = f"""virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
{_route("once", "{rate: 1/m, burst: 1, key: route}")}      - name: free
        match: {{prefix: /}}
        direct: {{status: 200, body: "free"}}
"""
    path = tmp_path / "log.yaml"
    path.write_text(config(s.port, body, extra=f'access_log: {{path: "{log}"}}\n'))
    try:
        s.start(path)
        assert [get(s.port, p)[0] for p in ("/once", "/once", "/free")] == [200, 429, 200]

        def three() -> list[str] | None:
            text = log.read_text().splitlines() if log.exists() else []
            return text if len(text) >= 3 else None

        recs = [json.loads(x) for x in wait_for(three, 10, "three access-log lines")]
        assert [(r["status"], r["rate_limit"]) for r in recs] == [
            (200, "allowed"),
            (429, "rejected"),
            (200, "-"),
        ]
    finally:
        s.cleanup()
