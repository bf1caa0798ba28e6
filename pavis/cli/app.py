"""The click application: the command group and which module defines which command.

Owns: the table of commands (name → module, short help), the group that imports a command's
module only when that command runs, and running click (``run``). Must not: hold command
logic, or import a command module (or anything heavy) at import time.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

import click

from pavis.errors import EXIT_REJECTED

# name → (module that defines it, its short help). The short help is what `pavctl --help`
# lists without importing every module; tests/unit/test_cli_table.py checks it against the
# commands themselves.
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("pavis.cli.offline", "Compile and validate CONFIG; write nothing (like `nginx -t`)."),
    "compile": ("pavis.cli.offline",
                "Compile CONFIG into a sealed .pvs artifact and print its checksum."),
    "verify": ("pavis.cli.offline",
               "Check the integrity and format of ARTIFACT (a .pvs file, or - for stdin)."),
    "inspect": ("pavis.cli.offline", "Show an artifact's header, checksum and counts."),
    "diff": ("pavis.cli.offline",
             "Semantic diff of A and B (each an artifact or a configuration)."),
    "explain": ("pavis.cli.offline",
                "Say what the proxy would do with one request, from the artifact alone."),
    "schema": ("pavis.cli.offline",
               "Print the JSON Schema of the configuration format (for editors and CI linters)."),
    "serve": ("pavis.cli.live",
              "Run the supervisor in the foreground (systemd Type=notify friendly)."),
    "reload": ("pavis.cli.live",
               "Compile (if a config), seal, store and flip every worker to it — or change "
               "nothing."),
    "rollback": ("pavis.cli.live",
                 "Flip back to the previous (or the named) generation, without recompiling."),
    "status": ("pavis.cli.live",
               "The supervisor and every worker: pid, generation, checksum, uptime, requests."),
    "history": ("pavis.cli.live",
                "Generations with checksum, source, time and outcome (oldest first)."),
    "publish": (
        "pavis.cli.fleet",
        "Compile (if a config), seal, store in etcd and move the fleet's desired pointer.",
    ),
    "fleet": (
        "pavis.cli.fleet",
        "The fleet's state in etcd: status (drift check), rollback, history.",
    ),
}  # fmt: skip


class LazyGroup(click.Group):
    """A group that imports the module defining a command only when that command runs."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._loaded: set[str] = set()

    def _available(self, module: str) -> bool:
        # A module left out of an install: its commands are simply not there.
        try:
            return importlib.util.find_spec(module) is not None
        except ImportError:
            return False

    def _load(self, module: str) -> None:
        if module in self._loaded:
            return
        self._loaded.add(module)
        _register(importlib.import_module(module))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module = COMMANDS[cmd_name][0]
            if self._available(module):
                self._load(module)
        return self.commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        listed = {n for n, (m, _) in COMMANDS.items() if self._available(m)}
        return sorted(listed | set(self.commands))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The table's short help, so that --help imports no command module.
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            # A stand-in command shortens the table's text exactly as click shortens a help.
            command = self.commands.get(name) or click.Command(name, help=COMMANDS[name][1])
            rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
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


def run() -> None:
    """Parse ``sys.argv`` with click and run the command; errors propagate to ``main``."""
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
    sys.exit(code if isinstance(code, int) else 0)
