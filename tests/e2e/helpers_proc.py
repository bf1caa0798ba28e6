"""Run `pavis serve` as a real subprocess for end-to-end tests, and clean up after it.

Every instance gets a unique name (so its shm segments are its own), a temp state dir, a
control socket in tmp and free 127.0.0.1 ports. Everything started is stopped by pid and every
shm object of the name is unlinked at the end, whatever the test did to the supervisor.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import direct_config, free_port, kill_pid, remove_instance, unique_instance

# End-to-end modules set ``pytestmark = needs_workers``: the worker runtime is its own package.
needs_workers = pytest.mark.skipif(
    importlib.util.find_spec("workers.main") is None, reason="workers.main is not there yet"
)

CLI = [sys.executable, "-c", "from pavis.cli import main; main()"]


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


def children(pid: int) -> set[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_bytes()
        except OSError:
            continue
        fields = text[text.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Serve:
    """One `pavis serve` subprocess with its private name, state dir and control socket."""

    def __init__(self, tmp: Path, workers: int = 2, name: str | None = None) -> None:
        self.tmp = tmp
        self.name = name or unique_instance()
        self.state_dir = tmp / "state"
        self.control = str(tmp / "control.sock")
        self.workers = workers
        self.port = free_port()
        self.admin_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker_pids: set[int] = set()  # every worker pid ever seen, for cleanup
        self.log = tmp / "serve.log"
        self._log_file: Any = None

    def config(self, body: str, filename: str | None = None, **kw: Any) -> Path:
        path = self.tmp / (filename or f"{body}.yaml")
        path.write_text(direct_config(self.port, body, self.admin_port, **kw))
        return path

    def start(self, source: Path | None, *args: str, env: dict[str, str] | None = None,
              ready: bool = True, wrap: list[str] | None = None,
              ) -> subprocess.Popen[bytes]:  # fmt: skip
        """``wrap`` runs serve under a command (e.g. ``unshare`` for a private /dev/shm)."""
        argv = [*(wrap or []), *CLI, "serve", *([str(source)] if source else []), "--workers", str(self.workers),
                "--name", self.name, "--state-dir", str(self.state_dir),
                "--control", self.control, *args]  # fmt: skip
        if self._log_file is not None:
            self._log_file.close()
        self._log_file = open(self.log, "ab")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            argv, stdout=self._log_file, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, cwd=self.tmp,
        )  # fmt: skip
        if ready:
            self.wait_ready()
        return self.proc

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"pavis serve exited {self.proc.returncode}:\n{self.logs()}")
            try:
                st = self.status()
            except (OSError, ValueError, AssertionError):
                return None
            return st if st["ready"] else None

        return dict(wait_for(ready, timeout, "pavis serve to be ready"))

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def pavctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args, "--control", self.control],
            capture_output=True, text=True, timeout=timeout, check=False, cwd=self.tmp,
        )  # fmt: skip

    def status(self) -> dict[str, Any]:
        r = self.pavctl("status", "--json")
        assert r.returncode == 0, r.stderr
        st: dict[str, Any] = json.loads(r.stdout)
        self.worker_pids.update(w["pid"] for w in st["workers"] if w["pid"])
        return st

    def history(self) -> list[dict[str, Any]]:
        r = self.pavctl("history", "--json")
        assert r.returncode == 0, r.stderr
        return list(json.loads(r.stdout))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Stop the supervisor by pid; then kill any worker it left behind."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.worker_pids:
            if pid_alive(pid):
                kill_pid(pid)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def cleanup(self) -> None:
        """Graceful stop (escalating to SIGKILL), then kill any child it left, then unlink."""
        if self.proc is not None and self.proc.poll() is None:
            self.worker_pids.update(children(self.proc.pid))
        self.stop(signal.SIGTERM)
        remove_instance(self.name)


@contextlib.contextmanager
def serving(tmp: Path, body: str = "A", workers: int = 2) -> Iterator[Serve]:
    """A ready supervisor on a direct-route config answering ``body``."""
    sv = Serve(tmp, workers)
    try:
        sv.start(sv.config(body))
        yield sv
    finally:
        sv.cleanup()
