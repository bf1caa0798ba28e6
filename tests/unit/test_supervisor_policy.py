"""Pure decisions of the supervisor, without processes: the restart policy and what counts as
a listener change."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from pavis.compiler import compile_text
from pavis.supervisor import slots as wk
from pavis.supervisor.sockets import listeners_changed
from tests.helpers import direct_config


def _exit(code: int) -> int:
    """A wait status for a process that exited with ``code``."""
    return code << 8


def test_backoff_doubles_for_workers_that_die_young_and_resets_when_stable() -> None:
    slot = wk.Slot(0, pid=1, started=100.0)
    delays = []
    now = 100.5
    for _ in range(8):
        wk.note_exit(slot, _exit(1), now)
        delays.append(round(slot.respawn_at - now, 3))
        slot.pid, slot.started = 1, now
        now += 0.5
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert slot.needs_close
    slot.pid, slot.started = 1, now
    wk.note_exit(slot, _exit(0), now + wk.STABLE_AFTER + 1)
    assert slot.failures == 0 and slot.respawn_at == now + wk.STABLE_AFTER + 1


def test_boot_failure_codes_are_counted_in_a_row() -> None:
    slot = wk.Slot(0, pid=1, started=0.0)
    for code in (70, 71, 70):
        wk.note_exit(slot, _exit(code), 1.0)
        slot.pid = 1
    assert slot.boot_failures == 3
    wk.note_exit(slot, _exit(1), 1.0)
    assert slot.boot_failures == 0
    assert slot.last_exit == "exit 1"


def test_describe_signals() -> None:
    assert wk.describe(signal.SIGKILL) == "killed by SIGKILL"
    assert wk.describe(_exit(70)) == "exit 70"
    assert wk.exit_code(signal.SIGKILL) is None


def test_listener_changes(tmp_path: Path) -> None:
    def model(port: int, admin: int | None, body: str = "A"):  # type: ignore[no-untyped-def]
        return compile_text(direct_config(port, body, admin), "yaml").model

    base = model(8080, 9901)
    assert listeners_changed(base, model(8080, 9901, "B")) == ""
    moved = listeners_changed(base, model(8081, 9901))
    assert "removed public=127.0.0.1:8080" in moved and "added public=127.0.0.1:8081" in moved
    assert "<admin>" in listeners_changed(base, model(8080, 9902))
    assert "<admin>" in listeners_changed(base, model(8080, None))


def test_reap_without_children_returns_nothing() -> None:
    assert os.getpid() > 0 and wk.reap() == []
