"""Paired A/B proxy benchmark: a git revision of pavis beside the installed one, same upstream.

Owns: exporting revision A (``git archive``) into a scratch directory and building it there
(compiled in place like an editable install, or from source with ``--pure``), starting it and
the installed build (B) as two ``pavis serve`` on one nginx upstream, and running wrk against
them in pairs, alternating which goes first. A single 5 s run moves by ±20 % on a shared
2-core box; a pair runs A and B within seconds of each other, so the per-pair B/A ratios, and
their median, are what to read.
Must not: judge the figures, or touch the checkout (A lives in a temp dir, removed at the end).

Run: ``python -m loadtest.bench_pair --base HEAD [--pairs 6] [--duration 3]
[--connections 50] [--close]``. The commit messages of the worker changes quote its output.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable

from loadtest import bench_proxy, servers
from loadtest.bench_proxy import Scenario, Target


def export(rev: str, dest: str, pure: bool) -> str:
    """Revision ``rev`` of this repository in ``dest``, built; returns its build's description."""
    archive = subprocess.run(
        ["git", "-C", str(servers.REPO), "archive", rev], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    env = {**os.environ, "PYTHONPATH": dest}
    if not pure:
        subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
            cwd=dest, env=env, capture_output=True, check=False,
        )  # fmt: skip
    probe = "import workers._build as b, workers; print(*b.describe(), sep=': ')"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=dest, env={**env, "PAVIS_PURE": "1" if pure else "0"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return (out.stdout or out.stderr).strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="HEAD", help="revision A (default HEAD)")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--duration", type=float, default=3)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--close", action="store_true", help="Connection: close requests")
    ap.add_argument("--pure", action="store_true", help="build A from source, not compiled")
    a = ap.parse_args(argv)
    scenario = Scenario(
        f"{'close' if a.close else 'keepalive'}-c{a.connections}",
        a.connections,
        ("Connection: close",) if a.close else (),
    )
    work = servers.workdir("pair")
    stops: list[Callable[[], None]] = []
    try:
        src = work / "a-src"
        src.mkdir()
        desc = export(a.base, str(src), a.pure)
        up = bench_proxy.start_upstream("nginx", work)
        stops.append(up.stop)
        env_a = {**os.environ, "PYTHONPATH": str(src), "PAVIS_PURE": "1" if a.pure else "0"}
        ta = bench_proxy.start_pavis(work, up, name="A", env=env_a)
        stops.append(ta.stop)
        tb = bench_proxy.start_pavis(work, up, name="B")
        stops.append(tb.stop)
        print(f"A = {a.base} ({desc}); B = the installed build; {scenario.name}, "
              f"{a.duration:g} s per run", flush=True)  # fmt: skip
        ratios_rps: list[float] = []
        ratios_cpu: list[float] = []
        ratios_p99: list[float] = []
        for i in range(a.pairs):
            order: list[Target] = [ta, tb] if i % 2 == 0 else [tb, ta]
            got = {t.name: bench_proxy.measure(t, scenario, i, a.duration, up) for t in order}
            ma, mb = got["A"], got["B"]
            ratios_rps.append(mb.rps / ma.rps if ma.rps else 0.0)
            ratios_cpu.append(mb.cpu_us_per_req / ma.cpu_us_per_req if ma.cpu_us_per_req else 0.0)
            ratios_p99.append(mb.p99_ms / ma.p99_ms if ma.p99_ms else 0.0)
            print(f"pair {i + 1}: A {ma.rps:8.0f} req/s {ma.cpu_us_per_req:5.1f} µs/req "
                  f"p99 {ma.p99_ms:5.2f} ms   B {mb.rps:8.0f} req/s "
                  f"{mb.cpu_us_per_req:5.1f} µs/req p99 {mb.p99_ms:5.2f} ms", flush=True)  # fmt: skip
        print(f"B/A median: req/s {statistics.median(ratios_rps):.3f}, "
              f"CPU per request {statistics.median(ratios_cpu):.3f}, "
              f"p99 {statistics.median(ratios_p99):.3f}")  # fmt: skip
    finally:
        for stop in reversed(stops):
            stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
