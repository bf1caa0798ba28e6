"""Real workers route on the query string: ``match.query`` ANDed with path, methods and
headers, matched on the raw (undecoded) text, never memoised away.

Two workers share the listener; each client connection is kept alive for several requests,
so a worker's (method, path) memo is asked again on the same path with another query.
"""

from __future__ import annotations

import http.client
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers_proc import CLI
from tests.e2e.helpers_worker import Workers, raw, seal_yaml
from tests.helpers import config, unique_instance

ROUTES = """virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - name: debug
        match: {prefix: /p, query: [{name: debug, present: true}, {name: v, regex: "[0-9]+"}]}
        direct: {status: 200, body: "debug"}
      - name: beta
        match: {prefix: /p, query: [{name: channel, exact: beta}]}
        direct: {status: 200, body: "beta"}
      - name: search
        match: {exact: /p, query: [{name: q, prefix: "a%20"}]}
        direct: {status: 200, body: "search"}
      - name: plus
        match: {exact: /p, query: [{name: q, exact: "x+y"}]}
        direct: {status: 200, body: "plus"}
      - name: anon-post
        match: {exact: /p, methods: [POST], query: [{name: token, absent: true}]}
        direct: {status: 200, body: "anon-post"}
      - name: both
        match: {exact: /p, headers: [{name: x-k, exact: "1"}], query: [{name: k, exact: "1"}]}
        direct: {status: 200, body: "both"}
      - name: plain
        match: {prefix: /}
        direct: {status: 200, body: "plain"}
"""


@pytest.fixture(scope="module")
def workers() -> Iterator[tuple[int, str]]:
    with Workers(unique_instance(), 2) as w:
        text = config(w.port, ROUTES)
        w.start(seal_yaml(text))
        yield w.port, text


@pytest.fixture(scope="module")
def port(workers: tuple[int, str]) -> int:
    return workers[0]


def _bodies(port: int, asks: list[tuple[str, str, dict[str, str]]]) -> list[str]:
    """Each (method, target, headers) on one kept-alive connection: one worker answers all."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    try:
        for method, target, headers in asks:
            conn.request(method, target, body=b"" if method == "POST" else None, headers=headers)
            resp = conn.getresponse()
            out.append(resp.read().decode() if resp.status == 200 else str(resp.status))
    finally:
        conn.close()
    return out


def _get(*targets: str) -> list[tuple[str, str, dict[str, str]]]:
    return [("GET", t, {"Host": "h"}) for t in targets]


def test_query_matchers_pick_the_route_and_are_not_memoised_away(port: int) -> None:
    for _ in range(2):  # on every connection, the same path alternates between answers
        assert _bodies(
            port,
            _get(
                "/p", "/p?channel=beta", "/p?channel=stable", "/p?debug&v=12", "/p?debug&v=x", "/p"
            ),
        ) == ["plain", "beta", "plain", "debug", "plain", "plain"]


def test_a_repeated_name_matches_if_any_value_does(port: int) -> None:
    assert _bodies(port, _get("/p?channel=stable&channel=beta", "/p?channel=stable&x=beta")) == [
        "beta",
        "plain",
    ]


def test_values_are_matched_raw(port: int) -> None:
    # "a%20b" is not decoded to "a b"; "+" is not a space; "%2B" is not "+".
    assert _bodies(port, _get("/p?q=a%20b", "/p?q=a+b", "/p?q=x+y", "/p?q=x%2By")) == [
        "search",
        "plain",
        "plus",
        "plain",
    ]


def test_query_is_anded_with_methods_and_headers(port: int) -> None:
    post = [("POST", "/p", {"Host": "h"}), ("POST", "/p?token=1", {"Host": "h"})]
    assert _bodies(port, post) == ["anon-post", "plain"]
    both = [
        ("GET", "/p?k=1", {"Host": "h", "X-K": "1"}),
        ("GET", "/p?k=1", {"Host": "h"}),
        ("GET", "/p", {"Host": "h", "X-K": "1"}),
    ]
    assert _bodies(port, both) == ["both", "plain", "plain"]


def test_an_absolute_form_target_is_routed_on_its_query(port: int) -> None:
    reply = raw(
        port, b"GET http://h/p?channel=beta HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"beta")


def test_pavctl_explain_names_the_route_the_workers_answer_with(
    workers: tuple[int, str], tmp_path: Path
) -> None:
    port, text = workers
    site = tmp_path / "site.yaml"
    site.write_text(text)
    targets = ["/p?channel=beta", "/p?debug&v=7", "/p?q=a%20b", "/p?q=x+y", "/p?q=a+b", "/p"]
    served = _bodies(port, _get(*targets))  # each route's body is its name
    for target, body in zip(targets, served, strict=True):
        out = subprocess.run(
            [*CLI, "explain", str(site), "--host", "h", "--path", target, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert json.loads(out.stdout)["route"]["name"] == body, target
