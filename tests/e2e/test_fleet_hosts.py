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
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from pavis.fleet import layout, publish
from pavis.fleet.store import Store
from tests.e2e.fleet_hosts import Fleet, checksum_of, sealed, sleep, wait_until
from tests.fleet_etcd import ETCD, Cluster, start_cluster, stop_cluster, wait_healthy
from tests.helpers_proc import get, needs_workers

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
