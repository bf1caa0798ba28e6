"""The TLS handshake of a downstream connection, bounded and quiet.

Owns: wrapping an accepted connection of a TLS listener in the listener's current server
context (swapped by a flip that changes its certificates), within the generation's
``header_timeout``, and what happens when a handshake fails.

Why not gevent's StreamServer ``ssl_context``: it handshakes with no deadline, so a client
that connects and sends nothing, or half a ClientHello, held a connection and its greenlet
for as long as it liked (nginx bounds the handshake by ``client_header_timeout``); and every
failed handshake — a scanner, plain HTTP sent to the TLS port, a client certificate refused —
printed a traceback, so a hostile client could fill the log at will. Here a failure is one
line per ``QUIET_S`` per listener, saying how many there were.
Must not: read or write HTTP, or choose certificates (``workers.tls`` does, by SNI).
"""

from __future__ import annotations

import contextlib
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

from gevent import Timeout

QUIET_S = 10.0


class TlsHandshake:
    """A StreamServer handle: handshake, then ``serve(tls_socket, address)``."""

    def __init__(
        self,
        listener: str,
        context: Any,
        timeout: Callable[[], float],
        serve: Callable[[Any, object], None],
    ) -> None:
        self.listener = listener
        self.context = context  # replaced by a flip that changes this listener's certificates
        self.timeout = timeout  # the current generation's header_timeout, in seconds
        self.serve = serve
        self.failed = 0  # since the last line
        self.said = 0.0

    def __call__(self, sock: Any, address: object) -> None:
        # One deadline for the whole handshake: a socket timeout bounds each wait only, so a
        # client dripping a byte of ClientHello just inside it would never run out.
        deadline = Timeout.start_new(self.timeout(), TimeoutError("handshake deadline"))
        try:
            tls = self.context.wrap_socket(sock, server_side=True)
        except (OSError, ssl.SSLError, ValueError) as exc:  # TimeoutError is an OSError
            with contextlib.suppress(OSError):
                sock.close()
            self._failed(exc, address)
            return
        finally:
            deadline.close()
        try:
            tls.settimeout(None)  # from here on the request path sets its own deadlines
            self.serve(tls, address)
        finally:
            with contextlib.suppress(OSError):
                tls.close()

    def _failed(self, exc: BaseException, address: object) -> None:
        self.failed += 1
        now = time.monotonic()
        if self.said and now - self.said < QUIET_S:
            return
        self.said = now
        if isinstance(exc, TimeoutError):
            why = "no handshake within header_timeout"
        else:
            why = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        peer = address[0] if isinstance(address, tuple) and address else address
        more = f" ({self.failed - 1} more since the last such line)" if self.failed > 1 else ""
        self.failed = 0
        print(
            f"pavis worker: listener {self.listener}: TLS handshake from {peer} failed: {why}{more}",
            file=sys.stderr,
        )
