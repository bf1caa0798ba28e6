"""Forked children for the shm tests: they never return into pytest, and are reaped by pid."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable


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


def exit_code(pid: int) -> int:
    """Reap the child ``pid`` and return its exit code."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
