"""Build hook: the worker request path compiled with mypyc; metadata lives in setup.cfg.

By default the modules in COMPILED are compiled, unchanged, with mypyc: the same worker CPU
per proxied request drops by a third (docs/bench/proxy-profile.md). Compiling is never what
makes an install fail: with PAVIS_PURE=1, without mypy, or when the C compiler fails, the
install is pure Python and says so. Python imports the compiled module when present and the
.py otherwise; ``workers/_build.py`` makes an edited checkout run its sources rather than a
stale compiled copy, and lets PAVIS_PURE=1 choose the sources at run time too.

Next to the extensions the build writes ``workers/_compiled.json``: the sha256 of each source
as compiled, which ``workers/_build.py`` compares with the sources it finds, and the name of
mypyc's shared runtime module (a top-level module: an editable install made before it existed
cannot import it, and ``workers/_build.py`` checks that it can).
"""

import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent

# The modules every proxied request runs through; the rest of workers/ (boot) is not on the
# per-request path and stays interpreted. workers/_build.py holds the
# same list (the runtime cannot import this file).
COMPILED = [
    "workers/accept.py",
    "workers/io.py",
    "workers/request.py",
    "workers/http.py",
    "workers/upstream.py",
    "workers/pool.py",
    "workers/balance.py",
    "workers/heads.py",
    "workers/rewrite.py",
    "workers/relay.py",
    "workers/proxy.py",
    "workers/runtime.py",
    "workers/accesslog.py",
    "workers/conn.py",
    "workers/state.py",
    "workers/health.py",
    "workers/metrics.py",
    "workers/ratelimit.py",
    "workers/trace.py",
    "workers/logfile.py",
]
MANIFEST = "workers/_compiled.json"


def _say(msg: str) -> None:
    print(f"pavis build: {msg}", file=sys.stderr, flush=True)


def _digests() -> dict[str, str]:
    return {src: hashlib.sha256((HERE / src).read_bytes()).hexdigest() for src in COMPILED}


class OptionalBuildExt(build_ext):
    """build_ext that falls back to the pure-Python install instead of failing it."""

    def run(self) -> None:
        if not self.extensions:
            return
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure means "pure Python"
            _say(f"compiling the request path failed ({exc}); installing pure Python")
            return
        root = HERE if self.inplace else Path(self.build_lib)
        shared = [e.name for e in self.extensions if e.name.endswith("__mypyc")]
        manifest = {"sources": _digests(), "shared_lib": shared[0] if shared else None}
        (root / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")

    def get_outputs(self) -> list[str]:
        outputs: list[str] = super().get_outputs()
        if self.extensions and not self.inplace:
            manifest = Path(self.build_lib) / MANIFEST
            if manifest.exists():
                outputs.append(str(manifest))
        return outputs


def _extensions() -> list[object]:
    if os.environ.get("PAVIS_PURE") == "1":
        _say("PAVIS_PURE=1: installing pure Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _say("mypy (mypyc) is not importable; installing pure Python")
        return []
    cwd = os.getcwd()
    os.chdir(HERE)  # mypycify takes paths relative to the project
    try:
        return list(mypycify(COMPILED, opt_level="3"))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - mypy reports and exits on errors
        _say(f"mypyc could not translate the request path ({exc}); installing pure Python")
        return []
    finally:
        os.chdir(cwd)


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
