"""The artifact store: artifacts under their checksum, last-known-good, history, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pavis import schema
from pavis.artifact import seal
from pavis.errors import ArtifactError
from pavis.store import ACCEPTED, REJECTED, Entry, Store, StoreError


def _artifact(tag: int) -> bytes:
    """A minimal sealed artifact; ``tag`` varies a limit so checksums differ."""
    model = schema.Model(
        format_version=schema.FORMAT_VERSION,
        listeners=(),
        admin=schema.AdminOff(),
        limits=schema.Limits(8192, 65536, 100, tag, 10_000, 60_000, 5_000, 65536, 100),
        access_log=schema.AccessLogOff(),
        tracing=schema.TracingOff(),
        clusters=(),
        virtual_hosts=(),
        domains=schema.DomainIndex({}, {}, {}, -1),
        routes=(),
    )
    return seal(schema.Validated(model))


def _entry(checksum: str, outcome: str = ACCEPTED, generation: int = 1) -> Entry:
    return Entry(1.0e9, "reload", "/etc/x.yaml", outcome, generation, checksum, "", "b1")


def test_put_get_roundtrip_and_prefix(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    data = _artifact(1)
    checksum = store.put(data)
    assert store.path_of(checksum).read_bytes() == data
    assert store.get(checksum) == data
    assert store.get(checksum[:10]) == data
    with pytest.raises(StoreError, match="at least 10"):
        store.get(checksum[:9])  # shorter prefixes collide too easily: docs say 10+
    assert oct(store.path_of(checksum).stat().st_mode & 0o777) == "0o600"
    assert store.put(data) == checksum  # idempotent
    assert store.checksums() == [checksum]


def test_put_rejects_corrupt_artifact(tmp_path: Path) -> None:
    store = Store(tmp_path)
    data = bytearray(_artifact(1))
    data[-1] ^= 0xFF
    with pytest.raises(ArtifactError) as exc:
        store.put(bytes(data))
    assert exc.value.reason == "checksum_mismatch"
    assert store.checksums() == []


def test_get_detects_a_file_corrupted_on_disk(tmp_path: Path) -> None:
    store = Store(tmp_path)
    checksum = store.put(_artifact(1))
    path = store.path_of(checksum)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ArtifactError):
        store.get(checksum)


def test_unknown_and_ambiguous_checksums(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(StoreError):
        store.get("0" * 32)
    with pytest.raises(StoreError):
        store.get("abc")  # too short to be a prefix
    with pytest.raises(StoreError):
        store.resolve("zzzzzzzz")


def test_last_known_good(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.last_known_good() == ""
    with pytest.raises(StoreError):
        store.mark_good("1" * 32)  # not stored
    checksum = store.put(_artifact(1))
    store.mark_good(checksum)
    assert store.last_known_good() == checksum
    assert Store(tmp_path).last_known_good() == checksum  # survives a new instance


def test_history_is_bounded_and_survives_reopen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pavis.store as store_mod

    monkeypatch.setattr(store_mod, "HISTORY_LIMIT", 5)
    store = Store(tmp_path)
    for g in range(1, 9):
        store.record(_entry("a" * 32, REJECTED if g % 2 else ACCEPTED, g))
    entries = Store(tmp_path).history()
    assert [e.generation for e in entries] == [4, 5, 6, 7, 8]
    assert entries[-1].outcome == ACCEPTED
    raw = json.loads((tmp_path / "history.json").read_text())
    assert raw[-1]["time_iso"] == "2001-09-09T01:46:40Z"


def test_prune_keeps_recent_and_last_known_good(tmp_path: Path) -> None:
    store = Store(tmp_path)
    sums = [store.put(_artifact(i)) for i in range(5)]
    for g, c in enumerate(sums):
        store.record(_entry(c, ACCEPTED, g + 1))
    store.mark_good(sums[0])
    dropped = store.prune(keep=2)
    assert sorted(dropped) == sorted(sums[1:3])
    assert sorted(store.checksums()) == sorted([sums[0], sums[3], sums[4]])


def test_deferred_writes_are_visible_before_flush(tmp_path: Path) -> None:
    store = Store(tmp_path)
    checksum = store.put(_artifact(1))
    store.mark_good(checksum, flush=False)
    store.record(_entry(checksum), flush=False)
    assert store.last_known_good() == checksum
    assert [e.checksum for e in store.history()] == [checksum]
    assert Store(tmp_path).history() == []  # not on disk yet
    store.flush()
    reopened = Store(tmp_path)
    assert reopened.last_known_good() == checksum
    assert reopened.history() == store.history()


def test_unreadable_history_is_set_aside_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "history.json").write_text("{not json")
    store = Store(tmp_path)
    assert store.history() == []
    assert list(tmp_path.glob("history.json.bad-*"))
