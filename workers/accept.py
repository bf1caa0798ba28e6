"""Accepting client connections on a plain-TCP listener.

Owns: the read watcher of one listening socket, taking one connection per wake-up, and the
raw greenlets that run the connection handler on the bare ``_socket.socket`` (reused from
one connection to the next). gevent's StreamServer does the same with more machinery per connection —
a gevent socket object with its own two io watchers (``workers.io.Stream`` keeps its own),
a ``Greenlet`` with link bookkeeping, and a wrapper that closes the socket again — which on a
Connection: close benchmark was a visible share of the per-connection cost. TLS listeners
keep StreamServer: its handshake handling is the part worth having there.

One connection per wake-up (nginx's ``multi_accept off``): every worker polls the same
listener, and a worker that accepted a whole burst would keep all of it for the connections'
lifetime while the others idle.

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

# Out of descriptors or memory: stop accepting for a moment instead of spinning on a
# listener that stays readable (the connections wait in the backlog meanwhile).
_PAUSE_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
PAUSE_S = 0.1
IDLE_MAX = 128  # parked handler greenlets kept per listener (≈ 20 KiB each)

Handler = Callable[[RawSocket, Any], None]


class Acceptor:
    __slots__ = ("listener", "handler", "watcher", "timer", "family", "idle", "hub", "closed")

    def __init__(self, listener: socket.socket, handler: Handler) -> None:
        """Takes over ``listener`` (its descriptor moves to a bare ``_socket.socket``)."""
        family, type_, proto = listener.family, listener.type, listener.proto
        self.listener = RawSocket(family, type_, proto, listener.detach())
        self.listener.setblocking(False)
        self.family = family
        self.handler = handler
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
        try:
            fd, addr = self.listener._accept()  # type: ignore[attr-defined]
        except BlockingIOError:
            return  # another worker took it
        except OSError as exc:
            if exc.errno in _PAUSE_ERRNOS:
                print(f"pavis worker: accept: {exc}; pausing {PAUSE_S}s", file=sys.stderr)
                self.watcher.stop()
                self.timer.start(self.start)
            return  # ECONNABORTED and the like: that client is gone, the next one is not
        sock = RawSocket(self.family, socket.SOCK_STREAM, 0, fd)
        sock.setblocking(False)
        if self.idle:
            self.hub.loop.run_callback(self.idle.pop().switch, sock, addr)
        else:
            spawn_raw(self._serve, sock, addr)

    def _serve(self, sock: Any, addr: Any) -> None:
        """A handler greenlet: serve a connection, park, serve the next one handed over."""
        handler = self.handler
        hub = self.hub
        while sock is not None:
            try:
                handler(sock, addr)
            except Exception:  # a raw greenlet's exception would land in the hub
                traceback.print_exc()
                sock.close()
            sock = addr = None
            if self.closed or len(self.idle) >= IDLE_MAX:
                return
            self.idle.append(getcurrent())
            sock, addr = hub.switch()
