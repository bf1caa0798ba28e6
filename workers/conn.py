"""One client connection: the request loop, routing, and the proxy's own responses.

Owns: ``Connection`` (a ``workers.runtime.Client`` with its request loop), capturing the
generation a request runs on (``runtime.state`` read once per request), route lookup
through ``pavis.lookup``, the direct / redirect / 404 responses and the 429 of a rate limit
(``workers.ratelimit`` decides), mapping
``HttpError`` to an answer (the client gets the status and its reason phrase; the detail goes
to stderr, rate-limited, and to the access log), keep-alive and draining decisions, and the
access log call — for rejected request heads too — and the verified client identity
(``workers.tls``) as fields routing sees, sent upstream only when the listener says so.
Must not: relay to upstreams (``workers.proxy`` is handed the connection as a ``Client``),
parse bytes (``workers.http``) or build heads (``workers.heads``).
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Any

from pavis.errors import ArtifactError
from pavis.schema import ClientAuth, ServerTls
from workers import accesslog, otlp, ratelimit
from workers.accesslog import Exchange
from workers.heads import (
    PLAIN_TEXT,
    disposition,
    error_body,
    error_response,
    own_fields,
    response_head,
)
from workers.http import ClientGone, HttpError, Request
from workers.metrics import METRICS
from workers.proxy import forward
from workers.relay import Abort
from workers.runtime import Client, Runtime
from workers.state import FORWARD, RouteRT, State
from workers.tls import identity, negotiated

_record = METRICS.request  # bound once: the request path pays one call, no lookups

ERROR_LINES_PER_S = 20  # stderr lines about answered errors: per-request noise must not flood

DRAIN_MAX = 65536  # unread request bodies up to this size are drained to keep the connection


def serve_connection(runtime: Runtime, proto: bytes, sock: Any, addr: object) -> None:
    """A listener's connection handler, bound as ``functools.partial(serve_connection,
    runtime, proto)``: compiled, so the accepting greenlet enters no interpreted frame."""
    Connection(runtime, sock, addr, proto).serve()


def serve_tls_connection(
    runtime: Runtime, proto: bytes, listener: str, sock: Any, addr: object
) -> None:
    """``serve_connection`` for gevent's StreamServer (TLS listeners): counts the
    connection in ``runtime.load``, as the plain listeners' ``Acceptor`` does, and gives it
    the identity of the client certificate the handshake verified (``workers.tls``)."""
    load = runtime.load
    load.opened()
    try:
        conn = Connection(runtime, sock, addr, proto)
        conn.tls_version, conn.sni = negotiated(sock)
        peer = identity(sock)
        if peer:
            conn.peer = peer
            conn.peer_forward = any(
                lst.name == listener
                and isinstance(lst.tls, ServerTls)
                and isinstance(lst.tls.client_auth, ClientAuth)
                and lst.tls.client_auth.forward
                for lst in runtime.state.listeners
            )
        conn.serve()
    finally:
        load.closed()


class ErrorLog:
    """One stderr line per 5xx the proxy answers itself, at most ``ERROR_LINES_PER_S`` a
    second; the next line says how many were left out."""

    def __init__(self) -> None:
        self.second = 0
        self.lines = 0
        self.dropped = 0

    def write(self, status: int, route: str, detail: str) -> None:
        now = int(time.monotonic())
        if now != self.second:
            self.second = now
            self.lines = 0
        if self.lines >= ERROR_LINES_PER_S:
            self.dropped += 1
            return
        self.lines += 1
        more = f" ({self.dropped} similar lines left out)" if self.dropped else ""
        self.dropped = 0
        where = f" route {route}" if route else ""
        print(f"pavis worker: answered {status}{where}: {detail}{more}", file=sys.stderr)


ERRORS = ErrorLog()


class Connection(Client):
    """A ``Client`` with its request loop: the stages after routing get it as a ``Client``."""

    __slots__ = ()

    def serve(self) -> None:
        rt = self.runtime
        reader = self.reader
        limits = rt.state.limits
        rt.conns.add(self)
        try:
            while not rt.draining:
                try:
                    req = reader.next_request()
                except HttpError as exc:
                    self._bad_head(exc)
                    break
                if req is None:
                    break
                state = rt.state  # this request runs on this generation, start to end
                if state.limits is not limits:
                    limits = state.limits
                    reader.set_limits(limits)
                self.busy = True
                rt.inflight += 1
                rt.requests += 1
                try:
                    keep = self.handle(req, state)
                finally:
                    self.busy = False
                    rt.inflight -= 1
                reader.finish(req)
                if not keep:
                    break
        except (ClientGone, Abort, OSError):
            pass
        finally:
            rt.conns.discard(self)
            reader.close()

    def handle(self, req: Request, state: State) -> bool:
        ex = Exchange()
        tracer = state.tracer
        if tracer is not None:  # before routing: header matchers see what is sent upstream
            ex.trace = tracer.begin(req.headers)
        try:
            keep = self._dispatch(req, state, ex)
        except HttpError as exc:
            ex.status = exc.status
            ex.error = exc.detail
            if exc.status >= 500:  # the upstream side failed: the operator wants to know why
                ERRORS.write(exc.status, ex.route, exc.detail)
            # Upstream-side failures leave the client connection usable if the request was
            # read whole; a bad request from the client does not.
            keep = exc.status >= 500 and req.complete and req.keep_alive
            keep = self._answer_error(exc, req, keep, ex)
        except (ClientGone, Abort):
            ex.status = ex.status or 499
            keep = False
        except ArtifactError as exc:
            ex.status = 500
            ex.error = "route does not decode"
            print(f"pavis worker: {exc}", file=sys.stderr)
            keep = self._answer_error(HttpError(500), req, False, ex)
        except Exception:
            ex.status = 500
            ex.error = "internal error"
            traceback.print_exc()
            keep = self._answer_error(HttpError(500), req, False, ex)
        _record(ex.status, time.time() - req.started)
        log = state.log
        if log is not None:
            log.write(accesslog.line(ex, req, state, self.address, self.tls_version, self.sni))
        if tracer is not None and tracer.exporter is not None:
            tr = ex.trace
            if tr is not None and tr.sampled:
                otlp.record(tracer.exporter, tr, ex, req, self.address)
        return keep

    def _bad_head(self, exc: HttpError) -> None:
        """A head that is not answered by routing (400, 408, 414, 431...) is a request too:
        answered, counted and logged with whatever of it was read."""
        q = self.reader.queue
        req = q[0] if q else Request()
        ex = Exchange()
        ex.status = exc.status
        ex.error = exc.detail
        self._answer_error(exc, None, False, ex)
        _record(exc.status, time.time() - req.started if req.started else 0.0)
        state = self.runtime.state
        log = state.log
        if log is not None:
            log.write(accesslog.line(ex, req, state, self.address, self.tls_version, self.sni))

    def _dispatch(self, req: Request, state: State, ex: Exchange) -> bool:
        # The target was split and Host checked when the head was read (``workers.request``).
        vh = state.vhost(req.host or b"")
        if vh < 0:
            raise HttpError(404, "no virtual host for this Host")
        peer = self.peer
        if peer is not None:  # the reader dropped any such fields the client sent
            req.headers.extend(peer)
            ex.client_cert = peer[0][1].decode("utf-8", "replace")
        ri = state.find(vh, req.method, req.path, req, req.query)  # req.get: lower-case headers
        if peer is not None and not self.peer_forward:
            del req.headers[-len(peer) :]  # routed on, not sent upstream
        if ri < 0:
            raise HttpError(404, "no route")
        rt = state.route(ri)
        ex.route = rt.name
        if rt.rate_limits:
            decision, refused = ratelimit.check(
                self.runtime.buckets, self.client_ip, req, rt.rate_limits
            )
            ex.rate_limit = decision
            if refused:
                ex.error = "rate limited"
                body = error_body(429)
                fields = own_fields(429, len(body), PLAIN_TEXT, b"", frozenset()) + refused
                return self._send_local(req, 429, fields, body, ex)
        if rt.kind == FORWARD:
            return forward(self, req, rt, ex)
        return self._local(req, rt, ex)

    def _settle(self, req: Request) -> bool:
        """Before a local answer: can the connection outlive the unread request body?"""
        if req.complete or not req.has_body:
            return True
        if req.expect_continue:
            return False  # 100 Continue was never sent; the client may still send the body
        if req.chunked or req.content_length - req.body_bytes > DRAIN_MAX:
            return False
        try:
            while self.reader.read_body(req, self.reader.header_timeout):
                pass
        except (HttpError, ClientGone, OSError):
            return False
        return True

    def _local(self, req: Request, rt: RouteRT, ex: Exchange) -> bool:
        return self._send_local(req, rt.status, rt.local_fields, rt.local_body, ex)

    def _send_local(
        self, req: Request, status: int, fields: bytes, body: bytes, ex: Exchange
    ) -> bool:
        """An answer the proxy makes itself that keeps the connection (direct, redirect,
        429): ``fields`` are its header-field lines."""
        keep = self._settle(req) and req.keep_alive and not self.runtime.draining
        parts = response_head(status, [fields], b"", disposition(keep, req.http10))
        sent = 0
        if req.method != b"HEAD":
            parts.append(body)
            sent = len(body)
        self.reader.stream.send_soon(
            b"".join(parts), time.monotonic() + self.reader.keepalive_timeout
        )
        ex.status = status
        ex.bytes = sent
        return keep

    def _answer_error(self, exc: HttpError, req: Request | None, keep: bool, ex: Exchange) -> bool:
        """Send the proxy's own error answer; ``ex.bytes`` counts its body, as for any answer."""
        if keep and req is not None:
            keep = self._settle(req) and not self.runtime.draining
        head_only = req is not None and req.method == b"HEAD"
        try:
            self.reader.stream.send(
                error_response(exc.status, keep, head_only), time.monotonic() + 1.0
            )
        except OSError:
            return False
        if not head_only and exc.status not in (204, 304):
            ex.bytes = len(error_body(exc.status))
        return keep
