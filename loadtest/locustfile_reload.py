"""Locust scenario: mixed traffic while reloads and rollbacks run at a fixed rate.

    PAVIS_CONTROL=/tmp/pavis-bench/control.sock \
    locust -f loadtest/locustfile_reload.py --headless -u 50 -r 10 -t 30s \
        --csv bench-results/reload --host http://127.0.0.1:8080

The traffic is ``locustfile_mixed``'s. A background greenlet (in the standalone or master
process only) runs, every ``PAVIS_RELOAD_INTERVAL`` seconds (default 0.5), alternately
``pavctl reload CONFIG --wait`` and ``pavctl rollback --wait``, against
``PAVIS_CONTROL``. ``PAVIS_RELOAD_CONFIGS`` lists configs, comma-separated (default
``PAVIS_CONFIG`` or examples/demo.yaml): the first is the one the proxy runs; each reload
loads one of the others in turn (the first if it is alone), so every reload changes the
generation and every rollback returns to the first. Each change's window (start, end, command, exit code) is recorded; at the
end every failed request is attributed to a change window (it started between a command's
start − ``PAVIS_ATTRIBUTION_MARGIN`` s, default 0.05, and its end + margin) or not.

Writes, next to locust's own CSV files: ``<csv>_changes.csv`` (one line per change) and
``<csv>_attribution.csv`` (failures during changes vs outside them), and prints the summary.
Owns: the change schedule and the attribution. Must not: start the proxy.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtest.locust_common import DEFAULT_CONFIG
from loadtest.locustfile_mixed import MixedUser  # noqa: F401 - the traffic of this scenario

INTERVAL = float(os.environ.get("PAVIS_RELOAD_INTERVAL", "0.5"))
MARGIN = float(os.environ.get("PAVIS_ATTRIBUTION_MARGIN", "0.05"))
CONTROL = os.environ.get("PAVIS_CONTROL", "")
CONFIGS = [
    os.path.abspath(c)
    for c in (os.environ.get("PAVIS_RELOAD_CONFIGS")
              or os.environ.get("PAVIS_CONFIG") or str(DEFAULT_CONFIG)).split(",")
    if c
]  # fmt: skip


@dataclass
class Change:
    start: float
    end: float
    command: str
    returncode: int
    output: str


CHANGES: list[Change] = []
FAILURES: list[tuple[float, str, str]] = []  # (start time, name, error)
_greenlet: gevent.Greenlet | None = None


def _pavctl() -> list[str]:
    exe = shutil.which("pavctl")
    return [exe] if exe else [sys.executable, "-c", "from pavis.cli import main; main()"]


def _changer() -> None:
    n = 0
    next_tick = time.monotonic()
    while True:
        if n % 2 == 0:
            # The running config is assumed to be the first; reload one of the others, so
            # every reload changes something and every rollback returns to the first.
            others = CONFIGS[1:] or CONFIGS
            args = ["reload", others[(n // 2) % len(others)], "--wait"]
        else:
            args = ["rollback", "--wait"]
        if CONTROL:
            args += ["--control", CONTROL]
        n += 1
        start = time.time()
        # locust has patched subprocess with gevent: this waits without blocking the users.
        p = subprocess.run([*_pavctl(), *args], capture_output=True, text=True, timeout=60,
                           check=False)  # fmt: skip
        CHANGES.append(Change(start, time.time(), "pavctl " + " ".join(args), p.returncode,
                              (p.stdout + p.stderr).strip()[:300]))  # fmt: skip
        next_tick += INTERVAL
        gevent.sleep(max(0.0, next_tick - time.monotonic()))
        if next_tick < time.monotonic():
            next_tick = time.monotonic()  # overran: no catch-up burst


@events.request.add_listener
def _on_request(
    name: str, exception: Any = None, start_time: float | None = None, **_: Any
) -> None:
    if exception is not None:
        FAILURES.append((start_time or time.time(), name, str(exception)[:200]))


@events.test_start.add_listener
def _start(environment: Environment, **_: Any) -> None:
    global _greenlet
    if isinstance(environment.runner, WorkerRunner):
        return  # one changer per test, in the master or the standalone process
    _greenlet = gevent.spawn(_changer)


def attribute() -> tuple[list[tuple[float, str, str, bool]], int, int]:
    """Each failure with whether it started inside a change window (± MARGIN)."""
    rows = []
    for t, name, err in FAILURES:
        inside = any(c.start - MARGIN <= t <= c.end + MARGIN for c in CHANGES)
        rows.append((t, name, err, inside))
    during = sum(1 for r in rows if r[3])
    return rows, during, len(rows) - during


@events.test_stop.add_listener
def _stop(environment: Environment, **_: Any) -> None:
    if _greenlet is not None:
        _greenlet.kill(block=True)
    if isinstance(environment.runner, WorkerRunner):
        return
    rows, during, outside = attribute()
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        with open(f"{prefix}_changes.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["start", "end", "ms", "command", "returncode", "output"])
            for c in CHANGES:
                w.writerow([f"{c.start:.6f}", f"{c.end:.6f}", f"{(c.end - c.start) * 1000:.1f}",
                            c.command, c.returncode, c.output])  # fmt: skip
        with open(f"{prefix}_attribution.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["start", "name", "error", "during_change"])
            for t, name, err, inside in rows:
                w.writerow([f"{t:.6f}", name, err, int(inside)])
    ok = [c for c in CHANGES if c.returncode == 0]
    ms = sorted((c.end - c.start) * 1000 for c in ok)
    median = ms[len(ms) // 2] if ms else float("nan")
    print(
        f"changes: {len(CHANGES)} ({len(CHANGES) - len(ok)} failed), median {median:.1f} ms; "
        f"failed requests: {during} during a change window, {outside} outside "
        f"(margin {MARGIN * 1000:.0f} ms)",
        file=sys.stderr,
    )
    if isinstance(environment.runner, MasterRunner):
        print("note: failures are counted from the master's view only", file=sys.stderr)
