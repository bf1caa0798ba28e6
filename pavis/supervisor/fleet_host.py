"""The supervisor's side of a fleet host: ``pavis serve --etcd URL --fleet NAME``, and
``--bind LISTENER=ADDRESS``.

Owns: the options, the boot artifact of a fleet host (desired if etcd answers at once, else
the state dir's last-known-good, else waiting for etcd), the listener address overrides, the
refusal of local reloads on a fleet host, and the agent (``pavis.fleet.agent``) built on a
narrow interface: to apply an artifact the agent's thread checks its checksum and hands it
to ``Generations.apply`` — the change every reload and rollback goes through
(verify, publish, flip all-or-nothing, last-known-good, history).
Must not: block the supervisor's loop: every etcd call runs in the agent's threads, except
the bounded read at boot, before anything is served.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import msgspec

from pavis.artifact import Head, verify
from pavis.errors import PavisError, UsageError
from pavis.schema import Model
from pavis.store import Store
from pavis.supervisor import boot
from pavis.supervisor.boot import FleetOptions as FleetOptions
from pavis.supervisor.control import Reply
from pavis.supervisor.generations import Generations

log = logging.getLogger("pavis.supervisor")

APPLY_TIMEOUT = 10.0  # seconds for every worker to acknowledge a fleet artifact
BOOT_READ_S = 3.0  # how long a boot waits for etcd before using last-known-good
_STOP = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}
_M = TypeVar("_M", Head, Model)


class Supervisor(Protocol):
    """What a fleet host needs of the arbiter."""

    gens: Generations

    def status(self) -> dict[str, Any]: ...

    def ready(self) -> bool: ...


# ------------------------------------------------------------------------------- options


def parse_binds(values: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``NAME=HOST:PORT`` (``[v6]:PORT`` for IPv6) → {name: "HOST:PORT"}."""
    binds: dict[str, str] = {}
    for raw in values:
        name, sep, address = raw.partition("=")
        if not sep or not name:
            raise UsageError(f"--bind {raw!r}: expected LISTENER=HOST:PORT")
        split_address(address, f"--bind {raw!r}")
        if name in binds:
            raise UsageError(f"--bind: listener {name!r} given twice")
        binds[name] = address
    return binds


def split_address(address: str, what: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{what}: expected HOST:PORT (port 1-65535)")
    return host, int(port)


def with_binds(model: _M, binds: dict[str, str]) -> _M:
    """``model`` with the overridden listeners' addresses: what this host binds. Only the
    sockets change: the artifact (and every check against it) keeps its own addresses."""
    names = {lst.name for lst in model.listeners}
    unknown = sorted(set(binds) - names)
    if unknown:
        raise PavisError(
            f"--bind {', '.join(unknown)}: the artifact has no such listener "
            f"(it has {', '.join(sorted(names)) or 'none'})"
        )
    listeners = []
    for lst in model.listeners:
        if lst.name in binds:
            host, port = split_address(binds[lst.name], f"--bind {lst.name}")
            lst = msgspec.structs.replace(lst, host=host, port=port)
        listeners.append(lst)
    return msgspec.structs.replace(model, listeners=tuple(listeners))


def default_host_id(name: str) -> str:
    host = socket.gethostname().split(".")[0] or "host"
    return host if name == "default" else f"{host}-{name}"


# ------------------------------------------------------------------------------- boot


def initial_artifact(
    source: str | None, store: Store, fleet: FleetOptions | None, wake_fd: int
) -> tuple[bytes, str, str]:
    """(bytes, origin, reload source) to boot. A fleet host without a source boots desired if
    etcd answers within ``BOOT_READ_S``, else its last-known-good; with neither it waits for
    etcd (with backoff; a stop signal ends the wait)."""
    if fleet is None or source:
        return boot.initial_artifact(source, store)
    from pavis.fleet.store import Store as Etcd

    delay = 0.5
    with Etcd(fleet.etcd, fleet.fleet, timeout=1.0, deadline=BOOT_READ_S) as etcd:
        while True:
            try:
                found = etcd.desired()
                if found is not None:
                    desired = found[0]
                    data = etcd.fetch(desired.checksum)
                    return data, f"fleet {fleet.fleet} generation {desired.generation}", ""
                problem = f"fleet {fleet.fleet} has no desired artifact yet"
            except PavisError as exc:
                problem = str(exc)
            if store.last_known_good():
                log.warning("%s: booting from last-known-good; following etcd meanwhile", problem)
                return boot.initial_artifact(None, store)
            log.warning("%s; no last-known-good in %s: waiting for etcd", problem, store.root)
            _pause(wake_fd, delay)
            delay = min(delay * 2, 10.0)


def _pause(wake_fd: int, seconds: float) -> None:
    """Sleep, unless a stop signal arrives (it arrives as a byte on the wakeup fd)."""
    readable, _, _ = select.select([wake_fd], [], [], seconds)
    if readable:
        try:
            got = set(os.read(wake_fd, 64))
        except BlockingIOError:
            return
        if got & {int(s) for s in _STOP}:
            raise PavisError("stopped while waiting for etcd")


# ------------------------------------------------------------------------------- the host


class _Served(Reply):
    """The flip's answer channel with no client behind it: its answer (sent once every worker
    serves the artifact, before the history and last-known-good reach the disk) only tells
    the agent to report at once."""

    def __init__(self, served: Callable[[], None]) -> None:  # no connection: nothing is sent
        self._served = served

    def __call__(self, answer: dict[str, Any]) -> None:
        if answer.get("ok"):
            self._served()

    def gone(self) -> bool:
        return False


class FleetHost:
    """The agent of one supervisor, and what local reloads mean on a fleet host."""

    def __init__(self, arb: Supervisor, opts: FleetOptions, binds: dict[str, str]) -> None:
        from pavis.fleet.agent import Agent

        self._arb = arb
        self.opts = opts
        self.agent = Agent(opts.etcd, opts.fleet, opts.host_id, os.getpid(), binds, self)

    def start(self) -> None:
        self.agent.start()

    def stop(self) -> None:
        self.agent.stop()

    def status(self) -> dict[str, object]:
        return self.agent.status()

    def refusal(self, op: str) -> str:
        f = self.opts.fleet
        return (
            f"this host follows fleet {f} through etcd: a local {op} would make it diverge. "
            f"Publish with `pavctl publish CONFIG --fleet {f}`, or roll the fleet back with "
            f"`pavctl fleet rollback --fleet {f}` (to serve something else on this host only, "
            "restart it without --etcd)"
        )

    # The agent's Host interface (called in the agent's thread).

    def apply(self, data: bytes, checksum: str, label: str, served: Callable[[], None]) -> None:
        # Stored (last-known-good) by the flip, once every worker serves it; a rejected
        # artifact is not kept.
        if verify(data).checksum != checksum:
            raise PavisError(f"{label}: the bytes are not artifact {checksum}")
        t0 = time.monotonic()
        answer = self._arb.gens.apply(
            data, source=label, origin="fleet", timeout=APPLY_TIMEOUT, respond=_Served(served)
        )
        log.info(
            "%s: %s generation %s in %.0f ms", label, answer.get("outcome"),
            answer.get("generation"), (time.monotonic() - t0) * 1000,
        )  # fmt: skip

    def ready(self) -> bool:
        return self._arb.ready()

    def serving(self) -> Any:
        from pavis.fleet.agent import Serving
        from pavis.fleet.layout import WorkerState

        st = self._arb.status()
        workers = tuple(
            WorkerState(pid=w["pid"], generation=w["generation"], checksum=w["checksum"])
            for w in st["workers"]
            if w["pid"] and w["checksum"]
        )
        return Serving(checksum=st["checksum"] or "", workers=workers, ready=bool(st["ready"]))
