"""Moving a fleet's desired pointer: publish sealed bytes, or roll back to a stored artifact.

Owns: the guarded commit. An artifact's chunks are written first (content-addressed and
immutable, so a retry or a racing publisher of the same bytes writes the same values); then
ONE transaction writes the manifest (if absent), the new desired pointer and its history entry,
and trims history to ``HISTORY_LIMIT``, guarded by a compare on desired's mod_revision as read
at the start (or "desired does not exist"). Of two racing publishers exactly one wins; the
other gets a ``publish_conflict`` error naming the winner.
Must not: interpret or rewrite the sealed bytes, compile configurations, or talk to hosts.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Literal

from pavis.errors import EXIT_REJECTED, FleetError
from pavis.fleet import layout
from pavis.fleet.layout import HISTORY_LIMIT, Desired, HistoryEntry
from pavis.fleet.store import Entry, Store, b64, unb64, verify

# The chunks of an artifact this small (as stored, compressed) go in the commit's own
# transaction: one request, well under etcd's 1.5 MiB limit with the other operations.
INLINE_BYTES = 1 << 20
INLINE_CHUNKS = 64  # and far from etcd's 128 operations per transaction (--max-txn-ops)


def publisher_id() -> str:
    """Who publishes, as shown in desired and history: ``user@host:pid``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Stored:
    """An artifact to commit: its manifest, and the chunk writes that go in the same
    transaction (none when the chunks were too big for it and were written first)."""

    manifest: layout.Manifest
    ops: list[dict[str, Any]]


def store_artifact(store: Store, data: bytes, checksum: str) -> Stored | None:
    """Prepare storing ``checksum``: None when etcd holds an intact copy already. A stored
    copy that fails verification is overwritten (publishing the same bytes repairs it).

    Chunks that fit one transaction (``INLINE_BYTES`` in all, as stored) are written by the
    commit itself; bigger artifacts have their chunks written here, one request each.
    """
    try:
        if store.fetch(checksum, decode=False) == data:
            return None
    except FleetError as exc:
        if exc.exit_code != EXIT_REJECTED:
            raise
    manifest, chunks = layout.split(checksum, data)
    keys = [store.keys.chunk(checksum, n) for n in range(len(chunks))]
    if sum(len(c) for c in chunks) <= INLINE_BYTES and len(chunks) <= INLINE_CHUNKS:
        return Stored(manifest, [_put(k, c) for k, c in zip(keys, chunks, strict=True)])
    for key, chunk in zip(keys, chunks, strict=True):
        store.put(key, chunk)
    return Stored(manifest, [])


def write_stored(store: Store, stored: Stored) -> None:
    """Write a prepared artifact (its inline chunks and its manifest) in one transaction."""
    manifest = _put(store.keys.manifest(stored.manifest.checksum), layout.encode(stored.manifest))
    store.txn({"compare": [], "success": [*stored.ops, manifest]})


def publish(
    store: Store, data: bytes, source: str, publisher: str | None = None, decode: bool = True
) -> tuple[Desired, bool]:
    """Verify ``data`` (``decode``: decode it fully too; not needed for bytes this process
    just compiled), store it and point the fleet's desired at it.

    Returns the desired pointer and whether it moved: publishing the checksum desired already
    names changes nothing (so a pipeline may publish on every push).
    """
    header = verify(data, source, decode=decode)
    checksum = header.checksum
    current = store.desired()
    if current is not None and current[0].checksum == checksum:
        stored = store_artifact(store, data, checksum)
        if stored is not None:  # the stored copy was damaged: repaired
            write_stored(store, stored)
            _touch(store, current)
        return current[0], False
    stored = store_artifact(store, data, checksum)
    return _commit(store, current, checksum, source, publisher, "publish", stored), True


def _touch(store: Store, current: tuple[Desired, Entry]) -> None:
    """Rewrite desired unchanged (unless it moved meanwhile): hosts that rejected the damaged
    copy see a new revision of desired and fetch the repaired one at once."""
    keys = store.keys
    guard = {"key": b64(keys.desired), "target": "MOD", "result": "EQUAL",
             "mod_revision": current[1].mod_revision}  # fmt: skip
    store.txn({"compare": [guard], "success": [_put(keys.desired, current[1].value)]})


def rollback(store: Store, to: str | None = None, publisher: str | None = None) -> Desired:
    """Point desired at an artifact already in etcd: ``to`` is a generation or a checksum; by
    default the newest history entry older than desired with another checksum."""
    current = store.desired()
    if current is None:
        raise FleetError("not_found", f"fleet {store.keys.fleet} has no desired artifact yet")
    desired = current[0]
    history = store.history()
    target = _target(history, desired, to)
    # Verified before the fleet is pointed at it: a corrupted stored copy is refused here.
    store.fetch(target.checksum)
    source = f"rollback to generation {target.generation} ({target.source})"
    return _commit(store, current, target.checksum, source, publisher, "rollback", None)


def _target(history: list[HistoryEntry], desired: Desired, to: str | None) -> HistoryEntry:
    if to is None:
        older = [
            h
            for h in history
            if h.generation < desired.generation and h.checksum != desired.checksum
        ]
        if not older:
            raise FleetError("not_found", "no earlier artifact in history to roll back to")
        return older[-1]
    if to.isdigit() and len(to) < 10:
        found = [h for h in history if h.generation == int(to)]
        if not found:
            kept = f"{history[0].generation}..{history[-1].generation}" if history else "none"
            raise FleetError("not_found", f"generation {to} is not in history (kept: {kept})")
        return found[0]
    want = to.lower()
    if len(want) < 10 or any(ch not in "0123456789abcdef" for ch in want):
        raise FleetError(
            "bad_target", f"--to {to!r}: expected a generation or 10+ hex digits of a checksum"
        )
    found = [h for h in history if h.checksum.startswith(want)]
    if len({h.checksum for h in found}) > 1:
        raise FleetError(
            "bad_target", f"--to {to!r} matches several artifacts in history; give more digits"
        )
    if not found:
        raise FleetError("not_found", f"artifact {to} is not in the fleet's history")
    return found[-1]


def _commit(
    store: Store,
    current: tuple[Desired, Entry] | None,
    checksum: str,
    source: str,
    publisher: str | None,
    action: Literal["publish", "rollback"],
    stored: Stored | None,
    extra: list[dict[str, Any]] | None = None,
) -> Desired:
    """``stored``: the artifact's manifest and inline chunks to write, None when they are in
    etcd already; ``extra``: more operations for the same transaction (a canary's target
    deletions)."""
    keys = store.keys
    generation = current[0].generation + 1 if current else 1
    new = Desired(
        checksum=checksum,
        generation=generation,
        time=round(time.time(), 3),
        source=source,
        publisher=publisher or publisher_id(),
    )
    entry = HistoryEntry(
        checksum=checksum, generation=generation, time=new.time, source=source,
        publisher=new.publisher, action=action,
    )  # fmt: skip
    if current is None:
        guard = {
            "key": b64(keys.desired),
            "target": "CREATE",
            "result": "EQUAL",
            "create_revision": 0,
        }
    else:
        guard = {
            "key": b64(keys.desired), "target": "MOD", "result": "EQUAL",
            "mod_revision": current[1].mod_revision,
        }  # fmt: skip
    ops: list[dict[str, Any]] = []
    compare = [guard]
    if stored is not None:
        ops.extend(stored.ops)
        ops.append(_put(keys.manifest(checksum), layout.encode(stored.manifest)))
    else:
        # The artifact must still be there when desired points at it.
        compare.append(
            {
                "key": b64(keys.manifest(checksum)),
                "target": "CREATE",
                "result": "GREATER",
                "create_revision": 0,
            }
        )
    ops.append(_put(keys.desired, layout.encode(new)))
    ops.extend(extra or [])
    ops.append(_put(keys.history_entry(generation), layout.encode(entry)))
    oldest_kept = generation - HISTORY_LIMIT + 1
    if oldest_kept > 1:
        ops.append(
            {
                "request_delete_range": {
                    "key": b64(keys.history),
                    "range_end": b64(keys.history_entry(oldest_kept)),
                }
            }
        )
    # On failure the same transaction reads desired, so the loser learns who won atomically.
    txn = {
        "compare": compare,
        "success": ops,
        "failure": [{"request_range": {"key": b64(keys.desired)}}],
    }
    result = store.txn(txn)
    if result.get("succeeded"):
        return new
    return _lost(store, result, new, current)


def _lost(
    store: Store, result: dict[str, Any], ours: Desired, current: tuple[Desired, Entry] | None
) -> Desired:
    responses = result.get("responses", [])
    kvs = responses[0].get("response_range", {}).get("kvs", []) if responses else []
    if not kvs:
        raise FleetError(
            "publish_conflict", "desired was removed while publishing; nothing was changed"
        )
    now = layout.decode(Desired, store.keys.desired, unb64(kvs[0].get("value", "")))
    if now == ours:
        # Our own transaction, applied although its answer was lost and the request retried.
        return ours
    if current is not None and int(kvs[0].get("mod_revision", 0)) == current[1].mod_revision:
        raise FleetError(
            "not_found", f"artifact {ours.checksum} vanished from etcd before the commit"
        )
    raise FleetError(
        "publish_conflict",
        f"another publish won: {now.publisher} moved fleet {store.keys.fleet} to generation "
        f"{now.generation} ({now.checksum}, source {now.source}); nothing was changed: "
        "check `pavctl fleet status` and publish again if still wanted",
    )


def _put(key: str, value: bytes) -> dict[str, Any]:
    return {"request_put": {"key": b64(key), "value": b64(value)}}
