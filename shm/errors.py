"""Errors raised by shm: one base class, three specific outcomes of the supervisor side.

Owns: ShmError and its subclasses. Must not: import anything outside the stdlib (pavis maps
these to its own hierarchy at the boundary).
"""

from __future__ import annotations


class ShmError(Exception):
    """A shared-memory object is missing, unreadable, torn or fails its checksum.

    ``reason`` is a short stable identifier (``missing``, ``truncated``, ``bad_magic``,
    ``wrong_generation``, ``checksum_mismatch``, ``torn``, ``unknown_generation``, ``bad_name``,
    ``bad_slot``, ``permission``, ...); ``detail`` is for humans. ``str()`` gives both.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class InstanceBusy(ShmError):
    """Another live supervisor holds the liveness lock of this instance name."""

    def __init__(self, name: str, pid: int) -> None:
        self.name = name
        self.pid = pid
        holder = f" (pid {pid})" if pid else ""
        super().__init__("instance_busy", f"instance {name!r} is held by a live supervisor{holder}")


class AckTimeout(ShmError):
    """Some workers did not acknowledge ``generation`` in time; ``missing`` = [(slot, pid)]."""

    def __init__(self, generation: int, missing: list[tuple[int, int]]) -> None:
        self.generation = generation
        self.missing = missing
        who = ", ".join(f"slot {s} (pid {p})" for s, p in missing)
        super().__init__("ack_timeout", f"generation {generation} not acknowledged by {who}")


class WorkerRejected(ShmError):
    """A worker refused ``generation``; ``reason`` is the text it reported in its slot."""

    def __init__(self, slot: int, pid: int, reason: str, generation: int = 0) -> None:
        super().__init__(
            "worker_rejected", f"slot {slot} (pid {pid}) rejected generation {generation}: {reason}"
        )
        self.slot = slot
        self.pid = pid
        self.generation = generation
        self.reason = reason
