"""HTTP/1.1 framing toward clients, on httptools: the request reader.

Owns: reading requests from one client connection under the artifact's ``Limits`` (400, 408,
413, 414, 431, and 505 for a version llhttp refuses; ``workers.request`` checks a whole head),
pipelining (requests parsed ahead wait in order), ``Expect: 100-continue`` (the proxy answers
100 itself when the body is first pulled, like nginx), dropping chunked trailers (they never
become headers, as in nginx) and the bytes that follow an ``Upgrade`` request.
Must not: route, proxy, build heads (``workers.heads`` makes even its ``100 Continue``),
or read anything from the artifact but the limits it is handed.

The reader is pull-based: the handler asks for the next request head, then for body chunks.
Bytes are read from the socket only when the current request needs them, so at most one
receive buffer of a pipelined request's body is held in memory.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from typing import Any

import httptools

from pavis.schema import Limits
from workers.heads import interim_head
from workers.io import Stream, take_chunks
from workers.request import HttpError as HttpError
from workers.request import Request as Request
from workers.request import settle_head
from workers.tls import IDENTITY


class ClientGone(Exception):
    """The client closed, reset or stalled its connection; nothing can be answered."""


# Request headers the reader looks at; everything else is only collected.
_HOST = b"host"
_CONNECTION = b"connection"
_CONTENT_LENGTH = b"content-length"
_TRANSFER_ENCODING = b"transfer-encoding"
_EXPECT = b"expect"
_UPGRADE = b"upgrade"
_XFF = b"x-forwarded-for"
_XRID = b"x-request-id"
_VIA = b"via"
_CONTINUE = interim_head(100)
_IDENTITY = IDENTITY  # fields only the proxy sets (``workers.tls``): a client's are dropped
_SPECIAL = (
    frozenset(
        (
            _HOST,
            _CONNECTION,
            _CONTENT_LENGTH,
            _TRANSFER_ENCODING,
            _EXPECT,
            _UPGRADE,
            _XFF,
            _XRID,
            _VIA,
        )
    )
    | _IDENTITY
)


class ClientReader:
    """httptools protocol object and pull interface for one client connection."""

    __deletable__ = ("parser",)  # mypyc: ``close`` deletes it

    def __init__(self, sock: Any, limits: Limits) -> None:
        self.stream = Stream(sock)
        self.served = 0
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request] = deque()
        self.cur: Request | None = None
        self.broken = False  # no more bytes are parsed (error or upgrade)
        self.eof = False
        self.tail = b""  # bytes after an upgrade request's head: tunnel data
        self.line_fed = 0  # bytes since the last LF while a head is incomplete
        self.body_fed = 0  # body bytes delivered during the current feed
        self.local_host = b""
        self.priming = False  # ``_resume_body`` feeds a head whose callbacks are ignored
        self.set_limits(limits)

    def set_limits(self, limits: Limits) -> None:
        self.max_line = limits.max_request_line
        self.max_hbytes = limits.max_header_bytes
        self.max_headers = limits.max_headers
        self.max_body = limits.max_body_bytes
        self.header_timeout = limits.header_timeout_ms / 1000.0
        self.keepalive_timeout = limits.keepalive_timeout_ms / 1000.0
        # One line of a head (the request line or one header field) is at most this long.
        self.max_head = limits.max_request_line + limits.max_header_bytes + 64

    def close(self) -> None:
        """Close the connection and drop the parser: it holds bound methods of this reader,
        a reference cycle that only the cyclic gc would free (with the stream, the queue and
        the requests in it) — on Connection: close traffic, a collection every few dozen
        connections."""
        with contextlib.suppress(OSError):
            self.stream.close()
        del self.parser

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        if self.priming:
            return
        req = Request()
        req.started = time.time()
        self.cur = req
        self.queue.append(req)

    def on_url(self, url: bytes) -> None:
        if self.priming:
            return
        req = self.cur
        assert req is not None
        req.target += url
        n = len(req.target)
        # "METHOD target HTTP/1.1": the method is looked up only when the line gets close.
        if n > self.max_line - 32 and n + 10 + len(self.parser.get_method()) > self.max_line:
            raise HttpError(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.priming:
            return
        req = self.cur
        assert req is not None
        req.nheaders += 1
        req.hbytes += len(name) + len(value) + 4
        if req.nheaders > self.max_headers or req.hbytes > self.max_hbytes:
            raise HttpError(431, "request header fields too large")
        if req.headers_done:
            # A chunked trailer field (httptools reports it like a header): dropped, as nginx
            # does. Routing and hop-by-hop decisions were made on the head; a trailer that
            # joined the headers could add a header a route matches on, or an Upgrade.
            return
        req.headers.append((name, value))
        lname = name.lower()
        if lname in _SPECIAL:
            if lname == _HOST:
                if req.host is not None:
                    raise HttpError(400, "more than one Host header")
                req.host = value
            elif lname == _CONNECTION:
                req.connection = value if req.connection is None else req.connection + b"," + value
            elif lname == _CONTENT_LENGTH:
                req.content_length = int(value)  # llhttp already checked the syntax
            elif lname == _TRANSFER_ENCODING:
                req.te = value if req.te is None else req.te + b"," + value
            elif lname == _EXPECT:
                if value.lower() != b"100-continue":
                    raise HttpError(417, "unsupported expectation")
                req.expect_continue = True
            elif lname == _UPGRADE:
                if req.upgrade is None:
                    req.upgrade = value
                else:
                    req.upgrade = b""  # two Upgrade fields: not one protocol
            elif lname == _XFF:
                req.xff = value if req.xff is None else req.xff + b", " + value
            elif lname == _VIA:
                req.via = value if req.via is None else req.via + b", " + value
            elif lname in _IDENTITY:
                req.headers.pop()
            else:
                req.request_id = value

    def on_headers_complete(self) -> None:
        if self.priming:
            return
        req = self.cur
        assert req is not None
        p = self.parser
        req.method = p.get_method()
        settle_head(req, p.get_http_version())
        if req.host is None:
            # HTTP/1.0 may omit Host; it is forwarded as HTTP/1.1, which must carry one: the
            # address the client connected to, which is also what routing sees.
            req.host = self._local()
        if req.content_length > self.max_body:
            raise HttpError(413, "request body too large")
        req.keep_alive = p.should_keep_alive()  # final value is set at message complete
        req.headers_done = True
        if req.upgrade is not None:
            proto = req.upgrade.strip().lower()
            if (
                p.should_upgrade()  # llhttp: Upgrade with a Connection "upgrade" token
                and not req.http10
                and not req.has_body
                and proto
                and b"," not in proto
            ):
                req.upgrade = proto
            else:
                req.upgrade = None

    def on_body(self, body: bytes) -> None:
        req = self.cur
        assert req is not None
        self.body_fed += len(body)
        req.body_bytes += len(body)
        if req.body_bytes > self.max_body:
            raise HttpError(413, "request body too large")
        req.chunks.append(body)

    def on_message_complete(self) -> None:
        req = self.cur
        assert req is not None
        req.complete = True
        # Only meaningful here (httptools computes it at message end).
        req.keep_alive = req.keep_alive and self.parser.should_keep_alive()

    # ------------------------------------------------------------------ feeding

    def _local(self) -> bytes:
        """The address the client connected to, as a Host value."""
        if not self.local_host:
            addr = self.stream.sock.getsockname()
            if isinstance(addr, tuple):
                ip = str(addr[0])
                ip = f"[{ip}]" if ":" in ip else ip
                self.local_host = f"{ip}:{addr[1]}".encode("ascii")
            else:
                self.local_host = b"localhost"
        return self.local_host

    def _fail(self, status: int, detail: str) -> None:
        req = self.cur
        if req is None or req.complete:
            req = Request()
            self.queue.append(req)
        if not req.method:
            with contextlib.suppress(Exception):  # for the access log; the line may be bad
                req.method = self.parser.get_method()
        req.error = status
        req.error_detail = detail
        self.broken = True

    def _feed(self, data: bytes) -> None:
        q = self.queue
        self.body_fed = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            rest = data[exc.args[0] :]
            req = self.cur
            if req is not None and req.has_body and req.method != b"CONNECT":
                self._resume_body(req, rest)  # not an upgrade: its body is the request's
                return
            self.tail = rest
            self.broken = True
        except httptools.HttpParserCallbackError as exc:
            ctx = exc.__context__
            if isinstance(ctx, HttpError):
                self._fail(ctx.status, ctx.detail)
            else:
                self._fail(400, "request head rejected")
            return
        except httptools.HttpParserError as exc:
            # llhttp knows HTTP/0.9, 1.0, 1.1 and 2.0 (``settle_head`` answers those it does
            # not serve); any other version is one the proxy does not support either.
            text = str(exc)
            self._fail(505 if text == "Invalid HTTP version" else 400, text)
            return
        # Bounding what httptools buffers of a head: the request target and whole header
        # fields are counted by the callbacks; only the line still being read is not. It is
        # the bytes after the last LF (a head in progress holds no empty line, so that LF is
        # its own, or the end of what came before it); a feed without LF adds to it, less
        # any body bytes it completed first. Requests answered earlier in the same feed do
        # not count.
        if not q or q[-1].headers_done:
            self.line_fed = 0
            return
        lf = data.rfind(b"\n")
        if lf >= 0:
            self.line_fed = len(data) - lf - 1
        else:
            self.line_fed += len(data) - self.body_fed
        if self.line_fed > self.max_head:
            cur = self.cur
            if cur is None or cur.nheaders == 0:
                self._fail(414, "request line too long")
            else:
                self._fail(431, "request header field too long")

    def _resume_body(self, req: Request, rest: bytes) -> None:
        """llhttp stops at the head of any request with ``Connection: upgrade`` and leaves
        its body unparsed. Such a request is never upgraded (``Request.upgrade``): a new
        parser, primed with a head of the same framing whose callbacks are ignored, reads
        the body for ``req``. The connection closes after its answer (``keep_alive``)."""
        req.complete = False
        req.keep_alive = False
        framing = (
            b"Transfer-Encoding: chunked"
            if req.chunked
            else b"Content-Length: %d" % req.content_length
        )
        self.priming = True
        self.parser = httptools.HttpRequestParser(self)
        self.parser.feed_data(b"PUT / HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n")
        self.priming = False
        self.cur = req
        if rest:
            self._feed(rest)

    def next_request(self) -> Request | None:
        """The next request whose head is complete; None when the connection should end
        quietly (EOF, idle keep-alive timeout). Raises HttpError for a bad head (the caller
        answers it and closes)."""
        q = self.queue
        deadline = 0.0
        stream = self.stream
        while True:
            if q:
                req = q[0]
                if req.headers_done:
                    return req
                if req.error:
                    raise HttpError(req.error, req.error_detail)
                if not deadline:
                    deadline = time.monotonic() + self.header_timeout
            if self.broken or self.eof:
                return None
            if deadline:
                until = deadline
                if until <= time.monotonic():
                    raise HttpError(408, "request head not received in time")
            else:
                # A fresh connection gets the header deadline, an idle keep-alive one the
                # keep-alive timeout: a client that connects and stays silent is cut early.
                idle = self.keepalive_timeout if self.served else self.header_timeout
                until = time.monotonic() + idle
            try:
                # After a response the next request is rarely there yet: wait before reading.
                data = stream.recv(until, wait_first=self.served > 0)
            except TimeoutError:
                if deadline:
                    raise HttpError(408, "request head not received in time") from None
                return None
            except OSError:
                return None
            if not data:
                self.eof = True
                return None
            self._feed(data)

    def read_body(self, req: Request, timeout: float) -> bytes:
        """Next piece of ``req``'s body; b"" once it is complete."""
        chunks = req.chunks
        stream = self.stream
        while True:
            if chunks:
                return take_chunks(chunks)
            if req.complete:
                return b""
            if req.error:
                raise HttpError(req.error, req.error_detail)
            if self.broken or self.eof:
                raise ClientGone("client closed during the request body")
            if req.expect_continue:
                req.expect_continue = False
                try:
                    stream.send(_CONTINUE, time.monotonic() + timeout)
                except OSError as exc:
                    raise ClientGone(str(exc)) from None
            try:
                data = stream.recv(time.monotonic() + timeout)
            except OSError as exc:
                raise ClientGone(str(exc)) from None
            if not data:
                self.eof = True
                raise ClientGone("client closed during the request body")
            self._feed(data)

    def read_whole_body(self, req: Request, timeout: float) -> bytes:
        parts: list[bytes] = []
        while True:
            data = self.read_body(req, timeout)
            if not data:
                return b"".join(parts)
            parts.append(data)

    def finish(self, req: Request) -> None:
        """``req`` has been answered: drop it so the next pipelined one comes up."""
        self.served += 1
        if self.queue and self.queue[0] is req:
            self.queue.popleft()
