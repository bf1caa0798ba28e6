"""Which build of the request path this process runs: mypyc-compiled or the Python sources.

Owns: the choice, made once when ``workers`` is first imported (before any request-path
module), and reporting it (``describe()``). Python on its own imports a compiled extension
in preference to the .py beside it, so after an in-place (editable) build an edited source
would silently keep running its old compiled copy. The build records the sha256 of each
source it compiled (``_compiled.json``); if any source differs, or the manifest is missing,
or PAVIS_PURE=1 is set, a finder placed first on ``sys.meta_path`` loads every request-path
module from its source, and a stale build says so on stderr. All or none: compiled modules
call each other's native classes directly, so they cannot be mixed with interpreted ones.
Must not: import any request-path module, or gevent.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

# Mirrors COMPILED in setup.py (which the runtime cannot import).
REQUEST_PATH = (
    "accept", "io", "request", "http", "upstream", "pool", "balance", "heads", "rewrite",
    "relay", "proxy", "runtime", "accesslog", "conn", "state", "health", "metrics",
    "ratelimit", "trace", "logfile",
)  # fmt: skip
HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "_compiled.json"

_choice: tuple[str, str] = ("pure", "not chosen yet")


def _extension(name: str) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        p = HERE / f"{name}{suffix}"
        if p.exists():
            return p
    return None


def _manifest() -> dict[str, Any]:
    try:
        data = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _stale(manifest: dict[str, Any]) -> list[str]:
    """Request-path sources that differ from what was compiled (all of them without a manifest)."""
    recorded = manifest.get("sources")
    if not isinstance(recorded, dict):
        return list(REQUEST_PATH)
    changed = []
    for name in REQUEST_PATH:
        try:
            digest = hashlib.sha256((HERE / f"{name}.py").read_bytes()).hexdigest()
        except OSError:
            continue  # an install without sources: the extension is all there is
        if recorded.get(f"workers/{name}.py") != digest:
            changed.append(name)
    return changed


class _SourcesFirst:
    """Meta-path finder: the request-path modules from their .py files."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        pkg, _, name = fullname.rpartition(".")
        if pkg != "workers" or name not in REQUEST_PATH:
            return None
        return importlib.util.spec_from_file_location(fullname, HERE / f"{name}.py")


def choose() -> None:
    global _choice
    compiled = [n for n in REQUEST_PATH if _extension(n) is not None]
    if not compiled:
        _choice = ("pure", "no compiled modules are installed")
        return
    if os.environ.get("PAVIS_PURE") == "1":
        reason = "PAVIS_PURE=1"
    elif len(compiled) != len(REQUEST_PATH):
        reason = f"only {', '.join(compiled)} are compiled"
    else:
        manifest = _manifest()
        stale = _stale(manifest)
        shared = manifest.get("shared_lib")
        if stale:
            reason = f"sources changed since they were compiled: {', '.join(stale)}"
        elif isinstance(shared, str) and importlib.util.find_spec(shared) is None:
            reason = f"mypyc's runtime module {shared} is not importable (reinstall)"
        else:
            _choice = ("compiled", "mypyc build matches the sources")
            return
        print(
            f"pavis: running the worker request path from source ({reason}); "
            f"rebuild with `pip install -e .` to compile it again",
            file=sys.stderr,
        )
    sys.meta_path.insert(0, _SourcesFirst())
    _choice = ("pure", reason)


def describe() -> tuple[str, str]:
    """("compiled" | "pure", why)."""
    return _choice
