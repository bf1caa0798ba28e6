"""Routing in the worker is ``pavis.lookup``: hosts, methods, header matchers, declared order.

The worker memoises route answers that cannot depend on headers; these tests make sure the
memo never answers for a request whose headers would change the route.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.helpers_worker import Workers, request, seal_yaml
from tests.helpers import config, unique_instance

ROUTES = """virtual_hosts:
  - name: api
    domains: ["api.example.com", "*.api.example.com"]
    routes:
      - name: canary
        match: {prefix: /v1/, headers: [{name: x-canary, exact: "1"}]}
        direct: {status: 200, body: "canary"}
      - name: post
        match: {prefix: /v1/, methods: [POST]}
        direct: {status: 200, body: "post"}
      - name: v1
        match: {prefix: /v1/}
        direct: {status: 200, body: "v1"}
  - name: other
    domains: ["*"]
    routes:
      - name: regex
        match: {regex: "^/item/[0-9]+$"}
        direct: {status: 200, body: "item"}
      - name: exact
        match: {exact: /x}
        direct: {status: 200, body: "x"}
"""


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(config(w.port, ROUTES)))
        yield w.port


def _body(port: int, path: str, host: str, method: str = "GET", **headers: str) -> bytes:
    hdrs = {"Host": host, **{k.replace("_", "-"): v for k, v in headers.items()}}
    status, _, body = request(port, method, path, headers=hdrs)
    return body if status == 200 else str(status).encode()


def test_header_matchers_are_not_memoised_away(port: int) -> None:
    for _ in range(3):  # repeated: a memoised answer must not leak across requests
        assert _body(port, "/v1/a", "api.example.com") == b"v1"
        assert _body(port, "/v1/a", "api.example.com", x_canary="1") == b"canary"
        assert _body(port, "/v1/a", "api.example.com", x_canary="2") == b"v1"


def test_methods_and_hosts(port: int) -> None:
    assert _body(port, "/v1/b", "api.example.com", "POST") == b"post"
    assert _body(port, "/v1/b", "API.Example.com.:8080") == b"v1"
    assert _body(port, "/v1/b", "eu.api.example.com") == b"v1"
    assert _body(port, "/v1/b", "elsewhere.example") == b"404"
    assert _body(port, "/item/42", "elsewhere.example") == b"item"
    assert _body(port, "/item/4x", "elsewhere.example") == b"404"
    assert _body(port, "/x?query=1", "elsewhere.example") == b"x"
