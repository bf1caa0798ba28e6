"""The control socket server: a Unix stream socket (mode 0600) answering JSON requests.

Owns: the listening socket, framing (one JSON line in, one JSON line out), turning handler
exceptions into refusals, and the ``Reply`` through which a handler answers and learns
whether its client is still there. Connections go through ``intake``: a request line must
arrive within ``LINE_DEADLINE``, a bounded number of requests run at once (one thread
each), and an answer the client does not read is given up after ``SEND_TIMEOUT`` — no
client can hold a reload back. Must not: decide anything — every request is passed to the
supervisor's handler, which serialises mutations itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

from pavis.errors import EXIT_USAGE, PavisError
from pavis.supervisor.intake import Intake

log = logging.getLogger("pavis.control")

LINE_DEADLINE = 5.0  # seconds for a client to send its request line
SEND_TIMEOUT = 5.0  # seconds for a client to take its answer
MAX_REQUEST = 1024 * 1024  # a request line is a small JSON object
MAX_PENDING = 64  # clients still sending their line (the oldest is dropped past it)
MAX_RUNNING = 64  # requests being handled; past it the answer is "busy"
# Closed, not merely half-closed: a client that shuts down its sending side after the
# request (``nc -N``) still waits for the answer (POLLRDHUP alone).
_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL


def refusal(error: str, reason: str, exit_code: int = 1) -> dict[str, Any]:
    return {"ok": False, "error": error, "reason": reason, "exit_code": exit_code}


class Reply:
    """The answer channel of one request: call it once with the answer (later calls are
    ignored); ``gone()`` is True once the client has closed its connection."""

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn
        self._answered = threading.Event()

    @property
    def answered(self) -> bool:
        return self._answered.is_set()

    def __call__(self, answer: dict[str, Any]) -> None:
        if self._answered.is_set():
            return
        self._answered.set()
        with contextlib.suppress(OSError):
            self._conn.settimeout(SEND_TIMEOUT)
            self._conn.sendall(json.dumps(answer).encode() + b"\n")

    def gone(self) -> bool:
        poller = select.poll()
        poller.register(self._conn.fileno(), select.POLLIN)
        return any(ev & _GONE for _, ev in poller.poll(0))


Respond = Reply
Handler = Callable[[dict[str, Any], Reply], None]


class ControlServer:
    """Accepts on ``path`` in a background thread until ``close()``."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self.sock = _bind(path)
        self._ino = os.stat(path).st_ino
        self._intake = self._make_intake()

    def _make_intake(self) -> Intake:
        return Intake(
            self.sock, "control", terminator=b"\n", max_head=MAX_REQUEST,
            deadline=LINE_DEADLINE, max_pending=MAX_PENDING, max_running=MAX_RUNNING,
            handle=self._connection, busy=_busy,
        )  # fmt: skip

    def start(self) -> None:
        self._intake.start()

    def fileno(self) -> int:
        return self.sock.fileno()

    def missing(self) -> bool:
        """True when the socket file is gone or replaced (someone deleted it)."""
        try:
            return os.stat(self.path).st_ino != self._ino
        except FileNotFoundError:
            return True
        except OSError:
            return False  # cannot tell (e.g. a directory became unreadable): leave it

    def rebind(self) -> None:
        """Listen on a new socket file at ``path`` (the old one was deleted or replaced)."""
        sock = _bind(self.path)
        self._intake.close()
        self.sock.close()
        self.sock = sock
        self._ino = os.stat(self.path).st_ino
        self._intake = self._make_intake()
        self._intake.start()

    def close(self) -> None:
        self._intake.close()
        self.sock.close()
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._ino:  # never another's socket file
                os.unlink(self.path)

    def child_fds(self) -> list[int]:
        """Descriptors a forked worker must not keep (the listening socket aside)."""
        return self._intake.child_fds()

    def _connection(self, conn: socket.socket, line: bytes) -> None:
        respond = Reply(conn)
        try:
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
        except Exception as exc:  # a bug must not kill the control thread; report it
            log.exception("control request failed")
            respond(refusal("internal", f"internal error: {exc!r}"))
        finally:
            if not respond.answered:
                respond(refusal("internal", "the request got no answer"))


def _busy(conn: socket.socket) -> None:
    answer = refusal("busy", f"{MAX_RUNNING} control requests are in progress; try again")
    conn.send(json.dumps(answer).encode() + b"\n")


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
