"""The supervisor liveness lock: an exclusive flock on ``/dev/shm/pavis.<name>.lock``.

Owns: taking and releasing the lock, and closing inherited lock descriptors in forked children
(an flock belongs to the open file description, which fork shares: a worker keeping it would
make its dead supervisor look alive). Must not: touch any other object of the instance.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from shm import names
from shm.errors import InstanceBusy

_HELD: set[int] = set()


def _close_in_child() -> None:
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


def acquire(name: str, mode: int, gid: int | None) -> int:
    """Take the lock of ``name``; return its descriptor. InstanceBusy if a live holder has it."""
    path = names.lock_path(name)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            raise InstanceBusy(name, pid) from None
        except BaseException:
            os.close(fd)
            raise
        # The previous holder may have unlinked the file between our open and our flock:
        # then we locked an orphan inode and must start again on the current path.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    if gid is not None:
        os.fchown(fd, -1, gid)
    os.fchmod(fd, mode)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD.add(fd)
    return fd


def release(fd: int, name: str, unlink: bool) -> None:
    """Drop the lock; with ``unlink`` remove the file first (while still holding the lock)."""
    if unlink:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(names.lock_path(name))
    _HELD.discard(fd)
    os.close(fd)


def _holder(fd: int) -> int:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0
