"""The forward path: one client request relayed to an upstream and its response back.

Owns: weighted cluster choice, the attempt loop (fixed retry budget, backoff, per-try and
route timeouts, one extra try on a fresh connection when a reused pooled one turns out
stale), the request head sent upstream (rewrites, hop-by-hop removal, X-Forwarded-*, Via,
X-Request-Id, route header ops), streaming bodies both ways with the proxy's own framing,
and the Upgrade tunnel after a 101.
Must not: parse client bytes (``workers.http`` does), choose endpoints (``workers.balance``)
or hold connections (``workers.pool``).

Timeouts: the route timeout bounds the time until the response head arrives, over every
attempt; a streamed (non-replayable) upload is sent first and its clock starts after it.
Body transfers in either direction use the per-try timeout (or the route timeout without
retries) as an idle timeout per read, so a long download that keeps flowing is not cut.
"""

from __future__ import annotations

import contextlib
import random
import socket
import time
from bisect import bisect_right
from typing import TYPE_CHECKING

import gevent

from workers.balance import ClusterRT, EndpointRT
from workers.http import ClientGone, HttpError, Request, reason
from workers.metrics import METRICS, ClusterCounters
from workers.pool import PoolOverflow
from workers.state import RouteRT
from workers.upstream import BadResponse, UpConn, UpstreamError, UpstreamReset, UpstreamTimeout

if TYPE_CHECKING:
    from workers.conn import Connection, Exchange

REPLAY_MAX = 65536  # request bodies up to this size are buffered so a retry can resend them
# A relay that never has to wait (a fast upstream, a fast client) would keep its worker to
# itself: after this many bytes without a wait it lets every other ready connection run.
RELAY_TURN = 262144
TURN_PAUSE_S = 0.0001  # > 0: gevent.sleep(0) may resume us before the loop polls for I/O
# Methods a proxy may send twice (RFC 9110 §9.2.2): a replay changes nothing upstream.
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))

# Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy ones) and the framing the proxy redoes
# itself: never copied in either direction.
_HOP_AND_FRAMING = frozenset(
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
_SKIP_REQ = _HOP_AND_FRAMING | {
    b"expect",
    b"host",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"via",
    b"x-request-id",
}
_SKIP_RESP = _HOP_AND_FRAMING
_STATUS_LINES: dict[int, bytes] = {}
_VIA = b"1.1 pavis"


class Abort(Exception):
    """The response was already started and cannot be completed: close the client."""


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, reason(status))
    return line


_PLAIN_CONNECTION = frozenset((b"keep-alive", b"close", b"upgrade"))


def _tokens(value: bytes) -> frozenset[bytes] | None:
    """Header names a Connection header declares hop-by-hop (None: only the usual tokens)."""
    if value.lower() in _PLAIN_CONNECTION:
        return None
    return frozenset(t.strip().lower() for t in value.split(b","))


def pick_cluster(rt: RouteRT) -> ClusterRT:
    clusters = rt.clusters
    if len(clusters) == 1:
        return clusters[0]
    return clusters[bisect_right(rt.cum, random.randrange(rt.total))]


def request_head(
    conn: Connection,
    req: Request,
    rt: RouteRT,
    path: bytes,
    query: bytes,
    framing: bytes,
    request_id: bytes,
) -> bytes:
    if rt.replace_prefix:
        target = (rt.prefix + path[rt.strip :] if rt.strip >= 0 else rt.prefix) + query
    else:
        target = req.target
    out = [req.method, b" ", target, b" HTTP/1.1\r\n"]
    drop = rt.req_drop
    named = _tokens(req.connection) if req.connection is not None else None
    ext = out.extend
    for name, value in req.headers:
        ln = name.lower()
        if ln in _SKIP_REQ or ln in drop or (named is not None and ln in named):
            continue
        ext((name, b": ", value, b"\r\n"))
    host = rt.host if rt.replace_host else req.host
    ip = conn.client_ip
    xff = req.xff + b", " + ip if req.xff else ip
    via = req.via + b", " + _VIA if req.via else _VIA
    skip = rt.proxy_skip
    if not skip:
        if host:
            ext((b"Host: ", host, b"\r\n"))
        ext((b"X-Forwarded-For: ", xff, b"\r\nX-Forwarded-Proto: ", conn.proto, b"\r\n"))
        if req.host:
            ext((b"X-Forwarded-Host: ", req.host, b"\r\n"))
        ext((b"Via: ", via, b"\r\nX-Request-Id: ", request_id, b"\r\n"))
    else:
        if host and b"host" not in skip:
            ext((b"Host: ", host, b"\r\n"))
        if b"x-forwarded-for" not in skip:
            ext((b"X-Forwarded-For: ", xff, b"\r\n"))
        if b"x-forwarded-proto" not in skip:
            ext((b"X-Forwarded-Proto: ", conn.proto, b"\r\n"))
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


def _send(up: UpConn, data: bytes, timeout: float, soon: bool = False) -> None:
    """``soon``: the next step is reading the answer, so the write may join the loop
    iteration's batch (``Stream.send_soon``); a failure then shows up in that read."""
    try:
        if soon:
            up.stream.send_soon(data, time.monotonic() + timeout)
        else:
            up.stream.send(data, time.monotonic() + timeout)
    except OSError as exc:
        raise UpstreamReset(f"sending to upstream failed: {exc}") from None


def forward(
    conn: Connection, req: Request, rt: RouteRT, path: bytes, query: bytes, ex: Exchange
) -> bool:
    """Proxy ``req``; returns whether the client connection may stay open."""
    reader = conn.reader
    body_timeout = rt.per_try
    # ---- the request body: buffered when small (replayable), else streamed once
    body = b""
    streaming = False
    upgrade = req.upgrade is not None and req.upgrade in rt.upgrades
    if upgrade:
        assert req.upgrade is not None
        framing = b"Connection: upgrade\r\nUpgrade: " + req.upgrade + b"\r\n"
    elif not req.has_body:
        framing = b"Content-Length: 0\r\n" if req.content_length == 0 else b""
    else:
        if req.chunked or req.content_length > REPLAY_MAX:
            parts: list[bytes] = []
            size = 0
            while size <= REPLAY_MAX:
                data = reader.read_body(req, body_timeout)
                if not data:
                    break
                parts.append(data)
                size += len(data)
            else:
                streaming = True
            body = b"".join(parts)
        else:
            body = reader.read_whole_body(req, body_timeout)
        if not streaming:
            framing = b"Content-Length: %d\r\n" % len(body)
        elif req.chunked:
            framing = b"Transfer-Encoding: chunked\r\n"
        else:
            framing = b"Content-Length: %d\r\n" % req.content_length
    request_id = req.request_id or conn.new_request_id()
    ex.request_id = request_id
    head = request_head(conn, req, rt, path, query, framing, request_id)
    head_only = req.method == b"HEAD"
    # A request that may have reached the upstream is sent again only if that is harmless
    # (an idempotent method) or the route's retry policy says so.
    replayable = req.method in IDEMPOTENT or rt.replay_any

    cluster = pick_cluster(rt)
    ex.cluster = cluster.name
    counters = METRICS.cluster(cluster.name)
    start = time.monotonic()
    deadline = start + rt.timeout
    attempt = 0
    exclude: EndpointRT | None = None
    while True:
        ep = cluster.pick(exclude)
        if ep is None:
            raise HttpError(503, f"no healthy endpoint in cluster {cluster.name}")
        ex.endpoint = ep.label
        try_deadline = min(deadline, time.monotonic() + rt.per_try) if rt.retry else deadline
        ep.inflight += 1
        ex.attempts += 1
        up: UpConn | None = None
        err: UpstreamError | None = None
        try:
            up = _attempt(
                conn, req, ep, head, body, streaming, head_only, try_deadline, rt, upgrade, ex,
                counters,
            )  # fmt: skip
        except UpstreamError as exc:
            ep.inflight -= 1
            if not isinstance(exc, PoolOverflow):
                ep.health.record(False)
            err = exc
        if err is None:
            assert up is not None
            status = up.status
            counters.answered(status)
            if (
                status in rt.retry_statuses
                and attempt + 1 < rt.attempts
                and not streaming
                and not upgrade
                and replayable
            ):
                ep.inflight -= 1
                ep.health.record(status < 500)
                ep.pool.release(up, up.reusable)
                counters.retries += 1
                err_status = status
            else:
                ex.upstream_ms = (time.monotonic() - start) * 1000.0
                ex.status = status
                try:
                    return relay(conn, req, rt, ep, up, ex, body_timeout)
                finally:
                    ep.inflight -= 1
                    ep.health.record(status < 500)
        else:
            err_status = err.status
            counters.failed(err.kind)
            if isinstance(err, PoolOverflow):
                raise HttpError(503, str(err))
            retryable = (err.kind == "connect_error" and rt.retry_connect) or (
                replayable
                and (
                    (err.kind in ("reset", "bad_response") and rt.retry_reset)
                    or (err.kind == "timeout" and rt.retry_timeout)
                )
            )
            if streaming or not retryable or attempt + 1 >= rt.attempts:
                if not streaming and time.monotonic() >= deadline:
                    raise HttpError(504, "route timeout")
                raise HttpError(err_status, str(err))
            counters.retries += 1
        # ---- next attempt, after a bounded backoff that never outlives the route deadline
        exclude = ep
        delay = min(rt.backoff_max, rt.backoff_base * (1 << attempt))
        attempt += 1
        if time.monotonic() + delay >= deadline:
            raise HttpError(err_status, "no time left in the route timeout for another try")
        if delay > 0:
            gevent.sleep(delay)


def _attempt(
    conn: Connection,
    req: Request,
    ep: EndpointRT,
    head: bytes,
    body: bytes,
    streaming: bool,
    head_only: bool,
    deadline: float,
    rt: RouteRT,
    upgrade: bool,
    ex: Exchange,
    counters: ClusterCounters,
) -> UpConn:
    """Send the request and read the response head on one endpoint."""
    pool = ep.pool
    fresh = False
    while True:
        up = pool.acquire(deadline, fresh)
        up.begin(head_only, rt.resp_head_max, rt.resp_headers_max)
        try:
            if streaming:
                _stream_body(conn, req, up, head + _frame(req, body), rt)
                deadline = time.monotonic() + rt.timeout
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise UpstreamTimeout("route timeout")
                _send(up, head + body if body else head, remaining, soon=True)
            up.read_head(deadline)
            if up.status == 101 and not _switched(up, req, upgrade):
                raise BadResponse("upstream switched protocols unasked")
            return up
        except UpstreamError as exc:
            pool.release(up, False)
            # The upstream may have closed an idle pooled connection just as it was taken:
            # a request that got no answer there is sent once more on a fresh connection
            # (never another pooled one) if sending it twice is harmless.
            if (
                up.reused
                and not up.got_bytes
                and not fresh
                and not streaming
                and exc.kind == "reset"
                and (req.method in IDEMPOTENT or rt.replay_any)
            ):
                ex.attempts += 1
                counters.retries += 1
                fresh = True
                continue
            raise
        except BaseException:
            pool.release(up, False)
            raise


def _switched(up: UpConn, req: Request, upgrade: bool) -> bool:
    """A 101 is an answer only to the upgrade this request asked for, to that protocol."""
    if not upgrade or not up.upgraded:
        return False
    for name, value in up.headers:
        if name.lower() == b"upgrade":
            return value.strip().lower() == req.upgrade
    return False


def _frame(req: Request, data: bytes) -> bytes:
    if not data:
        return b""
    if req.chunked:
        return b"%x\r\n%s\r\n" % (len(data), data)
    return data


def _stream_body(conn: Connection, req: Request, up: UpConn, first: bytes, rt: RouteRT) -> None:
    timeout = rt.per_try
    _send(up, first, timeout)
    reader = conn.reader
    chunked = req.chunked
    turn = 0
    while True:
        data = reader.read_body(req, timeout)
        if not data:
            break
        _send(up, b"%x\r\n%s\r\n" % (len(data), data) if chunked else data, timeout)
        turn += len(data)
        if turn >= RELAY_TURN:
            turn = 0
            gevent.sleep(TURN_PAUSE_S)
    if chunked:
        _send(up, b"0\r\n\r\n", timeout)


def relay(
    conn: Connection,
    req: Request,
    rt: RouteRT,
    ep: EndpointRT,
    up: UpConn,
    ex: Exchange,
    timeout: float,
) -> bool:
    """Write the upstream's response to the client with the proxy's own framing."""
    status = up.status
    no_body = up.head_only or status in (204, 304) or status < 200
    keep = req.keep_alive and not conn.runtime.draining
    parts = [status_line(status)]
    drop = rt.resp_drop
    named = _tokens(up.connection) if up.connection is not None else None
    ext = parts.extend
    upgrade_value = b""
    for name, value in up.headers:
        ln = name.lower()
        if ln in _SKIP_RESP:
            if ln == b"content-length" and no_body:
                ext((name, b": ", value, b"\r\n"))
            elif ln == b"upgrade":
                upgrade_value = value
            continue
        if ln in drop or (named is not None and ln in named):
            continue
        ext((name, b": ", value, b"\r\n"))
    parts.append(rt.resp_extra)
    tunnel = status == 101  # ``_attempt`` let a 101 through only for the upgrade asked for
    mode = 0  # 0 none, 1 length, 2 chunked, 3 until close
    if tunnel:
        parts.append(
            b"Connection: upgrade\r\nUpgrade: " + (upgrade_value or req.upgrade or b"") + b"\r\n"
        )
        keep = False
    elif no_body:
        pass
    elif up.content_length >= 0:
        parts.append(b"Content-Length: %d\r\n" % up.content_length)
        mode = 1
    elif not req.http10:
        parts.append(b"Transfer-Encoding: chunked\r\n")
        mode = 2
    else:
        mode = 3
        keep = False
    if conn.reader.broken and not tunnel:
        keep = False  # the client's parser stopped (an upgrade not honoured): close after
    if not tunnel:
        if not keep:
            parts.append(b"Connection: close\r\n")
        elif req.http10:
            parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    stream = conn.reader.stream
    mono = time.monotonic
    sent = 0
    try:
        if tunnel:
            stream.send(b"".join(parts), mono() + timeout)
            ep.pool.detach(up)  # the socket belongs to the tunnel now, not the pool
            try:
                _tunnel(conn, up)
            finally:
                up.close()
            return False
        # The whole answer in one write, and the connection's next step is reading the
        # client's next request: it may join the loop iteration's batch of writes.
        if mode == 0:
            stream.send_soon(b"".join(parts), mono() + timeout)
            _done(ep, up, ex, sent)
            return keep
        # Coalesce the head with whatever body is already here: one write for small replies.
        data = up.read_body(timeout) if up.chunks or up.complete else b""
        whole = up.complete and not up.chunks  # the whole answer is in ``parts`` now
        if mode == 2:
            if data:
                parts.append(b"%x\r\n%s\r\n" % (len(data), data))
            if whole:
                parts.append(b"0\r\n\r\n")
        else:
            parts.append(data)
        if whole:  # one write, and the client's next request is read next: batch it
            stream.send_soon(b"".join(parts), mono() + timeout)
            sent += len(data)
            _done(ep, up, ex, sent)
            return keep
        stream.send(b"".join(parts), mono() + timeout)
        sent += len(data)
        turn = 0
        while True:
            try:
                data = up.read_body(timeout)
            except UpstreamError:
                raise Abort("upstream failed mid-response") from None
            if not data:
                break
            sent += len(data)
            turn += len(data)
            if turn >= RELAY_TURN:
                turn = 0
                gevent.sleep(TURN_PAUSE_S)
            if mode == 2:
                stream.send(b"%x\r\n%s\r\n" % (len(data), data), mono() + timeout)
            else:
                stream.send(data, mono() + timeout)
        if mode == 2:
            stream.send(b"0\r\n\r\n", mono() + timeout)
        _done(ep, up, ex, sent)
        return keep
    except OSError:
        if not tunnel:
            ep.pool.release(up, False)
        ex.bytes = sent
        raise ClientGone("client went away mid-response") from None
    except BaseException:
        if not tunnel:
            ep.pool.release(up, False)
        ex.bytes = sent
        raise


def _done(ep: EndpointRT, up: UpConn, ex: Exchange, sent: int) -> None:
    ex.bytes = sent
    ep.pool.release(up, up.reusable)


def _tunnel(conn: Connection, up: UpConn) -> None:
    client = conn.reader.stream.to_gevent()  # blocking-style gevent I/O for the pumps
    upstream = up.sock
    up.stream.quiet()
    client.settimeout(None)
    upstream.settimeout(None)
    if conn.reader.tail:
        upstream.sendall(conn.reader.tail)
    if up.tail:
        client.sendall(up.tail)

    def pump(src: socket.socket, dst: socket.socket) -> None:
        turn = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                turn += len(data)
                if turn >= RELAY_TURN:
                    turn = 0
                    gevent.sleep(TURN_PAUSE_S)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    back = gevent.spawn(pump, upstream, client)
    try:
        pump(client, upstream)
        back.join(timeout=conn.reader.keepalive_timeout)
    finally:
        back.kill(block=False)
