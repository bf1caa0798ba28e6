"""A real 3-member etcd cluster on free loopback ports, for the fleet tests.

Owns: starting the members (``/usr/bin/etcd``) in a temp dir, waiting until every member
answers ``/health``, stopping each member by pid and removing the dir. Tests that use it skip
with the reason when the binary is missing (``.ci/run`` installs it where it can).
Must not: share state between test runs: data dirs, ports and the cluster token are fresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from tests.helpers import free_ports

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


@dataclass
class Member:
    name: str
    client_url: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def restart(self) -> None:
        """Start the stopped member again on its data dir (it rejoins the cluster)."""
        assert not self.alive()
        self.log = open(self.log.name, "ab")  # noqa: SIM115 - closed by stop()
        self.proc = _spawn(self.argv, self.log)


@dataclass
class Cluster:
    root: Path
    members: list[Member] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [m.client_url for m in self.members]

    @property
    def endpoints(self) -> str:
        """The ``--etcd`` value: every member's client URL, comma-separated."""
        return ",".join(self.urls)

    def leader(self) -> Member:
        """The member that is currently the raft leader (asked of the members themselves)."""
        for m in self.members:
            if not m.alive():
                continue
            status = _post_json(m.client_url + "/v3/maintenance/status", {})
            if status and status.get("leader") == status.get("header", {}).get("member_id"):
                return m
        raise AssertionError("no etcd member reports itself the leader")

    def etcdctl(self, *args: str, stdin: bytes | None = None) -> bytes:
        live = ",".join(m.client_url for m in self.members if m.alive())
        env = dict(os.environ, ETCDCTL_API="3")
        out = subprocess.run(
            [ETCDCTL, "--endpoints", live, *args], input=stdin, env=env,
            capture_output=True, check=True, timeout=30,
        )  # fmt: skip
        return out.stdout


def _post_json(url: str, body: object, timeout: float = 1.0) -> dict[str, object] | None:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            value = json.loads(r.read())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1.0) as r:
            return bool(json.loads(r.read()).get("health") == "true")
    except (OSError, ValueError):
        return False


def _spawn(argv: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def wait_healthy(cluster: Cluster, timeout: float = 30.0) -> None:
    """Until every running member answers /health (after restarts)."""
    deadline = time.monotonic() + timeout
    while not all(_healthy(m.client_url) for m in cluster.members if m.alive()):
        if time.monotonic() > deadline:
            raise AssertionError("etcd did not become healthy again")
        time.sleep(0.1)


def start_cluster(root: Path, size: int = 3, timeout: float = 30.0) -> Cluster:
    ports = free_ports(2 * size)
    names = [f"m{i + 1}" for i in range(size)]
    peer = {n: f"http://127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(names)}
    initial = ",".join(f"{n}={u}" for n, u in peer.items())
    token = f"pavis-test-{uuid.uuid4().hex[:12]}"
    cluster = Cluster(root)
    for i, n in enumerate(names):
        client = f"http://127.0.0.1:{ports[2 * i]}"
        log = open(root / f"{n}.log", "wb")  # noqa: SIM115 - closed by Member.stop
        argv = [
            ETCD, "--name", n, "--data-dir", str(root / n),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer[n], "--initial-advertise-peer-urls", peer[n],
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", token, "--log-level", "warn",
        ]  # fmt: skip
        cluster.members.append(Member(n, client, _spawn(argv, log), log, argv))
    deadline = time.monotonic() + timeout
    while not all(_healthy(u) for u in cluster.urls):
        dead = [m.name for m in cluster.members if not m.alive()]
        if dead or time.monotonic() > deadline:
            logs = "\n".join((root / f"{m.name}.log").read_text(errors="replace")[-2000:]
                             for m in cluster.members)  # fmt: skip
            stop_cluster(cluster)
            raise RuntimeError(f"etcd cluster did not become healthy (dead: {dead}):\n{logs}")
        time.sleep(0.1)
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    for m in cluster.members:
        m.stop()


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[Cluster]:
    """A fresh 3-member etcd cluster for the session; tests use unique fleet names in it."""
    if not os.access(ETCD, os.X_OK):
        pytest.skip(f"etcd is not installed ({ETCD} missing): apt-get install etcd-server")
    root = Path(tempfile.mkdtemp(prefix="pavis-etcd-"))
    try:
        cluster = start_cluster(root)
        try:
            yield cluster
        finally:
            stop_cluster(cluster)
    finally:
        shutil.rmtree(root, ignore_errors=True)
