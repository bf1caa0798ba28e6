"""Accepting client connections on a plain-TCP listener.

Owns: the read watcher of one listening socket, taking one connection per wake-up, and the
raw greenlets that run the connection handler on the bare ``_socket.socket`` (reused from
one connection to the next). gevent's StreamServer does the same with more machinery per connection —
a gevent socket object with its own two io watchers (``workers.io.Stream`` keeps its own),
a ``Greenlet`` with link bookkeeping, and a wrapper that closes the socket again — which on a
Connection: close benchmark was a visible share of the per-connection cost. TLS listeners
keep StreamServer: its handshake handling is the part worth having there.

How many connections per wake-up: every worker polls the same listener, and a worker that
accepted a whole burst would keep all of it for the connections' lifetime while the others
idle (wrk's 50 opening connections often all went to one worker). One per wake-up, like
nginx's ``multi_accept off``, spreads them, but then a worker under ``Connection: close``
traffic runs one whole event-loop iteration per connection (measured: one ``epoll_wait``
per request against one per 15 with keep-alive). So the first connection of a wake-up is
always taken, and more, up to ``ACCEPT_MAX``, only while this worker holds no more open
connections than the least loaded other worker, plus an eighth, plus one (``Load``,
published in shared memory).

Must not: read or write client bytes.
"""

from __future__ import annotations

import errno
import socket
import sys
import traceback
from _socket import socket as RawSocket  # the C type: gevent's monkey patch leaves it alone
from collections.abc import Callable
from typing import Any

from gevent import get_hub, getcurrent, spawn_raw  # type: ignore[import-untyped,unused-ignore]

from shm.control import NO_WORKER

# Out of descriptors or memory: stop accepting for a moment instead of spinning on a
# listener that stays readable (the connections wait in the backlog meanwhile).
_PAUSE_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
PAUSE_S = 0.1
IDLE_MAX = 128  # parked handler greenlets kept per listener (≈ 20 KiB each)

ACCEPT_MAX = 16

Handler = Callable[[RawSocket, Any], None]


class Load:
    """This worker's open client connections, and the fewest any other worker holds.

    ``words``, ``mine``, ``others``: from ``shm.Subscriber.connections`` — this worker's
    count is written there at every change, the others' are read when a wake-up could take
    more than one connection. Without them (a worker outside a supervisor, tests) no other
    worker is known.
    """

    __slots__ = ("n", "words", "mine", "others")

    def __init__(
        self, words: memoryview | None = None, mine: int = 0, others: list[int] | None = None
    ) -> None:
        self.n = 0
        self.words = words
        self.mine = mine
        self.others = others or []

    def opened(self) -> None:
        self.n += 1
        if self.words is not None:
            self.words[self.mine] = self.n

    def closed(self) -> None:
        self.n -= 1
        if self.words is not None:
            self.words[self.mine] = self.n

    def least_other(self) -> int:
        """The fewest connections a live other worker holds (NO_WORKER: there is none)."""
        least = NO_WORKER
        words = self.words
        if words is not None:
            for i in self.others:
                c = words[i]
                if c < least:
                    least = c
        return least

    def room(self) -> int:
        """How many open connections this worker may hold before it stops taking extra
        ones in a wake-up: the least loaded other worker's count plus an eighth, plus one."""
        least = self.least_other()
        return least + 1 + (least >> 3)


class Acceptor:
    __slots__ = (
        "listener", "handler", "load", "watcher", "timer", "family", "idle", "hub", "closed",
    )  # fmt: skip

    def __init__(self, listener: socket.socket, handler: Handler, load: Load) -> None:
        """Takes over ``listener`` (its descriptor moves to a bare ``_socket.socket``).
        Every connection accepted is counted in ``load`` (``Load.opened``); whoever ends it
        must call ``Load.closed``."""
        family, type_, proto = listener.family, listener.type, listener.proto
        self.listener = RawSocket(family, type_, proto, listener.detach())
        self.listener.setblocking(False)
        self.family = family
        self.handler = handler
        self.load = load
        self.hub = get_hub()
        loop = self.hub.loop
        self.watcher = loop.io(self.listener.fileno(), 1)
        self.timer = loop.timer(PAUSE_S)
        # Handler greenlets parked between connections. A new greenlet costs CPython a fresh
        # interpreter data stack (an mmap, and an munmap when it ends): measured at ≈ 9 % of
        # a worker's CPU with Connection: close traffic.
        self.idle: list[Any] = []
        self.closed = False

    def start(self) -> None:
        self.watcher.start(self._accept)

    def close(self) -> None:
        self.closed = True
        self.timer.stop()
        self.watcher.stop()
        self.watcher.close()
        self.listener.close()
        idle, self.idle = self.idle, []
        for glet in idle:  # let parked handlers end
            self.hub.loop.run_callback(glet.switch, None, None)

    def _accept(self) -> None:  # runs in the hub: never block, never raise
        load = self.load
        room = 0
        for k in range(ACCEPT_MAX):
            if k == 1:
                room = load.room()
            if k and load.n >= room:
                return  # the rest is the other workers' (or the next wake-up's)
            try:
                fd, addr = self.listener._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                return  # none left, or another worker took it
            except OSError as exc:
                if exc.errno in _PAUSE_ERRNOS:
                    print(f"pavis worker: accept: {exc}; pausing {PAUSE_S}s", file=sys.stderr)
                    self.watcher.stop()
                    self.timer.start(self.start)
                return  # ECONNABORTED and the like: that client is gone, the next one is not
            sock = RawSocket(self.family, socket.SOCK_STREAM, 0, fd)
            sock.setblocking(False)
            load.opened()
            if self.idle:
                self.hub.loop.run_callback(self.idle.pop().switch, sock, addr)
            else:
                spawn_raw(self._serve, sock, addr)

    def _serve(self, sock: Any, addr: Any) -> None:
        """A handler greenlet: serve a connection, park, serve the next one handed over."""
        handler = self.handler
        hub = self.hub
        load = self.load
        while sock is not None:
            try:
                handler(sock, addr)
            except Exception:  # a raw greenlet's exception would land in the hub
                traceback.print_exc()
                sock.close()
            load.closed()
            sock = addr = None
            if self.closed or len(self.idle) >= IDLE_MAX:
                return
            self.idle.append(getcurrent())
            sock, addr = hub.switch()
