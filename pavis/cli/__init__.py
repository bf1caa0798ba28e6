"""The click application behind both console scripts, ``pavis`` and ``pavctl``.

Owns: the command group and the single place where errors become exit codes and stderr lines
(``main``). Commands live in submodules and are registered here: ``pavis.cli.offline`` (check,
compile, verify, inspect, diff, explain, schema) and, when present, ``pavis.cli.live`` (serve,
reload, rollback, status, history). A submodule may expose ``COMMANDS`` (a sequence of click
commands) or ``register(group)``, or decorate ``pavis.cli.cli`` directly.
Must not: hold command logic, or catch errors anywhere but ``main``.

Exit codes (SPEC §2): 0 ok · 1 rejected or invalid · 2 usage · 3 supervisor unreachable ·
4 timed out waiting for workers.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

import click

from pavis.errors import EXIT_REJECTED, PavisError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="pavis")
def cli() -> None:
    """pavis — a reverse proxy that executes sealed configuration artifacts.

    \b
    Offline (no server needed):
      pavctl check site.yaml              validate; every problem with its field path
      pavctl compile site.yaml            write site.pvs, print its checksum
      pavctl explain site.pvs --host example.com --path /v1/x
    Live (talk to a running supervisor):
      pavis serve site.yaml               run the proxy in the foreground
      pavctl reload site.yaml             compile, publish, wait for every worker

    Exit codes: 0 ok, 1 rejected or invalid, 2 usage, 3 supervisor unreachable,
    4 timed out waiting for workers. Run `pavctl COMMAND --help` for details.
    """


def _register(module: ModuleType) -> None:
    for command in getattr(module, "COMMANDS", ()):
        cli.add_command(command)
    register = getattr(module, "register", None)
    if register is not None:
        register(cli)


def report(exc: PavisError) -> None:
    """Print an error to stderr: one line per problem, ``$.path: message (constraint_id)``."""
    problems = getattr(exc, "problems", None)
    if problems:
        for problem in problems:
            click.echo(str(problem), err=True)
        source = getattr(exc, "source", "") or "configuration"
        click.echo(f"{source}: rejected, {len(problems)} problem(s)", err=True)
    else:
        click.echo(f"error: {exc}", err=True)


def main() -> None:
    try:
        # Without standalone mode click returns the code of ctx.exit(n) instead of exiting.
        code = cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # UsageError, BadParameter: exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_REJECTED)
    except PavisError as exc:
        report(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


# Registered last, so that a command module may import anything above from pavis.cli.
_register(importlib.import_module("pavis.cli.offline"))
# The live commands are written separately; the CLI works with or without them.
if importlib.util.find_spec("pavis.cli.live") is not None:
    _register(importlib.import_module("pavis.cli.live"))
_register(importlib.import_module("pavis.cli.fleet"))

__all__ = ["cli", "main", "report"]
