"""Bounded intake for the supervisor's own listeners (the control socket, the admin listener).

Owns: one selector loop per listener that accepts, reads each client's request head against
a deadline and a size bound, and hands complete heads to a handler thread — at most
``max_running`` at once. Waiting clients are capped at ``max_pending``: past it, and when
accept fails for want of descriptors, the oldest waiting client is dropped, so a flood of
half-sent requests can neither exhaust threads or descriptors nor lock out a prompt client.
Must not: interpret requests (the handler does) or log per connection — conditions go
through ``events`` (one line per interval, a counter each).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from pavis.supervisor import events

log = logging.getLogger("pavis.supervisor")

Handle = Callable[[socket.socket, bytes], None]  # in a thread; Intake closes the socket
Busy = Callable[[socket.socket], None]  # in the loop, non-blocking; Intake closes it
ACCEPT_BATCH = 64  # accepts per wake-up, so reading waiting clients is never starved
PAUSE_S = 0.1  # accepting pauses this long when descriptors run out and nobody can be shed
_FD_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@dataclass
class _Pending:
    conn: socket.socket
    deadline: float
    buf: bytearray = field(default_factory=bytearray)


class Intake:
    """Serve ``sock`` in a background thread until ``close()``. ``what`` names the listener
    in log lines and event counters (``<what>_...``)."""

    def __init__(
        self,
        sock: socket.socket,
        what: str,
        *,
        terminator: bytes,
        max_head: int,
        deadline: float,
        max_pending: int,
        max_running: int,
        handle: Handle,
        busy: Busy,
    ) -> None:
        self.sock = sock
        self.what = what
        self._terminator = terminator
        self._max_head = max_head
        self._deadline = deadline
        self._max_pending = max_pending
        self._max_running = max_running
        self._handle = handle
        self._busy = busy
        self._running = 0
        self._open: set[int] = set()  # connection descriptors, for children to drop
        self._lock = threading.Lock()
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._serve, name=what, daemon=True)
        sock.setblocking(False)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        os.close(self._stop_r)
        os.close(self._stop_w)

    def child_fds(self) -> list[int]:
        """Descriptors a forked worker must not keep (the listening socket aside)."""
        with self._lock:
            return [self._stop_r, self._stop_w, *self._open]

    # ------------------------------------------------------------------ loop

    def _serve(self) -> None:
        pending: OrderedDict[int, _Pending] = OrderedDict()  # oldest first
        paused_until = 0.0
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ, -1)
            sel.register(self._stop_r, selectors.EVENT_READ, -2)
            while True:
                now = time.monotonic()
                if paused_until and now >= paused_until:
                    sel.register(self.sock, selectors.EVENT_READ, -1)
                    paused_until = 0.0
                wake = [p.deadline for p in list(pending.values())[:1]]
                wake += [paused_until] if paused_until else []
                timeout = max(0.0, min(wake) - now) if wake else None
                for key, _ in sel.select(timeout):
                    if key.data == -2:
                        for fd in list(pending):
                            self._drop(sel, pending, fd)
                        return
                    if key.data == -1:
                        if not self._accept(sel, pending):
                            sel.unregister(self.sock)
                            paused_until = time.monotonic() + PAUSE_S
                    elif key.data in pending:
                        self._read(sel, pending, key.data)
                now = time.monotonic()
                while pending:
                    fd, first = next(iter(pending.items()))
                    if first.deadline > now:
                        break
                    events.note(
                        log, logging.INFO, f"{self.what}_head_timeout",
                        "%s: a client sent no complete request in %.0f s; dropped",
                        self.what, self._deadline,
                    )  # fmt: skip
                    self._drop(sel, pending, fd)

    def _accept(self, sel: selectors.BaseSelector, pending: OrderedDict[int, _Pending]) -> bool:
        """Accept what is waiting; False when accepting must pause (no descriptor to shed)."""
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return True
            except OSError as exc:
                if exc.errno not in _FD_ERRORS:
                    continue  # ECONNABORTED and the like: that client is gone already
                events.note(
                    log, logging.WARNING, f"{self.what}_accept_{errno.errorcode[exc.errno]}",
                    "%s: accept: %s; shedding the oldest waiting client", self.what, exc.strerror,
                )  # fmt: skip
                if not pending:
                    return False
                self._drop(sel, pending, next(iter(pending)))
                return True
            conn.setblocking(False)
            if len(pending) >= self._max_pending:
                events.note(
                    log, logging.WARNING, f"{self.what}_shed",
                    "%s: %d clients wait for their request to arrive; dropping the oldest",
                    self.what, len(pending),
                )  # fmt: skip
                self._drop(sel, pending, next(iter(pending)))
            fd = conn.fileno()
            pending[fd] = _Pending(conn, time.monotonic() + self._deadline)
            with self._lock:
                self._open.add(fd)
            sel.register(conn, selectors.EVENT_READ, fd)
        return True

    def _read(
        self, sel: selectors.BaseSelector, pending: OrderedDict[int, _Pending], fd: int
    ) -> None:
        p = pending[fd]
        try:
            chunk = p.conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            events.note(
                log, logging.INFO, f"{self.what}_hangup",
                "%s: a client hung up before its request was complete", self.what,
            )  # fmt: skip
            self._drop(sel, pending, fd)
            return
        p.buf += chunk
        end = p.buf.find(self._terminator)
        if end < 0:
            if len(p.buf) > self._max_head:
                events.note(
                    log, logging.WARNING, f"{self.what}_too_long",
                    "%s: a request head over %d bytes; dropped", self.what, self._max_head,
                )  # fmt: skip
                self._drop(sel, pending, fd)
            return
        sel.unregister(p.conn)
        del pending[fd]
        head = bytes(p.buf[:end])
        with self._lock:
            full = self._running >= self._max_running
            if not full:
                self._running += 1
        if not full:
            try:
                threading.Thread(
                    target=self._run, args=(p.conn, head), name=f"{self.what}-req", daemon=True
                ).start()
                return
            except RuntimeError:  # no thread can be started now
                with self._lock:
                    self._running -= 1
        events.note(
            log, logging.WARNING, f"{self.what}_busy",
            "%s: %d requests in progress; answering busy", self.what, self._max_running,
        )  # fmt: skip
        with contextlib.suppress(OSError):
            self._busy(p.conn)
        self._forget(p.conn)

    def _run(self, conn: socket.socket, head: bytes) -> None:
        try:
            self._handle(conn, head)
        except OSError:
            events.note(
                log, logging.INFO, f"{self.what}_hangup",
                "%s: a client hung up before its answer was sent", self.what,
            )  # fmt: skip
        except Exception:  # a bug must not kill the thread silently; one line per interval
            events.note(log, logging.ERROR, f"{self.what}_error", "%s: request failed", self.what)
            log.debug("%s request failed", self.what, exc_info=True)
        finally:
            self._forget(conn)
            with self._lock:
                self._running -= 1

    def _drop(
        self, sel: selectors.BaseSelector, pending: OrderedDict[int, _Pending], fd: int
    ) -> None:
        p = pending.pop(fd)
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(p.conn)
        self._forget(p.conn)

    def _forget(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.discard(conn.fileno())
        conn.close()
