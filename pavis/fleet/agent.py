"""A host's fleet agent: follows the fleet's desired artifact and reports what it serves.

Owns: two daemon threads, each with its own etcd client, so that nothing of the supervisor's
(its signal loop, worker upkeep, control requests) ever waits on etcd:

- *follow*: read desired and this host's own target (``desired/<host-id>``, set during a canary)
  at one revision; if the host serves something else, fetch the bytes, verify them and hand
  them to the host (``Host.apply``: store, publish, flip, as a local reload); then watch that
  key range from the next revision. Any change, a cancelled (compacted) watch or a lost
  connection only leads to reading the range again, so the host converges to the *latest*
  target, never replays the ones in between, and loses no change. When the change names an
  artifact the host does not serve, that read also reads its bytes (one request; they are
  used only if the range still names it). etcd unreachable: retry with
  backoff while the host keeps serving.
- *report*: keep a lease and, under it, this host's report (``hosts/<host-id>``), rewritten
  whenever what the host serves changes (at once after an apply, within ``REPORT_TICK``
  otherwise, within ``READY_TICK`` when its readiness changes); a lease etcd no longer knows (expired during a
  partition) is replaced and the report written again.

A rejected target (bad bytes, a listener change, workers that refused it) changes nothing and is
reported; it is tried again after a backoff, so republishing repaired bytes is picked up.
Must not: import the supervisor (the host is the ``Host`` protocol), or trust etcd: artifacts
go through ``Store.fetch`` (chunks, manifest, header, checksum, decode).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pavis.errors import FleetError, PavisError
from pavis.fleet import layout
from pavis.fleet.layout import Desired, HostReport, Rejection, WorkerState
from pavis.fleet.store import Entry, Store, put_report
from pavis.fleet.watch import Watch

log = logging.getLogger("pavis.fleet")

LEASE_TTL = 10  # seconds: a host that stops renewing vanishes from the fleet this long after
WATCH_IDLE = 15.0  # an idle watch is re-opened after this long (a silent partition ends it)
REPORT_TICK = 1.0  # how often the report is compared with what the host serves
READY_TICK = 0.1  # how often the host's readiness (its /ready) is compared with the report's
BACKOFF_MIN, BACKOFF_MAX = 0.5, 10.0  # etcd unreachable: retry delays
RETRY_MIN, RETRY_MAX = 10.0, 300.0  # a rejected target is fetched again after this long


@dataclass(frozen=True)
class Serving:
    """What the host serves right now."""

    checksum: str
    workers: tuple[WorkerState, ...]
    ready: bool


class Host(Protocol):
    """What the agent needs of its supervisor (given by ``pavis.supervisor.fleet_host``)."""

    def apply(self, data: bytes, checksum: str, label: str, served: Callable[[], None]) -> None:
        """Store, publish and flip every worker to ``data`` as a local reload does; call
        ``served`` as soon as every worker serves it (the host's own bookkeeping may still
        be reaching its disk), and return when done. Raise ``PavisError`` (with the reason)
        if it is rejected."""

    def serving(self) -> Serving: ...

    def ready(self) -> bool:
        """What the host's admin ``/ready`` answers (cheap: asked every ``READY_TICK``)."""


@dataclass
class _State:
    generation: int = 0  # of the desired (or canary target) the host is on; 0 = unknown
    applied_at: float = field(default_factory=time.time)
    rejection: Rejection | None = None
    following: str = "desired"
    error: str = ""
    # The last rejected target: (checksum, revision of its key, retry at, delay).
    retry: tuple[str, int, float, float] = ("", 0, 0.0, RETRY_MIN / 2)


class Agent:
    def __init__(
        self,
        endpoints: str,
        fleet: str,
        host_id: str,
        pid: int,
        binds: dict[str, str],
        host: Host,
        lease_ttl: int = LEASE_TTL,
    ) -> None:
        self.host_id = layout.check_name("host id", host_id)
        self.pid = pid
        self.binds = dict(binds)
        self.host = host
        self.lease_ttl = lease_ttl
        # One client per thread; short deadlines: a thread retries on its own schedule. Hosts
        # start with different members, so that a publish does not land on one member only.
        first = zlib.crc32(host_id.encode())
        self._follow_store = Store(endpoints, fleet, timeout=3.0, deadline=3.0, first=first)
        self._report_store = Store(endpoints, fleet, timeout=2.0, deadline=2.0, first=first)
        self.keys = self._follow_store.keys
        self._watch = Watch(self._follow_store)
        self._state = _State()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._changed = threading.Event()  # the report should be written now
        self.lease = 0
        self.connected = False  # the last etcd request of the follow thread answered
        self._applying = False  # a flip is under way (readiness lapses are expected)
        self._threads = [
            threading.Thread(target=self._follow, name="fleet-follow", daemon=True),
            threading.Thread(target=self._report, name="fleet-report", daemon=True),
        ]

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop both threads; revoke the lease so the report vanishes at once."""
        self._stop.set()
        self._changed.set()
        self._watch.close()
        for t in self._threads:
            t.join(timeout)
        self._follow_store.close()
        self._report_store.close()

    def status(self) -> dict[str, object]:
        """For the supervisor's status document."""
        with self._lock:
            s = self._state
            rejection = s.rejection
            return {
                "fleet": self.keys.fleet,
                "host_id": self.host_id,
                "etcd": ",".join(self._follow_store.urls),
                "connected": self.connected,
                "lease": self.lease,
                "generation": s.generation,
                "following": s.following,
                "rejection": None
                if rejection is None
                else {"checksum": rejection.checksum, "reason": rejection.reason},
                "error": s.error or None,
            }

    # ------------------------------------------------------------------ follow

    def _follow(self) -> None:
        delay = BACKOFF_MIN
        hint = ""  # the checksum the last watch events named for this host, if new to it
        while not self._stop.is_set():
            try:
                read: list[Entry] | None = None
                if hint:  # the latest range and, in the same request, the bytes it probably names
                    entries, revision, read = self._follow_store.range_with_artifact(
                        self.keys.desired, self.keys.follow_end, hint
                    )
                else:
                    entries, revision = self._follow_store.range_at(
                        self.keys.desired, self.keys.follow_end
                    )
                wait = self._sync({e.key: e for e in entries}, (hint, read) if read else None)
                self.connected = True
                delay = BACKOFF_MIN
                if wait < 0:
                    # It applied something: read again before watching. Reports written
                    # meanwhile moved the store on, and etcd serves a watch from a past
                    # revision only on its next history sync (every 100 ms): a publish right
                    # after this one would wait for it.
                    hint = ""
                    continue
                outcome = self._watch.wait(
                    self.keys.desired, self.keys.follow_end, revision + 1, wait
                )
                hint = self._hint(entries) if outcome == "changed" else ""
                if outcome == "compacted":
                    log.info("fleet watch cancelled by etcd (compaction): reading desired again")
            except PavisError as exc:
                hint = ""
                if self._stop.is_set():
                    break
                if self.connected:
                    log.warning(
                        "fleet %s: etcd lost (%s); serving on, retrying", self.keys.fleet, exc
                    )
                self.connected = False
                self._stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            except Exception:  # a bug must not end the thread: the host would stop following
                hint = ""
                log.exception("fleet agent: unexpected error; retrying")
                self._stop.wait(BACKOFF_MAX)

    def _hint(self, entries: list[Entry]) -> str:
        """What the watch's events say this host should serve, if it is not what it serves: a
        guess only (the range is read again, with these bytes in the same request)."""
        mine = {e.key: e for e in entries}
        for deleted, e in self._watch.changes:
            if deleted:
                mine.pop(e.key, None)
            else:
                mine[e.key] = e
        entry = mine.get(self.keys.target(self.host_id)) or mine.get(self.keys.desired)
        try:
            checksum = layout.decode(Desired, entry.key, entry.value).checksum if entry else ""
        except PavisError:
            return ""  # the read will say what is wrong
        return "" if checksum == self.host.serving().checksum else checksum

    def _sync(self, mine: dict[str, Entry], read: tuple[str, list[Entry]] | None) -> float:
        """Converge to desired or this host's target as ``mine`` (the followed range) has them
        (``read``: a checksum and its artifact's keys, already read); returns how long the
        watch may idle, or -1 once it applied it (the range is read again first)."""
        desired = self._decode(mine.get(self.keys.desired))
        target = self._decode(mine.get(self.keys.target(self.host_id)))
        want, following = (target, "canary") if target is not None else (desired, "desired")
        key = self.keys.target(self.host_id) if target is not None else self.keys.desired
        if want is None:
            return WATCH_IDLE
        serving = self.host.serving()
        if serving.checksum == want.checksum:
            self._note(want.generation, following, None, applied=False)
            return WATCH_IDLE
        # A rejected target is tried again after a backoff, or at once when its key was
        # rewritten (a publish that repaired damaged bytes rewrites desired unchanged).
        with self._lock:
            rejected, rejected_rev, at, _ = self._state.retry
        now = time.monotonic()
        if rejected == want.checksum and rejected_rev == mine[key].mod_revision and now < at:
            return min(WATCH_IDLE, at - now)
        bytes_read = read[1] if read is not None and read[0] == want.checksum else None
        self._apply(want, following, mine[key].mod_revision, bytes_read)
        return -1.0 if self.host.serving().checksum == want.checksum else WATCH_IDLE

    def _decode(self, entry: Entry | None) -> Desired | None:
        if entry is None:
            return None
        try:
            value = layout.decode(Desired, entry.key, entry.value)
        except PavisError as exc:
            log.error("fleet %s: %s; ignored", self.keys.fleet, exc)
            with self._lock:
                self._state.error = str(exc)
            self._changed.set()
            return None
        return value

    def _apply(
        self, want: Desired, following: str, key_revision: int, read: list[Entry] | None
    ) -> None:
        label = f"fleet {self.keys.fleet} generation {want.generation}"
        if following == "canary":
            label += " (canary)"
        t0 = time.monotonic()
        noted = threading.Event()

        def served() -> None:  # reported at once: what every worker serves is what counts
            self._applying = False
            if not noted.is_set():
                noted.set()
                self._note(want.generation, following, None, applied=True)

        try:
            # Not decoded here: the host's flip decodes it (and rejects it if it does not).
            data = self._follow_store.fetch(want.checksum, decode=False, read=read)
            # While the workers flip, /ready says no: not a change worth a report.
            self._applying = True
            self.host.apply(data, want.checksum, label, served)
        except PavisError as exc:
            self._applying = False
            if isinstance(exc, FleetError) and exc.reason == "etcd_unreachable":
                raise
            reason = str(exc)
            log.error("%s: %s rejected: %s", label, want.checksum, reason)
            rejection = Rejection(checksum=want.checksum, reason=reason, time=time.time())
            with self._lock:
                last, _, _, delay = self._state.retry
                delay = min(delay * 2, RETRY_MAX) if last == want.checksum else RETRY_MIN
                self._state.retry = (want.checksum, key_revision, time.monotonic() + delay, delay)
            self._note(self._state.generation, self._state.following, rejection, applied=False)
            return
        log.info("%s: serving %s (%.0f ms)", label, want.checksum, (time.monotonic() - t0) * 1000)
        with self._lock:
            self._state.retry = ("", 0, 0.0, RETRY_MIN / 2)
        served()

    def _note(
        self, generation: int, following: str, rejection: Rejection | None, applied: bool
    ) -> None:
        with self._lock:
            s = self._state
            s.generation, s.following, s.error = generation, following, ""
            if rejection is not None:
                s.rejection = rejection
            if applied:
                s.applied_at = time.time()
        self._changed.set()

    # ------------------------------------------------------------------ report

    def report(self) -> HostReport:
        serving = self.host.serving()
        with self._lock:
            s = self._state
            return HostReport(
                host_id=self.host_id, pid=self.pid, generation=s.generation,
                checksum=serving.checksum, workers=list(serving.workers),
                applied_at=round(s.applied_at, 3), rejection=s.rejection, binds=self.binds,
                ready=serving.ready, following=s.following, error=s.error,
            )  # fmt: skip

    def _report(self) -> None:
        written: HostReport | None = None
        renewed = compared = 0.0
        while not self._stop.is_set():
            try:
                now = time.monotonic()
                if not self.lease:
                    self.lease = self._report_store.grant(self.lease_ttl)
                    renewed, written = now, None
                    log.info("fleet %s: registered as %s", self.keys.fleet, self.host_id)
                elif now - renewed >= self.lease_ttl / 3:
                    if self._report_store.keepalive(self.lease) <= 0:
                        log.warning("fleet %s: lease expired; registering again", self.keys.fleet)
                        self.lease = 0
                        continue
                    renewed = now
                # Readiness is sampled often (a canary's soak watches it); the rest each tick,
                # or at once when the follow thread says it changed.
                due = self._changed.is_set() or now - compared >= REPORT_TICK
                self._changed.clear()
                lapsed = (
                    written is not None
                    and not self._applying
                    and self.host.ready() != written.ready
                )
                if due or written is None or lapsed:
                    compared = now
                    current = self.report()
                    if current != written:
                        put_report(self._report_store, current, self.lease)
                        written = current
            except PavisError as exc:
                if "lease not found" in str(exc):
                    self.lease = 0
                    continue
                written = None  # etcd may have lost it; write again when it answers
            except Exception:
                log.exception("fleet agent: unexpected error in the report thread")
            self._changed.wait(READY_TICK)
        if self.lease:
            with contextlib.suppress(PavisError):  # else it vanishes when the lease expires
                self._report_store.revoke(self.lease)
