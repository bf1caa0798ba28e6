"""``pavis.diff`` and ``pavis.explain`` over compiled models (in-process, no network).

Invariants:
- diff matches items by identity, not position: inserting a cluster or a route does not
  report every later item as changed; a route moved within its virtual host shows as a change
  of that host's route order; changed items carry field-level detail.
- explain picks exactly the route ``pavis.lookup`` picks — checked against the naive
  first-match scan for random requests — and reports the upstream view of a forward.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pavis import lookup
from pavis.compiler import compile_text
from pavis.diff import diff_models, format_text, to_json
from pavis.explain import explain
from pavis.schema import Model

BASE: dict[str, Any] = {
    "version": 1,
    "listeners": [{"name": "public", "address": "127.0.0.1:8080"}],
    "clusters": [
        {
            "name": "api",
            "endpoints": ["127.0.0.1:9001", {"address": "127.0.0.1:9002", "weight": 2}],
        },
        {"name": "static", "endpoints": ["127.0.0.1:9100"]},
    ],
    "virtual_hosts": [
        {
            "name": "api",
            "domains": ["api.example.com", "*.api.example.com", "api.*"],
            "routes": [
                {
                    "name": "health",
                    "match": {"exact": "/healthz"},
                    "direct": {"status": 200, "body": "ok"},
                },
                {
                    "name": "users",
                    "match": {"prefix": "/users/", "methods": ["GET"]},
                    "forward": {
                        "cluster": "api",
                        "rewrite": {"prefix": "/v2/users/"},
                        "timeout": "5s",
                    },
                    "request_headers": {"set": {"x-env": "prod"}},
                },
                {
                    "name": "items",
                    "match": {"regex": "^/items/[0-9]+$"},
                    "forward": {
                        "clusters": [{"name": "api", "weight": 3}, {"name": "static", "weight": 1}]
                    },
                },
            ],
        },
        {
            "name": "www",
            "domains": ["www.example.com"],
            "routes": [{"name": "all", "match": {"prefix": "/"}, "forward": {"cluster": "static"}}],
        },
    ],
}


def build(config: dict[str, Any]) -> Model:
    return compile_text(json.dumps(config), "json").model


MODEL = build(BASE)


# --------------------------------------------------------------------------- diff


def test_a_model_has_no_differences_with_itself() -> None:
    assert diff_models(MODEL, build(BASE)) == []
    assert format_text([]) == "no differences"


def test_inserting_a_cluster_and_a_route_reports_only_those() -> None:
    config = copy.deepcopy(BASE)
    config["clusters"].insert(0, {"name": "new", "endpoints": ["127.0.0.1:9200"]})
    config["virtual_hosts"][0]["routes"].insert(
        1, {"name": "ping", "match": {"exact": "/ping"}, "direct": {"status": 204}}
    )
    changes = diff_models(MODEL, build(config))
    summary = [(c.kind, c.section, c.key) for c in changes]
    assert summary == [
        ("added", "cluster", "new"),
        ("added", "endpoint", "new/127.0.0.1:9200"),
        ("changed", "virtual_host", "api"),
        ("added", "route", "api/ping"),
    ]
    (order,) = changes[2].fields
    assert order.path == "routes"
    assert order.old == ["health", "users", "items"]
    assert order.new == ["health", "ping", "users", "items"]


def test_changed_fields_are_named_down_to_the_leaf() -> None:
    config = copy.deepcopy(BASE)
    users = config["virtual_hosts"][0]["routes"][1]
    users["forward"]["timeout"] = "7s"
    users["request_headers"]["set"]["x-env"] = "staging"
    config["clusters"][0]["health_check"] = {"path": "/health"}
    changes = diff_models(MODEL, build(config))
    by_key = {(c.section, c.key): c for c in changes}
    route = by_key[("route", "api/users")]
    paths = {f.path: (f.old, f.new) for f in route.fields}
    assert paths["action.timeout_ms"] == (5000, 7000)
    assert paths["request_headers.set"] == ([["x-env", "prod"]], [["x-env", "staging"]])
    cluster = by_key[("cluster", "api")]
    (hc,) = cluster.fields
    assert hc.path == "health_check"
    assert hc.old == {"type": "off"}
    assert hc.new["type"] == "http" and hc.new["path"] == "/health"


def test_removed_items_and_json_form() -> None:
    config = copy.deepcopy(BASE)
    del config["virtual_hosts"][1]
    changes = diff_models(MODEL, build(config))
    assert [(c.kind, c.section, c.key) for c in changes] == [
        ("removed", "virtual_host", "www"),
        ("removed", "route", "www/all"),
    ]
    doc = to_json(changes)
    assert doc[0]["old"] == {"domains": ["www.example.com"], "routes": ["all"]}
    json.dumps(doc)  # JSON-ready
    assert format_text(changes).splitlines()[-1] == "0 added, 2 removed, 0 changed"


# --------------------------------------------------------------------------- explain


def test_explain_forward_with_rewrite_and_header_ops() -> None:
    report = explain(MODEL, "get", "API.example.com.", "/users/7?x=1", [("Cookie", "a=b")])
    assert report["virtual_host"]["name"] == "api"
    assert report["route"]["name"] == "users"
    assert report["outcome"] == "forward"
    up = report["upstream"]
    assert up["target"] == "/v2/users/7?x=1"  # the query goes upstream, as the worker sends it
    assert up["host"] == "API.example.com."  # no host rewrite: the request's Host is kept
    assert up["headers"] == {"cookie": "a=b", "x-env": "prod"}
    assert up["timeout_ms"] == 5000
    assert [(c["name"], c["share_percent"]) for c in up["clusters"]] == [("api", 100.0)]
    assert up["clusters"][0]["endpoints"] == [
        {"address": "127.0.0.1:9001", "weight": 1},
        {"address": "127.0.0.1:9002", "weight": 2},
    ]


def test_explain_weighted_split() -> None:
    report = explain(MODEL, "GET", "eu.api.example.com", "/items/12")
    shares = [(c["name"], c["weight"], c["share_percent"]) for c in report["upstream"]["clusters"]]
    assert shares == [("api", 3, 75.0), ("static", 1, 25.0)]


def test_explain_direct_and_404s() -> None:
    direct = explain(MODEL, "GET", "api.example.org", "/healthz")  # via "api.*"
    assert (direct["outcome"], direct["status"], direct["body_bytes"]) == ("direct", 200, 2)
    no_host = explain(MODEL, "GET", "unknown.test", "/")
    assert (no_host["outcome"], no_host["status"], no_host["route"]) == (
        "no_virtual_host",
        404,
        None,
    )
    wrong_method = explain(MODEL, "POST", "api.example.com", "/users/1")
    assert wrong_method["outcome"] == "no_route"
    assert [(c["name"], c["holds"]) for c in wrong_method["candidates"]] == [("users", False)]


paths = st.sampled_from(["/", "/healthz", "/users/", "/users/9", "/items/1", "/items/x", "/z"])
hosts = st.sampled_from(
    ["api.example.com", "a.api.example.com", "api.example.net", "www.example.com", "other"]
)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["GET", "POST", "HEAD"]), hosts, paths)
def test_explain_agrees_with_a_naive_first_match_scan(method: str, host: str, path: str) -> None:
    report = explain(MODEL, method, host, path)
    v = lookup.find_vhost(MODEL.domains, host)
    if v < 0:
        assert report["route"] is None
        return
    expected = lookup.find_route_naive(
        MODEL.routes, MODEL.virtual_hosts[v].routes, method, path, {}
    )
    got = report["route"]["index"] if report["route"] else -1
    assert got == expected
