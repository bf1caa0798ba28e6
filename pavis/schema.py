"""The runtime model: the frozen payload of a sealed `.pvs` artifact.

Owns: the msgspec Structs that workers execute and that `pavctl inspect --json` shows.
Must not: carry defaults, parse anything, or import the compiler. A field that the codec
forgot to materialise is a decode error, never a silent guess; a disabled feature is an
explicit tagged variant, never ``None``. Durations are integer milliseconds.

Every Struct is ``frozen=True, gc=False, array_like=True``: with the cyclic GC tracking
them, decoding 100k routes takes seconds instead of ~0.4 s. Collections are tuples. Any
change to these Structs must bump ``FORMAT_VERSION`` — a worker accepts only its own version.
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

import msgspec

FORMAT_VERSION = 10

_OPTS = {"frozen": True, "gc": False, "array_like": True, "forbid_unknown_fields": True}


class _S(msgspec.Struct, **_OPTS):
    """Base of untagged runtime Structs."""


# --------------------------------------------------------------------------- listeners


class TlsOff(msgspec.Struct, tag="off", **_OPTS):
    """TLS is not used here."""


class Certificate(_S):
    cert_pem: str  # the chain, leaf first
    key_pem: str


class ClientAuthOff(msgspec.Struct, tag="off", **_OPTS):
    """Clients present no certificate."""


class ClientAuth(msgspec.Struct, tag="verify", **_OPTS):
    """Client certificates verified against ``ca_pem`` during the handshake."""

    ca_pem: str
    required: bool  # True: no certificate → the handshake fails; False: one is optional
    forward: bool  # the identity fields the proxy sets are sent upstream too


class ServerTls(msgspec.Struct, tag="tls", **_OPTS):
    """TLS termination on a listener. PEM text is embedded so the artifact is complete.

    Certificate 0 is ``cert_pem``/``key_pem`` (the default: no SNI, or a name no certificate
    claims); 1.. are ``more``. The SNI tables are built by the compiler: ``names`` maps an
    exact lower-case server name to a certificate index, ``wildcards`` maps the suffix of a
    ``*.suffix`` name (without ``*.``) to one; a wildcard covers one label, as RFC 6125 says.
    """

    cert_pem: str
    key_pem: str
    more: tuple[Certificate, ...]
    names: tuple[tuple[str, int], ...]  # sorted by name
    wildcards: tuple[tuple[str, int], ...]  # sorted by suffix
    client_auth: ClientAuthOff | ClientAuth


class Listener(_S):
    name: str
    host: str
    port: int
    tls: TlsOff | ServerTls


class AdminOff(msgspec.Struct, tag="off", **_OPTS):
    """No admin listener."""


class Admin(msgspec.Struct, tag="on", **_OPTS):
    host: str
    port: int


class Limits(_S):
    """Per-connection protocol limits applied by every worker."""

    max_request_line: int  # bytes; longer → 414
    max_header_bytes: int  # bytes of the whole header block; more → 431
    max_headers: int  # header count; more → 431
    max_body_bytes: int  # request body; more → 413 (0 = bodies refused)
    header_timeout_ms: int  # whole request head must arrive within this; else 408
    keepalive_timeout_ms: int  # idle client keep-alive connection is closed after this
    drain_timeout_ms: int  # on graceful stop, in-flight requests get this long
    max_response_header_bytes: int  # an upstream response head (with 1xx heads) beyond → 502
    max_response_headers: int  # header count of one upstream response head; more → 502
    # How many rate limits the virtual hosts and routes declare: a supervisor, which keeps
    # only an artifact's head, creates the shared bucket segment when this is not 0.
    rate_limits: int = 0


class AccessLogOff(msgspec.Struct, tag="off", **_OPTS):
    """No access log."""


class AccessLog(msgspec.Struct, tag="json", **_OPTS):
    """One JSON line per request; path ``-`` means stdout."""

    path: str
    buffer_bytes: int  # lines a worker holds for a writer that is behind; beyond, dropped


class TracingOff(msgspec.Struct, tag="off", **_OPTS):
    """pavis takes no part in traces: ``traceparent`` and ``tracestate`` are passed on like
    any other field (the access log still shows a valid trace id it carries)."""


class OtlpOff(msgspec.Struct, tag="off", **_OPTS):
    """No spans are exported."""


class Otlp(msgspec.Struct, tag="otlp", **_OPTS):
    """One span per request, sent in batches to an OTLP/HTTP (protobuf) receiver."""

    endpoint: str  # the full URL spans are POSTed to: http(s)://host:port/v1/traces
    timeout_ms: int  # one export request, connect included
    queue: int  # spans a worker holds for export; beyond it new ones are dropped (counted)
    service_name: str  # the ``service.name`` resource attribute


class Tracing(msgspec.Struct, tag="w3c", **_OPTS):
    """W3C Trace Context: a valid ``traceparent`` continues its trace; an absent or invalid
    one starts a new trace when ``generate`` is set (``tracestate`` is dropped with it)."""

    generate: bool
    # Fraction of the traces pavis starts that are marked sampled, decided from the trace id
    # (its low 64 bits against ``sample * 2**64``, as OpenTelemetry's TraceIdRatioBased).
    sample: float
    exporter: OtlpOff | Otlp


# --------------------------------------------------------------------------- clusters


class Endpoint(_S):
    host: str
    port: int
    weight: int


class Pool(_S):
    max_connections: int  # per endpoint per worker; beyond it requests wait (pending)
    max_idle: int  # idle keep-alive connections kept per endpoint
    idle_timeout_ms: int
    max_pending: int  # requests allowed to wait for a connection; beyond → 503 overflow
    # Idle connections beyond max_idle (left by a burst) are closed once idle this long;
    # 0 closes them at once.
    surplus_timeout_ms: int


class HealthCheckOff(msgspec.Struct, tag="off", **_OPTS):
    """No active health checking: every endpoint is considered healthy."""


class HealthCheck(msgspec.Struct, tag="http", **_OPTS):
    path: str
    host: str  # Host header sent with the probe
    interval_ms: int
    timeout_ms: int
    unhealthy_after: int
    healthy_after: int
    expected_statuses: tuple[int, ...]  # sorted; a probe answering any of these passes


class OutlierOff(msgspec.Struct, tag="off", **_OPTS):
    """No passive ejection."""


class Outlier(msgspec.Struct, tag="consecutive", **_OPTS):
    consecutive_failures: int
    eject_ms: int  # ejection expires after this; nothing is learned


class UpstreamTls(msgspec.Struct, tag="tls", **_OPTS):
    sni: str
    verify: bool
    ca_pem: str  # embedded CA bundle; "" = system trust store
    cert_pem: str  # client certificate chain presented to the upstream; "" = none
    key_pem: str


class Cluster(_S):
    name: str
    endpoints: tuple[Endpoint, ...]
    lb: Literal["round_robin", "random", "least_request"]
    # Smooth weighted round-robin order of endpoint indices, one full cycle (sum of weights,
    # capped by the compiler). round_robin walks it; random picks from it uniformly.
    schedule: tuple[int, ...]
    connect_timeout_ms: int
    pool: Pool
    health_check: HealthCheckOff | HealthCheck
    outlier: OutlierOff | Outlier
    tls: TlsOff | UpstreamTls


# --------------------------------------------------------------------------- routes


class HeaderMatch(_S):
    name: str  # lower-case
    kind: Literal["exact", "prefix", "regex", "present", "absent"]
    value: str  # "" for present/absent


class QueryMatch(_S):
    name: str  # as written: case-sensitive, matched against the raw (undecoded) name
    kind: Literal["exact", "prefix", "regex", "present", "absent"]
    value: str  # raw (percent-encoded) form; "" for present/absent


class Match(_S):
    kind: Literal["exact", "prefix", "regex"]  # path match; "prefix" "/" matches all
    path: str  # exact path, prefix, or regex source (full-match semantics: re.fullmatch)
    methods: tuple[str, ...]  # upper-case, sorted; () = any method
    headers: tuple[HeaderMatch, ...]  # AND across the list
    query: tuple[QueryMatch, ...]  # AND across the list; () = the query is not looked at


class HeaderOps(_S):
    """Applied in this order: remove, set (replace), add (append)."""

    remove: tuple[str, ...]  # lower-case names
    set: tuple[tuple[str, str], ...]
    add: tuple[tuple[str, str], ...]


class WeightedCluster(_S):
    cluster: int  # index into Model.clusters
    name: str
    weight: int


class Rewrite(_S):
    replace_prefix: bool  # replace the first ``strip`` characters of the path by ``prefix``
    prefix: str
    strip: int  # length of the matched prefix / exact path; -1 = the whole path (regex)
    replace_host: bool
    host: str


class RetryOff(msgspec.Struct, tag="off", **_OPTS):
    """One attempt only, bounded by the route's whole timeout. Both are materialised, so that
    every forward's attempt count and per-attempt bound are read alike, whatever its policy."""

    attempts: int  # 1
    per_try_timeout_ms: int  # the route's timeout_ms


class Retry(msgspec.Struct, tag="on", **_OPTS):
    attempts: int  # total attempts including the first
    on_connect_error: bool
    on_reset: bool
    on_timeout: bool
    statuses: tuple[int, ...]  # sorted upstream statuses that are retried
    per_try_timeout_ms: int
    backoff_base_ms: int
    backoff_max_ms: int
    # Replay a request that may have reached the upstream (sent, then reset, timed out or
    # answered with a retried status) even when its method is not idempotent.
    non_idempotent: bool


class Forward(msgspec.Struct, tag="forward", **_OPTS):
    clusters: tuple[WeightedCluster, ...]
    cumulative_weights: tuple[int, ...]  # running sums of clusters' weights, for bisect
    rewrite: Rewrite
    timeout_ms: int  # whole-request budget including retries
    retry: RetryOff | Retry
    upgrades: tuple[str, ...]  # lower-case protocols a client may Upgrade to; () = none


class Redirect(msgspec.Struct, tag="redirect", **_OPTS):
    status: int
    location: str


class Direct(msgspec.Struct, tag="direct", **_OPTS):
    status: int
    body: bytes
    content_type: str


class RateLimitOff(msgspec.Struct, tag="off", **_OPTS):
    """No rate limit here."""


class RateLimit(msgspec.Struct, tag="gcra", **_OPTS):
    """A local rate limit (docs/RATE_LIMITING.md): ``burst`` requests at once per key, then
    one per ``interval_ns``, decided in the instance's shared bucket segment."""

    limit_id: bytes  # 16 bytes: digest of (virtual host, route, rate, burst, key); the
    # segment keeps a key's state across a reload only while this is unchanged
    rate: str  # canonical "N/s", "N/m" or "N/h", as explain shows it
    interval_ns: int  # the period divided by N
    burst: int
    key: Literal["client_ip", "route", "header"]
    header: str  # lower-case name when key == "header", else ""
    delay: bool  # wait up to the burst instead of answering 429 at once
    dry_run: bool  # count what would be rejected; never reject or wait
    policy: str  # the RateLimit-Policy field value sent with a 429


class Route(_S):
    name: str
    vhost: int  # index into Model.virtual_hosts
    match: Match
    action: Forward | Redirect | Direct
    request_headers: HeaderOps
    response_headers: HeaderOps
    rate_limit: RateLimitOff | RateLimit  # applied after the virtual host's own


# --------------------------------------------------------------------------- lookup index


class RouteIndex(_S):
    """Per virtual host: the tables that find the first matching route without a scan.

    All route numbers are global indices into ``Model.routes``, ascending in each entry, so a
    lower number is an earlier declaration. Both tables are *complete*: an entry lists every
    route that may match a path it is found for, so a lookup stops at its first hit.
    """

    # path → every route whose path matcher holds for exactly that path
    exact: dict[str, tuple[int, ...]]
    # key → every prefix route whose prefix, and every regex route whose literal prefix, is a
    # prefix of the key (keys are the prefixes and the regexes' literal prefixes)
    keys: dict[str, tuple[int, ...]]
    key_lengths: tuple[int, ...]  # distinct key lengths, descending (0: a regex with no literal)


class VirtualHost(_S):
    name: str
    domains: tuple[str, ...]
    routes: tuple[int, ...]  # global route indices in declared order
    index: RouteIndex
    rate_limit: RateLimitOff | RateLimit  # applied to every request routed in this host


class DomainIndex(_S):
    """Host → virtual host: exact > longest ``*.suffix`` > longest ``prefix.*`` > ``*``."""

    exact: dict[str, int]
    suffix: dict[str, int]  # ".example.com" → vhost (from "*.example.com")
    prefix: dict[str, int]  # "www." → vhost (from "www.*")
    default: int  # vhost index of "*", or -1 when there is none (→ 404)


R = TypeVar("R")


class ModelOf(_S, Generic[R]):
    """The fields of the whole runtime model, routes of type ``R``: ``Model`` decodes them,
    ``artifact.LazyModel`` leaves them encoded until used (fields are decoded by position,
    so both must have these, in this order)."""

    format_version: int
    listeners: tuple[Listener, ...]
    admin: AdminOff | Admin
    limits: Limits
    access_log: AccessLogOff | AccessLog
    tracing: TracingOff | Tracing
    clusters: tuple[Cluster, ...]
    virtual_hosts: tuple[VirtualHost, ...]
    domains: DomainIndex
    routes: tuple[R, ...]


class Model(ModelOf[Route]):
    """The whole runtime model: what one generation of pavis does."""


class Validated:
    """A Model that passed core validation. Only ``pavis.compiler.validate`` builds one;
    ``pavis.artifact.seal`` accepts nothing else."""

    __slots__ = ("model",)

    def __init__(self, model: Model) -> None:
        self.model = model


MODEL_DECODER = msgspec.msgpack.Decoder(Model)
MODEL_ENCODER = msgspec.msgpack.Encoder()
