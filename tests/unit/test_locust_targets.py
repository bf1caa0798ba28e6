"""The locust scenarios' requests: one per reachable route, each confirmed by pavis.lookup to
reach that route — query-matched routes included, with a query that satisfies them."""

from __future__ import annotations

from pathlib import Path

from loadtest.locust_common import targets

CONFIG = """version: 1
listeners: [{address: "127.0.0.1:8080"}]
clusters: [{name: app, endpoints: ["127.0.0.1:9000"]}]
virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
      - name: beta
        match: {prefix: /api/, query: [{name: v, exact: "2"}, {name: debug, absent: true}, {name: t, present: true}]}
        forward: {cluster: app}
      - name: tagged
        match: {prefix: /api/, query: [{name: tag, prefix: "x"}]}
        forward: {cluster: app}
      - name: pattern
        match: {prefix: /api/, query: [{name: id, regex: "[0-9]+"}]}
        forward: {cluster: app}
      - {name: rest, match: {prefix: /api/}, direct: {status: 204}}
"""


def test_query_matched_routes_get_a_query_that_reaches_them(tmp_path: Path) -> None:
    path = tmp_path / "q.yaml"
    path.write_text(CONFIG)
    got = {t.name: t for t in targets(path)}
    assert got["v/beta"].path == "/api/bench?v=2&t=1"
    assert got["v/tagged"].path == "/api/bench?tag=xbench"
    assert "v/pattern" not in got  # a regex has no generic sample: left out, not misdirected
    assert got["v/rest"].path == "/api/bench" and got["v/rest"].expect == (204,)
