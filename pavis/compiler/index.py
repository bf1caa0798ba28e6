"""Lookup tables of the runtime model: route index, domain index, endpoint schedule.

Owns: building the tables that ``pavis.lookup`` reads, exactly in the shape it expects, and
the smooth weighted round-robin cycle of a cluster.
Must not: match requests or judge the config; invalid input still yields some table (the
validator rejects the config before anything uses it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import reduce
from math import gcd

from pavis.compiler.regex import literal_prefix, problem
from pavis.schema import DomainIndex, Match, RouteIndex

MAX_SCHEDULE = 1000  # endpoint weights, divided by their gcd, must sum to at most this


def _sorted_tables(table: dict[str, list[int]]) -> dict[str, tuple[int, ...]]:
    # Sorted keys and ascending ids: the encoding (and so the checksum) depends on order.
    return {key: tuple(sorted(table[key])) for key in sorted(table)}


def route_index(matches: Sequence[tuple[int, Match]]) -> RouteIndex:
    """Index of one virtual host's routes, given (global route id, match) pairs.

    Both tables are complete, so a lookup stops at its first hit (``pavis.lookup``):
    - ``keys``: for each prefix and each regex literal prefix K, every prefix route whose
      prefix is a prefix of K and every regex route whose literal is a prefix of K;
    - ``exact``: for each exact path P, the exact routes of P, every prefix route covering P
      and every regex route that fully matches P.
    """
    exact: dict[str, list[int]] = {}
    own: dict[str, list[int]] = {}  # key → the prefix / regex routes declared with that key
    patterns: dict[int, str] = {}
    for rid, m in matches:
        if m.kind == "exact":
            exact.setdefault(m.path, []).append(rid)
        elif m.kind == "prefix":
            own.setdefault(m.path, []).append(rid)
        else:
            own.setdefault(literal_prefix(m.path), []).append(rid)
            patterns[rid] = m.path
    lengths = sorted({len(k) for k in own})
    keys = {key: _covering(key, own, lengths) for key in own}
    for path, ids in exact.items():
        for rid in _covering(path, own, lengths):
            pattern = patterns.get(rid)
            if pattern is None:
                ids.append(rid)  # a prefix route: its prefix is a prefix of the path
            # Only patterns the validator accepts are run here; a rejected one never reaches
            # an artifact, and running it could backtrack for ever.
            elif problem(pattern) is None and re.fullmatch(pattern, path) is not None:
                ids.append(rid)
    return RouteIndex(
        exact=_sorted_tables(exact),
        keys=_sorted_tables(keys),
        key_lengths=tuple(sorted(lengths, reverse=True)),
    )


def _covering(text: str, own: dict[str, list[int]], lengths: list[int]) -> list[int]:
    """Routes of every key that is a prefix of ``text`` (``text`` itself included)."""
    out: list[int] = []
    for length in lengths:
        if length > len(text):
            break
        out.extend(own.get(text[:length], ()))
    return out


def domain_key(domain: str) -> tuple[str, str]:
    """(table, key) of a normalised domain: ``exact``, ``suffix``, ``prefix`` or ``default``."""
    if domain == "*":
        return "default", ""
    if domain.startswith("*."):
        return "suffix", domain[1:]
    if domain.endswith(".*"):
        return "prefix", domain[:-1]
    return "exact", domain


def domain_index(entries: Sequence[tuple[str, int]]) -> DomainIndex:
    """Domain index from (normalised domain, vhost index); the first entry of a key wins
    (duplicates are rejected by the codec before this matters)."""
    tables: dict[str, dict[str, int]] = {"exact": {}, "suffix": {}, "prefix": {}}
    default = -1
    for domain, vhost in entries:
        table, key = domain_key(domain)
        if table == "default":
            if default < 0:
                default = vhost
        else:
            tables[table].setdefault(key, vhost)
    return DomainIndex(
        exact={k: tables["exact"][k] for k in sorted(tables["exact"])},
        suffix={k: tables["suffix"][k] for k in sorted(tables["suffix"])},
        prefix={k: tables["prefix"][k] for k in sorted(tables["prefix"])},
        default=default,
    )


def reduced_weights(weights: Sequence[int]) -> list[int]:
    """Weights divided by their gcd (the cycle is as short as the ratios allow)."""
    positive = [max(w, 1) for w in weights]
    g = reduce(gcd, positive, 0) or 1
    return [w // g for w in positive]


def swrr_schedule(weights: Sequence[int]) -> tuple[int, ...]:
    """One full cycle of nginx's smooth weighted round-robin over endpoint indices.

    Each step adds every weight to its current value, picks the largest (lowest index on
    ties) and subtracts the total from it: weights 5,1,1 give a,a,b,a,c,a,a — spread out,
    not a,a,a,a,a,b,c. Callers keep ``sum(reduced_weights(weights)) <= MAX_SCHEDULE``.
    """
    w = reduced_weights(weights)
    total = sum(w)
    current = [0] * len(w)
    out: list[int] = []
    for _ in range(min(total, MAX_SCHEDULE)):
        best = 0
        for i, wi in enumerate(w):
            current[i] += wi
            if current[i] > current[best]:
                best = i
        current[best] -= total
        out.append(best)
    return tuple(out)
