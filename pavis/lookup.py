"""Request → virtual host → route, over the tables the compiler built.

Owns: the one implementation of request matching. Workers call it on every request and
``pavctl explain`` calls it offline, so what explain says is what the proxy does.
Must not: build tables, apply defaults, or import the compiler. It only reads the index in
``pavis.schema`` and evaluates each candidate's predicates.

Semantics (documented in docs/CONFIG.md):
- host: lower-cased, port and trailing dot removed; exact > longest ``*.suffix`` > longest
  ``prefix.*`` > ``*``.
- path: the request target without its query string, not decoded or normalised.
- route: the first route in declared order whose path match, methods and header matchers all
  hold. Path regexes are full matches (``re.fullmatch``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pavis.schema import DomainIndex, HeaderMatch, Route, RouteIndex

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


def route_holds(route: Route, method: str, path: str, headers: Mapping[str, str]) -> bool:
    """Every predicate of ``route`` holds for this request (path included)."""
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


def find_route(
    routes: Sequence[Route],
    index: RouteIndex,
    method: str,
    path: str,
    headers: Mapping[str, str],
) -> int:
    """Global index of the first declared route that matches, or -1 (→ 404).

    ``headers`` maps lower-case names to values (repeated headers joined with ", ").
    """
    for i in candidates(index, path):
        if route_holds(routes[i], method, path, headers):
            return i
    return -1


def find_route_naive(
    routes: Sequence[Route],
    declared: Sequence[int],
    method: str,
    path: str,
    headers: Mapping[str, str],
) -> int:
    """Reference semantics: scan ``declared`` in order. Used by tests and nothing else."""
    for i in declared:
        if route_holds(routes[i], method, path, headers):
            return i
    return -1


def split_target(target: str) -> str:
    """Path part of a request target (drops ``?query`` and ``#fragment``)."""
    for sep in ("?", "#"):
        cut = target.find(sep)
        if cut >= 0:
            target = target[:cut]
    return target
