"""The status document: what `pavctl status --json` and the admin `/status` page show.

Owns: the shape of that document (documented in docs/OPERATIONS.md; keep it stable).
Must not: change anything — it reads the supervisor's records and the shm slots.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pavis.supervisor.arbiter import Arbiter


def snapshot(arb: Arbiter) -> dict[str, Any]:
    """The supervisor and every worker slot, as plain JSON-able data."""
    cur = arb.current
    infos = {i.slot: i for i in arb.publisher.slots()} if arb.publisher else {}
    now, wall = time.monotonic(), time.time()
    workers = []
    for slot in arb.slots:
        info = infos.get(slot.index)
        generation = info.generation if info else 0
        gen = arb.generations.get(generation)
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
        "config": arb.reload_source or None,
        "state_dir": arb.opts.state_dir,
        "control": arb.opts.control,
        "generation": cur.number if cur else 0,
        "checksum": cur.checksum if cur else None,
        "source": cur.source if cur else None,
        "ready": arb.ready(),
        "stopping": arb.stopping,
        "retained": sorted(arb.generations),
        "reloads": dict(arb.reloads),
        "workers": workers,
        "binds": dict(arb.opts.binds),
        "fleet": arb.fleet.status() if arb.fleet is not None else None,
    }


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
