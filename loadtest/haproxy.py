"""A private HAProxy for the benchmarks: master-worker mode, generated config, stopped by pid.

Owns: writing a reverse-proxy configuration whose ``/which`` answers a given string (so a
fresh request shows which configuration served it), starting ``haproxy -W -db -f CONF`` as a
child process, hitless reloads (rewrite the file, SIGUSR2 the master: it starts new workers
and soft-stops the old ones), and stopping the master and every process it left behind.
Must not: touch a system HAProxy or listen on anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

from loadtest import procstat
from loadtest.servers import kill_remaining, wait_port

_CONF = """\
global
    master-worker
    nbthread {threads}
    pidfile {prefix}/haproxy.pid
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string {answer} if {{ path /which }}
    default_backend be
backend be
    http-reuse always
    server up 127.0.0.1:{up_port}
"""


def available() -> str | None:
    return shutil.which("haproxy")


class HAProxy:
    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.conf = prefix / "haproxy.cfg"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = prefix / "haproxy.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def write(self, port: int, up_port: int, answer: str, threads: int = 2) -> None:
        text = _CONF.format(
            threads=threads, prefix=self.prefix, port=port, up_port=up_port, answer=answer
        )
        tmp = self.conf.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.conf)  # atomically: a reload never reads half a file

    def start(self, port: int, timeout: float = 10.0) -> None:
        exe = available()
        assert exe, "haproxy is not installed"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [exe, "-W", "-db", "-f", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        if not wait_port(port, timeout, self.proc):
            self.stop()
            raise RuntimeError(f"haproxy did not listen on {port}: {self.log.read_text()}")

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR2)

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None:
            return
        tree = procstat.tree(self.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        kill_remaining(tree)
        self.proc = None
