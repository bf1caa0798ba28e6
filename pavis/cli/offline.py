"""The offline ``pavctl`` commands: check, compile, verify, inspect, diff, explain, schema.

Owns: their arguments, help text and output. None of them needs a running server.
Must not: catch errors (``pavis.cli.main`` turns every ``PavisError`` into stderr lines and an
exit code), or match requests itself (``explain`` goes through ``pavis.explain`` →
``pavis.lookup``, the code the workers run).

Where a command takes ``ARTIFACT|CONFIG``, the file is an artifact when it starts with the
``PAVS`` magic and a configuration otherwise (compiled in memory, nothing written).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from pavis import artifact
from pavis.errors import IngestError, UsageError
from pavis.schema import Model, Validated

_INPUT = click.Path(exists=True, dir_okay=False, allow_dash=True)


# --------------------------------------------------------------------------- helpers


def _compile(config: str) -> Validated:
    # Imported here so that `pavctl --help` and the artifact-only commands stay cheap.
    from pavis.compiler import compile_path

    return compile_path(config)


def _read_source(source: str) -> bytes:
    try:
        if source == "-":
            return sys.stdin.buffer.read()
        return Path(source).read_bytes()
    except OSError as exc:
        raise IngestError(f"cannot read {source}: {exc.strerror}") from None


def _load(source: str) -> tuple[Model, artifact.Header, bytes]:
    """An artifact as it is, or a configuration compiled and sealed in memory."""
    data = _read_source(source)
    if not artifact.is_artifact(data):
        if source == "-":
            from pavis.compiler import compile_text

            # A config on stdin: YAML is a superset of JSON, so one parser reads both.
            data = artifact.seal(compile_text(data, "yaml", "<stdin>"))
        else:
            data = artifact.seal(_compile(source))
    header, model = artifact.read(data)
    return model, header, data


def _counts(model: Model) -> dict[str, int]:
    return {
        "listeners": len(model.listeners),
        "clusters": len(model.clusters),
        "endpoints": sum(len(c.endpoints) for c in model.clusters),
        "virtual_hosts": len(model.virtual_hosts),
        "routes": len(model.routes),
    }


def _header_view(header: artifact.Header, size: int) -> dict[str, Any]:
    return {
        "checksum": header.checksum,
        "format_version": header.format_version,
        "flags": header.flags,
        "algorithm": "xxh3-128" if header.algorithm == artifact.ALG_XXH3_128 else header.algorithm,
        "header_bytes": artifact.HEADER_SIZE,
        "payload_bytes": header.payload_length,
        "total_bytes": size,
    }


def _dump(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _default_output(config: str) -> Path:
    if config == "-":
        raise UsageError("compiling stdin needs -o OUT.pvs (or -o - for stdout)")
    return Path(config).with_suffix(".pvs")


# --------------------------------------------------------------------------- commands


@click.command()
@click.argument("config", type=_INPUT)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing when the config is valid.")
def check(config: str, quiet: bool) -> None:
    """Compile and validate CONFIG; write nothing (like `nginx -t`).

    CONFIG is a .yaml/.yml, .json or .toml file, or - for stdin (YAML or JSON). Every problem
    is printed to stderr on its own line as `$.field.path: message (constraint_id)`.

    Exit 0 when valid, 1 when invalid or unreadable.

    \b
    Example:
      $ pavctl check site.yaml
      site.yaml: ok, 1 listeners, 2 clusters, 3 endpoints, 1 virtual_hosts, 4 routes;
      checksum 5b0e...  (what `pavctl compile` would write)
    """
    from pavis.compiler import gc_paused

    # Sealed and decoded back whole, as workers will, with the GC paused like the compile;
    # the model is dropped inside the pause, so the collection after it has nothing to walk.
    with gc_paused():
        data = artifact.seal(_compile(config))
        header, model = artifact.read(data)
        counts = ", ".join(f"{n} {k}" for k, n in _counts(model).items())
        del model
    if not quiet:
        click.echo(f"{config}: ok, {counts}; checksum {header.checksum}")


@click.command("compile")
@click.argument("config", type=_INPUT)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Where to write the artifact (default: CONFIG with the suffix .pvs, next to it; "
    "- writes the bytes to stdout).",
)
def compile_(config: str, output: str | None) -> None:
    """Compile CONFIG into a sealed .pvs artifact and print its checksum.

    The same input gives byte-identical artifacts on any machine. The file is replaced
    atomically (readers see the old or the new artifact, never a mix) with mode 0600, because
    an artifact embeds TLS keys when listeners terminate TLS. Nothing is written when CONFIG is
    invalid (exit 1, every problem on stderr).

    Prints `CHECKSUM  PATH` (to stderr when the artifact itself goes to stdout).

    \b
    Examples:
      $ pavctl compile site.yaml               # writes site.pvs
      $ pavctl compile site.yaml -o /etc/pavis/site.pvs
    """
    from pavis.store import atomic_write

    target = None if output == "-" else Path(output) if output else _default_output(config)
    data = artifact.seal(_compile(config))
    header = artifact.verify(data)
    if target is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        click.echo(f"{header.checksum}  -", err=True)
        return
    try:
        atomic_write(target, data)
    except OSError as exc:
        raise IngestError(f"cannot write {target}: {exc.strerror}") from None
    click.echo(f"{header.checksum}  {target}")


@click.command()
@click.argument("artifact_file", metavar="ARTIFACT", type=_INPUT)
def verify(artifact_file: str) -> None:
    """Check the integrity and format of ARTIFACT (a .pvs file, or - for stdin).

    Checks, in order: size, header (magic, format version, flags, checksum algorithm,
    reserved bytes, payload length), the xxh3-128 checksum, and that the payload decodes to
    the runtime model of this build. Exit 0 when sound; exit 1 with the named reason
    (truncated, bad_magic, unsupported_version, flags_unknown, bad_algorithm, reserved_nonzero,
    length_mismatch, checksum_mismatch, decode_failed) otherwise.

    \b
    Example:
      $ pavctl verify site.pvs
      site.pvs: ok, checksum 5b0e..., format 1, payload 2741 bytes
    """
    data = _read_source(artifact_file)
    header, _ = artifact.read(data)
    click.echo(
        f"{artifact_file}: ok, checksum {header.checksum}, format {header.format_version}, "
        f"payload {header.payload_length} bytes"
    )


@click.command()
@click.argument("source", metavar="ARTIFACT|CONFIG", type=_INPUT)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the header, counts and the full materialised model as JSON.",
)
def inspect(source: str, as_json: bool) -> None:
    """Show an artifact's header, checksum and counts.

    Given a configuration instead, it is compiled and sealed in memory first, so the figures
    are those of the artifact `pavctl compile` would write.

    With --json, prints one object: {"artifact": {checksum, format_version, ...},
    "counts": {...}, "model": {...}}. "model" is the complete runtime model with every default
    materialised: durations in milliseconds, disabled features as {"type": "off"}, tagged
    variants with their "type", bodies as text (or {"base64": ...} when not UTF-8).

    \b
    Examples:
      $ pavctl inspect site.pvs
      $ pavctl inspect site.yaml --json | jq '.model.clusters[0].pool'
    """
    model, header, data = _load(source)
    info = _header_view(header, len(data))
    counts = _counts(model)
    if as_json:
        from pavis.artifact.view import to_view  # only here: check and compile never need it

        _dump({"artifact": info, "counts": counts, "model": to_view(model)})
        return
    click.echo(f"artifact        {source}")
    click.echo(f"checksum        {info['checksum']}")
    click.echo(
        f"format          PAVS version {info['format_version']}, flags {info['flags']}, "
        f"{info['algorithm']}"
    )
    click.echo(f"size            {info['total_bytes']} bytes ({info['payload_bytes']} payload)")
    for key, n in counts.items():
        click.echo(f"{key.replace('_', ' '):<16}{n}")
    for listener in model.listeners:
        tls = listener.tls.__struct_config__.tag
        click.echo(f"  listener      {listener.name} {listener.host}:{listener.port} tls {tls}")
    for vhost in model.virtual_hosts:
        click.echo(
            f"  virtual host  {vhost.name} ({len(vhost.routes)} routes): {', '.join(vhost.domains)}"
        )


@click.command()
@click.argument("a", metavar="A", type=_INPUT)
@click.argument("b", metavar="B", type=_INPUT)
@click.option("--json", "as_json", is_flag=True, help="Print the changes as a JSON list.")
def diff(a: str, b: str, as_json: bool) -> None:
    """Semantic diff of A and B (each an artifact or a configuration).

    Compares what the proxy would do, not bytes: listeners, clusters and their policies
    (lb, pool, health check, outlier ejection, TLS, timeouts), endpoints, virtual hosts (domains
    and route order), routes (match, action, rewrite, headers, timeout, retry), and global
    settings (admin, limits, access log). Items are matched by name; endpoints by cluster and
    address. Each line says `+` added, `-` removed or `~` changed, followed by the changed
    fields as `field.path: old -> new`.

    Exit status like diff(1): 0 when A and B behave the same, 1 when they differ. An invalid
    input also exits 1, with its problems on stderr.

    \b
    Examples:
      $ pavctl diff running.pvs site.yaml
      ~ cluster api
          lb: "round_robin" -> "least_request"
      + endpoint api/10.0.0.7:8080
      1 added, 0 removed, 1 changed
    """
    from pavis.diff import diff_models, format_text, to_json

    model_a, _, _ = _load(a)
    model_b, _, _ = _load(b)
    changes = diff_models(model_a, model_b)
    if as_json:
        _dump(to_json(changes))
    else:
        click.echo(format_text(changes))
    if changes:
        raise click.exceptions.Exit(1)


def _parse_header(value: str) -> tuple[str, str]:
    name, sep, rest = value.partition(":")
    if not sep or not name.strip():
        raise click.BadParameter(f"{value!r} is not 'name: value'", param_hint="-H")
    return name.strip(), rest.strip()


@click.command()
@click.argument("source", metavar="ARTIFACT|CONFIG", type=_INPUT)
@click.option("-X", "--method", default="GET", show_default=True, help="Request method.")
@click.option("--host", required=True, help="Host header value (a port is ignored).")
@click.option("--path", default="/", show_default=True, help="Request target; a ?query is ignored.")
@click.option(
    "-H",
    "--header",
    "headers",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="A request header; repeat for more.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full decision as JSON.")
def explain(
    source: str, method: str, host: str, path: str, headers: tuple[str, ...], as_json: bool
) -> None:
    """Say what the proxy would do with one request, from the artifact alone.

    Shows the virtual host and route chosen (and the candidate routes the index offered, with
    whether each matched), the action, the candidate clusters with weights, shares and
    endpoints, the rewritten upstream path and host, header operations, timeout and retry
    budget. Matching uses the same code the workers run, so the answer is what the proxy does.

    Exit 0 when a route matches, 1 when it would not reach one: a 404 (no virtual host or no
    route matches), or a 400/501 for a request the workers reject before routing (a target
    with a #fragment, an invalid Host, CONNECT).

    \b
    Example:
      $ pavctl explain site.pvs --host api.example.com --path /v1/users -H 'x-canary: 1'
    """
    from pavis.explain import explain as explain_request
    from pavis.explain import format_text

    pairs = [_parse_header(h) for h in headers]
    model, _, _ = _load(source)
    report = explain_request(model, method, host, path, pairs)
    if as_json:
        _dump(report)
    else:
        click.echo(format_text(report))
    if report["route"] is None:
        raise click.exceptions.Exit(1)


@click.command()
def schema() -> None:
    """Print the JSON Schema of the configuration format (for editors and CI linters).

    \b
    Example:
      $ pavctl schema > pavis.schema.json
      # VS Code (YAML extension): "yaml.schemas": {"./pavis.schema.json": "pavis/*.yaml"}
    """
    from pavis.compiler import json_schema

    _dump(json_schema())


COMMANDS = (check, compile_, verify, inspect, diff, explain, schema)
