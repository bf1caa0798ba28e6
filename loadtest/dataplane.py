"""The data-plane benchmark: pavis beside nginx in every scenario users run, in rounds.

    python -m loadtest.bench_proxy [--rounds 3] [--duration 8] [--scenarios ka10,ka50,...]
                                   [--json OUT] [--plot OUT.png] [--list]

Owns: the run order (one upstream; each setup's pavis and nginx started once; in every round
each scenario runs against both proxies back to back, pavis first in even rounds and nginx
first in odd ones), the checks before the rounds (each proxy answers, SNI picks the right
certificate, TLS sessions resumed), one measurement (wrk; around it, from
``loadtest.dataplane_probe``, the CPU of the proxy's whole process tree, its workers' deaths,
and for the idle scenario its PSS and the idle connections' holder), the raw rounds in
``--json``, and the command line.
Must not: judge figures beyond the goal's verdict (``loadtest.dataplane_report``), or leave a
process running: everything it starts is stopped by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loadtest import dataplane_report as report
from loadtest import dataplane_setup as setup
from loadtest import nginx, procstat, servers, wrk
from loadtest.dataplane_probe import (
    IdleHolder,
    alive,
    peer_cn,
    resumed,
    tree_cpu_s,
    tree_pss,
    wait_workers,
)
from loadtest.dataplane_report import Run
from loadtest.dataplane_scenarios import SCENARIOS, SETUPS, Scenario, select

Progress = Callable[[str], None]
SETTLE_S = 0.25  # after a run, before its CPU and workers are read


def stderr_progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    """Set one variable of this process's environment (wrk inherits it) for a block."""
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def url(proxy: setup.Proxy, scenario: Scenario, path: str) -> str:
    if scenario.listener == "tls":
        return f"https://127.0.0.1:{proxy.ports.tls}{path}"
    if scenario.listener == "sni":
        return f"https://{setup.SNI_NAME}:{proxy.ports.sni}{path}"
    return f"http://127.0.0.1:{proxy.ports.plain}{path}"


class Bench:
    """One benchmark run: its work directory, upstream, certificates and pairs of proxies."""

    def __init__(self, duration: float, progress: Progress) -> None:
        self.duration = duration
        self.progress = progress
        self.work = servers.workdir("dataplane")
        self.stops: list[Callable[[], None]] = []
        self.pairs: dict[str, setup.Pair] = {}
        self.refused: dict[str, str] = {}  # setup → why pavis is not in it
        self.notes: list[str] = []
        self.resumption: dict[str, int] = {}
        self.certs: setup.Certs | None = None
        self.upload_lua = self.work / "upload.lua"
        self.upstream = 0

    def start(self, scenarios: tuple[Scenario, ...]) -> None:
        fds = setup.raise_fd_limit()
        if any(s.idle for s in scenarios) and fds < max(s.idle for s in scenarios) + 1024:
            self.notes.append(f"RLIMIT_NOFILE is {fds}: too low for the idle scenario")
        self.certs = setup.make_certs(self.work)
        port, _pid, stop = setup.start_upstream(self.work)
        self.stops.append(stop)
        self.upstream = port
        uploads = {s.upload_bytes for s in scenarios if s.upload_bytes}
        if uploads:
            size = max(uploads)
            self.upload_lua.write_text(
                f'wrk.method = "POST"\nwrk.body = string.rep("x", {size})\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n'
            )
        for name in dict.fromkeys(s.setup for s in scenarios):
            st = SETUPS[name]
            self.progress(f"starting pavis and nginx with {st.workers} workers ({name})")
            pair, refused = setup.start_pair(self.work, st, port, self.certs)
            self.pairs[name] = pair
            self.stops.append(functools.partial(setup.stop_pair, pair))
            if refused:
                self.refused[name] = refused
                self.progress(f"{name}: pavis skipped: {refused}")
            self._warm(pair)

    def _warm(self, pair: setup.Pair) -> None:
        """Check each proxy answers, and the SNI listener picks its certificates; warm pools."""
        for p in pair.proxies.values():
            status, _ = servers.http_get(p.ports.plain, "/")
            if status != 200:
                self.notes.append(f"{pair.setup.name}/{p.name}: GET / answered {status}")
            wrk.run(f"http://127.0.0.1:{p.ports.plain}/", connections=50, duration=1)
            if p.ports.tls:
                n = resumed(p.ports.tls, setup.SNI_NAME)
                self.resumption[f"{pair.setup.name}/{p.name}"] = n
                self.notes.append(
                    f"{pair.setup.name}/{p.name}: TLS sessions resumed on {n} of 8 new connections"
                )
            if p.ports.sni:
                for sni, want in ((setup.SNI_NAME, setup.SNI_NAME), ("other.invalid", "default")):
                    got = peer_cn(p.ports.sni, sni)
                    if want not in got:
                        self.notes.append(f"{p.name}: SNI {sni} got certificate {got!r}")
            wait_workers(p, pair.setup.workers)

    def measure(
        self, scenario: Scenario, target: str, proxy: setup.Proxy, path: str, rnd: int, order: int
    ) -> Run:
        holder = None
        pss_before = pss_after = 0
        idle_open = -1
        try:
            if scenario.idle:
                pss_before = tree_pss(proxy.root_pid)
                holder = IdleHolder(proxy.ports.plain, scenario.idle)
                held = holder.ready()
                pss_after = tree_pss(proxy.root_pid)
                if held != scenario.idle:
                    self.notes.append(f"{target}: only {held} idle connections opened")
            workers = wait_workers(proxy, self.pairs[scenario.setup].setup.workers)
            w_before = [procstat.cpu_seconds(p) for p in workers]
            before = tree_cpu_s(proxy.root_pid)
            tls_conf = (
                str(self.certs.openssl_conf)
                if scenario.listener != "plain" and self.certs
                else None
            )
            with _env("OPENSSL_CONF", tls_conf):
                r = wrk.run(
                    url(proxy, scenario, path),
                    connections=scenario.connections,
                    duration=self.duration,
                    headers=scenario.headers,
                    script=str(self.upload_lua) if scenario.upload_bytes else None,
                    timeout_s=5.0 if scenario.upload_bytes else 2.0,
                )
            # A worker that a client's closing kills dies as wrk exits: let that happen (and
            # the supervisor reap it) inside the run, where its CPU and its loss belong.
            time.sleep(SETTLE_S)
            cpu = tree_cpu_s(proxy.root_pid) - before
            # A worker that died reads 0: its share is unknown, not negative.
            w_cpu = [
                max(0.0, procstat.cpu_seconds(p) - b)
                for p, b in zip(workers, w_before, strict=True)
            ]
            lost = sum(not alive(p) for p in workers)
            if holder is not None:
                idle_open = holder.still_open()
        finally:
            if holder is not None:
                holder.stop()
        total = sum(w_cpu)
        return Run(
            round=rnd, scenario=scenario.name, target=target, order=order, rps=r.rps,
            p50_ms=r.p50_ms, p99_ms=r.p99_ms, requests=r.requests, failed=r.failed, cpu_s=cpu,
            cpu_us_per_req=cpu / r.requests * 1e6 if r.requests else float("nan"),
            worker_cpu_split=[round(c / total, 3) for c in w_cpu] if total > 0 else [],
            pss_before=pss_before, pss_after=pss_after, idle_open=idle_open, lost_workers=lost,
            command=r.command,
        )  # fmt: skip

    def worker_deaths(self) -> None:
        """Note what the pavis supervisors logged about workers that died."""
        for name in self.pairs:
            log = self.work / name / "pavis" / "pavis.log"
            if not log.exists():
                continue
            deaths = [ln for ln in log.read_text(errors="replace").splitlines()
                      if "WARNING worker" in ln]  # fmt: skip
            if deaths:
                self.notes.append(
                    f"pavis ({name}): {len(deaths)} worker deaths, e.g. {deaths[0][:200]}"
                )

    def stop(self) -> None:
        self.worker_deaths()
        for stop in reversed(self.stops):
            stop()
        self.stops.clear()
        shutil.rmtree(self.work, ignore_errors=True)


def plan(scenario: Scenario, rnd: int) -> list[tuple[str, str, str]]:
    """(target name, proxy, path) in this round's order: pavis first in even rounds."""
    pairs = [("pavis", "pavis"), ("nginx", "nginx")]
    if rnd % 2:
        pairs.reverse()
    out = []
    for target, proxy in pairs:
        out.append((target, proxy, scenario.path))
        if scenario.plain_path:
            out.append((f"{target}-plain", proxy, scenario.plain_path))
    return out


def estimate_s(scenarios: tuple[Scenario, ...], rounds: int, duration: float) -> float:
    """Seconds a run takes: wrk's time, ~0.9 s around each wrk run, ~3 s to open and close
    each proxy's idle connections, ~3 s to start each setup (measured on 2 cores)."""
    runs = sum(4 if s.plain_path else 2 for s in scenarios)
    idle = sum(2 * 3.0 for s in scenarios if s.idle)
    starts = 3.0 * len({s.setup for s in scenarios})
    return rounds * (runs * (max(1, round(duration)) + 0.9) + idle) + starts + 3


def run(
    scenarios: tuple[Scenario, ...], rounds: int, duration: float,
    progress: Progress = stderr_progress,
) -> dict[str, Any]:  # fmt: skip
    load_at_start = os.getloadavg()
    bench = Bench(duration, progress)
    runs: list[Run] = []
    started = time.monotonic()
    try:
        bench.start(scenarios)
        live = [s for s in scenarios if s.setup not in bench.refused]
        total = rounds * sum(len(plan(s, 0)) for s in live)
        done = 0
        for rnd in range(rounds):
            for s in live:
                pair = bench.pairs[s.setup]
                for order, (target, proxy, path) in enumerate(plan(s, rnd)):
                    done += 1
                    try:
                        m = bench.measure(s, target, pair.proxies[proxy], path, rnd, order)
                    except (RuntimeError, OSError, ValueError) as exc:
                        bench.notes.append(f"round {rnd} {s.name} {target}: {exc}"[:600])
                        progress(f"{done}/{total} {s.name} {target}: failed: {exc}")
                        continue
                    runs.append(m)
                    progress(
                        f"{done}/{total} round {rnd + 1} {s.name:12} {target:12} "
                        f"{m.rps:9.0f} req/s p99 {m.p99_ms:7.2f} ms {m.cpu_us_per_req:7.1f} "
                        f"µs CPU/req failed {m.failed} split {m.worker_cpu_split}"
                    )
    finally:
        bench.stop()
    summaries = [
        report.summarise(
            s, runs,
            skipped=(f"{bench.refused[s.setup]}" if s.setup in bench.refused else None),
        )
        for s in scenarios
    ]  # fmt: skip
    return {
        "config": {
            "rounds": rounds, "duration_s": duration, "scenarios": [asdict(s) for s in scenarios],
            "wrk_threads": 2, "tls_suite": setup.TLS_SUITE,
        },
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": load_at_start,
                    "load_avg_at_end": os.getloadavg(),
                    "nginx": nginx.available(), "wrk": wrk.available()},
        "runs": [asdict(r) for r in runs],
        "summaries": summaries,
        "overall": report.overall(summaries),
        "notes": bench.notes,
        "tls_sessions_resumed_of_8": bench.resumption,
        "seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m loadtest.bench_proxy",
        description="pavis beside nginx in every data-plane scenario, medians over rounds, "
        "and a verdict against the goal",
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds (default 3); medians reported")
    ap.add_argument("--repeats", type=int, dest="rounds", help=argparse.SUPPRESS)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run (default 8)")
    ap.add_argument("--scenarios", help="comma-separated subset (see --list)")
    ap.add_argument("--json", type=Path, help="write the raw rounds and the summary here")
    ap.add_argument("--plot", type=Path, help="a PNG of the ratios (needs matplotlib)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    a = ap.parse_args(argv)
    if a.list:
        for s in SCENARIOS:
            print(f"{s.name:12} [{s.setup}] {s.what}")
        return 0
    try:
        scenarios = select(a.scenarios)
    except ValueError as exc:
        ap.error(str(exc))
    if a.rounds < 1 or a.duration < 1:
        ap.error("--rounds and --duration must be at least 1")
    missing = [n for n, ok in (("wrk", wrk.available()), ("nginx", nginx.available())) if not ok]
    if missing:
        print(f"not installed: {', '.join(missing)}", file=sys.stderr)
        return 2
    load = os.getloadavg()[0]
    if load > 0.5:
        stderr_progress(
            f"load average {load:.1f} before the start: other work on this machine skews the figures"
        )
    est = estimate_s(scenarios, a.rounds, a.duration)
    stderr_progress(
        f"{len(scenarios)} scenarios x {a.rounds} rounds x {a.duration:g} s: about "
        f"{est / 60:.0f} min"
    )
    res = run(scenarios, a.rounds, a.duration)
    print(report.format_report(res["summaries"]))
    for note in res["notes"]:
        print(f"note: {note}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2, default=str))
    if a.plot:
        report.plot(res["summaries"], a.plot)
    stderr_progress(f"done in {res['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
