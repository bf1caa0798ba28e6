"""Names of an instance's POSIX objects and the /dev/shm directory that holds them on Linux.

Owns: the naming scheme ``/pavis.<name>.<generation>``, ``/pavis.<name>.ctl`` and the lock file
``pavis.<name>.lock``, and finding/unlinking every object of one instance by exact prefix.
Must not: open or map anything.
"""

from __future__ import annotations

import os
import re

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


def lock_path(name: str) -> str:
    return f"{SHM_DIR}/pavis.{name}.lock"


def leftovers(name: str) -> list[str]:
    """File names in SHM_DIR that belong to ``name`` (exact prefix match), sorted."""
    head = prefix(name)
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    return sorted(e for e in entries if e.startswith(head))


def generation_of(name: str, entry: str) -> int:
    """The generation encoded in a SHM_DIR entry of ``name``, or 0 if it is not a segment."""
    tail = entry[len(prefix(name)) :]
    return int(tail) if tail.isdigit() else 0


def generations(name: str) -> list[int]:
    """Generations of ``name`` still present in SHM_DIR, ascending."""
    return sorted(g for g in (generation_of(name, e) for e in leftovers(name)) if g)


def unlink_entry(entry: str) -> bool:
    """Unlink one SHM_DIR entry; False if it was already gone."""
    try:
        os.unlink(f"{SHM_DIR}/{entry}")
    except FileNotFoundError:
        return False
    return True
