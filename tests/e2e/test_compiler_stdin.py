"""The compiler reads a config from standard input (``-``) in a fresh interpreter, as YAML or JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml  # type: ignore[import-untyped,unused-ignore]


def test_stdin_is_read_as_yaml_or_json() -> None:
    script = (
        "from pavis.compiler import compile_path; print(compile_path('-').model.routes[0].name)"
    )
    doc = {
        "version": 1,
        "listeners": [{"address": "127.0.0.1:8080"}],
        "virtual_hosts": [
            {"name": "v", "domains": ["*"], "routes": [{"name": "r", "match": {"prefix": "/"},
                                                        "direct": {}}]}
        ],
    }  # fmt: skip
    for text in (json.dumps(doc), yaml.safe_dump(doc)):
        out = subprocess.run(
            [sys.executable, "-c", script], input=text.encode(), capture_output=True, check=True
        )
        assert out.stdout.strip() == b"r"
