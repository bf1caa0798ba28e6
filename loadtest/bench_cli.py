"""Wall time of the live ``pavctl`` commands against a running instance.

Owns: starting one ``pavis serve`` (1 worker, a direct-route config), then timing N runs of
each command as a fresh process — ``python -c pass`` (the interpreter's own start-up, for
reference), ``pavctl status``, ``pavctl reload CONFIG --wait`` of an unchanged config (answered
from the source digest), and of two configs in turn (a compile and a flip each time) — and
printing the median and the spread. Must not: assert anything; tests never time things.

Run:  python -m loadtest.bench_cli [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time

from loadtest import servers
from tests.helpers import free_port

CONFIG = """version: 1
listeners:
  - {{name: public, address: "127.0.0.1:{port}"}}
virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - {{name: body, match: {{prefix: /}}, direct: {{status: 200, body: "{body}"}}}}
"""


def _time(argv: list[str], runs: int) -> list[float]:
    """Wall seconds of each of ``runs`` runs of ``argv`` (each must exit 0)."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        out.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr}")
    return out


def _row(name: str, samples: list[float]) -> dict[str, object]:
    ms = sorted(s * 1000 for s in samples)
    return {
        "command": name,
        "runs": len(ms),
        "median_ms": round(statistics.median(ms), 1),
        "min_ms": round(ms[0], 1),
        "max_ms": round(ms[-1], 1),
    }


def run(runs: int) -> list[dict[str, object]]:
    work = servers.workdir("cli")
    port = free_port()
    a, b = work / "a.yaml", work / "b.yaml"
    a.write_text(CONFIG.format(port=port, body="A"))
    b.write_text(CONFIG.format(port=port, body="B"))
    pv = servers.Pavis(work, workers=1)
    try:
        pv.start(a, port)
        ctl = [*servers.pavctl_argv()]
        control = ["--control", str(pv.control)]
        rows = [_row("python -c pass", _time([sys.executable, "-c", "pass"], runs))]
        rows.append(_row("pavctl status", _time([*ctl, "status", *control], runs)))
        reload_a = [*ctl, "reload", str(a), "--wait", *control]
        _time(reload_a, 1)  # the first reload of the booted file compiles once
        rows.append(_row("pavctl reload CONFIG --wait (unchanged)", _time(reload_a, runs)))
        flips = []
        for i in range(runs):
            path = b if i % 2 == 0 else a
            flips += _time([*ctl, "reload", str(path), "--wait", *control], 1)
        rows.append(_row("pavctl reload CONFIG --wait (changed)", flips))
        return rows
    finally:
        pv.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="runs per command [30]")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args()
    rows = run(max(1, args.runs))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'command':42}  {'median':>8}  {'min':>8}  {'max':>8}   ({rows[0]['runs']} runs)")
    for r in rows:
        print(
            f"{r['command']!s:42}  {r['median_ms']:>6} ms  {r['min_ms']:>6} ms  {r['max_ms']:>6} ms"
        )


if __name__ == "__main__":
    main()
