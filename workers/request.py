"""A client request as the reader hands it on, and what a request head may be.

Owns: the ``Request`` object, ``HttpError`` (an answer the proxy gives itself), and the rules
a complete request head is held to before anything routes it: HTTP/1.x only (505),
``chunked`` the only transfer coding (a coding before it → 501; not last, twice, or on
HTTP/1.0 → 400), no CONNECT (501),
the request target and Host as ``pavis.lookup`` reads them (400).
Must not: read sockets or parse bytes (``workers.http``), or route (``workers.conn``).
"""

from __future__ import annotations

from pavis.lookup import split_target, valid_host


class HttpError(Exception):
    """The proxy answers the request itself with ``status`` and then closes the connection."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail


class Request:
    """One parsed request head plus its body as it arrives."""

    __slots__ = (
        "target",
        "path",
        "query",
        "method",
        "http10",
        "headers",
        "host",
        "connection",
        "content_length",
        "chunked",
        "te",
        "expect_continue",
        "upgrade",
        "xff",
        "via",
        "request_id",
        "keep_alive",
        "headers_done",
        "complete",
        "chunks",
        "body_bytes",
        "error",
        "error_detail",
        "nheaders",
        "hbytes",
        "started",
        "_lower",
    )

    def __init__(self) -> None:
        self.target = b""  # as forwarded: origin-form (an absolute-form one is reduced to it)
        self.path = b""  # routed on (``pavis.lookup.split_target``)
        self.query = b""
        self.method = b""
        self.http10 = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.host: bytes | None = None
        self.connection: bytes | None = None  # raw Connection header value(s)
        self.content_length = -1  # -1 = no Content-Length
        self.chunked = False
        self.te: bytes | None = None  # Transfer-Encoding value(s), joined
        self.expect_continue = False
        self.upgrade: bytes | None = None
        self.xff: bytes | None = None
        self.via: bytes | None = None
        self.request_id: bytes | None = None
        self.keep_alive = False
        self.headers_done = False
        self.complete = False
        self.chunks: list[bytes] = []
        self.body_bytes = 0
        self.error = 0
        self.error_detail = ""
        self.nheaders = 0
        self.hbytes = 0
        self.started = 0.0
        self._lower: dict[str, str] | None = None

    @property
    def has_body(self) -> bool:
        return self.chunked or self.content_length > 0

    def get(self, name: str, default: str | None = None) -> str | None:
        """Mapping-style access for ``pavis.lookup``: lower-case name → joined value."""
        d = self._lower
        if d is None:
            d = {}
            for k, v in self.headers:
                key = k.decode("latin-1").lower()
                val = v.decode("latin-1")
                old = d.get(key)
                d[key] = val if old is None else f"{old}, {val}"
            self._lower = d
        return d.get(name, default)


def _chunked_only(te: bytes, http10: bool) -> bool:
    """The Transfer-Encoding rule. The codings, all fields joined (any case, empty list
    elements ignored), must be exactly ``chunked``. A last coding that is not ``chunked``
    leaves the body length unknown: 400 (RFC 9112 §6.3), as is ``chunked`` twice and any
    Transfer-Encoding in HTTP/1.0 (RFC 9112 §6.1: faulty framing). ``chunked`` after another coding →
    501 (nginx's answer): the proxy would hand on a body it cannot decode as if plain."""
    if http10:
        raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
    codings = [c for c in (c.strip(b" \t").lower() for c in te.split(b",")) if c]
    if not codings or codings[-1] != b"chunked":
        raise HttpError(400, "the last transfer coding is not chunked")
    if len(codings) > 1:
        if codings.count(b"chunked") > 1:
            raise HttpError(400, "chunked applied more than once")
        raise HttpError(501, "unsupported transfer coding")
    return True


def settle_head(req: Request, version: str) -> None:
    """Hold a complete head to the rules above, raising ``HttpError``; sets ``path``,
    ``query``, ``chunked`` and, for an absolute-form target, ``host`` and ``target``. Leaves
    ``host`` None only for HTTP/1.0 without Host (the reader supplies one)."""
    if version != "1.1" and version != "1.0":
        raise HttpError(505, f"HTTP/{version}")
    req.http10 = version == "1.0"
    if req.method == b"CONNECT":
        raise HttpError(501, "CONNECT")  # a reverse proxy opens no tunnels to named hosts
    if req.te is not None:
        req.chunked = _chunked_only(req.te, req.http10)
    t = split_target(req.method, req.target)
    if t is None:
        raise HttpError(400, "invalid request target")
    req.path = t.path
    req.query = t.query
    if t.authority is not None:
        # absolute-form: its authority is the Host (RFC 9112 §3.2.2); origin-form goes on.
        req.host = t.authority
        req.target = t.path + t.query
    elif req.host is not None:
        if not valid_host(req.host):
            raise HttpError(400, "invalid Host header")
    elif not req.http10:
        raise HttpError(400, "missing Host header")
