"""The live commands: ``serve`` runs the supervisor; ``reload``, ``rollback``, ``status`` and
``history`` drive a running one through its control socket.

Owns: their options, defaults (state dir, control socket path, worker count) and output.
Must not: map errors to exit codes itself — commands raise ``PavisError`` subclasses and the
group's ``main`` turns them into exit codes in one place; or import anything heavy at module
level (the compiler, the artifact code, msgspec, PyYAML): reload, rollback, status and history
only send one JSON line to the supervisor, which compiles. Registered on ``pavis.cli.cli``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

from pavis.cli import cli
from pavis.control_client import default_control_path, request
from pavis.errors import ControlError, UsageError

CLIENT_MARGIN = 120.0  # beyond --timeout: compiling a large config happens before the wait


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


def _control_path(control: str | None, name: str) -> str:
    return control or default_control_path(name)


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
def serve(
    source: str | None,
    workers: int | None,
    control: str | None,
    state_dir: str | None,
    name: str,
    demo: bool,
) -> None:
    """Run the supervisor in the foreground (systemd Type=notify friendly).

    Boots CONFIG or ARTIFACT, or with neither the last-known-good artifact of the state dir.
    SIGHUP reloads from CONFIG; SIGTERM/SIGINT drain and stop; SIGQUIT stops at once.
    """
    import logging

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
    opts = Options(
        source=os.path.abspath(source) if source else None,
        workers=workers or os.cpu_count() or 1,
        control=os.path.abspath(control or default_control_path(name)),
        state_dir=os.path.abspath(state_dir or _state_dir(name)),
        name=name,
    )
    raise click.exceptions.Exit(Arbiter(opts).run())


# ---------------------------------------------------------------------------------- reload


def _print_flip(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        answer = {k: v for k, v in answer.items() if k != "ok"}
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(
        f"generation {answer['generation']} checksum {answer['checksum']} "
        f"({answer['outcome']}, {answer['workers']} workers, {answer['elapsed_ms']} ms)"
    )
    if answer.get("message"):
        click.echo(answer["message"])


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
    payload: dict[str, Any] = {"op": "reload", "wait": wait, "timeout": timeout}
    if source:
        if not os.path.exists(source):
            raise UsageError(f"{source}: no such file")
        payload["path"] = os.path.abspath(source)
    answer = request(_control_path(control, name), payload, timeout + CLIENT_MARGIN)
    _print_flip(answer, as_json)


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
    payload: dict[str, Any] = {"op": "rollback", "wait": wait, "timeout": timeout, "to": to}
    answer = request(_control_path(control, name), payload, timeout + CLIENT_MARGIN)
    _print_flip(answer, as_json)


# ---------------------------------------------------------------------------------- status


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the documented JSON form.")
@click.option("--expect", metavar="CHECKSUM", help="Exit 1 unless every worker runs CHECKSUM.")
@_control_option
def status(as_json: bool, expect: str | None, control: str | None, name: str) -> None:
    """The supervisor and every worker: pid, generation, checksum, uptime, requests."""
    st = request(_control_path(control, name), {"op": "status"}, 10.0)["status"]
    if as_json:
        click.echo(json.dumps(st, indent=2))
    else:
        _print_status(st)
    if expect is not None:
        from pavis.store import MIN_PREFIX  # only --expect needs it (the store imports msgspec)

        want = expect.lower()
        if len(want) < MIN_PREFIX:
            raise UsageError(f"--expect {expect!r}: give at least {MIN_PREFIX} hex digits")
        drift = [
            w for w in st["workers"] if not w["pid"] or not (w["checksum"] or "").startswith(want)
        ]
        if drift or not (st["checksum"] or "").startswith(want):
            who = ", ".join(f"slot {w['slot']} runs {w['checksum']}" for w in drift)
            raise ControlError(f"drift: expected {expect}; current {st['checksum']}; {who}")


def _print_status(st: dict[str, Any]) -> None:
    state = "stopping" if st["stopping"] else ("ready" if st["ready"] else "not ready")
    click.echo(
        f"pavis {st['name']}  pid {st['pid']}  up {_dur(st['uptime_s'])}  {state}\n"
        f"generation {st['generation']}  checksum {st['checksum']}\n"
        f"source {st['source']}"
    )
    click.echo(f"{'slot':>4}  {'pid':>7}  {'gen':>5}  {'checksum':32}  {'uptime':>8}  "
               f"{'requests':>9}  last rejection")  # fmt: skip
    for w in st["workers"]:
        rej = w["last_rejection"]
        last = "-" if not rej else f"gen {rej['generation']}: {rej['reason']}"
        click.echo(
            f"{w['slot']:>4}  {w['pid'] or '-':>7}  {w['generation']:>5}  "
            f"{w['checksum'] or '-':32}  {_dur(w['uptime_s']):>8}  {w['requests']:>9}  "
            f"{last}"
        )


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the documented JSON form.")
@_control_option
def history(as_json: bool, control: str | None, name: str) -> None:
    """Generations with checksum, source, time and outcome (oldest first)."""
    entries = request(_control_path(control, name), {"op": "history"}, 10.0)["history"]
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    click.echo(f"{'time':20}  {'op':8}  {'gen':>5}  {'checksum':32}  {'outcome':9}  source")
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time"]))
        click.echo(
            f"{when:20}  {e['op']:8}  {e['generation'] or '-':>5}  {e['checksum'] or '-':32}  "
            f"{e['outcome']:9}  {e['source']}"
        )
        if e["reason"]:
            click.echo(f"{'':22}{e['reason']}")
