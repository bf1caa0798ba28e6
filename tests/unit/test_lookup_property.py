"""Property tests: the compiled lookup tables answer exactly like the naive definitions.

Routes: for random route tables and random requests, ``find_route`` over the index the
codec built returns the same route as a first-match scan in declared order.
Hosts: for random domain sets and random Host values, ``find_vhost`` returns what the
documented precedence (exact > longest ``*.suffix`` > longest ``prefix.*`` > ``*``) says.
The tables are built by the real codec; validation is skipped on purpose, because random
tables are often (correctly) rejected as shadowed and the index must be right regardless.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pavis.compiler import codec, shape
from pavis.compiler.regex import literal_prefix
from pavis.lookup import find_route, find_route_naive, find_vhost, normalise_host
from pavis.schema import Model

ALPHABET = "/ab."
paths = st.text(alphabet=ALPHABET, max_size=7)
slash_paths = paths.map(lambda p: "/" + p)
# Regex tails chosen to exercise literal-prefix extraction: quantifiers right after a
# literal, alternation at top level and inside groups, optional groups, anchors.
REGEX_TAILS = [
    "",
    "b*",
    "a?",
    "[ab]*",
    ".*",
    "(a|b)",
    "|/b",
    "|/",
    "(/a)?",
    "$",
    "[.]",
    r"\.b",
    "+",
    "b{2}",
    "(?:/a|/b)",
    r"\/",
]


def _valid(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


regexes = st.builds(
    lambda anchor, lit, tail, flags: flags + anchor + lit + tail,
    st.sampled_from(["", "^"]),
    st.text(alphabet="/ab", max_size=4),
    st.sampled_from(REGEX_TAILS),
    st.sampled_from(["", "", "", "(?i)"]),
).filter(_valid)


matches = st.one_of(
    st.builds(lambda p: {"exact": p}, slash_paths),
    st.builds(lambda p: {"prefix": p}, slash_paths),
    st.builds(lambda p: {"prefix": p}, paths),  # also prefixes the validator would refuse
    st.builds(lambda p: {"regex": p}, regexes),
)
header_matchers = st.sampled_from(
    [
        [],
        [],
        [{"name": "X-A", "exact": "1"}],
        [{"name": "x-a", "present": True}],
        [{"name": "x-a", "absent": True}],
        [{"name": "x-a", "prefix": "1"}],
        [{"name": "x-a", "regex": "1+"}, {"name": "x-b", "absent": True}],
    ]
)
method_sets = st.sampled_from([[], [], ["GET"], ["post", "GET"], ["PUT"]])


@st.composite
def route_docs(draw: Any) -> dict[str, Any]:
    match = dict(draw(matches))
    match["methods"] = draw(method_sets)
    match["headers"] = draw(header_matchers)
    return {"match": match, "direct": {"status": 200}}


def build(doc: dict[str, Any]) -> Model:
    config = shape.to_intent(doc)
    model, _problems = codec.build(config, Path("."))
    return model


def config_with(vhosts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"version": 1, "listeners": [{"address": "127.0.0.1:8080"}], "virtual_hosts": vhosts}


requests = st.tuples(
    st.sampled_from(["GET", "POST", "PUT"]),
    st.one_of(paths, slash_paths),
    st.sampled_from([{}, {"x-a": "1"}, {"x-a": "12"}, {"x-a": "2"}]),
)


@settings(max_examples=300, deadline=None)
@given(
    tables=st.lists(st.lists(route_docs(), max_size=12), min_size=1, max_size=3),
    reqs=st.lists(requests, min_size=1, max_size=20),
)
def test_indexed_route_lookup_equals_first_match_scan(
    tables: list[list[dict[str, Any]]], reqs: list[tuple[str, str, dict[str, str]]]
) -> None:
    model = build(
        config_with(
            [{"name": f"v{i}", "domains": [f"h{i}"], "routes": t} for i, t in enumerate(tables)]
        )
    )
    for vh in model.virtual_hosts:
        for method, path, headers in reqs:
            want = find_route_naive(model.routes, vh.routes, method, path, headers)
            got = find_route(model.routes, vh.index, method, path, headers)
            assert got == want, (method, path, headers, [model.routes[i].match for i in vh.routes])


@settings(max_examples=500, deadline=None)
@given(pattern=regexes, text=st.one_of(paths, slash_paths))
def test_every_full_match_starts_with_the_literal_prefix(pattern: str, text: str) -> None:
    if re.fullmatch(pattern, text):
        assert text.startswith(literal_prefix(pattern))


labels = st.lists(st.sampled_from(["a", "b", "ab", "x1"]), min_size=1, max_size=4).map(".".join)
domains = st.one_of(
    labels,
    labels.map(lambda d: "*." + d),
    labels.map(lambda d: d + ".*"),
    st.just("*"),
)
hosts = st.builds(
    lambda name, upper, port, dot: (name.upper() if upper else name) + ("." if dot else "") + port,
    labels,
    st.booleans(),
    st.sampled_from(["", ":8080"]),
    st.booleans(),
)


def naive_vhost(declared: list[list[str]], host: str) -> int:
    """The documented precedence, by brute force; the first declaration of a domain wins."""
    h = normalise_host(host)
    entries = [(d, v) for v, ds in enumerate(declared) for d in ds]
    for d, v in entries:
        if d == h and "*" not in d:
            return v
    best: tuple[int, int] | None = None
    for d, v in entries:
        if d.startswith("*.") and h.endswith(d[1:]) and (best is None or len(d) > best[0]):
            best = (len(d), v)
    if best:
        return best[1]
    for d, v in entries:
        if d.endswith(".*") and h.startswith(d[:-1]) and (best is None or len(d) > best[0]):
            best = (len(d), v)
    if best:
        return best[1]
    return next((v for d, v in entries if d == "*"), -1)


@settings(max_examples=300, deadline=None)
@given(
    declared=st.lists(st.lists(domains, min_size=1, max_size=4), min_size=1, max_size=4),
    probes=st.lists(hosts, min_size=1, max_size=10),
)
def test_domain_index_follows_the_precedence(declared: list[list[str]], probes: list[str]) -> None:
    model = build(config_with([{"name": f"v{i}", "domains": ds} for i, ds in enumerate(declared)]))
    for host in probes:
        assert find_vhost(model.domains, host) == naive_vhost(declared, host), host
