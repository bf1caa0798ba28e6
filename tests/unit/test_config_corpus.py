"""Table-driven config corpus: every invalid file is rejected with the path and constraint it
states; every valid file and every example compiles.

An invalid ``.yaml``/``.toml`` file states its expectations in leading ``# expect:`` lines,
any other file in a sibling ``.expect`` file; ``ingest`` means the source itself is rejected.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pavis.artifact import read, seal
from pavis.compiler import compile_path
from pavis.errors import ConfigError, IngestError

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests"
INVALID = sorted(
    p for p in (HERE / "configs" / "invalid").iterdir() if p.is_file() and p.suffix != ".expect"
)
VALID = sorted(p for p in (HERE / "configs" / "valid").iterdir() if p.is_file())
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

CONSTRAINTS = {
    "unknown_field", "type_error", "missing_field", "unknown_reference", "duplicate_name",
    "duplicate_domain", "invalid_weight", "empty_list", "invalid_address", "invalid_port",
    "address_clash", "invalid_regex", "unsafe_regex", "retry_exceeds_timeout", "shadowed_route",
    "missing_location", "body_too_large", "invalid_duration", "invalid_status", "action_count",
    "invalid_method", "invalid_header_name", "invalid_domain", "unsupported_version",
    "invalid_path", "no_listeners", "unreadable_file", "match_count", "conflicting_fields",
    "invalid_size", "invalid_retry_on", "invalid_rewrite", "invalid_header_value",
    "invalid_pem", "out_of_range", "invalid_upgrade", "unsafe_upgrade",
    "invalid_certificate", "invalid_key", "key_mismatch", "certificate_expired",
    "certificate_not_yet_valid", "duplicate_certificate_name",
    "invalid_query_name", "invalid_query_value", "invalid_rate",
}  # fmt: skip


def expectations(path: Path) -> list[str]:
    if path.suffix in (".yaml", ".yml", ".toml"):
        lines = path.read_text().splitlines()
        found = [ln.removeprefix("# expect:").strip() for ln in lines if ln.startswith("# expect:")]
    else:
        found = path.with_suffix(".expect").read_text().split("\n")
    found = [e for e in found if e]
    assert found, f"{path.name} states no expectation"
    return found


def test_the_corpus_is_big_enough() -> None:
    assert len(INVALID) >= 40
    assert VALID


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_config_is_rejected_where_it_says(path: Path) -> None:
    expected = expectations(path)
    if expected == ["ingest"]:
        with pytest.raises(IngestError):
            compile_path(path)
        return
    with pytest.raises(ConfigError) as caught:
        compile_path(path)
    got = {(p.path, p.constraint) for p in caught.value.problems}
    for line in expected:
        where, _, constraint = line.rpartition(": ")
        assert (where, constraint) in got, f"{line!r} not in {sorted(got)}"
    for p in caught.value.problems:
        assert p.path.startswith("$"), p
        assert p.constraint in CONSTRAINTS, p
        assert p.message, p


@pytest.mark.parametrize("path", VALID + EXAMPLES, ids=lambda p: p.name)
def test_valid_config_compiles_and_seals(path: Path) -> None:
    validated = compile_path(path)
    _, model = read(seal(validated))
    assert model == validated.model


def test_packaged_demo_is_the_example() -> None:
    packaged = ROOT / "pavis" / "demo" / "demo.yaml"
    assert packaged.read_bytes() == (ROOT / "examples" / "demo.yaml").read_bytes()
