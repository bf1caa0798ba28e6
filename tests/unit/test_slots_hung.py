"""When the supervisor judges a worker hung (``slots.hung``): pure, no process involved."""

from __future__ import annotations

from pavis.supervisor.slots import BOOT_GRACE, HEARTBEAT_TIMEOUT, Slot, hung
from shm import SlotInfo

NOW, WALL = 1000.0, 50_000.0


def info(pid: int, heartbeat: float) -> SlotInfo:
    return SlotInfo(0, pid, 1, b"\0" * 16, heartbeat, 0, 0, "")


def started(ago: float) -> Slot:
    return Slot(0, pid=42, started=NOW - ago, started_wall=WALL - ago)


def test_a_slot_without_a_process_is_never_hung() -> None:
    assert hung(Slot(0), None, NOW, WALL) == ""


def test_a_young_worker_may_not_have_attached_or_beaten_yet() -> None:
    young = started(BOOT_GRACE - 1)
    assert hung(young, None, NOW, WALL) == ""
    assert hung(young, info(42, WALL - BOOT_GRACE - 5), NOW, WALL) == ""  # a beat of before


def test_an_old_worker_that_never_attached_or_beat_is_hung() -> None:
    old = started(BOOT_GRACE + 1)
    assert "never attached" in hung(old, None, NOW, WALL)
    assert "never attached" in hung(old, info(7, WALL), NOW, WALL)  # another pid's record
    assert "since start" in hung(old, info(42, WALL - BOOT_GRACE - 5), NOW, WALL)


def test_a_stopped_heartbeat_is_hung_a_recent_one_is_not() -> None:
    w = started(100)
    assert hung(w, info(42, WALL - 1), NOW, WALL) == ""
    assert "no heartbeat for" in hung(w, info(42, WALL - HEARTBEAT_TIMEOUT - 1), NOW, WALL)
