"""TLS termination on a listener whose certificate is embedded in the artifact."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from pathlib import Path

from shm import control
from tests.e2e.helpers_worker import Workers, echo, header_pairs, seal_yaml
from tests.helpers import unique_instance
from tests.upstream import Upstream

CERTS = Path(__file__).resolve().parents[2] / "examples" / "certs"


def test_tls_listener_terminates_and_forwards(upstream: Upstream) -> None:
    with Workers(unique_instance(), 1) as w:
        text = f"""version: 1
listeners:
  - name: public
    address: "127.0.0.1:{w.port}"
    tls: {{cert: "{CERTS / "example.crt"}", key: "{CERTS / "example.key"}"}}
clusters:
  - {{name: c, endpoints: ["{upstream.address}"]}}
virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - {{name: all, match: {{prefix: /}}, forward: {{cluster: c}}}}
"""
        w.start(seal_yaml(text))
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", w.port, timeout=5, context=ctx)
        try:
            for _ in range(2):  # keep-alive over TLS
                conn.request("POST", "/tls", body=b"secret")
                resp = conn.getresponse()
                body = json.loads(resp.read())
                assert resp.status == 200
                assert body["body"] == "secret"
                assert header_pairs(body)["x-forwarded-proto"] == ["https"]
            # TLS connections are counted for accept balancing like plain ones.
            assert control.read_conns(w.pub._ctl, 0) == 1
        finally:
            conn.close()
        deadline = time.monotonic() + 5
        while control.read_conns(w.pub._ctl, 0) != 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_tls_to_the_upstream_with_verification(upstream: Upstream) -> None:
    """front (plain) → TLS, verified against the CA, SNI example.test → back (TLS) → upstream."""
    with Workers(unique_instance(), 1) as back, Workers(unique_instance(), 1) as front:
        back.start(
            seal_yaml(f"""version: 1
listeners:
  - name: public
    address: "127.0.0.1:{back.port}"
    tls: {{cert: "{CERTS / "example.crt"}", key: "{CERTS / "example.key"}"}}
clusters:
  - {{name: c, endpoints: ["{upstream.address}"]}}
virtual_hosts:
  - {{name: main, domains: ["*"], routes: [{{name: all, match: {{prefix: /}}, forward: {{cluster: c}}}}]}}
""")
        )
        front.start(
            seal_yaml(f"""version: 1
listeners:
  - {{name: public, address: "127.0.0.1:{front.port}"}}
clusters:
  - name: back
    endpoints: ["127.0.0.1:{back.port}"]
    tls: {{sni: example.test, verify: true, ca: "{CERTS / "ca.pem"}"}}
virtual_hosts:
  - {{name: main, domains: ["*"], routes: [{{name: all, match: {{prefix: /}}, forward: {{cluster: back}}}}]}}
""")
        )
        seen = []
        for _ in range(2):
            status, _, body = echo(front.port, "/through", method="POST", body=b"x" * 100_000)
            assert status == 200
            assert body["body_len"] == 100_000
            assert header_pairs(body)["via"] == ["1.1 pavis, 1.1 pavis"]
            seen.append(body["conn"])
        assert seen[0] == seen[1]  # the pooled TLS connection was reused end to end
