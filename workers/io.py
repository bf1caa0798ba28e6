"""Socket reads and writes with deadlines, without gevent's per-call timeout machinery.

Owns: the hot-path I/O of client and upstream connections and the worker's one deadline
watchdog. gevent's ``sendall`` asks the kernel for SO_SNDBUF on every call and every waiting
``recv`` with a timeout builds, starts and cancels a ``gevent.Timeout``; on a 3-byte
keep-alive exchange that was a quarter of the worker's CPU. Here a wait registers an
``_Arm`` (deadline, greenlet) and a single watchdog greenlet, ticking every ``TICK`` seconds,
throws ``TimeoutError`` into waits that outlived their deadline — so deadlines fire up to one
tick late, which is fine for protocol timeouts measured in hundreds of milliseconds.
Also owns the per-iteration write batch (``Stream.send_soon`` and the ``_flush_soon`` hub
callback): writes whose sender reads next leave together before the loop blocks.
Must not: know HTTP. Non-gevent-native sockets (TLS) fall back to gevent's own methods.
"""

from __future__ import annotations

import contextlib
import time
from _socket import socket as RawSocket  # noqa: I001 - the C type, untouched by monkey patching
from socket import SHUT_RDWR
from typing import Any

import gevent
from gevent import get_hub, getcurrent
from gevent import socket as gsocket

RECV = 65536
TICK = 0.05
SOON_MAX = 16384  # send_soon queues writes up to this size; larger ones are written at once
CLOSE_FLUSH_S = 1.0  # how long close() may wait to hand a queued write to the kernel

_armed: set[_Arm] = set()
_soon: list[Stream] = []  # streams with a queued write, flushed once per loop iteration
_watchdog: gevent.Greenlet | None = None


class _Arm:
    __slots__ = ("deadline", "glet", "live")

    def __init__(self, deadline: float, glet: Any) -> None:
        self.deadline = deadline
        self.glet = glet
        self.live = True


def _fire(arm: _Arm) -> None:
    if arm.live:
        arm.live = False
        arm.glet.throw(TimeoutError("timed out"))


def _watch() -> None:
    loop = get_hub().loop
    while True:
        gevent.sleep(TICK)
        if _armed:
            now = time.monotonic()
            for arm in [a for a in _armed if a.deadline <= now]:
                _armed.discard(arm)
                loop.run_callback(_fire, arm)


def _arm(deadline: float, glet: Any) -> _Arm:
    global _watchdog
    if _watchdog is None:
        _watchdog = gevent.spawn(_watch)
    if deadline <= time.monotonic():
        raise TimeoutError("timed out")
    arm = _Arm(deadline, glet)
    _armed.add(arm)
    return arm


def _wait(watcher: Any, deadline: float) -> None:
    arm = _arm(deadline, getcurrent())
    try:
        get_hub().wait(watcher)
    finally:
        arm.live = False
        _armed.discard(arm)


class Stream:
    """A connected socket with deadline-bounded ``recv`` and ``send``.

    Reads wait on a read watcher of our own that stays started between waits: stopping and
    restarting an io watcher costs libev an epoll_ctl per wait (measured: one per read, every
    one failing with EEXIST). When it fires with nobody waiting it stops itself, so a
    readable socket nobody reads never spins the loop. ``close()`` must be used instead of
    closing the socket directly, so the watcher never outlives its descriptor.
    """

    __slots__ = (
        "sock", "raw", "rw", "wev", "fast", "waiter", "hub", "out", "pw", "error", "closing", "ct",
        "idle",
    )  # fmt: skip

    def __init__(self, sock: Any) -> None:
        """``sock``: a bare non-blocking ``_socket.socket`` (accepted client connections), a
        gevent socket (upstream connections), or anything else socket-like (TLS), which
        falls back to its own blocking-with-timeout methods."""
        self.sock = sock
        kind = type(sock)
        self.fast = kind is RawSocket or kind is gsocket.socket
        self.waiter: Any = None
        self.rw: Any = None  # created on the first wait: many connections never wait
        self.wev: Any = None  # likewise: most sends complete at once
        self.out: bytes | None = None  # queued by send_soon, not yet in the kernel
        self.pw: Any = None  # write watcher finishing a queued write the kernel took in part
        self.error: OSError | None = None  # a queued write failed: raised at the next call
        self.closing = False  # close() came while a write was queued: the flush closes
        self.ct: Any = None  # timer bounding such a close when the peer stops reading
        # Called (once, from the hub) when the socket turns readable while nobody reads it:
        # an idle pooled connection that the upstream closed or wrote to.
        self.idle: Any = None
        if self.fast:
            # gevent's own timeout is never consulted on these paths: the fd stays
            # non-blocking and our deadlines apply.
            if kind is RawSocket:
                self.raw = sock
            else:
                self.raw = sock._sock
                self.wev = sock._write_event
            self.hub = get_hub()

    def _ready(self) -> None:  # runs in the hub
        glet = self.waiter
        if glet is None:
            self.rw.stop()
            idle = self.idle
            if idle is not None:
                self.idle = None
                idle()
        else:
            self.waiter = None
            glet.switch()

    def _wait_read(self, deadline: float) -> None:
        rw = self.rw
        if rw is None:
            rw = self.rw = self.hub.loop.io(self.sock.fileno(), 1)
        if not rw.active:
            rw.start(self._ready)
        glet = getcurrent()
        arm = _arm(deadline, glet)
        self.waiter = glet
        try:
            self.hub.switch()
        finally:
            self.waiter = None
            arm.live = False
            _armed.discard(arm)

    def quiet(self) -> None:
        """Stop our read watcher (before handing the socket to code that reads it itself)."""
        if self.rw is not None:
            self.rw.stop()

    def close(self) -> None:
        if self.out is not None and (self.pw is None or not self.pw.active):
            # A queued last answer still in this iteration's batch: the flush writes it,
            # then closes.
            self.closing = True
            self._stop_reading()
            return
        self._write_queued()
        self._close_now()

    def shutdown(self) -> None:
        """End both directions (a draining worker's idle connection), after a queued write:
        the last answer of a keep-alive connection may still be waiting for the flush."""
        self._write_queued()
        self.sock.shutdown(SHUT_RDWR)

    def _write_queued(self) -> None:
        """Before the end: a queued write gets up to CLOSE_FLUSH_S, and its failure is moot."""
        if self.out is not None:
            with contextlib.suppress(OSError, TimeoutError):
                self._settle(time.monotonic() + CLOSE_FLUSH_S)

    def _stop_reading(self) -> None:
        rw = self.rw
        if rw is not None:
            self.rw = None
            rw.stop()
            rw.close()

    def watch_idle(self, callback: Any) -> bool:
        """Call ``callback`` from the hub when the socket turns readable while idle; False
        when this stream cannot watch (TLS: the caller checks when it takes it up again)."""
        if not self.fast:
            return False
        rw = self.rw
        if rw is None:
            rw = self.rw = self.hub.loop.io(self.sock.fileno(), 1)
        self.idle = callback
        if not rw.active:
            rw.start(self._ready)
        return True

    def _close_now(self) -> None:
        self.idle = None
        self.out = None
        self.closing = False
        self._stop_reading()
        if self.pw is not None:
            self.pw.stop()
            self.pw.close()
            self.pw = None
        if self.ct is not None:
            self.ct.stop()
            self.ct.close()
            self.ct = None
        if type(self.sock) is RawSocket and self.wev is not None:
            self.wev.close()  # ours; a gevent socket closes its own
            self.wev = None
        self.sock.close()

    def to_gevent(self) -> Any:
        """The connection as a gevent socket, for code that wants one (the Upgrade tunnel);
        from then on ``close()`` closes that socket."""
        if type(self.sock) is not RawSocket:
            return self.sock
        self.quiet()
        if self.wev is not None:
            self.wev.close()
            self.wev = None
        raw = self.sock
        self.sock = gsocket.socket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        self.raw = self.sock._sock
        self.wev = self.sock._write_event
        return self.sock

    def recv(self, deadline: float, wait_first: bool = False) -> bytes:
        """Up to RECV bytes; b"" at EOF; TimeoutError after ``deadline`` (monotonic)."""
        if self.error is not None:
            raise self.error
        if not self.fast:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            return self.sock.recv(RECV)  # type: ignore[no-any-return]
        raw = self.raw
        if not wait_first:
            try:
                return raw.recv(RECV)  # type: ignore[no-any-return]
            except BlockingIOError:
                pass
        while True:
            self._wait_read(deadline)
            try:
                return raw.recv(RECV)  # type: ignore[no-any-return]
            except BlockingIOError:
                continue

    def send_soon(self, data: bytes, deadline: float) -> None:
        """Queue ``data`` to be written at the end of this loop iteration, together with every
        other stream's queued writes; the caller's next step must be a wait (a read).

        Each write to a loopback or LAN peer that sleeps in epoll wakes it, and on 2 cores
        the woken peer often preempts us on the spot: measured at ~70 % of the kernel time of
        ``send`` and ~30 % of a worker's CPU under keep-alive load. Writes issued back to back
        wake each peer once per batch instead of once per write. No latency is added: the
        batch goes out before the loop next blocks. A failure is raised by the stream's next
        ``recv`` or ``send``.
        """
        if self.out is not None or not self.fast or len(data) > SOON_MAX or self.error:
            self.send(data, deadline)
            return
        self.out = data
        if not _soon:
            self.hub.loop.run_callback(_flush_soon)
        _soon.append(self)

    def _push(self) -> None:  # runs in the hub: never blocks
        data = self.out
        if data is None:
            return  # the owner wrote it already (send / close)
        try:
            n = self.raw.send(data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self.out = None
            self.error = exc
            if self.closing:
                self._close_now()
            return
        if n == len(data):
            self.out = None
            if self.closing:
                self._close_now()
            return
        self.out = data[n:]  # the rest when the kernel takes it (rare: small writes only)
        if self.pw is None:
            self.pw = self.hub.loop.io(self.raw.fileno(), 2)
        self.pw.start(self._push)
        if self.closing and self.ct is None:  # a peer that stops reading: give up in time
            self.ct = self.hub.loop.timer(CLOSE_FLUSH_S)
            self.ct.start(self._close_now)

    def _settle(self, deadline: float) -> None:
        """Write what ``send_soon`` queued, from the owning greenlet (may wait)."""
        if self.pw is not None:
            self.pw.stop()
        data, self.out = self.out, None
        if data:
            self.send(data, deadline)

    def send(self, data: bytes, deadline: float) -> None:
        """All of ``data``, or OSError / TimeoutError."""
        if self.error is not None:
            raise self.error
        if self.out is not None:  # a queued write goes first, in the same syscall
            data = self.out + data
            self.out = None
            if self.pw is not None:
                self.pw.stop()
        if not self.fast:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            self.sock.sendall(data)
            return
        raw = self.raw
        try:
            n = raw.send(data)
        except BlockingIOError:
            n = 0
        if n == len(data):
            return
        view = memoryview(data)[n:]
        if self.wev is None:
            self.wev = self.hub.loop.io(self.raw.fileno(), 2)
        while view:
            _wait(self.wev, deadline)
            try:
                n = raw.send(view)
            except BlockingIOError:
                continue
            view = view[n:]


def _flush_soon() -> None:  # a hub callback: runs before the loop next blocks
    streams = _soon[:]
    _soon.clear()
    for st in streams:
        st._push()


def take_chunks(chunks: list[bytes]) -> bytes:
    """Everything buffered in ``chunks`` as one piece (b"" if none), leaving it empty."""
    if len(chunks) == 1:
        return chunks.pop()
    data = b"".join(chunks)
    chunks.clear()
    return data
