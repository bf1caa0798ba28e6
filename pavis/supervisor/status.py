"""The status document: what `pavctl status --json` and the admin `/status` page show.

Owns: the shape of that document (documented in docs/OPERATIONS.md; keep it stable).
Must not: change anything — it reads the supervisor's records and the shm slots.
"""

from __future__ import annotations

import os
import time
from typing import Any, Protocol

from pavis.supervisor.boot import Options
from pavis.supervisor.generations import Generations
from pavis.supervisor.slots import Slot


class Supervisor(Protocol):
    """What the document is read from (``arbiter.Arbiter``)."""

    opts: Options
    started: float
    started_wall: float
    stopping: bool
    slots: list[Slot]
    gens: Generations

    @property
    def fleet(self) -> FleetStatus | None: ...

    def ready(self) -> bool: ...


class FleetStatus(Protocol):
    """A fleet host's agent (``fleet_host.FleetHost``)."""

    def status(self) -> dict[str, Any]: ...


def snapshot(arb: Supervisor) -> dict[str, Any]:
    """The supervisor and every worker slot, as plain JSON-able data."""
    gens = arb.gens
    cur = gens.current
    infos = {i.slot: i for i in gens.publisher.slots()} if gens.publisher else {}
    now, wall = time.monotonic(), time.time()
    workers = []
    for slot in arb.slots:
        info = infos.get(slot.index)
        generation = info.generation if info else 0
        gen = gens.retained.get(generation)
        workers.append(
            {
                "slot": slot.index,
                "pid": slot.pid or None,
                "generation": generation,
                "checksum": info.digest.hex() if info and generation else None,
                "uptime_s": round(now - slot.started, 1) if slot.alive else None,
                "requests": info.requests if info else 0,
                "heartbeat_age_s": round(wall - info.heartbeat, 1)
                if info and info.heartbeat
                else None,
                "restarts": slot.restarts,
                "last_exit": slot.last_exit or None,
                "last_rejection": (
                    {"generation": info.rejected_generation, "reason": info.reason}
                    if info and info.rejected_generation
                    else None
                ),
                "source": gen.source if gen else None,
            }
        )
    return {
        "name": arb.opts.name,
        "pid": os.getpid(),
        "uptime_s": round(now - arb.started, 1),
        "started": _iso(arb.started_wall),
        "config": gens.reload_source or None,
        "state_dir": arb.opts.state_dir,
        "control": arb.opts.control,
        "generation": cur.number if cur else 0,
        "checksum": cur.checksum if cur else None,
        "source": cur.source if cur else None,
        "ready": arb.ready(),
        "stopping": arb.stopping,
        "retained": sorted(gens.retained),
        "reloads": dict(gens.history.outcomes),
        "workers": workers,
        "binds": dict(arb.opts.binds),
        "fleet": arb.fleet.status() if arb.fleet is not None else None,
    }


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
