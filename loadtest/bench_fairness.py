"""How long other requests wait while one fast stream flows through the same worker.

Run: ``python -m loadtest.bench_fairness [--requests 30] [--proxies pavis,nginx]``

An upstream (its own process) answers ``/endless`` with a body that never ends, written in
4 MiB ``sendall`` calls, and anything else with 3 bytes at once. Through each proxy (one
worker each), ``curl`` downloads ``/endless`` as fast as it can while this script times
sequential requests for ``/x`` on new connections. It prints the median, p90 and max of
those waits per proxy and pavis's median over nginx's.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import textwrap
import time

from loadtest import nginx
from loadtest.servers import Pavis, http_get, wait_port, workdir
from tests.helpers import free_port

_UPSTREAM = textwrap.dedent(
    r"""
    import socket, sys, threading
    BLOCK = b"x" * (4 << 20)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", int(sys.argv[1])))
    ls.listen(256)
    def serve(c):
        buf = b""
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
                while b"\r\n\r\n" in buf:
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    if b" /endless " in head.split(b"\r\n", 1)[0]:
                        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n")
                        while True:
                            c.sendall(BLOCK)
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
        except OSError:
            pass
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
    """
)

_PAVIS_CONFIG = """version: 1
listeners: [{{name: public, address: "127.0.0.1:{port}"}}]
clusters: [{{name: up, endpoints: ["127.0.0.1:{up}"]}}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - {{name: all, match: {{prefix: /}}, forward: {{cluster: up, timeout: 60s}}}}
"""


def waits_during_stream(port: int, requests: int) -> list[float]:
    curl = subprocess.Popen(
        ["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/endless"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(1.0)  # the stream gets going
        out = []
        for _ in range(requests):
            start = time.monotonic()
            status = http_get(port, "/x", timeout=30)[0]
            out.append(time.monotonic() - start)
            if status != 200:
                raise RuntimeError(f"/x answered {status}")
        if curl.poll() is not None:
            raise RuntimeError("the stream ended early")
        return out
    finally:
        curl.kill()
        curl.wait()


def describe(name: str, waits: list[float]) -> float:
    ms = sorted(w * 1000 for w in waits)
    median = statistics.median(ms)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    print(f"{name:6} median {median:8.2f} ms   p90 {p90:8.2f} ms   max {ms[-1]:8.2f} ms")
    return median


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--proxies", default="pavis,nginx")
    args = ap.parse_args()
    if shutil.which("curl") is None:
        print("curl is needed", file=sys.stderr)
        return 2
    up_port = free_port()
    up = subprocess.Popen([sys.executable, "-c", _UPSTREAM, str(up_port)])
    medians: dict[str, float] = {}
    try:
        if not wait_port(up_port, 10):
            raise RuntimeError("the upstream did not start")
        for proxy in args.proxies.split(","):
            port = free_port()
            if proxy == "pavis":
                wd = workdir("fairness")
                cfg = wd / "fairness.yaml"
                cfg.write_text(_PAVIS_CONFIG.format(port=port, up=up_port))
                pv = Pavis(wd, workers=1)
                pv.start(cfg, port)
                try:
                    medians[proxy] = describe(proxy, waits_during_stream(port, args.requests))
                finally:
                    pv.stop()
            elif proxy == "nginx":
                if nginx.available() is None:
                    print("nginx is not installed: skipped", file=sys.stderr)
                    continue
                ng = nginx.Nginx()
                # A stream is relayed, not spooled to a temp file (nginx's workers may not
                # write the benchmark's prefix directory).
                extra = ng.write("fairness.conf", "proxy_max_temp_file_size 0;\n")
                conf = nginx.proxy_conf(ng.prefix, port, up_port, workers=1, include=str(extra))
                ng.start(conf, (port,))
                try:
                    medians[proxy] = describe(proxy, waits_during_stream(port, args.requests))
                finally:
                    ng.stop()
            else:
                print(f"unknown proxy {proxy!r}", file=sys.stderr)
                return 2
    finally:
        up.kill()
        up.wait()
    if "pavis" in medians and "nginx" in medians and medians["nginx"] > 0:
        print(f"pavis / nginx median wait: {medians['pavis'] / medians['nginx']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
