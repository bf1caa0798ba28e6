"""Smoke tests of the data-plane benchmark (``python -m loadtest.bench_proxy``): it runs, reports
in the documented shape, and stops everything it started.

Invariants: nothing here compares a figure with a threshold — only that the report has a row,
a verdict line per scenario and an overall line, that ``--json`` holds one run per proxy and
round, that a scenario whose configuration ``pavctl check`` refuses is skipped with the reason
(and runs once the feature is there), that every setup's configurations are accepted by
``pavctl check`` and ``nginx -t``, and that the idle-connection holder holds what it says.
Skips without wrk or nginx.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest import dataplane_setup, nginx, procstat, servers, wrk
from loadtest.dataplane_probe import IdleHolder
from loadtest.dataplane_scenarios import SETUPS
from tests.helpers import free_port, has_matplotlib

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    wrk.available() is None or nginx.available() is None, reason="wrk and nginx are needed"
)


def test_one_tiny_round_reports_every_scenario_and_cleans_up(tmp_path: Path) -> None:
    """ka10 and the rate-limited route, one round of 1 s runs (about 10 s)."""
    before = set(procstat.tree(os.getpid()))
    out = tmp_path / "rounds.json"
    png = tmp_path / "ratios.png"
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest.bench_proxy", "--duration", "1", "--rounds", "1",
         "--scenarios", "ka10,ratelimit", "--json", str(out), "--plot", str(png)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # kill the harness's tree by pid, then reap it
            servers.kill_remaining(procstat.tree(proc.pid))
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    lines = stdout.splitlines()
    assert lines[0].split()[:3] == ["scenario", "req/s", "pavis"], stdout
    assert any(ln.startswith("ka10 ") for ln in lines), stdout
    verdicts = [ln for ln in lines if ln.startswith("verdict ")]
    assert [v.split(":")[0] for v in verdicts] == ["verdict ka10", "verdict ratelimit"], stdout
    assert verdicts[0].startswith(("verdict ka10: met — req/s", "verdict ka10: MISSED — req/s"))
    assert "p99" in verdicts[0] and "CPU/req" in verdicts[0]
    assert any(ln.startswith("overall: ") for ln in lines), stdout

    result = json.loads(out.read_text())
    ka10 = [r for r in result["runs"] if r["scenario"] == "ka10"]
    assert sorted(r["target"] for r in ka10) == ["nginx", "pavis"]
    assert all(r["requests"] > 0 and r["cpu_s"] >= 0 for r in ka10), ka10
    summary = {s["scenario"]: s for s in result["summaries"]}
    for key in ("rps_ratio", "p99_ratio", "cpu_ratio"):
        assert isinstance(summary["ka10"][key], float)
    assert summary["ka10"]["verdict"]["met"] in (True, False)
    rl = summary["ratelimit"]
    if "skipped" in rl:  # rate limiting is not on this build: the reason is pavctl's
        assert "pavctl check rejects the ratelimit configuration" in rl["skipped"]
        assert "rate_limit" in rl["skipped"]
        assert verdicts[1].startswith("verdict ratelimit: skipped — pavctl check rejects")
    else:
        targets = sorted(r["target"] for r in result["runs"] if r["scenario"] == "ratelimit")
        assert targets == ["nginx", "nginx-plain", "pavis", "pavis-plain"]
        assert "feature_cpu_us_per_req" in rl["pavis"]

    assert png.exists() == has_matplotlib()  # the plot is optional, never an error
    assert set(procstat.tree(os.getpid())) == before
    assert list(Path("/dev/shm").glob(f"pavis.b{proc.pid}x*")) == []



def test_every_setup_configuration_is_accepted(tmp_path: Path) -> None:
    """pavis configs by ``pavctl check`` (the rate-limited one only once the field exists),
    nginx configs by ``nginx -t``: a typo in a scenario's config fails here, not mid-run."""
    certs = dataplane_setup.make_certs(tmp_path)
    ports = dataplane_setup.Ports(free_port(), free_port(), free_port())

    def prefix(name: str) -> Path:
        (tmp_path / f"ng-{name}" / "tmp").mkdir(parents=True, exist_ok=True)
        return tmp_path / f"ng-{name}"

    confs = {"upstream": dataplane_setup.upstream_conf(prefix("upstream"), free_port())}
    for name, st in SETUPS.items():
        pv = tmp_path / f"{name}.yaml"
        pv.write_text(dataplane_setup.pavis_conf(st, ports, 1234, certs))
        refused = dataplane_setup.pavctl_check(pv)
        if st.rate_limit and refused is not None:
            assert "rate_limit" in refused and "unknown_field" in refused, refused
        else:
            assert refused is None, f"{name}: {refused}"
        confs[name] = dataplane_setup.nginx_proxy_conf(prefix(name), st, ports, 1234, certs)
    for name, conf in confs.items():
        d = prefix(name)
        (d / "nginx.conf").write_text(conf)
        r = subprocess.run(
            [str(nginx.available()), "-t", "-p", str(d), "-e", str(d / "err.log"),
             "-c", str(d / "nginx.conf")],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert r.returncode == 0, f"{name}: {r.stderr}"


def test_idle_holder_opens_checks_and_closes(tmp_path: Path) -> None:
    port, _pid, stop = dataplane_setup.start_upstream(tmp_path)
    holder = None
    try:
        holder = IdleHolder(port, 300)
        assert holder.ready() == 300
        assert holder.still_open() == 300
    finally:
        if holder is not None:
            holder.stop()
        stop()
    assert holder.proc.returncode == 0
