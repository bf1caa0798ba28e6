"""The operator docs and the unit file name only things that exist: config fields they cite
under ``limits.`` are fields of the config format, and the rollback prefix length the CLI help
gives is the one the store enforces."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from pavis.cli import cli
from pavis.compiler.intent import LimitsSpec
from pavis.store import MIN_PREFIX

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_TEXTS = [ROOT / "docs" / "OPERATIONS.md", ROOT / "contrib" / "systemd" / "pavis.service"]


def test_limits_fields_cited_for_operators_exist() -> None:
    fields = set(LimitsSpec.__struct_fields__)
    for path in OPERATOR_TEXTS:
        cited = set(re.findall(r"limits\.([a-z_]+)", path.read_text()))
        assert cited, path
        assert cited <= fields, f"{path.name} cites {sorted(cited - fields)}; fields: {fields}"


def test_rollback_help_states_the_enforced_prefix_length() -> None:
    out = CliRunner().invoke(cli, ["rollback", "--help"]).output
    assert f"{MIN_PREFIX}+ hex digits" in out
    assert f"at least {MIN_PREFIX}" in (ROOT / "docs" / "OPERATIONS.md").read_text()
