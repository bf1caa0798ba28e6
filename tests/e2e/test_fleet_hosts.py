"""Hosts following a fleet through a real 3-member etcd cluster: real `pavis serve` processes
(one worker each, distinct names, ports and state dirs) stand for the hosts.

Invariants:
- a publish reaches every host: each serves the new artifact (real HTTP requests answer the
  new routes) and reports its checksum, pid, workers and --bind overrides under its lease;
- a local reload or rollback on a fleet host is refused and changes nothing;
- an artifact a host rejects (damaged bytes in etcd, a listener change) changes nothing on
  it: it keeps serving what it had and reports the rejection with its reason;
- etcd losing its leader, or going away entirely, never stops a host serving; a host
  restarted while etcd is away boots its last-known-good; when etcd is back every host
  converges to the latest desired only, through compaction and an expired lease.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pavis.fleet import layout, publish
from pavis.fleet.store import Store
from tests.e2e.fleet_etcd import ETCD, Cluster, start_cluster, stop_cluster, wait_healthy
from tests.e2e.fleet_hosts import (
    CLI,
    NOMINAL_PORT,
    Fleet,
    checksum_of,
    sealed,
    sleep,
    wait_until,
)
from tests.e2e.helpers_proc import get, needs_workers

pytestmark = [needs_workers, pytest.mark.skipif(not Path(ETCD).exists(), reason=f"{ETCD} missing")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster of this module's own: these tests stop and restart its members."""
    c = start_cluster(tmp_path_factory.mktemp("etcd"))
    try:
        yield c
    finally:
        stop_cluster(c)


@pytest.fixture(scope="module")
def fleet(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Three hosts, h1..h3, that booted generation 1 (body v1) from etcd."""
    f = Fleet(cluster, tmp_path_factory.mktemp("fleet"))
    try:
        out = f.publish(f.write("v1"), "--no-wait")
        assert out.returncode == 0, out.stderr
        for h in ("h1", "h2", "h3"):
            f.start_host(h)
        yield f
    finally:
        f.cleanup()


def test_publish_reaches_every_host_and_local_reloads_are_refused(fleet: Fleet) -> None:
    v1 = checksum_of((fleet.root / "v1.pvs").read_bytes())
    reports = fleet.wait_serving(v1)
    assert {h: fleet.body(h) for h in fleet.hosts} == {"h1": "v1", "h2": "v1", "h3": "v1"}
    for h, sv in fleet.hosts.items():
        r = reports[h]
        assert r.binds == {"public": f"127.0.0.1:{sv.port}"}
        assert r.generation == 1 and r.ready and r.following == "desired"
        assert r.pid == sv.proc.pid if sv.proc else False

    v2 = fleet.write("v2", routes=3)
    out = fleet.publish(v2)
    assert out.returncode == 0, out.stderr + fleet.logs()
    assert "all 3 host(s) serve" in out.stdout
    c2 = checksum_of(v2.read_bytes())
    for h in fleet.hosts:
        assert fleet.body(h, "/route2") == "v2-2"  # a route only v2 has
        assert fleet.body(h) == "v2"
    status = fleet.fleet_cmd("status", "--expect", c2)
    assert status.returncode == 0, status.stdout + status.stderr

    # pavctl status shows the fleet and the bind override.
    sv = fleet.hosts["h1"]
    st = sv.status()
    assert st["binds"] == {"public": f"127.0.0.1:{sv.port}"}
    assert st["fleet"]["host_id"] == "h1" and st["fleet"]["generation"] == 2
    human = sv.pavctl("status")
    assert f"binds public=127.0.0.1:{sv.port}" in human.stdout, human.stdout
    # A local reload or rollback would diverge from the fleet: refused, nothing changes.
    for args in (["reload", str(fleet.root / "v1.pvs")], ["rollback"]):
        r = sv.pavctl(*args)
        assert r.returncode == 1 and "follows fleet" in r.stderr, r.stderr
    assert sv.status()["checksum"] == c2


def _serving(fleet: Fleet) -> str:
    found = fleet.store().desired()
    assert found is not None
    return found[0].checksum


def test_corrupted_bytes_are_rejected_by_every_host_and_nothing_changes(fleet: Fleet) -> None:
    before = _serving(fleet)
    data = sealed("corrupt-me", routes=2)
    checksum = checksum_of(data)
    with fleet.store() as store:
        manifest, chunks = layout.split(checksum, data)
        for n, chunk in enumerate(chunks):
            store.put(store.keys.chunk(checksum, n), chunk)
        store.put(store.keys.manifest(checksum), layout.encode(manifest))
        damaged = bytearray(chunks[0])
        damaged[len(damaged) // 2] ^= 0xFF
        fleet.cluster.etcdctl("put", store.keys.chunk(checksum, 0), stdin=bytes(damaged))
        # Desired moves to it exactly as a publish would (publish itself refuses damaged bytes).
        current = store.desired()
        publish._commit(store, current, checksum, "damaged", None, "publish", None)

    def all_rejected() -> bool:
        reports = fleet.reports()
        return (
            all(
                r.rejection is not None and r.rejection.checksum == checksum
                for r in reports.values()
            )
            and len(reports) == 3
        )

    wait_until(all_rejected, 30, "every host to reject the damaged artifact")
    for h, r in fleet.reports().items():
        assert r.rejection is not None and "chunk_checksum_mismatch" in r.rejection.reason, r
        assert r.on(before), r  # still serves what it had
        assert fleet.body(h) != "corrupt-me"
    status = fleet.fleet_cmd("status")
    assert status.returncode == 1 and "rejected" in status.stdout, status.stdout
    # Republishing the good bytes repairs the stored copy; hosts retry and converge.
    path = fleet.root / "corrupt-me.pvs"
    path.write_bytes(data)
    out = fleet.publish(path, "--timeout", "60")
    assert out.returncode == 0, out.stdout + out.stderr + fleet.logs()
    assert {fleet.body(h) for h in fleet.hosts} == {"corrupt-me"}


def test_canary_aborted_by_a_rejecting_host_puts_it_back(fleet: Fleet) -> None:
    before = _serving(fleet)
    # Another listener address: every host rejects it (listeners are fixed at boot).
    moved = fleet.root / "moved.pvs"
    moved.write_bytes(sealed("moved", port=NOMINAL_PORT + 1 if NOMINAL_PORT < 65535 else 1024))
    out = fleet.publish(moved, "--canary", "1", "--soak", "1s", "--timeout", "20")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "canary aborted" in out.stderr and "canary h1 rejected it" in out.stderr, out.stderr
    assert "listeners cannot change" in out.stderr
    assert f"canaries: h1 back on {before}" in out.stderr, out.stderr
    assert _serving(fleet) == before  # desired never moved
    reports = fleet.reports()
    moved_sum = checksum_of(moved.read_bytes())
    assert reports["h1"].rejection is not None and reports["h1"].rejection.checksum == moved_sum
    for h in ("h2", "h3"):  # never told
        rej = reports[h].rejection
        assert rej is None or rej.checksum != moved_sum, reports[h]
    with fleet.store() as store:
        assert store.get(store.keys.target("h1")) is None
    assert {fleet.body(h) for h in fleet.hosts} != {"moved"}

    # A canary that holds: h1 first, then the rest.
    good = fleet.write("canaried", routes=2)
    out = fleet.publish(good, "--canary", "1", "--soak", "1s")
    assert out.returncode == 0, out.stdout + out.stderr + fleet.logs()
    assert "canary: h1 of 3 host(s)" in out.stdout and "all 3 host(s) serve" in out.stdout
    assert {fleet.body(h, "/route1") for h in fleet.hosts} == {"canaried-1"}
    with fleet.store() as store:
        assert store.get(store.keys.target("h1")) is None


def test_a_canary_that_goes_silent_during_the_soak_aborts_and_comes_back(fleet: Fleet) -> None:
    """h1 takes the canary, then its supervisor stops answering (SIGSTOP) until its lease
    expires: the soak sees it leave, the publish aborts, and once h1 runs again it follows
    desired, which never moved, back to the old artifact."""
    before = _serving(fleet)
    path = fleet.write("silent", routes=2)
    cs = checksum_of(path.read_bytes())
    h1 = fleet.hosts["h1"]
    assert h1.proc is not None
    proc = subprocess.Popen(
        [*CLI, "publish", str(path), "--etcd", fleet.cluster.endpoints, "--fleet", fleet.name,
         "--canary", "1", "--soak", "25s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        fleet.wait_serving(cs, ["h1"])
        h1.proc.send_signal(signal.SIGSTOP)
        out, err = proc.communicate(timeout=60)
    finally:
        h1.proc.send_signal(signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out + err
    assert "canary h1 left the fleet" in err, err
    assert "h1 gone from the fleet" in err, err
    assert _serving(fleet) == before
    fleet.wait_serving(before, timeout=40)  # h1 back on desired
    assert fleet.body("h1") == old_body(fleet, before).decode()


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 60.0) -> str:
    """The publisher's stdout up to the line containing ``marker`` (it prints as it goes)."""
    assert proc.stdout is not None
    seen, deadline = "", time.monotonic() + timeout
    while marker not in seen:
        readable, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = proc.stdout.readline() if readable else ""
        if not line:
            raise AssertionError(f"publisher never printed {marker!r}: {seen}")
        seen += line
    return seen


def test_a_canary_failing_ready_during_the_soak_aborts_and_every_canary_goes_back(
    fleet: Fleet,
) -> None:
    """h1 and h2 take the canary; once the soak starts, h1's worker crash-loops (SIGKILLed
    each time it is back), so h1's /ready fails: h1 says so in its report, the publisher
    aborts, both canaries go back to desired (which never moved), h3 is never told."""
    before = _serving(fleet)
    path = fleet.write("unready", routes=2)
    cs = checksum_of(path.read_bytes())
    h1 = fleet.hosts["h1"]
    proc = subprocess.Popen(
        [*CLI, "publish", str(path), "--etcd", fleet.cluster.endpoints, "--fleet", fleet.name,
         "--canary", "2", "--soak", "30s", "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    killed: set[int] = set()
    try:
        out = _read_until(proc, "soaking")
        assert "canary: h1, h2 of 3 host(s)" in out, out
        # Until the abort takes h1 off its canary target: kill every worker h1 starts.
        while proc.poll() is None and fleet.reports()["h1"].following == "canary":
            for w in h1.status()["workers"]:
                if w["pid"] and w["pid"] not in killed:
                    killed.add(w["pid"])
                    os.kill(w["pid"], signal.SIGKILL)
            sleep(0.2)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, out + rest + err
    assert "canary aborted, desired unchanged: canary h1 failed /ready during the soak" in err, err
    assert f"canaries: h1, h2 back on {before}" in err and "(canary_aborted)" in err, err
    assert killed
    assert _serving(fleet) == before  # desired never moved
    with fleet.store() as store:
        assert store.get(store.keys.target("h1")) is None
        assert store.get(store.keys.target("h2")) is None
    reports = fleet.wait_serving(before, timeout=40)  # h1's worker is back, on the old one
    for r in reports.values():
        assert r.following == "desired", r
        assert r.rejection is None or r.rejection.checksum != cs, r
    body = old_body(fleet, before).decode()
    assert {h: fleet.body(h) for h in fleet.hosts} == {h: body for h in fleet.hosts}
    # h2 served it and went back; h3 was never told.
    assert cs in {e["checksum"] for e in fleet.hosts["h2"].history()}
    assert cs not in {e["checksum"] for e in fleet.hosts["h3"].history()}


def test_a_disconnected_host_converges_to_the_latest_through_compaction(fleet: Fleet) -> None:
    """h3's supervisor is stopped (SIGSTOP: its workers keep serving, it cannot talk to etcd)
    past its lease; meanwhile two publishes and a compaction. `fleet status --expect` sees it
    diverge; on SIGCONT it registers again and lands on the latest only."""
    h3 = fleet.hosts["h3"]
    assert h3.proc is not None
    old = _serving(fleet)
    h3.proc.send_signal(signal.SIGSTOP)
    try:
        a = fleet.write("skipped")
        b = fleet.write("latest", routes=2)
        assert fleet.publish(a, "--no-wait").returncode == 0
        ca, cb = checksum_of(a.read_bytes()), checksum_of(b.read_bytes())
        fleet.wait_serving(ca, ["h1", "h2"])
        status = fleet.fleet_cmd("status", "--expect", ca)
        assert status.returncode == 1 and "h3" in status.stderr, status.stdout + status.stderr
        assert fleet.publish(b, "--no-wait").returncode == 0
        fleet.wait_serving(cb, ["h1", "h2"])
        revision = json.loads(fleet.cluster.etcdctl("endpoint", "status", "-w", "json"))[0]
        fleet.cluster.etcdctl("compact", str(revision["Status"]["header"]["revision"]))
        assert get(h3.port)[1] == old_body(fleet, old)  # its worker serves on
        wait_until(lambda: "h3" not in fleet.reports(), 20, "h3's lease to expire")
    finally:
        h3.proc.send_signal(signal.SIGCONT)
    fleet.wait_serving(cb, timeout=40)
    assert fleet.body("h3", "/route1") == "latest-1"
    applied = {e["checksum"] for e in h3.history() if e["outcome"] == "accepted"}
    assert ca not in applied  # the intermediate generation was never replayed
    assert fleet.fleet_cmd("status", "--expect", cb).returncode == 0


def old_body(fleet: Fleet, checksum: str) -> bytes:
    for p in fleet.root.glob("*.pvs"):
        if checksum_of(p.read_bytes()) == checksum:
            return p.stem.encode()
    raise AssertionError(f"no local file for {checksum}")


def test_a_watch_from_a_compacted_revision_is_cancelled_and_reported(cluster: Cluster) -> None:
    from pavis.fleet.watch import Watch

    with Store(cluster.endpoints, "compactwatch") as store:
        store.put("/pavis/compactwatch/desired", b"1")
        entries, first = store.range_at(
            "/pavis/compactwatch/desired", "/pavis/compactwatch/desired0"
        )
        store.put("/pavis/compactwatch/desired", b"2")
        store.put("/pavis/compactwatch/desired", b"3")
        _, now = store.range_at("/pavis/compactwatch/desired", "/pavis/compactwatch/desired0")
        cluster.etcdctl("compact", str(now))
        w = Watch(store)
        assert (
            w.wait("/pavis/compactwatch/desired", "/pavis/compactwatch/desired0", first + 1, 5)
            == "compacted"
        )
        assert (
            w.wait("/pavis/compactwatch/desired", "/pavis/compactwatch/desired0", now + 1, 0.5)
            == "idle"
        )


def test_leader_killed_mid_publish(fleet: Fleet) -> None:
    """An artifact of several chunks: the leader is killed as soon as its first chunk is in
    etcd, before desired moves; the publish and every host carry on through the election."""
    path = fleet.write("after-leader", routes=2, pad=4_000_000)
    data = path.read_bytes()
    chunks = len(layout.split(checksum_of(data), data)[1])
    assert chunks >= 2, chunks
    leader = fleet.cluster.leader()
    store = fleet.store()
    proc = subprocess.Popen(
        [*CLI, "publish", str(path), "--etcd", fleet.cluster.endpoints, "--fleet", fleet.name,
         "--timeout", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first_chunk = store.keys.chunk(checksum_of(data), 0)
        wait_until(lambda: store.get(first_chunk) is not None, 60, "the first chunk in etcd")
        assert store.get(store.keys.manifest(checksum_of(data))) is None  # desired not moved yet
        leader.stop(signal.SIGKILL)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leader.restart()
        store.close()
    assert proc.returncode == 0, out + err + fleet.logs()
    fleet.wait_serving(checksum_of(path.read_bytes()), timeout=40)
    assert {fleet.body(h, "/route1") for h in fleet.hosts} == {"after-leader-1"}
    wait_healthy(fleet.cluster)


def test_etcd_gone_hosts_serve_on_and_a_restarted_host_boots_last_known_good(
    fleet: Fleet,
) -> None:
    current = _serving(fleet)
    body = old_body(fleet, current).decode()
    for m in fleet.cluster.members:
        m.stop()
    try:
        sleep(2)
        assert {fleet.body(h) for h in fleet.hosts} == {body}
        h2 = fleet.hosts["h2"]
        h2.stop()
        fleet.start_host("h2")  # boots with etcd away: from its last-known-good
        assert h2.status()["checksum"] == current
        assert "last-known-good" in h2.logs()
        assert fleet.body("h2") == body
        assert h2.status()["fleet"]["connected"] is False
    finally:
        for m in fleet.cluster.members:
            m.restart()
    wait_healthy(fleet.cluster)
    final = fleet.write("back", routes=2)
    out = fleet.publish(final, "--timeout", "60")
    assert out.returncode == 0, out.stdout + out.stderr + fleet.logs()
    assert {fleet.body(h, "/route1") for h in fleet.hosts} == {"back-1"}
