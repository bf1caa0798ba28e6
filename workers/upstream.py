"""One connection to an upstream endpoint: connect (TCP, optional TLS) and read responses.

Owns: the httptools response parser of a pooled connection, interim (1xx) responses, the
framing facts of the response (length, chunked, close-delimited, no body for HEAD/204/304),
and the failure classes the proxy maps to statuses and retries.
Must not: choose endpoints, keep pools, or know about routes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl as _stdlib_ssl
import time
from _socket import socket as RawSocket  # the C type: gevent's monkey patch leaves it alone
from typing import Any, ClassVar

import httptools
from gevent import socket as gsocket
from gevent import ssl as gssl
from gevent.socket import wait_write

from pavis.schema import TlsOff, UpstreamTls
from workers.io import Stream, take_chunks
from workers.tls import load_chain


class UpstreamError(Exception):
    """A failed exchange with an upstream. ``kind`` selects status, retry and outlier rules."""

    # ClassVar: compiled with mypyc, a plain class attribute of an Exception subclass becomes
    # an instance attribute that Exception's __init__ never sets (AttributeError at run time).
    kind: ClassVar[str] = "reset"
    status: ClassVar[int] = 502


class ConnectFailed(UpstreamError):
    kind = "connect_error"
    status = 503


class UpstreamReset(UpstreamError):
    """The upstream closed or reset the connection before the response was complete."""

    kind = "reset"
    status = 502


class BadResponse(UpstreamError):
    kind = "bad_response"
    status = 502


class UpstreamTimeout(UpstreamError):
    kind = "timeout"
    status = 504


def _tls_context(tls: UpstreamTls) -> _stdlib_ssl.SSLContext:
    ctx: _stdlib_ssl.SSLContext = gssl.create_default_context(cadata=tls.ca_pem or None)
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = _stdlib_ssl.CERT_NONE
    if tls.cert_pem:
        load_chain(ctx, tls.cert_pem, tls.key_pem)  # mTLS: the upstream asks for a certificate
    return ctx


_TLS_CONTEXTS: dict[UpstreamTls, _stdlib_ssl.SSLContext] = {}


def literal_family(host: str) -> int:
    """AF_INET or AF_INET6 when ``host`` is an address literal, else 0 (a name to resolve).
    Pools and health checks work it out once, when a generation's state is built."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return 0


def _open(host: str, port: int, family: int, timeout: float) -> socket.socket:
    """A connected gevent socket. Address literals (``family`` from ``literal_family``) skip
    ``getaddrinfo``: gevent resolves in its thread pool, so ``create_connection`` costs a
    thread hand-off (and at first a thread start) per connect even for 127.0.0.1 — measured
    as new threads in every worker under pool churn."""
    if not family:
        return gsocket.create_connection((host, port), timeout=timeout)  # type: ignore[no-any-return]
    sock = gsocket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock  # type: ignore[no-any-return]


_IN_PROGRESS = (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY)


def _open_bare(host: str, port: int, family: int, timeout: float) -> Any:
    """A connected, non-blocking ``_socket.socket``: the pool's connections are read and
    written only through ``workers.io.Stream``, which needs nothing of gevent's socket. Going
    through gevent's pure-Python ``socket.connect`` and ``close`` cost more CPU than the rest
    of a request's work whenever the pool churns — more requests in flight than ``max_idle``,
    as at 100 keep-alive clients on two workers."""
    sock = RawSocket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        err = sock.connect_ex((host, port))
        if err in _IN_PROGRESS:
            wait_write(sock.fileno(), timeout)  # TimeoutError when the deadline passes
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    return sock


def connect(
    host: str,
    port: int,
    family: int,
    timeout: float,
    tls: TlsOff | UpstreamTls,
    bare: bool = False,
) -> Any:
    """A connected socket: a gevent socket, or with ``bare`` (the pool, which only uses it
    through ``Stream``) and plain TCP to an address literal, a bare ``_socket.socket``."""
    try:
        if bare and family and not isinstance(tls, UpstreamTls):
            sock: Any = _open_bare(host, port, family, timeout)
        else:
            sock = _open(host, port, family, timeout)
    except TimeoutError:
        raise ConnectFailed(f"connect to {host}:{port} timed out") from None
    except OSError as exc:
        raise ConnectFailed(f"connect to {host}:{port}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if isinstance(tls, UpstreamTls):
        ctx = _TLS_CONTEXTS.get(tls)
        if ctx is None:
            ctx = _TLS_CONTEXTS[tls] = _tls_context(tls)
        try:
            sock = ctx.wrap_socket(sock, server_hostname=tls.sni or host)
        except (OSError, _stdlib_ssl.SSLError) as exc:
            sock.close()
            raise ConnectFailed(f"TLS handshake with {host}:{port}: {exc}") from None
    return sock


def peer_address(sock: socket.socket) -> str:
    """The ``ip:port`` (``[ip]:port``) a connection reached; "" if it is already gone."""
    try:
        addr = sock.getpeername()
    except OSError:
        return ""
    host = str(addr[0])
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


class _Beyond(Exception):
    """Raised inside a parser callback to stop parsing (httptools wraps it)."""


class UpConn:
    """A connection to one endpoint; also the httptools protocol object of its parser."""

    __deletable__ = ("parser",)  # mypyc: ``close`` deletes it

    __slots__ = (
        "sock",
        "stream",
        "parser",
        "reused",
        "idle_since",
        "status",
        "headers",
        "headers_done",
        "complete",
        "chunks",
        "keep_alive",
        "tail",
        "upgraded",
        "interim",
        "head_only",
        "content_length",
        "chunked",
        "got_bytes",
        "stale_parser",
        "connection",
        "stray",
        "head_fed",
        "max_head",
        "max_headers",
        "nheaders",
        "bad",
        "idle_pool",
        "peer",
    )

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.peer = ""  # "ip:port" it is connected to, once asked (``peer_address``)
        self.stream = Stream(sock)
        self.parser = httptools.HttpResponseParser(self)
        self.reused = False
        self.idle_since = 0.0
        self.stale_parser = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.tail = b""
        self.upgraded = False
        self.content_length = -1
        self.chunked = False
        self.connection: bytes | None = None
        self.stray = False
        self.bad = ""
        self.nheaders = 0
        self.idle_pool: Any = None  # the pool holding this connection while it is idle
        self.begin(False, 0, 0)  # every exchange begins again with the artifact's limits

    def begin(self, head_only: bool, max_head: int, max_headers: int) -> None:
        """Reset per-exchange state before a request is written; ``max_head`` bytes and
        ``max_headers`` fields bound the response head (the artifact's limits)."""
        if self.stale_parser:
            self.parser = httptools.HttpResponseParser(self)
            self.stale_parser = False
        # headers, content_length, chunked and connection are reset by on_message_begin;
        # tail and upgraded only ever change on a connection that is never reused.
        self.status = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.interim = False
        self.head_only = head_only
        self.got_bytes = False
        self.head_fed = 0
        self.max_head = max_head
        self.max_headers = max_headers
        if self.chunks:  # a body left unread (a retried status) must not leak into this one
            self.chunks = []

    @property
    def reusable(self) -> bool:
        """The exchange ended exactly where its framing says, and both sides keep it open."""
        return self.complete and self.keep_alive and not self.upgraded and not self.stray

    def close(self) -> None:
        self.idle_pool = None
        with contextlib.suppress(OSError):
            self.stream.close()
        # The parser holds bound methods of this object: a reference cycle that only the
        # cyclic gc would free. Dropped, the connection's objects go when the last reference does.
        with contextlib.suppress(AttributeError):  # closed twice
            del self.parser

    def idle_readable(self) -> None:  # runs in the hub (``Stream.watch_idle``)
        self.stray = True
        pool = self.idle_pool
        if pool is not None:
            self.stream.hub.loop.run_callback(pool.drop, self)

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            # A second message where one response was asked for: never parsed, never
            # relayed, and the connection is not reused.
            raise _Beyond()
        self.headers = []
        self.nheaders = 0
        self.content_length = -1
        self.chunked = False
        self.connection = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.nheaders += 1
        if self.nheaders > self.max_headers:
            self.bad = "upstream response has too many header fields"
            raise _Beyond()
        self.headers.append((name, value))
        n = len(name)
        if n == 14 and name.lower() == b"content-length":
            self.content_length = int(value)
        elif n == 17 and name.lower() == b"transfer-encoding":
            if self.chunked or value.strip().lower() != b"chunked":
                # Any coding but one "chunked" would reach the client undeclared (the proxy
                # redoes the framing): refuse it, as nginx does.
                self.bad = "upstream response has an unsupported Transfer-Encoding"
                raise _Beyond()
            self.chunked = True
        elif n == 10 and name.lower() == b"connection":
            self.connection = value if self.connection is None else self.connection + b"," + value

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if not 100 <= status <= 599 or self.parser.get_http_version()[:2] != "1.":
            self.bad = "upstream response has an invalid status line"
            raise _Beyond()
        if 100 <= status < 200 and status != 101:
            self.interim = True  # 100 Continue, 103 Early Hints: swallowed
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        if self.head_only:
            # httptools cannot be told the request was HEAD: the head is the whole message,
            # and this parser is replaced before the connection's next exchange.
            self.complete = True
            self.stale_parser = True

    def on_body(self, body: bytes) -> None:
        if self.complete:  # a body after a HEAD answer's head: not this request's bytes
            raise _Beyond()
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if not self.head_only:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()

    # ------------------------------------------------------------------ reading

    def _feed(self, data: bytes) -> None:
        if not self.headers_done:
            self.head_fed += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.tail = data[exc.args[0] :]
            self.upgraded = True
        except httptools.HttpParserError as exc:
            if self.bad:
                raise BadResponse(self.bad) from None
            if self.complete:
                self.stray = True  # bytes beyond the response's framing
                return
            raise BadResponse(f"invalid response from upstream: {exc}") from None
        if not self.headers_done and self.head_fed > self.max_head:
            raise BadResponse("upstream response head too large")

    def _recv(self, deadline: float, wait_first: bool = False) -> bytes:
        try:
            data = self.stream.recv(deadline, wait_first)
        except TimeoutError:
            raise UpstreamTimeout("upstream did not answer in time") from None
        except OSError as exc:
            raise UpstreamReset(f"upstream connection failed: {exc}") from None
        return data

    def read_head(self, deadline: float) -> None:
        """Read until the final response head is parsed (or raise)."""
        wait_first = True  # the request was just sent: the answer is not there yet
        while not self.headers_done:
            if deadline <= time.monotonic():
                raise UpstreamTimeout("upstream did not answer in time")
            data = self._recv(deadline, wait_first)
            wait_first = False
            if not data:
                raise UpstreamReset("upstream closed the connection before responding")
            self.got_bytes = True
            self._feed(data)
            if self.upgraded and not self.headers_done:
                raise BadResponse("upstream switched protocols without a response head")

    @property
    def close_delimited(self) -> bool:
        return (
            self.content_length < 0
            and not self.chunked
            and not self.head_only
            and self.status not in (204, 304)
        )

    def read_body(self, timeout: float) -> bytes:
        """Next piece of the response body; b"" once complete."""
        chunks = self.chunks
        while True:
            if chunks:
                return take_chunks(chunks)
            if self.complete or self.upgraded:
                return b""
            data = self._recv(time.monotonic() + timeout)
            if not data:
                if self.close_delimited:
                    self.complete = True
                    self.keep_alive = False
                    return b""
                raise UpstreamReset("upstream closed the connection mid-response")
            self._feed(data)
