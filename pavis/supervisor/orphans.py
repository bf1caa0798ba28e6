"""Workers left behind by a supervisor that died: find them and let them drain.

A worker keeps serving when its supervisor dies (so a crashed supervisor is not an outage),
and it keeps the listening sockets open. A new supervisor of the same instance name would
then fail to bind. Instead it finds those workers by the control block they still map
(``/dev/shm/pavis.<name>.ctl``, shown as "(deleted)" once the new supervisor has reclaimed
it), sends them SIGTERM — they stop accepting, close their listeners and drain in-flight
requests — and binds once the ports are free.

Must not: signal anything but a process that maps this instance's control block. A pid read
from a leftover file could have been reused; a live mapping cannot lie.
"""

from __future__ import annotations

import contextlib
import os
import signal


def control_path(name: str) -> str:
    return f"/dev/shm/pavis.{name}.ctl"


def maps_control(pid: int, path: str) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) == 6 and fields[5].rstrip("\n").removesuffix(" (deleted)") == path:
                    return True
    except OSError:  # gone, or not ours to read
        return False
    return False


def find(name: str) -> list[int]:
    """Pids of other processes that map this instance's control block."""
    path = control_path(name)
    me = os.getpid()
    return sorted(
        pid
        for pid in (int(e) for e in os.listdir("/proc") if e.isdigit())
        if pid != me and maps_control(pid, path)
    )


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, 0)
            if _zombie(pid):
                continue
            out.append(pid)
    return out


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def terminate(pids: list[int], sig: int = signal.SIGTERM) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
