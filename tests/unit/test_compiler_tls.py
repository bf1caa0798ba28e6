"""The compiler's TLS sections: certificates chosen by SNI, the checks only a parsed
certificate allows, client_auth and upstream client certificates."""

from __future__ import annotations

from pathlib import Path

import pytest

from pavis.compiler import compile_path
from pavis.errors import ConfigError
from pavis.schema import ClientAuth, ClientAuthOff, ServerTls, UpstreamTls
from tests.pki import CA

TAIL = """clusters: [{name: c, endpoints: ["127.0.0.1:9000"]CLUSTER_TLS}]
virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, forward: {cluster: c}}]}]
"""


def config(tmp: Path, tls: str, cluster_tls: str = "") -> Path:
    path = tmp / "pavis.yaml"
    path.write_text(
        f'version: 1\nlisteners: [{{address: "127.0.0.1:8443", tls: {tls}}}]\n'
        + TAIL.replace("CLUSTER_TLS", cluster_tls)
    )
    return path


def problems(path: Path) -> set[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        compile_path(path)
    return {(p.path, p.constraint) for p in caught.value.problems}


def test_certificates_build_the_sni_tables_with_the_first_as_default(tmp_path: Path) -> None:
    ca = CA(tmp_path)
    a = ca.issue("a", cn="ignored.test", dns=("a.test", "*.a.test"))
    b = ca.issue("b", dns=("B.test.",))
    c = ca.issue("c", cn="c.test")  # no SAN: the CN is the name
    certs = ", ".join(f"{{cert: {x[0].name}, key: {x[1].name}}}" for x in (a, b, c))
    tls = compile_path(config(tmp_path, f"{{certificates: [{certs}]}}")).model.listeners[0].tls
    assert isinstance(tls, ServerTls)
    assert tls.cert_pem == a[0].read_text() and tls.key_pem == a[1].read_text()
    assert [m.cert_pem for m in tls.more] == [b[0].read_text(), c[0].read_text()]
    assert tls.names == (("a.test", 0), ("b.test", 1), ("c.test", 2))
    assert tls.wildcards == (("a.test", 0),)
    assert tls.client_auth == ClientAuthOff()


def test_one_certificate_keeps_its_old_syntax(tmp_path: Path) -> None:
    crt, key = CA(tmp_path).issue("one", dns=("one.test",))
    tls = compile_path(config(tmp_path, f"{{cert: {crt.name}, key: {key.name}}}")).model
    t = tls.listeners[0].tls
    assert isinstance(t, ServerTls) and t.more == () and t.names == (("one.test", 0),)


def test_a_key_of_another_certificate_is_rejected(tmp_path: Path) -> None:
    ca = CA(tmp_path)
    a, b = ca.issue("a", dns=("a.test",)), ca.issue("b", dns=("b.test",))
    got = problems(config(tmp_path, f"{{cert: {a[0].name}, key: {b[1].name}}}"))
    assert got == {("$.listeners[0].tls.key", "key_mismatch")}
    certs = f"[{{cert: {a[0].name}, key: {a[1].name}}}, {{cert: {b[0].name}, key: {a[1].name}}}]"
    got = problems(config(tmp_path, f"{{certificates: {certs}}}"))
    assert got == {("$.listeners[0].tls.certificates[1].key", "key_mismatch")}


def test_expired_and_not_yet_valid_certificates_are_rejected(tmp_path: Path) -> None:
    ca = CA(tmp_path)
    old = ca.issue("old", dns=("old.test",), days=(-3, -1))
    new = ca.issue("new", dns=("new.test",), days=(1, 3))
    certs = f"[{{cert: {old[0].name}, key: {old[1].name}}}, {{cert: {new[0].name}, key: {new[1].name}}}]"
    assert problems(config(tmp_path, f"{{certificates: {certs}}}")) == {
        ("$.listeners[0].tls.certificates[0].cert", "certificate_expired"),
        ("$.listeners[0].tls.certificates[1].cert", "certificate_not_yet_valid"),
    }


def test_a_name_two_certificates_claim_is_rejected(tmp_path: Path) -> None:
    ca = CA(tmp_path)
    a = ca.issue("a", dns=("a.test", "*.shared.test"))
    b = ca.issue("b", dns=("b.test", "*.Shared.test"))
    certs = f"[{{cert: {a[0].name}, key: {a[1].name}}}, {{cert: {b[0].name}, key: {b[1].name}}}]"
    with pytest.raises(ConfigError) as caught:
        compile_path(config(tmp_path, f"{{certificates: {certs}}}"))
    (p,) = caught.value.problems
    assert (p.path, p.constraint) == (
        "$.listeners[0].tls.certificates[1].cert",
        "duplicate_certificate_name",
    )
    assert "*.shared.test" in p.message and "certificates[0]" in p.message


def test_both_syntaxes_at_once_or_neither_is_rejected(tmp_path: Path) -> None:
    crt, key = CA(tmp_path).issue("a", dns=("a.test",))
    both = f"{{cert: {crt.name}, key: {key.name}, certificates: [{{cert: {crt.name}, key: {key.name}}}]}}"
    assert ("$.listeners[0].tls.certificates", "conflicting_fields") in problems(
        config(tmp_path, both)
    )
    assert problems(config(tmp_path, "{}")) == {("$.listeners[0].tls", "missing_field")}
    assert problems(config(tmp_path, f"{{cert: {crt.name}}}")) == {
        ("$.listeners[0].tls.key", "missing_field")
    }


def test_client_auth_embeds_the_ca_and_its_mode(tmp_path: Path) -> None:
    ca = CA(tmp_path)
    crt, key = ca.issue("a", dns=("a.test",))
    tls = (
        f"{{cert: {crt.name}, key: {key.name}, client_auth: {{ca: {ca.pem.name}, mode: optional}}}}"
    )
    t = compile_path(config(tmp_path, tls)).model.listeners[0].tls
    assert isinstance(t, ServerTls)
    assert t.client_auth == ClientAuth(ca_pem=ca.pem.read_text(), required=False, forward=False)
    tls = f"{{cert: {crt.name}, key: {key.name}, client_auth: {{ca: {crt.name}, forward: true}}}}"
    t = compile_path(config(tmp_path, tls)).model.listeners[0].tls
    assert isinstance(t, ServerTls) and isinstance(t.client_auth, ClientAuth)
    assert t.client_auth.required and t.client_auth.forward
    tls = f"{{cert: {crt.name}, key: {key.name}, client_auth: {{ca: {key.name}}}}}"
    assert problems(config(tmp_path, tls)) == {("$.listeners[0].tls.client_auth.ca", "invalid_pem")}
    tls = f"{{cert: {crt.name}, key: {key.name}, client_auth: {{ca: {ca.pem.name}, mode: maybe}}}}"
    assert problems(config(tmp_path, tls)) == {
        ("$.listeners[0].tls.client_auth.mode", "type_error")
    }


def test_upstream_client_certificate_is_embedded_and_checked(tmp_path: Path) -> None:
    ca = CA(tmp_path)
    srv = ca.issue("srv", dns=("srv.test",))
    me = ca.issue("me", cn="me", client=True)
    other = ca.issue("other", cn="other", client=True)
    listener = f"{{cert: {srv[0].name}, key: {srv[1].name}}}"
    good = f", tls: {{ca: {ca.pem.name}, cert: {me[0].name}, key: {me[1].name}}}"
    up = compile_path(config(tmp_path, listener, good)).model.clusters[0].tls
    assert isinstance(up, UpstreamTls)
    assert (up.cert_pem, up.key_pem) == (me[0].read_text(), me[1].read_text())
    bad = f", tls: {{cert: {me[0].name}, key: {other[1].name}}}"
    assert problems(config(tmp_path, listener, bad)) == {("$.clusters[0].tls.key", "key_mismatch")}
    half = f", tls: {{cert: {me[0].name}}}"
    assert problems(config(tmp_path, listener, half)) == {
        ("$.clusters[0].tls.key", "missing_field")
    }


def test_an_empty_pem_file_is_rejected(tmp_path: Path) -> None:
    crt, _ = CA(tmp_path).issue("a", dns=("a.test",))
    (tmp_path / "empty.key").write_text("")
    got = problems(config(tmp_path, f"{{cert: {crt.name}, key: empty.key}}"))
    assert got == {("$.listeners[0].tls.key", "invalid_pem")}
