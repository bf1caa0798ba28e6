"""Control requests (``pavctl status|history|reload|rollback``): one method per op.

Owns: dispatching a control-socket request by name to ``op_<op>`` — as the arbiter's loop
dispatches signals to ``handle_<signal>`` — and shaping each answer. Must not: change a
generation itself (``Generations`` does) or reach into the arbiter beyond ``Supervisor``.
"""

from __future__ import annotations

from typing import Any, Protocol

from pavis.errors import EXIT_USAGE
from pavis.supervisor.control import Respond, refusal
from pavis.supervisor.generations import DEFAULT_WAIT, Generations


class FleetHost(Protocol):
    def refusal(self, op: str) -> str: ...


class Supervisor(Protocol):
    """What the ops read (``arbiter.Arbiter``)."""

    gens: Generations

    @property
    def fleet(self) -> FleetHost | None: ...

    def status(self) -> dict[str, Any]: ...


class Ops:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup

    def handle(self, req: dict[str, Any], respond: Respond) -> None:
        """Dispatch a control request to ``op_<op>``."""
        handler = getattr(self, f"op_{req['op']}", None)
        if handler is None:
            respond(refusal("usage", f"unknown op {req['op']!r}", EXIT_USAGE))
            return
        handler(req, respond)

    def op_status(self, req: dict[str, Any], respond: Respond) -> None:
        respond({"ok": True, "status": self.sup.status()})

    def op_history(self, req: dict[str, Any], respond: Respond) -> None:
        respond({"ok": True, "history": [e.to_json() for e in self.sup.gens.store.history()]})

    def op_reload(self, req: dict[str, Any], respond: Respond) -> None:
        if not self._local("reload", respond):
            return
        answer = self.sup.gens.reload(req.get("path"), *_bounds(req), respond)
        respond({"ok": True, **answer})  # ignored if already answered (``wait: false``)

    def op_rollback(self, req: dict[str, Any], respond: Respond) -> None:
        if not self._local("rollback", respond):
            return
        to = req.get("to")
        answer = self.sup.gens.rollback(None if to is None else str(to), *_bounds(req), respond)
        respond({"ok": True, **answer})

    def _local(self, op: str, respond: Respond) -> bool:
        """A fleet host changes generations only as its fleet says (docs/FLEET.md)."""
        fleet = self.sup.fleet
        if fleet is not None:
            respond(refusal("fleet_host", fleet.refusal(op)))
            return False
        return True


def _bounds(req: dict[str, Any]) -> tuple[bool, float]:
    """(wait, timeout) of a generation-changing request."""
    return bool(req.get("wait", True)), float(req.get("timeout") or DEFAULT_WAIT)
