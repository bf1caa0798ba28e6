"""Shadowed routes: a route that an earlier route of its virtual host always wins over.

Owns: deciding when an earlier route covers a later one and finding every shadowed route
without comparing all pairs. Must not: run a regex that ``regex.problem`` refuses.
"""

from __future__ import annotations

import bisect
import re

from pavis.compiler import regex
from pavis.errors import Problem
from pavis.schema import Route

MAX_SHADOW_REGEX_TRIES = 100_000


def covers(earlier: Route, later: Route) -> bool:
    """Method, header and query predicates of ``earlier`` hold whenever those of ``later`` do.

    Conservative: a matcher list covers another only if it is a subset of it, so a route
    with header or query matchers never covers a later route without them."""
    a, b = earlier.match, later.match
    if a.methods and (not b.methods or not set(b.methods) <= set(a.methods)):
        return False
    return set(a.headers) <= set(b.headers) and set(a.query) <= set(b.query)


def shadowed(path: str, routes: list[Route], out: list[Problem]) -> None:
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
    tables = {"exact": exact, "prefix": prefix, "regex": regexes}
    by_literal: dict[str, list[int]] = {}  # safe regexes by literal start
    lengths: list[int] = []  # of the prefixes so far, ascending
    literal_lengths: list[int] = []  # of the safe regexes' literal starts, ascending
    tries = MAX_SHADOW_REGEX_TRIES
    patterns: dict[str, re.Pattern[str]] = {}
    for j, r in enumerate(routes):
        m = r.match
        # every path this route can match starts with ``covered``
        covered = regex.literal_prefix(m.path) if m.kind == "regex" else m.path
        earlier: list[int] = []
        for length in lengths:
            if length > len(covered):
                break
            found = prefix.get(covered[:length])
            if found:
                earlier.extend(found)
        if m.kind == "exact":
            earlier.extend(exact.get(m.path, ()))
            for length in literal_lengths:
                if length > len(m.path):
                    break
                for i in by_literal.get(m.path[:length], ()):
                    if tries > 0 and covers(routes[i], r):
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
            if covers(routes[i], r):
                out.append(
                    Problem(
                        f"{path}.routes[{j}].match",
                        "shadowed_route",
                        f"route {r.name!r} can never match: route {routes[i].name!r} "
                        f"({path}.routes[{i}]) matches every request it matches",
                    )
                )
                break
        tables[m.kind].setdefault(m.path, []).append(j)
        if m.kind == "prefix":
            _add_length(lengths, len(m.path))
        elif m.kind == "regex" and regex.problem(m.path) is None:  # never run an unsafe one
            by_literal.setdefault(covered, []).append(j)
            _add_length(literal_lengths, len(covered))


def _add_length(lengths: list[int], length: int) -> None:
    """Keep ``lengths`` ascending and without repeats (a route table has few lengths)."""
    at = bisect.bisect_left(lengths, length)
    if at == len(lengths) or lengths[at] != length:
        lengths.insert(at, length)
