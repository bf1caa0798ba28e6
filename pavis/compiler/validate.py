"""Core validation: the semantic invariants of a runtime model.

Owns: every check on a materialised ``schema.Model`` (names, ranges, addresses, regexes,
header syntax, retry budgets, shadowed routes, ...) and the construction of
``schema.Validated`` — nothing else in pavis builds one. Every problem of the model is
collected (plus those the codec met) and raised together as one ``ConfigError``.
Must not: change the model, apply defaults, or stop at the first problem.

Paths name the field as the user wrote it: ``$.virtual_hosts[0].routes[2].match.regex``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pavis.compiler import regex, units
from pavis.errors import ConfigError, Problem
from pavis.schema import (
    Admin,
    Cluster,
    Direct,
    Forward,
    HeaderOps,
    HealthCheck,
    Model,
    Outlier,
    Redirect,
    Retry,
    Route,
    ServerTls,
    UpstreamTls,
    Validated,
    VirtualHost,
)

MAX_DIRECT_BODY = 64 * 1024
MAX_WEIGHT = 1_000_000
MAX_SHADOW_REGEX_TRIES = 100_000
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CR, LF, NUL and friends
_DOMAIN_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


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
    _unique(((f"$.clusters[{i}].name", c.name) for i, c in enumerate(model.clusters)), out)
    _unique(
        ((f"$.virtual_hosts[{v}].name", vh.name) for v, vh in enumerate(model.virtual_hosts)), out
    )
    for v, vh in enumerate(model.virtual_hosts):
        _vhost(model, v, vh, out)
    _limits(model, out)
    return out


def _unique(named: Iterable[tuple[str, str]], out: list[Problem]) -> None:
    seen: dict[str, str] = {}
    for path, name in named:
        if name in seen:
            out.append(Problem(path, "duplicate_name", f"{name!r} is already used at {seen[name]}"))
        else:
            seen[name] = path


def _port(path: str, port: int, out: list[Problem]) -> None:
    if not 1 <= port <= 65535:
        out.append(Problem(path, "invalid_port", f"port {port} is not in 1-65535"))


def _range(path: str, value: int, low: int, high: int, out: list[Problem]) -> None:
    if not low <= value <= high:
        out.append(Problem(path, "out_of_range", f"{value} is not in {low}-{high}"))


# ---------------------------------------------------------------------- listeners, limits


def _listeners(model: Model, out: list[Problem]) -> None:
    if not model.listeners:
        out.append(Problem("$.listeners", "no_listeners", "at least one listener is needed"))
    binds: list[tuple[str, str, int]] = []
    for i, lst in enumerate(model.listeners):
        path = f"$.listeners[{i}]"
        _port(f"{path}.address", lst.port, out)
        if isinstance(lst.tls, ServerTls):
            _pem(f"{path}.tls.cert", lst.tls.cert_pem, "CERTIFICATE", out)
            _pem(f"{path}.tls.key", lst.tls.key_pem, "PRIVATE KEY", out)
        binds.append((f"{path}.address", lst.host, lst.port))
    _unique(((f"$.listeners[{i}].name", lst.name) for i, lst in enumerate(model.listeners)), out)
    if isinstance(model.admin, Admin):
        _port("$.admin.address", model.admin.port, out)
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


def _pem(path: str, text: str, kind: str, out: list[Problem]) -> None:
    # An empty text means the file was unreadable, already reported by the codec.
    if text and not re.search(rf"-----BEGIN [A-Z ]*{kind}-----", text):
        out.append(Problem(path, "invalid_pem", f"the file holds no PEM {kind}"))


def _limits(model: Model, out: list[Problem]) -> None:
    lim = model.limits
    _range("$.limits.max_request_line", lim.max_request_line, 64, 1024 * 1024, out)
    _range("$.limits.max_header_bytes", lim.max_header_bytes, 256, 16 * 1024 * 1024, out)
    _range("$.limits.max_headers", lim.max_headers, 1, 10_000, out)
    _range(
        "$.limits.max_response_header_bytes",
        lim.max_response_header_bytes,
        256,
        16 * 1024 * 1024,
        out,
    )
    _range("$.limits.max_response_headers", lim.max_response_headers, 1, 10_000, out)


# ---------------------------------------------------------------------- clusters


def _cluster(path: str, c: Cluster, out: list[Problem]) -> None:
    if not c.endpoints:
        out.append(Problem(f"{path}.endpoints", "empty_list", "a cluster needs an endpoint"))
    seen: dict[tuple[str, int], int] = {}
    for k, ep in enumerate(c.endpoints):
        where = f"{path}.endpoints[{k}]"
        _port(where, ep.port, out)
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
    _range(f"{path}.pool.max_connections", pool.max_connections, 1, 1_000_000, out)
    _range(f"{path}.pool.max_idle", pool.max_idle, 0, pool.max_connections, out)
    _range(f"{path}.pool.max_pending", pool.max_pending, 0, 1_000_000, out)
    hc = c.health_check
    if isinstance(hc, HealthCheck):
        hp = f"{path}.health_check"
        _path(f"{hp}.path", hc.path, out)
        _header_value(f"{hp}.host", hc.host, out)
        _range(f"{hp}.unhealthy_after", hc.unhealthy_after, 1, 1000, out)
        _range(f"{hp}.healthy_after", hc.healthy_after, 1, 1000, out)
        if hc.timeout_ms > hc.interval_ms:
            out.append(
                Problem(f"{hp}.timeout", "out_of_range", "the probe timeout exceeds the interval")
            )
        if not hc.expected_statuses:
            out.append(Problem(f"{hp}.expected_statuses", "empty_list", "no passing status"))
    if isinstance(c.tls, UpstreamTls):
        _pem(f"{path}.tls.ca", c.tls.ca_pem, "CERTIFICATE", out)
        if c.tls.sni and _domain_problem(c.tls.sni):
            out.append(
                Problem(f"{path}.tls.sni", "invalid_domain", f"{c.tls.sni!r} is not a host name")
            )
    if isinstance(c.outlier, Outlier):
        _range(
            f"{path}.outlier.consecutive_failures", c.outlier.consecutive_failures, 1, 10_000, out
        )


# ---------------------------------------------------------------------- virtual hosts


def _vhost(model: Model, v: int, vh: VirtualHost, out: list[Problem]) -> None:
    path = f"$.virtual_hosts[{v}]"
    if not vh.domains:
        out.append(Problem(f"{path}.domains", "empty_list", "a virtual host needs a domain"))
    for k, domain in enumerate(vh.domains):
        reason = _domain_problem(domain)
        if reason:
            out.append(Problem(f"{path}.domains[{k}]", "invalid_domain", reason))
    routes = [model.routes[i] for i in vh.routes]
    _unique(((f"{path}.routes[{j}].name", r.name) for j, r in enumerate(routes)), out)
    for j, r in enumerate(routes):
        _route(model, f"{path}.routes[{j}]", r, out)
    _shadowed(path, routes, out)


def _domain_problem(domain: str) -> str:
    if domain == "*":
        return ""
    core = domain
    if core.startswith("*."):
        core = core[2:]
    elif core.endswith(".*"):
        core = core[:-2]
    if "*" in core:
        return f"{domain!r}: '*' is allowed only as '*', '*.suffix' or 'prefix.*'"
    if ":" in core and not core.startswith("["):
        return f"{domain!r}: a domain has no port (the Host port is ignored when matching)"
    if core.startswith("[") and core.endswith("]"):
        return ""
    labels = core.split(".")
    if not core or len(core) > 253 or not all(_DOMAIN_LABEL.fullmatch(lb) for lb in labels):
        return f"{domain!r} is not a domain name"
    return ""


def _path(path: str, value: str, out: list[Problem]) -> None:
    if not value.startswith("/"):
        out.append(Problem(path, "invalid_path", f"{value!r} does not start with '/'"))
    elif _BAD_VALUE.search(value) or " " in value:
        out.append(Problem(path, "invalid_path", f"{value!r} contains spaces or control bytes"))


def _header_name(path: str, name: str, out: list[Problem]) -> None:
    if not _TOKEN.fullmatch(name):
        out.append(Problem(path, "invalid_header_name", f"{name!r} is not an HTTP header name"))


def _header_value(path: str, value: str, out: list[Problem]) -> None:
    if _BAD_VALUE.search(value):
        out.append(
            Problem(path, "invalid_header_value", "header values may not contain CR, LF or NUL")
        )


def _regex(path: str, pattern: str, out: list[Problem]) -> None:
    found = regex.problem(pattern)
    if found:
        out.append(Problem(path, found[0], found[1]))


def _route(model: Model, path: str, r: Route, out: list[Problem]) -> None:
    m = r.match
    mp = f"{path}.match"
    if m.kind == "regex":
        _regex(f"{mp}.regex", m.path, out)
    else:
        _path(f"{mp}.{m.kind}", m.path, out)
    for method in m.methods:
        if not _TOKEN.fullmatch(method):
            out.append(
                Problem(f"{mp}.methods", "invalid_method", f"{method!r} is not an HTTP method")
            )
    for k, h in enumerate(m.headers):
        hp = f"{mp}.headers[{k}]"
        _header_name(f"{hp}.name", h.name, out)
        if h.kind == "regex":
            _regex(f"{hp}.regex", h.value, out)
    _header_ops(f"{path}.request_headers", r.request_headers, out)
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
        _header_value(f"{path}.redirect.location", action.location, out)
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
        _header_value(f"{path}.direct.content_type", action.content_type, out)


def _header_ops(path: str, ops: HeaderOps, out: list[Problem]) -> None:
    for name in ops.remove:
        _header_name(f"{path}.remove", name, out)
    for field, pairs in (("set", ops.set), ("add", ops.add)):
        seen: set[str] = set()
        for name, value in pairs:
            _header_name(f"{path}.{field}.{name}", name, out)
            _header_value(f"{path}.{field}.{name}", value, out)
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
        _path(f"{path}.rewrite.prefix", f.rewrite.prefix, out)
    host = f.rewrite.host
    if f.rewrite.replace_host and (not host or _BAD_VALUE.search(host) or " " in host):
        out.append(
            Problem(f"{path}.rewrite.host", "invalid_header_value", "not a Host header value")
        )
    retry = f.retry
    if isinstance(retry, Retry):
        rp = f"{path}.retry"
        _range(f"{rp}.attempts", retry.attempts, 1, 10, out)
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


# ---------------------------------------------------------------------- shadowing


def _covers(earlier: Route, later: Route) -> bool:
    """Method and header predicates of ``earlier`` hold whenever those of ``later`` do."""
    a, b = earlier.match, later.match
    if a.methods and (not b.methods or not set(b.methods) <= set(a.methods)):
        return False
    return set(a.headers) <= set(b.headers)


def _shadowed(path: str, routes: list[Route], out: list[Problem]) -> None:
    """Report routes that an earlier route always wins over.

    Earlier prefix ``p`` covers any later path (exact, prefix, or regex literal) starting
    with ``p``; an earlier exact covers the same exact path; an earlier regex covers the
    identical regex and any later exact path it fully matches. Earlier routes are indexed
    by path (regexes by their literal start, as the lookup does), so this is linear in the
    routes times the number of distinct prefix lengths, not quadratic; regex evaluations
    are capped by ``MAX_SHADOW_REGEX_TRIES`` (beyond it, exact-under-regex goes unreported).
    """
    exact: dict[str, list[int]] = {}
    prefix: dict[str, list[int]] = {}
    regexes: dict[str, list[int]] = {}
    by_literal: dict[str, list[int]] = {}  # safe regexes by literal start
    lengths: set[int] = set()
    literal_lengths: set[int] = set()
    tries = MAX_SHADOW_REGEX_TRIES
    patterns: dict[str, re.Pattern[str]] = {}
    for j, r in enumerate(routes):
        m = r.match
        # every path this route can match starts with ``covered``
        covered = regex.literal_prefix(m.path) if m.kind == "regex" else m.path
        earlier: list[int] = []
        for length in sorted(lengths):
            if length <= len(covered):
                earlier.extend(prefix.get(covered[:length], ()))
        if m.kind == "exact":
            earlier.extend(exact.get(m.path, ()))
            for length in sorted(literal_lengths):
                if length > len(m.path):
                    break
                for i in by_literal.get(m.path[:length], ()):
                    if tries > 0 and _covers(routes[i], r):
                        tries -= 1
                        pattern = routes[i].match.path
                        rx = patterns.get(pattern) or patterns.setdefault(
                            pattern, re.compile(pattern)
                        )
                        if rx.fullmatch(m.path):
                            earlier.append(i)
        elif m.kind == "regex":
            earlier.extend(regexes.get(m.path, ()))
        for i in sorted(earlier):
            if _covers(routes[i], r):
                out.append(
                    Problem(
                        f"{path}.routes[{j}].match",
                        "shadowed_route",
                        f"route {r.name!r} can never match: route {routes[i].name!r} "
                        f"({path}.routes[{i}]) matches every request it matches",
                    )
                )
                break
        table = {"exact": exact, "prefix": prefix, "regex": regexes}[m.kind]
        table.setdefault(m.path, []).append(j)
        if m.kind == "prefix":
            lengths.add(len(m.path))
        elif m.kind == "regex" and regex.problem(m.path) is None:  # never run an unsafe one
            by_literal.setdefault(covered, []).append(j)
            literal_lengths.add(len(covered))
