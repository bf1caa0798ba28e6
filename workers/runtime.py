"""What the stages of the request path share: the worker's runtime and one client.

Owns: ``Runtime`` (worker-wide: the serving state, connection and request counts, draining),
``Client`` (one client connection as every stage after routing sees it: its reader and
stream, its address, the listener's scheme) and request ids.
Must not: read requests or route (``workers.conn``), or relay (``workers.proxy``): the
stages import this module, never each other's connection object.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from shm.buckets import Buckets
from workers.accept import Load
from workers.http import ClientReader
from workers.state import State

# Request ids: a random per-process prefix and a counter, unique without a syscall each.
_RID_PREFIX = os.urandom(8).hex().encode()
_rid_next = itertools.count(1).__next__


def reseed_request_ids() -> None:
    """Call after fork: workers forked from one parent must not share the prefix."""
    global _RID_PREFIX, _rid_next
    _RID_PREFIX = os.urandom(8).hex().encode()
    _rid_next = itertools.count(1).__next__


def new_request_id() -> bytes:
    return b"%s%016x" % (_RID_PREFIX, _rid_next())


class Runtime:
    """Worker-wide facts shared by every connection: the serving state and counters."""

    def __init__(self, state: State, load: Load | None = None) -> None:
        """``load``: this worker's connection count, shared with the other workers
        (``workers.accept.Load``); a worker on its own by default."""
        self.state = state
        self.load = Load() if load is None else load
        self.requests = 0
        self.inflight = 0
        self.draining = False
        self.conns: set[Client] = set()
        # The instance's rate-limit segment (``workers.ratelimit.attach``); None: not attached.
        self.buckets: Buckets | None = None


class Client:
    """One client connection: what the proxy stages may use of it. ``workers.conn``'s
    ``Connection`` is a ``Client`` with the request loop; the stages after routing are
    handed it as a ``Client`` and reach nothing else."""

    __slots__ = (
        "runtime",
        "client_ip",
        "address",
        "proto",
        "reader",
        "busy",
        "peer",
        "peer_forward",
        "tls_version",
        "sni",
    )

    def __init__(self, runtime: Runtime, sock: Any, addr: object, proto: bytes) -> None:
        """``sock``: see ``workers.io.Stream``; the connection's socket lives in
        ``self.reader.stream`` from here on."""
        self.runtime = runtime
        host = addr[0] if isinstance(addr, tuple) else str(addr)
        self.address = host  # as the access log prints it
        self.client_ip = host.encode("latin-1")  # as X-Forwarded-For carries it
        self.proto = proto
        self.busy = False
        self.peer: list[tuple[bytes, bytes]] | None = None  # verified client certificate fields
        self.peer_forward = False  # ``peer`` is sent upstream too
        self.tls_version = "-"  # of a TLS listener's connection (access log); "-": plain
        self.sni = "-"  # the server name its client sent ("" none)
        self.reader = ClientReader(sock, runtime.state.limits)
