"""The processes a benchmark runs against: loopback ports, the upstream, a pavis supervisor.

Owns: waiting for a listener, one-shot HTTP GETs on fresh
connections, and starting/stopping the test upstream and ``pavis serve`` — each stopped by
pid (SIGTERM, then SIGKILL for anything of its tree still alive). Free ports, instance
names and reaping children come from ``tests/helpers.py``, shared with the tests.
Must not: judge results, or reach anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from loadtest import procstat
from tests.helpers import unique_instance

REPO = Path(__file__).resolve().parent.parent


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """True once something accepts on 127.0.0.1:port; False on timeout or if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def http_get(
    port: int, path: str = "/", host: str = "bench.local", timeout: float = 2.0
) -> tuple[int, bytes]:
    """One GET on a fresh connection (``Connection: close``): (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, body


def _dechunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(rest[:size])
        data = rest[size + 2 :]
    return b"".join(out)


def kill_remaining(pids: list[int]) -> None:
    """SIGKILL each of ``pids`` still alive (descendants a stopped parent left behind)."""
    for pid in pids:
        if procstat.tree(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Proc:
    """A child process with its output in a log file, stopped by pid."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log_path = log
        self._log: IO[bytes] = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=REPO, env=env, start_new_session=True,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal the process, wait, then SIGKILL whatever of its tree is left (by pid)."""
        pids = procstat.tree(self.proc.pid) if self.alive() else []
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        kill_remaining(pids[1:])
        self._log.close()
        return self.proc.returncode


# --------------------------------------------------------------------------- upstreams


# The test upstream's cheapest GET (a 3-byte body), see tests/upstream.py.
PYTHON_UPSTREAM_PATH = "/bytes3"


def python_upstream_available() -> bool:
    return (REPO / "tests" / "upstream.py").exists()


def start_python_upstream(port: int, workdir: Path) -> Proc:
    """The project's test upstream (``python -m tests.upstream --port N``)."""
    p = Proc(
        [sys.executable, "-m", "tests.upstream", "--port", str(port)], workdir / "upstream.log"
    )
    if not wait_port(port, 15, p.proc):
        text = p.log_text()
        p.stop()
        raise RuntimeError(f"tests.upstream did not listen on {port}: {text}")
    return p


# --------------------------------------------------------------------------- pavis


def pavis_argv() -> list[str]:
    exe = shutil.which("pavis")
    return [exe] if exe else [sys.executable, "-c", "from pavis.cli import main; main()"]


def pavctl_argv() -> list[str]:
    exe = shutil.which("pavctl")
    return [exe] if exe else [sys.executable, "-c", "from pavis.cli import main; main()"]


def pavis_serve_available() -> bool:
    """True when the CLI has a ``serve`` command (the supervisor has landed)."""
    try:
        proc = subprocess.run(
            [*pavis_argv(), "serve", "--help"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


class Pavis:
    """``pavis serve`` with a private name, state dir and control socket."""

    def __init__(self, workdir: Path, workers: int = 2) -> None:
        self.workdir = workdir
        self.workers = workers
        self.name = unique_instance("b")
        self.state_dir = workdir / "state"
        self.control = workdir / "control.sock"
        self.proc: Proc | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(
        self, config: Path, port: int, timeout: float = 30.0, env: dict[str, str] | None = None
    ) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        argv = [*pavis_argv(), "serve", str(config), "--workers", str(self.workers),
                "--name", self.name, "--state-dir", str(self.state_dir),
                "--control", str(self.control)]  # fmt: skip
        self.proc = Proc(argv, self.workdir / "pavis.log", env=env)
        if not wait_port(port, timeout, self.proc.proc):
            text = self.proc.log_text()
            self.stop()
            raise RuntimeError(f"pavis serve did not listen on {port}: {text}")
        # Listening means the supervisor bound the socket; wait for a worker to answer too.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if http_get(port, "/healthz")[0]:
                    return
            except OSError:
                pass
            time.sleep(0.05)

    def worker_pids(self) -> list[int]:
        return procstat.tree(self.pid)[1:] if self.proc else []

    def pavctl(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*pavctl_argv(), *args, "--control", str(self.control)],
            capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO,
        )  # fmt: skip

    def control_request(self, payload: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """The control-socket exchange ``pavctl`` makes, without starting a Python process.

        Returns the raw answer (refusals included: ``ok`` false, ``reason``).
        """
        from pavis.control_client import exchange

        return exchange(str(self.control), payload, timeout)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
        # A clean stop unlinks the segments; after a forced one, reclaim ours by name.
        for entry in Path("/dev/shm").glob(f"pavis.{self.name}.*"):
            entry.unlink(missing_ok=True)


def workdir(tag: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"pavis-bench-{tag}-"))
