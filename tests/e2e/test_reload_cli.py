"""The thin client: live `pavctl` commands load only what sending one control line needs.

Each command runs in a fresh interpreter against a real supervisor, and the modules it
imported are listed at exit: none of the compiler, the artifact code, msgspec, PyYAML,
httptools or gevent may be among them. `pavctl --help` lists every command from the table
in ``pavis.cli`` without importing any command module; the table's short help is checked
against the commands themselves.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pavis.cli import COMMANDS
from tests.e2e.helpers_proc import Serve, needs_workers

HEAVY = ("yaml", "msgspec", "httptools", "gevent", "pavis.compiler", "pavis.artifact")
# The stdlib's Python layers a plain live command does without (they cost it more CPU than
# the interpreter's own start): the C modules _socket and _json do its work.
LAYERS = ("typing", "json", "socket", "selectors", "re", "enum")

# Runs the CLI and writes the names of every imported module to the file given first.
PROBE = (
    "import atexit, sys\n"
    "out = sys.argv.pop(1)\n"
    "atexit.register(lambda: open(out, 'w').write('\\n'.join(sorted(sys.modules))))\n"
    "from pavis.cli import main\n"
    "main()\n"
)


def run_probe(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    out = tmp / "modules.txt"
    r = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp,
    )  # fmt: skip
    return r, set(out.read_text().split())


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.fixture
def sv(tmp_path: Path) -> Iterator[Serve]:
    s = Serve(tmp_path, workers=1)
    s.start(s.config("A"))
    yield s
    s.cleanup()


@needs_workers
def test_live_commands_import_nothing_heavy(sv: Serve) -> None:
    b = sv.config("B")
    control = ["--control", sv.control]
    runs = [
        ["status", *control],
        ["status", "--json", *control],
        ["history", *control],
        ["reload", str(b), "--wait", *control],
        ["reload", str(b), *control],  # unchanged
        ["rollback", "--no-wait", *control],
        ["reload", "--json", *control],
    ]
    for args in runs:
        r, modules = run_probe(sv.tmp, *args)
        assert r.returncode == 0, (args, r.stderr)
        assert "pavis.control_client" in modules  # the probe saw the command run
        assert heavy(modules) == [], (args, heavy(modules))
        # A plain command line does not even need click (it costs more than Python's start).
        assert "click" not in modules, args
        if "--json" not in args:  # --json indents with the json package
            assert sorted(modules & set(LAYERS)) == [], (args, sorted(modules & set(LAYERS)))


def test_an_unreachable_supervisor_is_still_exit_3_and_cheap(tmp_path: Path) -> None:
    r, modules = run_probe(tmp_path, "status", "--control", str(tmp_path / "none.sock"))
    assert r.returncode == 3, r.stderr
    assert "no supervisor" in r.stderr
    assert heavy(modules) == []


def test_a_command_line_the_thin_parser_does_not_know_gets_clicks_answer(tmp_path: Path) -> None:
    r, modules = run_probe(tmp_path, "status", "--bogus")
    assert r.returncode == 2
    assert "No such option '--bogus'" in r.stderr
    r, _ = run_probe(tmp_path, "reload", "--timeout", "soon")
    assert r.returncode == 2 and "'soon' is not a valid float" in r.stderr
    r, _ = run_probe(tmp_path, "reload", "--help")
    assert r.returncode == 0 and "--wait / --no-wait" in r.stdout
    r, modules = run_probe(tmp_path, "reload", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "missing.yaml: no such file" in r.stderr
    assert "click" not in modules


def test_help_lists_every_command_without_importing_one(tmp_path: Path) -> None:
    r, modules = run_probe(tmp_path, "--help")
    assert r.returncode == 0, r.stderr
    listed = {line.split()[0] for line in r.stdout.split("Commands:")[1].splitlines() if line}
    present = {n for n, (m, _) in COMMANDS.items() if importlib.util.find_spec(m) is not None}
    assert listed == present
    assert {"check", "compile", "serve", "reload", "status", "history", "rollback"} <= listed
    command_modules = {m for m, _ in COMMANDS.values()}
    assert not command_modules & modules
    assert heavy(modules) == []
