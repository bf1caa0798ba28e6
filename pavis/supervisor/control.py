"""The control socket server: a Unix stream socket (mode 0600) answering JSON requests.

Owns: the listening socket, one thread per connection, framing (one JSON line in, one JSON
line out) and turning handler exceptions into refusals. Must not: decide anything — every
request is passed to the supervisor's handler, which serialises mutations itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any

from pavis.control_client import MAX_LINE
from pavis.errors import EXIT_USAGE, PavisError

log = logging.getLogger("pavis.control")

Respond = Callable[[dict[str, Any]], None]
Handler = Callable[[dict[str, Any], Respond], None]


def refusal(error: str, reason: str, exit_code: int = 1) -> dict[str, Any]:
    return {"ok": False, "error": error, "reason": reason, "exit_code": exit_code}


class ControlServer:
    """Accepts on ``path`` in a background thread until ``close()``."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self.sock = _bind(path)
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._stop_r)
        os.close(self._stop_w)

    def child_fds(self) -> list[int]:
        """Descriptors a forked worker must not keep."""
        return [self.sock.fileno(), self._stop_r, self._stop_w]

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            sel.register(self._stop_r, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj == self._stop_r:
                        return
                    try:
                        conn, _ = self.sock.accept()
                    except OSError:
                        continue
                    threading.Thread(
                        target=self._connection, args=(conn,), name="control-conn", daemon=True
                    ).start()

    def _connection(self, conn: socket.socket) -> None:
        answered = threading.Event()

        def respond(answer: dict[str, Any]) -> None:
            if answered.is_set():
                return
            answered.set()
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(answer).encode() + b"\n")

        try:
            conn.settimeout(10)
            line = _read_line(conn)
            conn.settimeout(None)
            try:
                req = json.loads(line)
            except ValueError:
                req = None
            if not isinstance(req, dict) or not isinstance(req.get("op"), str):
                respond(refusal("usage", "a request is one JSON object with an 'op'", EXIT_USAGE))
                return
            self._handler(req, respond)
        except PavisError as exc:
            respond(refusal(exc.code, str(exc), exc.exit_code))
        except OSError as exc:
            log.info("control connection failed: %s", exc)
        except Exception as exc:  # a bug must not kill the control thread; report it
            log.exception("control request failed")
            respond(refusal("internal", f"internal error: {exc!r}"))
        finally:
            if not answered.is_set():
                respond(refusal("internal", "the request got no answer"))
            conn.close()


def _read_line(conn: socket.socket) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_LINE:
            raise PavisError("request too long")
    return bytes(buf.split(b"\n", 1)[0])


def _bind(path: str) -> socket.socket:
    """Bind a 0600 Unix socket at ``path``, replacing a stale one but never a live one."""
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens: a leftover of a dead supervisor
        else:
            raise PavisError(f"control socket {path} is in use by a running supervisor")
        finally:
            probe.close()
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    except OSError as exc:
        raise PavisError(
            f"cannot create the directory of the control socket {path}: {exc.strerror} "
            "(choose another path with --control)"
        ) from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)  # no window in which the socket is connectable by others
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise PavisError(
            f"cannot create the control socket {path}: {exc.strerror} (choose one with --control)"
        ) from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(64)
    return sock
