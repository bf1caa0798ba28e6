"""The entry point of both console scripts, ``pavis`` and ``pavctl``.

Owns: ``main``, the single place where errors become exit codes and stderr lines. A plain
live client command line (reload, rollback, status, history) runs through
``pavis.cli.client`` without importing click; everything else — and any command line that
parser does not fully understand, ``--help`` included — goes to the click application in
``pavis.cli.app``, whose group imports a command's module only when that command runs:
``pavis.cli.offline`` (check, compile, verify, inspect, diff, explain, schema),
``pavis.cli.live`` (serve, reload, rollback, status, history) and, when present,
``pavis.cli.fleet`` (publish, fleet). A submodule may expose ``COMMANDS`` (a sequence of click
commands) or ``register(group)``, or decorate ``pavis.cli.cli`` directly.
Must not: hold command logic, catch errors anywhere but ``main``, or import click, the
compiler, msgspec or PyYAML at import time — `pavctl status` only sends one line over a socket
and should start about as fast as Python does.

Exit codes (see docs/OPERATIONS.md): 0 ok · 1 rejected or invalid · 2 usage ·
3 supervisor unreachable · 4 timed out waiting for workers.
"""

from __future__ import annotations

import sys

from pavis.errors import PavisError

TYPE_CHECKING = False  # not typing's: a live command would pay ~10 ms to import it
if TYPE_CHECKING:
    from typing import Any


def __getattr__(name: str) -> Any:
    # ``pavis.cli.cli`` (the click group) and its table, built on first use.
    if name in ("cli", "COMMANDS", "LazyGroup"):
        from pavis.cli import app

        return getattr(app, name)
    raise AttributeError(f"module 'pavis.cli' has no attribute {name!r}")


def report(exc: PavisError) -> None:
    """Print an error to stderr: one line per problem, ``$.path: message (constraint_id)``."""
    problems = getattr(exc, "problems", None)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        source = getattr(exc, "source", "") or "configuration"
        print(f"{source}: rejected, {len(problems)} problem(s)", file=sys.stderr)
    else:
        print(f"error: {exc}", file=sys.stderr)


def main() -> None:
    try:
        from pavis.cli import client

        command = client.parse(sys.argv[1:])
        if command is None:
            from pavis.cli import app

            app.run()
        else:
            command()
    except PavisError as exc:
        report(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)


__all__ = ["cli", "main", "report"]
