"""What the supervisor boots and how it gets its ports: the first artifact (the given source,
else last-known-good, else the newest intact stored artifact) and binding the listeners
while taking over from orphaned workers of a dead supervisor.

Owns: those two choices and what they log, and the ``Options`` a supervisor is started
with. Must not: publish, fork or flip anything (the arbiter does, in its boot order).
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from dataclasses import dataclass, field

from pavis.artifact import Head
from pavis.errors import PavisError
from pavis.schema import Model
from pavis.store import Store
from pavis.supervisor import orphans
from pavis.supervisor.sockets import BindError, bind_listeners
from pavis.supervisor.source import load

log = logging.getLogger("pavis.supervisor")


@dataclass(frozen=True)
class FleetOptions:
    """``--etcd``, ``--fleet`` and ``--host-id`` (``supervisor.fleet_host``)."""

    etcd: str
    fleet: str
    host_id: str


@dataclass
class Options:
    """What a supervisor is told to run (``pavis serve``)."""

    source: str | None  # config or artifact path; None = boot from last-known-good
    workers: int
    control: str
    state_dir: str
    name: str
    fleet: FleetOptions | None = None  # follow a fleet through etcd
    binds: dict[str, str] = field(default_factory=dict)  # listener name → address on this host


def initial_artifact(source: str | None, store: Store) -> tuple[bytes, str, str]:
    """(artifact bytes, where they came from, what a reload without a path reads)."""
    if source:
        return load(source), source, source
    lkg = store.last_known_good()
    if not lkg:
        raise PavisError(f"no config given and no last-known-good artifact in {store.root}")
    try:
        data, checksum, origin = store.get(lkg), lkg, f"last-known-good {lkg}"
    except PavisError as exc:
        found = store.newest_intact(skip=lkg)
        if found is None:
            raise PavisError(
                f"last-known-good {lkg} is unusable ({exc}) and no other stored artifact "
                f"in {store.root} verifies"
            ) from None
        checksum, data = found
        origin = f"newest intact artifact {checksum}"
        log.error(
            "last-known-good %s is unusable (%s); booting from %s, the newest intact "
            "artifact in the store", lkg, exc, checksum,
        )  # fmt: skip
    # Reloads without a path (SIGHUP, `pavctl reload`) read the config this came from.
    reload_source = store.source_of(checksum)
    if reload_source:
        log.info("reloads without a path read %s (where %s came from)", reload_source, checksum)
    return data, origin, reload_source


def bind_taking_over(name: str, model: Head | Model) -> dict[str, socket.socket]:
    """Bind the listeners; first tell workers orphaned by a dead supervisor of this name
    to drain, since they still hold the ports (see ``orphans``)."""
    left = orphans.find(name)
    if not left:
        return bind_listeners(model.listeners)
    log.warning(
        "taking over from %d worker(s) of a dead supervisor (pids %s): they drain and exit",
        len(left), " ".join(map(str, left)),
    )  # fmt: skip
    orphans.terminate(left)
    deadline = time.monotonic() + model.limits.drain_timeout_ms / 1000.0 + 5.0
    while True:
        try:
            return bind_listeners(model.listeners)
        except BindError:
            still = orphans.alive(left)
            if not still:
                raise
            if time.monotonic() >= deadline:
                orphans.terminate(still, signal.SIGKILL)
            time.sleep(0.05)
