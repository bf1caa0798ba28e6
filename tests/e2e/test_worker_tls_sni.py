"""Downstream TLS by SNI and mutual TLS with real workers: the certificate a handshake gets,
client certificates required or optional, routes keyed on the verified identity, and a
client certificate presented to an upstream that requires one."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.e2e.helpers_worker import Workers, header_pairs, seal_yaml
from tests.helpers import unique_instance
from tests.pki import CA
from tests.upstream import Upstream


def served_names(
    port: int, sni: str | None, ca: CA, client: tuple[Path, Path] | None = None
) -> list[str]:
    """The SAN DNS names of the certificate the listener presents for ``sni``."""
    ctx = client_context(ca, client)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    return list(san.value.get_values_for_type(x509.DNSName))


def client_context(ca: CA, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.pem))
    ctx.check_hostname = False
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def get(port: int, ctx: ssl.SSLContext, path: str, headers: dict[str, str] | None = None) -> Any:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data.startswith(b"{") else data
    finally:
        conn.close()


def refused(port: int, ctx: ssl.SSLContext, sni: str | None = None) -> bool:
    """True when the handshake (or, TLS 1.3, the first read after it) fails: no answer."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=sni) as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return not tls.recv(100)
    except (ssl.SSLError, ConnectionError):
        return True


def test_sni_picks_the_certificate_and_unknown_names_get_the_default(tmp_path: Path) -> None:
    ca = CA(tmp_path)
    a = ca.issue("a", dns=("a.test",))
    b = ca.issue("b", dns=("b.test", "*.b.test"))
    c = ca.issue("c", dns=("c.test",))
    certs = ", ".join(f'{{cert: "{x[0]}", key: "{x[1]}"}}' for x in (a, b, c))
    with Workers(unique_instance(), 1) as w:
        w.start(
            seal_yaml(f"""version: 1
listeners:
  - {{name: public, address: "127.0.0.1:{w.port}", tls: {{certificates: [{certs}]}}}}
virtual_hosts:
  - {{name: v, domains: ["*"], routes: [{{match: {{prefix: /}}, direct: {{status: 200, body: ok}}}}]}}
""")
        )
        assert served_names(w.port, "b.test", ca) == ["b.test", "*.b.test"]
        assert served_names(w.port, "C.TEST", ca) == ["c.test"]
        assert served_names(w.port, "x.b.test", ca) == ["b.test", "*.b.test"]  # wildcard
        assert served_names(w.port, "y.x.b.test", ca) == ["a.test"]  # one label only
        assert served_names(w.port, "unknown.test", ca) == ["a.test"]  # the default
        assert served_names(w.port, None, ca) == ["a.test"]


def mtls_config(
    port: int, up: str, srv: tuple[Path, Path], ca: CA, mode: str, fwd: bool, extra: str = ""
) -> str:
    """``extra``: more top-level YAML (an access log)."""
    return f"""version: 1
{extra}listeners:
  - name: public
    address: "127.0.0.1:{port}"
    tls:
      certificates: [{{cert: "{srv[0]}", key: "{srv[1]}"}}, {{cert: "{srv[2]}", key: "{srv[3]}"}}]
      client_auth: {{ca: "{ca.pem}", mode: {mode}, forward: {str(fwd).lower()}}}
clusters:
  - {{name: c, endpoints: ["{up}"]}}
virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
      - name: alice-only
        match:
          prefix: /alice
          headers: [{{name: x-client-cert-san, exact: "URI=spiffe://example.org/alice"}}]
        forward: {{cluster: c}}
      - name: anyone-verified
        match: {{prefix: /who, headers: [{{name: x-client-cert-subject, present: true}}]}}
        forward: {{cluster: c}}
      - {{name: rest, match: {{prefix: /}}, direct: {{status: 403, body: no}}}}
"""


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca = CA(tmp_path)
    stranger = CA(tmp_path, "Other CA")
    return {
        "ca": ca,
        "srv": ca.issue("srv", dns=("srv.test",)) + ca.issue("srv2", dns=("second.test",)),
        "alice": ca.issue(
            "alice",
            cn="alice",
            org="Example, Inc",
            uris=("spiffe://example.org/alice",),
            client=True,
        ),
        "bob": ca.issue("bob", cn="bob", uris=("spiffe://example.org/bob",), client=True),
        "mallory": stranger.issue(
            "mallory", cn="alice", uris=("spiffe://example.org/alice",), client=True
        ),
    }


def test_required_client_certificates_and_routes_keyed_on_identity(
    upstream: Upstream, pki: dict[str, Any], tmp_path: Path
) -> None:
    ca = pki["ca"]
    log = tmp_path / "access.log"
    with Workers(unique_instance(), 1) as w:
        extra = f'access_log: {{path: "{log}"}}\n'
        w.start(
            seal_yaml(
                mtls_config(w.port, upstream.address, pki["srv"], ca, "required", False, extra)
            )
        )
        assert refused(w.port, client_context(ca))  # no certificate
        assert refused(w.port, client_context(ca, pki["mallory"]))  # not from the CA
        # The certificate SNI switches to verifies clients alike.
        assert refused(w.port, client_context(ca), "second.test")
        assert served_names(w.port, "second.test", ca, pki["alice"]) == ["second.test"]
        alice, bob = client_context(ca, pki["alice"]), client_context(ca, pki["bob"])
        status, body = get(w.port, alice, "/alice")
        assert status == 200
        # Routed on, not forwarded (client_auth.forward is false).
        assert not {"x-client-cert-subject", "x-client-cert-san"} & set(header_pairs(body))
        assert get(w.port, bob, "/alice")[0] == 403
        # A client cannot claim an identity with the fields themselves.
        spoof = {"x-client-cert-san": "URI=spiffe://example.org/alice"}
        assert get(w.port, bob, "/alice", spoof)[0] == 403
        assert get(w.port, bob, "/who")[0] == 200
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(x["path"], x["client_cert"]) for x in lines] == [
        ("/alice", "CN=alice,O=Example\\, Inc"),
        ("/alice", "CN=bob"),
        ("/alice", "CN=bob"),
        ("/who", "CN=bob"),
    ]


def test_optional_client_certificates_and_forwarded_identity(
    upstream: Upstream, pki: dict[str, Any]
) -> None:
    ca = pki["ca"]
    with Workers(unique_instance(), 1) as w:
        w.start(seal_yaml(mtls_config(w.port, upstream.address, pki["srv"], ca, "optional", True)))
        anonymous = client_context(ca)
        spoof = {
            "x-client-cert-subject": "CN=alice",
            "x-client-cert-san": "URI=spiffe://example.org/alice",
        }
        assert get(w.port, anonymous, "/who", spoof)[0] == 403  # connects, but has no identity
        assert get(w.port, anonymous, "/alice", spoof)[0] == 403
        assert refused(w.port, client_context(ca, pki["mallory"]))  # presented, not verified
        status, body = get(w.port, client_context(ca, pki["alice"]), "/alice", spoof)
        assert status == 200
        seen = header_pairs(body)
        assert seen["x-client-cert-subject"] == ["CN=alice,O=Example\\, Inc"]
        assert seen["x-client-cert-san"] == ["URI=spiffe://example.org/alice"]


def test_a_client_certificate_reaches_an_upstream_that_requires_one(
    upstream: Upstream, pki: dict[str, Any]
) -> None:
    """front (plain) → TLS with alice's certificate → back (client_auth required)."""
    ca = pki["ca"]
    alice = pki["alice"]
    with Workers(unique_instance(), 1) as back, Workers(unique_instance(), 1) as front:
        back.start(
            seal_yaml(mtls_config(back.port, upstream.address, pki["srv"], ca, "required", True))
        )

        def front_config(cert: str) -> str:
            return f"""version: 1
listeners:
  - {{name: public, address: "127.0.0.1:{front.port}"}}
clusters:
  - name: back
    endpoints: ["127.0.0.1:{back.port}"]
    tls: {{sni: srv.test, ca: "{ca.pem}"{cert}}}
virtual_hosts:
  - {{name: v, domains: ["*"], routes: [{{match: {{prefix: /}}, forward: {{cluster: back}}}}]}}
"""

        front.start(seal_yaml(front_config(f', cert: "{alice[0]}", key: "{alice[1]}"')))
        conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=5)
        try:
            conn.request("GET", "/alice")
            resp = conn.getresponse()
            body = json.loads(resp.read())
        finally:
            conn.close()
        assert resp.status == 200
        assert header_pairs(body)["x-client-cert-san"] == ["URI=spiffe://example.org/alice"]


def test_without_a_client_certificate_the_upstream_refuses(
    upstream: Upstream, pki: dict[str, Any]
) -> None:
    ca = pki["ca"]
    with Workers(unique_instance(), 1) as back, Workers(unique_instance(), 1) as front:
        back.start(
            seal_yaml(mtls_config(back.port, upstream.address, pki["srv"], ca, "required", True))
        )
        front.start(
            seal_yaml(f"""version: 1
listeners:
  - {{name: public, address: "127.0.0.1:{front.port}"}}
clusters:
  - {{name: back, endpoints: ["127.0.0.1:{back.port}"], tls: {{sni: srv.test, ca: "{ca.pem}"}}}}
virtual_hosts:
  - {{name: v, domains: ["*"], routes: [{{match: {{prefix: /}}, forward: {{cluster: back}}}}]}}
""")
        )
        conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
        try:
            conn.request("GET", "/alice")
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
        assert resp.status == 502
