"""One generation's runtime state, built from a verified artifact.

Owns: lazy decoding of the route table (each route decoded on first use and cached), the
per-route precomputation the request path needs (header-op byte strings, lower-cased drop
sets, rewrite pieces, cluster objects), host → virtual-host caching, and the registry that
lets endpoints (pools, health) outlive a generation when their configuration is unchanged.
Must not: apply defaults or interpret configuration; every value comes from the artifact.

A request captures the ``State`` it starts with and holds the reference until it ends; the
old state is freed when the last such request drops it.
"""

from __future__ import annotations

import sys
from typing import Any

from pavis.artifact.format import Header
from pavis.artifact.lazy import LazyModel, LazyRoutes, read_lazy
from pavis.lookup import find_vhost, match_route
from pavis.schema import (
    AccessLog,
    Cluster,
    Direct,
    Endpoint,
    Forward,
    HeaderOps,
    Limits,
    Redirect,
    Retry,
    Route,
    Tracing,
    VirtualHost,
)
from workers.balance import ClusterRT, EndpointRT
from workers.heads import own_fields
from workers.health import Health
from workers.logfile import AccessLogFile
from workers.pool import Pool
from workers.ratelimit import limits_of
from workers.trace import Tracer

EAGER_ROUTES = 2000  # below this, decode every route at flip time: full verification is cheap


def load(data: bytes) -> tuple[Header, LazyModel]:
    """Verify (size, header, checksum) then decode the index eagerly and routes lazily."""
    return read_lazy(data)


# ------------------------------------------------------------------------ per-route runtime

DIRECT, REDIRECT, FORWARD = 0, 1, 2


def _lines(pairs: tuple[tuple[str, str], ...]) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode("latin-1", "replace") for k, v in pairs)


def _drop_set(ops: HeaderOps) -> frozenset[bytes]:
    names = {n.lower() for n in ops.remove} | {k.lower() for k, _ in ops.set}
    return frozenset(n.encode("latin-1") for n in names)


class RouteRT:
    """A route precomputed for the request path."""

    __slots__ = (
        "index",
        "status",
        "name",
        "kind",
        "local_fields",
        "local_body",
        "clusters",
        "cum",
        "total",
        "replace_prefix",
        "prefix",
        "strip",
        "replace_host",
        "host",
        "req_drop",
        "req_extra",
        "resp_drop",
        "resp_extra",
        "timeout",
        "retry",
        "attempts",
        "per_try",
        "backoff_base",
        "backoff_max",
        "retry_statuses",
        "retry_connect",
        "retry_reset",
        "retry_timeout",
        "proxy_skip",
        "upgrades",
        "replay_any",
        "resp_head_max",
        "resp_headers_max",
        "rate_limits",
    )

    def __init__(
        self,
        index: int,
        route: Route,
        clusters: list[ClusterRT],
        limits: Limits,
        vhost: VirtualHost | None = None,
    ) -> None:
        self.index = index
        self.name = route.name
        # Empty for a route without a limit: the request path tests it and goes on.
        self.rate_limits = (
            limits_of(vhost.name, vhost.rate_limit, route.name, route.rate_limit)
            if vhost is not None
            else ()
        )
        self.req_drop = _drop_set(route.request_headers)
        self.req_extra = _lines(route.request_headers.set) + _lines(route.request_headers.add)
        self.resp_drop = _drop_set(route.response_headers)
        self.resp_extra = _lines(route.response_headers.set) + _lines(route.response_headers.add)
        action = route.action
        self.clusters: list[ClusterRT] = []
        self.upgrades: frozenset[bytes] = frozenset()
        self.replay_any = False
        self.resp_head_max = limits.max_response_header_bytes
        self.resp_headers_max = limits.max_response_headers
        if isinstance(action, Direct):
            self.kind = DIRECT
            self._local(action.status, action.body, action.content_type.encode("latin-1"), b"")
        elif isinstance(action, Redirect):
            self.kind = REDIRECT
            self._local(action.status, b"", b"", action.location.encode("latin-1"))
        else:
            assert isinstance(action, Forward)
            self.kind = FORWARD
            self._forward(route, action, clusters)

    def _local(self, status: int, body: bytes, ctype: bytes, location: bytes) -> None:
        """A local answer's fields, built once: response header ops apply to the proxy's
        own responses too."""
        drop = self.resp_drop
        self.local_fields = own_fields(status, len(body), ctype, location, drop) + self.resp_extra
        self.local_body = body
        self.status = status

    def _forward(self, route: Route, fwd: Forward, clusters: list[ClusterRT]) -> None:
        self.clusters = [clusters[wc.cluster] for wc in fwd.clusters]
        self.cum = fwd.cumulative_weights
        self.total = fwd.cumulative_weights[-1] if fwd.cumulative_weights else 0
        rw = fwd.rewrite
        self.replace_prefix = rw.replace_prefix
        self.prefix = rw.prefix.encode("latin-1")
        # How many leading path characters the rewrite replaces (-1: the whole path); the
        # compiler computed it. Paths are latin-1 bytes here, so characters are bytes.
        self.strip = rw.strip
        self.replace_host = rw.replace_host
        self.host = rw.host.encode("latin-1")
        self.timeout = fwd.timeout_ms / 1000.0
        self.upgrades = frozenset(u.encode("latin-1") for u in fwd.upgrades)
        retry = fwd.retry
        if isinstance(retry, Retry):
            self.retry = True
            self.attempts = retry.attempts
            self.per_try = retry.per_try_timeout_ms / 1000.0
            self.backoff_base = retry.backoff_base_ms / 1000.0
            self.backoff_max = retry.backoff_max_ms / 1000.0
            self.retry_statuses = frozenset(retry.statuses)
            self.retry_connect = retry.on_connect_error
            self.retry_reset = retry.on_reset
            self.retry_timeout = retry.on_timeout
            self.replay_any = retry.non_idempotent
        else:
            self.retry = False
            self.attempts = retry.attempts
            self.per_try = retry.per_try_timeout_ms / 1000.0
            self.backoff_base = self.backoff_max = 0.0
            self.retry_statuses = frozenset()
            self.retry_connect = self.retry_reset = self.retry_timeout = False
        # Proxy-added request headers a route op removes or sets are not emitted by the proxy.
        self.proxy_skip = self.req_drop


# ------------------------------------------------------------------------ endpoints registry


EndpointKey = tuple[Any, ...]


class Registry:
    """Endpoints and log files of this worker, shared by generations with equal config."""

    def __init__(self) -> None:
        self.endpoints: dict[EndpointKey, EndpointRT] = {}
        self.logs: dict[str, AccessLogFile] = {}

    def endpoint(self, c: Cluster, e: Endpoint) -> tuple[EndpointKey, EndpointRT]:
        key = (e.host, e.port, c.pool, c.connect_timeout_ms, c.health_check, c.outlier, c.tls)
        ep = self.endpoints.get(key)
        if ep is None:
            pool = Pool(e.host, e.port, c.pool, c.connect_timeout_ms, c.tls)
            health = Health(e.host, e.port, c.health_check, c.outlier, c.tls)
            ep = self.endpoints[key] = EndpointRT(e.host, e.port, pool, health)
        return key, ep

    def reopen_logs(self) -> None:
        """SIGUSR1: every access-log file reopened at its path; one that cannot be is named."""
        for f in self.logs.values():
            try:
                f.reopen()
            except OSError as exc:
                print(f"pavis worker: access log {f.path}: cannot reopen ({exc.strerror}); "
                      "still writing to the file it had", file=sys.stderr)  # fmt: skip

    def log(self, spec: AccessLog) -> AccessLogFile:
        f = self.logs.get(spec.path)
        if f is None:
            f = self.logs[spec.path] = AccessLogFile(spec.path, spec.buffer_bytes)
        f.buffer = spec.buffer_bytes
        return f

    def keep_only(self, state: State | None, wait: float = 0.0) -> None:
        """Retire what ``state`` (the one now serving) does not use; start what it does.
        ``wait``: seconds an access log that is closed may take to write what it holds."""
        keys = state.endpoint_keys if state is not None else frozenset()
        for key in [k for k in self.endpoints if k not in keys]:
            ep = self.endpoints.pop(key)
            ep.health.stop()
            ep.pool.retire()
        if state is not None:
            for key in keys:
                self.endpoints[key].health.start()
        path = state.log.path if state is not None and state.log is not None else None
        for p in [p for p in self.logs if p != path]:
            self.logs.pop(p).close(wait)

    def close(self) -> None:
        self.keep_only(None, 1.0)


class State:
    """Everything one generation needs to serve requests."""

    def __init__(self, generation: int, header: Header, model: LazyModel, reg: Registry) -> None:
        self.generation = generation
        self.checksum = header.checksum
        self.digest = header.digest
        self.limits = model.limits
        self.listeners = model.listeners
        self.domains = model.domains
        self.vhosts = model.virtual_hosts
        self.routes = LazyRoutes(model.routes)
        if len(model.routes) <= EAGER_ROUTES:
            for i in range(len(model.routes)):
                self.routes[i]  # full verification while it is cheap
        keys: set[EndpointKey] = set()
        self.clusters: list[ClusterRT] = []
        for c in model.clusters:
            eps = []
            for e in c.endpoints:
                key, ep = reg.endpoint(c, e)
                keys.add(key)
                eps.append(ep)
            self.clusters.append(ClusterRT(c, eps))
        self.endpoint_keys = frozenset(keys)
        self.log = reg.log(model.access_log) if isinstance(model.access_log, AccessLog) else None
        tr = model.tracing
        self.tracer = Tracer(tr) if isinstance(tr, Tracing) else None
        self.route_rts: list[RouteRT | None] = [None] * len(model.routes)
        self.vhost_cache: dict[bytes, int] = {}
        self.route_cache: dict[tuple[int, bytes, bytes], int] = {}

    def vhost(self, host: bytes) -> int:
        vh = self.vhost_cache.get(host)
        if vh is None:
            vh = find_vhost(self.domains, host.decode("latin-1"))
            if len(self.vhost_cache) >= 4096:
                self.vhost_cache.clear()  # bounded: Host is client-controlled
            self.vhost_cache[host] = vh
        return vh

    def find(self, vh: int, method: bytes, path: bytes, headers: Any, query: bytes) -> int:
        """``pavis.lookup`` route matching, memoised when the answer cannot depend on headers
        or query. ``query`` is the raw ``?...`` (or ``b""``): lookup decodes and splits it
        only when a candidate route has query matchers."""
        key = (vh, method, path)
        hit = self.route_cache.get(key)
        if hit is not None:
            return hit
        found, varies = match_route(
            self.routes,
            self.vhosts[vh].index,
            method.decode("latin-1"),
            path.decode("latin-1"),
            headers,
            query,
        )
        if not varies:
            if len(self.route_cache) >= 8192:
                self.route_cache.clear()  # bounded: paths are client-controlled
            self.route_cache[key] = found
        return found

    def route(self, i: int) -> RouteRT:
        rt = self.route_rts[i]
        if rt is None:
            route = self.routes[i]
            rt = RouteRT(i, route, self.clusters, self.limits, self.vhosts[route.vhost])
            self.route_rts[i] = rt
        return rt
