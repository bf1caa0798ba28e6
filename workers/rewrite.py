"""The request head sent upstream: what a route makes of the client's request head.

Owns: the target rewrite, the client's fields that are copied (hop-by-hop and framing
fields, those the proxy writes itself and those the route removes or sets are not), the
fields the proxy adds (Host, X-Forwarded-For/-Proto/-Host, Via, X-Request-Id, unless a
route header op names them) and the route's own header ops.
Must not: read or write sockets, or decide framing (the caller hands it in). Pure, so a
test calls it in-process.
"""

from __future__ import annotations

from workers.heads import SKIP_REQUEST, connection_tokens
from workers.request import Request
from workers.state import RouteRT

_VIA = b"1.1 pavis"


def request_head(
    req: Request, rt: RouteRT, framing: bytes, request_id: bytes, client_ip: bytes, proto: bytes
) -> bytes:
    """The request head sent upstream for ``req`` on route ``rt``. ``framing``: how its body
    is delimited (or the Upgrade fields); ``proto``: the listener's scheme (X-Forwarded-Proto)."""
    if rt.replace_prefix:
        path = req.path
        target = (rt.prefix + path[rt.strip :] if rt.strip >= 0 else rt.prefix) + req.query
    else:
        target = req.target
    out = [req.method, b" ", target, b" HTTP/1.1\r\n"]
    drop = rt.req_drop
    named = connection_tokens(req.connection)
    ext = out.extend
    for name, value in req.headers:
        ln = name.lower()
        if ln in SKIP_REQUEST or ln in drop or (named is not None and ln in named):
            continue
        ext((name, b": ", value, b"\r\n"))
    host = rt.host if rt.replace_host else req.host
    xff = req.xff + b", " + client_ip if req.xff else client_ip
    via = req.via + b", " + _VIA if req.via else _VIA
    skip = rt.proxy_skip
    if not skip:
        if host:
            ext((b"Host: ", host, b"\r\n"))
        ext((b"X-Forwarded-For: ", xff, b"\r\nX-Forwarded-Proto: ", proto, b"\r\n"))
        if req.host:
            ext((b"X-Forwarded-Host: ", req.host, b"\r\n"))
        ext((b"Via: ", via, b"\r\nX-Request-Id: ", request_id, b"\r\n"))
    else:
        if host and b"host" not in skip:
            ext((b"Host: ", host, b"\r\n"))
        if b"x-forwarded-for" not in skip:
            ext((b"X-Forwarded-For: ", xff, b"\r\n"))
        if b"x-forwarded-proto" not in skip:
            ext((b"X-Forwarded-Proto: ", proto, b"\r\n"))
        if req.host and b"x-forwarded-host" not in skip:
            ext((b"X-Forwarded-Host: ", req.host, b"\r\n"))
        if b"via" not in skip:
            ext((b"Via: ", via, b"\r\n"))
        if b"x-request-id" not in skip:
            ext((b"X-Request-Id: ", request_id, b"\r\n"))
    out.append(rt.req_extra)
    out.append(framing)
    out.append(b"\r\n")
    return b"".join(out)
