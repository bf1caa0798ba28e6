"""Core validation: the semantic invariants of a runtime model.

Owns: walking a materialised ``schema.Model`` through every check — the relations between
fields here (address clashes, retry budgets, rewrite and match kinds, ...), the syntax of
single fields in ``fields``, shadowed routes in ``shadow`` — and the construction of
``schema.Validated``: nothing else in pavis builds one. Every problem of the model is
collected (plus those the codec met) and raised together as one ``ConfigError``.
Must not: change the model, apply defaults, or stop at the first problem.

Paths name the field as the user wrote it: ``$.virtual_hosts[0].routes[2].match.regex``.
"""

from __future__ import annotations

from collections.abc import Iterable

from pavis.compiler import fields, shadow, units
from pavis.errors import ConfigError, Problem
from pavis.schema import (
    AccessLog,
    Admin,
    ClientAuth,
    Cluster,
    Direct,
    Forward,
    HeaderOps,
    HealthCheck,
    Model,
    Otlp,
    Outlier,
    Redirect,
    Retry,
    Route,
    ServerTls,
    Tracing,
    UpstreamTls,
    Validated,
    VirtualHost,
)

MAX_DIRECT_BODY = 64 * 1024
MAX_WEIGHT = 1_000_000
REDIRECT_STATUSES = (301, 302, 303, 307, 308)


def validate(model: Model, prior: Iterable[Problem] = (), source: str = "") -> Validated:
    """``Validated(model)`` if neither ``prior`` (codec) nor this check found a problem."""
    problems = list(prior)
    problems.extend(check(model))
    if problems:
        raise ConfigError(sorted(set(problems)), source)
    return Validated(model)


def check(model: Model) -> list[Problem]:
    out: list[Problem] = []
    _listeners(model, out)
    for i, c in enumerate(model.clusters):
        _cluster(f"$.clusters[{i}]", c, out)
    fields.unique(((f"$.clusters[{i}].name", c.name) for i, c in enumerate(model.clusters)), out)
    fields.unique(
        ((f"$.virtual_hosts[{v}].name", vh.name) for v, vh in enumerate(model.virtual_hosts)), out
    )
    for v, vh in enumerate(model.virtual_hosts):
        _vhost(model, v, vh, out)
    _limits(model, out)
    _tracing(model, out)
    return out


# ---------------------------------------------------------------------- listeners, limits


def _listeners(model: Model, out: list[Problem]) -> None:
    if not model.listeners:
        out.append(Problem("$.listeners", "no_listeners", "at least one listener is needed"))
    binds: list[tuple[str, str, int]] = []
    for i, lst in enumerate(model.listeners):
        path = f"$.listeners[{i}]"
        fields.tcp_port(f"{path}.address", lst.port, out)
        if isinstance(lst.tls, ServerTls):
            tls = lst.tls
            if not tls.more:  # one certificate: either syntax; the checks say tls.cert
                fields.pem(f"{path}.tls.cert", tls.cert_pem, "CERTIFICATE", out)
                fields.pem(f"{path}.tls.key", tls.key_pem, "PRIVATE KEY", out)
            else:
                pairs = [(tls.cert_pem, tls.key_pem)] + [(c.cert_pem, c.key_pem) for c in tls.more]
                for k, (cert, key) in enumerate(pairs):
                    where = f"{path}.tls.certificates[{k}]"
                    fields.pem(f"{where}.cert", cert, "CERTIFICATE", out)
                    fields.pem(f"{where}.key", key, "PRIVATE KEY", out)
            if isinstance(tls.client_auth, ClientAuth):
                fields.pem(f"{path}.tls.client_auth.ca", tls.client_auth.ca_pem, "CERTIFICATE", out)
        binds.append((f"{path}.address", lst.host, lst.port))
    fields.unique(
        ((f"$.listeners[{i}].name", lst.name) for i, lst in enumerate(model.listeners)), out
    )
    if isinstance(model.admin, Admin):
        fields.tcp_port("$.admin.address", model.admin.port, out)
        binds.append(("$.admin.address", model.admin.host, model.admin.port))
    by_port: dict[int, list[tuple[str, str]]] = {}
    for path, host, port in binds:
        for other_path, other_host in by_port.get(port, []):
            if (
                host == other_host
                or units.is_wildcard_host(host)
                or units.is_wildcard_host(other_host)
            ):
                out.append(
                    Problem(
                        path,
                        "address_clash",
                        f"{host}:{port} overlaps {other_host}:{port} of {other_path}",
                    )
                )
                break
        by_port.setdefault(port, []).append((path, host))


def _limits(model: Model, out: list[Problem]) -> None:
    lim = model.limits
    fields.in_range("$.limits.max_request_line", lim.max_request_line, 64, 1024 * 1024, out)
    fields.in_range("$.limits.max_header_bytes", lim.max_header_bytes, 256, 16 * 1024 * 1024, out)
    fields.in_range("$.limits.max_headers", lim.max_headers, 1, 10_000, out)
    fields.in_range(
        "$.limits.max_response_header_bytes",
        lim.max_response_header_bytes,
        256,
        16 * 1024 * 1024,
        out,
    )
    fields.in_range("$.limits.max_response_headers", lim.max_response_headers, 1, 10_000, out)
    if isinstance(model.access_log, AccessLog):
        buf = model.access_log.buffer_bytes
        fields.in_range("$.access_log.buffer", buf, 4096, 1024 * 1024 * 1024, out)


def _tracing(model: Model, out: list[Problem]) -> None:
    tr = model.tracing
    if not isinstance(tr, Tracing):
        return
    if not 0.0 <= tr.sample <= 1.0:  # NaN fails both comparisons
        out.append(Problem("$.tracing.sample", "out_of_range", f"{tr.sample} is not in 0-1"))
    if isinstance(tr.exporter, Otlp):
        o = tr.exporter
        fields.http_url("$.tracing.otlp.endpoint", o.endpoint, out)
        fields.in_range("$.tracing.otlp.queue", o.queue, 1, 1_000_000, out)
        if not o.service_name or fields.BAD_VALUE.search(o.service_name):
            out.append(
                Problem(
                    "$.tracing.otlp.service_name",
                    "invalid_value",
                    "the service name must be non-empty, without control characters",
                )
            )


# ---------------------------------------------------------------------- clusters


def _cluster(path: str, c: Cluster, out: list[Problem]) -> None:
    if not c.endpoints:
        out.append(Problem(f"{path}.endpoints", "empty_list", "a cluster needs an endpoint"))
    seen: dict[tuple[str, int], int] = {}
    for k, ep in enumerate(c.endpoints):
        where = f"{path}.endpoints[{k}]"
        fields.tcp_port(where, ep.port, out)
        if not 1 <= ep.weight <= MAX_WEIGHT:
            out.append(
                Problem(
                    f"{where}.weight", "invalid_weight", f"weight {ep.weight} is not 1-{MAX_WEIGHT}"
                )
            )
        if (ep.host, ep.port) in seen:
            first = seen[(ep.host, ep.port)]
            out.append(
                Problem(where, "duplicate_name", f"same endpoint as {path}.endpoints[{first}]")
            )
        seen.setdefault((ep.host, ep.port), k)
    pool = c.pool
    fields.in_range(f"{path}.pool.max_connections", pool.max_connections, 1, 1_000_000, out)
    fields.in_range(f"{path}.pool.max_idle", pool.max_idle, 0, pool.max_connections, out)
    fields.in_range(f"{path}.pool.max_pending", pool.max_pending, 0, 1_000_000, out)
    hc = c.health_check
    if isinstance(hc, HealthCheck):
        hp = f"{path}.health_check"
        fields.url_path(f"{hp}.path", hc.path, out)
        fields.header_value(f"{hp}.host", hc.host, out)
        fields.in_range(f"{hp}.unhealthy_after", hc.unhealthy_after, 1, 1000, out)
        fields.in_range(f"{hp}.healthy_after", hc.healthy_after, 1, 1000, out)
        if hc.timeout_ms > hc.interval_ms:
            out.append(
                Problem(f"{hp}.timeout", "out_of_range", "the probe timeout exceeds the interval")
            )
        if not hc.expected_statuses:
            out.append(Problem(f"{hp}.expected_statuses", "empty_list", "no passing status"))
    if isinstance(c.tls, UpstreamTls):
        fields.pem(f"{path}.tls.ca", c.tls.ca_pem, "CERTIFICATE", out)
        fields.pem(f"{path}.tls.cert", c.tls.cert_pem, "CERTIFICATE", out)
        fields.pem(f"{path}.tls.key", c.tls.key_pem, "PRIVATE KEY", out)
        if c.tls.sni and fields.domain_problem(c.tls.sni):
            out.append(
                Problem(f"{path}.tls.sni", "invalid_domain", f"{c.tls.sni!r} is not a host name")
            )
    if isinstance(c.outlier, Outlier):
        fields.in_range(
            f"{path}.outlier.consecutive_failures", c.outlier.consecutive_failures, 1, 10_000, out
        )


# ---------------------------------------------------------------------- virtual hosts


def _vhost(model: Model, v: int, vh: VirtualHost, out: list[Problem]) -> None:
    path = f"$.virtual_hosts[{v}]"
    if not vh.domains:
        out.append(Problem(f"{path}.domains", "empty_list", "a virtual host needs a domain"))
    for k, domain in enumerate(vh.domains):
        reason = fields.domain_problem(domain)
        if reason:
            out.append(Problem(f"{path}.domains[{k}]", "invalid_domain", reason))
    routes = [model.routes[i] for i in vh.routes]
    fields.unique(((f"{path}.routes[{j}].name", r.name) for j, r in enumerate(routes)), out)
    for j, r in enumerate(routes):
        _route(model, f"{path}.routes[{j}]", r, out)
    shadow.shadowed(path, routes, out)


def _route(model: Model, path: str, r: Route, out: list[Problem]) -> None:
    m = r.match
    mp = f"{path}.match"
    if m.kind == "regex":
        fields.regex_pattern(f"{mp}.regex", m.path, out)
    else:
        fields.url_path(f"{mp}.{m.kind}", m.path, out)
    for method in m.methods:
        if not fields.TOKEN.fullmatch(method):
            out.append(
                Problem(f"{mp}.methods", "invalid_method", f"{method!r} is not an HTTP method")
            )
    for k, h in enumerate(m.headers):
        hp = f"{mp}.headers[{k}]"
        fields.header_name(f"{hp}.name", h.name, out)
        if h.kind == "regex":
            fields.regex_pattern(f"{hp}.regex", h.value, out)
    for k, q in enumerate(m.query):
        qp = f"{mp}.query[{k}]"
        fields.query_name(f"{qp}.name", q.name, out)
        if q.kind == "regex":
            fields.regex_pattern(f"{qp}.regex", q.value, out)
        elif q.kind in ("exact", "prefix"):
            fields.query_value(f"{qp}.{q.kind}", q.value, out)
    if r.request_headers.remove or r.request_headers.set or r.request_headers.add:
        _header_ops(f"{path}.request_headers", r.request_headers, out)
    if r.response_headers.remove or r.response_headers.set or r.response_headers.add:
        _header_ops(f"{path}.response_headers", r.response_headers, out)
    action = r.action
    if isinstance(action, Forward):
        _forward(f"{path}.forward", r, action, out)
    elif isinstance(action, Redirect):
        if action.status not in REDIRECT_STATUSES:
            out.append(
                Problem(
                    f"{path}.redirect.status",
                    "invalid_status",
                    f"redirect status {action.status} is not one of {REDIRECT_STATUSES}",
                )
            )
        if not action.location:
            out.append(
                Problem(
                    f"{path}.redirect.location", "missing_location", "a redirect needs a location"
                )
            )
        fields.header_value(f"{path}.redirect.location", action.location, out)
    elif isinstance(action, Direct):
        if not 100 <= action.status <= 599:
            out.append(
                Problem(
                    f"{path}.direct.status", "invalid_status", f"{action.status} is not 100-599"
                )
            )
        if len(action.body) > MAX_DIRECT_BODY:
            out.append(
                Problem(
                    f"{path}.direct.body",
                    "body_too_large",
                    f"body is {len(action.body)} bytes; the limit is {MAX_DIRECT_BODY}",
                )
            )
        fields.header_value(f"{path}.direct.content_type", action.content_type, out)


def _header_ops(path: str, ops: HeaderOps, out: list[Problem]) -> None:
    for name in ops.remove:
        fields.header_name(f"{path}.remove", name, out)
    for field, pairs in (("set", ops.set), ("add", ops.add)):
        seen: set[str] = set()
        for name, value in pairs:
            fields.header_name(f"{path}.{field}.{name}", name, out)
            fields.header_value(f"{path}.{field}.{name}", value, out)
            if name in seen:
                out.append(
                    Problem(f"{path}.{field}.{name}", "duplicate_name", "header named twice")
                )
            seen.add(name)


def _forward(path: str, r: Route, f: Forward, out: list[Problem]) -> None:
    names: set[str] = set()
    for k, wc in enumerate(f.clusters):
        if not 1 <= wc.weight <= MAX_WEIGHT:
            out.append(
                Problem(
                    f"{path}.clusters[{k}].weight",
                    "invalid_weight",
                    f"weight {wc.weight} is not 1-{MAX_WEIGHT}",
                )
            )
        if wc.name in names:
            out.append(
                Problem(f"{path}.clusters[{k}].name", "duplicate_name", f"{wc.name!r} listed twice")
            )
        names.add(wc.name)
    if f.rewrite.replace_prefix:
        if r.match.kind == "regex":
            out.append(
                Problem(
                    f"{path}.rewrite.prefix",
                    "invalid_rewrite",
                    "a prefix rewrite needs an exact or prefix match, not a regex",
                )
            )
        fields.url_path(f"{path}.rewrite.prefix", f.rewrite.prefix, out)
    host = f.rewrite.host
    if f.rewrite.replace_host and (not host or fields.BAD_VALUE.search(host) or " " in host):
        out.append(
            Problem(f"{path}.rewrite.host", "invalid_header_value", "not a Host header value")
        )
    retry = f.retry
    if isinstance(retry, Retry):
        rp = f"{path}.retry"
        fields.in_range(f"{rp}.attempts", retry.attempts, 1, 10, out)
        if retry.backoff_base_ms > retry.backoff_max_ms:
            out.append(
                Problem(f"{rp}.backoff.base", "out_of_range", "backoff base exceeds backoff max")
            )
        waits = units.backoff_total_ms(retry.attempts, retry.backoff_base_ms, retry.backoff_max_ms)
        budget = retry.attempts * retry.per_try_timeout_ms + waits
        if budget > f.timeout_ms:
            out.append(
                Problem(
                    rp,
                    "retry_exceeds_timeout",
                    f"{retry.attempts} attempts x {retry.per_try_timeout_ms} ms + {waits} ms "
                    f"backoff = {budget} ms exceeds the route timeout of {f.timeout_ms} ms",
                )
            )
