"""The import graph says the design: semantics flow left to right only.

workers/ and shm/ never import the compiler, the supervisor, the store or the CLI; shm/
knows nothing of HTTP, configuration or gevent; the compiler never imports the runtime.
(The contracts are written once, for import-linter, in setup.cfg; this test reads them there
and checks them without the extra tool, so that CI always does.)
"""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def forbidden_contracts() -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(source module, forbidden modules, allowed exceptions) of every ``forbidden``
    contract in setup.cfg: the one place the import rules are written."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    out = []
    for section in cfg.sections():
        if not section.startswith("importlinter:contract:"):
            continue
        c = cfg[section]
        if c.get("type") != "forbidden":
            continue
        allowed = tuple(
            line.split("->")[1].strip() for line in c.get("ignore_imports", "").split("\n") if line
        )
        for source in c["source_modules"].split():
            out.append((source, tuple(c["forbidden_modules"].split()), allowed))
    return out


CONTRACTS = forbidden_contracts()


def files_of(module: str) -> list[Path]:
    path = ROOT / module.replace(".", "/")
    return sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pavis import stats`` imports pavis.stats: name what is imported.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def forbidden_hit(module: str, forbidden: tuple[str, ...]) -> str | None:
    for f in forbidden:
        if module == f or module.startswith(f + "."):
            return f
    return None


def test_setup_cfg_declares_the_contracts() -> None:
    sources = {source for source, _, _ in CONTRACTS}
    assert {"workers", "shm", "pavis.compiler", "pavis.fleet", "pavis"} <= sources


@pytest.mark.parametrize(("source", "forbidden", "allowed"), CONTRACTS)
def test_import_direction(
    source: str, forbidden: tuple[str, ...], allowed: tuple[str, ...]
) -> None:
    files = files_of(source)
    assert files and all(f.exists() for f in files), f"{source} has no modules"
    bad = []
    for path in files:
        for module in sorted(imported_modules(path)):
            hit = forbidden_hit(module, forbidden)
            if hit and not forbidden_hit(module, allowed):
                bad.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import gevent.socket\nfrom pavis.compiler import compile_path\n")
    mods = imported_modules(bad)
    assert forbidden_hit("pavis.compiler", ("pavis.compiler",)) == "pavis.compiler"
    assert {"gevent.socket", "pavis.compiler.compile_path"} <= mods
