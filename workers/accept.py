"""Accepting client connections on a plain-TCP listener.

Owns: the read watcher of one listening socket, the accept policy (which worker takes a
connection and how many per wake-up: described here and nowhere else; the docs link here),
and the raw greenlets that run the connection handler on the bare ``_socket.socket``
(reused from one connection to the next). gevent's StreamServer does the same with more
machinery per connection —
a gevent socket object with its own two io watchers (``workers.io.Stream`` keeps its own),
a ``Greenlet`` with link bookkeeping, and a wrapper that closes the socket again — which on a
Connection: close benchmark was a visible share of the per-connection cost. TLS listeners
keep StreamServer: its handshake handling is the part worth having there.

Which worker takes a connection: every worker polls the same listener (libev cannot ask
for ``EPOLLEXCLUSIVE``), so every idle worker wakes for every connection. Spreading them
evenly costs latency at low load: two workers with five keep-alive clients each share two
cores with the client and the upstream, and p99 at 10 connections measured 2-3x that of one
worker holding all ten at the same throughput. So workers fill up in slot order: while a
worker in a lower slot holds fewer than ``FILL`` connections, a woken worker leaves the
connection to it and looks again after ``STANDBY_S``. If the workers before it accepted
anything meanwhile, they are taking their share and it goes on standing by; if they
accepted nothing (busy, stalled, or decoding a big generation), it takes one waiting
connection and looks again, taking twice as many each time they are still stalled (up to
``ACCEPT_MAX``): a worker merely descheduled for a millisecond loses one connection, a
worker stalled for 50 ms does not hold up a burst. A worker that reaches ``FILL``
connections, or drains (publishing ``NO_WORKER``, ``Load.retire``), writes the eventfds of
the workers after it (``shm.Publisher.wake_fds``), so one standing by for it looks at once
instead of at its timer: under ``Connection: close`` traffic, 1 ms is 25 connections, and
the first worker's peaks overflowed its upstream pool's idle cap.

How many connections per wake-up: a worker that accepted a whole burst would keep all of it
for the connections' lifetime while the others idle (wrk's 50 opening connections often all
went to one worker). One per wake-up, like nginx's ``multi_accept off``, spreads them, but
then a worker under ``Connection: close`` traffic runs one whole event-loop iteration per
connection (measured: one ``epoll_wait`` per request against one per 15 with keep-alive).
So the first connection of a wake-up is always taken, and more, up to ``ACCEPT_MAX``, only
while this worker holds fewer than ``FILL`` open connections or no more than the least
loaded other worker, plus an eighth, plus one.

What the workers know of each other: each one's open connections and accepted total, which
its ``Load`` publishes on the control block's load board (``shm.board``) at every change and
reads of the others at each wake-up; a slot without a worker reads ``NO_WORKER``.

Must not: read or write client bytes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import time
import traceback
from _socket import socket as RawSocket  # the C type: gevent's monkey patch leaves it alone
from collections.abc import Callable
from typing import Any

from gevent import get_hub, getcurrent, spawn_raw

from shm.board import NO_WORKER, LoadBoard
from workers.metrics import METRICS

# Out of descriptors or memory: stop accepting for a moment instead of spinning on a
# listener that stays readable (the connections wait in the backlog meanwhile).
_PAUSE_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
PAUSE_S = 0.1
QUIET_S = 10.0  # one line per accept condition and interval; the counter says how many
IDLE_MAX = 128  # parked handler greenlets kept per listener (≈ 20 KiB each)

ACCEPT_MAX = 16
FILL = 16  # connections a worker holds before the next worker in slot order joins in
STANDBY_S = 0.001  # how long a connection waits for the workers before this one

Handler = Callable[[RawSocket, Any], None]
_said: dict[int, tuple[float, int]] = {}  # errno → (when last logged, failures since)


def _accept_failed(exc: OSError) -> None:
    """Count the failure (``pavis_accept_errors_total``); say so once per QUIET_S."""
    METRICS.accept_errors += 1
    now = time.monotonic()
    key = exc.errno or 0
    last, since = _said.get(key, (0.0, 0))
    if last and now - last < QUIET_S:
        _said[key] = (last, since + 1)
        return
    _said[key] = (now, 0)
    more = f" ({since} more since the last such line)" if since else ""
    print(f"pavis worker: accept: {exc.strerror}; pausing {PAUSE_S}s{more}", file=sys.stderr)


class Load:
    """This worker's open client connections and accepted total, and what the other
    workers publish of theirs.

    ``board``: the control block's ``shm.board.LoadBoard`` — this worker's count and total
    are written there at every change; the others' are read at each wake-up (are the
    workers in lower slots full, are they accepting) and when a wake-up could take more
    than one connection (the least loaded). Without it (a worker outside a supervisor,
    tests) no other worker is known.
    """

    __slots__ = (
        "n",
        "accepted",
        "counts",
        "totals",
        "mine",
        "others",
        "before",
        "wake_fd",
        "after",
    )

    def __init__(
        self, board: LoadBoard | None = None, wake_fd: int = -1, after: list[int] | None = None
    ) -> None:
        """``wake_fd``: this worker's wake-up eventfd, and ``after``: those of the workers in
        higher slots, which may stand by for this one (``shm.Publisher.wake_fds``). Without
        them, standing-by workers only look again on their timer."""
        self.n = 0
        self.accepted = 0
        self.counts: memoryview | None = None
        self.totals: memoryview | None = None
        self.mine = 0
        self.others: list[int] = []
        if board is not None:
            self.counts = board.counts
            self.totals = board.accepted
            self.mine = board.slot
            self.others = list(board.others)
        self.before = [i for i in self.others if i < self.mine]  # workers in lower slots
        self.wake_fd = wake_fd
        self.after = after or []

    def opened(self) -> None:
        self.n += 1
        self.accepted += 1
        counts = self.counts
        totals = self.totals
        if counts is not None and totals is not None:
            counts[self.mine] = self.n
            totals[self.mine] = self.accepted
            if self.n == FILL:
                self.wake_later()

    def wake_later(self) -> None:
        """Wake the workers in higher slots: one of them may be standing by for this one,
        which is full (or stops accepting) now. A woken worker that finds it still has to
        wait goes on standing by."""
        for fd in self.after:
            with contextlib.suppress(OSError):  # EAGAIN: the counter is full, it is awake
                os.eventfd_write(fd, 1)

    def closed(self) -> None:
        self.n -= 1
        if self.counts is not None:
            self.counts[self.mine] = self.n

    def retire(self) -> None:
        """This worker stops accepting (it drains): the others stop waiting for it."""
        if self.counts is not None:
            self.counts[self.mine] = NO_WORKER
            self.counts = self.totals = None
            self.wake_later()

    def first_in_line(self) -> bool:
        """Whether every live worker in a lower slot holds at least FILL connections."""
        counts = self.counts
        if counts is not None:
            for i in self.before:
                if counts[i] < FILL:  # NO_WORKER: no worker there, nothing to wait for
                    return False
        return True

    def progress(self) -> int:
        """The workers in lower slots' accepted totals, summed: it moves while they accept."""
        totals = self.totals
        total = 0
        if totals is not None:
            for i in self.before:
                total += totals[i]
        return total

    def least_other(self) -> int:
        """The fewest connections a live other worker holds (NO_WORKER: there is none)."""
        least = NO_WORKER
        counts = self.counts
        if counts is not None:
            for i in self.others:
                c = counts[i]
                if c < least:
                    least = c
        return least

    def room(self) -> int:
        """How many open connections this worker may hold before it stops taking extra
        ones in a wake-up: FILL, or the least loaded other worker's count plus an eighth,
        plus one, whichever is more."""
        least = self.least_other()
        return max(FILL, least + 1 + (least >> 3))


class Acceptor:
    __slots__ = (
        "listener", "handler", "load", "watcher", "timer", "standby", "seen", "rescue", "poke",
        "family", "idle", "hub", "closed",
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
        # One-shot timers, made anew each time: a libev timer started again after it fired
        # fires at once (its remaining time is then zero).
        self.timer: Any = None  # pausing
        self.standby: Any = None
        self.seen = 0  # Load.progress when this worker stood by
        self.rescue = 1  # connections to take if the workers before are still stalled
        # Woken through this slot's eventfd while standing by (``Load.wake_later``).
        self.poke: Any = loop.io(load.wake_fd, 1) if load.wake_fd >= 0 else None
        # Handler greenlets parked between connections. A new greenlet costs CPython a fresh
        # interpreter data stack (an mmap, and an munmap when it ends): measured at ≈ 9 % of
        # a worker's CPU with Connection: close traffic.
        self.idle: list[Any] = []
        self.closed = False

    def start(self) -> None:
        self.watcher.start(self._accept)

    def close(self) -> None:
        self.closed = True
        for timer in (self.timer, self.standby, self.poke):
            if timer is not None:
                timer.stop()
        if self.poke is not None:
            self.poke.close()  # the eventfd itself is the supervisor's
        self.watcher.stop()
        self.watcher.close()
        self.listener.close()
        idle, self.idle = self.idle, []
        for glet in idle:  # let parked handlers end
            self.hub.loop.run_callback(glet.switch, None, None)

    def _accept(self) -> None:  # runs in the hub: never block, never raise
        load = self.load
        if not load.first_in_line():
            # A worker in a lower slot has room, and the same connection woke it: leave the
            # connection to it, and look again after STANDBY_S.
            self.seen = load.progress()
            self.watcher.stop()
            self.standby = self.hub.loop.timer(STANDBY_S)
            self.standby.start(self._late)
            if self.poke is not None:
                self.poke.start(self._poked)
            return
        self.rescue = 1
        self._take()

    def _poked(self) -> None:
        """A worker before this one filled up or retired: look now, not at the timer."""
        with contextlib.suppress(OSError):
            os.eventfd_read(self.poke.fd)
        if self.load.first_in_line():  # else still waiting (or a stale wake-up)
            self.standby.stop()
            self._late()

    def _late(self) -> None:
        if self.poke is not None:
            self.poke.stop()
        load = self.load
        # Take what waits if the workers before this one are full now, or accepted nothing
        # while it stood by (stalled, or stopped); else they are taking their share, and
        # the watcher wakes this worker again if something still waits.
        if load.first_in_line():
            self.rescue = 1
            if not self._take():
                return  # paused
        elif load.progress() != self.seen:
            self.rescue = 1
        else:
            most, self.rescue = self.rescue, min(2 * self.rescue, ACCEPT_MAX)
            if not self._take(most):
                return
        if not self.closed:
            self.watcher.start(self._accept)

    def _take(self, most: int = ACCEPT_MAX) -> bool:
        """Accept the first waiting connection, and more (up to ``most`` in all) while this
        worker has room. False: accepting is paused (out of descriptors or memory)."""
        load = self.load
        room = 0
        for k in range(most):
            if k == 1:
                room = load.room()
            if k and load.n >= room:
                return True  # the rest is the other workers' (or the next wake-up's)
            try:
                fd, addr = self.listener._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                return True  # none left, or another worker took it
            except OSError as exc:
                if exc.errno in _PAUSE_ERRNOS:
                    _accept_failed(exc)
                    self.watcher.stop()
                    self.timer = self.hub.loop.timer(PAUSE_S)
                    self.timer.start(self.start)
                    return False
                return True  # ECONNABORTED and the like: that client is gone, the next one is not
            sock = RawSocket(self.family, socket.SOCK_STREAM, 0, fd)
            sock.setblocking(False)
            load.opened()
            if self.idle:
                self.hub.loop.run_callback(self.idle.pop().switch, sock, addr)
            else:
                spawn_raw(self._serve, sock, addr)
        return True

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
