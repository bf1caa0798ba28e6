"""Determinism: the same configuration always seals to the same bytes.

Twice in one process, in another process with another hash seed (set and dict iteration
orders differ), and written as YAML, JSON or TOML.
"""

from __future__ import annotations

from pathlib import Path

from pavis.artifact import seal
from pavis.compiler import compile_path, compile_text

ROOT = Path(__file__).resolve().parents[2]
FULL = ROOT / "examples" / "full.yaml"
VALID = ROOT / "tests" / "configs" / "valid"


def test_compiling_twice_gives_identical_bytes() -> None:
    assert seal(compile_path(FULL)) == seal(compile_path(FULL))


def test_yaml_json_and_toml_of_one_config_give_one_artifact() -> None:
    yaml_bytes = seal(compile_path(FULL))
    assert seal(compile_path(VALID / "002_full.json")) == yaml_bytes
    assert seal(compile_path(VALID / "003_full.toml")) == yaml_bytes


def test_key_order_and_spelling_do_not_change_the_artifact() -> None:
    a = """
version: 1
listeners: [{name: l, address: "127.0.0.1:8080"}]
clusters: [{name: c, endpoints: ["127.0.0.1:9000"]}]
virtual_hosts:
  - name: v
    domains: ["Example.COM."]
    routes:
      - match: {prefix: /, methods: [post, GET, get]}
        forward: {cluster: c}
        request_headers: {set: {X-B: "2", x-a: "1"}, remove: [Cookie, accept]}
"""
    b = """
virtual_hosts:
  - routes:
      - request_headers: {remove: [accept, cookie], set: {x-a: "1", x-b: "2"}}
        forward: {cluster: c, timeout: 15s}
        match: {methods: [GET, POST], prefix: /}
    domains: ["example.com"]
    name: v
clusters: [{endpoints: ["127.0.0.1:9000"], name: c}]
listeners: [{address: "127.0.0.1:8080", name: l}]
version: 1
"""
    assert seal(compile_text(a, "yaml")) == seal(compile_text(b, "yaml"))
