"""The history of generation changes: one entry per boot, reload, rollback or apply.

Owns: recording an entry (and counting outcomes for the metrics), turning a refusal into a
recorded ``ControlError``, and resolving what a rollback target names — the previous accepted
generation, a generation number or a checksum prefix — from the entries. Must not: publish,
flip or decide whether a change is acceptable (``generations`` does).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pavis.errors import ControlError, PavisError
from pavis.store import ACCEPTED, REJECTED, UNCHANGED, Entry, Store

log = logging.getLogger("pavis.supervisor")

_COMPILE_CODES = ("compile_memory", "compile_timeout", "compile_crashed")


class History:
    def __init__(self, store: Store, boot_id: str) -> None:
        self.store = store
        self.boot_id = boot_id
        self.outcomes: dict[str, int] = {}  # outcome → count of changes (boots aside)
        self.last_ok = True  # the last boot, reload or rollback was accepted or unchanged
        self.last_success = 0.0  # unix time of the last that was

    def record(
        self,
        op: str,
        source: str,
        outcome: str,
        number: int,
        checksum: str,
        reason: str,
        flush: bool = True,
    ) -> None:
        if op != "boot":
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        entry = Entry(time.time(), op, source, outcome, number, checksum, reason, self.boot_id)
        self.last_ok = outcome in (ACCEPTED, UNCHANGED)
        if self.last_ok:
            self.last_success = entry.time
        self.store.record(entry, flush)

    def reject(
        self, op: str, source: str, reason: str, checksum: str = "", code: str = ""
    ) -> ControlError:
        """The refusal of a change, recorded; ``code`` names why a compile failed."""
        log.warning("%s rejected (%s): %s", op, source or "no source", reason)
        self.record(op, source, REJECTED, 0, checksum, reason)
        error = ControlError(reason)
        if code in _COMPILE_CODES:
            error.code = code  # the refusal names why the compile failed
        return error

    def target(self, to: str | None, current: str, retained: Callable[[int], str | None]) -> str:
        """The checksum a rollback ``to`` names (None: the newest accepted one that is not
        ``current``); ``retained`` maps a generation still in shm to its checksum."""
        entries = [e for e in self.store.history() if e.outcome == ACCEPTED and e.checksum]
        if to is None:
            for e in reversed(entries):
                if e.checksum != current:
                    return e.checksum
            raise self.reject("rollback", "rollback", "no previous generation to roll back to")
        if to.isdigit() and len(to) <= 9:
            number = int(to)
            checksum = retained(number)
            if checksum is not None:
                return checksum
            mine = [e for e in entries if e.generation == number and e.boot == self.boot_id]
            other = [e for e in entries if e.generation == number]
            found = mine or other
            if not found:
                raise self.reject(
                    "rollback", "rollback", f"no accepted generation {number} in history"
                )
            return found[-1].checksum
        try:
            return self.store.resolve(to)
        except PavisError as exc:
            raise self.reject("rollback", "rollback", str(exc)) from None
