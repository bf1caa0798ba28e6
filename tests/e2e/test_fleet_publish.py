"""Publishing to a fleet through a real 3-member etcd cluster: desired, chunks, races, drift.

Invariants:
- the bytes a publish stores come back byte-identical, however many chunks they span;
- of two publishers that start from the same desired revision exactly one wins, and the other
  is told who;
- nothing read from etcd is trusted: a damaged chunk or manifest is rejected with its reason;
- a live host report for another checksum is drift (exit 1);
- rollback moves desired to a stored artifact without recompiling; history stays bounded;
- losing the etcd leader does not stop a publish that lists the other members.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import xxhash

from pavis import artifact
from pavis.compiler import compile_path, compile_text
from pavis.errors import FleetError
from pavis.fleet import layout, publish
from pavis.fleet.layout import HostReport, Rejection, WorkerState
from pavis.fleet.store import Store, put_report
from tests.e2e import fleet_etcd
from tests.e2e.fleet_etcd import ETCD, Cluster, start_cluster, stop_cluster
from tests.helpers import free_ports

etcd_cluster = fleet_etcd.etcd_cluster  # the session's 3-member cluster (a fixture)

CLI = [sys.executable, "-c", "from pavis.cli import main; main()"]


def pavctl(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PAVIS_ETCD", "PAVIS_FLEET")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def config_text(body: str, routes: int = 1, body_bytes: int = 0) -> str:
    """A valid config whose artifact differs per ``body``; ``body_bytes`` pads each route's
    direct body with random hex (incompressible), to make large artifacts quickly."""
    items = []
    for i in range(routes):
        text = body + (os.urandom(body_bytes // 2).hex() if body_bytes else "")
        items.append({"name": f"r{i}", "match": {"exact": f"/r{i}"},
                      "direct": {"status": 200, "body": text}})  # fmt: skip
    return json.dumps({
        "version": 1,
        "listeners": [{"name": "public", "address": "127.0.0.1:8080"}],
        "virtual_hosts": [{"name": "site", "domains": ["*"], "routes": items}],
    })  # fmt: skip


def sealed(body: str, **kw: Any) -> bytes:
    return artifact.seal(compile_text(config_text(body, **kw), "json"))


@pytest.fixture
def fleet() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(etcd_cluster: Cluster, fleet: str) -> Iterator[Store]:
    with Store(etcd_cluster.endpoints, fleet) as s:
        yield s


def report(
    host: str, checksum: str, generation: int = 1, rejected: str | None = None
) -> HostReport:
    return HostReport(
        host_id=host, pid=4242, generation=generation, checksum=checksum,
        workers=[WorkerState(pid=4243, generation=generation, checksum=checksum)],
        applied_at=time.time() - 3, binds={"public": "0.0.0.0:80"},
        rejection=None if rejected is None
        else Rejection(checksum=rejected, reason="bad_magic", time=time.time()),
    )  # fmt: skip


@pytest.fixture
def leases(store: Store) -> Iterator[list[int]]:
    """Leases granted by a test; revoked at teardown so fake host reports vanish."""
    granted: list[int] = []
    yield granted
    for lease in granted:
        store.revoke(lease)


def fake_host(store: Store, leases: list[int], r: HostReport) -> int:
    lease = store.grant(30)
    leases.append(lease)
    put_report(store, r, lease)
    return lease


# ---------------------------------------------------------------------------------- publish


def test_publish_config_points_desired_at_it_and_bytes_round_trip(
    etcd_cluster: Cluster, fleet: str, store: Store, tmp_path: Path
) -> None:
    cfg = tmp_path / "site.json"
    cfg.write_text(config_text("hello"))
    expected = artifact.seal(compile_path(cfg))
    checksum = artifact.verify(expected).checksum

    out = pavctl(
        "publish", str(cfg), "--etcd", etcd_cluster.endpoints, "--fleet", fleet, "--no-wait"
    )
    assert out.returncode == 0, out.stderr
    assert f"fleet {fleet} generation 1 checksum {checksum}" in out.stdout

    found = store.desired()
    assert found is not None
    desired = found[0]
    assert (desired.checksum, desired.generation, desired.source) == (checksum, 1, str(cfg))
    assert store.fetch(checksum) == expected
    assert [(h.generation, h.checksum, h.action) for h in store.history()] == [
        (1, checksum, "publish")
    ]

    # The same artifact again changes nothing: no new generation.
    again = pavctl(
        "publish", str(cfg), "--etcd", etcd_cluster.endpoints, "--fleet", fleet, "--no-wait"
    )
    assert again.returncode == 0, again.stderr
    assert "already desired" in again.stdout
    assert len(store.history()) == 1


def test_large_artifact_is_split_over_chunks_and_reassembles(
    etcd_cluster: Cluster, fleet: str, store: Store, tmp_path: Path
) -> None:
    data = sealed("big", routes=100, body_bytes=60_000)
    assert len(data) > 5 * 1024 * 1024
    path = tmp_path / "big.pvs"
    path.write_bytes(data)
    checksum = artifact.verify(data).checksum

    out = pavctl(
        "publish", str(path), "--etcd", etcd_cluster.endpoints, "--fleet", fleet, "--no-wait"
    )
    assert out.returncode == 0, out.stderr

    manifest = store.manifest(checksum)
    assert manifest is not None
    assert manifest.chunks == -(-len(data) // layout.CHUNK_SIZE) >= 6
    keys = etcd_cluster.etcdctl("get", "--prefix", "--keys-only", store.keys.artifacts).split()
    assert len(keys) == manifest.chunks + 1  # the chunks and the manifest
    assert store.fetch(checksum) == data


def test_racing_publishers_exactly_one_wins_and_the_loser_names_the_winner(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish.publish(store, sealed("base"), "base.yaml", publisher="setup")
    # Both publishers read desired before either commits: hold each one after it has read
    # desired and stored its chunks, until both are there.
    barrier = threading.Barrier(2, timeout=30)
    original = publish.store_artifact

    def store_then_meet(s: Store, data: bytes, checksum: str) -> bool:
        result = original(s, data, checksum)
        barrier.wait()
        return result

    monkeypatch.setattr(publish, "store_artifact", store_then_meet)
    results: dict[str, Any] = {}

    def run(name: str) -> None:
        with Store(",".join(store.urls), store.keys.fleet) as own:
            try:
                results[name] = publish.publish(own, sealed(name), f"{name}.yaml", publisher=name)
            except FleetError as exc:
                results[name] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    errors = {n: r for n, r in results.items() if isinstance(r, FleetError)}
    wins = {n: r for n, r in results.items() if not isinstance(r, FleetError)}
    assert len(wins) == 1 and len(errors) == 1, results
    (winner, (desired, moved)), (_, error) = (
        next(iter(wins.items())),
        next(iter(errors.items())),
    )
    assert moved and desired.generation == 2
    assert error.reason == "publish_conflict" and error.exit_code == 1
    assert f"{winner} moved fleet {store.keys.fleet} to generation 2" in str(error)
    now = store.desired()
    assert now is not None and now[0].publisher == winner
    assert [h.publisher for h in store.history()] == ["setup", winner]


def test_corrupted_chunk_is_rejected_with_its_reason(etcd_cluster: Cluster, store: Store) -> None:
    data = sealed("c", routes=30, body_bytes=60_000)  # two chunks
    publish.publish(store, data, "c.yaml")
    checksum = artifact.verify(data).checksum
    key = store.keys.chunk(checksum, 1)
    chunk = bytearray(store.get(key).value)  # type: ignore[union-attr]
    chunk[100] ^= 0xFF
    etcd_cluster.etcdctl("put", key, stdin=bytes(chunk))
    with pytest.raises(FleetError) as exc:
        store.fetch(checksum)
    assert exc.value.reason == "chunk_checksum_mismatch"
    assert key in str(exc.value)

    # A consistent forgery (chunk and manifest digests both rewritten) still fails the
    # artifact's own checksum, as a local reload would.
    manifest, chunks = layout.split(checksum, data[:200] + bytes([data[200] ^ 1]) + data[201:])
    for n, c in enumerate(chunks):
        store.put(store.keys.chunk(checksum, n), c)
    store.put(store.keys.manifest(checksum), layout.encode(manifest))
    with pytest.raises(FleetError) as exc:
        store.fetch(checksum)
    assert exc.value.reason == "checksum_mismatch"

    # Publishing the same bytes again repairs the stored copy.
    publish.publish(store, data, "c.yaml")
    assert store.fetch(checksum) == data


def test_an_artifact_stored_by_the_first_format_is_refused_and_republishing_rewrites_it(
    store: Store,
) -> None:
    """Format 1 (an earlier pavis) stored raw chunks and a manifest without ``format``."""
    data = sealed("old", routes=20)
    publish.publish(store, data, "old.yaml")
    checksum = artifact.verify(data).checksum
    manifest, _ = layout.split(checksum, data)
    first = {k: v for k, v in msgspec.to_builtins(manifest).items() if k != "format"}
    first["chunk_xxh3_64"] = [xxhash.xxh3_64_hexdigest(data)]
    store.put(store.keys.chunk(checksum, 0), data)
    store.put(store.keys.manifest(checksum), msgspec.json.encode(first))
    with pytest.raises(FleetError) as exc:
        store.fetch(checksum)
    assert exc.value.reason == "layout_format" and exc.value.exit_code == 1
    assert store.keys.manifest(checksum) in str(exc.value)
    assert "publish the artifact again" in str(exc.value)

    desired, moved = publish.publish(store, data, "old.yaml")  # already desired: repaired
    assert not moved and desired.checksum == checksum
    assert store.fetch(checksum) == data
    stored = store.get(store.keys.chunk(checksum, 0))
    assert stored is not None and len(stored.value) < len(data) // 2  # compressed again


def test_malformed_desired_is_rejected_naming_the_key(
    etcd_cluster: Cluster, store: Store, fleet: str
) -> None:
    etcd_cluster.etcdctl("put", store.keys.desired, '{"checksum": "nope"}')
    out = pavctl("fleet", "status", "--etcd", etcd_cluster.endpoints, "--fleet", fleet)
    assert out.returncode == 1
    assert f"etcd key {store.keys.desired}" in out.stderr and "(malformed)" in out.stderr


# ---------------------------------------------------------------------------------- status


def test_fleet_status_reports_drift_of_a_live_host(
    etcd_cluster: Cluster, fleet: str, store: Store, leases: list[int]
) -> None:
    a, b = sealed("a"), sealed("b")
    ca, cb = artifact.verify(a).checksum, artifact.verify(b).checksum
    publish.publish(store, a, "a.yaml")
    args = ("--etcd", etcd_cluster.endpoints, "--fleet", fleet)

    on = fake_host(store, leases, report("h-on", ca))
    ok = pavctl("fleet", "status", *args)
    assert ok.returncode == 0, ok.stderr
    assert "h-on" in ok.stdout and ca in ok.stdout

    fake_host(store, leases, report("h-old", cb))
    drift = pavctl("fleet", "status", *args)
    assert drift.returncode == 1
    assert "h-old serves " + cb in drift.stderr and "drift" in drift.stderr

    as_json = pavctl("fleet", "status", "--json", *args)
    doc = json.loads(as_json.stdout)
    assert doc["desired"]["checksum"] == ca
    assert {h["host_id"]: h["state"] for h in doc["hosts"]} == {"h-on": "on", "h-old": "lagging"}
    assert doc["hosts"][0]["binds"] == {"public": "0.0.0.0:80"}

    # --expect: the checksum every host must serve (a prefix is enough).
    expect = pavctl("fleet", "status", "--expect", cb[:12], *args)
    assert expect.returncode == 1 and "expected" in expect.stderr

    # The drifting host's lease ends: its report goes, and the fleet is on desired.
    store.revoke(leases.pop())
    assert pavctl("fleet", "status", "--expect", ca, *args).returncode == 0
    assert on in leases


def test_a_host_report_under_another_hosts_key_is_rejected(
    etcd_cluster: Cluster, fleet: str, store: Store, leases: list[int]
) -> None:
    publish.publish(store, sealed("a"), "a.yaml")
    lease = store.grant(30)
    leases.append(lease)
    store.put(store.keys.host("h-one"), layout.encode(report("h-two", "0" * 32)), lease=lease)
    out = pavctl("fleet", "status", "--etcd", etcd_cluster.endpoints, "--fleet", fleet)
    assert out.returncode == 1
    assert f"etcd key {store.keys.host('h-one')}: report is for host 'h-two'" in out.stderr


def test_publish_wait_polls_host_reports(
    etcd_cluster: Cluster, fleet: str, store: Store, leases: list[int], tmp_path: Path
) -> None:
    args = ("--etcd", etcd_cluster.endpoints, "--fleet", fleet)
    first = tmp_path / "first.json"
    first.write_text(config_text("first"))
    out = pavctl("publish", str(first), *args)
    assert out.returncode == 0, out.stderr
    assert "no host reports" in out.stdout

    second = tmp_path / "second.json"
    second.write_text(config_text("second"))
    new = artifact.verify(artifact.seal(compile_path(second))).checksum
    old = artifact.verify(artifact.seal(compile_path(first))).checksum
    fake_host(store, leases, report("h-on", new, generation=2))
    fake_host(store, leases, report("h-lag", old))
    late = pavctl("publish", str(second), "--timeout", "1", *args)
    assert late.returncode == 4, late.stderr
    assert "h-lag serves " + old in late.stderr and "h-on" not in late.stderr

    fake_host(store, leases, report("h-lag", old, rejected=new))
    third = pavctl("publish", str(second), "--timeout", "5", *args)
    assert third.returncode == 1 and "h-lag rejected it: bad_magic" in third.stderr


# ---------------------------------------------------------------------------------- rollback


def test_fleet_rollback_moves_desired_back_without_recompiling(
    etcd_cluster: Cluster, fleet: str, store: Store
) -> None:
    a, b = sealed("a"), sealed("b")
    ca, cb = artifact.verify(a).checksum, artifact.verify(b).checksum
    publish.publish(store, a, "a.yaml")
    publish.publish(store, b, "b.yaml")
    args = ("--etcd", etcd_cluster.endpoints, "--fleet", fleet)

    out = pavctl("fleet", "rollback", *args)
    assert out.returncode == 0, out.stderr
    assert f"generation 3 checksum {ca}" in out.stdout
    desired = store.desired()
    assert desired is not None and desired[0].checksum == ca
    assert [(h.generation, h.checksum, h.action) for h in store.history()] == [
        (1, ca, "publish"), (2, cb, "publish"), (3, ca, "rollback"),
    ]  # fmt: skip

    by_gen = pavctl("fleet", "rollback", "--to", "2", *args)
    assert by_gen.returncode == 0 and f"checksum {cb}" in by_gen.stdout
    by_sum = pavctl("fleet", "rollback", "--to", ca[:12], *args)
    assert by_sum.returncode == 0 and f"generation 5 checksum {ca}" in by_sum.stdout
    missing = pavctl("fleet", "rollback", "--to", "99", *args)
    assert missing.returncode == 1 and "generation 99 is not in history" in missing.stderr

    hist = pavctl("fleet", "history", "--json", *args)
    assert [e["action"] for e in json.loads(hist.stdout)] == [
        "publish",
        "publish",
        "rollback",
        "rollback",
        "rollback",
    ]
    text = pavctl("fleet", "history", *args)
    assert text.returncode == 0 and "rollback to generation 2" in text.stdout


def test_history_keeps_the_last_entries_only(store: Store) -> None:
    for i in range(layout.HISTORY_LIMIT + 3):
        publish.publish(store, sealed(f"h{i}"), f"h{i}.yaml")
    history = store.history()
    assert len(history) == layout.HISTORY_LIMIT
    assert [h.generation for h in history] == list(range(4, layout.HISTORY_LIMIT + 4))


# ---------------------------------------------------------------------------------- etcd down


def test_unreachable_etcd_exits_3_naming_the_urls(fleet: str, tmp_path: Path) -> None:
    ports = free_ports(2)
    urls = ",".join(f"http://127.0.0.1:{p}" for p in ports)
    path = tmp_path / "a.pvs"
    path.write_bytes(sealed("a"))
    out = pavctl("publish", str(path), "--etcd", urls, "--fleet", fleet)
    assert out.returncode == 3
    assert all(f"http://127.0.0.1:{p}" in out.stderr for p in ports)
    assert "(etcd_unreachable)" in out.stderr


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A cluster of its own, for a test that kills one of its members."""
    if not os.access(ETCD, os.X_OK):
        pytest.skip(f"etcd is not installed ({ETCD} missing)")
    root = Path(tempfile.mkdtemp(prefix="pavis-etcd-"))
    cluster = start_cluster(root)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
        shutil.rmtree(root, ignore_errors=True)


def test_publish_survives_the_leader_being_killed(
    own_cluster: Cluster, fleet: str, tmp_path: Path
) -> None:
    args = ("--etcd", own_cluster.endpoints, "--fleet", fleet, "--no-wait")
    first, second = tmp_path / "a.pvs", tmp_path / "b.pvs"
    first.write_bytes(sealed("a"))
    second.write_bytes(sealed("b"))
    assert pavctl("publish", str(first), *args).returncode == 0

    leader = own_cluster.leader()
    os.kill(leader.pid, signal.SIGKILL)
    leader.proc.wait(10)
    # The dead leader first in the list: the client must fail over to the others.
    urls = ",".join(
        [leader.client_url] + [m.client_url for m in own_cluster.members if m is not leader]
    )
    out = pavctl("publish", str(second), "--etcd", urls, "--fleet", fleet, "--no-wait")
    assert out.returncode == 0, out.stderr
    assert "generation 2" in out.stdout
    status = pavctl("fleet", "status", "--json", "--etcd", urls, "--fleet", fleet)
    assert (
        json.loads(status.stdout)["desired"]["checksum"]
        == artifact.verify(second.read_bytes()).checksum
    )
