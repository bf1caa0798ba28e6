"""One client connection: the request loop, routing, and the proxy's own responses.

Owns: capturing the generation a request runs on (``runtime.state`` read once per request),
route lookup through ``pavis.lookup``, the direct / redirect / 404 responses, mapping
``HttpError`` to an answer (the client gets the status and its reason phrase; the detail goes
to stderr, rate-limited, and to the access log), keep-alive and draining decisions, and the
access log call — for rejected request heads too.
Must not: relay to upstreams (``workers.proxy``) or parse bytes (``workers.http``).
"""

from __future__ import annotations

import itertools
import os
import sys
import time
import traceback
from typing import Any

from pavis.errors import ArtifactError
from workers import accesslog
from workers.accept import Load
from workers.http import ClientGone, ClientReader, HttpError, Request, error_body, simple_response
from workers.metrics import METRICS
from workers.proxy import Abort, forward
from workers.state import FORWARD, RouteRT, State

_record = METRICS.request  # bound once: the request path pays one call, no lookups

ERROR_LINES_PER_S = 20  # stderr lines about answered errors: per-request noise must not flood

DRAIN_MAX = 65536  # unread request bodies up to this size are drained to keep the connection

# Request ids: a random per-process prefix and a counter, unique without a syscall each.
_RID_PREFIX = os.urandom(8).hex().encode()
_rid_next = itertools.count(1).__next__


def reseed_request_ids() -> None:
    """Call after fork: workers forked from one parent must not share the prefix."""
    global _RID_PREFIX, _rid_next
    _RID_PREFIX = os.urandom(8).hex().encode()
    _rid_next = itertools.count(1).__next__


def serve_connection(runtime: Runtime, proto: bytes, sock: Any, addr: object) -> None:
    """A listener's connection handler, bound as ``functools.partial(serve_connection,
    runtime, proto)``: compiled, so the accepting greenlet enters no interpreted frame."""
    Connection(runtime, sock, addr, proto).serve()


def serve_tls_connection(runtime: Runtime, proto: bytes, sock: Any, addr: object) -> None:
    """``serve_connection`` for gevent's StreamServer (TLS listeners): counts the
    connection in ``runtime.load``, as the plain listeners' ``Acceptor`` does."""
    load = runtime.load
    load.opened()
    try:
        serve_connection(runtime, proto, sock, addr)
    finally:
        load.closed()


class Runtime:
    """Worker-wide facts shared by every connection: the serving state and counters."""

    def __init__(self, state: State, load: Load | None = None) -> None:
        """``load``: this worker's connection count, shared with the other workers
        (``workers.accept.Load``); a worker on its own by default."""
        self.state = state
        self.load = Load() if load is None else load
        self.requests = 0
        self.inflight = 0
        self.draining = False
        self.conns: set[Connection] = set()


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


class Exchange:
    """What the access log reports about one request."""

    __slots__ = (
        "status",
        "route",
        "cluster",
        "endpoint",
        "upstream_ms",
        "bytes",
        "request_id",
        "error",
        "attempts",
    )

    def __init__(self) -> None:
        self.attempts = 0  # requests sent upstream for this one: > 1 means it was replayed
        self.status = 0
        self.route = ""
        self.cluster = ""
        self.endpoint = ""
        self.upstream_ms = 0.0
        self.bytes = 0
        self.request_id = b""
        self.error = ""  # the detail of an error the proxy answered itself


class Connection:
    __slots__ = ("runtime", "client_ip", "client", "proto", "reader", "busy")

    def __init__(self, runtime: Runtime, sock: Any, addr: object, proto: bytes) -> None:
        """``sock``: see ``workers.io.Stream``; the connection's socket lives in
        ``self.reader.stream`` from here on."""
        self.runtime = runtime
        host = addr[0] if isinstance(addr, tuple) else str(addr)
        self.client = host
        self.client_ip = host.encode("latin-1")
        self.proto = proto
        self.busy = False
        self.reader = ClientReader(sock, runtime.state.limits)

    @staticmethod
    def new_request_id() -> bytes:
        return b"%s%016x" % (_RID_PREFIX, _rid_next())

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
            keep = self._answer_error(exc, req, keep)
        except (ClientGone, Abort):
            ex.status = ex.status or 499
            keep = False
        except ArtifactError as exc:
            ex.status = 500
            ex.error = "route does not decode"
            print(f"pavis worker: {exc}", file=sys.stderr)
            keep = self._answer_error(HttpError(500), req, False)
        except Exception:
            ex.status = 500
            ex.error = "internal error"
            traceback.print_exc()
            keep = self._answer_error(HttpError(500), req, False)
        _record(ex.status, time.time() - req.started)
        log = state.log
        if log is not None:
            log.write(accesslog.line(ex, req, state, self.client))
        return keep

    def _bad_head(self, exc: HttpError) -> None:
        """A head that is not answered by routing (400, 408, 414, 431...) is a request too:
        answered, counted and logged with whatever of it was read."""
        q = self.reader.queue
        req = q[0] if q else Request()
        self._answer_error(exc, None, keep=False)
        _record(exc.status, time.time() - req.started if req.started else 0.0)
        state = self.runtime.state
        log = state.log
        if log is not None:
            ex = Exchange()
            ex.status = exc.status
            ex.error = exc.detail
            log.write(accesslog.line(ex, req, state, self.client))

    def _dispatch(self, req: Request, state: State, ex: Exchange) -> bool:
        # The target was split and Host checked when the head was read (``workers.request``).
        path = req.path
        query = req.query
        vh = state.vhost(req.host or b"")
        if vh < 0:
            raise HttpError(404, "no virtual host for this Host")
        ri = state.find(vh, req.method, path, req)  # Request.get: the lower-case header view
        if ri < 0:
            raise HttpError(404, "no route")
        rt = state.route(ri)
        ex.route = rt.name
        if rt.kind == FORWARD:
            return forward(self, req, rt, path, query, ex)
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
        keep = self._settle(req) and req.keep_alive and not self.runtime.draining
        parts = [rt.direct_head]
        if not keep:
            parts.append(b"Connection: close\r\n")
        elif req.http10:
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        head_len = sum(len(p) for p in parts)
        if req.method != b"HEAD":
            parts.append(rt.direct_body)
        data = b"".join(parts)
        self.reader.stream.send_soon(data, time.monotonic() + self.reader.keepalive_timeout)
        ex.status = rt.status
        ex.bytes = len(data) - head_len
        return keep

    def _answer_error(self, exc: HttpError, req: Request | None, keep: bool) -> bool:
        if keep and req is not None:
            keep = self._settle(req) and not self.runtime.draining
        body = error_body(exc.status)
        head_only = req is not None and req.method == b"HEAD"
        try:
            self.reader.stream.send(
                simple_response(exc.status, body, keep_alive=keep, head_only=head_only),
                time.monotonic() + 1.0,
            )
        except OSError:
            return False
        return keep
