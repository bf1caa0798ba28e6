"""The shipped systemd unit file, read as text: what it keeps and runs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "contrib" / "systemd" / "pavis.service"
DOCS = ROOT / "docs" / "OPERATIONS.md"


def test_unit_file_keeps_ipc_and_reloads_synchronously() -> None:
    text = UNIT.read_text()
    lines = {ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")}
    assert "Type=notify" in lines
    assert "RemoveIPC=no" in lines
    assert not any(ln.startswith("DynamicUser") for ln in lines)
    assert any(ln.startswith("ExecReload=") and "pavctl reload --wait" in ln for ln in lines)
    assert "KillSignal=SIGTERM" in lines
    assert any(ln.startswith("StateDirectory=") for ln in lines)


def test_unit_file_runs_what_the_docs_install() -> None:
    text = UNIT.read_text()
    install = DOCS.read_text().split("## systemd", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    venv = install.split("python3 -m venv ", 1)[1].split()[0]  # where the docs install pavis
    for key, exe in (("ExecStart=", "pavis"), ("ExecReload=", "pavctl")):
        line = next(ln for ln in text.splitlines() if ln.startswith(key))
        assert line.split("=", 1)[1].split()[0] == f"{venv}/bin/{exe}", line
