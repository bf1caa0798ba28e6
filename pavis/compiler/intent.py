"""The user-facing configuration, as written (docs/CONFIG.md).

Owns: the msgspec Structs that describe config schema v1 — the only place in pavis where
defaults live — and the JSON Schema derived from them.
Must not: interpret values (durations, addresses, sizes stay strings here; the codec turns
them into runtime values) or import the runtime model.

Every Struct forbids unknown fields. ``None`` defaults mean "absent": the codec turns an
absent optional policy into its explicit ``Off`` variant, never into ``None``.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class _I(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Base of intent Structs."""


Size = int | str  # bytes, or "8KiB" / "64KB" / "1MiB" / "8k"


class CertificateFiles(_I):
    cert: str  # PEM file (the chain, leaf first), relative to the config file's directory
    key: str


class ClientAuthSpec(_I):
    ca: str  # PEM bundle of the CAs a client certificate must chain to
    mode: Literal["required", "optional"] = "required"
    forward: bool = False  # send the x-client-cert-* fields upstream


class TlsFiles(_I):
    cert: str = ""  # one certificate: the same as certificates: [{cert, key}]
    key: str = ""
    certificates: list[CertificateFiles] = msgspec.field(default_factory=list)  # [0] = default
    client_auth: ClientAuthSpec | None = None


class ListenerSpec(_I):
    address: str
    name: str = ""  # default: the address itself
    tls: TlsFiles | None = None


class AdminSpec(_I):
    address: str


class LimitsSpec(_I):
    max_request_line: Size = "8KiB"
    max_header_bytes: Size = "64KiB"
    max_headers: int = 100
    max_body_bytes: Size = "64MiB"
    header_timeout: str = "10s"
    keepalive_timeout: str = "60s"
    drain_timeout: str = "30s"
    max_response_header_bytes: Size = "64KiB"
    max_response_headers: int = 100


class AccessLogSpec(_I):
    path: str = "-"  # "-" = stdout
    buffer: Size = "4MiB"  # per worker, lines waiting to be written


class OtlpSpec(_I):
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    timeout: str = "5s"
    queue: int = 2048  # spans per worker waiting for export
    service_name: str = "pavis"


class TracingSpec(_I):
    generate: bool = True  # start a trace for a request that carries no valid traceparent
    sample: float = 1.0  # fraction of the traces pavis starts that are marked sampled
    otlp: OtlpSpec | None = None  # absent = no spans exported


class EndpointSpec(_I):
    address: str
    weight: int = 1


class PoolSpec(_I):
    max_connections: int = 128
    max_idle: int | None = None  # default: 32, or max_connections when that is smaller
    idle_timeout: str = "60s"
    max_pending: int = 1024
    surplus_timeout: str = "1s"


class HealthCheckSpec(_I):
    path: str = "/healthz"
    host: str = ""  # default: the cluster name
    interval: str = "5s"
    timeout: str = "1s"
    unhealthy_after: int = 2
    healthy_after: int = 1
    expected_statuses: list[int | str] = msgspec.field(default_factory=lambda: ["2xx"])


class OutlierSpec(_I):
    consecutive_failures: int = 5
    eject_for: str = "10s"


class UpstreamTlsSpec(_I):
    sni: str = ""  # "" = send no SNI
    verify: bool = True
    ca: str = ""  # PEM file; "" = the system trust store
    cert: str = ""  # client certificate presented to the upstream (PEM file); "" = none
    key: str = ""


class ClusterSpec(_I):
    name: str
    endpoints: list[str | EndpointSpec]
    lb: Literal["round_robin", "random", "least_request"] = "round_robin"
    connect_timeout: str = "1s"
    pool: PoolSpec = msgspec.field(default_factory=PoolSpec)
    health_check: HealthCheckSpec | None = None
    outlier: OutlierSpec | None = None
    tls: UpstreamTlsSpec | None = None


class _ValueMatchSpec(_I):
    """A named value and exactly one way to match it (header fields, query parameters)."""

    name: str
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None
    present: bool | None = None
    absent: bool | None = None


class HeaderMatchSpec(_ValueMatchSpec):
    pass


class QueryMatchSpec(_ValueMatchSpec):
    pass


class MatchSpec(_I):
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None
    methods: list[str] = msgspec.field(default_factory=list)  # [] = any method
    headers: list[HeaderMatchSpec] = msgspec.field(default_factory=list)
    query: list[QueryMatchSpec] = msgspec.field(default_factory=list)


class WeightedClusterSpec(_I):
    name: str
    weight: int = 1


class RewriteSpec(_I):
    prefix: str | None = None
    host: str | None = None


class BackoffSpec(_I):
    base: str = "25ms"
    max: str = "250ms"


class RetrySpec(_I):
    attempts: int = 2
    on: list[str | int] = msgspec.field(default_factory=lambda: ["connect_error", "reset"])
    per_try_timeout: str | None = None  # default: what is left of the route timeout / attempts
    backoff: BackoffSpec = msgspec.field(default_factory=BackoffSpec)
    non_idempotent: bool = False


class ForwardSpec(_I):
    cluster: str | None = None
    clusters: list[WeightedClusterSpec] | None = None
    rewrite: RewriteSpec | None = None
    timeout: str = "15s"
    retry: RetrySpec | None = None
    upgrades: list[str] = msgspec.field(default_factory=list)


class RedirectSpec(_I):
    status: int = 302
    location: str = ""


class DirectSpec(_I):
    status: int = 200
    body: str = ""
    content_type: str = "text/plain; charset=utf-8"


class HeaderOpsSpec(_I):
    set: dict[str, str] = msgspec.field(default_factory=dict)
    add: dict[str, str] = msgspec.field(default_factory=dict)
    remove: list[str] = msgspec.field(default_factory=list)


class RateLimitKeyHeader(_I):
    header: str  # requests are counted per value of this request header


class RateLimitSpec(_I):
    rate: str  # "N/s", "N/m" or "N/h"
    burst: int | None = None  # default: N, the count in ``rate``
    key: Literal["client_ip", "route"] | RateLimitKeyHeader = "client_ip"
    delay: bool = False  # wait (up to the burst) instead of answering 429 at once
    dry_run: bool = False  # count what would be rejected, reject nothing


class RouteSpec(_I):
    match: MatchSpec
    name: str = ""  # default: "route<N>", N its position in the virtual host
    forward: ForwardSpec | None = None
    redirect: RedirectSpec | None = None
    direct: DirectSpec | None = None
    request_headers: HeaderOpsSpec = msgspec.field(default_factory=HeaderOpsSpec)
    response_headers: HeaderOpsSpec = msgspec.field(default_factory=HeaderOpsSpec)
    rate_limit: RateLimitSpec | None = None


class VirtualHostSpec(_I):
    name: str
    domains: list[str]
    routes: list[RouteSpec] = msgspec.field(default_factory=list)
    rate_limit: RateLimitSpec | None = None  # every routed request of the host, before a route's


class Config(_I):
    """Root of a pavis configuration file (schema version 1)."""

    version: int
    listeners: list[ListenerSpec] = msgspec.field(default_factory=list)
    admin: AdminSpec | None = None
    limits: LimitsSpec = msgspec.field(default_factory=LimitsSpec)
    access_log: AccessLogSpec | None = None
    tracing: TracingSpec | None = None
    clusters: list[ClusterSpec] = msgspec.field(default_factory=list)
    virtual_hosts: list[VirtualHostSpec] = msgspec.field(default_factory=list)


def json_schema() -> dict[str, object]:
    """JSON Schema of the configuration format (for editors and ``pavctl schema``)."""
    schema: dict[str, object] = msgspec.json.schema(Config)
    return schema
