"""Query-string matching: the one split (``lookup.split_query``), lookup with query matchers
against a naive reference, the worker's lazy split, explain agreeing with lookup, and
shadowing that takes query matchers into account."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pavis import lookup
from pavis.compiler import codec, compile_text, shape
from pavis.errors import ConfigError
from pavis.explain import explain
from pavis.schema import Model, QueryMatch, Route
from tests.unit.routes_inprocess import request, state_of

# ------------------------------------------------------------------------------ the split


@pytest.mark.parametrize(
    ("query", "want"),
    [
        ("", {}),
        ("?", {}),
        ("?a=1", {"a": ["1"]}),
        ("a=1", {"a": ["1"]}),  # without the "?" it reads the same
        ("?a", {"a": [""]}),  # no "=": present with an empty value
        ("?a=", {"a": [""]}),
        ("?a=1&a=2&b", {"a": ["1", "2"], "b": [""]}),  # repeats keep every value in order
        ("?a=1=2", {"a": ["1=2"]}),  # the first "=" ends the name
        ("?=x", {"": ["x"]}),
        ("?&&a=1&", {"a": ["1"]}),  # empty pieces are skipped
        ("?q=a%20b+c", {"q": ["a%20b+c"]}),  # raw: not decoded, "+" is not a space
        ("?A=1&a=2", {"A": ["1"], "a": ["2"]}),  # names are case-sensitive
        ("??a=1", {"?a": ["1"]}),  # only the one leading "?" is the separator
        ("?a;b=1", {"a;b": ["1"]}),  # ";" is not a separator
    ],
)
def test_split_query(query: str, want: dict[str, list[str]]) -> None:
    assert lookup.split_query(query) == want


# ------------------------------------------------------------------ lookup vs a reference


def _reference_values(query: str, name: str) -> list[str] | None:
    """Every value of ``name`` in ``query``, found by a regex scan instead of a split."""
    text = query[1:] if query.startswith("?") else query
    found = [
        m.group(1) or ""
        for m in re.finditer(rf"(?:^|&){re.escape(name)}(?:=([^&]*))?(?=&|$)", text)
    ]
    return found or None


def _reference_holds(m: QueryMatch, query: str) -> bool:
    values = _reference_values(query, m.name)
    if m.kind == "present":
        return values is not None
    if m.kind == "absent":
        return values is None
    for v in values or []:
        if m.kind == "exact" and v == m.value:
            return True
        if m.kind == "prefix" and v[: len(m.value)] == m.value:
            return True
        if m.kind == "regex" and re.fullmatch(m.value, v):
            return True
    return False


def _reference_route(
    routes: tuple[Route, ...], declared: tuple[int, ...], path: str, query: str
) -> int:
    """First declared route whose path prefix holds and whose query matchers all hold."""
    for i in declared:
        r = routes[i]
        if path.startswith(r.match.path) and all(_reference_holds(q, query) for q in r.match.query):
            return i
    return -1


query_matchers = st.lists(
    st.builds(
        lambda name, kind: {"name": name, **kind},
        st.sampled_from(["a", "b", "A"]),
        st.sampled_from(
            [
                {"exact": "1"},
                {"exact": ""},
                {"prefix": "1"},
                {"regex": "[12]+"},
                {"present": True},
                {"absent": True},
                {"present": False},
            ]
        ),
    ),
    max_size=3,
)
queries = st.one_of(
    st.just(""),
    st.lists(
        st.tuples(
            st.sampled_from(["a", "a", "b", "A", ""]),
            st.sampled_from([None, "", "1", "12", "2", "1=2"]),
        ),
        max_size=4,
    ).map(lambda ps: "?" + "&".join(n if v is None else f"{n}={v}" for n, v in ps)),
)


def _model(routes: list[dict[str, Any]]) -> Model:
    doc = {
        "version": 1,
        "listeners": [{"address": "127.0.0.1:8080"}],
        "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": routes}],
    }
    model, _problems = codec.build(shape.to_intent(doc), Path("."))  # shadowed tables too
    return model


@settings(max_examples=300, deadline=None)
@given(
    table=st.lists(
        st.builds(
            lambda prefix, q: {"match": {"prefix": prefix, "query": q}, "direct": {"status": 200}},
            st.sampled_from(["/", "/p", "/p/x"]),
            query_matchers,
        ),
        min_size=1,
        max_size=6,
    ),
    reqs=st.lists(st.tuples(st.sampled_from(["/", "/p", "/p/x", "/q"]), queries), max_size=10),
)
def test_lookup_with_query_matchers_equals_the_reference(
    table: list[dict[str, Any]], reqs: list[tuple[str, str]]
) -> None:
    model = _model(table)
    vh = model.virtual_hosts[0]
    for path, query in reqs:
        want = _reference_route(model.routes, vh.routes, path, query)
        assert lookup.find_route(model.routes, vh.index, "GET", path, {}, query) == want
        assert lookup.find_route_naive(model.routes, vh.routes, "GET", path, {}, query) == want
        # the worker hands lookup the raw bytes
        got, _ = lookup.match_route(
            model.routes, vh.index, "GET", path, {}, query.encode("latin-1")
        )
        assert got == want


# --------------------------------------------------------------------- lazy, once, in the worker


class _CountingQuery(bytes):
    """Raw query bytes that count how often lookup decodes them (and so splits them)."""

    decoded = 0

    def decode(self, *args: Any, **kw: Any) -> str:
        _CountingQuery.decoded += 1
        return super().decode(*args, **kw)


LAZY = """\
      - name: q1
        match: {prefix: /q/, query: [{name: a, exact: "1"}]}
        direct: {status: 200}
      - name: q2
        match: {prefix: /q/, query: [{name: a, exact: "2"}]}
        direct: {status: 200}
      - name: q
        match: {prefix: /q/}
        direct: {status: 200}
      - name: other
        match: {prefix: /}
        direct: {status: 200}
"""


def test_the_query_is_split_only_when_a_route_with_query_matchers_is_reached_and_once() -> None:
    state = state_of(LAZY)
    vh = state.vhost(b"h")
    req = request(b"GET", b"/x?a=2", (b"Host", b"h"))
    _CountingQuery.decoded = 0
    assert state.route(state.find(vh, b"GET", b"/x", req, _CountingQuery(b"?a=2"))).name == "other"
    assert _CountingQuery.decoded == 0  # no candidate had query matchers: never looked at
    assert (vh, b"GET", b"/x") in state.route_cache
    assert state.route(state.find(vh, b"GET", b"/q/1", req, _CountingQuery(b"?a=2"))).name == "q2"
    assert _CountingQuery.decoded == 1  # two routes with query matchers, one split
    assert (vh, b"GET", b"/q/1") not in state.route_cache  # the answer depends on the query
    assert state.route(state.find(vh, b"GET", b"/q/1", req, b"?a=1")).name == "q1"
    assert state.route(state.find(vh, b"GET", b"/q/1", req, b"")).name == "q"


def test_the_worker_request_carries_the_raw_query_to_find() -> None:
    state = state_of(LAZY)
    vh = state.vhost(b"h")
    for target, name in ((b"/q/z?a=1", "q1"), (b"/q/z?b&a=2", "q2"), (b"/q/z", "q")):
        req = request(b"GET", target, (b"Host", b"h"))
        assert state.route(state.find(vh, req.method, req.path, req, req.query)).name == name


# ------------------------------------------------------------------------------- explain


EXPLAIN = """version: 1
listeners: [{address: "127.0.0.1:8080"}]
virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - name: beta
        match: {prefix: /p, query: [{name: x, exact: "1"}, {name: debug, absent: true}]}
        direct: {status: 200}
      - name: rest
        match: {prefix: /}
        direct: {status: 204}
"""


@pytest.mark.parametrize(
    ("target", "want"),
    [
        ("/p?x=1", "beta"),
        ("/p?x=1&debug", "rest"),
        ("/p?x=2", "rest"),
        ("/p", "rest"),
        ("http://h/p?x=1", "beta"),
    ],
)
def test_explain_agrees_with_lookup_on_the_query(target: str, want: str) -> None:
    model = compile_text(EXPLAIN, "yaml").model
    report = explain(model, "GET", "h", target)
    assert report["route"]["name"] == want
    path, query, _ = lookup.split_target_text("GET", target) or ("", "", None)
    vh = model.virtual_hosts[0]
    assert report["route"]["index"] == lookup.find_route(
        model.routes, vh.index, "GET", path, {}, query
    )
    assert report["request"]["query"] == query
    holds = {c["name"]: c["holds"] for c in report["candidates"]}
    assert holds["beta"] == (want == "beta")
    assert report["route"]["match"]["query"] == (
        [
            {"name": "x", "kind": "exact", "value": "1"},
            {"name": "debug", "kind": "absent", "value": ""},
        ]
        if want == "beta"
        else []
    )


# ------------------------------------------------------------------------------- shadowing


def _vhost(routes: str) -> str:
    return (
        'version: 1\nlisteners: [{address: "127.0.0.1:8080"}]\nvirtual_hosts:\n'
        f"  - name: main\n    domains: ['*']\n    routes:\n{routes}"
    )


def _shadow_problems(routes: str) -> list[str]:
    try:
        compile_text(_vhost(routes), "yaml")
    except ConfigError as exc:
        return [f"{p.path} {p.constraint}" for p in exc.problems]
    return []


def test_a_route_with_query_matchers_does_not_shadow_one_without() -> None:
    assert (
        _shadow_problems(
            "      - {match: {prefix: /, query: [{name: a, present: true}]}, direct: {status: 200}}\n"
            "      - {match: {prefix: /a}, direct: {status: 200}}\n"
        )
        == []
    )


def test_a_route_without_query_matchers_shadows_one_with() -> None:
    assert _shadow_problems(
        "      - {match: {prefix: /}, direct: {status: 200}}\n"
        "      - {match: {prefix: /a, query: [{name: a, present: true}]}, direct: {status: 200}}\n"
    ) == ["$.virtual_hosts[0].routes[1].match shadowed_route"]


def test_the_same_query_matchers_shadow_and_different_ones_do_not() -> None:
    same = (
        "      - {match: {prefix: /, query: [{name: a, exact: '1'}]}, direct: {status: 200}}\n"
        "      - {match: {exact: /a, query: [{name: b, absent: true}, {name: a, exact: '1'}]},"
        " direct: {status: 200}}\n"
    )
    assert _shadow_problems(same) == ["$.virtual_hosts[0].routes[1].match shadowed_route"]
    other = (
        "      - {match: {prefix: /, query: [{name: a, exact: '1'}]}, direct: {status: 200}}\n"
        "      - {match: {exact: /a, query: [{name: a, exact: '2'}]}, direct: {status: 200}}\n"
    )
    assert _shadow_problems(other) == []


@pytest.mark.parametrize("kind", [{"exact": "1"}, {"prefix": "1"}, {"regex": "1+"}])
def test_a_repeated_name_holds_if_any_value_matches(kind: dict[str, str]) -> None:
    model = _model(
        [{"match": {"prefix": "/", "query": [{"name": "a", **kind}]}, "direct": {"status": 200}}]
    )
    vh = model.virtual_hosts[0]
    for query, want in (("?a=2&a=1", 0), ("?a=1&a=2", 0), ("?a=2&b=1", -1), ("?a&a=2", -1)):
        assert lookup.find_route(model.routes, vh.index, "GET", "/", {}, query) == want, query
