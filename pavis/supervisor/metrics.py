"""The admin `/metrics` page: worker snapshots summed, plus what the supervisor knows itself.

Owns: collecting every live slot's ``pavis.stats`` snapshot from shm, keeping the sums
monotonic across worker restarts (a gone worker's last snapshot is folded into retired
totals), and the Prometheus text exposition (format 0.0.4, written by hand: a few dozen lines
do not justify a dependency). Must not: change anything in the supervisor or in shm.

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
from pavis.stats import BUCKETS, CODE_CLASSES, RESULTS, WorkerStats

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
        self.accept_errors = 0

    def add(self, snap: WorkerStats) -> None:
        self.requests += snap.requests
        self.accept_errors += snap.accept_errors
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

    def merged(self, other: Totals) -> Totals:
        out = Totals()
        for t in (self, other):
            out.requests += t.requests
            out.accept_errors += t.accept_errors
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


# ------------------------------------------------------------------------ exposition


def _esc(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _bound(b: float) -> str:
    return repr(float(b))


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: object, **labels: object) -> None:
        if labels:
            inner = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{inner}}} {value}")
        else:
            self.lines.append(f"{name} {value}")


def render(status: dict[str, Any], view: View | None, events: dict[str, int] | None = None) -> str:
    """The whole page: supervisor facts from ``status`` (``status.snapshot``), request
    metrics from ``view`` (None: no worker snapshot could be read), and the conditions the
    supervisor's listeners met (``pavis.supervisor.events``)."""
    out = _Out()
    _supervisor(out, status)
    out.family(
        "pavis_control_events_total",
        "counter",
        "Conditions met by the control socket and the admin listener (hang-ups, timeouts, "
        "descriptor exhaustion, shedding); each is logged at most once per 10 s.",
    )
    for event, n in sorted((events or {}).items()):
        out.sample("pavis_control_events_total", n, event=event)
    if view is not None:
        _requests(out, view.totals)
        _upstreams(out, view.totals)
        _endpoints(out, view)
    return "\n".join(out.lines) + "\n"


def _supervisor(out: _Out, status: dict[str, Any]) -> None:
    out.family("pavis_generation", "gauge", "Current generation.")
    out.sample("pavis_generation", status["generation"])
    out.family("pavis_artifact_info", "gauge", "Checksum of the current artifact.")
    out.sample("pavis_artifact_info", 1, checksum=status["checksum"] or "")
    out.family("pavis_config_info", "gauge", "Same as pavis_artifact_info (older name).")
    out.sample("pavis_config_info", 1, checksum=status["checksum"] or "")
    out.family("pavis_ready", "gauge", "1 when every worker serves the current generation.")
    out.sample("pavis_ready", int(status["ready"]))
    out.family("pavis_workers", "gauge", "Worker slots with a live process.")
    out.sample("pavis_workers", sum(1 for w in status["workers"] if w["pid"]))
    out.family("pavis_reloads_total", "counter", "Reloads and rollbacks by outcome.")
    for outcome in ("accepted", "rejected", "timeout", "unchanged"):
        out.sample("pavis_reloads_total", status["reloads"].get(outcome, 0), result=outcome)
    out.family(
        "pavis_worker_requests_total",
        "counter",
        "Requests served by each worker process (resets when the worker restarts).",
    )
    for w in status["workers"]:
        out.sample("pavis_worker_requests_total", w["requests"], slot=w["slot"])
    out.family("pavis_worker_generation", "gauge", "Generation each worker serves.")
    for w in status["workers"]:
        out.sample("pavis_worker_generation", w["generation"], slot=w["slot"])
    out.family("pavis_worker_restarts_total", "counter", "Worker restarts by slot.")
    for w in status["workers"]:
        out.sample("pavis_worker_restarts_total", w["restarts"], slot=w["slot"])


def _requests(out: _Out, t: Totals) -> None:
    out.family(
        "pavis_accept_errors_total",
        "counter",
        "Client accepts that failed for want of descriptors or memory (accepting pauses).",
    )
    out.sample("pavis_accept_errors_total", t.accept_errors)
    out.family("pavis_requests_total", "counter", "Requests answered, by status class.")
    for i, code in enumerate(CODE_CLASSES):
        if i or t.codes[i]:
            out.sample("pavis_requests_total", t.codes[i], code=code)
    name = "pavis_request_duration_seconds"
    out.family(name, "histogram", "Time from a request's first byte to its answer.")
    cum = 0
    for bound, n in zip(BUCKETS, t.buckets, strict=False):
        cum += n
        out.sample(f"{name}_bucket", cum, le=_bound(bound))
    cum += t.buckets[-1]
    out.sample(f"{name}_bucket", cum, le="+Inf")
    out.sample(f"{name}_sum", repr(t.duration_sum))
    out.sample(f"{name}_count", cum)


def _upstreams(out: _Out, t: Totals) -> None:
    clusters = sorted(t.results)
    out.family(
        "pavis_upstream_requests_total",
        "counter",
        "Upstream attempts by cluster and result (5xx: a response with status >= 500).",
    )
    for c in clusters:
        for i, result in enumerate(RESULTS):
            out.sample("pavis_upstream_requests_total", t.results[c][i], cluster=c, result=result)
    out.family("pavis_retries_total", "counter", "Retried upstream attempts by cluster.")
    for c in clusters:
        out.sample("pavis_retries_total", t.retries.get(c, 0), cluster=c)
    out.family(
        "pavis_upstream_overflow_total",
        "counter",
        "Requests answered 503 because the cluster's pool was full (max_pending).",
    )
    for c in clusters:
        out.sample("pavis_upstream_overflow_total", t.overflows.get(c, 0), cluster=c)


def _endpoints(out: _Out, view: View) -> None:
    healthy: dict[tuple[str, str], int] = {}
    dropped = 0
    for snap in view.live.values():
        dropped += snap.endpoints_dropped
        for e in snap.endpoints:
            key = (e.cluster, e.endpoint)
            # 0 as soon as one worker avoids it: that worker's share of traffic goes elsewhere.
            healthy[key] = min(healthy.get(key, 1), int(e.healthy))
    out.family(
        "pavis_endpoint_healthy",
        "gauge",
        "1 if every worker considers the endpoint healthy (active checks, outlier ejection).",
    )
    for (c, ep), ok in sorted(healthy.items()):
        out.sample("pavis_endpoint_healthy", ok, cluster=c, endpoint=ep)
    out.family("pavis_endpoint_ejections_total", "counter", "Outlier ejections by endpoint.")
    for (c, ep), n in sorted(view.totals.ejections.items()):
        out.sample("pavis_endpoint_ejections_total", n, cluster=c, endpoint=ep)
    out.family(
        "pavis_stats_endpoints_dropped",
        "gauge",
        "Endpoints left out of worker snapshots to fit the shm stats area (16 KiB per worker).",
    )
    out.sample("pavis_stats_endpoints_dropped", dropped)
