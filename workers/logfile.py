"""An access-log destination that never blocks a worker: a bounded buffer and a writer thread.

Owns: ``AccessLogFile`` — the descriptor of one access-log path (``-``: stdout), the buffer
of lines not written yet (at most ``access_log.buffer`` bytes; a line that does not fit is dropped
and counted in ``workers.metrics``), the thread that writes them (a blocking ``os.write`` of
a regular file, a pipe or a FIFO waits there, never in the gevent hub), reopening the path
for logrotate, and closing.
Must not: format lines (``workers.accesslog``) or decide which file a generation logs to
(``workers.state``).

Threads: the worker patches gevent without ``thread``, so this is a real OS thread; it
touches only the deque (append / popleft are atomic), a ``threading.Event``, ``os.write``
and its own counter. The request path only appends and, when the writer sleeps, sets the
event. The writer closes the descriptor itself, after its last write, so a descriptor
number is never closed under it and reused by another file.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque

from workers.metrics import METRICS

WRITE_MAX = 256 * 1024  # lines joined into one write
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class AccessLogFile:
    __slots__ = (
        "path",
        "buffer",
        "fd",
        "lines",
        "queued",
        "written",
        "wake",
        "idle",
        "closing",
        "thread",
        "failed",
    )

    def __init__(self, path: str, buffer: int) -> None:
        self.path = path
        self.buffer = buffer  # bytes of lines that may wait; the generation may change it
        self.fd = 1 if path == "-" else os.open(path, _FLAGS, 0o640)
        self.lines: deque[bytes] = deque()
        self.queued = 0  # bytes appended (written only by the request path)
        self.written = 0  # bytes taken by the writer (written only by the writer)
        self.wake = threading.Event()
        self.idle = True
        self.closing = False
        self.failed = False  # a write failed: said once on stderr
        self.thread = threading.Thread(
            target=self._run, name=f"pavis access log {path}", daemon=True
        )
        self.thread.start()

    def write(self, line: bytes) -> None:
        """Queue ``line``; dropped (and counted) when the buffer is full or closed."""
        if self.closing or self.queued - self.written + len(line) > self.buffer:
            METRICS.access_log_dropped += 1
            return
        self.queued += len(line)
        self.lines.append(line)
        if self.idle:
            self.wake.set()

    def _run(self) -> None:
        lines = self.lines
        while True:
            if not lines:
                if self.closing:
                    break
                self.idle = True
                self.wake.wait(1.0)
                self.wake.clear()
                self.idle = False
                continue
            parts = []
            size = 0
            while lines and size < WRITE_MAX:
                line = lines.popleft()
                parts.append(line)
                size += len(line)
            self._write_all(b"".join(parts))
            self.written += size
        if self.fd > 2:
            os.close(self.fd)
        self.fd = -1

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except InterruptedError:
                continue
            except OSError as exc:  # a full disk, a closed pipe: the lines are lost, not the worker
                if not self.failed:
                    self.failed = True
                    print(f"pavis worker: access log {self.path}: {exc.strerror}; lines are "
                          "being lost", file=sys.stderr)  # fmt: skip
                return
            view = view[n:]
        self.failed = False

    def reopen(self) -> None:
        """Write to a file at ``path`` again (after logrotate moved the old one): dup2 swaps
        the descriptor in one step, so no line is written to a closed one. OSError: the old
        file stays in use."""
        if self.fd > 2:
            fd = os.open(self.path, _FLAGS, 0o640)
            try:
                os.dup2(fd, self.fd, inheritable=False)
            finally:
                os.close(fd)

    def close(self, wait: float = 0.0) -> None:
        """No more lines; the writer writes what is queued, then closes the file. ``wait``:
        seconds to wait for that (a worker that exits) — a writer stuck on a destination
        that accepts nothing is left behind, and the process exit ends it."""
        self.closing = True
        self.wake.set()
        if wait > 0:
            self.thread.join(wait)
