"""A full /dev/shm: no worker crashes on an unbacked page, and a generation that cannot be
written is rejected with ``no_space`` and recorded in history.

Each test runs ``pavis serve`` in a private mount namespace over a 256 KiB tmpfs on /dev/shm
(root only), and fills that tmpfs through ``/proc/<pid>/root``; the namespace and its tmpfs
vanish with the supervisor.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.e2e.helpers_proc import Serve, needs_workers, pid_alive, wait_for
from tests.helpers import free_ports

pytestmark = [
    needs_workers,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None,
        reason="needs root and unshare for a private /dev/shm",
    ),
]

PRIVATE_SHM = [
    "unshare", "-m", "--propagation", "private", "sh", "-c",
    'mount -t tmpfs -o size=256k,mode=1777 tmpfs /dev/shm && exec "$@"', "sh",
]  # fmt: skip


def large_config(sv: Serve, clusters: int = 150) -> str:
    """Enough clusters and endpoints that a worker's stats span several pages."""
    lines = [
        "version: 1",
        "listeners:",
        f'  - {{name: public, address: "127.0.0.1:{sv.port}"}}',
        f'admin: {{address: "127.0.0.1:{sv.admin_port}"}}',
        "clusters:",
    ]
    ports = iter(free_ports(3 * clusters))  # distinct: one free_port() each may repeat
    for i in range(clusters):
        eps = ", ".join(f'"127.0.0.1:{next(ports)}"' for _ in range(3))
        lines.append(f"  - {{name: cluster-number-{i:04d}, endpoints: [{eps}]}}")
    lines += ["virtual_hosts:", "  - name: main", '    domains: ["*"]', "    routes:"]
    for i in range(clusters):
        lines.append(
            f"      - {{name: r{i}, match: {{prefix: /c{i}/}}, "
            f"forward: {{cluster: cluster-number-{i:04d}}}}}"
        )
    lines.append("      - {name: body, match: {prefix: /}, direct: {status: 200, body: A}}")
    return "\n".join(lines) + "\n"


def fill(root: Path) -> None:
    """Write into ``root``/dev/shm until the tmpfs is full."""
    with open(root / "dev/shm/filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


@pytest.fixture
def sv(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Serve(tmp_path, workers=2)
    yield s
    s.cleanup()


def test_full_dev_shm_after_a_large_reload_crashes_no_worker(sv: Serve) -> None:
    small = sv.config("A")
    big = sv.tmp / "big.yaml"
    big.write_text(large_config(sv))
    sv.start(small, wrap=PRIVATE_SHM)
    r = sv.pavctl("reload", str(big), "--no-wait")
    assert r.returncode == 0, r.stderr
    st = wait_for(lambda: (s := sv.status())["ready"] and s, what="the large config served")
    pids = {w["pid"] for w in st["workers"]}
    assert sv.proc is not None
    fill(Path(f"/proc/{sv.proc.pid}/root"))
    time.sleep(3.5)  # several heartbeats: each publishes the workers' stats
    st = sv.status()
    assert {w["pid"] for w in st["workers"]} == pids, sv.logs()
    assert all(pid_alive(p) for p in pids)
    assert "SIGBUS" not in sv.logs() and "signal 7" not in sv.logs()


def test_a_generation_that_does_not_fit_is_rejected_with_no_space(sv: Serve) -> None:
    small = sv.config("A")
    big = sv.tmp / "big.yaml"
    big.write_text(large_config(sv))
    sv.start(small, wrap=PRIVATE_SHM)
    before = sv.status()
    assert sv.proc is not None
    fill(Path(f"/proc/{sv.proc.pid}/root"))
    r = sv.pavctl("reload", str(big))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no_space" in r.stderr and "internal" not in r.stderr, r.stderr
    assert "Traceback" not in sv.logs()
    last = sv.history()[-1]
    assert last["op"] == "reload" and last["outcome"] == "rejected"
    assert "no_space" in last["reason"]
    after = sv.status()
    assert after["generation"] == before["generation"] and after["ready"]
    assert {w["pid"] for w in after["workers"]} == {w["pid"] for w in before["workers"]}
