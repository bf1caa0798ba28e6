"""Reload disruption benchmark: keep-alive load while reloading every 100 ms.

Owns: the reload storm for nginx (rewrite an included file, SIGHUP the master), HAProxy
(rewrite the config, SIGUSR2 the master-worker master) and pavis (``pavctl reload CONFIG
--wait``, the real command, alternating two configurations), each after a steady-state run of
the same load without reloads, run back to back in one
invocation against the same upstream and the same wrk load; and the figures: requests, failed
requests (non-2xx/3xx + socket errors), reload latency, time until a change is visible,
process count and memory during the storm.
Must not: judge the figures.

Both proxies alternate two configurations that differ only in what ``/which`` answers ("A" or
"B"), so a fresh request shows which generation served it. Reloads start on a fixed tick; one
that takes longer than the interval delays the next (never overlaps it) — except pavis's real
``pavctl`` commands, which start on their tick like a pipeline firing commands — and the
achieved rate is reported.

Run alone: ``python -m loadtest.bench_reload [--quick] [--duration S] [--interval S]
[--proxies nginx,haproxy,pavis] [--pavctl-every 1]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest import haproxy, nginx, procstat, servers, wrk
from loadtest.bench_proxy import Progress, Upstream, pavis_config, start_upstream, stderr_progress
from pavis.errors import PavisError
from tests.helpers import free_port


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


@dataclass
class StormResult:
    proxy: str
    duration_s: float
    interval_s: float
    reloads: int = 0
    reload_failures: int = 0  # reload commands that did not succeed
    reload_ms: list[float] = field(default_factory=list)  # command start → it returned
    visible_ms: list[float] = field(default_factory=list)  # command start → new answer seen
    stale_after_return: int = 0  # pavis: a fresh request right after --wait saw the old answer
    process_counts: list[int] = field(default_factory=list)
    private_bytes: list[int] = field(default_factory=list)  # whole tree, per sample
    load: dict[str, Any] = field(default_factory=dict)  # the wrk result
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        wall = self.duration_s or 1.0
        return {
            "proxy": self.proxy,
            "duration_s": self.duration_s,
            "interval_s": self.interval_s,
            "reloads": self.reloads,
            "reloads_per_s": self.reloads / wall,
            "reload_failures": self.reload_failures,
            "reload_ms_median": statistics.median(self.reload_ms) if self.reload_ms else None,
            "reload_ms_p99": _pct(self.reload_ms, 99) if self.reload_ms else None,
            "visible_ms_median": statistics.median(self.visible_ms) if self.visible_ms else None,
            "visible_ms_p99": _pct(self.visible_ms, 99) if self.visible_ms else None,
            "stale_after_return": self.stale_after_return,
            "requests": self.load.get("requests"),
            "failed": self.load.get("failed"),
            "socket_errors": self.load.get("errors"),
            "non2xx": self.load.get("non2xx"),
            "rps": self.load.get("rps"),
            "p99_ms": self.load.get("p99_ms"),
            "processes_max": max(self.process_counts, default=0),
            "processes_median": statistics.median(self.process_counts)
            if self.process_counts
            else 0,
            "private_bytes_max": max(self.private_bytes, default=0),
            "private_bytes_median": statistics.median(self.private_bytes)
            if self.private_bytes
            else 0,
            "private_mib_samples": [round(b / 2**20, 2) for b in self.private_bytes],
            "process_count_samples": self.process_counts,
            "reload_ms": [round(x, 2) for x in self.reload_ms],
            "visible_ms": [round(x, 2) for x in self.visible_ms],
            "wrk_command": self.load.get("command"),
            "notes": self.notes,
            **self.extra,
        }


def _answer(port: int) -> bytes | None:
    try:
        status, body = servers.http_get(port, "/which", timeout=1.0)
    except OSError:
        return None
    return body.strip() if status == 200 else None


def wait_visible(port: int, want: bytes, start: float, limit: float = 2.0) -> float | None:
    """Poll fresh connections until ``/which`` answers ``want``; ms since ``start`` or None."""
    while time.monotonic() - start < limit:
        if _answer(port) == want:
            return (time.monotonic() - start) * 1000
        time.sleep(0.001)
    return None


class _Sampler(threading.Thread):
    """Process count and private memory of a tree, every ``every`` seconds."""

    def __init__(self, root: int, out: StormResult, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root, self.out, self.every = root, out, every
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.every):
            s = procstat.sample(self.root)
            self.out.process_counts.append(s.count)
            self.out.private_bytes.append(s.private_total)


def storm(
    name: str,
    port: int,
    root_pid: int,
    reload_to: Callable[[bytes], tuple[bool, bool, bool]],
    *,
    duration: float,
    interval: float,
    path: str,
    progress: Progress,
    overlap: bool = False,
) -> StormResult:
    """Run wrk (50 keep-alive connections) for ``duration`` s while reloading every ``interval``.

    First the same load without reloads for ``min(10, duration)`` s: the steady state the
    storm's requests/s are compared with (``storm_over_steady``). With ``overlap`` a reload
    starts on every tick even while earlier ones run (a thread each, at most 16 in flight),
    as when a pipeline fires reload commands faster than one completes; the stale check after
    a return is then meaningless (a later reload may already have flipped) and is skipped.

    ``reload_to(answer)`` switches to the configuration whose ``/which`` answers ``answer``
    and returns (succeeded, waited, counted) — ``waited`` means the change is complete on
    return (``pavctl reload --wait``), otherwise visibility is polled; a reload not ``counted``
    (a differently-made sample the caller records itself) stays out of the latency lists.
    """
    res = StormResult(name, duration, interval)
    box: dict[str, Any] = {}
    try:
        steady = wrk.run(f"http://127.0.0.1:{port}{path}", connections=50,
                         duration=min(10.0, duration)).as_dict()  # fmt: skip
        res.extra["steady_rps"] = steady.get("rps")
        res.extra["steady_failed"] = steady.get("failed")
    except (RuntimeError, OSError) as exc:
        res.notes.append(f"wrk (steady): {exc}")

    def load() -> None:
        try:
            box["r"] = wrk.run(
                f"http://127.0.0.1:{port}{path}", connections=50, duration=duration
            ).as_dict()
        except (RuntimeError, OSError) as exc:
            box["error"] = str(exc)

    sampler = _Sampler(root_pid, res)
    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    sampler.start()
    time.sleep(0.3)  # let wrk connect before the first reload
    t0 = time.monotonic()
    end = t0 + duration - 0.5
    answers = (b"B", b"A")
    i = 0
    next_tick = t0
    lock = threading.Lock()
    in_flight: list[threading.Thread] = []

    def one(want: bytes, i: int) -> None:
        start = time.monotonic()
        ok, waited, counted = reload_to(want)
        after = time.monotonic()
        with lock:
            res.reloads += 1
            if not ok:
                res.reload_failures += 1
            elif counted:
                res.reload_ms.append((after - start) * 1000)
                res.visible_ms.append(res.reload_ms[-1])

    while overlap and time.monotonic() < end:
        in_flight = [t for t in in_flight if t.is_alive()]
        if len(in_flight) < 16:
            t = threading.Thread(target=one, args=(answers[i % 2], i), daemon=True)
            t.start()
            in_flight.append(t)
            i += 1
        next_tick += interval
        pause = next_tick - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    for t in in_flight:
        t.join(60)
    while not overlap and time.monotonic() < end:
        want = answers[i % 2]
        i += 1
        start = time.monotonic()
        ok, waited, counted = reload_to(want)
        after = time.monotonic()
        res.reloads += 1
        if not ok:
            res.reload_failures += 1
        elif waited:
            if _answer(port) != want:
                res.stale_after_return += 1
            if counted:
                res.reload_ms.append((after - start) * 1000)
                res.visible_ms.append(res.reload_ms[-1])
        else:
            v = wait_visible(port, want, start)
            if counted:
                res.reload_ms.append((after - start) * 1000)
                if v is not None:
                    res.visible_ms.append(v)
            if v is None:
                res.notes.append(f"reload {i}: not visible within 2 s")
        next_tick += interval
        pause = next_tick - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            next_tick = time.monotonic()  # overran: start the next one now, never overlap
    res.extra["reloads_started"] = i
    res.duration_s = time.monotonic() - t0
    loader.join(duration + 60)
    sampler.stop_event.set()
    sampler.join()
    if "error" in box:
        res.notes.append(f"wrk: {box['error']}")
    res.load = box.get("r", {})
    if res.extra.get("steady_rps") and res.load.get("rps"):
        res.extra["storm_over_steady"] = res.load["rps"] / res.extra["steady_rps"]
    d = res.as_dict()
    progress(
        f"reload {name}: {res.reloads} reloads ({d['reloads_per_s']:.1f}/s), "
        f"requests {d['requests']}, failed {d['failed']}, reload median "
        f"{d['reload_ms_median'] or 0:.1f} ms, visible median {d['visible_ms_median'] or 0:.1f} ms"
    )
    return res


def nginx_storm(
    work: Path, up: Upstream, *, duration: float, interval: float, progress: Progress
) -> StormResult:
    port = free_port()
    (work / "nginx").mkdir(parents=True, exist_ok=True)
    ng = nginx.Nginx("reload", work / "nginx")
    inc = ng.write("which.conf", nginx.which_location("A"))
    ng.start(nginx.proxy_conf(ng.prefix, port, up.port, 2, include=str(inc)), (port,))
    try:

        def switch(answer: str) -> None:
            ng.write("which.conf", nginx.which_location(answer))
            ng.reload()

        note = "reload = rewrite the included file atomically, SIGHUP the master"
        return _signalled_storm(
            "nginx", port, ng.pid, switch, note, up, duration, interval, progress
        )
    finally:
        ng.stop()


def haproxy_storm(
    work: Path, up: Upstream, *, duration: float, interval: float, progress: Progress
) -> StormResult:
    if haproxy.available() is None:
        raise RuntimeError("haproxy is not installed")
    port = free_port()
    (work / "haproxy").mkdir(parents=True, exist_ok=True)
    hp = haproxy.HAProxy(work / "haproxy")
    hp.write(port, up.port, "A")
    hp.start(port)
    try:

        def switch(answer: str) -> None:
            hp.write(port, up.port, answer)
            hp.reload()

        note = "reload = rewrite the config atomically, SIGUSR2 the master (-W)"
        return _signalled_storm(
            "haproxy", port, hp.pid, switch, note, up, duration, interval, progress
        )
    finally:
        hp.stop()


def _signalled_storm(
    name: str,
    port: int,
    pid: int,
    switch: Callable[[str], None],
    note: str,
    up: Upstream,
    duration: float,
    interval: float,
    progress: Progress,
) -> StormResult:
    """A storm for a proxy reloaded by a signal: ``switch(answer)`` rewrites its config and
    signals it; whether the change took is seen by polling ``/which``."""
    wrk.run(f"http://127.0.0.1:{port}{up.path}", connections=50, duration=1)  # warm up

    def reload_to(answer: bytes) -> tuple[bool, bool, bool]:
        switch(answer.decode())
        return True, False, True

    res = storm(
        name, port, pid, reload_to,
        duration=duration, interval=interval, path=up.path, progress=progress,
    )  # fmt: skip
    res.notes.append(note)
    return res


def pavis_storm(
    work: Path,
    up: Upstream,
    *,
    duration: float,
    interval: float,
    progress: Progress,
    pavctl_every: int = 1,
) -> StormResult:
    port = free_port()
    (work / "pavis").mkdir(parents=True, exist_ok=True)
    configs = {}
    for answer in ("A", "B"):
        path = work / "pavis" / f"which-{answer}.yaml"
        path.write_text(pavis_config(port, up.port, which=answer))
        configs[answer.encode()] = path
    pv = servers.Pavis(work / "pavis", 2)
    pv.start(configs[b"A"], port)
    try:
        wrk.run(f"http://127.0.0.1:{port}{up.path}", connections=50, duration=1)  # warm up
        errors: list[str] = []
        pavctl_ms: list[float] = []
        server_ms: list[float] = []
        load_ms: list[float] = []  # the supervisor's compile (or read) + decode part
        count = [0]

        def reload_to(answer: bytes) -> tuple[bool, bool, bool]:
            count[0] += 1
            if pavctl_every and count[0] % pavctl_every == 0:
                # The real command, Python start-up included, as an operator runs it.
                start = time.monotonic()
                r = pv.pavctl("reload", str(configs[answer]), "--wait", "--timeout", "10", "--json")
                ok = r.returncode == 0
                if ok:
                    pavctl_ms.append((time.monotonic() - start) * 1000)
                    with contextlib.suppress(ValueError, KeyError):
                        reply = json.loads(r.stdout)
                        server_ms.append(float(reply["elapsed_ms"]))
                        load_ms.append(float(reply["load_ms"]))
                elif len(errors) < 5:
                    errors.append(f"pavctl exit {r.returncode}: {(r.stderr or r.stdout)[:300]}")
                return ok, True, False
            # The same request pavctl sends, from this process (no interpreter start).
            payload = {"op": "reload", "wait": True, "timeout": 10.0, "path": str(configs[answer])}
            try:
                a = pv.control_request(payload, 15.0)
            except (OSError, PavisError) as exc:
                a = {"ok": False, "reason": str(exc)}
            if a.get("ok"):
                with contextlib.suppress(TypeError, ValueError):
                    server_ms.append(float(a.get("elapsed_ms")))  # type: ignore[arg-type]
                    load_ms.append(float(a.get("load_ms")))  # type: ignore[arg-type]
            elif len(errors) < 5:
                errors.append(f"reload refused: {a.get('error')}: {a.get('reason')}"[:300])
            return bool(a.get("ok")), True, True

        res = storm(
            "pavis", port, pv.pid, reload_to, duration=duration, interval=interval,
            path=up.path, progress=progress, overlap=pavctl_every == 1,
        )  # fmt: skip
        res.extra["pavctl_ms"] = [round(x, 2) for x in pavctl_ms]
        res.extra["pavctl_ms_median"] = _median(pavctl_ms)
        res.extra["pavctl_ms_p99"] = _pct(pavctl_ms, 99) if pavctl_ms else None
        res.extra["server_elapsed_ms_median"] = _median(server_ms)
        res.extra["server_elapsed_ms_p99"] = _pct(server_ms, 99) if server_ms else None
        res.extra["server_load_ms_median"] = _median(load_ms)
        sampled = (
            f"every {pavctl_every}th reload runs the real `pavctl` command (pavctl_ms, Python "
            "start-up included)"
            if pavctl_every
            else "no reload runs the real `pavctl` command"
        )
        res.notes.append(
            "reload = the control-socket request `pavctl reload CONFIG --wait` sends, made from "
            f"the harness; {sampled}; server_elapsed_ms is the supervisor's own figure "
            "(compile + publish + every worker acknowledged)"
        )
        res.notes.extend(errors)
        return res
    finally:
        pv.stop()


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _worker_private_mib(pids: list[int]) -> float | None:
    sizes = [procstat.private_bytes(p) for p in pids]
    return statistics.median(sizes) / 2**20 if sizes else None


def scale(
    sizes: tuple[int, ...], up: Upstream, work: Path, *, reloads: int = 3, progress: Progress
) -> dict[str, Any]:
    """Reload latency and worker memory by table size, nginx and pavis, no load.

    nginx: SIGHUP, then time until ``/which`` changes (its reload parses every location);
    pavis: ``pavctl reload CONFIG --wait --json`` wall time (Python start-up of the CLI
    included) and the supervisor's own ``elapsed_ms`` (compile, seal, store, publish, every
    worker decoded and acknowledged). Memory: median private bytes of the workers after a few
    requests.
    """
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for n in sizes:
        row: dict[str, Any] = {"routes": n}
        port = free_port()
        d = work / f"scale-nginx-{n}"
        d.mkdir(parents=True, exist_ok=True)
        ng = nginx.Nginx("scale", d)
        inc = ng.write("which.conf", nginx.which_location("A"))
        try:
            ng.start(nginx.proxy_conf(ng.prefix, port, up.port, 2, str(inc), routes=n), (port,))
            vis: list[float] = []
            for i in range(reloads):
                want = b"B" if i % 2 == 0 else b"A"
                ng.write("which.conf", nginx.which_location(want.decode()))
                start = time.monotonic()
                ng.reload()
                v = wait_visible(port, want, start, limit=10.0)
                if v is not None:
                    vis.append(v)
                time.sleep(0.3)  # let the old workers go before the next reload
            for _ in range(20):
                servers.http_get(port, up.path)
            row["nginx_visible_ms"] = _median(vis)
            row["nginx_worker_private_mib"] = _worker_private_mib(ng.workers())
        finally:
            ng.stop()
        port = free_port()
        d = work / f"scale-pavis-{n}"
        d.mkdir(parents=True, exist_ok=True)
        configs = []
        for answer in ("A", "B"):
            c = d / f"which-{answer}.yaml"
            c.write_text(pavis_config(port, up.port, which=answer, routes=n))
            configs.append(c)
        pv = servers.Pavis(d, 2)
        try:
            pv.start(configs[0], port, timeout=120)
            for _ in range(20):
                servers.http_get(port, up.path)
            row["pavis_worker_private_mib"] = _worker_private_mib(pv.worker_pids())
            lat, server, load = _pavctl_reloads(pv, configs, reloads, notes)
            row["pavis_reload_ms"] = _median(lat)
            row["pavis_server_ms"] = _median(server)
            row["pavis_load_ms"] = _median(load)
            # The same flips from sealed artifacts (`pavctl compile` beforehand): no compile
            # in the reload, only read + verify + publish + every worker switched.
            artifacts = []
            for c in configs:
                out = c.with_suffix(".pvs")
                subprocess.run([*servers.pavctl_argv(), "compile", str(c), "-o", str(out)],
                               capture_output=True, timeout=300, check=True)  # fmt: skip
                artifacts.append(out)
            lat, server, load = _pavctl_reloads(pv, artifacts, reloads, notes)
            row["pavis_artifact_reload_ms"] = _median(lat)
            row["pavis_artifact_server_ms"] = _median(server)
            row["pavis_worker_private_mib_after_reloads"] = _worker_private_mib(pv.worker_pids())
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            notes.append(f"pavis {n} routes: {exc}"[:600])
        finally:
            pv.stop()
        progress(
            "reload scale {routes} routes: nginx visible {nv} ms, {nm} MiB/worker; pavis "
            "reload --wait {pr} ms (supervisor {ps} ms; from an artifact {pa} ms), "
            "{pm} MiB/worker".format(
                routes=n,
                nv=_fmt(row.get("nginx_visible_ms")),
                nm=_fmt(row.get("nginx_worker_private_mib")),
                pr=_fmt(row.get("pavis_reload_ms")),
                ps=_fmt(row.get("pavis_server_ms")),
                pa=_fmt(row.get("pavis_artifact_reload_ms")),
                pm=_fmt(row.get("pavis_worker_private_mib")),
            )
        )
        rows.append(row)
    return {"rows": rows, "reloads_per_size": reloads, "notes": notes}


def _pavctl_reloads(
    pv: servers.Pavis, sources: list[Path], reloads: int, notes: list[str]
) -> tuple[list[float], list[float], list[float]]:
    """``pavctl reload SOURCE --wait --json`` ``reloads`` times, alternating from the second
    source: (wall ms, supervisor elapsed_ms, supervisor load_ms) of the successful ones."""
    lat: list[float] = []
    server: list[float] = []
    load: list[float] = []
    for i in range(reloads):
        source = sources[(i + 1) % len(sources)]
        start = time.monotonic()
        r = pv.pavctl("reload", str(source), "--wait", "--json", timeout=120)
        if r.returncode == 0:
            lat.append((time.monotonic() - start) * 1000)
            with contextlib.suppress(ValueError, KeyError, TypeError):
                answer = json.loads(r.stdout)
                server.append(float(answer["elapsed_ms"]))
                load.append(float(answer["load_ms"]))
        else:
            notes.append(f"reload {source.name}: exit {r.returncode}: "
                         f"{(r.stderr or r.stdout).strip()[:300]}")  # fmt: skip
    return lat, server, load


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def run(
    *,
    duration: float,
    interval: float = 0.1,
    upstream_kind: str = "nginx",
    proxies: tuple[str, ...] = ("nginx", "haproxy", "pavis"),
    scale_sizes: tuple[int, ...] = (),
    progress: Progress = stderr_progress,
    pavctl_every: int = 1,
) -> dict[str, Any]:
    work = servers.workdir("reload")
    out: dict[str, Any] = {
        "config": {"duration_s": duration, "interval_s": interval, "upstream": upstream_kind,
                   "connections": 50, "keepalive": True},
        "results": {},
        "notes": [],
    }  # fmt: skip
    up = start_upstream(upstream_kind, work)
    try:
        for proxy in proxies:
            fn = {"nginx": nginx_storm, "haproxy": haproxy_storm}.get(proxy, pavis_storm)
            progress(
                f"reload {proxy}: storm of {duration:g} s, one reload every {interval * 1000:g} ms"
            )
            extra: dict[str, Any] = {"pavctl_every": pavctl_every} if proxy == "pavis" else {}
            try:
                res = fn(work, up, duration=duration, interval=interval, progress=progress, **extra)
                out["results"][proxy] = res.as_dict()
            except (RuntimeError, OSError) as exc:
                out["notes"].append(f"{proxy} skipped: {exc}"[:600])
                progress(f"reload {proxy}: skipped ({str(exc)[:200]})")
        if scale_sizes:
            out["scale"] = scale(scale_sizes, up, work, progress=progress)
    finally:
        up.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def format_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"{'proxy':6} {'reloads':>7} {'/s':>5} {'requests':>9} {'failed':>7} "
        f"{'reload med':>10} {'p99':>7} {'visible med':>11} {'p99':>7} {'procs max':>9} "
        f"{'MiB max':>8} {'steady rps':>10} {'storm/steady':>12}"
    ]
    for name, r in results.items():

        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.1f}"

        lines.append(
            f"{name:6} {r['reloads']:7d} {r['reloads_per_s']:5.1f} {r['requests'] or 0:9d} "
            f"{r['failed'] if r['failed'] is not None else '-':>7} {f(r['reload_ms_median']):>10} "
            f"{f(r['reload_ms_p99']):>7} {f(r['visible_ms_median']):>11} "
            f"{f(r['visible_ms_p99']):>7} {r['processes_max']:9d} "
            f"{r['private_bytes_max'] / 2**20:8.1f} {f(r.get('steady_rps')):>10} "
            f"{f(r.get('storm_over_steady')):>12}"
        )
    return "\n".join(lines)


def format_scale(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'routes':>7} {'nginx visible ms':>16} {'nginx MiB/worker':>16} "
             f"{'pavctl reload ms':>16} {'supervisor ms':>13} {'artifact reload ms':>18} "
             f"{'pavis MiB/worker':>16}"]  # fmt: skip
    for r in rows:
        lines.append(
            f"{r['routes']:7d} {_fmt(r.get('nginx_visible_ms')):>16} "
            f"{_fmt(r.get('nginx_worker_private_mib')):>16} {_fmt(r.get('pavis_reload_ms')):>16} "
            f"{_fmt(r.get('pavis_server_ms')):>13} {_fmt(r.get('pavis_artifact_reload_ms')):>18} "
            f"{_fmt(r.get('pavis_worker_private_mib')):>16}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a 5 s storm instead of 30 s")
    ap.add_argument("--duration", type=float, help="storm length in seconds")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between reloads")
    ap.add_argument("--upstream", choices=("nginx", "python"), default="nginx")
    ap.add_argument("--proxies", default="nginx,haproxy,pavis")
    ap.add_argument("--scale", default="", help="route counts for reload/memory by size")
    ap.add_argument("--json", type=Path, help="write the full result here")
    ap.add_argument(
        "--pavctl-every",
        type=int,
        default=1,
        help="every Nth pavis reload runs the real pavctl command (1, the default: every one, "
        "on its tick even while earlier ones run; 0: none, the harness sends the request)",
    )
    a = ap.parse_args(argv)
    out = run(
        duration=a.duration or (5 if a.quick else 30),
        interval=a.interval,
        upstream_kind=a.upstream,
        proxies=tuple(p for p in a.proxies.split(",") if p),
        scale_sizes=tuple(int(n) for n in a.scale.split(",") if n),
        pavctl_every=a.pavctl_every,
    )
    print(format_table(out["results"]))
    for name, r in out["results"].items():
        for note in r["notes"][:10]:
            print(f"{name}: {note}")
    for note in out["notes"]:
        print(f"note: {note}")
    if "scale" in out:
        print(format_scale(out["scale"]["rows"]))
        for note in out["scale"]["notes"]:
            print(f"scale: {note}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
