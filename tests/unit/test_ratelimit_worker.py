"""``workers.ratelimit`` in-process on a real bucket segment: a route's limits in order (the
virtual host's first), the key each kind reads, the decision names, the 429's fields, and
the per-limit counters the worker publishes. Across processes: tests/e2e/test_rate_limit.py."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from pavis import stats
from pavis.compiler import compile_text
from pavis.schema import Model
from shm import buckets
from tests.helpers import unique_instance
from workers import ratelimit
from workers.metrics import METRICS
from workers.request import Request

CONFIG = """version: 1
listeners: [{address: "127.0.0.1:8080"}]
virtual_hosts:
  - name: vh
    domains: ["*"]
    rate_limit: {rate: 1/m, burst: 3, key: route}
    routes:
      - name: byheader
        match: {prefix: /h}
        direct: {status: 200}
        rate_limit: {rate: 1/m, burst: 1, key: {header: X-Key}}
      - name: dry
        match: {prefix: /d}
        direct: {status: 200}
        rate_limit: {rate: 1/m, burst: 1, dry_run: true}
      - name: plain
        match: {prefix: /}
        direct: {status: 200}
"""


@pytest.fixture
def seg() -> Iterator[buckets.Buckets]:
    name = unique_instance()
    buckets.create(name, keys=1024, mode=0o600, gid=None)
    try:
        with buckets.attach(name) as b:
            yield b
    finally:
        buckets.unlink(name)


@pytest.fixture
def model() -> Model:
    return compile_text(CONFIG, "yaml").model


def limits(model: Model, i: int) -> tuple[ratelimit.LimitRT, ...]:
    vh = model.virtual_hosts[0]
    r = model.routes[i]
    return ratelimit.limits_of(vh.name, vh.rate_limit, r.name, r.rate_limit)


def req(**headers: str) -> Request:
    r = Request()
    r.headers = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return r


def test_a_route_passes_its_virtual_hosts_limit_first_then_its_own(
    model: Model, seg: buckets.Buckets
) -> None:
    lims = limits(model, 0)
    assert [lim.label for lim in lims] == [b'"virtual_host"', b'"route"']
    assert lims[0].counts is METRICS.rate_limit("vh", "")
    assert lims[1].counts is METRICS.rate_limit("vh", "byheader")
    assert ratelimit.check(seg, b"1.2.3.4", req(x_key="a"), lims) == ("allowed", b"")
    decision, fields = ratelimit.check(seg, b"1.2.3.4", req(x_key="a"), lims)
    assert decision == "rejected"
    assert b'RateLimit-Policy: "route";q=1;w=60\r\n' in fields  # the route's limit refused
    # The virtual host's limit counted both (3 at once, for every route of the host).
    assert ratelimit.check(seg, b"1.2.3.4", req(x_key="b"), lims) == ("allowed", b"")
    decision, fields = ratelimit.check(seg, b"1.2.3.4", req(x_key="c"), lims)
    assert decision == "rejected" and b'"virtual_host";q=3;w=180' in fields
    # Unlimited routes have no limits of their own, but their host's.
    assert len(limits(model, 2)) == 1


def test_the_429_fields_are_well_formed(model: Model, seg: buckets.Buckets) -> None:
    lim = limits(model, 0)[1]
    fields = ratelimit.refusal(lim, retry_after_ns=1, reset_ns=59_500_000_000).decode()
    lines = fields.split("\r\n")
    assert lines[-1] == "" and len(lines) == 4
    assert lines[0] == "Retry-After: 1"  # rounded up, never 0
    assert lines[1] == 'RateLimit-Policy: "route";q=1;w=60'
    assert re.fullmatch(r'RateLimit: "route";r=0;t=60', lines[2])


def test_a_request_without_the_key_header_is_not_limited(
    model: Model, seg: buckets.Buckets
) -> None:
    lims = limits(model, 0)[1:]  # the route's only
    before = list(lims[0].counts)
    for _ in range(3):
        assert ratelimit.check(seg, b"1.2.3.4", req(), lims) == ("unkeyed", b"")
    assert ratelimit.check(seg, b"1.2.3.4", req(x_key=""), lims) == ("unkeyed", b"")
    after = lims[0].counts
    assert after[ratelimit.UNKEYED] - before[ratelimit.UNKEYED] == 4
    assert after[ratelimit.REJECTED] == before[ratelimit.REJECTED]


def test_a_dry_run_counts_and_lets_through(model: Model, seg: buckets.Buckets) -> None:
    lims = limits(model, 1)[1:]
    got = [ratelimit.check(seg, b"9.9.9.9", req(), lims)[0] for _ in range(3)]
    assert got == ["allowed", "dry_run", "dry_run"]
    assert ratelimit.check(seg, b"8.8.8.8", req(), lims)[0] == "allowed"  # per client address


def test_without_a_segment_every_request_passes_untracked(model: Model) -> None:
    lims = limits(model, 0)
    before = lims[0].counts[ratelimit.UNTRACKED]
    assert ratelimit.check(None, b"1.2.3.4", req(x_key="a"), lims) == ("untracked", b"")
    assert lims[0].counts[ratelimit.UNTRACKED] == before + 1


def test_decisions_are_in_the_worker_snapshot(model: Model, seg: buckets.Buckets) -> None:
    lims = limits(model, 0)
    ratelimit.check(seg, b"1.2.3.4", req(x_key="z"), lims)
    snap = stats.decode(METRICS.snapshot(0, []))
    assert snap is not None
    got = {(r.virtual_host, r.route): r.decisions for r in snap.rate_limits}
    assert got[("vh", "byheader")] == METRICS.rate_limit("vh", "byheader")
    assert len(got[("vh", "")]) == len(stats.RL_DECISIONS)
