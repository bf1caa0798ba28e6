"""Which build of the worker request path is loaded: the mypyc-compiled one or pure Python.

Owns: reporting (skip reason) or, with PAVIS_EXPECT_MYPYC=1, asserting that the modules
setup.py compiles under PAVIS_MYPYC=1 resolve to extension modules. It must not import the
modules (find_spec only reads where they would load from), so it is cheap and side-effect free.

Run from a directory outside the checkout against a compiled install; from the checkout the
in-tree .py files come first on sys.path and shadow the installed extensions.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os

import pytest

# Mirrors COMPILED in setup.py.
REQUEST_PATH = ["io", "http", "upstream", "pool", "balance", "proxy", "conn"]


def origins() -> dict[str, str]:
    found = {}
    for name in REQUEST_PATH:
        spec = importlib.util.find_spec(f"workers.{name}")
        assert spec is not None and spec.origin is not None, f"workers.{name} not found"
        found[name] = spec.origin
    return found


def is_extension(path: str) -> bool:
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_request_path_build() -> None:
    found = origins()
    compiled = sorted(n for n, p in found.items() if is_extension(p))
    if os.environ.get("PAVIS_EXPECT_MYPYC") == "1":
        pure = {n: p for n, p in found.items() if not is_extension(p)}
        assert not pure, f"PAVIS_EXPECT_MYPYC=1 but these load as Python source: {pure}"
        return
    if compiled:
        pytest.skip(
            f"mypyc build loaded for workers.{{{','.join(compiled)}}} "
            f"(set PAVIS_EXPECT_MYPYC=1 to assert it)"
        )
    pytest.skip(
        f"pure-Python build loaded (workers.proxy from {found['proxy']}); "
        f"set PAVIS_EXPECT_MYPYC=1 to require the mypyc build"
    )
