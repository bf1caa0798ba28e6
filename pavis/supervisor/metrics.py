"""The admin `/metrics` page: worker snapshots summed, plus what the supervisor knows itself.

Owns: the exposition — a prometheus_client custom collector (``Exposition``) that, at each
scrape, samples the workers' shm slots (sums kept by ``pavis.supervisor.totals``) and reads
the supervisor's facts, beside the process metrics of the supervisor and of every worker
(read from /proc by pid). Not prometheus_client's multiprocess mode: that one cannot run
custom collectors and leaves a file per pid behind. Must not: change anything in the
supervisor or in shm. Names, labels and their meaning: docs/OPERATIONS.md#metrics.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

import pavis
from pavis.stats import BUCKETS, CODE_CLASSES, RESULTS, RL_DECISIONS
from pavis.supervisor import events
from pavis.supervisor.generations import Generations
from pavis.supervisor.totals import Collector, Sampler, Totals, View

__all__ = ["Collector", "Exposition", "Sampler", "page", "registry", "render"]

# ------------------------------------------------------------------------ exposition

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# (the last boot, reload or rollback succeeded; unix time of the last that did)
LastReload = tuple[bool, float]


class Supervisor(Protocol):
    """What the exposition reads of the supervisor: ``Arbiter`` has it."""

    gens: Generations

    def status(self) -> dict[str, Any]: ...


class Exposition:
    """The prometheus_client collector behind ``/metrics``: every scrape samples the slots."""

    def __init__(self, supervisor: Supervisor, collector: Collector) -> None:
        self._sup = supervisor
        self._collector = collector

    def collect(self) -> Iterator[Metric]:
        sup = self._sup
        pub = sup.gens.publisher
        view = self._collector.sample(pub) if pub is not None else None
        last = (sup.gens.history.last_ok, sup.gens.history.last_success)
        yield from families(sup.status(), view, events.counts(), last)
        reaction = sup.gens.reaction
        if reaction is not None:
            yield from rate_limit_segment(reaction.keys, *reaction.counters())


def registry(supervisor: Supervisor, collector: Collector) -> CollectorRegistry:
    """The page's registry: the supervisor's own ``process_*`` metrics, then everything else."""
    reg = CollectorRegistry()
    ProcessCollector(registry=reg)
    reg.register(Exposition(supervisor, collector))
    return reg


def page(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)


class _Fixed:
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> list[Metric]:
        return self._metrics


def render(
    status: dict[str, Any],
    view: View | None,
    events_seen: dict[str, int] | None = None,
    last_reload: LastReload = (True, 0.0),
) -> str:
    """The page's text for these facts, without process metrics (``families``)."""
    reg = CollectorRegistry()
    reg.register(_Fixed(list(families(status, view, events_seen or {}, last_reload))))
    return generate_latest(reg).decode()


def families(
    status: dict[str, Any], view: View | None, events_seen: dict[str, int], last: LastReload
) -> Iterator[Metric]:
    """Supervisor facts from ``status`` (``status.snapshot``), the workers' process metrics,
    request metrics from ``view`` (None: no worker snapshot could be read), and the
    conditions the supervisor's listeners met (``pavis.supervisor.events``)."""
    yield from _supervisor(status, last)
    yield from _worker_processes(status["workers"])
    ev = CounterMetricFamily(
        "pavis_control_events_total",
        "Conditions met by the control socket and the admin listener (hang-ups, timeouts, "
        "descriptor exhaustion, shedding); each is logged at most once per 10 s.",
        labels=["event"],
    )
    for event, n in sorted(events_seen.items()):
        ev.add_metric([event], n)
    yield ev
    if view is not None:
        yield from _requests(view.totals)
        yield from _upstreams(view.totals)
        yield from _endpoints(view)
        yield from _rate_limits(view.totals)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _supervisor(status: dict[str, Any], last: LastReload) -> Iterator[Metric]:
    build = GaugeMetricFamily(
        "pavis_build_info",
        "Always 1: the pavis version and the Python that runs the supervisor.",
        labels=["version", "python_version", "python_implementation"],
    )
    py = (platform.python_version(), platform.python_implementation())
    build.add_metric([pavis.__version__, *py], 1)
    yield build
    gen, checksum = status["generation"], status["checksum"] or ""
    yield _gauge("pavis_config_generation", "Generation every worker should serve.", gen)
    yield _gauge("pavis_generation", "Same as pavis_config_generation (older name).", gen)
    for name, doc in (
        ("pavis_config_info", "Always 1: the checksum of the current artifact."),
        ("pavis_artifact_info", "Same as pavis_config_info."),
    ):
        info = GaugeMetricFamily(name, doc, labels=["checksum"])
        info.add_metric([checksum], 1)
        yield info
    ok, success = last
    yield _gauge(
        "pavis_config_last_reload_successful",
        "1 if the last reload or rollback (or the boot) was accepted or unchanged, else 0.",
        int(ok),
    )
    yield _gauge(
        "pavis_config_last_reload_success_timestamp_seconds",
        "Unix time of the last accepted or unchanged reload or rollback (or of the boot).",
        success,
    )
    for name, doc in (
        ("pavis_config_reloads_total", "Reloads and rollbacks (SIGHUP included) by result."),
        ("pavis_reloads_total", "Same as pavis_config_reloads_total (older name)."),
    ):
        reloads = CounterMetricFamily(name, doc, labels=["result"])
        for outcome in ("accepted", "rejected", "timeout", "unchanged"):
            reloads.add_metric([outcome], status["reloads"].get(outcome, 0))
        yield reloads
    yield _gauge("pavis_ready", "1 when every worker serves the current generation.",
                 int(status["ready"]))  # fmt: skip
    workers = status["workers"]
    yield _gauge("pavis_workers", "Worker slots with a live process.",
                 sum(1 for w in workers if w["pid"]))  # fmt: skip
    requests = CounterMetricFamily(
        "pavis_worker_requests_total",
        "Requests served by each worker process (resets when the worker restarts).",
        labels=["slot"],
    )
    generation = GaugeMetricFamily(
        "pavis_worker_generation",
        "Generation each worker slot serves (0: no worker, or none loaded yet).",
        labels=["slot"],
    )
    restarts = CounterMetricFamily(
        "pavis_worker_restarts_total", "Worker restarts by slot.", labels=["slot"]
    )
    for w in workers:
        slot = [str(w["slot"])]
        requests.add_metric(slot, w["requests"])
        generation.add_metric(slot, w["generation"])
        restarts.add_metric(slot, w["restarts"])
    yield from (requests, generation, restarts)


def _worker_processes(workers: list[dict[str, Any]]) -> Iterator[Metric]:
    """``pavis_worker_process_*{slot}``: prometheus_client's ``process_*`` of each live
    worker, read from /proc by pid (the supervisor's own are the unlabelled ``process_*``)."""
    merged: dict[str, Metric] = {}
    for w in workers:
        pid = w["pid"]
        if not pid:
            continue
        proc = ProcessCollector(namespace="pavis_worker", pid=_const(pid), registry=None)
        for fam in proc.collect():
            out = merged.get(fam.name)
            if out is None:
                doc = f"{fam.documentation.rstrip('.')}, of each worker process."
                out = merged[fam.name] = Metric(fam.name, doc, fam.type)
            for s in fam.samples:
                out.add_sample(s.name, {"slot": str(w["slot"]), **s.labels}, s.value)
    return iter(merged.values())


def _const(pid: int) -> Callable[[], int]:
    return lambda: pid


def _requests(t: Totals) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "pavis_accept_errors_total",
        "Client accepts that failed for want of descriptors or memory (accepting pauses).",
        value=t.accept_errors,
    )
    yield CounterMetricFamily(
        "pavis_access_log_dropped_total",
        "Access-log lines dropped because the log's buffer was full (its writer is blocked).",
        value=t.access_log_dropped,
    )
    yield CounterMetricFamily(
        "pavis_trace_spans_exported_total",
        "Trace spans an OTLP receiver accepted.",
        value=t.spans_exported,
    )
    yield CounterMetricFamily(
        "pavis_trace_spans_dropped_total",
        "Trace spans lost: the export queue was full, or an export failed.",
        value=t.spans_dropped,
    )
    req = CounterMetricFamily(
        "pavis_requests_total", "Requests answered, by status class.", labels=["code"]
    )
    for i, code in enumerate(CODE_CLASSES):
        if i or t.codes[i]:
            req.add_metric([code], t.codes[i])
    yield req
    hist = HistogramMetricFamily(
        "pavis_request_duration_seconds", "Time from a request's first byte to its answer."
    )
    cum, buckets = 0, []
    for bound, n in zip(BUCKETS, t.buckets, strict=False):
        cum += n
        buckets.append((repr(float(bound)), float(cum)))
    buckets.append(("+Inf", float(cum + t.buckets[-1])))
    hist.add_metric([], buckets, t.duration_sum)
    yield hist


def _upstreams(t: Totals) -> Iterator[Metric]:
    clusters = sorted(t.results)
    attempts = CounterMetricFamily(
        "pavis_upstream_requests_total",
        "Upstream attempts by cluster and result (5xx: a response with status >= 500).",
        labels=["cluster", "result"],
    )
    for c in clusters:
        for i, result in enumerate(RESULTS):
            attempts.add_metric([c, result], t.results[c][i])
    yield attempts
    retries = CounterMetricFamily(
        "pavis_retries_total", "Retried upstream attempts by cluster.", labels=["cluster"]
    )
    overflows = CounterMetricFamily(
        "pavis_upstream_overflow_total",
        "Requests answered 503 because the cluster's pool was full (max_pending).",
        labels=["cluster"],
    )
    for c in clusters:
        retries.add_metric([c], t.retries.get(c, 0))
        overflows.add_metric([c], t.overflows.get(c, 0))
    yield retries
    yield overflows


def _endpoints(view: View) -> Iterator[Metric]:
    healthy: dict[tuple[str, str], int] = {}
    dropped = 0
    for snap in view.live.values():
        dropped += snap.endpoints_dropped
        for e in snap.endpoints:
            key = (e.cluster, e.endpoint)
            # 0 as soon as one worker avoids it: that worker's share of traffic goes elsewhere.
            healthy[key] = min(healthy.get(key, 1), int(e.healthy))
    labels = ["cluster", "endpoint"]
    gauge = GaugeMetricFamily(
        "pavis_endpoint_healthy",
        "1 if every worker considers the endpoint healthy (active checks, outlier ejection).",
        labels=labels,
    )
    for key, ok in sorted(healthy.items()):
        gauge.add_metric(list(key), ok)
    yield gauge
    ejections = CounterMetricFamily(
        "pavis_endpoint_ejections_total",
        "Outlier ejections by endpoint, summed over the workers (each ejects on its own).",
        labels=labels,
    )
    for key, n in sorted(view.totals.ejections.items()):
        ejections.add_metric(list(key), n)
    yield ejections
    turns = CounterMetricFamily(
        "pavis_endpoint_health_transitions_total",
        "Active health-check verdict changes by endpoint and new state, summed over the workers.",
        labels=[*labels, "to"],
    )
    for key, (downs, ups) in sorted(view.totals.turns.items()):
        turns.add_metric([*key, "unhealthy"], downs)
        turns.add_metric([*key, "healthy"], ups)
    yield turns
    yield _gauge(
        "pavis_stats_endpoints_dropped",
        "Endpoints left out of worker snapshots to fit the shm stats area (16 KiB per worker).",
        dropped,
    )


def _rate_limits(t: Totals) -> Iterator[Metric]:
    decisions = CounterMetricFamily(
        "pavis_rate_limit_decisions_total",
        'Requests under a rate limit by decision (route "": the virtual host\'s own limit; '
        "dry_run: would have been rejected; unkeyed: the key's header was absent, not "
        "limited; untracked: let through, the bucket segment being full).",
        labels=["virtual_host", "route", "decision"],
    )
    for (vhost, route), counts in sorted(t.rate_limits.items()):
        for i, decision in enumerate(RL_DECISIONS):
            decisions.add_metric([vhost, route, decision], counts[i])
    yield decisions


def rate_limit_segment(keys: int, untracked: int, reclaimed: int) -> Iterator[Metric]:
    """The shared bucket segment's own counters (read from it, not from the workers)."""
    yield _gauge("pavis_rate_limit_segment_keys", "Keys the rate-limit segment can track.", keys)
    yield CounterMetricFamily(
        "pavis_rate_limit_untracked_total",
        "Requests let through untracked because their key's bucket held only live keys.",
        value=untracked,
    )
    yield CounterMetricFamily(
        "pavis_rate_limit_reclaimed_total",
        "Segment slots taken over from a key whose state had expired.",
        value=reclaimed,
    )
