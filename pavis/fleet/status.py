"""Where each host of a fleet stands against a target checksum.

Owns: the one definition of drift, shared by ``pavctl fleet status`` and ``pavctl publish
--wait``: a live host (its report exists, so its lease holds) is *on* the target when its
supervisor and every worker serve that checksum (the target may be a prefix of it), *rejected* when its last rejection is of the
target, and *lagging* otherwise.
Must not: talk to etcd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pavis.fleet.layout import Desired, HostReport

State = Literal["on", "lagging", "rejected"]


@dataclass(frozen=True)
class HostView:
    report: HostReport
    state: State
    age: float  # seconds since the host last applied an artifact

    def to_json(self) -> dict[str, Any]:
        r = self.report
        return {
            "host_id": r.host_id,
            "state": self.state,
            "pid": r.pid,
            "generation": r.generation,
            "checksum": r.checksum,
            "workers": [
                {"pid": w.pid, "generation": w.generation, "checksum": w.checksum}
                for w in r.workers
            ],
            "applied_at": r.applied_at,
            "age_s": round(self.age, 1),
            "rejection": None
            if r.rejection is None
            else {
                "checksum": r.rejection.checksum,
                "reason": r.rejection.reason,
                "time": r.rejection.time,
            },
            "binds": dict(r.binds),
            "ready": r.ready,
            "following": r.following,
            "error": r.error or None,
        }


def assess(hosts: list[HostReport], target: str, now: float) -> list[HostView]:
    views = []
    for r in sorted(hosts, key=lambda h: h.host_id):
        if target and all(c.startswith(target) for c in r.serving()):
            state: State = "on"
        elif r.rejection is not None and r.rejection.checksum.startswith(target):
            state = "rejected"
        else:
            state = "lagging"
        views.append(HostView(r, state, max(0.0, now - r.applied_at)))
    return views


def desired_json(desired: Desired | None) -> dict[str, Any] | None:
    if desired is None:
        return None
    return {
        "checksum": desired.checksum,
        "generation": desired.generation,
        "time": desired.time,
        "source": desired.source,
        "publisher": desired.publisher,
    }
