"""setup.py compiles exactly the worker's request path with mypyc, read from its source."""

from __future__ import annotations

import ast
from pathlib import Path

from workers import _build

REPO = Path(__file__).resolve().parents[2]


def test_setup_compiles_exactly_the_request_path() -> None:
    tree = ast.parse((REPO / "setup.py").read_text())
    compiled = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets)
    )
    assert compiled == [f"workers/{n}.py" for n in _build.REQUEST_PATH]
