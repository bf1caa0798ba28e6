"""Worker counters → snapshot → shm stats area → supervisor sums, in one process.

Real shm (unique instance name, unlinked at the end); the endpoints handed to a snapshot are
plain stand-ins with the attributes ``workers.balance`` objects have.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from pavis import stats
from pavis.supervisor.metrics import Collector, render
from shm import Publisher, Subscriber
from shm.control import STATS_MAX
from tests.helpers import unique_instance
from workers.metrics import Metrics


@pytest.fixture
def pub() -> Iterator[Publisher]:
    with Publisher(unique_instance(), slots=3) as p:
        yield p


def cluster(name: str, n: int, healthy: bool = True) -> Any:
    health = SimpleNamespace(ejections=1, downs=0, ups=0, healthy=lambda: healthy)
    eps = [
        SimpleNamespace(label=f"10.0.{i // 250}.{i % 250}:8080", health=health) for i in range(n)
    ]
    return SimpleNamespace(name=name, endpoints=eps)


def test_durations_land_in_the_bucket_whose_bound_holds_them() -> None:
    m = Metrics()
    for seconds in (0.0, 0.001, 0.0011, 0.25, 10.0, 10.5):
        m.request(200, seconds)
    for status in (101, 302, 404, 499, 503, 0, 600):
        m.request(status, 0.0)
    b = dict(zip((*stats.BUCKETS, float("inf")), m.buckets, strict=True))
    assert b[0.001] == 2 + 7 and b[0.0025] == 1 and b[0.25] == 1 and b[10.0] == 1
    assert b[float("inf")] == 1 and sum(m.buckets) == 13
    assert dict(zip(stats.CODE_CLASSES, m.codes, strict=True)) == {
        "other": 2, "1xx": 1, "2xx": 6, "3xx": 1, "4xx": 2, "5xx": 1
    }  # fmt: skip


def test_upstream_outcomes_by_kind() -> None:
    m = Metrics()
    c = m.cluster("api")
    assert m.cluster("api") is c  # one set of counters per name, whatever the generation
    c.answered(200)
    c.answered(404)
    c.answered(502)
    for kind in ("connect_error", "timeout", "reset", "bad_response", "overflow"):
        c.failed(kind)
    assert dict(zip(stats.RESULTS, c.results, strict=True)) == {
        "success": 2, "connect_error": 1, "timeout": 1, "reset": 1, "bad_response": 1, "5xx": 1
    }  # fmt: skip
    assert c.overflows == 1


def test_a_snapshot_always_fits_the_stats_area() -> None:
    m = Metrics()
    m.cluster("api").answered(200)
    data = m.snapshot(5, [cluster("api", 3)])
    snap = stats.decode(data)
    assert snap is not None and snap.requests == 5 and snap.pid == os.getpid()
    assert len(snap.endpoints) == 3 and snap.endpoints_dropped == 0
    big = m.snapshot(5, [cluster("api", 2000)])  # far more endpoints than 16 KiB holds
    snap = stats.decode(big)
    assert len(big) <= STATS_MAX and snap is not None
    assert 0 < len(snap.endpoints) < 2000
    assert snap.endpoints_dropped == 2000 - len(snap.endpoints)
    assert snap.clusters[0].results[stats.SUCCESS] == 1  # counters are never the ones dropped
    assert stats.decode(b"") is None and stats.decode(b"\x93junk") is None


def test_the_collector_sums_workers_and_keeps_a_gone_workers_counts(pub: Publisher) -> None:
    subs = [Subscriber(pub.name, slot, pub.open_slot(slot)) for slot in range(2)]
    try:
        a, b = Metrics(), Metrics()
        for _ in range(3):
            a.request(200, 0.002)
        b.request(503, 0.2)
        b.cluster("api").failed("timeout")
        subs[0].publish_stats(a.snapshot(3, [cluster("api", 1)]))
        subs[1].publish_stats(b.snapshot(1, [cluster("api", 1, healthy=False)]))
        collector = Collector()
        view = collector.sample(pub)
        assert view.totals.codes[2] == 3 and view.totals.codes[5] == 1
        assert view.totals.results["api"][stats.TIMEOUT] == 1
        text = render(_status(), view)
        assert 'pavis_requests_total{code="2xx"} 3' in text
        assert 'pavis_endpoint_healthy{cluster="api",endpoint="10.0.0.0:8080"} 0' in text
        assert 'pavis_request_duration_seconds_bucket{le="0.0025"} 3' in text
        assert 'pavis_request_duration_seconds_bucket{le="+Inf"} 4' in text

        # Worker 1 dies and its slot is reopened for a new worker with fresh counters.
        subs[1].close()
        pub.close_slot(1)
        subs[1] = Subscriber(pub.name, 1, pub.open_slot(1))
        view = collector.sample(pub)  # nothing published yet by the new one
        assert view.totals.codes[5] == 1 and view.totals.results["api"][stats.TIMEOUT] == 1
        c = Metrics()
        c.request(200, 0.002)
        # Same pid in this test, so tell the collector it is another process by its snapshot.
        snap = stats.decode(c.snapshot(1, []))
        assert snap is not None
        snap.pid += 1
        subs[1].publish_stats(stats.encode(snap))
        view = collector.sample(pub)
        assert view.totals.codes[2] == 4 and view.totals.codes[5] == 1
        assert view.totals.requests == 3 + 1 + 1
    finally:
        for s in subs:
            s.close()


def _status() -> dict[str, Any]:
    return {
        "generation": 3,
        "checksum": "ab" * 16,
        "ready": True,
        "reloads": {"accepted": 2, "rejected": 1},
        "workers": [{"slot": 0, "pid": 1, "requests": 3, "generation": 3, "restarts": 0}],
    }
