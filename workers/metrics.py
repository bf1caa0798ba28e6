"""This worker's request metrics: cheap counters on the request path, one snapshot a second.

Owns: the counters (plain ints and preallocated lists indexed by small ints — the request
path pays a few list increments and one bisect, never a label lookup) and turning them into a
``pavis.stats.WorkerStats`` snapshot that fits the shm stats area. Must not: do I/O (the
heartbeat in ``workers.main`` publishes the bytes), import gevent, or reset anything on a
generation flip — counters live as long as the worker process.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from pavis import stats
from pavis.stats import (
    BUCKETS,
    RESULTS,
    RL_DECISIONS,
    ClusterStats,
    EndpointStats,
    RateLimitStats,
    WorkerStats,
)
from shm.control import STATS_MAX

_ERROR_INDEX = {
    "connect_error": stats.CONNECT_ERROR,
    "timeout": stats.TIMEOUT,
    "reset": stats.RESET,
    "bad_response": stats.BAD_RESPONSE,
}


class ClusterCounters:
    """Upstream outcomes of one cluster name (shared by every generation that has it)."""

    __slots__ = ("results", "retries", "overflows")

    def __init__(self) -> None:
        self.results = [0] * len(RESULTS)
        self.retries = 0
        self.overflows = 0

    def answered(self, status: int) -> None:
        """An attempt got a response head."""
        self.results[stats.STATUS_5XX if status >= 500 else stats.SUCCESS] += 1

    def failed(self, kind: str) -> None:
        """An attempt failed with an ``UpstreamError`` of this ``kind``."""
        if kind == "overflow":
            self.overflows += 1  # never reached an endpoint: not an upstream result
        else:
            self.results[_ERROR_INDEX.get(kind, stats.RESET)] += 1


class Metrics:
    __slots__ = (
        "codes",
        "buckets",
        "duration_sum",
        "clusters",
        "accept_errors",
        "rate_limits",
        "access_log_dropped",
        "spans_exported",
        "spans_dropped",
    )

    def __init__(self) -> None:
        self.codes = [0] * len(stats.CODE_CLASSES)
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.duration_sum = 0.0
        self.clusters: dict[str, ClusterCounters] = {}
        self.accept_errors = 0  # counted by workers.accept
        # (virtual host, route) → decisions by RL_DECISIONS position (workers.ratelimit)
        self.rate_limits: dict[tuple[str, str], list[int]] = {}
        self.access_log_dropped = 0  # lines a full buffer refused (workers.logfile)
        self.spans_exported = 0  # spans a receiver accepted (workers.otlp)
        self.spans_dropped = 0  # spans lost: queue full, export failed or unavailable

    def request(self, status: int, seconds: float) -> None:
        """One finished request: its status and its time from first byte read to answer."""
        c = status // 100
        self.codes[c if 0 < c < 6 else 0] += 1
        # bisect_left: a duration equal to a bound belongs to that bucket (le = "<=").
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.duration_sum += seconds

    def cluster(self, name: str) -> ClusterCounters:
        """The counters of cluster ``name``; one lookup per forwarded request."""
        counters = self.clusters.get(name)
        if counters is None:
            counters = self.clusters[name] = ClusterCounters()
        return counters

    def rate_limit(self, vhost: str, route: str) -> list[int]:
        """The decision counters of one limit ("" route: the virtual host's own); looked up
        once per generation per route, incremented in place by the request path."""
        key = (vhost, route)
        counts = self.rate_limits.get(key)
        if counts is None:
            counts = self.rate_limits[key] = [0] * len(RL_DECISIONS)
        return counts

    def snapshot(self, requests: int, clusters: Iterable[Any]) -> bytes:
        """The encoded ``WorkerStats`` of this worker, with the health of the endpoints of
        ``clusters`` (the serving generation's ``ClusterRT``s; typed ``Any`` because the
        compiled build would otherwise reject the tests' stand-ins, and this runs once a
        second). What the stats area cannot hold is dropped:
        endpoints first (and counted), then rate-limit counters, then — only past some 400
        cluster names — clusters."""
        eps = []
        for c in clusters:
            for ep in c.endpoints:
                h = ep.health
                eps.append(
                    EndpointStats(c.name, ep.label, h.healthy(), h.ejections, h.downs, h.ups)
                )
        snap = WorkerStats(
            stats.VERSION,
            os.getpid(),
            requests,
            list(self.codes),
            list(self.buckets),
            self.duration_sum,
            [
                ClusterStats(name, list(c.results), c.retries, c.overflows)
                for name, c in self.clusters.items()
            ],
            eps,
            0,
            self.accept_errors,
            [RateLimitStats(v, r, list(c)) for (v, r), c in self.rate_limits.items()],
            self.access_log_dropped,
            self.spans_exported,
            self.spans_dropped,
        )
        data = stats.encode(snap)
        while len(data) > STATS_MAX and snap.endpoints:
            keep = len(snap.endpoints) * STATS_MAX // len(data) - 1
            snap.endpoints = snap.endpoints[: max(0, keep)]
            snap.endpoints_dropped = len(eps) - len(snap.endpoints)
            data = stats.encode(snap)
        while len(data) > STATS_MAX and snap.rate_limits:
            keep = len(snap.rate_limits) * STATS_MAX // len(data) - 1
            snap.rate_limits = snap.rate_limits[: max(0, keep)]
            data = stats.encode(snap)
        while len(data) > STATS_MAX and snap.clusters:
            snap.clusters = snap.clusters[: len(snap.clusters) * STATS_MAX // len(data) - 1]
            data = stats.encode(snap)
        return data


METRICS = Metrics()  # one per worker process (created fresh in each forked worker's use)
