"""The two builds of the worker request path: mypyc-compiled (the default) and Python source.

Invariants: an install on a machine with a C compiler runs the compiled build; PAVIS_PURE=1
runs the sources; a source edited after it was compiled, or a compiled build whose shared
runtime module cannot be imported, runs from source, never as a stale or broken compiled copy; and the worker and HTTP suites pass on the build this run did not use (the rest
of this session's suite already covers the one it did). Every check runs in a subprocess:
the choice is made once per process, when ``workers`` is first imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from workers import _build

REPO = Path(__file__).resolve().parents[2]
PROBE = (
    "import json, workers, workers._build as b\n"
    "import importlib\n"
    "mods = {n: importlib.import_module('workers.' + n).__file__ for n in b.REQUEST_PATH}\n"
    "print(json.dumps({'build': b.describe(), 'files': mods}))\n"
)


def _probe(env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[dict, str]:  # type: ignore[type-arg]
    run_env = {k: v for k, v in os.environ.items() if k != "PAVIS_PURE"}
    run_env.update(env or {})
    r = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=run_env,
        cwd=cwd or REPO, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def _compiled_installed() -> bool:
    return all(_build._extension(n) is not None for n in _build.REQUEST_PATH)


def _compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


def test_an_install_with_a_compiler_runs_the_compiled_build() -> None:
    if not _compiled_installed():
        if _compiler() is None:
            pytest.skip("no C compiler: this install is pure Python by design")
        pytest.fail(
            "a C compiler is present but the request path is not compiled: the build fell "
            "back to pure Python (`pip install -v -e .` shows why), or it was built with "
            "PAVIS_PURE=1 — then test with PAVIS_PURE=1 set too"
        )
    out, err = _probe()
    assert out["build"][0] == "compiled", (out, err)
    assert all(f.endswith(".so") for f in out["files"].values()), out["files"]


def test_pavis_pure_runs_the_sources() -> None:
    out, _ = _probe({"PAVIS_PURE": "1"})
    assert out["build"][0] == "pure"
    assert all(f.endswith(".py") for f in out["files"].values()), out["files"]


def test_a_stale_or_incomplete_compiled_build_runs_from_source(tmp_path: Path) -> None:
    if not _compiled_installed():
        pytest.skip("no compiled build installed")
    shutil.copytree(
        REPO / "workers", tmp_path / "workers", ignore=shutil.ignore_patterns("__pycache__")
    )
    for lib in REPO.glob("*__mypyc*"):
        shutil.copy(lib, tmp_path)
    out, _ = _probe(cwd=tmp_path)  # a faithful copy runs compiled
    assert out["build"][0] == "compiled", out
    # A build whose shared runtime module cannot be imported (an editable install made
    # before the module existed maps only the packages it knew of).
    manifest_path = tmp_path / "workers" / "_compiled.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "shared_lib": "gone__mypyc"}))
    out, err = _probe(cwd=tmp_path)
    assert out["build"][0] == "pure" and "not importable" in out["build"][1], out
    assert all(f.endswith(".py") for f in out["files"].values()), out["files"]
    manifest_path.write_text(json.dumps(manifest))
    out, _ = _probe(cwd=tmp_path)
    assert out["build"][0] == "compiled", out
    with open(tmp_path / "workers" / "pool.py", "a") as f:
        f.write("\n# an edit after the build\n")
    out, err = _probe(cwd=tmp_path)
    assert out["build"] == ["pure", "sources changed since they were compiled: pool"]
    assert all(f.endswith(".py") for f in out["files"].values()), out["files"]
    assert "rebuild" in err


def test_worker_suites_pass_on_the_other_build() -> None:
    """This session ran everything on one build; the request-path suites run on the other."""
    if not _compiled_installed():
        pytest.skip("only the pure-Python build is installed, and the session ran on it")
    other = "0" if os.environ.get("PAVIS_PURE") == "1" else "1"
    suites = sorted(str(p.relative_to(REPO)) for p in REPO.glob("tests/e2e/test_worker_*.py"))
    suites += sorted(str(p.relative_to(REPO)) for p in REPO.glob("tests/e2e/test_http_*.py"))
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *suites],
        capture_output=True, text=True, cwd=REPO, timeout=600, check=False,
        env={**os.environ, "PAVIS_PURE": other},
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
