"""compile → ``pavctl inspect --json`` → back to ``pavis.schema.Model``: nothing lost, nothing added.

Invariants:
- The JSON of ``inspect --json`` converts (``from_view`` → ``msgspec.convert``) back into a
  Model equal to the one the compiler produced, for the examples, for a config that uses every
  feature, and for random route tables (hypothesis).
- Every default is visible: the JSON has no null and every Struct field of the model.

The fixed cases run the real console entry (``python -m pavis.cli``) in a subprocess; the
property runs the same click command in-process (click's CliRunner) so that it stays fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pavis.artifact.view import from_view
from pavis.cli import cli
from pavis.compiler import compile_path
from pavis.schema import Model

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.y*ml")) + sorted((ROOT / "examples").glob("*.json"))

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"

FULL = """\
version: 1
listeners:
  - {name: public, address: "127.0.0.1:8080"}
  - {name: secure, address: "127.0.0.1:8443", tls: {cert: cert.pem, key: key.pem}}
admin: {address: "127.0.0.1:9901"}
access_log: {path: "-"}
limits: {max_headers: 50, header_timeout: 5s}
clusters:
  - name: api
    endpoints: ["127.0.0.1:9001", {address: "[::1]:9002", weight: 2}]
    lb: least_request
    connect_timeout: 250ms
    pool: {max_connections: 10, max_idle: 2, idle_timeout: 30s, max_pending: 5}
    health_check: {path: /healthz, interval: 2s, timeout: 1s, unhealthy_after: 3}
    outlier: {consecutive_failures: 3, eject_for: 5s}
    tls: {sni: api.internal, verify: false}
  - name: plain
    endpoints: ["127.0.0.1:9003"]
virtual_hosts:
  - name: api
    domains: ["api.example.com", "*.api.example.com", "www.*"]
    routes:
      - name: health
        match: {exact: /healthz}
        direct: {status: 200, body: "ok \u2713\\n", content_type: text/plain}
      - name: v1
        match:
          prefix: /v1/
          methods: [get, HEAD]
          headers: [{name: X-Canary, exact: "1"}, {name: x-debug, absent: true},
                    {name: x-tag, regex: "[a-z]+"}]
        forward:
          clusters: [{name: api, weight: 3}, {name: plain}]
          rewrite: {prefix: /, host: api.internal}
          retry: {}
        request_headers: {set: {x-env: prod}, add: {x-a: b}, remove: [cookie]}
        response_headers: {remove: [server]}
      - name: old
        match: {regex: "^/old/[0-9]+$"}
        redirect: {status: 308, location: "https://example.com/new"}
  - name: fallback
    domains: ["*"]
    routes:
      - {name: all, match: {prefix: /}, forward: {cluster: plain}}
"""


def inspect_json(source: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "pavis.cli", "inspect", "--json", str(source)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def no_nulls(value: Any, path: str = "$") -> list[str]:
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in no_nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in no_nulls(v, f"{path}[{i}]")]
    return []


@pytest.fixture
def full(tmp_path: Path) -> Path:
    (tmp_path / "cert.pem").write_text(CERT)
    (tmp_path / "key.pem").write_text(KEY)
    path = tmp_path / "full.yaml"
    path.write_text(FULL)
    return path


@pytest.mark.parametrize("config", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_round_trip(config: Path) -> None:
    doc = inspect_json(config)
    assert from_view(doc["model"]) == compile_path(config).model
    assert no_nulls(doc) == []


def test_a_config_using_every_feature_round_trips(full: Path, tmp_path: Path) -> None:
    model = compile_path(full).model
    doc = inspect_json(full)
    assert from_view(doc["model"]) == model
    assert no_nulls(doc) == []
    # Defaults are materialised and visible, not implied.
    plain = doc["model"]["clusters"][1]
    assert plain["health_check"] == {"type": "off"}
    assert plain["pool"]["max_connections"] > 0
    assert doc["model"]["listeners"][1]["tls"]["cert_pem"] == CERT
    # And an artifact gives the same JSON as its config.
    out = tmp_path / "full.pvs"
    subprocess.run(
        [sys.executable, "-m", "pavis.cli", "compile", str(full), "-o", str(out)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert inspect_json(out) == doc


# --------------------------------------------------------------------------- property

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
