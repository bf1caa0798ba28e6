"""The click application behind both console scripts, ``pavis`` and ``pavctl``.

Owns: argument parsing and the single place where errors become exit codes.
"""

from __future__ import annotations

import sys

import click

from pavis.errors import PavisError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pavis")
def cli() -> None:
    """pavis — a reverse proxy that executes sealed configuration artifacts."""


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except PavisError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
