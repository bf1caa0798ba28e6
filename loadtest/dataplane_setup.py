"""The processes the data-plane scenarios run against: one upstream, and pavis beside nginx per setup.

Owns: the certificates (one ECDSA P-256 certificate for the TLS listener, two for the SNI
listener, the same files for pavis and nginx), the upstream's configuration (a static nginx: a
3-byte answer, 64 KiB and 1 MiB files, and an upload path that reads the whole body before it
answers), the pavis and nginx configurations of a setup (the same listeners, routes and header
work), the rate-limit check (``pavctl check``), and starting and stopping them by pid.
Must not: run wrk or judge figures.

The proxy configurations are those of ``loadtest.bench_proxy`` (three virtual hosts, header
operations on the forwarded route, an upstream pool of 32 idle connections), plus what a
scenario needs: TLS listeners, a rate-limited route, and for nginx the directives that make it
stream bodies as pavis does (``proxy_request_buffering off``, ``proxy_max_temp_file_size 0``:
no request or response body is written to disk).
"""

from __future__ import annotations

import resource
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loadtest import nginx, procstat, servers
from loadtest.dataplane_scenarios import MIB, Setup
from tests.helpers import free_port
from tests.pki import CA

# TLS 1.3 with one cipher suite for both proxies: nginx is pinned in its config; pavis takes
# OpenSSL's defaults, so the client (wrk) offers only this suite (an OpenSSL config file in
# OPENSSL_CONF, see ``client_openssl_conf``), which both servers then have to pick.
TLS_SUITE = "TLS_AES_128_GCM_SHA256"
SNI_NAME = "localhost"  # resolves to 127.0.0.1 without touching /etc/hosts
IDLE_FDS = 65536


@dataclass
class Certs:
    tls: tuple[Path, Path]  # the TLS listener's certificate (localhost, 127.0.0.1)
    sni_default: tuple[Path, Path]  # the SNI listener's first (default) certificate
    sni_named: tuple[Path, Path]  # chosen for SNI_NAME
    openssl_conf: Path  # the client side's pin (OPENSSL_CONF for wrk)


def make_certs(work: Path) -> Certs:
    d = work / "pki"
    d.mkdir(parents=True, exist_ok=True)
    ca = CA(d, "Bench CA")
    conf = d / "client-openssl.cnf"
    conf.write_text(client_openssl_conf())
    return Certs(
        tls=ca.issue("tls", cn="bench", dns=(SNI_NAME,), ips=("127.0.0.1",)),
        sni_default=ca.issue("sni-default", cn="default.bench.invalid",
                             dns=("default.bench.invalid",)),
        sni_named=ca.issue("sni-named", cn=SNI_NAME, dns=(SNI_NAME,)),
        openssl_conf=conf,
    )  # fmt: skip


def client_openssl_conf() -> str:
    """An OpenSSL configuration that limits every TLS client of the process to TLS_SUITE."""
    return f"""\
openssl_conf = pavis_bench
[pavis_bench]
ssl_conf = pavis_bench_ssl
[pavis_bench_ssl]
system_default = pavis_bench_tls
[pavis_bench_tls]
MinProtocol = TLSv1.3
Ciphersuites = {TLS_SUITE}
"""


def raise_fd_limit(want: int = IDLE_FDS) -> int:
    """Raise this process's RLIMIT_NOFILE (the proxies started after inherit it); the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):  # not root: as far as the hard limit goes
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(want, hard)), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------- nginx configs


def _nginx_conf(prefix: Path, workers: int, body: str, connections: int = 4096) -> str:
    rlimit = IDLE_FDS if connections > 4096 else 0
    return nginx.conf(prefix, workers, body, connections, rlimit)


def upstream_conf(prefix: Path, port: int) -> str:
    """The static upstream: ``ok\\n`` everywhere, ``/64k`` and ``/1m`` files (sendfile), and
    ``/upload``, which reads the whole body into memory (a proxy to itself without the body)
    before answering, so the proxy under test has relayed every byte when the answer comes."""
    body = f"""\
    sendfile on;
    upstream self {{ server 127.0.0.1:{port}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
        location = /64k {{ default_type application/octet-stream; alias {prefix}/64k.bin; }}
        location = /1m {{ default_type application/octet-stream; alias {prefix}/1m.bin; }}
        location = /upload {{
            client_max_body_size 16m;
            client_body_buffer_size 11m;
            proxy_pass http://self/ok;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location = /ok {{ default_type text/plain; return 200 "ok\\n"; }}
    }}"""
    return _nginx_conf(prefix, 1, body)


_PROXY = """\
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Env bench;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_hide_header Server;
            add_header X-Served-By nginx;
            client_max_body_size 16m;
            proxy_request_buffering off;
            proxy_max_temp_file_size 0;"""


def _locations(rate_limit: bool) -> str:
    out = f'        location = /healthz {{ return 200 "ok\\n"; }}\n        location / {{\n{_PROXY}\n        }}\n'
    if rate_limit:
        out += (
            "        location /rl/ {\n"
            "            limit_req zone=bench burst=1000000 nodelay;\n"
            f"{_PROXY}\n        }}\n"
        )
    return out


@dataclass(frozen=True)
class Ports:
    plain: int
    tls: int = 0
    sni: int = 0


def nginx_proxy_conf(
    prefix: Path, setup: Setup, ports: Ports, upstream: int, certs: Certs | None
) -> str:
    locs = _locations(setup.rate_limit)
    zone = (
        "    limit_req_zone $binary_remote_addr zone=bench:10m rate=1000000r/s;\n"
        if setup.rate_limit
        else ""
    )
    body = f"""\
{zone}    upstream backend {{
        server 127.0.0.1:{upstream};
        keepalive 32;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{ports.plain} backlog=4096;
        server_name api.example.com;
        location = /healthz {{ return 200 "ok\\n"; }}
        location /v1/ {{ proxy_pass http://backend/; proxy_http_version 1.1;
                        proxy_set_header Connection ""; }}
    }}
    server {{
        listen 127.0.0.1:{ports.plain};
        server_name www.example.com;
        location / {{ return 301 https://example.com/; }}
    }}
    server {{
        listen 127.0.0.1:{ports.plain} default_server;
        server_name _;
{locs}    }}
"""
    if setup.tls and certs is not None:
        tls = (
            f"        ssl_protocols TLSv1.3;\n        ssl_conf_command Ciphersuites {TLS_SUITE};\n"
        )
        body += f"""\
    server {{
        listen 127.0.0.1:{ports.tls} ssl backlog=4096 default_server;
        ssl_certificate {certs.tls[0]};
        ssl_certificate_key {certs.tls[1]};
{tls}{locs}    }}
    server {{
        listen 127.0.0.1:{ports.sni} ssl backlog=4096 default_server;
        server_name default.bench.invalid;
        ssl_certificate {certs.sni_default[0]};
        ssl_certificate_key {certs.sni_default[1]};
{tls}{locs}    }}
    server {{
        listen 127.0.0.1:{ports.sni} ssl;
        server_name {SNI_NAME};
        ssl_certificate {certs.sni_named[0]};
        ssl_certificate_key {certs.sni_named[1]};
{tls}{locs}    }}
"""
    return _nginx_conf(prefix, setup.workers, body, 16384 if setup.idle else 4096)


# --------------------------------------------------------------------------- pavis config

RATE_LIMIT = '{rate: "1000000/s", burst: 1000000, key: client_ip}'


def pavis_config(
    port: int,
    upstream_port: int,
    which: str | None = "A",
    routes: int = 0,
    *,
    listeners: str | None = None,
    extra_routes: str = "",
) -> str:
    """The pavis configuration under test: three virtual hosts, a few routes, header ops.

    Traffic hits the catch-all host's ``/`` route, which forwards with a request header set and
    response headers removed and set — the same work as ``nginx.proxy_conf``. ``/which``
    answers ``which`` directly (the reload benchmark alternates it; None: no such route).
    ``routes`` adds that many extra exact routes to the catch-all host (a bigger table, same
    traffic), ``extra_routes`` routes of the caller's before the catch-all; ``listeners``
    replaces the one plain listener on ``port``. No access log.
    """
    if listeners is None:
        listeners = f'  - {{name: public, address: "127.0.0.1:{port}"}}\n'
    answer = (
        f'      - {{name: which, match: {{exact: /which}}, direct: {{status: 200, body: "{which}\\n"}}}}\n'
        if which is not None
        else ""
    )
    extra = "".join(
        f"      - {{name: r{i}, match: {{exact: /r/{i}}}, forward: {{cluster: backend}}}}\n"
        for i in range(routes)
    )
    return f"""\
version: 1
listeners:
{listeners}clusters:
  - name: backend
    endpoints: ["127.0.0.1:{upstream_port}"]
    pool: {{max_connections: 256, max_idle: 32, idle_timeout: 60s}}
virtual_hosts:
  - name: api
    domains: ["api.example.com", "*.api.example.com"]
    routes:
      - {{name: health, match: {{exact: /healthz}}, direct: {{status: 200, body: "ok\\n"}}}}
      - name: v1
        match: {{prefix: /v1/, methods: [GET, HEAD]}}
        forward: {{cluster: backend, rewrite: {{prefix: /}}}}
  - name: www
    domains: ["www.example.com"]
    routes:
      - {{name: home, match: {{prefix: /}}, redirect: {{status: 301, location: "https://example.com/"}}}}
  - name: default
    domains: ["*"]
    routes:
{answer}      - {{name: health, match: {{exact: /healthz}}, direct: {{status: 200, body: "ok\\n"}}}}
{extra}      - {{name: static, match: {{prefix: /static/}}, forward: {{cluster: backend}}}}
{extra_routes}      - name: main
        match: {{prefix: /}}
        forward: {{cluster: backend}}
        request_headers: {{set: {{x-env: bench}}}}
        response_headers: {{remove: [server], set: {{x-served-by: pavis}}}}
"""


def pavis_conf(setup: Setup, ports: Ports, upstream: int, certs: Certs | None) -> str:
    """The ``loadtest.bench_proxy`` configuration with this setup's listeners and routes."""
    listeners = f'  - {{name: public, address: "127.0.0.1:{ports.plain}"}}\n'
    if setup.tls and certs is not None:
        listeners += (
            f'  - name: tls\n    address: "127.0.0.1:{ports.tls}"\n'
            f"    tls: {{cert: {certs.tls[0]}, key: {certs.tls[1]}}}\n"
            f'  - name: sni\n    address: "127.0.0.1:{ports.sni}"\n'
            "    tls:\n      certificates:\n"
            f"        - {{cert: {certs.sni_default[0]}, key: {certs.sni_default[1]}}}\n"
            f"        - {{cert: {certs.sni_named[0]}, key: {certs.sni_named[1]}}}\n"
        )
    headers = (
        "        request_headers: {set: {x-env: bench}}\n"
        "        response_headers: {remove: [server], set: {x-served-by: pavis}}\n"
    )  # the catch-all route's, on the rate-limited route too
    limited = (
        "      - name: limited\n        match: {prefix: /rl/}\n        forward: {cluster: backend}\n"
        f"        rate_limit: {RATE_LIMIT}\n{headers}"
        if setup.rate_limit
        else ""
    )
    return pavis_config(
        ports.plain, upstream, which=None, listeners=listeners, extra_routes=limited
    )


def pavctl_check(config: Path) -> str | None:
    """None if ``pavctl check`` accepts the config, else what it said."""
    proc = subprocess.run(
        [*servers.pavctl_argv(), "check", str(config)],
        capture_output=True, text=True, timeout=60, check=False, cwd=servers.REPO,
    )  # fmt: skip
    if proc.returncode == 0:
        return None
    text = (proc.stdout + proc.stderr).strip()
    problems = [ln.strip() for ln in text.splitlines() if ln.startswith("$")]
    return "; ".join(problems[:3])[:600] or text[-600:] or f"exit {proc.returncode}"


# --------------------------------------------------------------------------- processes


@dataclass
class Proxy:
    """One running proxy: the root of its process tree, and its ports."""

    name: str  # "pavis" or "nginx"
    ports: Ports
    root_pid: int
    stop: Callable[[], None]

    def pids(self) -> list[int]:
        """The whole tree: pavis supervisor and workers, nginx master and workers."""
        return procstat.tree(self.root_pid)

    def worker_pids(self) -> list[int]:
        return self.pids()[1:]


@dataclass
class Pair:
    setup: Setup
    proxies: dict[str, Proxy] = field(default_factory=dict)


def _ports(setup: Setup) -> Ports:
    return Ports(free_port(), free_port(), free_port()) if setup.tls else Ports(free_port())


def start_upstream(work: Path) -> tuple[int, int, Callable[[], None]]:
    """(port, pid, stop) of the static upstream nginx."""
    prefix = work / "upstream"
    prefix.mkdir(parents=True, exist_ok=True)
    for d in (work, prefix):  # nginx run as root serves files as its worker user (nobody)
        d.chmod(0o755)
    for name, size in (("64k.bin", 64 * 1024), ("1m.bin", MIB)):
        (prefix / name).write_bytes(b"x" * size)
        (prefix / name).chmod(0o644)
    port = free_port()
    up = nginx.Nginx("upstream", prefix)
    up.start(upstream_conf(prefix, port), (port,))
    return port, up.pid, up.stop


def start_pair(
    work: Path, setup: Setup, upstream: int, certs: Certs | None
) -> tuple[Pair, str | None]:
    """pavis and nginx for ``setup``; (pair, why pavis is missing) — pavis is skipped, with the
    reason, when ``pavctl check`` rejects its configuration (a feature not on this build)."""
    pair = Pair(setup)
    d = work / setup.name
    d.mkdir(parents=True, exist_ok=True)
    try:
        ng_ports = _ports(setup)
        ng = nginx.Nginx("proxy", d / "nginx")
        (d / "nginx").mkdir(parents=True, exist_ok=True)
        conf = nginx_proxy_conf(ng.prefix, setup, ng_ports, upstream, certs)
        ng.start(conf, tuple(p for p in (ng_ports.plain, ng_ports.tls, ng_ports.sni) if p))
        pair.proxies["nginx"] = Proxy("nginx", ng_ports, ng.pid, ng.stop)

        pv_ports = _ports(setup)
        (d / "pavis").mkdir(parents=True, exist_ok=True)
        config = d / "pavis" / "bench.yaml"
        config.write_text(pavis_conf(setup, pv_ports, upstream, certs))
        refused = pavctl_check(config)
        if refused is not None:
            return pair, f"pavctl check rejects the {setup.name} configuration: {refused}"
        pv = servers.Pavis(d / "pavis", setup.workers)
        try:
            pv.start(config, pv_ports.plain)
        except RuntimeError as exc:  # it stopped itself; the other setups still run
            return pair, f"pavis did not start for the {setup.name} setup: {exc}"[:800]
        pair.proxies["pavis"] = Proxy("pavis", pv_ports, pv.pid, pv.stop)
    except BaseException:
        stop_pair(pair)
        raise
    return pair, None


def stop_pair(pair: Pair) -> None:
    for p in reversed(list(pair.proxies.values())):
        p.stop()
    pair.proxies.clear()
