"""The forward path's policy: one client request sent to an upstream, tried again when
that is harmless, and handed to the relay once a response head has arrived.

Owns: weighted cluster choice, buffering a small request body (so a retry can resend it)
or streaming a large one, the attempt loop (fixed retry budget, backoff, per-try and route
timeouts, one extra try on a fresh connection when a reused pooled one turns out stale),
and accepting a 101 only for the upgrade asked for.
Must not: parse client bytes (``workers.http``), build heads (``workers.heads``), relay
bodies (``workers.relay``), choose endpoints (``workers.balance``) or hold connections
(``workers.pool``).

Timeouts: the route timeout bounds the time until the response head arrives, over every
attempt; a streamed (non-replayable) upload is sent first and its clock starts after it.
"""

from __future__ import annotations

import random
import time
from bisect import bisect_right

import gevent

from workers.accesslog import Exchange
from workers.balance import ClusterRT, EndpointRT
from workers.http import ClientReader, HttpError, Request
from workers.metrics import METRICS, ClusterCounters
from workers.pool import PoolOverflow
from workers.relay import first_piece, relay, send_upstream, stream_body
from workers.rewrite import request_head
from workers.runtime import Client, new_request_id
from workers.state import RouteRT
from workers.upstream import BadResponse, UpConn, UpstreamError, UpstreamTimeout, peer_address

REPLAY_MAX = 65536  # request bodies up to this size are buffered so a retry can resend them
# Methods a proxy may send twice (RFC 9110 §9.2.2): a replay changes nothing upstream.
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))


def pick_cluster(rt: RouteRT) -> ClusterRT:
    clusters = rt.clusters
    if len(clusters) == 1:
        return clusters[0]
    return clusters[bisect_right(rt.cum, random.randrange(rt.total))]


def request_body(
    reader: ClientReader, req: Request, upgrade: bool, timeout: float
) -> tuple[bytes, bool, bytes]:
    """The request body as it will be sent: (what is buffered, whether the rest is streamed
    after it, the framing field). Small bodies are buffered whole, so a retry can resend
    them; past ``REPLAY_MAX`` the request is sent once, streaming. ``upgrade``: the route
    takes the Upgrade this request asks for (such a request has no body)."""
    if upgrade and req.upgrade is not None:
        return b"", False, b"Connection: upgrade\r\nUpgrade: " + req.upgrade + b"\r\n"
    if not req.has_body:
        return b"", False, b"Content-Length: 0\r\n" if req.content_length == 0 else b""
    if not req.chunked and req.content_length <= REPLAY_MAX:
        body = reader.read_whole_body(req, timeout)
        return body, False, b"Content-Length: %d\r\n" % len(body)
    parts: list[bytes] = []
    size = 0
    while size <= REPLAY_MAX:
        data = reader.read_body(req, timeout)
        if not data:
            body = b"".join(parts)
            return body, False, b"Content-Length: %d\r\n" % len(body)
        parts.append(data)
        size += len(data)
    if req.chunked:
        return b"".join(parts), True, b"Transfer-Encoding: chunked\r\n"
    return b"".join(parts), True, b"Content-Length: %d\r\n" % req.content_length


def forward(client: Client, req: Request, rt: RouteRT, ex: Exchange) -> bool:
    """Proxy ``req``; returns whether the client connection may stay open."""
    body_timeout = rt.per_try
    upgrade = req.upgrade is not None and req.upgrade in rt.upgrades
    body, streaming, framing = request_body(client.reader, req, upgrade, body_timeout)
    request_id = req.request_id or new_request_id()
    ex.request_id = request_id
    head = request_head(req, rt, framing, request_id, client.client_ip, client.proto)
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
                client, req, ep, head, body, streaming, head_only, try_deadline, rt, upgrade, ex,
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
            ex.upstream_status = status
            if not up.peer:
                up.peer = peer_address(up.sock)
            ex.upstream_address = up.peer
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
                    return relay(client, req, rt, ep, up, ex, body_timeout)
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
    client: Client,
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
                stream_body(client, req, up, head + first_piece(req, body), rt.per_try)
                deadline = time.monotonic() + rt.timeout
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise UpstreamTimeout("route timeout")
                send_upstream(up, head + body if body else head, remaining, soon=True)
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
