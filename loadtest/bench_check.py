"""Large configs: ``pavctl check`` and ``pavctl reload`` of 10k and 100k routes, beside ``nginx -t``.

Owns: writing a YAML config of N prefix routes (one line per route, flow style, as a generated
table usually is) and an nginx config of N ``location`` blocks; timing, as fresh processes,
``pavctl check -q`` and ``nginx -t -q`` of each (median of ``--runs``); timing
``pavctl reload CONFIG --wait`` of two such configs in turn against a running ``pavis serve``
(each a compile in the supervisor's compile child and a flip); and the supervisor's PSS after
the first reload and after ``--reloads`` of them (the trail after 1, 10, 25, 50, 100, and the
ratio of the last to the first beside the goal of 1.10). For reference it also times PyYAML
alone building the same document in this process (what every YAML document cost before the fast
path of ``pavis.compiler.fastyaml``). Must not: assert anything; tests never time things.

Run alone:  python -m loadtest.bench_check [--sizes 10000,100000] [--runs 5] [--reloads 100]
"""

from __future__ import annotations

import argparse
import compileall
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped,unused-ignore]

import pavis
from loadtest import servers
from pavis.compiler import ingest
from tests.helpers import free_port


def pavis_yaml(n: int, port: int, variant: str = "a") -> str:
    rows = "".join(
        f"      - {{name: r{i}, match: {{prefix: /p/{i}/}}, forward: {{cluster: up}}}}\n"
        for i in range(n)
    )
    return (
        f'version: 1\nlisteners: [{{name: public, address: "127.0.0.1:{port}"}}]\n'
        'clusters: [{name: up, endpoints: ["127.0.0.1:9"]}]\n'
        'virtual_hosts:\n  - name: all\n    domains: ["*"]\n    routes:\n'
        f"      - {{name: which, match: {{exact: /which}}, direct: {{status: 200, body: {variant}}}}}\n"
        + rows
    )


def nginx_conf(n: int, root: Path) -> str:
    locations = "".join(f"        location /p/{i}/ {{ proxy_pass http://up; }}\n" for i in range(n))
    return (
        f"worker_processes 1; pid {root}/nginx.pid; error_log {root}/error.log;\n"
        "events { worker_connections 1024; }\n"
        "http {\n    access_log off;\n    upstream up { server 127.0.0.1:9; }\n"
        f"    server {{\n        listen 127.0.0.1:{free_port()};\n{locations}    }}\n}}\n"
    )


def timed(argv: list[str], runs: int) -> float:
    """Median wall seconds of ``runs`` runs of ``argv`` (each must exit 0)."""
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


PSS_GOAL = 1.10  # PSS after the last reload at most this times PSS after the first


def pss_verdict(first_mib: float, last_mib: float, count: int) -> str:
    """The memory row: PSS after reload ``count`` over PSS after the first, beside the goal."""
    ratio = last_mib / first_mib if first_mib else float("nan")
    met = "met" if ratio <= PSS_GOAL else "missed"
    return (
        f"supervisor PSS after {count} reloads / after the first: {last_mib:.1f} / "
        f"{first_mib:.1f} MiB = {ratio:.2f}x (goal <= {PSS_GOAL:.2f}x: {met})"
    )


def reloads(root: Path, n: int, count: int, runs: int) -> dict[str, Any]:
    """Reload two n-route configs in turn ``count`` times; wall medians and supervisor PSS."""
    port = free_port()
    configs = []
    for variant in ("a", "b"):
        path = root / f"reload-{n}-{variant}.yaml"
        path.write_text(pavis_yaml(n, port, variant))
        configs.append(str(path))
    serve = servers.Pavis(root / "serve", workers=1)
    serve.start(Path(configs[0]), port, timeout=120)
    try:
        walls = []
        first_pss = 0
        trail: dict[int, float] = {}
        for i in range(count):
            t0 = time.perf_counter()
            done = serve.pavctl("reload", configs[(i + 1) % 2], "--wait", timeout=120)
            walls.append(time.perf_counter() - t0)
            if done.returncode:
                raise RuntimeError(f"reload {i} failed: {done.stdout}{done.stderr}")
            if i == 0:
                first_pss = pss_kib(serve.pid)
            if i + 1 in (1, 10, 25, 50, 75, 100, 200):
                trail[i + 1] = pss_kib(serve.pid) / 1024
        last_pss = pss_kib(serve.pid)
    finally:
        serve.stop()
    out: dict[str, Any] = {
        "reload_s": statistics.median(walls[:runs] if count > runs else walls),
        "pss_first_mib": first_pss / 1024,
        "pss_last_mib": last_pss / 1024,
        "pss_trail": trail,
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--reloads", type=int, default=100, help="reloads for the PSS figure (10k)")
    a = ap.parse_args(argv)
    nginx = shutil.which("nginx")
    # Bytecode as an installed pavis has it (pip compiles at install): with
    # PYTHONDONTWRITEBYTECODE set, or a fresh checkout, every run would compile the sources.
    compileall.compile_dir(Path(pavis.__file__).parent, quiet=1)
    root = Path(tempfile.mkdtemp(prefix="pavis-bench-check-"))
    pavctl = servers.pavctl_argv()
    print(f"{'routes':>8} {'pavctl check':>13} {'nginx -t':>9} {'ratio':>6} {'PyYAML only':>12}")
    try:
        for n in (int(s) for s in a.sizes.split(",") if s):
            runs = a.runs if n <= 10_000 else max(1, a.runs // 2)
            cfg = root / f"r{n}.yaml"
            cfg.write_text(pavis_yaml(n, free_port()))
            check = timed([*pavctl, "check", "-q", str(cfg)], runs)
            ngx = float("nan")
            if nginx:
                conf = root / f"n{n}.conf"
                conf.write_text(nginx_conf(n, root))
                ngx = timed([nginx, "-t", "-q", "-p", str(root), "-c", str(conf)], runs)
            t0 = time.perf_counter()
            yaml.load(cfg.read_text(), Loader=ingest._Loader)  # noqa: S506 - a SafeLoader
            pyyaml = time.perf_counter() - t0
            print(f"{n:>8} {check * 1000:>10.0f} ms {ngx * 1000:>6.0f} ms {check / ngx:>6.2f}"
                  f" {pyyaml * 1000:>9.0f} ms")  # fmt: skip
        if a.reloads:
            r = reloads(root, 10_000, a.reloads, a.runs)
            print(
                f"pavctl reload of 10k routes --wait: {r['reload_s'] * 1000:.0f} ms median; "
                f"supervisor PSS {r['pss_first_mib']:.1f} MiB after the first reload, "
                f"{r['pss_last_mib']:.1f} MiB after {a.reloads}"
            )
            trail = ", ".join(f"{k}: {v:.1f}" for k, v in r["pss_trail"].items())
            print(f"supervisor PSS (MiB) after N reloads: {trail}")
            print(pss_verdict(r["pss_first_mib"], r["pss_last_mib"], a.reloads))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
