"""A private nginx for the benchmarks: its own prefix directory, generated config, stopped by pid.

Owns: writing nginx configurations (static upstream, reverse proxy, reloadable proxy), starting
``nginx -p DIR -c CONF -g 'daemon off;'`` as a child process, SIGHUP reloads, and stopping the
master and every worker it left behind.
Must not: touch the system nginx (/etc/nginx, /run/nginx.pid, /var/log/nginx) or listen on
anything but 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from loadtest import procstat
from loadtest.servers import kill_remaining, wait_port


def conf(
    prefix: Path | str, workers: int, body: str, connections: int = 4096, rlimit: int = 0
) -> str:
    """The main file every benchmark nginx shares around its ``http`` ``body``;
    ``rlimit`` raises the workers' descriptor limit (``worker_rlimit_nofile``)."""
    limit = f"worker_rlimit_nofile {rlimit};\n" if rlimit else ""
    return f"""\
worker_processes {workers};
{limit}pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    # The default (1000) closes every client connection after 1000 requests; the proxies
    # compared here do not, so lift it to keep the comparison about proxying.
    keepalive_requests 1000000;
{body}
}}
"""


def available() -> str | None:
    """Path of the nginx binary, or None."""
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )


def static_conf(prefix: Path, port: int, workers: int = 1, body: str = "ok\\n") -> str:
    """nginx as a cheap upstream: every request answers 200 with a tiny body."""
    server = f"""\
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "{body}"; }}
    }}"""
    return conf(prefix, workers, server)


def proxy_conf(
    prefix: Path,
    port: int,
    upstream_port: int,
    workers: int = 2,
    include: str | None = None,
    routes: int = 0,
) -> str:
    """nginx as the reverse proxy under test, doing the same work as the pavis bench config.

    Three virtual hosts; the catch-all one forwards ``/`` with upstream keep-alive (pool of 32),
    HTTP/1.1 to the upstream, a request header set and a response header removed and added —
    the same header operations the pavis configuration asks for. ``include`` names a file
    included inside the catch-all server (the reload benchmark swaps it). ``routes`` adds that
    many exact locations (``/r/N``), like the pavis config's extra routes.
    """
    extra = f"        include {include};\n" if include else ""
    extra += "".join(
        f"        location = /r/{i} {{ proxy_pass http://backend; proxy_http_version 1.1; "
        f'proxy_set_header Connection ""; }}\n'
        for i in range(routes)
    )
    body = f"""\
    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 32;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        server_name api.example.com;
        location = /healthz {{ return 200 "ok\\n"; }}
        location /v1/ {{ proxy_pass http://backend/; proxy_http_version 1.1;
                        proxy_set_header Connection ""; }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name www.example.com;
        location / {{ return 301 https://example.com/; }}
    }}
    server {{
        listen 127.0.0.1:{port} default_server;
        server_name _;
{extra}        location = /healthz {{ return 200 "ok\\n"; }}
        location /static/ {{ proxy_pass http://backend; proxy_http_version 1.1;
                            proxy_set_header Connection ""; }}
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Env bench;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_hide_header Server;
            add_header X-Served-By nginx;
        }}
    }}"""
    return conf(prefix, workers, body)


def which_location(answer: str) -> str:
    """The swappable include of the reload benchmark: ``/which`` answers ``answer``."""
    return f'location = /which {{ default_type text/plain; return 200 "{answer}\\n"; }}\n'


class Nginx:
    """One private nginx master (``daemon off``) and its workers, in a temporary prefix."""

    def __init__(self, name: str = "nginx", prefix: Path | None = None) -> None:
        self._own_prefix = prefix is None
        self.prefix = prefix or Path(tempfile.mkdtemp(prefix=f"pavis-bench-{name}-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: object = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "nginx is not running"
        return self.proc.pid

    def write(self, relpath: str, text: str) -> Path:
        """Write a file in the prefix atomically (rename), so a reload never reads half of it."""
        path = self.prefix / relpath
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        return path

    def start(self, conf: str, ports: tuple[int, ...], timeout: float = 10.0) -> None:
        binary = available()
        if binary is None:
            raise FileNotFoundError("nginx is not installed")
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        conf_path = self.write("nginx.conf", conf)
        log = open(self.prefix / "stderr.log", "wb")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            [binary, "-p", str(self.prefix), "-e", str(self.prefix / "error.log"),
             "-c", str(conf_path), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        for port in ports:
            if not wait_port(port, max(0.1, deadline - time.monotonic()), self.proc):
                err = self.log_text()
                self.stop()
                raise RuntimeError(f"nginx did not listen on {port}: {err}")

    def log_text(self) -> str:
        text = ""
        for name in ("stderr.log", "error.log"):
            p = self.prefix / name
            if p.exists():
                text += p.read_text(errors="replace")
        return text[-2000:]

    def reload(self) -> None:
        """What ``nginx -s reload`` does: SIGHUP to the master."""
        os.kill(self.pid, signal.SIGHUP)

    def workers(self) -> list[int]:
        """Worker pids now (children of the master)."""
        return procstat.tree(self.pid)[1:]

    def stop(self, timeout: float = 5.0) -> None:
        """Fast shutdown (SIGTERM to the master), then SIGKILL anything of its tree left."""
        if self.proc is not None and self.proc.poll() is None:
            pids = procstat.tree(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
            # Workers normally exit with their master; make sure, by pid.
            kill_remaining(pids[1:])
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None
        if self._own_prefix:
            shutil.rmtree(self.prefix, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
