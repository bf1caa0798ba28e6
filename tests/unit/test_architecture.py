"""The import graph says the design: semantics flow left to right only.

workers/ and shm/ never import the compiler, the supervisor, the store or the CLI; shm/
knows nothing of HTTP, configuration or gevent; the compiler never imports the runtime.
(The same contracts are declared for import-linter in setup.cfg; this test needs no extra
tool so that CI always checks them.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CONTRACTS = [
    ("workers", ("pavis.compiler", "pavis.supervisor", "pavis.store", "pavis.cli")),
    ("shm", ("pavis", "workers", "gevent", "httptools")),
    ("pavis/compiler", ("workers", "shm", "pavis.supervisor", "gevent")),
    ("pavis/artifact", ("workers", "shm", "pavis.compiler", "pavis.supervisor", "gevent")),
    ("pavis", ("gevent",)),
]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def forbidden_hit(module: str, forbidden: tuple[str, ...]) -> str | None:
    for f in forbidden:
        if module == f or module.startswith(f + "."):
            return f
    return None


@pytest.mark.parametrize(("folder", "forbidden"), CONTRACTS)
def test_import_direction(folder: str, forbidden: tuple[str, ...]) -> None:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"{folder} has no modules"
    bad = []
    for path in files:
        for module in sorted(imported_modules(path)):
            hit = forbidden_hit(module, forbidden)
            if hit:
                bad.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import gevent.socket\nfrom pavis.compiler import compile_path\n")
    mods = imported_modules(bad)
    assert forbidden_hit("pavis.compiler", ("pavis.compiler",)) == "pavis.compiler"
    assert {"gevent.socket", "pavis.compiler"} <= mods
