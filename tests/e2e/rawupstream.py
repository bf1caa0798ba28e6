"""A raw upstream for framing tests: it writes exactly the bytes a test chooses and records
exactly the bytes it receives.

Owns: a listening socket on a free 127.0.0.1 port served by a thread in the test process,
one handler call per accepted connection, and the record of what each connection received.
Must not: parse HTTP beyond finding where one request ends (head, then a Content-Length or
chunked body), so a test sees the proxy's bytes unchanged.

The default handler answers ``/victim/<token>`` (and anything else) with a well-framed 200
whose body is the request path: a victim request that gets another path's body proves a
response crossed clients.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class Closed(Exception):
    """The proxy closed the connection before a whole request arrived."""


@dataclass
class RawConn:
    sock: socket.socket
    number: int
    received: bytearray = field(default_factory=bytearray)
    buf: bytearray = field(default_factory=bytearray)

    def _more(self, deadline: float) -> None:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise Closed("timed out waiting for the proxy") from None
        except OSError as exc:
            raise Closed(str(exc)) from None
        if not data:
            raise Closed("the proxy closed the connection")
        self.received += data
        self.buf += data

    def read_request(self, timeout: float = 5.0) -> bytes:
        """One whole request (head and body, as sent); raises Closed."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._more(deadline)
        end = self.buf.index(b"\r\n\r\n") + 4
        head = bytes(self.buf[:end])
        lower = head.lower()
        length = 0
        chunked = b"\r\ntransfer-encoding: chunked" in lower
        for line in lower.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if chunked:
            pos = end
            while True:
                while b"\r\n" not in self.buf[pos:]:
                    self._more(deadline)
                eol = self.buf.index(b"\r\n", pos)
                size = int(bytes(self.buf[pos:eol]).split(b";")[0], 16)
                pos = eol + 2
                if size == 0:
                    while b"\r\n\r\n" not in self.buf[pos - 2 :]:
                        self._more(deadline)
                    pos = self.buf.index(b"\r\n\r\n", pos - 2) + 4
                    break
                while len(self.buf) < pos + size + 2:
                    self._more(deadline)
                pos += size + 2
            total = pos
        else:
            total = end + length
            while len(self.buf) < total:
                self._more(deadline)
        req = bytes(self.buf[:total])
        del self.buf[:total]
        return req

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """Whether the proxy closes this connection within ``timeout`` (bytes are recorded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._more(deadline)
            except Closed:
                return True
        return False


def path_of(request: bytes) -> bytes:
    return request.split(b" ", 2)[1]


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def echo_path(conn: RawConn) -> None:
    """The default handler: every request gets its own path back, keep-alive."""
    while True:
        req = conn.read_request()
        conn.send(ok(path_of(req)))


Handler = Callable[[RawConn], None]


class RawUpstream:
    """``handler(conn)`` runs in a thread per accepted connection; ``Closed`` ends it quietly.

    ``handler`` may be replaced between requests (``upstream.handler = ...``); connections
    accepted later use the new one. Every connection's bytes stay in ``conns``.
    """

    def __init__(self, handler: Handler = echo_path) -> None:
        self.handler = handler
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port: int = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.conns: list[RawConn] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                conn = RawConn(sock, len(self.conns))
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, self.handler), daemon=True).start()

    def _serve(self, conn: RawConn, handler: Handler) -> None:
        try:
            handler(conn)
        except Closed:
            pass
        except OSError:
            pass
        except BaseException as exc:  # a broken handler is the test's bug: keep it visible
            self.errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                conn.sock.close()

    def received(self) -> bytes:
        """Every byte any connection received, in connection order."""
        with self._lock:
            return b"".join(bytes(c.received) for c in self.conns)

    def reset(self, handler: Handler = echo_path) -> None:
        """Forget the record and set the handler of later connections (between vectors)."""
        with self._lock:
            self.conns = []
            self.handler = handler

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            for c in self.conns:
                with contextlib.suppress(OSError):
                    c.sock.close()
        self._thread.join(2)
        assert not self.errors, self.errors

    def __enter__(self) -> RawUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
