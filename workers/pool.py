"""Per-endpoint upstream connection pool of one worker.

Owns: idle keep-alive connections (LIFO, closed after ``idle_timeout``), the cap on
connections (``max_connections``), and the queue of requests waiting for one (at most
``max_pending``; beyond it the request overflows → 503).

How many idle connections stay: ``max_idle``, and for ``surplus_timeout`` more than that.
Closing every connection returned beyond ``max_idle`` at once (nginx's ``keepalive N``) makes
a pool churn whenever more requests are in flight than ``max_idle``: the next request finds
the idle list empty and connects again. At 100 keep-alive clients on two workers that was one
connect and close per 8 requests (nginx's, one per 7). So a connection returned
beyond ``max_idle`` stays idle like the others (LIFO, so the deepest ones are the least
recently used), and the oldest idle connections beyond ``max_idle`` are closed once idle for
``surplus_timeout`` — when a request is released, or by a timer when traffic stops, as
HAProxy's ``pool-purge-delay`` purges. ``surplus_timeout: 0s`` keeps nginx's behaviour;
``max_idle: 0`` keeps no connection idle at all.
Must not: pick endpoints or speak HTTP; it hands out and takes back ``UpConn`` objects.
"""

from __future__ import annotations

import select
import time
from collections import deque
from typing import Any

from gevent import get_hub
from gevent.event import Event
from gevent.monkey import get_original

from pavis.schema import Pool as PoolConfig
from pavis.schema import TlsOff, UpstreamTls
from workers.upstream import ConnectFailed, UpConn, connect, literal_family

# The C poll, not gevent's (monkey-patched) one: a zero-timeout poll never waits. One poll
# object for the worker: register and unregister are dict operations, only poll() is a call
# into the kernel. Against recv(MSG_PEEK), which raises BlockingIOError on every healthy
# connection, it took ~1 µs instead of ~2 per request.
_POLL = get_original("select", "poll")()
_STALE = select.POLLIN | select.POLLERR | select.POLLHUP | select.POLLNVAL


def _peek_stale(conn: UpConn) -> bool:
    """A close or bytes that arrived in this loop iteration, before the idle watcher ran."""
    fd = conn.stream.raw.fileno()
    if fd < 0:
        return True
    _POLL.register(fd, select.POLLIN)
    try:
        ready = _POLL.poll(0)
    finally:
        _POLL.unregister(fd)
    return bool(ready) and bool(ready[0][1] & _STALE)


def _tls_readable(conn: UpConn) -> bool:
    """A TLS connection cannot be watched while idle (its stream is not ours to poll), so it
    is checked when taken up: decrypted bytes pending, or the socket readable (a close, or
    bytes), mean it is not reused."""
    sock: Any = conn.sock
    try:
        if sock.pending():
            return True
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class PoolOverflow(ConnectFailed):
    """Every connection is busy and the pending queue is full (or the wait timed out)."""

    kind = "overflow"
    status = 503


class Pool:
    __slots__ = (
        "host",
        "port",
        "family",
        "max_connections",
        "max_idle",
        "idle_timeout",
        "max_pending",
        "connect_timeout",
        "tls",
        "idle",
        "active",
        "waiters",
        "retired",
        "surplus_timeout",
        "trimmer",
    )

    def __init__(
        self,
        host: str,
        port: int,
        cfg: PoolConfig,
        connect_timeout_ms: int,
        tls: TlsOff | UpstreamTls,
    ) -> None:
        self.host = host
        self.port = port
        self.family = literal_family(host)
        self.max_connections = cfg.max_connections
        self.max_idle = cfg.max_idle
        self.idle_timeout = cfg.idle_timeout_ms / 1000.0
        self.max_pending = cfg.max_pending
        self.connect_timeout = connect_timeout_ms / 1000.0
        self.tls = tls
        self.idle: list[UpConn] = []
        self.active = 0  # connections handed out or being opened
        self.waiters: deque[Event] = deque()
        self.retired = False
        self.surplus_timeout = cfg.surplus_timeout_ms / 1000.0
        self.trimmer: Any = None  # the timer closing surplus idle connections once traffic stops

    def acquire(self, deadline: float, fresh: bool = False) -> UpConn:
        """A connection to this endpoint: an idle one unless ``fresh``, else a new one."""
        while True:
            if not fresh and self.idle:
                now = time.monotonic()
                idle = self.idle
                while idle:
                    conn = idle.pop()
                    conn.idle_pool = None
                    conn.stream.idle = None
                    if (
                        now - conn.idle_since < self.idle_timeout
                        and not conn.stray
                        and not (_peek_stale(conn) if conn.stream.fast else _tls_readable(conn))
                    ):
                        self.active += 1
                        conn.reused = True
                        return conn
                    conn.close()
            if self.active < self.max_connections:
                break
            if len(self.waiters) >= self.max_pending:
                raise PoolOverflow(f"{self.host}:{self.port}: connection pool is full")
            ev = Event()
            self.waiters.append(ev)
            try:
                woke = ev.wait(max(0.0, min(deadline - time.monotonic(), self.connect_timeout)))
            finally:
                if ev in self.waiters:
                    self.waiters.remove(ev)
            if not woke:
                raise PoolOverflow(f"{self.host}:{self.port}: no connection became free in time")
        self.active += 1
        timeout = min(self.connect_timeout, max(0.001, deadline - time.monotonic()))
        try:
            sock = connect(self.host, self.port, self.family, timeout, self.tls, bare=True)
        except BaseException:
            self.active -= 1
            self._wake()
            raise
        return UpConn(sock)

    def release(self, conn: UpConn, reusable: bool) -> None:
        self.active -= 1
        idle = self.idle
        if (
            reusable
            and not self.retired
            and (len(idle) < self.max_idle or (self.surplus_timeout > 0 and self.max_idle > 0))
        ):
            now = time.monotonic()
            conn.idle_since = now
            idle.append(conn)
            conn.idle_pool = self
            conn.stream.watch_idle(conn.idle_readable)
            # The oldest idle connection sits at the bottom: expire it lazily here.
            if now - idle[0].idle_since >= self.idle_timeout:
                idle.pop(0).close()
            if len(idle) > self.max_idle:
                self._trim(now)
        else:
            conn.close()
        self._wake()

    def _trim(self, now: float) -> None:
        """Close the idle connections beyond ``max_idle`` that were idle ``surplus_timeout``;
        while some are left, a timer looks again when the oldest of them comes due."""
        idle = self.idle
        surplus = self.surplus_timeout
        while len(idle) > self.max_idle and now - idle[0].idle_since >= surplus:
            idle.pop(0).close()
        if len(idle) > self.max_idle and self.trimmer is None:
            due = max(0.001, idle[0].idle_since + surplus - now)
            timer = self.trimmer = get_hub().loop.timer(due)
            timer.start(self._timed_trim)

    def _timed_trim(self) -> None:  # runs in the hub
        timer, self.trimmer = self.trimmer, None
        if timer is not None:
            timer.close()
        self._trim(time.monotonic())

    def drop(self, conn: UpConn) -> None:
        """An idle connection turned readable (``UpConn.idle_readable``): the upstream closed
        it or sent bytes no request asked for. It leaves the pool now, not when the next
        request would have found it (an upstream's FIN must not sit in CLOSE-WAIT)."""
        if conn in self.idle:
            self.idle.remove(conn)
        conn.close()

    def detach(self, conn: UpConn) -> None:
        """``conn`` leaves the pool for good (an Upgrade tunnel); the caller closes it."""
        self.active -= 1
        self._wake()

    def _wake(self) -> None:
        if self.waiters:
            self.waiters.popleft().set()

    def retire(self) -> None:
        """No generation uses this pool any more: close idle connections now, others on release."""
        self.retired = True
        if self.trimmer is not None:
            self.trimmer.stop()
            self.trimmer.close()
            self.trimmer = None
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()
