"""Real `pavis serve` processes standing for the hosts of a fleet, on one real etcd cluster.

Owns: a fleet of hosts that share one artifact (its listener address is never bound: each host
binds its own port with ``--bind public=127.0.0.1:PORT``), each with its own instance name,
state dir and control socket (``tests.helpers_proc.Serve``); helpers to publish, read the
hosts' reports and wait for convergence. Everything started is stopped by pid at teardown.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from pavis import artifact
from pavis.compiler import compile_text
from pavis.fleet.layout import HostReport
from pavis.fleet.store import Store
from tests.e2e.fleet_etcd import Cluster
from tests.e2e.helpers_proc import Serve, free_port, get, wait_for

CLI = [sys.executable, "-c", "from pavis.cli import main; main()"]
NOMINAL_PORT = free_port()  # the artifact's own listener address: no host binds it


def fleet_config(body: str, port: int = NOMINAL_PORT, routes: int = 1, pad: int = 0) -> str:
    """Every path answers ``body``; ``/route<i>`` (i < routes) answers ``body-<i>``; ``pad``
    bytes of random hex (under ``/pad<n>``) make an artifact of several etcd chunks."""
    extra = "".join(
        f"      - name: r{i}\n        match: {{exact: /route{i}}}\n"
        f'        direct: {{status: 200, body: "{body}-{i}", content_type: text/plain}}\n'
        for i in range(routes)
    )
    for n in range(0, pad, 60_000):  # a direct body is at most 64 KiB
        extra += (
            f"      - name: pad{n}\n        match: {{exact: /pad{n}}}\n"
            f'        direct: {{status: 200, body: "{os.urandom(30_000).hex()}"}}\n'
        )
    return f"""version: 1
listeners:
  - {{name: public, address: "127.0.0.1:{port}"}}
virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
{extra}      - name: body
        match: {{prefix: /}}
        direct: {{status: 200, body: "{body}", content_type: text/plain}}
"""


def sealed(body: str, **kw: Any) -> bytes:
    return artifact.seal(compile_text(fleet_config(body, **kw), "yaml"))


def checksum_of(data: bytes) -> str:
    return artifact.verify(data).checksum


def pavctl(*args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PAVIS_ETCD", "PAVIS_FLEET")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


class Fleet:
    """A fleet name in ``cluster`` and the hosts following it."""

    def __init__(self, cluster: Cluster, root: Path) -> None:
        self.cluster = cluster
        self.root = root
        self.name = f"f{uuid.uuid4().hex[:10]}"
        self.hosts: dict[str, Serve] = {}

    def store(self) -> Store:
        return Store(self.cluster.endpoints, self.name)

    def write(self, body: str, **kw: Any) -> Path:
        path = self.root / f"{body}.pvs"
        path.write_bytes(sealed(body, **kw))
        return path

    def publish(self, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return pavctl("publish", str(path), "--etcd", self.cluster.endpoints,
                      "--fleet", self.name, *args)  # fmt: skip

    def fleet_cmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        return pavctl("fleet", *args, "--etcd", self.cluster.endpoints, "--fleet", self.name)

    def start_host(self, host_id: str, ready: bool = True, etcd: str | None = None) -> Serve:
        sv = self.hosts.get(host_id)
        if sv is None:
            d = self.root / host_id
            d.mkdir()
            # Not the per-test prefix (t<pid>x): these hosts outlive a test, and conftest's
            # per-test check would unlink their segments. Unlinked by Serve.cleanup().
            name = f"fleet{os.getpid()}x{uuid.uuid4().hex[:8]}"
            sv = self.hosts[host_id] = Serve(d, workers=1, name=name)
        sv.start(
            None, "--etcd", etcd or self.cluster.endpoints, "--fleet", self.name,
            "--host-id", host_id, "--bind", f"public=127.0.0.1:{sv.port}", ready=ready,
        )  # fmt: skip
        return sv

    def reports(self) -> dict[str, HostReport]:
        with self.store() as s:
            return {r.host_id: r for r in s.hosts()}

    def wait_serving(self, checksum: str, hosts: list[str] | None = None,
                     timeout: float = 30.0) -> dict[str, HostReport]:  # fmt: skip
        """Until every named host's report says it is ready and serves ``checksum`` in every
        worker."""
        names = hosts if hosts is not None else list(self.hosts)

        def on() -> dict[str, HostReport] | None:
            reports = self.reports()
            if all(h in reports and reports[h].on(checksum) and reports[h].ready
                   and reports[h].workers for h in names):  # fmt: skip
                return reports
            return None

        try:
            return dict(wait_for(on, timeout, f"hosts {names} on {checksum}"))
        except AssertionError:
            raise AssertionError(f"{self.reports()}\n" + self.logs()) from None

    def body(self, host_id: str, path: str = "/") -> str:
        status, body = get(self.hosts[host_id].port, path)
        assert status == 200, (host_id, status, body)
        return body.decode()

    def logs(self) -> str:
        return "\n".join(f"--- {h}\n{sv.logs()[-3000:]}" for h, sv in self.hosts.items())

    def cleanup(self) -> None:
        for sv in self.hosts.values():
            sv.cleanup()


def wait_until(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    return wait_for(predicate, timeout, what)


def sleep(seconds: float) -> None:
    time.sleep(seconds)
