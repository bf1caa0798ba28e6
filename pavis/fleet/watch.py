"""Waiting for a change in a key range: one watch stream over etcd's HTTP gateway.

Owns: opening the watch at a revision through an etcd3gw client's session and reading its
stream, event after event, until a cancel (etcd cancels a watch whose start revision was
compacted), an idle timeout or the caller stops. etcd3gw's own ``Watcher`` hands events to a thread pool and
drops cancels and compaction notices, which a host must see to re-read; so the stream is read
here, with the same client and session.
Each message with events is kept in turn (``changes``: every key it changed, and
``revision``, the newest revision among them): etcd never splits one revision's events over
two messages, so a caller that applies them to what it read holds the range as of
``revision`` (not necessarily the latest: events may have queued while it was busy). A
cancel, or an idle or lost stream, means reading the range again.
Must not: interpret the values.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Generator, Iterator
from typing import Any, Literal

import requests

from pavis.errors import EXIT_UNREACHABLE, FleetError
from pavis.fleet.store import Entry, Store, b64, entry_of

Outcome = Literal["changed", "compacted", "idle", "closed"]
CONNECT_TIMEOUT = 2.0


class Watch:
    """One watch at a time, closable from another thread (to stop promptly)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._response: requests.Response | None = None
        self._closed = False
        # After "changed": (deleted, entry) for each event of the first message, and the
        # newest mod_revision among them.
        self.changes: list[tuple[bool, Entry]] = []
        self.revision = 0

    def wait(self, key: str, range_end: str, start_revision: int, idle: float) -> Outcome:
        """Block until ``[key, range_end)`` changes at or after ``start_revision``."""
        stream = self.follow(key, range_end, start_revision, idle)
        try:
            return next(stream, "closed")
        finally:
            stream.close()

    def follow(
        self, key: str, range_end: str, start_revision: int, idle: float
    ) -> Generator[Outcome, None, None]:
        """``"changed"`` for each message with events, on one stream, until it ends: with
        ``"compacted"`` (cancelled), ``"idle"`` (nothing for ``idle`` seconds) or
        ``"closed"``; a lost stream raises. One stream for many events matters: etcd serves a
        watch that starts at a past revision from its history only every 100 ms."""
        client, url = self.store.client()
        body: dict[str, Any] = {
            "create_request": {
                "key": b64(key),
                "range_end": b64(range_end),
                "start_revision": start_revision,
            }
        }
        try:
            response = client.session.post(
                client.get_url("/watch"), json=body, stream=True,
                timeout=(CONNECT_TIMEOUT, max(0.1, idle)),
            )  # fmt: skip
        except requests.RequestException as exc:
            self.store.next_endpoint()
            raise _lost(url, exc) from None
        with self._lock:
            closed = self._closed
            if not closed:
                self._response = response
        if closed:
            response.close()
            yield "closed"
            return
        try:
            yield from self._read(response, url)
        except requests.exceptions.ConnectionError as exc:
            if self._closed:
                yield "closed"
                return
            if "timed out" in str(exc).lower():
                yield "idle"
                return
            self.store.next_endpoint()
            raise _lost(url, exc) from None
        except requests.RequestException as exc:
            self.store.next_endpoint()
            raise _lost(url, exc) from None
        finally:
            with self._lock:
                self._response = None
            response.close()

    def _read(self, response: requests.Response, url: str) -> Generator[Outcome, None, None]:
        if response.status_code != 200:
            raise FleetError(
                "etcd_refused", f"etcd at {url} refused the watch: HTTP {response.status_code}"
            )
        for line in _lines(response):
            try:
                message: Any = json.loads(line)
            except ValueError:
                raise FleetError("etcd_refused", f"etcd at {url}: unreadable watch line") from None
            result = message.get("result") if isinstance(message, dict) else None
            if not isinstance(result, dict):
                error = message.get("error") if isinstance(message, dict) else message
                raise FleetError("etcd_refused", f"etcd at {url} ended the watch: {error}")
            if result.get("canceled"):
                yield "compacted"  # compaction, or any cancel: either way, re-read
                return
            events = result.get("events")
            if events:
                self.changes = [
                    (e.get("type") == "DELETE", entry_of(e.get("kv", {}))) for e in events
                ]
                self.revision = max(c[1].mod_revision for c in self.changes)
                yield "changed"
        if self._closed:
            yield "closed"
            return
        # The stream ended without a cancel: the member went away.
        self.store.next_endpoint()
        raise FleetError("etcd_unreachable", f"etcd at {url} closed the watch", EXIT_UNREACHABLE)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.raw._fp.fp.raw._sock.shutdown(2)  # unblock the reading thread
            with contextlib.suppress(Exception):
                response.close()


def _lines(response: requests.Response) -> Iterator[bytes]:
    """The stream's lines as they arrive (each gateway message is one JSON line)."""
    pending = b""
    for chunk in response.iter_content(chunk_size=None):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def _lost(url: str, exc: Exception) -> FleetError:
    text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return FleetError(
        "etcd_unreachable", f"watch on etcd at {url} failed: {text}", EXIT_UNREACHABLE
    )
