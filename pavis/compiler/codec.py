"""Intent → runtime model: every default materialised, every name bound, every table built.

Owns: turning ``intent.Config`` into ``schema.Model`` — durations into milliseconds, sizes
into bytes, ``host:port`` into (host, port), ``cluster: x`` into one weighted entry, absent
policies into explicit ``Off`` variants, names into indices, PEM files into embedded text
(TLS sections in ``certs``) —
and building the lookup tables (``index``); the value syntaxes are in ``values``, one route
in ``routes``, the sections and the tables here. Problems met while converting (a duration
that does not parse, a name that binds to nothing, a route with two actions, a domain
claimed twice) are collected, never raised, so the validator can report them with its own.
Must not: decide whether the result is acceptable beyond what conversion needs; return a
``Validated`` (only ``validate`` does).

Everything is inserted in a canonical order (sorted dict keys, sorted methods/statuses) so
the same intent always encodes to the same bytes, whatever syntax it was written in.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from pavis.compiler import certs, index
from pavis.compiler.intent import ClusterSpec, Config, ListenerSpec, TracingSpec
from pavis.compiler.ratelimit import compile_limit
from pavis.compiler.routes import RouteCodec
from pavis.errors import Problem
from pavis.schema import (
    FORMAT_VERSION,
    AccessLog,
    AccessLogOff,
    Admin,
    AdminOff,
    Cluster,
    Endpoint,
    HealthCheck,
    HealthCheckOff,
    Limits,
    Listener,
    Model,
    Otlp,
    OtlpOff,
    Outlier,
    OutlierOff,
    Pool,
    RateLimit,
    Route,
    ServerTls,
    TlsOff,
    Tracing,
    TracingOff,
    UpstreamTls,
    VirtualHost,
)

SUPPORTED_VERSION = 1
_MAX_IDLE = 32  # idle connections kept per endpoint unless the pool is smaller


class _Codec(RouteCodec):
    def build(self, cfg: Config) -> Model:
        if cfg.version != SUPPORTED_VERSION:
            self.add(
                "$.version",
                "unsupported_version",
                f"config version {cfg.version}; this pavis reads version {SUPPORTED_VERSION}",
            )
        listeners = tuple(self.listener(i, spec) for i, spec in enumerate(cfg.listeners))
        admin: Admin | AdminOff = AdminOff()
        if cfg.admin is not None:
            host, port = self.address(cfg.admin.address, "$.admin.address")
            admin = Admin(host=host, port=port)
        lim = cfg.limits
        limits = Limits(
            max_request_line=self.size(lim.max_request_line, "$.limits.max_request_line"),
            max_header_bytes=self.size(lim.max_header_bytes, "$.limits.max_header_bytes"),
            max_headers=lim.max_headers,
            max_body_bytes=self.size(lim.max_body_bytes, "$.limits.max_body_bytes"),
            header_timeout_ms=self.duration(lim.header_timeout, "$.limits.header_timeout"),
            keepalive_timeout_ms=self.duration(lim.keepalive_timeout, "$.limits.keepalive_timeout"),
            drain_timeout_ms=self.duration(
                lim.drain_timeout, "$.limits.drain_timeout", allow_zero=True
            ),
            max_response_header_bytes=self.size(
                lim.max_response_header_bytes, "$.limits.max_response_header_bytes"
            ),
            max_response_headers=lim.max_response_headers,
        )
        access_log: AccessLog | AccessLogOff = AccessLogOff()
        if cfg.access_log is not None:
            access_log = AccessLog(
                path=cfg.access_log.path,
                buffer_bytes=self.size(cfg.access_log.buffer, "$.access_log.buffer"),
            )
        tracing: Tracing | TracingOff = TracingOff()
        if cfg.tracing is not None:
            tracing = self.tracing(cfg.tracing)

        clusters = tuple(self.cluster(i, spec) for i, spec in enumerate(cfg.clusters))
        by_name: dict[str, int] = {}
        for i, c in enumerate(clusters):
            by_name.setdefault(c.name, i)

        routes: list[Route] = []
        vhosts: list[VirtualHost] = []
        domain_entries: list[tuple[str, int]] = []
        claimed: dict[tuple[str, str], str] = {}
        for v, vspec in enumerate(cfg.virtual_hosts):
            domains: list[str] = []
            for k, raw in enumerate(vspec.domains):
                domain = raw.strip().lower().rstrip(".") if raw != "*" else raw
                domains.append(domain)
                key = index.domain_key(domain)
                where = f"$.virtual_hosts[{v}].domains[{k}]"
                if key in claimed:
                    self.add(where, "duplicate_domain", f"{raw!r} is already {claimed[key]}")
                    continue
                claimed[key] = f"claimed by {where}"
                domain_entries.append((domain, v))
            ids: list[int] = []
            for j, rspec in enumerate(vspec.routes):
                ids.append(len(routes))
                routes.append(self.route(v, j, rspec, by_name, clusters, vspec.name))
            vhosts.append(
                VirtualHost(
                    name=vspec.name,
                    domains=tuple(domains),
                    routes=tuple(ids),
                    index=index.route_index([(i, routes[i].match) for i in ids]),
                    rate_limit=compile_limit(
                        self, vspec.rate_limit, f"$.virtual_hosts[{v}].rate_limit", vspec.name, ""
                    ),
                )
            )
        declared = sum(isinstance(v.rate_limit, RateLimit) for v in vhosts) + sum(
            isinstance(r.rate_limit, RateLimit) for r in routes
        )
        return Model(
            format_version=FORMAT_VERSION,
            listeners=listeners,
            admin=admin,
            limits=msgspec.structs.replace(limits, rate_limits=declared),
            access_log=access_log,
            tracing=tracing,
            clusters=clusters,
            virtual_hosts=tuple(vhosts),
            domains=index.domain_index(domain_entries),
            routes=tuple(routes),
        )

    def tracing(self, spec: TracingSpec) -> Tracing:
        exporter: Otlp | OtlpOff = OtlpOff()
        if spec.otlp is not None:
            o = spec.otlp
            exporter = Otlp(
                endpoint=o.endpoint,
                timeout_ms=self.duration(o.timeout, "$.tracing.otlp.timeout"),
                queue=o.queue,
                service_name=o.service_name,
            )
        return Tracing(generate=spec.generate, sample=float(spec.sample), exporter=exporter)

    def listener(self, i: int, spec: ListenerSpec) -> Listener:
        path = f"$.listeners[{i}]"
        host, port = self.address(spec.address, f"{path}.address")
        tls: TlsOff | ServerTls = TlsOff()
        if spec.tls is not None:
            tls = certs.server_tls(self, spec.tls, f"{path}.tls")
        return Listener(name=spec.name or spec.address, host=host, port=port, tls=tls)

    def cluster(self, i: int, spec: ClusterSpec) -> Cluster:
        path = f"$.clusters[{i}]"
        endpoints: list[Endpoint] = []
        for k, ep in enumerate(spec.endpoints):
            if isinstance(ep, str):
                host, port = self.address(ep, f"{path}.endpoints[{k}]")
                weight = 1
            else:
                host, port = self.address(ep.address, f"{path}.endpoints[{k}].address")
                weight = ep.weight
            endpoints.append(Endpoint(host=host, port=port, weight=weight))
        weights = [e.weight for e in endpoints]
        cycle = sum(index.reduced_weights(weights))
        if cycle > index.MAX_SCHEDULE:
            self.add(
                f"{path}.endpoints",
                "invalid_weight",
                f"endpoint weights reduce to a cycle of {cycle} picks; "
                f"the limit is {index.MAX_SCHEDULE} (use smaller ratios)",
            )
        pool = spec.pool
        hc: HealthCheck | HealthCheckOff = HealthCheckOff()
        if spec.health_check is not None:
            h = spec.health_check
            hp = f"{path}.health_check"
            hc = HealthCheck(
                path=h.path,
                host=h.host or spec.name,
                interval_ms=self.duration(h.interval, f"{hp}.interval"),
                timeout_ms=self.duration(h.timeout, f"{hp}.timeout"),
                unhealthy_after=h.unhealthy_after,
                healthy_after=h.healthy_after,
                expected_statuses=self.statuses(h.expected_statuses, f"{hp}.expected_statuses"),
            )
        outlier: Outlier | OutlierOff = OutlierOff()
        if spec.outlier is not None:
            outlier = Outlier(
                consecutive_failures=spec.outlier.consecutive_failures,
                eject_ms=self.duration(spec.outlier.eject_for, f"{path}.outlier.eject_for"),
            )
        tls: TlsOff | UpstreamTls = TlsOff()
        if spec.tls is not None:
            tls = certs.upstream_tls(self, spec.tls, f"{path}.tls")
        return Cluster(
            name=spec.name,
            endpoints=tuple(endpoints),
            lb=spec.lb,
            schedule=index.swrr_schedule(weights) if weights else (),
            connect_timeout_ms=self.duration(spec.connect_timeout, f"{path}.connect_timeout"),
            pool=Pool(
                max_connections=pool.max_connections,
                max_idle=(
                    min(_MAX_IDLE, pool.max_connections) if pool.max_idle is None else pool.max_idle
                ),
                idle_timeout_ms=self.duration(pool.idle_timeout, f"{path}.pool.idle_timeout"),
                max_pending=pool.max_pending,
                surplus_timeout_ms=self.duration(
                    pool.surplus_timeout, f"{path}.pool.surplus_timeout", allow_zero=True
                ),
            ),
            health_check=hc,
            outlier=outlier,
            tls=tls,
        )


def build(config: Config, base_dir: Path) -> tuple[Model, list[Problem]]:
    """The runtime model of ``config`` and the problems met while building it."""
    codec = _Codec(base_dir)
    model = codec.build(config)
    return model, codec.problems
