"""Bodies across the proxy: a streamed upload, the response relayed with the proxy's own
framing, and the Upgrade tunnel after a 101.

Owns: the framing states of a relayed response (``framing_state``: no body, the upstream's
length, re-chunked, until close, tunnel) and what each writes, coalescing a small answer
into one write, and taking turns: a relay that never has to wait yields to the worker's
other connections every ``RELAY_TURN`` bytes.
Must not: choose endpoints or retry (``workers.proxy``), or build heads beyond choosing the
framing field (``workers.heads``).

Body transfers in either direction use one idle timeout per read (the per-try timeout, or
the route timeout without retries), so a long download that keeps flowing is not cut.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Final

import gevent  # type: ignore[import-untyped,unused-ignore]

from workers.accesslog import Exchange
from workers.balance import EndpointRT
from workers.heads import disposition, response_fields, response_head
from workers.http import ClientGone, Request
from workers.runtime import Client
from workers.state import RouteRT
from workers.upstream import UpConn, UpstreamError, UpstreamReset

# A relay that never has to wait (a fast upstream, a fast client) would keep its worker to
# itself: after this many bytes without a wait it lets every other ready connection run.
RELAY_TURN = 262144
TURN_PAUSE_S = 0.0001  # > 0: gevent.sleep(0) may resume us before the loop polls for I/O

# How a relayed response's body is delimited toward the client.
NO_BODY: Final = 0  # nothing follows the head: HEAD, 1xx, 204, 304
LENGTH: Final = 1  # the upstream's Content-Length, relayed as is
CHUNKED: Final = 2  # no length from the upstream, an HTTP/1.1 client: re-chunked
UNTIL_CLOSE: Final = 3  # no length, an HTTP/1.0 client: the end is the connection's close
TUNNEL: Final = 4  # 101: the connection becomes a byte stream both ways


class Abort(Exception):
    """The response was already started and cannot be completed: close the client."""


def framing_state(status: int, head_only: bool, content_length: int, http10: bool) -> int:
    """The framing of a response with this status to this request (``content_length``:
    the upstream's, -1 if it gave none)."""
    if status == 101:
        return TUNNEL
    if head_only or status in (204, 304) or status < 200:
        return NO_BODY
    if content_length >= 0:
        return LENGTH
    return UNTIL_CLOSE if http10 else CHUNKED


def framing_field(state: int, content_length: int, upgrade: bytes) -> bytes:
    """The head's framing field(s) in ``state``; ``upgrade``: the tunnel's protocol."""
    if state == LENGTH:
        return b"Content-Length: %d\r\n" % content_length
    if state == CHUNKED:
        return b"Transfer-Encoding: chunked\r\n"
    if state == TUNNEL:
        return b"Connection: upgrade\r\nUpgrade: " + upgrade + b"\r\n"
    return b""


def chunk(data: bytes) -> bytes:
    """One piece of a chunked body (never empty: an empty chunk ends the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK: Final = b"0\r\n\r\n"


def send_upstream(up: UpConn, data: bytes, timeout: float, soon: bool = False) -> None:
    """``soon``: the next step is reading the answer, so the write may join the loop
    iteration's batch (``Stream.send_soon``); a failure then shows up in that read."""
    try:
        if soon:
            up.stream.send_soon(data, time.monotonic() + timeout)
        else:
            up.stream.send(data, time.monotonic() + timeout)
    except OSError as exc:
        raise UpstreamReset(f"sending to upstream failed: {exc}") from None


def first_piece(req: Request, data: bytes) -> bytes:
    """The buffered start of a streamed upload, framed as the request's body is."""
    if not data:
        return b""
    return chunk(data) if req.chunked else data


def stream_body(client: Client, req: Request, up: UpConn, first: bytes, timeout: float) -> None:
    """Send a streamed (non-replayable) upload: ``first`` (its head and buffered start),
    then the rest as it arrives from the client."""
    send_upstream(up, first, timeout)
    reader = client.reader
    chunked = req.chunked
    turn = 0
    while True:
        data = reader.read_body(req, timeout)
        if not data:
            break
        send_upstream(up, chunk(data) if chunked else data, timeout)
        turn += len(data)
        if turn >= RELAY_TURN:
            turn = 0
            gevent.sleep(TURN_PAUSE_S)
    if chunked:
        send_upstream(up, LAST_CHUNK, timeout)


def relay(
    client: Client,
    req: Request,
    rt: RouteRT,
    ep: EndpointRT,
    up: UpConn,
    ex: Exchange,
    timeout: float,
) -> bool:
    """Write the upstream's response to the client; returns whether the client connection
    may stay open."""
    status = up.status
    state = framing_state(status, up.head_only, up.content_length, req.http10)
    tunnel = state == TUNNEL  # ``proxy`` let a 101 through only for the upgrade asked for
    fields, upgrade = response_fields(
        up.headers, up.connection, rt.resp_drop, state == NO_BODY or tunnel
    )
    fields.append(rt.resp_extra)
    keep = req.keep_alive and not client.runtime.draining and state != UNTIL_CLOSE
    if tunnel:
        connection = b""
    else:
        if client.reader.broken:
            keep = False  # the client's parser stopped (an upgrade not honoured): close after
        connection = disposition(keep, req.http10)
    framing = framing_field(state, up.content_length, upgrade or req.upgrade or b"")
    parts = response_head(status, fields, framing, connection)
    stream = client.reader.stream
    mono = time.monotonic
    sent = 0
    try:
        if tunnel:
            stream.send(b"".join(parts), mono() + timeout)
            ep.pool.detach(up)  # the socket belongs to the tunnel now, not the pool
            try:
                _tunnel(client, up)
            finally:
                up.close()
            return False
        # The whole answer in one write, and the connection's next step is reading the
        # client's next request: it may join the loop iteration's batch of writes.
        if state == NO_BODY:
            stream.send_soon(b"".join(parts), mono() + timeout)
            _done(ep, up, ex, sent)
            return keep
        # Coalesce the head with whatever body is already here: one write for small replies.
        data = up.read_body(timeout) if up.chunks or up.complete else b""
        whole = up.complete and not up.chunks  # the whole answer is in ``parts`` now
        if state == CHUNKED:
            if data:
                parts.append(chunk(data))
            if whole:
                parts.append(LAST_CHUNK)
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
            stream.send(chunk(data) if state == CHUNKED else data, mono() + timeout)
        if state == CHUNKED:
            stream.send(LAST_CHUNK, mono() + timeout)
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


def _tunnel(client: Client, up: UpConn) -> None:
    reader = client.reader
    down = reader.stream.to_gevent()  # blocking-style gevent I/O for the pumps
    upstream = up.sock = up.stream.to_gevent()  # a bare pooled socket becomes a gevent one
    up.stream.quiet()
    down.settimeout(None)
    upstream.settimeout(None)
    if reader.tail:
        upstream.sendall(reader.tail)
    if up.tail:
        down.sendall(up.tail)

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

    back = gevent.spawn(pump, upstream, down)
    try:
        pump(down, upstream)
        back.join(timeout=reader.keepalive_timeout)
    finally:
        back.kill(block=False)
