"""Another local user cannot stop pavis from starting, nor feed it objects: the instance lock
lives in the state directory (private to the service user), and entries of the instance's
name in world-writable /dev/shm that another uid owns are refused, never opened or removed.

Root only: the hostile files are chowned to ``nobody`` and locked by a process running as it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers_proc import Serve, get, needs_workers

NOBODY = 65534
pytestmark = [
    needs_workers,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user"),
]


@contextlib.contextmanager
def planted(path: str, data: bytes = b"not yours\n") -> Iterator[Path]:
    """A file of ``nobody``'s at ``path``, removed afterwards."""
    p = Path(path)
    p.write_bytes(data)
    os.chown(p, NOBODY, NOBODY)
    os.chmod(p, 0o600)
    try:
        yield p
    finally:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def hold_flock_as_nobody(path: Path) -> int:
    """Fork a process that becomes ``nobody`` and holds an flock on ``path``; its pid."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fd = os.open(path, os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(w, b"locked")
            time.sleep(120)
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 16) == b"locked"
    finally:
        os.close(r)
    return pid


def test_a_lock_another_user_holds_in_dev_shm_does_not_stop_serve(sv: Serve) -> None:
    with planted(f"/dev/shm/pavis.{sv.name}.lock") as lock:
        holder = hold_flock_as_nobody(lock)
        try:
            sv.start(sv.config("A"))
            assert get(sv.port)[1] == b"A"
            assert (sv.state_dir / f"pavis.{sv.name}.lock").exists()  # where only we write
            assert lock.read_bytes() == b"not yours\n"
        finally:
            os.kill(holder, signal.SIGKILL)
            os.waitpid(holder, 0)
        sv.stop()
        assert lock.exists()  # not ours to remove


def test_a_control_block_another_user_planted_is_refused_by_name(sv: Serve) -> None:
    with planted(f"/dev/shm/pavis.{sv.name}.ctl") as ctl:
        proc = sv.start(sv.config("A"), ready=False)
        assert proc.wait(30) == 1
        logs = sv.logs()
        assert f"/dev/shm/pavis.{sv.name}.ctl belongs to uid {NOBODY}" in logs, logs
        assert "refusing to open or remove it" in logs
        assert ctl.read_bytes() == b"not yours\n"
        assert ctl.stat().st_uid == NOBODY


def test_a_segment_another_user_planted_is_never_used_or_removed(sv: Serve) -> None:
    with planted(f"/dev/shm/pavis.{sv.name}.1") as seg:
        sv.start(sv.config("A"))
        st = sv.status()
        assert st["generation"] > 1 and get(sv.port)[1] == b"A"
        assert sv.pavctl("reload", str(sv.config("B"))).returncode == 0
        assert get(sv.port)[1] == b"B"
        assert sv.stop() == 0
        assert seg.read_bytes() == b"not yours\n" and seg.stat().st_uid == NOBODY
        assert f"pavis.{sv.name}.1 belongs to uid {NOBODY}" in sv.logs()
