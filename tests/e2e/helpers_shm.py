"""Helpers for the shm tests: forked children that never return into pytest, and removal
of an instance's leftovers by its exact prefix."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable

SHM = "/dev/shm"


def fork(body: Callable[[], None]) -> int:
    """Run ``body`` in a forked child; the child exits 0 if it returned, 1 if it raised."""
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            body()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def remove_instance(*instances: str) -> None:
    """Unlink every /dev/shm entry of these instance names (exact ``pavis.<name>.`` prefix)."""
    prefixes = tuple(f"pavis.{i}." for i in instances)
    for entry in os.listdir(SHM):
        if entry.startswith(prefixes):
            os.unlink(f"{SHM}/{entry}")
