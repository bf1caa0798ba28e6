"""Worker slots: fork a worker into each slot, reap it, and decide when and whether to restart.

Owns: the fork (what the child keeps and drops before entering ``workers.main.run``), the
per-slot record (pid, start time, failures), when a worker counts as hung, and the restart
policy: exponential backoff for a worker that dies young, and a halt instead of a respawn
loop when workers keep exiting with a boot-failure code. Must not: import gevent or the
worker runtime in the supervisor — the runtime is imported only in the child, after fork.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pavis.errors import EXIT_ARTIFACT_UNUSABLE, EXIT_BOOT_FAILED
from shm import SlotInfo

log = logging.getLogger("pavis.supervisor")

BOOT_FAILURE_CODES = (EXIT_BOOT_FAILED, EXIT_ARTIFACT_UNUSABLE)
MAX_BOOT_FAILURES = 3  # consecutive boot failures of one slot before the supervisor halts
BACKOFF_BASE = 0.1
BACKOFF_MAX = 5.0
STABLE_AFTER = 10.0  # a worker that lived this long resets its slot's failure count
HEARTBEAT_TIMEOUT = 10.0  # a worker whose heartbeat is older than this is hung
BOOT_GRACE = 15.0  # a new worker gets this long before its heartbeat is judged

_RESET_SIGNALS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD,
    signal.SIGUSR1, signal.SIGUSR2,
)  # fmt: skip


@dataclass
class Slot:
    """What the supervisor knows about one worker slot across restarts."""

    index: int
    pid: int = 0
    started: float = 0.0  # monotonic
    started_wall: float = 0.0
    failures: int = 0  # consecutive early deaths
    boot_failures: int = 0  # consecutive exits with a boot-failure code
    respawn_at: float = 0.0  # monotonic; 0 = now
    needs_close: bool = False  # reaped, shm slot not closed yet
    last_exit: str = ""
    restarts: int = 0
    notify_fd: int = -1

    @property
    def alive(self) -> bool:
        return self.pid > 0


def spawn(
    name: str,
    slot: int,
    notify_fd: int,
    listeners: dict[str, socket.socket],
    drop_fds: Iterable[int],
    drop_sockets: Iterable[socket.socket],
    wake_fds: Sequence[int] = (),
) -> int:
    """Fork a worker for ``slot``; returns its pid in the parent, never returns in the child.
    ``wake_fds``: every slot's wake-up eventfd (``shm.Publisher.wake_fds``), kept."""
    drop = list(drop_fds)
    socks = list(drop_sockets)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = EXIT_BOOT_FAILED
    try:
        # The child must not act on the supervisor's signals or wake its loop.
        signal.set_wakeup_fd(-1)
        for sig in _RESET_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        # Ignored, as Python sets it at start-up: a write to a client that went away must
        # fail with EPIPE for that connection, not kill the worker and all its others.
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        for s in socks:
            # detach() first: the socket object must not close a reused number later.
            _close(s.detach())
        for fd in drop:
            _close(fd)
        # The runtime (and gevent) only ever load here, in the child; importlib keeps the
        # import graph of the supervisor free of it.
        run = importlib.import_module("workers.main").run

        run(name, slot, notify_fd, listeners, wake_fds)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = EXIT_BOOT_FAILED
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


def exit_code(status: int) -> int | None:
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else None


def note_exit(slot: Slot, status: int, now: float) -> None:
    """Update ``slot`` after its worker exited and schedule the respawn."""
    lived = now - slot.started
    slot.last_exit = describe(status)
    code = exit_code(status)
    if code in BOOT_FAILURE_CODES:
        slot.boot_failures += 1
    else:
        slot.boot_failures = 0
    if lived >= STABLE_AFTER:
        slot.failures = 0
    else:
        slot.failures += 1
    delay = 0.0 if slot.failures == 0 else min(BACKOFF_BASE * 2 ** (slot.failures - 1), BACKOFF_MAX)
    slot.respawn_at = now + delay
    slot.pid = 0
    slot.needs_close = True


def hung(slot: Slot, info: SlotInfo | None, now: float, wall: float) -> str:
    """Why the worker in ``slot`` is hung, "" if it is not or has no process: it never
    attached, or never beat, within ``BOOT_GRACE``, or its heartbeat stopped. ``info``: the
    slot's shm record; ``now`` monotonic, ``wall`` ``time.time()``."""
    if not slot.alive:
        return ""
    young = now - slot.started <= BOOT_GRACE
    if info is None or info.pid != slot.pid:
        return "" if young else f"never attached in {BOOT_GRACE:.0f} s"
    if info.heartbeat < slot.started_wall:
        return "" if young else f"no heartbeat in {BOOT_GRACE:.0f} s since start"
    if wall - info.heartbeat > HEARTBEAT_TIMEOUT:
        return f"no heartbeat for {wall - info.heartbeat:.1f} s"
    return ""


def kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def reap(pids: set[int] | None = None) -> list[tuple[int, int]]:
    """Every (pid, status) of exited children — of those among ``pids`` when given —
    without blocking.

    The supervisor passes its workers: it has other children (the compile process) whose
    exit status belongs to whoever started them.
    """
    out: list[tuple[int, int]] = []
    for wanted in [-1] if pids is None else pids:
        while True:
            try:
                pid, status = os.waitpid(wanted, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            out.append((pid, status))
            if wanted != -1:
                break
    return out


def wait_all(pids: set[int], deadline: float) -> set[int]:
    """Reap the given children until ``deadline`` (monotonic); returns those still running."""
    left = set(pids)
    while left and time.monotonic() < deadline:
        for pid, _ in reap(left):
            left.discard(pid)
        if left:
            time.sleep(0.02)
    return left
