"""Header fields across the proxy, and every response head it writes.

Owns: which header fields never cross the proxy (hop-by-hop and framing, and those a
Connection field names), the response fields copied from an upstream, the fields of the
proxy's own answers, status lines, and ``response_head``, the one builder of every response
head (upstream answers relayed, local answers, errors). ``workers.rewrite`` builds the
request head sent upstream from the same sets.
Must not: read or write sockets, know routes, or keep state: every function here is pure,
so a test calls it in-process.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {}
CLOSE: Final = b"Connection: close\r\n"
KEEP_ALIVE: Final = b"Connection: keep-alive\r\n"

# Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy ones) and the framing the proxy redoes
# itself: never copied in either direction.
HOP_AND_FRAMING = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    )
)
# Request headers never copied from the client: the above, and the ones the proxy writes.
SKIP_REQUEST = HOP_AND_FRAMING | {
    b"expect",
    b"host",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"via",
    b"x-request-id",
}
_PLAIN_CONNECTION = frozenset((b"keep-alive", b"close", b"upgrade"))


def reason(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


def error_body(status: int) -> bytes:
    """What a client reads in an error the proxy answers: the reason phrase only. Details
    (addresses, errno texts, TLS verification results) go to the worker's log."""
    return reason(status) + b"\n"


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, reason(status))
    return line


def connection_tokens(value: bytes | None) -> frozenset[bytes] | None:
    """Header names a Connection header declares hop-by-hop (None: only the usual tokens)."""
    if value is None or value.lower() in _PLAIN_CONNECTION:
        return None
    return frozenset(t.strip().lower() for t in value.split(b","))


def disposition(keep: bool, http10: bool) -> bytes:
    """The Connection field of a response: close, or keep-alive said aloud to HTTP/1.0."""
    if not keep:
        return CLOSE
    return KEEP_ALIVE if http10 else b""


def response_head(
    status: int, fields: list[bytes], framing: bytes, connection: bytes
) -> list[bytes]:
    """Every response head the proxy writes: the status line, ``fields`` (header-field
    lines, in order), ``framing`` (how the body is delimited), ``connection``
    (``disposition``, or b"" for a tunnel) and the empty line.

    Built in ``fields`` itself, which is returned: the caller appends what body it already
    has and writes head and body with one join, without copying the head first."""
    fields.insert(0, status_line(status))
    fields.append(framing)
    fields.append(connection)
    fields.append(b"\r\n")
    return fields


def interim_head(status: int) -> bytes:
    """A 1xx head (``100 Continue``): a status line and nothing else."""
    return b"".join(response_head(status, [], b"", b""))


def own_fields(
    status: int, body_len: int, content_type: bytes, location: bytes, drop: frozenset[bytes]
) -> bytes:
    """The header fields of an answer the proxy gives itself (direct, redirect, error):
    Server, the Location of a redirect, and for a status with a body its Content-Type (if
    any) and Content-Length; the names in ``drop`` (a route's response header ops) left out."""
    fields = [(b"Server", b"pavis")]
    if location:
        fields.append((b"Location", location))
    if status >= 200 and status not in (204, 304):
        if body_len or content_type:
            fields.append((b"Content-Type", content_type))
        fields.append((b"Content-Length", b"%d" % body_len))
    return b"".join(n + b": " + v + b"\r\n" for n, v in fields if n.lower() not in drop)


PLAIN_TEXT = b"text/plain; charset=utf-8"
_ERRORS: dict[int, bytes] = {}  # status * 4 + keep * 2 + head_only → the whole answer


def error_response(status: int, keep: bool, head_only: bool) -> bytes:
    """A whole error answer: the reason phrase as text, and its head (made once each)."""
    key = status * 4 + keep * 2 + head_only
    data = _ERRORS.get(key)
    if data is None:
        body = error_body(status)
        fields = own_fields(status, len(body), PLAIN_TEXT, b"", frozenset())
        # Only "close" is ever said: an HTTP/1.0 client is not told keep-alive, so after an
        # error it closes the connection itself.
        parts = response_head(status, [fields], b"", disposition(keep, False))
        if not head_only and status not in (204, 304):
            parts.append(body)
        data = _ERRORS[key] = b"".join(parts)
    return data


def response_fields(
    headers: list[tuple[bytes, bytes]],
    connection: bytes | None,
    drop: frozenset[bytes],
    keep_length: bool,
) -> tuple[list[bytes], bytes]:
    """An upstream response's header fields as relayed: hop-by-hop and framing fields left
    out (a Content-Length kept when ``keep_length``: the response has no body, so it tells
    the length of what a GET would get), and those the Connection field names, and
    ``drop`` (the route's response header ops). Returns the field pieces and the value of
    the upstream's Upgrade field (b"" if none)."""
    out: list[bytes] = []
    named = connection_tokens(connection)
    ext = out.extend
    upgrade = b""
    for name, value in headers:
        ln = name.lower()
        if ln in HOP_AND_FRAMING:
            if ln == b"content-length" and keep_length:
                ext((name, b": ", value, b"\r\n"))
            elif ln == b"upgrade":
                upgrade = value
            continue
        if ln in drop or (named is not None and ln in named):
            continue
        ext((name, b": ", value, b"\r\n"))
    return out, upgrade
