"""`pavis serve --demo`: the README's first command starts the proxy on the bundled config with
the bundled upstream, prints where to look, and stops cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers_proc import CLI, get, needs_workers, pid_alive, wait_for
from tests.helpers import remove_instance, unique_instance

pytestmark = needs_workers

PORTS = (8080, 8081, 9901)  # fixed by the demo config


def _busy(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_demo_serves_and_stops(tmp_path: Path) -> None:
    if any(_busy(p) for p in PORTS):
        pytest.skip("a demo port (8080, 8081, 9901) is in use on this machine")
    name = unique_instance()
    log = tmp_path / "demo.log"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*CLI, "serve", "--demo", "--name", name], stdout=out, stderr=subprocess.STDOUT,
            env=env, cwd=tmp_path,
        )  # fmt: skip
    workers: list[int] = []
    try:

        def ready() -> bool:
            try:
                return get(9901, "/ready", 2)[0] == 200
            except OSError:
                return False

        wait_for(ready, 30, "the demo to be ready")
        assert get(8080, "/healthz") == (200, b"ok\n")
        status, body = get(8080, "/hello")
        assert status == 200 and json.loads(body)["path"] == "/hello"
        st = json.loads(get(9901, "/status")[1])
        workers = [w["pid"] for w in st["workers"]]
        text = log.read_text()
        assert "http://127.0.0.1:8080/" in text and "pavctl reload" in text
        assert "pavctl rollback" in text
        control = str(tmp_path / f"pavis-demo-{os.getuid()}" / "control.sock")
        r = subprocess.run([*CLI, "status", "--control", control], capture_output=True,
                           text=True, timeout=30, check=False)  # fmt: skip
        assert r.returncode == 0 and st["checksum"] in r.stdout
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert not _busy(8081), "the demo upstream is stopped with the demo"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in workers:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        remove_instance(name)
