"""Smoke tests of the load-test harness (loadtest/): it runs, stops everything, writes results.

Invariants: the harness never judges speed, so nothing here compares a figure to a threshold —
only that figures exist, that failures are counted, and that every process it started is
gone afterwards. Skips cleanly when wrk or nginx is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest import nginx, procstat, servers, wrk
from tests.helpers import free_port, has_matplotlib

REPO = Path(__file__).resolve().parents[2]

needs_tools = pytest.mark.skipif(
    wrk.available() is None or nginx.available() is None, reason="wrk and nginx are needed"
)


def test_procstat_sees_a_child_and_its_cpu() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nsum(range(2_000_000))\ntime.sleep(30)"]
    )
    try:
        deadline = 50
        while procstat.cpu_seconds(child.pid) == 0.0 and deadline:
            subprocess.run(["sleep", "0.1"], check=True)
            deadline -= 1
        assert child.pid in procstat.tree(os.getpid())
        s = procstat.sample(os.getpid())
        assert s.cpu_s > 0
        assert s.private[os.getpid()] > 0
        assert procstat.tree_cpu_seconds(child.pid) > 0
    finally:
        child.kill()
        child.wait()
    assert procstat.tree(child.pid) == []


@needs_tools
def test_private_nginx_starts_answers_and_stops_by_pid() -> None:
    ng = nginx.Nginx("smoke")
    port = free_port()
    try:
        ng.start(nginx.static_conf(ng.prefix, port, workers=1), (port,))
        pids = procstat.tree(ng.pid)
        assert len(pids) == 2  # master + one worker
        assert servers.http_get(port, "/")[1] == b"ok\n"
        r = wrk.run(f"http://127.0.0.1:{port}/", connections=2, duration=1)
        assert r.requests > 0
        assert r.failed == 0
    finally:
        ng.stop()
    assert all(procstat.tree(p) == [] for p in pids)
    assert not ng.prefix.exists()


@pytest.mark.slow  # ~15–30 s: starts nginx twice, pavis three times, and runs wrk
@needs_tools
def test_quick_harness_runs_in_a_tiny_configuration(tmp_path: Path) -> None:
    """The proxy and reload steps end to end, 1 s runs, two scenarios, one small table."""
    before = set(procstat.tree(os.getpid()))
    out = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest.bench", "--quick", "--only", "proxy,reload",
         "--duration", "1", "--scenarios", "keepalive-c10,close-c50", "--scale", "10",
         "--out", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            # Kill the harness's whole tree by pid, children first seen while it still is
            # their parent: its nginx and pavis run in sessions of their own and would be
            # orphaned (seen once: an nginx left running after a timed-out run).
            servers.kill_remaining(procstat.tree(proc.pid))
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    summary = result["proxy"]["summary"]
    assert set(summary) == {"keepalive-c10", "close-c50"}
    for scenario in summary.values():
        assert scenario["direct"]["rps"] > 0
        assert scenario["nginx"]["rps"] > 0
        assert "rps_vs_direct" in scenario["nginx"]
    reload = result["reload"]["results"]
    assert reload["nginx"]["reloads"] > 0
    assert reload["nginx"]["requests"] > 0
    assert reload["nginx"]["failed"] is not None  # counted, whatever it is
    assert result["reload"]["scale"]["rows"][0]["routes"] == 10
    if servers.pavis_serve_available():
        assert "pavis" in summary["keepalive-c10"], result["proxy"]["notes"]
        assert reload["pavis"]["reloads"] > 0, reload["pavis"]["notes"]
    if has_matplotlib():
        assert (out / "throughput_p99.png").exists()
        assert (out / "reload_failures.png").exists()
    # Everything the harness started is gone, shared memory included (instance names carry
    # the harness's pid).
    assert set(procstat.tree(os.getpid())) == before
    assert list(Path("/dev/shm").glob(f"pavis.b{proc.pid}x*")) == []



def _in_git_checkout() -> bool:
    r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True)
    return r.returncode == 0


@needs_tools
@pytest.mark.skipif(not _in_git_checkout(), reason="needs a git checkout (git archive HEAD)")
def test_pair_benchmark_runs_both_builds_and_cleans_up() -> None:
    """One 1 s pair of HEAD (from source, no compile) against the installed build."""
    before = set(procstat.tree(os.getpid()))
    r = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_pair", "--base", "HEAD", "--pure",
         "--pairs", "1", "--duration", "1", "--connections", "4"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    # A ran from its scratch export, not the installed (possibly compiled) checkout.
    assert "A = HEAD (pure: " in r.stdout, r.stdout
    assert "pair 1: A" in r.stdout and "B/A median" in r.stdout, r.stdout
    assert set(procstat.tree(os.getpid())) == before
