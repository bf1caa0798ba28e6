"""Downstream TLS: a listener's server contexts, SNI selection and the verified client identity.

Owns: building the gevent server contexts of a ``ServerTls`` (one per certificate, all with
the listener's client-certificate verification), the SNI callback that looks the client's
server name up in the tables the compiler built (exact name, then the ``*.suffix`` wildcard
one label up, else the default certificate 0), and the identity fields the proxy sets from a
verified client certificate: ``x-client-cert-subject`` (the subject, RFC 4514) and
``x-client-cert-san`` (the subject alternative names, ``URI=...``, ``DNS=...``, comma
separated, in the certificate's order).
Must not: interpret certificates beyond what the handshake verified, or decide which names a
certificate serves (the artifact says).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from pavis.schema import ClientAuth, ServerTls

SUBJECT = b"x-client-cert-subject"
SAN = b"x-client-cert-san"
IDENTITY = frozenset((SUBJECT, SAN))  # the reader drops these from every client's request

_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
_SAN_KIND = {"IP Address": "IP"}


def server_context(tls: ServerTls) -> Any:
    """The context a TLS listener's server wraps with: certificate 0's, which switches a
    handshake to another certificate's context when the SNI tables name it."""
    pairs = ((tls.cert_pem, tls.key_pem), *((c.cert_pem, c.key_pem) for c in tls.more))
    contexts = [_context(cert, key, tls.client_auth) for cert, key in pairs]
    default = contexts[0]
    names = {name: contexts[i] for name, i in tls.names}
    wildcards = {suffix: contexts[i] for suffix, i in tls.wildcards}

    def pick(sock: Any, server_name: str | None, _ctx: Any) -> None:
        sock.pavis_sni = server_name or ""  # for the access log (``negotiated``)
        if server_name and tls.more:
            name = server_name.lower().rstrip(".")
            ctx = names.get(name)
            if ctx is None:
                ctx = wildcards.get(name.partition(".")[2])
            if ctx is not None and ctx is not default:
                sock.context = ctx

    default.sni_callback = pick
    return default


def _context(cert_pem: str, key_pem: str, auth: Any) -> Any:
    from gevent import ssl as gssl

    ctx = gssl.SSLContext(gssl.PROTOCOL_TLS_SERVER)
    load_chain(ctx, cert_pem, key_pem)
    if isinstance(auth, ClientAuth):
        # Every certificate's context verifies alike, so that whichever of them OpenSSL
        # consults after an SNI switch (the handshake keeps some settings of the first,
        # takes others from the new one), verification is the same.
        ctx.verify_mode = gssl.CERT_REQUIRED if auth.required else gssl.CERT_OPTIONAL
        ctx.load_verify_locations(cadata=auth.ca_pem)
    return ctx


def load_chain(ctx: Any, cert_pem: str, key_pem: str) -> None:
    """``ctx.load_cert_chain`` from embedded PEM text (also the upstream client certificate)."""
    # load_cert_chain reads files only: hand it private, short-lived copies.
    with tempfile.TemporaryDirectory(prefix="pavis-tls-") as d:
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        for path, text in ((cert, cert_pem), (key, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        ctx.load_cert_chain(cert, key)


def negotiated(sock: Any) -> tuple[str, str]:
    """(TLS version, the server name the client sent, "" if none) of a finished handshake."""
    return sock.version() or "", getattr(sock, "pavis_sni", "")


def identity(sock: Any) -> list[tuple[bytes, bytes]]:
    """The identity fields of the client certificate the handshake verified; none without one
    (``mode: optional`` and no certificate, or no client_auth)."""
    cert = sock.getpeercert()
    if not cert:
        return []
    rdns = cert.get("subject", ())
    subject = ",".join(
        "+".join(f"{_SHORT.get(k, k)}={_escape(v)}" for k, v in rdn) for rdn in reversed(rdns)
    )
    san = ", ".join(f"{_SAN_KIND.get(k, k)}={v}" for k, v in cert.get("subjectAltName", ()))
    fields = [(SUBJECT, _safe(subject))]
    if san:
        fields.append((SAN, _safe(san)))
    return fields


def _escape(value: str) -> str:
    """An RFC 4514 attribute value."""
    out = "".join("\\" + ch if ch in ',+"\\<>;=' else ch for ch in value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def _safe(text: str) -> bytes:
    """A header value: UTF-8, every control character as ``\\XX`` (RFC 4514's hex pair)."""
    return "".join(
        f"\\{ord(ch):02X}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in text
    ).encode()
