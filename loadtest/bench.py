"""The benchmark harness: every pavis benchmark in one bounded invocation.

    python -m loadtest.bench [--quick|--full] [--out DIR] [--only compile,flip,proxy,reload]

(``--full`` is the default.)

Runs, in order: compile/lookup (``loadtest/bench_compile.py``) and flip latency
(``loadtest/bench_flip.py``) as subprocesses whose output is captured; proxy throughput
(``bench_proxy``: the upstream directly, nginx and pavis); reload disruption (``bench_reload``:
a reload storm under load against nginx and pavis, then reload latency and worker memory by
table size). Writes ``results.json`` and PNG plots (when matplotlib is installed) into
``--out`` (default ``bench-results/``), and prints one progress line per step on stderr.

Owns: the quick/full sizes, time bounds, and the shape of ``results.json``.
Must not: judge the figures (CI runs ``--quick`` to show the harness works, never to gate on
speed), or talk to anything but 127.0.0.1. Every process it starts is stopped by pid.

Quick mode finishes in under two minutes; full mode is bounded to about 20 minutes (each
script step has a hard timeout, and its partial output is kept when it hits it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtest import bench_proxy, bench_reload, nginx, plots, procstat, servers, wrk

STEPS = ("compile", "flip", "proxy", "reload")

# Arguments of the two scripts written elsewhere, and a hard bound on each.
MODES: dict[str, dict[str, Any]] = {
    "quick": {
        "compile": (["--sizes", "10,1000,10000", "--repeat", "2"], 40),
        "flip": (
            [
                "--sizes",
                "10,1000,10000",
                "--workers",
                "2",
                "--flips",
                "10",
                "--idle",
                "0",
                "--json",
            ],
            60,
        ),  # fmt: skip
        "proxy_duration": 2.0,
        "proxy_repeats": 1,
        "reload_duration": 5.0,
        "scale_sizes": (10, 1000),
    },
    "full": {
        "compile": (["--sizes", "10,1000,10000,100000", "--repeat", "5"], 240),
        "flip": (
            ["--sizes", "10,1000,10000,100000", "--workers", "2,4", "--idle", "10", "--json"],
            420,
        ),  # fmt: skip
        "proxy_duration": 10.0,
        "proxy_repeats": 3,
        "reload_duration": 30.0,
        "scale_sizes": (10, 1000, 10000),
    },
}

# What a failed step may raise (a process that would not start, wrk failing, a timeout);
# recorded in results.json under the step's "error".
STEP_ERRORS = (RuntimeError, OSError, subprocess.SubprocessError, ValueError)

_T0 = time.monotonic()


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def run_script(argv: list[str], timeout: float) -> dict[str, Any]:
    """Run a benchmark script; keep its output even if it has to be stopped at ``timeout``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=servers.REPO,
            start_new_session=True,
        )  # fmt: skip
        timed_out = False
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            pids = procstat.tree(proc.pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            servers.kill_remaining(pids[1:])
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    return {
        "command": " ".join(argv[1:] if argv[0] == sys.executable else argv),
        "returncode": proc.returncode,
        "timed_out": timed_out,
        "seconds": round(time.monotonic() - start, 2),
        "stdout": stdout,
        "stderr": stderr[-4000:],
    }


def parse_rows(text: str) -> list[dict[str, Any]]:
    """Rows of a script's output: JSON lines if it printed any, else its first table.

    A table is a header line of column names followed by lines of as many numeric cells,
    separated by ``|`` or whitespace (``1,234`` and unit suffixes like ``12.5ms`` are read).
    """
    rows = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    if rows:
        return rows
    header: list[str] | None = None
    for line in text.splitlines():
        cells = [c for c in re.split(r"\s*\|\s*|\s{1,}", line.strip()) if c]
        if not cells:
            continue
        nums = [_number(c) for c in cells]
        if header is None or all(n is None for n in nums):
            header = cells if all(n is None for n in nums) else header
            continue
        if len(cells) == len(header) and all(n is not None for n in nums[:1]):
            rows.append({h: (n if n is not None else c)
                         for h, c, n in zip(header, cells, nums, strict=True)})  # fmt: skip
    return rows


def _number(cell: str) -> float | None:
    m = re.fullmatch(r"(-?[\d,]*\.?\d+)(?:ms|MB|MiB|%|s|µs|us|ns)?", cell)
    if not m:
        return None
    v = float(m.group(1).replace(",", ""))
    return int(v) if v.is_integer() and "." not in m.group(1) else v


def script_step(name: str, mode: str) -> dict[str, Any]:
    path = servers.REPO / "loadtest" / f"bench_{name}.py"
    if not path.exists():
        return {"skipped": f"{path.name} is not there"}
    args, timeout = MODES[mode][name]
    res = run_script([sys.executable, "-m", f"loadtest.bench_{name}", *args], timeout)
    res["rows"] = parse_rows(res["stdout"])
    if res["returncode"] and "unrecognized arguments" in res["stderr"]:
        # A script that does not take these flags still gets one plain (bounded) run.
        res = run_script([sys.executable, "-m", f"loadtest.bench_{name}"], timeout)
        res["rows"] = parse_rows(res["stdout"])
    return res


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "wrk": wrk.available(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu_model"] = models[0] if models else None
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        info["mem_total_kib"] = int(f.readline().split()[1])
    info["load_avg_at_start"] = os.getloadavg()
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, cwd=servers.REPO, check=False)  # fmt: skip
    info["git_commit"] = git.stdout.strip() or None
    binary = nginx.available()
    if binary:
        v = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
        info["nginx"] = v.stderr.strip()
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run every pavis benchmark once, bounded in time.")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_const", const="quick", dest="mode",
                   help="under two minutes: small sizes, short runs (CI smoke test)")  # fmt: skip
    g.add_argument("--full", action="store_const", const="full", dest="mode",
                   help="the figures for docs/BENCHMARKS.md (bounded, about 20 minutes)")  # fmt: skip
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    ap.add_argument("--only", default=",".join(STEPS), help=f"subset of {','.join(STEPS)}")
    ap.add_argument("--duration", type=float, help="override seconds per wrk run and storm")
    ap.add_argument("--scale", help="route counts for reload/memory by size ('' = none)")
    ap.add_argument("--scenarios", help="subset of the proxy scenarios, e.g. keepalive-c50")
    ap.add_argument("--upstream", choices=("nginx", "python"), default="nginx",
                    help="nginx (static 3-byte answer, 1 worker) or tests.upstream")  # fmt: skip
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args(argv)
    mode = a.mode or "full"
    cfg = MODES[mode]
    only = [s for s in a.only.split(",") if s]
    unknown = set(only) - set(STEPS)
    if unknown:
        ap.error(f"unknown steps: {', '.join(sorted(unknown))}")
    a.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "mode": mode,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python -m loadtest.bench", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "notes": [],
    }
    missing = [n for n, ok in (("wrk", wrk.available()), ("nginx", nginx.available())) if not ok]
    if missing:
        result["notes"].append(f"not installed: {', '.join(missing)} (load steps skipped)")
    progress(f"bench: {mode} mode, steps {', '.join(only)}, results in {a.out}/")

    for name in ("compile", "flip"):
        if name in only:
            progress(f"{name}: running loadtest/bench_{name}.py")
            res = script_step(name, mode)
            result[name] = res
            state = res.get("skipped") or (
                f"{len(res['rows'])} rows in {res['seconds']} s"
                + (" (timed out, partial)" if res["timed_out"] else "")
                + (f", exit {res['returncode']}" if res["returncode"] else "")
            )
            progress(f"{name}: {state}")

    if "proxy" in only and not missing:
        progress("proxy: direct vs nginx vs pavis under wrk")
        scenarios = tuple(
            sc for sc in bench_proxy.SCENARIOS
            if a.scenarios is None or sc.name in a.scenarios.split(",")
        )  # fmt: skip
        try:
            pr = bench_proxy.run(
                duration=a.duration or cfg["proxy_duration"], repeats=cfg["proxy_repeats"],
                upstream_kind=a.upstream, scenarios=scenarios, progress=progress,
            )  # fmt: skip
        except STEP_ERRORS as exc:  # the step failed; the others still run
            result["proxy"] = {"error": repr(exc)}
            progress(f"proxy: failed: {exc!r}")
        else:
            result["proxy"] = pr.as_dict()
            print(bench_proxy.format_table(pr.summary()), flush=True)

    if "reload" in only and not missing:
        scale = (
            tuple(int(n) for n in a.scale.split(",") if n)
            if a.scale is not None
            else cfg["scale_sizes"]
        )
        progress("reload: storm under load against nginx and pavis")
        try:
            rr = bench_reload.run(
                duration=a.duration or cfg["reload_duration"], upstream_kind=a.upstream,
                scale_sizes=scale, progress=progress,
            )  # fmt: skip
        except STEP_ERRORS as exc:
            result["reload"] = {"error": repr(exc)}
            progress(f"reload: failed: {exc!r}")
        else:
            result["reload"] = rr
            print(bench_reload.format_table(rr["results"]), flush=True)
            if "scale" in rr:
                print(bench_reload.format_scale(rr["scale"]["rows"]), flush=True)

    result["seconds"] = round(time.monotonic() - _T0, 1)
    path = a.out / "results.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    progress(f"wrote {path}")
    if not a.no_plots:
        written, messages = plots.write_all(result, a.out)
        for m in messages:
            progress(m)
        for p in written:
            progress(f"wrote {p}")
    progress(f"done in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
