"""A staged publish: ``pavctl publish --canary N --soak D``.

Owns: trying an artifact on N live hosts before the fleet. The artifact is stored as for any
publish; then one transaction, guarded by desired's revision like a publish, writes a per-host
target ``desired/<host-id>`` for each canary (hosts follow their own target over desired),
bound to a lease the publisher keeps alive. It waits for every canary to report the new
checksum and be ready, then for the soak time, during which each must stay ready and on it.
Then one transaction moves desired (the guarded commit of a publish) and deletes the targets.
Any failure — a canary rejecting it, failing /ready, leaving the fleet, a timeout, a racing
publisher — revokes the lease: the targets vanish and the canaries go back to desired, which
never moved. A publisher that dies mid-canary lets its lease expire, with the same effect.
Must not: reach hosts directly: they are told through etcd and answer through their reports.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from pavis.errors import EXIT_TIMEOUT, FleetError
from pavis.fleet import layout
from pavis.fleet.layout import Desired, HostReport
from pavis.fleet.publish import (
    _commit,
    _put,
    publish,
    publisher_id,
    store_artifact,
    write_stored,
)
from pavis.fleet.reports import follow_reports
from pavis.fleet.store import Store, b64, verify

LEASE_TTL = 10  # seconds: a dead publisher's canary targets vanish this long after it died
POLL_S = 0.25  # during the soak, the publisher's lease is checked this often


def canary_publish(
    store: Store,
    data: bytes,
    source: str,
    count: int,
    soak: float,
    timeout: float,
    echo: Callable[[str], None],
    decode: bool = True,
) -> tuple[Desired, bool]:
    """Try ``data`` on ``count`` hosts for ``soak`` seconds, then publish it to the fleet.
    ``decode``: as for ``publish``."""
    checksum = verify(data, source, decode=decode).checksum
    current = store.desired()
    if current is not None and current[0].checksum == checksum:
        return publish(store, data, source, decode=False)  # already desired: nothing to try
    hosts = sorted(store.hosts(), key=lambda r: r.host_id)
    if not hosts:
        raise FleetError("no_hosts", f"--canary: no live host in fleet {store.keys.fleet}")
    canaries = [r.host_id for r in hosts[:count]]
    stored = store_artifact(store, data, checksum)
    if stored is not None:
        write_stored(store, stored)
    publisher = publisher_id()
    generation = (current[0].generation if current else 0) + 1
    target = Desired(
        checksum=checksum, generation=generation, time=round(time.time(), 3),
        source=f"canary of {source}", publisher=publisher,
    )  # fmt: skip
    lease = store.grant(LEASE_TTL)
    keeper = _Keeper(store, lease)
    keeper.start()
    started = time.time()
    try:
        _set_targets(store, current, canaries, target, lease)
        echo(f"canary: {', '.join(canaries)} of {len(hosts)} host(s) get {checksum}")
        _await(store, canaries, checksum, started, timeout)
        echo(f"canary: {', '.join(canaries)} serve it; soaking {soak:g}s")
        _soak(store, canaries, checksum, started, soak, keeper)
        deletes = [{"request_delete_range": {"key": b64(store.keys.target(h))}} for h in canaries]
        desired = _commit(store, current, checksum, source, publisher, "publish", None, deletes)
    except FleetError as exc:
        keeper.stop()
        with contextlib.suppress(FleetError):
            store.revoke(lease)  # the targets vanish: the canaries follow desired again
        back = _put_back(store, canaries, current[0].checksum if current else "", timeout)
        raise FleetError(
            "canary_aborted",
            f"canary aborted, desired unchanged: {exc.message}; {back}",
            exc.exit_code if exc.exit_code == EXIT_TIMEOUT else 1,
        ) from None
    keeper.stop()
    with contextlib.suppress(FleetError):
        store.revoke(lease)
    return desired, True


def _set_targets(
    store: Store, current: Any, canaries: list[str], target: Desired, lease: int
) -> None:
    keys = store.keys
    if current is None:
        guard = {"key": b64(keys.desired), "target": "CREATE", "result": "EQUAL",
                 "create_revision": 0}  # fmt: skip
    else:
        guard = {"key": b64(keys.desired), "target": "MOD", "result": "EQUAL",
                 "mod_revision": current[1].mod_revision}  # fmt: skip
    value = layout.encode(target)
    ops = []
    for h in canaries:
        op = _put(keys.target(h), value)
        op["request_put"]["lease"] = lease
        ops.append(op)
    result = store.txn({"compare": [guard], "success": ops, "failure": []})
    if not result.get("succeeded"):
        raise FleetError("publish_conflict", "desired moved before the canary started")


def _problem(reports: dict[str, HostReport], host: str, checksum: str, since: float) -> str:
    r = reports.get(host)
    if r is None:
        return f"canary {host} left the fleet (its report's lease expired)"
    if r.rejection is not None and r.rejection.checksum == checksum and r.rejection.time >= since:
        return f"canary {host} rejected it: {r.rejection.reason}"
    return ""


def _await(store: Store, canaries: list[str], checksum: str, since: float, timeout: float) -> None:
    reports: dict[str, HostReport] = {}
    for reports in follow_reports(store, time.monotonic() + timeout):
        for h in canaries:
            problem = _problem(reports, h, checksum, since - 1)
            if problem:
                raise FleetError("canary_failed", problem)
        if all(reports[h].on(checksum) and reports[h].ready for h in canaries):
            return
    lag = [h for h in canaries if h not in reports or not reports[h].on(checksum)]
    raise FleetError(
        "wait_timeout", f"canaries {', '.join(lag) or '(not ready)'} not on it after {timeout:g}s",
        EXIT_TIMEOUT,
    )  # fmt: skip


def _soak(
    store: Store, canaries: list[str], checksum: str, since: float, soak: float, keeper: _Keeper
) -> None:
    """Each canary must stay registered, ready (its admin /ready, as its report says: a host
    rewrites its report within ``READY_TICK`` of its readiness changing) and on it."""
    for reports in follow_reports(store, time.monotonic() + soak, idle=POLL_S):
        for h in canaries:
            problem = _problem(reports, h, checksum, since - 1)
            if not problem and not reports[h].ready:
                problem = f"canary {h} failed /ready during the soak"
            elif not problem and not reports[h].on(checksum):
                problem = f"canary {h} stopped serving it during the soak"
            if problem:
                raise FleetError("canary_failed", problem)
        if keeper.lost:
            raise FleetError("canary_failed", "the canary's lease in etcd was lost")


def _put_back(store: Store, canaries: list[str], old: str, timeout: float) -> str:
    if not old:
        return f"canaries {', '.join(canaries)} keep what they serve (the fleet had no desired)"
    reports: dict[str, HostReport] = {}
    try:
        for reports in follow_reports(store, time.monotonic() + timeout):
            if all(h not in reports or reports[h].on(old) for h in canaries):
                break
    except FleetError:
        pass  # etcd lost meanwhile: say what was seen last
    gone = [h for h in canaries if h not in reports]
    lag = [h for h in canaries if h in reports and not reports[h].on(old)]
    back = [h for h in canaries if h not in gone and h not in lag]
    parts = [f"{', '.join(back)} back on {old}"] if back else []
    if lag:
        parts.append(f"{', '.join(lag)} not back on {old} yet")
    if gone:
        parts.append(f"{', '.join(gone)} gone from the fleet (it follows desired if it returns)")
    return "canaries: " + "; ".join(parts)


class _Keeper:
    """Renews the canary's lease until stopped; ``lost`` once etcd no longer knows it."""

    def __init__(self, store: Store, lease: int) -> None:
        self._store = Store(",".join(store.urls), store.keys.fleet, timeout=2.0, deadline=2.0)
        self._lease = lease
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._run, name="canary-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._store.close()

    def _run(self) -> None:
        while not self._stop.wait(LEASE_TTL / 3):
            try:
                if self._store.keepalive(self._lease) <= 0:
                    self.lost = True
                    return
            except FleetError:
                pass  # retried; the lease outlives a short outage
