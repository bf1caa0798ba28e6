"""Request → virtual host → route, over the tables the compiler built.

Owns: the one implementation of request matching. Workers call it on every request and
``pavctl explain`` calls it offline, so what explain says is what the proxy does.
Must not: build tables, apply defaults, or import the compiler. It only reads the index in
``pavis.schema`` and evaluates each candidate's predicates.

Semantics (documented in docs/CONFIG.md):
- host: lower-cased, port and trailing dot removed; exact > longest ``*.suffix`` > longest
  ``prefix.*`` > ``*``.
- target: ``split_target`` is the one reading of a request target (RFC 9112 §3.2). An
  origin-form target is split at the first ``?`` into path and query; a ``#`` anywhere makes
  it invalid (a fragment is never sent in a request target) → 400. An absolute-form target
  (``http://host/path``) supplies the Host and is routed by its path. ``*`` is valid for
  OPTIONS only. Anything else → 400.
- Host: ``valid_host`` — RFC 3986 host (reg-name without commas, IPv4, IP-literal) and an
  optional port of digits; anything else → 400.
- path: the request target without its query string, not decoded or normalised.
- query: ``split_query`` is the one reading of the query for query matchers: split at every
  ``&`` (empty pieces skipped), each piece at its first ``=`` into name and value (no ``=``:
  the value is empty). Names and values are raw — not percent-decoded, ``+`` is not a space,
  names are case-sensitive — as Envoy's ``query_parameters`` matcher sees them. A repeated
  name keeps every value: a value matcher holds if any of them matches. The query is split
  only when a candidate route with query matchers is reached, at most once per request.
- route: the first route in declared order whose path match, methods, header and query
  matchers all hold. Path regexes are full matches (``re.fullmatch``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Protocol

from pavis.schema import DomainIndex, HeaderMatch, QueryMatch, Route, RouteIndex

QueryParams = Mapping[str, Sequence[str]]


class Routes(Protocol):
    """The route table by global index: a tuple, or the worker's lazily decoded one."""

    def __getitem__(self, i: int, /) -> Route: ...


# Compiled patterns are shared across generations: a flip does not recompile them.
_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def compiled(pattern: str) -> re.Pattern[str]:
    rx = _REGEX_CACHE.get(pattern)
    if rx is None:
        rx = _REGEX_CACHE[pattern] = re.compile(pattern)
    return rx


def normalise_host(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # IPv6 literal, maybe with a port
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    colon = host.rfind(":")
    if colon >= 0:
        host = host[:colon]
    return host.rstrip(".")


def find_vhost(domains: DomainIndex, host: str) -> int:
    """Virtual host index for a Host header value, or -1 (→ 404)."""
    h = normalise_host(host)
    found = domains.exact.get(h)
    if found is not None:
        return found
    if domains.suffix:
        # "*.example.com" is stored as ".example.com": try each suffix from the longest.
        dot = h.find(".")
        while dot >= 0:
            found = domains.suffix.get(h[dot:])
            if found is not None:
                return found
            dot = h.find(".", dot + 1)
    if domains.prefix:
        # "www.*" is stored as "www.": try each prefix from the longest.
        dot = h.rfind(".")
        while dot >= 0:
            found = domains.prefix.get(h[: dot + 1])
            if found is not None:
                return found
            dot = h.rfind(".", 0, dot)
    return domains.default


def candidates(index: RouteIndex, path: str) -> tuple[int, ...]:
    """Global indices of routes whose path tables may match, ascending (declared order).

    Both tables are complete (see ``schema.RouteIndex``): an exact hit, or the longest key
    that is a prefix of the path, already lists every route that may match — any shorter key
    that is also a prefix of the path is a prefix of that key, and its routes are in it.
    """
    hit = index.exact.get(path)
    if hit:
        return hit
    n = len(path)
    keys = index.keys
    for length in index.key_lengths:
        if length <= n:
            hit = keys.get(path[:length])
            if hit is not None:
                return hit
    return ()


def _header_holds(m: HeaderMatch, headers: Mapping[str, str]) -> bool:
    value = headers.get(m.name)
    kind = m.kind
    if kind == "present":
        return value is not None
    if kind == "absent":
        return value is None
    if value is None:
        return False
    if kind == "exact":
        return value == m.value
    if kind == "prefix":
        return value.startswith(m.value)
    return compiled(m.value).fullmatch(value) is not None


def split_query(query: str) -> dict[str, list[str]]:
    """Query parameters by raw name, every value in order (see the module docstring).

    ``query`` is the query as ``split_target`` keeps it: ``""`` or ``"?..."`` (one leading
    ``?`` is dropped; a bare query string without it is read the same way).
    """
    params: dict[str, list[str]] = {}
    if query[:1] == "?":
        query = query[1:]
    if not query:
        return params
    for piece in query.split("&"):
        if not piece:
            continue
        eq = piece.find("=")
        name, value = (piece, "") if eq < 0 else (piece[:eq], piece[eq + 1 :])
        values = params.get(name)
        if values is None:
            params[name] = [value]
        else:
            values.append(value)
    return params


def _query_holds(m: QueryMatch, params: QueryParams) -> bool:
    values = params.get(m.name)
    kind = m.kind
    if kind == "present":
        return values is not None
    if kind == "absent":
        return values is None
    if values is None:
        return False
    if kind == "exact":
        return m.value in values
    if kind == "prefix":
        return any(v.startswith(m.value) for v in values)
    rx = compiled(m.value)
    return any(rx.fullmatch(v) is not None for v in values)


def _holds_but_query(route: Route, method: str, path: str, headers: Mapping[str, str]) -> bool:
    """Path, methods and header matchers of ``route`` hold."""
    match = route.match
    if match.kind == "exact":
        if path != match.path:
            return False
    elif match.kind == "prefix":
        if not path.startswith(match.path):
            return False
    elif compiled(match.path).fullmatch(path) is None:
        return False
    if match.methods and method not in match.methods:
        return False
    return all(_header_holds(h, headers) for h in match.headers)


def route_holds(
    route: Route, method: str, path: str, headers: Mapping[str, str], query: str = ""
) -> bool:
    """Every predicate of ``route`` holds for this request (path included). ``query`` as
    ``split_target`` keeps it (``"?..."`` or ``""``)."""
    if not _holds_but_query(route, method, path, headers):
        return False
    q = route.match.query
    if not q:
        return True
    params = split_query(query)
    return all(_query_holds(m, params) for m in q)


def match_route(
    routes: Routes,
    index: RouteIndex,
    method: str,
    path: str,
    headers: Mapping[str, str],
    query: str | bytes = "",
) -> tuple[int, bool]:
    """``find_route``, and whether its answer may depend on more than method and path: True if
    a route examined on the way has header or query matchers (an answer that does not may be
    memoised by method and path).

    ``query`` as ``split_target`` keeps it, text or the worker's latin-1 bytes: it is decoded
    and split only if a route with query matchers is reached (then once), so a lookup that
    meets none pays nothing for it."""
    varies = False
    params: dict[str, list[str]] | None = None
    for i in candidates(index, path):
        route = routes[i]
        match = route.match
        if match.headers or match.query:
            varies = True
        if not _holds_but_query(route, method, path, headers):
            continue
        if match.query:
            if params is None:
                text = query.decode("latin-1") if isinstance(query, bytes) else query
                params = split_query(text)
            if not all(_query_holds(m, params) for m in match.query):
                continue
        return i, varies
    return -1, varies


def find_route(
    routes: Routes,
    index: RouteIndex,
    method: str,
    path: str,
    headers: Mapping[str, str],
    query: str = "",
) -> int:
    """Global index of the first declared route that matches, or -1 (→ 404).

    ``headers`` maps lower-case names to values (repeated headers joined with ", ");
    ``query`` is the query as ``split_target`` keeps it (``"?..."`` or ``""``).
    """
    return match_route(routes, index, method, path, headers, query)[0]


def find_route_naive(
    routes: Sequence[Route],
    declared: Sequence[int],
    method: str,
    path: str,
    headers: Mapping[str, str],
    query: str = "",
) -> int:
    """Reference semantics: scan ``declared`` in order. Used by tests and nothing else."""
    for i in declared:
        if route_holds(routes[i], method, path, headers, query):
            return i
    return -1


# RFC 3986 reg-name: unreserved / pct-encoded / sub-delims, but without ",": a comma in Host
# is the mark of two Host values folded into one, which a later hop may read either way.
_REG_NAME = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+;=]|%[0-9A-Fa-f]{2})*")
_REG_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+;="
_SCHEMES = (b"http://", b"https://")


def valid_host(host: bytes) -> bool:
    """Whether a Host value (or an absolute-form authority) is ``host [":" port]`` with an
    RFC 3986 host: a reg-name (no comma; IPv4 is a reg-name), or ``[IPv6]``. Empty is invalid:
    every route decision and the upstream's Host need a name."""
    if host.startswith(b"["):
        end = host.find(b"]")
        if end < 0 or b"%" in host[:end]:  # no zone id: RFC 3986 has none
            return False
        try:
            ipaddress.IPv6Address(host[1:end].decode("ascii"))
        except ValueError:  # UnicodeDecodeError is a ValueError
            return False
        rest = host[end + 1 :]
        if not rest:
            return True
        port = rest[1:]
        return rest[:1] == b":" and len(port) <= 5 and (not port or port.isdigit())
    colon = host.find(b":")
    if colon < 0:
        name, port = host, b""
    else:
        name, port = host[:colon], host[colon + 1 :]
        if len(port) > 5 or (port and not port.isdigit()):  # bytes.isdigit: ASCII digits only
            return False
    if not name:
        return False
    # Every request has a Host: deleting the reg-name characters is one C call, and what
    # is left must be nothing; a "%" (pct-encoding) takes the regular expression.
    rest = name.translate(None, _REG_CHARS)
    return not rest or (b"%" in rest and _REG_NAME.fullmatch(name) is not None)


class Target:
    """A request target read once: what routing sees and what is forwarded."""

    __slots__ = ("path", "query", "authority")

    def __init__(self, path: bytes, query: bytes, authority: bytes | None) -> None:
        self.path = path  # routed on; never decoded or normalised
        self.query = query  # "?..." or b""
        self.authority = authority  # absolute-form only: it replaces the Host header


def split_target(method: bytes, target: bytes) -> Target | None:
    """The request target's parts, or None if it is not a valid target for ``method`` (→ 400).

    origin-form ``/path?query``; absolute-form ``http(s)://authority/path?query``, whose
    authority must be a ``valid_host``; asterisk-form ``*`` for OPTIONS only. A ``#`` in any
    form is rejected: RFC 9112 §3.2 has no fragment in a request target, and reading it as
    part of the path (or dropping it) would route and forward different things.
    """
    if b"#" in target:
        return None
    authority: bytes | None = None
    if target[:1] != b"/":
        if target == b"*":
            return Target(b"*", b"", None) if method == b"OPTIONS" else None
        lower = target[:8].lower()
        for scheme in _SCHEMES:
            if lower.startswith(scheme):
                rest = target[len(scheme) :]
                cut = len(rest)
                for sep in (b"/", b"?"):
                    i = rest.find(sep)
                    if 0 <= i < cut:
                        cut = i
                authority = rest[:cut]
                if not valid_host(authority):
                    return None
                target = rest[cut:]
                if target[:1] != b"/":
                    target = b"/" + target
                break
        else:
            return None
    q = target.find(b"?")
    if q < 0:
        return Target(target, b"", authority)
    return Target(target[:q], target[q:], authority)


def split_target_text(method: str, target: str) -> tuple[str, str, str | None] | None:
    """``split_target`` for text (``pavctl explain``): (path, query, authority) or None."""
    t = split_target(method.encode("utf-8"), target.encode("utf-8"))
    if t is None:
        return None
    auth = t.authority.decode("utf-8") if t.authority is not None else None
    return t.path.decode("utf-8"), t.query.decode("utf-8"), auth
