"""The worker side: attach to an instance, learn of flips, open verified generations, report.

Owns: the worker's view of the control block and writes to its own slot only. Must not:
block (a blocking call stalls every greenlet of a gevent worker: wait on ``fileno()`` with
gevent's ``wait_read`` instead), import gevent, or write anywhere but its own slot.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import time

import posix_ipc  # type: ignore[import-not-found]  # no stubs published

from shm import board, control, names, segment
from shm.errors import ShmError
from shm.segment import Segment


class Subscriber:
    """Attach after fork: ``Subscriber(name, slot, notify_fd)``; ``notify_fd`` stays the caller's.

    Typical worker loop: wait_read(s.fileno()) with a 100-250 ms timeout → s.clear() →
    g = s.current() → if changed: seg = s.open(g), verify/decode/build, swap, s.ack(g, digest)
    (or s.reject(g, str(exc))) → close the old Segment once its requests are done.
    """

    def __init__(self, name: str, slot: int, notify_fd: int) -> None:
        self.name = names.check_name(name)
        path = names.control(name)
        try:
            mem = posix_ipc.SharedMemory(path)
        except posix_ipc.ExistentialError:
            raise ShmError("missing", f"{path} does not exist (no supervisor?)") from None
        except posix_ipc.PermissionsError:
            raise ShmError("permission", f"{path} is not accessible to this user") from None
        try:
            ctl = mmap.mmap(mem.fd, mem.size)
        finally:
            mem.close_fd()
        try:
            nslots = control.check(ctl)
            if not 0 <= slot < nslots:
                raise ShmError("bad_slot", f"slot {slot} is not in 0..{nslots - 1}")
        except BaseException:
            ctl.close()
            raise
        self._ctl = ctl
        self.nslots = nslots
        self._board: board.LoadBoard | None = None
        self.slot = slot
        self._fd = notify_fd
        os.set_blocking(notify_fd, False)
        control.update_slot(ctl, slot, pid=os.getpid(), heartbeat=time.time())

    def fileno(self) -> int:
        """The notify descriptor: readable after a flip. Wait on it, never read-block it."""
        return self._fd

    def clear(self) -> None:
        """Drain the notify pipe (call before reading current(), so no flip is lost)."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._fd, 4096):
                pass

    def current(self) -> int:
        """The current generation (0 = none yet), read consistently."""
        return control.read_header(self._ctl).current

    def generations(self) -> tuple[int, int]:
        """(current, previous) from one consistent read; 0 = none."""
        header = control.read_header(self._ctl)
        return header.current, header.previous

    def open(self, generation: int) -> Segment:
        """Map ``generation`` read-only after checking length and xxh3-128; else ShmError."""
        return segment.open_verified(self.name, generation)

    def ack(self, generation: int, digest: bytes) -> None:
        """Report that this worker now serves ``generation``, whose artifact checksum is ``digest``."""
        control.update_slot(
            self._ctl, self.slot, generation=generation, digest=digest, heartbeat=time.time()
        )

    def reject(self, generation: int, reason: str) -> None:
        """Report that this worker refuses ``generation`` (and keeps serving what it has)."""
        control.update_slot(
            self._ctl,
            self.slot,
            rejected_generation=generation,
            reason=reason,
            heartbeat=time.time(),
        )

    def heartbeat(self, requests: int) -> None:
        """Call about once a second: liveness, requests served, and this process's pid."""
        control.update_slot(
            self._ctl, self.slot, pid=os.getpid(), requests=requests, heartbeat=time.time()
        )

    def publish_stats(self, data: bytes) -> None:
        """Replace this slot's opaque stats (at most ``control.STATS_MAX`` bytes, else
        ValueError). The supervisor reads them with ``Publisher.stats(slot)``."""
        control.write_stats(self._ctl, self.slot, data)

    def stats(self) -> bytes:
        """This slot's stats as last published (b"" if none)."""
        return control.read_stats(self._ctl, self.slot)[0]

    def info(self) -> control.SlotInfo:
        """This worker's own slot, as the supervisor sees it."""
        return control.read_slot(self._ctl, self.slot)

    def load_board(self) -> board.LoadBoard:
        """Where workers publish their open client connections, for accept balancing
        (``shm.board``); valid until ``close``. This slot's count and total start at 0."""
        if self._board is None:
            self._board = board.attach(self._ctl, self.slot, self.nslots)
        return self._board

    def close(self) -> None:
        """Unmap the control block; open Segments stay valid, ``notify_fd`` stays open.
        The board ``load_board`` returned is released first."""
        if self._board is not None:
            self._board.release()
            self._board = None
        with contextlib.suppress(BufferError):
            self._ctl.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
