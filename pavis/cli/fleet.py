"""The fleet commands: ``pavctl publish`` and ``pavctl fleet status|rollback|history``.

Owns: their arguments, help text and output. They talk to etcd (``--etcd URL[,URL...]`` or
``PAVIS_ETCD``) through ``pavis.fleet``, never to a supervisor.
Must not: catch errors (``pavis.cli.main`` turns every ``PavisError`` into an exit code), or
touch the sealed bytes beyond compiling a config and handing the artifact to ``pavis.fleet``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pavis import artifact
from pavis.errors import EXIT_TIMEOUT, FleetError, IngestError, UsageError
from pavis.fleet.layout import Desired, encode
from pavis.fleet.status import HostView, assess, desired_json

if TYPE_CHECKING:
    from pavis.fleet.store import Store


def _store(etcd: str, fleet: str) -> Store:
    # Imported here: the etcd client (requests & co.) would slow every other pavctl command.
    from pavis.fleet.store import Store

    store = Store(etcd, fleet)
    click.get_current_context().call_on_close(store.close)
    return store


def _etcd_options(f: Any) -> Any:
    f = click.option(
        "--fleet", envvar="PAVIS_FLEET", required=True, metavar="NAME",
        help="Fleet name: keys live under /pavis/NAME/ [$PAVIS_FLEET].",
    )(f)  # fmt: skip
    return click.option(
        "--etcd", envvar="PAVIS_ETCD", required=True, metavar="URL[,URL...]",
        help="etcd client URLs, tried in turn [$PAVIS_ETCD].",
    )(f)  # fmt: skip


def _sealed(source: str) -> tuple[bytes, bool]:
    """The bytes of an artifact as they are, or a configuration compiled and sealed; and
    whether they were compiled here (then decoding them again proves nothing)."""
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise IngestError(f"cannot read {source}: {exc.strerror}") from None
    if artifact.is_artifact(data):
        return data, False
    # Imported here so that artifact-only publishes and `--help` stay cheap.
    from pavis.compiler import compile_path, compile_text

    if source == "-":
        return artifact.seal(compile_text(data, "yaml", "<stdin>")), True
    return artifact.seal(compile_path(source)), True


def _duration(text: str, what: str) -> float:
    """``30s``, ``500ms``, ``2m`` or plain seconds."""
    value = text.strip().lower()
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("", 1.0)):
        if value.endswith(suffix):
            number = value[: len(value) - len(suffix)] if suffix else value
            try:
                seconds = float(number) * scale
            except ValueError:
                break
            if seconds >= 0:
                return seconds
            break
    raise UsageError(f"{what} {text!r}: expected a duration such as 30s, 500ms or 2m")


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _describe(views: list[HostView]) -> str:
    parts = []
    for v in views:
        r = v.report
        if v.state == "rejected" and r.rejection is not None:
            parts.append(f"{r.host_id} rejected it: {r.rejection.reason}")
        else:
            serving = ", ".join(sorted(r.serving()))
            parts.append(f"{r.host_id} serves {serving} (generation {r.generation})")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------- publish


@click.command()
@click.argument(
    "source", metavar="CONFIG|ARTIFACT", type=click.Path(dir_okay=False, allow_dash=True)
)
@_etcd_options
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Return only when every live host serves the new artifact.")  # fmt: skip
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait.")
@click.option("--canary", type=click.IntRange(min=1), metavar="N",
              help="Try it on N live hosts first (the first N host ids), then on the rest.")  # fmt: skip
@click.option("--soak", default="30s", show_default=True, metavar="DURATION",
              help="With --canary: how long the canaries must stay ready on it (30s, 500ms, 2m).")  # fmt: skip
def publish(
    source: str, etcd: str, fleet: str, wait: bool, timeout: float, canary: int | None, soak: str
) -> None:
    """Compile (if a config), seal, store in etcd and move the fleet's desired pointer.

    The artifact is stored by checksum, then desired, its history entry and the manifest are
    written in one transaction guarded by desired's revision: of two racing publishers one
    wins and the other exits 1 naming the winner. Publishing the artifact desired already
    names changes nothing. Prints `fleet NAME generation G checksum C`.

    With --wait (the default) it returns once every live host (one whose report lease holds)
    serves the new checksum: exit 4 after --timeout listing the hosts that lag, exit 1 when
    the remaining hosts rejected it. With no host registered it returns at once.

    With --canary N the N first live hosts (by host id) get it first, told through etcd; once
    they serve it and stayed ready for --soak, desired moves. A canary that rejects it, fails
    /ready or leaves aborts the publish (exit 1): every canary goes back, desired never moved.

    \b
    Example:
      $ pavctl publish site.yaml --etcd http://10.0.0.1:2379,http://10.0.0.2:2379 --fleet edge
      fleet edge generation 7 checksum 5b0e...
    """
    soak_s = _duration(soak, "--soak")
    data, compiled = _sealed(source)
    store = _store(etcd, fleet)
    started, before = time.time(), store.get(store.keys.desired)
    if canary is not None:
        from pavis.fleet.canary import canary_publish

        desired, moved = canary_publish(
            store, data, source, canary, soak_s, timeout, click.echo, decode=not compiled
        )
    else:
        from pavis.fleet.publish import publish as publish_bytes

        desired, moved = publish_bytes(store, data, source, decode=not compiled)
    note = "" if moved else " (already desired: nothing changed)"
    click.echo(f"fleet {fleet} generation {desired.generation} checksum {desired.checksum}{note}")
    if wait:
        # Desired did not move but was rewritten: the publish repaired damaged bytes in etcd.
        # Rejections from before it answered the damaged copy; hosts fetch again: wait for them.
        after = store.get(store.keys.desired)
        repaired = (
            not moved
            and before is not None
            and after is not None
            and (after.mod_revision != before.mod_revision)
        )
        _wait(store, desired, timeout, started if repaired else 0.0)


def _wait(store: Store, desired: Desired, timeout: float, since: float = 0.0) -> None:
    """``since``: rejections older than this do not count (they answered an earlier copy)."""
    from pavis.fleet.reports import follow_reports

    views: list[HostView] = []
    for reports in follow_reports(store, time.monotonic() + timeout):
        views = [
            HostView(v.report, "lagging", v.age)
            if v.state == "rejected" and v.report.rejection and v.report.rejection.time < since
            else v
            for v in assess(list(reports.values()), desired.checksum, time.time())
        ]
        if not views:
            click.echo(f"no host reports in fleet {store.keys.fleet}: nothing to wait for")
            return
        lagging = [v for v in views if v.state == "lagging"]
        rejected = [v for v in views if v.state == "rejected"]
        if not lagging and not rejected:
            click.echo(f"all {len(views)} host(s) serve {desired.checksum}")
            return
        if not lagging:
            raise FleetError(
                "rejected_by_hosts", f"{len(rejected)} host(s) rejected it: {_describe(rejected)}"
            )
    lagging = [v for v in views if v.state != "on"]
    raise FleetError(
        "wait_timeout",
        f"{len(lagging)} of {len(views)} host(s) not on {desired.checksum} "
        f"after {timeout:g}s: {_describe(lagging)}",
        EXIT_TIMEOUT,
    )


# ---------------------------------------------------------------------------------- fleet


@click.group("fleet")
def fleet_group() -> None:
    """The fleet's state in etcd: status (drift check), rollback, history."""


@fleet_group.command()
@_etcd_options
@click.option(
    "--json", "as_json", is_flag=True, help="Print desired and every host report as JSON."
)
@click.option(
    "--expect", metavar="CHECKSUM", help="Exit 1 unless desired and every live host serve CHECKSUM."
)
def status(etcd: str, fleet: str, as_json: bool, expect: str | None) -> None:
    """Desired, and every live host: pid, generation, checksum per worker, age, last rejection.

    Exit 1 on drift: a live host not on desired (or, with --expect, desired or a host not on
    CHECKSUM; a prefix of 6+ hex digits is enough).
    """
    if expect is not None and (
        len(expect) < 6 or any(c not in "0123456789abcdef" for c in expect.lower())
    ):
        raise UsageError(f"--expect {expect!r}: expected a checksum (or its first 6+ hex digits)")
    store = _store(etcd, fleet)
    found = store.desired()
    desired = found[0] if found else None
    target = expect.lower() if expect is not None else desired.checksum if desired else ""
    views = assess(store.hosts(), target, time.time())
    if as_json:
        doc = {
            "fleet": fleet,
            "desired": desired_json(desired),
            "hosts": [v.to_json() for v in views],
        }
        click.echo(json.dumps(doc, indent=2))
    else:
        _print_status(fleet, desired, views)
    problems = []
    if expect is not None and (desired is None or not desired.checksum.startswith(target)):
        problems.append(f"desired is {desired.checksum if desired else 'unset'}, expected {expect}")
    drift = [v for v in views if v.state != "on"]
    if drift and target:
        problems.append(_describe(drift))
    if problems:
        raise FleetError("drift", f"drift in fleet {fleet}: " + "; ".join(problems))


def _print_status(fleet: str, desired: Desired | None, views: list[HostView]) -> None:
    if desired is None:
        click.echo(f"fleet {fleet}: no desired artifact (nothing published yet)")
    else:
        click.echo(
            f"fleet {fleet}  desired generation {desired.generation}  checksum {desired.checksum}\n"
            f"  source {desired.source}  by {desired.publisher}  at {_when(desired.time)}"
        )
    if not views:
        click.echo("no host reports")
        return
    click.echo(
        f"{'host':20}  {'pid':>7}  {'gen':>5}  {'checksum':32}  {'state':8}  {'applied':>7}  last rejection"
    )
    for v in views:
        r = v.report
        rej = "-" if r.rejection is None else f"{r.rejection.checksum[:12]}: {r.rejection.reason}"
        notes = [n for n, on in (("not ready", not r.ready), ("canary", r.following == "canary"))
                 if on]  # fmt: skip
        if notes or r.error:
            rej += f"  [{', '.join(notes + ([r.error] if r.error else []))}]"
        click.echo(
            f"{r.host_id:20}  {r.pid:>7}  {r.generation:>5}  {r.checksum:32}  {v.state:8}  "
            f"{_age(v.age):>7}  {rej}"
        )
        for w in r.workers:
            if w.checksum != r.checksum:
                click.echo(f"{'':22}worker {w.pid} serves {w.checksum} (generation {w.generation})")


@fleet_group.command()
@_etcd_options
@click.option("--to", "to", metavar="GENERATION|CHECKSUM",
              help="A generation in history, or a checksum (10+ hex digits) [the previous artifact].")  # fmt: skip
def rollback(etcd: str, fleet: str, to: str | None) -> None:
    """Point desired back at an artifact already in etcd, without recompiling.

    The target is verified in etcd first, then desired moves in the same guarded transaction
    as a publish (a new generation whose source names the one rolled back to). By default the
    target is the newest history entry older than desired with a different checksum.
    """
    store = _store(etcd, fleet)
    from pavis.fleet.publish import rollback as roll_back

    desired = roll_back(store, to)
    click.echo(
        f"fleet {fleet} generation {desired.generation} checksum {desired.checksum} ({desired.source})"
    )


@fleet_group.command()
@_etcd_options
@click.option("--json", "as_json", is_flag=True, help="Print the entries as a JSON list.")
def history(etcd: str, fleet: str, as_json: bool) -> None:
    """Every kept generation (oldest first): time, action, checksum, source, publisher."""
    entries = _store(etcd, fleet).history()
    if as_json:
        click.echo(json.dumps([json.loads(encode(e)) for e in entries], indent=2))
        return
    click.echo(f"{'time':19}  {'action':8}  {'gen':>5}  {'checksum':32}  publisher / source")
    for e in entries:
        click.echo(
            f"{_when(e.time):19}  {e.action:8}  {e.generation:>5}  {e.checksum:32}  {e.publisher}  {e.source}"
        )


COMMANDS = (publish, fleet_group)
