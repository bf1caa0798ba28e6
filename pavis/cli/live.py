"""The live commands: ``serve`` runs the supervisor; ``reload``, ``rollback``, ``status`` and
``history`` drive a running one through its control socket.

Owns: their options, defaults (state dir, control socket path, worker count) and output.
Must not: map errors to exit codes itself — commands raise ``PavisError`` subclasses and the
group's ``main`` turns them into exit codes in one place; or import anything heavy at module
level (the compiler, the artifact code, msgspec, PyYAML): reload, rollback, status and history
only send one JSON line to the supervisor, which compiles (``pavis.cli.client`` does that, and
runs them without click when their command line is plain). Registered on ``pavis.cli.cli``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from pavis.cli import client
from pavis.cli.app import cli
from pavis.control_client import default_control_path
from pavis.errors import UsageError


def _control_option(f: Any) -> Any:
    f = click.option(
        "--name", default="default", show_default=True,
        help="Instance name (picks the default control socket).",
    )(f)  # fmt: skip
    return click.option(
        "--control",
        envvar="PAVIS_CONTROL",
        metavar="PATH",
        help="Control socket [env PAVIS_CONTROL; default $RUNTIME_DIRECTORY or /run/pavis/NAME.sock].",
    )(f)


def _state_dir(name: str) -> str:
    env = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return env or os.path.join("/var/lib/pavis", name)


# ---------------------------------------------------------------------------------- serve


@cli.command()
@click.argument("source", required=False, metavar="[CONFIG|ARTIFACT]")
@click.option("--workers", "-w", type=click.IntRange(1, 64), help="Worker processes [CPU count].")
@click.option("--control", envvar="PAVIS_CONTROL", metavar="PATH", help="Control socket path.")
@click.option("--state-dir", metavar="DIR", help="[$STATE_DIRECTORY or /var/lib/pavis/NAME]")
@click.option("--name", default="default", show_default=True, help="Instance name (shm, socket).")
@click.option("--demo", is_flag=True, help="Run the bundled demo config and demo upstream.")
@click.option("--etcd", metavar="URL[,URL...]",
              help="Follow a fleet: etcd client URLs (with --fleet; see docs/FLEET.md).")  # fmt: skip
@click.option("--fleet", metavar="NAME", help="The fleet to follow (with --etcd).")
@click.option(
    "--host-id",
    metavar="ID",
    help="This host's id in the fleet [short hostname; -NAME added with --name NAME].",
)
@click.option("--bind", "binds", multiple=True, metavar="LISTENER=HOST:PORT",
              help="Bind the named listener at this address on this host only (repeatable).")  # fmt: skip
def serve(
    source: str | None,
    workers: int | None,
    control: str | None,
    state_dir: str | None,
    name: str,
    demo: bool,
    etcd: str | None,
    fleet: str | None,
    host_id: str | None,
    binds: tuple[str, ...],
) -> None:
    """Run the supervisor in the foreground (systemd Type=notify friendly).

    Boots CONFIG or ARTIFACT, or with neither the last-known-good artifact of the state dir.
    SIGHUP reloads from CONFIG; SIGTERM/SIGINT drain and stop; SIGQUIT stops at once.
    With --etcd and --fleet it follows the fleet's desired artifact (local reloads are refused).
    """
    import logging

    from pavis.supervisor import fleet_host
    from pavis.supervisor.arbiter import Arbiter, Options

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s pavis[%(process)d] %(levelname)s %(message)s",
    )
    if demo:
        from pavis.supervisor import demo as demo_mod

        if source:
            raise UsageError("--demo brings its own config; drop the CONFIG argument")
        code = demo_mod.run(workers or 2, control, state_dir, "demo" if name == "default" else name)
        raise click.exceptions.Exit(code)
    if bool(etcd) != bool(fleet) or (host_id and not fleet):
        raise UsageError("--etcd and --fleet go together (and --host-id needs them)")
    follow = None
    if etcd and fleet:
        from pavis.fleet.layout import check_name
        from pavis.fleet.store import parse_endpoints

        parse_endpoints(etcd)
        follow = fleet_host.FleetOptions(
            etcd, check_name("fleet name", fleet),
            check_name("host id", host_id or fleet_host.default_host_id(name)),
        )  # fmt: skip
    opts = Options(
        source=os.path.abspath(source) if source else None,
        workers=workers or os.cpu_count() or 1,
        control=os.path.abspath(control or default_control_path(name)),
        state_dir=os.path.abspath(state_dir or _state_dir(name)),
        name=name,
        fleet=follow,
        binds=fleet_host.parse_binds(binds),
    )
    raise click.exceptions.Exit(Arbiter(opts).run())


# ---------------------------------------------------------------------------------- reload


@cli.command()
@click.argument("source", required=False, metavar="[CONFIG|ARTIFACT]")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Return only when every worker serves the new generation.")  # fmt: skip
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@_control_option
def reload(
    source: str | None, wait: bool, timeout: float, as_json: bool, control: str | None, name: str
) -> None:
    """Compile (if a config), seal, store and flip every worker to it — or change nothing.

    With no argument the supervisor reloads its own config path (like SIGHUP). The path is
    sent as an absolute path: the supervisor reads it, so it must be readable by it.
    """
    client.reload(source, wait, timeout, as_json, control, name)


@cli.command()
@click.option("--to", "to", metavar="GENERATION|CHECKSUM",
              help="A generation number or checksum (or a unique prefix of 10+ hex digits).")  # fmt: skip
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@_control_option
def rollback(
    to: str | None, wait: bool, timeout: float, as_json: bool, control: str | None, name: str
) -> None:
    """Flip back to the previous (or the named) generation, without recompiling."""
    client.rollback(to, wait, timeout, as_json, control, name)


# ---------------------------------------------------------------------------------- status


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the documented JSON form.")
@click.option("--expect", metavar="CHECKSUM", help="Exit 1 unless every worker runs CHECKSUM.")
@_control_option
def status(as_json: bool, expect: str | None, control: str | None, name: str) -> None:
    """The supervisor and every worker: pid, generation, checksum, uptime, requests."""
    client.status(as_json, expect, control, name)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the documented JSON form.")
@_control_option
def history(as_json: bool, control: str | None, name: str) -> None:
    """Generations with checksum, source, time and outcome (oldest first)."""
    client.history(as_json, control, name)
