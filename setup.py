"""Build hook: an opt-in mypyc build of the worker request path; metadata lives in setup.cfg.

The default install (no PAVIS_MYPYC) is pure Python and builds no extension. With
PAVIS_MYPYC=1 the request-path modules below are compiled, unchanged, with mypyc
(docs/bench/proxy-profile.md has the figures). mypy must be importable by the build, hence:

    PAVIS_MYPYC=1 pip install --no-build-isolation .

Python imports the compiled module when present and the .py otherwise, so nothing else changes.
"""

import os

from setuptools import setup

# The modules every proxied request runs through; the rest of workers/ (boot, health, metrics,
# access log) is not on the per-request path and stays interpreted.
COMPILED = [
    "workers/io.py",
    "workers/http.py",
    "workers/upstream.py",
    "workers/pool.py",
    "workers/balance.py",
    "workers/proxy.py",
    "workers/conn.py",
]

if os.environ.get("PAVIS_MYPYC") == "1":
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(COMPILED, opt_level="3"))
else:
    setup()
