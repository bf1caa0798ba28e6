"""systemd integration: sd_notify messages of a real `pavis serve` (READY, RELOADING,
STOPPING, STATUS) received on a datagram socket standing in for NOTIFY_SOCKET, and the unit
file checked by `systemd-analyze verify` where it exists.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.helpers_proc import Serve, needs_workers

UNIT = Path(__file__).resolve().parents[2] / "contrib" / "systemd" / "pavis.service"


def _messages(sock: socket.socket, until: str, timeout: float = 30.0) -> list[str]:
    """Datagrams received until one contains the field ``until``."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            break
        if message == "WATCHDOG=1" and until != "WATCHDOG=1":
            continue  # the periodic ping interleaves with everything else
        got.append(message)
        if until in got[-1].split("\n"):
            return got
    raise AssertionError(f"no {until} in {got}")


@needs_workers
def test_notify_ready_reloading_stopping(tmp_path: Path) -> None:
    sv = Serve(tmp_path)
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        try:
            sv.start(sv.config("A"), env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
            ready = _messages(sock, "READY=1")[-1].split("\n")
            st = sv.status()
            assert (
                f"STATUS=generation {st['generation']} checksum {st['checksum']} workers 2" in ready
            )
            assert sv.pavctl("reload", str(sv.config("B"))).returncode == 0
            msgs = _messages(sock, "READY=1")
            reloading = msgs[0].split("\n")
            assert reloading[0] == "RELOADING=1"
            assert reloading[1].startswith("MONOTONIC_USEC=")
            st = sv.status()
            assert f"STATUS=generation {st['generation']} checksum {st['checksum']} workers 2" in (
                msgs[-1].split("\n")
            )
            _messages(sock, "WATCHDOG=1")  # pinged every WatchdogSec/2 = 0.2 s
            assert sv.stop(signal.SIGTERM) == 0
            assert "STOPPING=1" in _messages(sock, "STOPPING=1")[-1]
        finally:
            sv.cleanup()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or not os.path.isdir("/opt"),
    reason="needs root and unshare to lay out the documented install privately",
)
def test_unit_file_verifies_as_shipped_over_the_documented_install(tmp_path: Path) -> None:
    # The documented install (/opt/pavis/bin/{pavis,pavctl}) on a private tmpfs over /opt, in
    # a mount namespace of its own that goes away with the command.
    unit = tmp_path / "pavis.service"
    unit.write_text(UNIT.read_text())
    script = (
        "mount -t tmpfs tmpfs /opt && mkdir -p /opt/pavis/bin && "
        'ln -s "$1" /opt/pavis/bin/pavis && ln -s "$2" /opt/pavis/bin/pavctl && '
        'exec systemd-analyze verify "$3"'
    )
    exes = [shutil.which(exe) or "/bin/true" for exe in ("pavis", "pavctl")]
    r = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *exes, str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
