"""Names of an instance's POSIX objects and the /dev/shm directory that holds them on Linux.

Owns: the naming scheme ``/pavis.<name>.<generation>``, ``/pavis.<name>.ctl``,
``/pavis.<name>.rl`` and the lock file ``pavis.<name>.lock`` (in a private directory), finding/unlinking every object of one
instance by exact prefix, and telling this user's entries from another user's (hostile:
SHM_DIR is world-writable). Must not: open or map anything.
"""

from __future__ import annotations

import os
import re
import tempfile

from shm.errors import ShmError

SHM_DIR = "/dev/shm"
# No dot in an instance name: "pavis.a." must never be a prefix of another instance's objects.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,200}")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ShmError(
            "bad_name", f"instance name {name!r} must be 1-200 characters of [A-Za-z0-9_-]"
        )
    return name


def prefix(name: str) -> str:
    """The file-name prefix of every object of ``name`` inside SHM_DIR."""
    return f"pavis.{name}."


def segment(name: str, generation: int) -> str:
    return f"/pavis.{name}.{generation}"


def control(name: str) -> str:
    return f"/pavis.{name}.ctl"


def buckets(name: str) -> str:
    """The rate-limit bucket segment of ``name`` (writable reaction state, ``shm.buckets``)."""
    return f"/pavis.{name}.rl"


def lock_path(name: str, lock_dir: str) -> str:
    """The liveness lock of ``name``: in a private directory, never in SHM_DIR (anyone can
    create files there, and a file another user holds locked would stop the instance)."""
    return f"{lock_dir}/pavis.{name}.lock"


def default_lock_dir() -> str:
    """Where a Publisher not given a lock directory keeps its lock: the systemd runtime
    directory, else a per-user directory under the temporary directory."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return runtime or os.path.join(tempfile.gettempdir(), f"pavis-{os.geteuid()}")


def owner(entry: str) -> int:
    """The uid owning SHM_DIR/``entry`` (-1 if it is gone). Read with lstat: never opened."""
    try:
        return os.lstat(f"{SHM_DIR}/{entry}").st_uid
    except FileNotFoundError:
        return -1


def foreign(entries: list[str]) -> list[tuple[str, int]]:
    """(entry, uid) of those of ``entries`` another user owns: hostile, never to be opened,
    used or removed."""
    me = os.geteuid()
    found = ((e, owner(e)) for e in entries)
    return [(e, uid) for e, uid in found if uid not in (me, -1)]


def leftovers(name: str, mine: bool = False) -> list[str]:
    """File names in SHM_DIR that belong to ``name`` (exact prefix match), sorted; with
    ``mine`` only those this user owns."""
    head = prefix(name)
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    found = sorted(e for e in entries if e.startswith(head))
    if mine:
        hostile = {e for e, _ in foreign(found)}
        found = [e for e in found if e not in hostile]
    return found


def generation_of(name: str, entry: str) -> int:
    """The generation encoded in a SHM_DIR entry of ``name``, or 0 if it is not a segment."""
    tail = entry[len(prefix(name)) :]
    return int(tail) if tail.isdigit() else 0


def generations(name: str) -> list[int]:
    """Generations of ``name`` this user owns still present in SHM_DIR, ascending."""
    return sorted(g for g in (generation_of(name, e) for e in leftovers(name, mine=True)) if g)


def unlink_entry(entry: str) -> bool:
    """Unlink one SHM_DIR entry; False if it was already gone."""
    try:
        os.unlink(f"{SHM_DIR}/{entry}")
    except FileNotFoundError:
        return False
    return True
