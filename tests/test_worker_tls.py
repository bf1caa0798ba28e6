"""TLS termination on a listener whose certificate is embedded in the artifact."""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path

from tests.conftest import unique_instance
from tests.helpers_worker import Workers, header_pairs, seal_yaml
from tests.upstream import Upstream

CERTS = Path(__file__).resolve().parent.parent / "examples" / "certs"


def test_tls_listener_terminates_and_forwards(upstream: Upstream) -> None:
    with Workers(unique_instance(), 1) as w:
        text = f"""version: 1
listeners:
  - name: public
    address: "127.0.0.1:{w.port}"
    tls: {{cert: "{CERTS / 'example.crt'}", key: "{CERTS / 'example.key'}"}}
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
        finally:
            conn.close()
