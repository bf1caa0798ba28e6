"""The fleet's etcd layout as pure functions: keys, value codecs, chunking, drift (no etcd).

Invariants: every value read from etcd is decoded strictly and a malformed one is rejected
naming its key; chunks reassemble to the exact bytes; a host is "on" a checksum only when its
supervisor and every worker serve it.
"""

from __future__ import annotations

import time
import zlib

import msgspec
import pytest
import xxhash

from pavis.errors import EXIT_REJECTED, FleetError
from pavis.fleet import layout
from pavis.fleet.layout import Desired, HostReport, Keys, Manifest, Rejection, WorkerState
from pavis.fleet.status import assess
from pavis.fleet.store import parse_endpoints, prefix_end

C1, C2 = "1" * 32, "2" * 32


def host(
    checksum: str, workers: list[str] | None = None, rejected: str | None = None
) -> HostReport:
    return HostReport(
        host_id="h1", pid=1, generation=3, checksum=checksum,
        workers=[WorkerState(pid=10 + i, generation=3, checksum=c)
                 for i, c in enumerate(workers or [checksum])],
        applied_at=time.time(), binds={},
        rejection=None if rejected is None else Rejection(checksum=rejected, reason="x", time=0.0),
    )  # fmt: skip


def test_keys_live_under_the_fleet_prefix() -> None:
    k = Keys("edge-1")
    assert k.desired == "/pavis/edge-1/desired"
    assert k.manifest(C1) == f"/pavis/edge-1/artifacts/{C1}/manifest"
    assert k.chunk(C1, 3) == f"/pavis/edge-1/artifacts/{C1}/3"
    assert k.host("web-01.dc1") == "/pavis/edge-1/hosts/web-01.dc1"
    # Zero-padded, so that etcd's key order is generation order.
    assert k.history_entry(7) == "/pavis/edge-1/history/000000000007"
    assert prefix_end(k.history) == "/pavis/edge-1/history0"


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "-x", "x" * 64, "sp ace"])
def test_bad_fleet_names_and_host_ids_are_rejected(bad: str) -> None:
    with pytest.raises(FleetError, match="fleet name"):
        Keys(bad)
    with pytest.raises(FleetError, match="host id"):
        Keys("ok").host(bad)


def test_values_round_trip() -> None:
    d = Desired(checksum=C1, generation=4, time=1.5, source="site.yaml", publisher="ci@h:1")
    assert layout.decode(Desired, "/k", layout.encode(d)) == d
    r = host(C1, rejected=C2)
    assert layout.decode(HostReport, "/k", layout.encode(r)) == r


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (b"not json", "not a valid Desired"),
        (b'{"checksum": "x"}', "missing required field"),
        (b'{"checksum": "%s", "generation": "1", "time": 1, "source": "", "publisher": ""}' % C1.encode(),
         "Expected `int`"),
        (b'{"checksum": "ABC", "generation": 1, "time": 1, "source": "", "publisher": ""}',
         "is not 32 lower-case hex"),
        (b'{"checksum": "%s", "generation": 0, "time": 1, "source": "", "publisher": ""}' % C1.encode(),
         "generation 0 is not positive"),
    ],
)  # fmt: skip
def test_malformed_desired_is_rejected_naming_the_key(value: bytes, says: str) -> None:
    with pytest.raises(FleetError) as exc:
        layout.decode(Desired, "/pavis/f/desired", value)
    assert "etcd key /pavis/f/desired" in str(exc.value) and says in str(exc.value)
    assert exc.value.reason == "malformed" and exc.value.exit_code == EXIT_REJECTED


def test_split_and_join_give_the_exact_bytes() -> None:
    data = bytes(range(256)) * 41  # 10496 bytes: 3 chunks of 4096, the last one short
    manifest, chunks = layout.split(C1, data, chunk_size=4096)
    assert (manifest.chunks, manifest.size, manifest.format) == (3, len(data), layout.FORMAT)
    assert sum(len(c) for c in chunks) < len(data) // 4  # stored compressed
    decoded = layout.decode(Manifest, "/m", layout.encode(manifest))
    raw = [layout.check_chunk(decoded, f"/c/{n}", n, c) for n, c in enumerate(chunks)]
    assert [len(c) for c in raw] == [4096, 4096, 2304]
    assert layout.join(decoded, "/m", raw) == data

    with pytest.raises(FleetError) as exc:
        layout.check_chunk(decoded, "/c/0", 0, b"\xff" + chunks[0][1:])
    assert exc.value.reason == "chunk_checksum_mismatch" and "/c/0" in str(exc.value)
    # A chunk that matches a forged digest but expands to another size, or not at all.
    for stored, reason in (
        (zlib.compress(raw[2][:-1]), "chunk_size_mismatch"),
        (zlib.compress(raw[2] + b"x"), "chunk_size_mismatch"),
        (b"not zlib", "chunk_corrupt"),
    ):
        forged = msgspec.structs.replace(
            decoded, chunk_xxh3_64=[*decoded.chunk_xxh3_64[:2], xxhash.xxh3_64_hexdigest(stored)]
        )
        with pytest.raises(FleetError) as exc:
            layout.check_chunk(forged, "/c/2", 2, stored)
        assert exc.value.reason == reason and "/c/2" in str(exc.value)


def test_a_manifest_of_another_layout_format_is_refused_clearly() -> None:
    manifest, _ = layout.split(C1, b"x" * 100)
    first = {k: v for k, v in msgspec.to_builtins(manifest).items() if k != "format"}
    with pytest.raises(FleetError) as exc:
        layout.decode(Manifest, "/m", msgspec.json.encode(first))
    assert exc.value.reason == "layout_format"
    assert "etcd key /m: artifact stored in layout format 1" in str(exc.value)
    assert "publish the artifact again" in str(exc.value)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"chunks": 0}, "chunks 0 is out of range"),
        ({"chunks": layout.MAX_CHUNKS + 1}, "out of range"),
        ({"size": 1}, "does not fit"),
        ({"chunk_xxh3_64": ["0" * 16]}, "chunk digests for"),
        ({"chunk_size": 1 << 30}, "chunk_size"),
    ],
)
def test_inconsistent_manifests_are_rejected(change: dict[str, object], says: str) -> None:
    manifest, _ = layout.split(C1, b"x" * 10_000, chunk_size=4096)
    forged = msgspec.structs.replace(manifest, **change)
    with pytest.raises(FleetError, match=says):
        layout.decode(Manifest, "/m", layout.encode(forged))


def test_a_host_is_on_a_checksum_only_when_every_worker_serves_it() -> None:
    views = assess([host(C1)], C1, time.time())
    assert [v.state for v in views] == ["on"]
    assert [v.state for v in assess([host(C1, workers=[C1, C2])], C1, time.time())] == ["lagging"]
    assert [v.state for v in assess([host(C1, rejected=C2)], C2, time.time())] == ["rejected"]
    assert [v.state for v in assess([host(C1)], C1[:8], time.time())] == ["on"]  # a prefix


def test_endpoints_parse_and_bad_ones_are_named() -> None:
    assert parse_endpoints("http://10.0.0.1:2379, 10.0.0.2:2380,") == [
        ("10.0.0.1", 2379),
        ("10.0.0.2", 2380),
    ]
    for bad in ("https://h:1", "http://h:1/v3", "", "http://h:x"):
        with pytest.raises(FleetError):
            parse_endpoints(bad)
