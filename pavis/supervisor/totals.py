"""Worker snapshots summed: what the admin `/metrics` page reports of the request path.

Owns: reading every live slot's ``pavis.stats`` snapshot from shm and keeping the sums
monotonic across worker restarts (a gone worker's last snapshot is folded into retired
totals), sampled every ``SAMPLE_S`` by a thread of its own. Must not: change anything in the
supervisor or in shm; render anything (``pavis.supervisor.metrics`` does).

Counters are per worker process, so a restarted worker starts again from zero; ``Collector``
hides that in the summed series, and only the per-slot ``pavis_worker_requests_total`` shows
the reset (Prometheus' ``rate()`` handles counter resets). Whatever a worker counted after
its last snapshot (at most about a second) is lost with it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Protocol

from pavis import stats
from pavis.stats import BUCKETS, CODE_CLASSES, RESULTS, RL_DECISIONS, WorkerStats

SAMPLE_S = 1.0  # the sampler thread's period: as often as workers publish


class StatsSource(Protocol):
    """What the collector reads: ``shm.Publisher`` has it."""

    def slots(self) -> Iterable[Any]: ...

    def stats(self, slot: int) -> bytes: ...


class Totals:
    """Summed counters of any number of snapshots."""

    def __init__(self) -> None:
        self.requests = 0
        self.codes = [0] * len(CODE_CLASSES)
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.duration_sum = 0.0
        self.results: dict[str, list[int]] = {}
        self.retries: dict[str, int] = {}
        self.overflows: dict[str, int] = {}
        self.ejections: dict[tuple[str, str], int] = {}
        self.turns: dict[tuple[str, str], list[int]] = {}  # [downs, ups] of active probes
        self.accept_errors = 0
        self.rate_limits: dict[tuple[str, str], list[int]] = {}  # (vhost, route) → decisions
        self.access_log_dropped = 0
        self.spans_exported = 0
        self.spans_dropped = 0

    def add(self, snap: WorkerStats) -> None:
        self.requests += snap.requests
        self.accept_errors += snap.accept_errors
        self.access_log_dropped += snap.access_log_dropped
        self.spans_exported += snap.spans_exported
        self.spans_dropped += snap.spans_dropped
        for i, n in enumerate(snap.codes):
            self.codes[i] += n
        for i, n in enumerate(snap.buckets):
            self.buckets[i] += n
        self.duration_sum += snap.duration_sum
        for c in snap.clusters:
            res = self.results.setdefault(c.name, [0] * len(RESULTS))
            for i, n in enumerate(c.results):
                res[i] += n
            self.retries[c.name] = self.retries.get(c.name, 0) + c.retries
            self.overflows[c.name] = self.overflows.get(c.name, 0) + c.overflows
        for e in snap.endpoints:
            key = (e.cluster, e.endpoint)
            self.ejections[key] = self.ejections.get(key, 0) + e.ejections
            turns = self.turns.setdefault(key, [0, 0])
            turns[0] += e.downs
            turns[1] += e.ups
        for r in snap.rate_limits:
            counts = self.rate_limits.setdefault((r.virtual_host, r.route), [0] * len(RL_DECISIONS))
            for i, n in enumerate(r.decisions):
                counts[i] += n

    def merged(self, other: Totals) -> Totals:
        out = Totals()
        for t in (self, other):
            out.requests += t.requests
            out.accept_errors += t.accept_errors
            out.access_log_dropped += t.access_log_dropped
            out.spans_exported += t.spans_exported
            out.spans_dropped += t.spans_dropped
            out.codes = [a + b for a, b in zip(out.codes, t.codes, strict=True)]
            out.buckets = [a + b for a, b in zip(out.buckets, t.buckets, strict=True)]
            out.duration_sum += t.duration_sum
            for name, res in t.results.items():
                mine = out.results.setdefault(name, [0] * len(RESULTS))
                out.results[name] = [a + b for a, b in zip(mine, res, strict=True)]
            for src, dst in (
                (t.retries, out.retries),
                (t.overflows, out.overflows),
            ):
                for name, n in src.items():
                    dst[name] = dst.get(name, 0) + n
            for key, n in t.ejections.items():
                out.ejections[key] = out.ejections.get(key, 0) + n
            for key, (downs, ups) in t.turns.items():
                turns = out.turns.setdefault(key, [0, 0])
                turns[0] += downs
                turns[1] += ups
            for key, counts in t.rate_limits.items():
                mine = out.rate_limits.setdefault(key, [0] * len(RL_DECISIONS))
                out.rate_limits[key] = [a + b for a, b in zip(mine, counts, strict=True)]
        return out


class View:
    """One consistent reading for rendering: totals, and the live workers' snapshots."""

    def __init__(self, totals: Totals, live: dict[int, WorkerStats]) -> None:
        self.totals = totals
        self.live = live


class Collector:
    """Reads every open slot's snapshot; thread-safe (the admin sampler and page both call)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[int, WorkerStats] = {}  # slot → last snapshot of its current worker
        self._retired = Totals()  # last snapshots of workers that are gone

    def sample(self, source: StatsSource) -> View:
        with self._lock:
            current: dict[int, WorkerStats] = {}
            for info in source.slots():
                snap = stats.decode(source.stats(info.slot))
                old = self._live.get(info.slot)
                if snap is None:
                    if old is not None and info.pid == old.pid:
                        current[info.slot] = old  # same process, unreadable for now: keep it
                    continue
                current[info.slot] = snap
            for slot, old in self._live.items():
                new = current.get(slot)
                if new is None or new.pid != old.pid:
                    self._retired.add(old)  # that worker is gone: keep what it counted
            self._live = current
            live = Totals()
            for snap in current.values():
                live.add(snap)
            return View(live.merged(self._retired), dict(current))


class Sampler:
    """A daemon thread that samples every ``SAMPLE_S`` so restarts between scrapes are seen."""

    def __init__(self, collector: Collector, source: Any) -> None:
        self.collector = collector
        self._source = source  # a callable returning the StatsSource, or None before boot
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            src = self._source()
            if src is not None:
                self.collector.sample(src)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
