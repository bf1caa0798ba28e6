"""compile → ``pavctl inspect --json`` → back to ``pavis.schema.Model``: nothing lost, nothing added.

Invariants:
- The JSON of ``inspect --json`` converts (``from_view`` → ``msgspec.convert``) back into a
  Model equal to the one the compiler produced, for the examples, for a config that uses every
  feature, and for random route tables (hypothesis).
- Every default is visible: the JSON has no null and every Struct field of the model.

The fixed cases run the real console entry (``python -m pavis.cli``) in a subprocess; the
property (``tests/unit/test_inspect_random.py``) runs the same click command in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pavis.artifact.view import from_view
from pavis.compiler import compile_path
from tests.helpers import no_nulls

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.y*ml")) + sorted((ROOT / "examples").glob("*.json"))

# A real pair: the compiler parses certificates and checks the key belongs to them.
CERT = (ROOT / "examples" / "certs" / "example.crt").read_text()
KEY = (ROOT / "examples" / "certs" / "example.key").read_text()

FULL = """\
version: 1
listeners:
  - {name: public, address: "127.0.0.1:8080"}
  - {name: secure, address: "127.0.0.1:8443", tls: {cert: cert.pem, key: key.pem, client_auth: {ca: cert.pem, mode: optional}}}
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
    tls: {sni: api.internal, verify: false, cert: cert.pem, key: key.pem}
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
