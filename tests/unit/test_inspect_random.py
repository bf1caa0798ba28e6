"""Random configs survive compile, inspect and compile again unchanged (in-process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pavis.artifact.view import from_view
from pavis.cli import cli
from pavis.compiler import compile_path
from pavis.schema import Model
from tests.helpers import no_nulls

names = st.from_regex(r"[a-z][a-z0-9-]{0,6}", fullmatch=True)
durations = st.sampled_from(["250ms", "1s", "2s", "5s", "1m"])
methods = st.lists(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE"]), unique=True)
header_match = st.fixed_dictionaries(
    {"name": st.sampled_from(["x-a", "x-b", "accept"])},
    optional={},
).flatmap(
    lambda d: st.one_of(
        st.just({**d, "exact": "1"}),
        st.just({**d, "prefix": "v"}),
        st.just({**d, "regex": "[0-9]+"}),
        st.just({**d, "present": True}),
        st.just({**d, "absent": True}),
    )
)
ops = st.fixed_dictionaries(
    {},
    optional={
        "set": st.dictionaries(st.sampled_from(["x-env", "x-b"]), names, max_size=2),
        "add": st.dictionaries(st.sampled_from(["x-c", "via"]), names, max_size=2),
        "remove": st.lists(st.sampled_from(["cookie", "server"]), unique=True),
    },
)


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    n_clusters = draw(st.integers(1, 3))
    clusters = []
    for c in range(n_clusters):
        cluster: dict[str, Any] = {
            "name": f"c{c}",
            "endpoints": [
                {"address": f"127.0.0.{c + 1}:{9000 + e}", "weight": draw(st.integers(1, 5))}
                for e in range(draw(st.integers(1, 3)))
            ],
            "lb": draw(st.sampled_from(["round_robin", "random", "least_request"])),
        }
        if draw(st.booleans()):
            cluster["health_check"] = {"interval": draw(durations), "timeout": "200ms"}
        if draw(st.booleans()):
            cluster["outlier"] = {"consecutive_failures": draw(st.integers(1, 9))}
        if draw(st.booleans()):
            cluster["connect_timeout"] = draw(durations)
        clusters.append(cluster)
    routes = []
    # Distinct literal heads per route: no route can shadow another, so every draw compiles.
    for r in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["exact", "prefix", "regex"]))
        path = {"exact": f"/x{r}", "prefix": f"/p{r}/", "regex": f"^/r{r}/[0-9]+$"}[kind]
        match: dict[str, Any] = {kind: path}
        if draw(st.booleans()):
            match["methods"] = draw(methods)
        if draw(st.booleans()):
            match["headers"] = draw(
                st.lists(header_match, max_size=2, unique_by=lambda h: h["name"])
            )
        route: dict[str, Any] = {"name": f"route-{r}", "match": match}
        action = draw(st.sampled_from(["forward", "forward", "redirect", "direct"]))
        if action == "forward":
            picked = draw(st.lists(st.integers(0, n_clusters - 1), min_size=1, unique=True))
            forward: dict[str, Any] = {
                "clusters": [
                    {"name": f"c{i}", "weight": draw(st.integers(1, 100))} for i in picked
                ],
                "timeout": draw(st.sampled_from(["5s", "10s", "30s"])),
            }
            if draw(st.booleans()):
                forward["retry"] = {"attempts": draw(st.integers(1, 3)), "per_try_timeout": "1s"}
            if draw(st.booleans()):
                # A prefix rewrite needs an exact or prefix match (invalid_rewrite otherwise).
                forward["rewrite"] = (
                    {"host": "up.internal"} if kind == "regex" else {"prefix": "/", "host": "up"}
                )
            route["forward"] = forward
        elif action == "redirect":
            route["redirect"] = {"status": 301, "location": f"https://example.com/{r}"}
        else:
            route["direct"] = {"status": 200, "body": draw(st.text(max_size=20))}
        if draw(st.booleans()):
            route["request_headers"] = draw(ops)
        if draw(st.booleans()):
            route["response_headers"] = draw(ops)
        routes.append(route)
    return {
        "version": 1,
        "listeners": [{"name": "public", "address": "127.0.0.1:8080"}],
        "clusters": clusters,
        "virtual_hosts": [{"name": "vh", "domains": ["*"], "routes": routes}],
    }


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(configs())
def test_random_configs_round_trip(tmp_path: Path, config: dict[str, Any]) -> None:
    path = tmp_path / "random.json"
    path.write_text(json.dumps(config))
    model: Model = compile_path(path).model
    result = CliRunner().invoke(cli, ["inspect", "--json", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert from_view(doc["model"]) == model
    assert no_nulls(doc) == []
