"""The supervisor liveness lock: an exclusive flock on ``<lock_dir>/pavis.<name>.lock``.

The directory must be private to this user (owned by it, no group or other write): a lock
anyone can create — as in world-writable /dev/shm — lets anyone stop the instance.

Owns: taking and releasing the lock, checking its directory, and closing inherited lock
descriptors in forked children (an flock belongs to the open file description, which fork
shares: a worker keeping it would make its dead supervisor look alive). Must not: touch any
other object of the instance.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat

from shm import names
from shm.errors import InstanceBusy, ShmError

_HELD: set[int] = set()


def _close_in_child() -> None:
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


def private_dir(path: str) -> str:
    """Create ``path`` (0700) if missing; ShmError("unsafe_lock_dir") unless it is a real
    directory owned by this user that nobody else can write to."""
    with contextlib.suppress(FileExistsError):
        os.makedirs(path, mode=0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise ShmError("unsafe_lock_dir", f"{path} is not a directory (a symlink?)")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ShmError(
            "unsafe_lock_dir",
            f"{path} (uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}) must belong to uid "
            f"{os.geteuid()} and be writable by it alone: others could hold the instance lock",
        )
    return path


def acquire(name: str, mode: int, gid: int | None, lock_dir: str) -> int:
    """Take the lock of ``name``; return its descriptor. InstanceBusy if a live holder has it."""
    path = names.lock_path(name, private_dir(lock_dir))
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


def release(fd: int, path: str, unlink: bool) -> None:
    """Drop the lock at ``path``; with ``unlink`` remove the file first (still holding it)."""
    if unlink:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    _HELD.discard(fd)
    os.close(fd)


def _holder(fd: int) -> int:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0
