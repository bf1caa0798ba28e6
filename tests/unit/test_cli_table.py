"""The CLI's thin parser and command table agree with what click declares (in-process)."""

from __future__ import annotations

import importlib.util

import click

from pavis.cli import COMMANDS, cli, client


def test_the_thin_parser_knows_the_options_click_declares() -> None:
    ctx = click.Context(cli)
    for name, options in client.OPTIONS.items():
        command = cli.get_command(ctx, name)
        assert command is not None
        declared: dict[str, tuple[str, object]] = {}
        arguments = []
        for param in command.params:
            if isinstance(param, click.Argument):
                arguments.append(param.name)
                continue
            for opt in [*param.opts, *param.secondary_opts]:
                if opt.startswith("--") and opt != "--help":
                    default = param.get_default(ctx)
                    if not isinstance(default, str | int | float):  # click's "unset" marker
                        default = None
                    declared[opt] = (str(param.name), default)
        thin = {opt: (p, default) for opt, (p, _, default) in options.items()}
        assert thin == declared, name
        assert arguments == ([client.ARGUMENTS[name]] if name in client.ARGUMENTS else [])


def test_the_table_short_help_is_the_commands_own() -> None:
    ctx = click.Context(cli)
    for name, (module, short) in COMMANDS.items():
        if importlib.util.find_spec(module) is None:
            continue
        command = cli.get_command(ctx, name)
        assert command is not None, name
        assert command.get_short_help_str(limit=1000) == short, name
