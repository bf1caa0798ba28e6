"""The live client commands without click: reload, rollback, status and history.

Owns: what those commands send over the control socket and print, and a parser for their
well-formed command lines (``parse``), so that `pavctl status` starts in about the time Python
itself does — click alone costs more than that. Must not: import click, the compiler, the
artifact code, msgspec or PyYAML; or judge a command line it does not fully understand
(``parse`` returns None and click parses it, with its help and usage errors). The click
commands in ``pavis.cli.live`` declare the same options and call the same functions; a test
checks that both agree.
"""

from __future__ import annotations

import os
import time

from pavis.control_client import default_control_path, request
from pavis.errors import ControlError, UsageError

TYPE_CHECKING = False  # not typing's: importing typing costs a live command ~10 ms of ~25
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

CLIENT_MARGIN = 120.0  # beyond --timeout: compiling a large config happens before the wait

# command → {option: (parameter, kind, default)}; kind "flag", "str", "float", or for an
# on/off pair "on"/"off". --control and --name are common to all.
_COMMON: dict[str, tuple[str, str, Any]] = {
    "--control": ("control", "str", None),
    "--name": ("name", "str", "default"),
}
_WAIT: dict[str, tuple[str, str, Any]] = {
    "--wait": ("wait", "on", True),
    "--no-wait": ("wait", "off", True),
    "--timeout": ("timeout", "float", 10.0),
    "--json": ("as_json", "flag", False),
}
OPTIONS: dict[str, dict[str, tuple[str, str, Any]]] = {
    "reload": {**_WAIT, **_COMMON},
    "rollback": {"--to": ("to", "str", None), **_WAIT, **_COMMON},
    "status": {"--json": ("as_json", "flag", False), "--expect": ("expect", "str", None),
               **_COMMON},
    "history": {"--json": ("as_json", "flag", False), **_COMMON},
}  # fmt: skip
ARGUMENTS = {"reload": "source"}  # the one optional positional argument


def parse(argv: list[str]) -> Callable[[], None] | None:
    """The command ``argv`` asks for, ready to run; None unless it is a well-formed live
    client command line (then click parses it)."""
    if not argv or argv[0] not in OPTIONS:
        return None
    command, options = argv[0], OPTIONS[argv[0]]
    kwargs: dict[str, Any] = {p: d for p, _, d in options.values()}
    positional = ARGUMENTS.get(command)
    if positional:
        kwargs[positional] = None
    args = iter(argv[1:])
    for arg in args:
        name, eq, inline = arg.partition("=")
        if name in options:
            param, kind, _ = options[name]
            if kind in ("flag", "on", "off"):
                if eq:
                    return None
                kwargs[param] = kind != "off"
                continue
            value = inline if eq else next(args, None)
            if value is None:
                return None
            if kind == "float":
                try:
                    kwargs[param] = float(value)
                except ValueError:
                    return None
            else:
                kwargs[param] = value
        elif arg.startswith("-") or not positional or kwargs[positional] is not None:
            return None  # --help, an unknown option, a second argument: click answers
        else:
            kwargs[positional] = arg
    run = COMMANDS[command]
    return lambda: run(**kwargs)


def _control_path(control: str | None, name: str) -> str:
    return control or default_control_path(name)


def _echo(text: str) -> None:
    print(text, flush=True)


def _pretty(value: Any) -> str:
    import json  # only --json needs the indenting encoder

    return json.dumps(value, indent=2)


# ---------------------------------------------------------------------------------- reload


def _print_flip(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        answer = {k: v for k, v in answer.items() if k != "ok"}
        _echo(_pretty(answer))
        return
    _echo(
        f"generation {answer['generation']} checksum {answer['checksum']} "
        f"({answer['outcome']}, {answer['workers']} workers, {answer['elapsed_ms']} ms)"
    )
    if answer.get("message"):
        _echo(answer["message"])


def reload(
    source: str | None, wait: bool, timeout: float, as_json: bool, control: str | None, name: str
) -> None:
    """`pavctl reload`: send the path (absolute) or nothing; the supervisor reads it."""
    payload: dict[str, Any] = {"op": "reload", "wait": wait, "timeout": timeout}
    if source:
        if not os.path.exists(source):
            raise UsageError(f"{source}: no such file")
        payload["path"] = os.path.abspath(source)
    answer = request(_control_path(control, name), payload, timeout + CLIENT_MARGIN)
    _print_flip(answer, as_json)


def rollback(
    to: str | None, wait: bool, timeout: float, as_json: bool, control: str | None, name: str
) -> None:
    """`pavctl rollback`."""
    payload: dict[str, Any] = {"op": "rollback", "wait": wait, "timeout": timeout, "to": to}
    answer = request(_control_path(control, name), payload, timeout + CLIENT_MARGIN)
    _print_flip(answer, as_json)


# ---------------------------------------------------------------------------------- status


def status(as_json: bool, expect: str | None, control: str | None, name: str) -> None:
    """`pavctl status`; with ``expect``, drift is an error (exit 1)."""
    st = request(_control_path(control, name), {"op": "status"}, 10.0)["status"]
    if as_json:
        _echo(_pretty(st))
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
    _echo(
        f"pavis {st['name']}  pid {st['pid']}  up {_dur(st['uptime_s'])}  {state}\n"
        f"generation {st['generation']}  checksum {st['checksum']}\n"
        f"source {st['source']}"
    )
    fleet = st.get("fleet")
    if fleet:
        rej = fleet["rejection"]
        _echo(f"fleet {fleet['fleet']} as {fleet['host_id']}  following {fleet['following']} "
              f"generation {fleet['generation']}  etcd {'connected' if fleet['connected'] else 'unreachable'}"
              + (f"  last rejection {rej['checksum'][:12]}: {rej['reason']}" if rej else ""))  # fmt: skip
    if st.get("binds"):
        _echo("binds " + "  ".join(f"{k}={v}" for k, v in sorted(st["binds"].items())))
    _echo(f"{'slot':>4}  {'pid':>7}  {'gen':>5}  {'checksum':32}  {'uptime':>8}  "
               f"{'requests':>9}  last rejection")  # fmt: skip
    for w in st["workers"]:
        rej = w["last_rejection"]
        last = "-" if not rej else f"gen {rej['generation']}: {rej['reason']}"
        _echo(
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


def history(as_json: bool, control: str | None, name: str) -> None:
    """`pavctl history`."""
    entries = request(_control_path(control, name), {"op": "history"}, 10.0)["history"]
    if as_json:
        _echo(_pretty(entries))
        return
    _echo(f"{'time':20}  {'op':8}  {'gen':>5}  {'checksum':32}  {'outcome':9}  source")
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time"]))
        _echo(
            f"{when:20}  {e['op']:8}  {e['generation'] or '-':>5}  {e['checksum'] or '-':32}  "
            f"{e['outcome']:9}  {e['source']}"
        )
        if e["reason"]:
            _echo(f"{'':22}{e['reason']}")


COMMANDS: dict[str, Callable[..., None]] = {
    "reload": reload,
    "rollback": rollback,
    "status": status,
    "history": history,
}
