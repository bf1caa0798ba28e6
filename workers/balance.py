"""Endpoint choice inside one cluster: round_robin, random and least_request.

Owns: walking the compiler's smooth weighted ``schedule`` (so weights are honoured by every
policy), skipping endpoints that are not healthy, and the per-endpoint in-flight counters
least_request reads. Must not: compute weights or schedules (the compiler did), open
connections, or learn anything (no EWMA, no adaptive weights).
"""

from __future__ import annotations

import random

from pavis.schema import Cluster
from workers.health import Health
from workers.pool import Pool


class EndpointRT:
    """One endpoint as a worker uses it; shared across generations when its config is equal."""

    __slots__ = ("host", "port", "label", "pool", "health", "inflight")

    def __init__(self, host: str, port: int, pool: Pool, health: Health) -> None:
        self.host = host
        self.port = port
        self.label = f"{host}:{port}"
        self.pool = pool
        self.health = health
        self.inflight = 0


class ClusterRT:
    __slots__ = ("name", "endpoints", "sched", "n", "cursor", "lb", "pick")

    def __init__(self, cluster: Cluster, endpoints: list[EndpointRT]) -> None:
        self.name = cluster.name
        self.endpoints = endpoints
        self.sched = tuple(endpoints[i] for i in cluster.schedule) or tuple(endpoints)
        self.n = len(self.sched)
        self.cursor = 0
        self.lb = cluster.lb
        if cluster.lb == "random":
            self.pick = self._random
        elif cluster.lb == "least_request":
            self.pick = self._least
        else:
            self.pick = self._round_robin

    def _walk(self, start: int, exclude: EndpointRT | None) -> EndpointRT | None:
        sched = self.sched
        n = self.n
        i = start
        for _ in range(n):
            ep = sched[i]
            i += 1
            if i == n:
                i = 0
            if ep is not exclude and ep.health.healthy():
                self.cursor = i
                return ep
        if exclude is not None and exclude.health.healthy():
            return exclude  # the only healthy one: retrying on it beats failing
        return None

    def _round_robin(self, exclude: EndpointRT | None = None) -> EndpointRT | None:
        if self.n == 0:
            return None
        return self._walk(self.cursor, exclude)

    def _random(self, exclude: EndpointRT | None = None) -> EndpointRT | None:
        if self.n == 0:
            return None
        return self._walk(random.randrange(self.n), exclude)

    def _least(self, exclude: EndpointRT | None = None) -> EndpointRT | None:
        best = -1
        for ep in self.endpoints:
            if ep is exclude or not ep.health.healthy():
                continue
            if best < 0 or ep.inflight < best:
                best = ep.inflight
        if best < 0:
            return exclude if exclude is not None and exclude.health.healthy() else None
        # Ties go to the next one in schedule order, so weights still shape the spread.
        sched = self.sched
        n = self.n
        i = self.cursor
        for _ in range(n):
            ep = sched[i]
            i += 1
            if i == n:
                i = 0
            if ep.inflight == best and ep is not exclude and ep.health.healthy():
                self.cursor = i
                return ep
        return None
