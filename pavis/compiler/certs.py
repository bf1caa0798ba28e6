"""Certificates: a listener's and a cluster's TLS sections into their runtime form.

Owns: reading each certificate with ``cryptography`` and the checks only a parsed
certificate allows — the key belongs to the certificate (``key_mismatch``), the certificate is
valid now (``certificate_expired``, ``certificate_not_yet_valid``), it parses
(``invalid_certificate``, ``invalid_key``) — and the SNI table: every name a certificate
claims (its SAN DNS names, else its CN), exact names and ``*.suffix`` wildcards apart, a name
claimed by two certificates reported (``duplicate_certificate_name``). Checked here, where the
path the user wrote (``tls.cert`` or ``tls.certificates[k].cert``) is still known.
Must not: read files itself (``Values.pem`` does) or decide anything the worker must
interpret: the worker looks names up in the table built here.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from pavis.compiler.intent import TlsFiles, UpstreamTlsSpec
from pavis.compiler.values import Values
from pavis.schema import Certificate, ClientAuth, ClientAuthOff, ServerTls, UpstreamTls

if TYPE_CHECKING:
    from cryptography import x509

# ``cryptography`` is imported only when a config has certificates: the supervisor imports
# the compiler before it forks each compile child, and a config without TLS should not pay
# for (nor have its memory bound measured against) the OpenSSL bindings.


def server_tls(v: Values, spec: TlsFiles, path: str) -> ServerTls:
    """A listener's ``tls`` section: certificate 0 is the default for no or unknown SNI."""
    pairs: list[tuple[str, str, str]] = []  # (field path, cert file, key file)
    if spec.cert or spec.key:
        if spec.certificates:
            v.add(f"{path}.certificates", "conflicting_fields", "give cert/key or certificates")
        pairs.append((path, spec.cert, spec.key))
        for field in ("cert", "key"):
            if not getattr(spec, field):
                v.add(f"{path}.{field}", "missing_field", f"cert and key go together: no {field}")
    for k, c in enumerate(spec.certificates):
        pairs.append((f"{path}.certificates[{k}]", c.cert, c.key))
    if not pairs:
        v.add(path, "missing_field", "a TLS listener needs cert and key, or certificates")
    certs: list[Certificate] = []
    names: dict[str, tuple[int, str]] = {}  # name → (certificate index, where it was claimed)
    for where, cert_file, key_file in pairs:
        cert_pem = v.pem(cert_file, f"{where}.cert") if cert_file else ""
        key_pem = v.pem(key_file, f"{where}.key") if key_file else ""
        for name in checked(v, cert_pem, key_pem, where):
            if name in names:
                other = names[name][1]
                v.add(f"{where}.cert", "duplicate_certificate_name", f"{name!r} is also {other}")
                continue
            names[name] = (len(certs), f"claimed by {where}.cert")
        certs.append(Certificate(cert_pem=cert_pem, key_pem=key_pem))
    auth: ClientAuth | ClientAuthOff = ClientAuthOff()
    if spec.client_auth is not None:
        a = spec.client_auth
        auth = ClientAuth(
            ca_pem=v.pem(a.ca, f"{path}.client_auth.ca"),
            required=a.mode == "required",
            forward=a.forward,
        )
    first = certs[0] if certs else Certificate(cert_pem="", key_pem="")
    return ServerTls(
        cert_pem=first.cert_pem,
        key_pem=first.key_pem,
        more=tuple(certs[1:]),
        names=tuple(sorted((n, i) for n, (i, _) in names.items() if not n.startswith("*."))),
        wildcards=tuple(sorted((n[2:], i) for n, (i, _) in names.items() if n.startswith("*."))),
        client_auth=auth,
    )


def upstream_tls(v: Values, t: UpstreamTlsSpec, path: str) -> UpstreamTls:
    cert_pem = v.pem(t.cert, f"{path}.cert") if t.cert else ""
    key_pem = v.pem(t.key, f"{path}.key") if t.key else ""
    if bool(t.cert) != bool(t.key):
        missing = "key" if t.cert else "cert"
        v.add(f"{path}.{missing}", "missing_field", f"cert and key go together: no {missing}")
    elif t.cert:
        checked(v, cert_pem, key_pem, path)
    return UpstreamTls(
        sni=t.sni,
        verify=t.verify,
        ca_pem=v.pem(t.ca, f"{path}.ca") if t.ca else "",
        cert_pem=cert_pem,
        key_pem=key_pem,
    )


def checked(v: Values, cert_pem: str, key_pem: str, where: str) -> list[str]:
    """The names the leaf of ``cert_pem`` claims, after the checks above (problems added to
    ``v``)."""
    if "-----BEGIN CERTIFICATE-----" not in cert_pem:
        return []  # unreadable (the codec said so) or no PEM block (``invalid_pem``)
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        leaf = x509.load_pem_x509_certificates(cert_pem.encode())[0]
    except ValueError as exc:
        v.add(f"{where}.cert", "invalid_certificate", f"the certificate does not parse: {exc}")
        return []
    now = datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc < now:
        v.add(
            f"{where}.cert",
            "certificate_expired",
            f"the certificate expired at {leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
        )
    elif leaf.not_valid_before_utc > now:
        v.add(
            f"{where}.cert",
            "certificate_not_yet_valid",
            f"the certificate is valid from {leaf.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}",
        )
    if "PRIVATE KEY-----" in key_pem:
        try:
            key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            v.add(f"{where}.key", "invalid_key", f"the key does not load (no passphrase): {exc}")
        else:
            if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
                v.add(f"{where}.key", "key_mismatch", "the key is not the certificate's key")
    return claimed_names(leaf)


def claimed_names(cert: x509.Certificate) -> list[str]:
    """SAN DNS names, lower-case; the subject CN when the certificate has no SAN DNS name."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns = [str(n).lower().rstrip(".") for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        dns = []
    if dns:
        return list(dict.fromkeys(dns))
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return [str(cns[0].value).lower().rstrip(".")] if cns else []
