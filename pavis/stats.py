"""The worker stats snapshot: what a worker publishes in its shm stats area every second.

Owns: the snapshot's shape (msgspec Structs), its msgpack encoding, and the fixed tables both
sides index by position — status classes, latency bucket bounds, upstream result kinds. A
worker (``workers.metrics``) fills it; the supervisor (``pavis.supervisor.metrics``) sums and
renders it. Must not: import anything of the runtime or the supervisor; it is the contract
between them, and both import it.

Counters are per worker process and cumulative since the process started; they do not reset
on a generation flip. Clusters and endpoints are named, not numbered: the names are stable
across generations, positions are not.
"""

from __future__ import annotations

import msgspec

# Bumped when the snapshot's shape changes; a snapshot of another version is ignored.
VERSION = 1

# requests_total{code}: index 0 collects anything outside 100..599.
CODE_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")

# request_duration_seconds: upper bounds; a snapshot has one more bucket, for +Inf.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# upstream_requests_total{result}: one per attempt. "5xx" is a response with status >= 500.
RESULTS = ("success", "connect_error", "timeout", "reset", "bad_response", "5xx")
SUCCESS, CONNECT_ERROR, TIMEOUT, RESET, BAD_RESPONSE, STATUS_5XX = range(len(RESULTS))

# rate_limit_decisions_total{decision}, in rank order (a request under two limits is logged
# with the higher): unkeyed = the key's header was absent (not limited); untracked = the
# bucket segment was full or missing (let through); dry_run = would have been rejected.
RL_DECISIONS = ("allowed", "unkeyed", "untracked", "delayed", "dry_run", "rejected")

_OPTS = {"array_like": True, "gc": False, "forbid_unknown_fields": True}


class ClusterStats(msgspec.Struct, **_OPTS):
    name: str
    results: list[int]  # by RESULTS position
    retries: int
    overflows: int  # pool max_pending exceeded: answered 503 without trying


class EndpointStats(msgspec.Struct, **_OPTS):
    cluster: str
    endpoint: str  # "host:port"
    healthy: bool  # neither failing active checks nor ejected, as this worker sees it
    ejections: int  # outlier ejections since the endpoint object was created in this worker
    downs: int = 0  # active-probe verdicts turned unhealthy, counted like ejections
    ups: int = 0  # and turned healthy again


class RateLimitStats(msgspec.Struct, **_OPTS):
    virtual_host: str
    route: str  # "" for the virtual host's own limit
    decisions: list[int]  # by RL_DECISIONS position


class WorkerStats(msgspec.Struct, **_OPTS):
    version: int
    pid: int
    requests: int
    codes: list[int]  # by CODE_CLASSES position
    buckets: list[int]  # per bucket, not cumulative; len(BUCKETS) + 1
    duration_sum: float  # seconds
    clusters: list[ClusterStats]
    endpoints: list[EndpointStats]
    endpoints_dropped: int  # endpoints left out to fit the shm stats area
    accept_errors: int = 0  # accepts that failed for want of descriptors or memory
    rate_limits: list[RateLimitStats] = msgspec.field(default_factory=list)
    access_log_dropped: int = 0  # access-log lines dropped: the writer's buffer was full
    spans_exported: int = 0  # trace spans an OTLP receiver accepted
    spans_dropped: int = 0  # trace spans lost: export queue full, export failed


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(WorkerStats)


def encode(stats: WorkerStats) -> bytes:
    return _ENCODER.encode(stats)


def decode(data: bytes) -> WorkerStats | None:
    """The snapshot in ``data``; None if empty, malformed or of another version."""
    if not data:
        return None
    try:
        stats = _DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if (
        stats.version != VERSION
        or len(stats.codes) != len(CODE_CLASSES)
        or len(stats.buckets) != len(BUCKETS) + 1
        or any(len(c.results) != len(RESULTS) for c in stats.clusters)
        or any(len(r.decisions) != len(RL_DECISIONS) for r in stats.rate_limits)
    ):
        return None
    return stats
