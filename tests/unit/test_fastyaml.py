"""The YAML fast path answers only what PyYAML's loader would answer.

``pavis.compiler.fastyaml`` may return ``SLOW`` for anything; when it returns a document, it
must be the document the loader builds — same types (``1``, ``1.0``, ``True`` and ``"1"`` are
all different), same values — and PyYAML must accept the text. Hypothesis writes documents
from a pool of the scalars YAML 1.1 and 1.2 read differently, in block and flow style with
every quoting style, and then mutates them character by character.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pavis.compiler import fastyaml, ingest
from pavis.errors import IngestError

TRICKY = [
    "on",
    "off",
    "yes",
    "no",
    "y",
    "n",
    "true",
    "True",
    "TRUE",
    "false",
    "False",
    "FALSE",
    "null",
    "Null",
    "NULL",
    "~",
    "",
    "1",
    "-1",
    "+1",
    "0",
    "-0",
    "007",
    "012",
    "0x1f",
    "0o17",
    "0b101",
    "1_000",
    "1.5",
    "-2.5",
    "1e3",
    "1.0e+3",
    "1E+3",
    ".5",
    "1.",
    ".inf",
    "-.inf",
    ".nan",
    "1:30",
    "190:20:30",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "=",
    "<<",
    "a b",
    "x#y",
    "x #y",
    "a: b",
    "a:b",
    "-",
    "- x",
    "*",
    "*.example.com",
    "&a",
    "!x",
    "!!str",
    "@x",
    "`x",
    "%x",
    "? x",
    "?x",
    "'",
    '"',
    "it's",
    'say "hi"',
    "\\",
    "a\\nb",
    "\t",
    "é",
    "|",
    ">",
    "[",
    "]",
    "{",
    "}",
    ",",
    "#",
    "/p/1/",
    "127.0.0.1:8080",
    "5s",
    "GET",
    "*/*",
    "---",
    "...",
    " lead",
    "trail ",
    'k": v',
]
KEYS = ["name", "match", "prefix", "routes", "on", "1", "true", "null", "", "a b", "x", "y"]


def typed(value: Any) -> Any:
    """``value`` with every scalar's type made part of it, so ``1 != True != 1.0``."""
    if isinstance(value, dict):
        return ("dict", sorted((typed(k), typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    if isinstance(value, float) and value != value:
        return ("float", "nan")
    return (type(value).__name__, repr(value))


def pyyaml(text: str) -> Any:
    return yaml.load(text, Loader=ingest._Loader)  # noqa: S506 - a SafeLoader


def agrees(text: str) -> None:
    fast = fastyaml.load(text, ingest._implicit_tag)
    if fast is fastyaml.SLOW:
        return
    try:
        slow = pyyaml(text)
    except yaml.YAMLError as exc:
        pytest.fail(f"fast path accepted what PyYAML rejects ({exc}):\n{text}")
    assert typed(fast) == typed(slow), text


def quote(s: str, style: int) -> str:
    if style == 0:
        return s
    if style == 1:
        return "'" + s.replace("'", "''") + "'"
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


scalars = st.tuples(st.sampled_from(TRICKY), st.integers(0, 2)).map(lambda p: quote(*p))
keys = st.tuples(st.sampled_from(KEYS + TRICKY[:20]), st.integers(0, 2)).map(lambda p: quote(*p))
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(st.tuples(keys, inner), max_size=4),
    ),
    max_leaves=12,
)


def flow(node: Any) -> str:
    if isinstance(node, str):
        return node
    if node and isinstance(node[0], tuple):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in node) + "}"
    return "[" + ", ".join(flow(v) for v in node) + "]"


def block(node: Any, indent: int = 0) -> str:
    pad = " " * indent
    if isinstance(node, str):
        return node
    if not node:
        return "[]"
    lines = []
    for item in node:
        if isinstance(item, tuple):
            k, v = item
            if isinstance(v, list) and v:
                lines.append(f"{pad}{k}:\n{block(v, indent + 2)}")
            else:
                lines.append(f"{pad}{k}: {block(v) if isinstance(v, str) else flow(v)}")
        elif isinstance(item, list) and item:
            lines.append(f"{pad}- {flow(item)}")
        else:
            lines.append(f"{pad}- {item if isinstance(item, str) else flow(item)}")
    return "\n".join(lines)


def document(node: Any, style: int) -> str:
    if isinstance(node, str):
        node = [("k", node)]
    return (flow(node) if style else block(node)) + "\n"


@settings(
    max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(trees, st.integers(0, 1))
def test_generated_documents_agree(node: Any, style: int) -> None:
    agrees(document(node, style))


EDITS = list(" \n:-#'\"[]{},&*!|>?%@`\\\t0.~") + ["---\n", "<<: ", "\u00e9", "  "]


@settings(
    max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    trees,
    st.integers(0, 1),
    st.lists(
        st.tuples(st.integers(0, 400), st.sampled_from(EDITS), st.booleans()),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_documents_agree(node: Any, style: int, edits: list[tuple[int, str, bool]]) -> None:
    text = document(node, style)
    for at, piece, replace in edits:
        at %= len(text) + 1
        text = text[:at] + piece + text[at + 1 if replace else at :]
    agrees(text)


CORPUS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    "path", sorted(CORPUS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CORPUS))
)
def test_the_config_corpus_agrees(path: Path) -> None:
    agrees(path.read_text(encoding="utf-8", errors="replace"))


def routes_yaml(n: int) -> str:
    head = (
        'version: 1\nlisteners: [{name: public, address: "127.0.0.1:8080"}]\n'
        'clusters: [{name: up, endpoints: ["127.0.0.1:8081"], connect_timeout: 2s}]\n'
        'virtual_hosts:\n  - name: all\n    domains: ["*", "*.example.com"]\n    routes:\n'
    )
    rows = "".join(
        f"      - {{name: r{i}, match: {{prefix: /p/{i}/, methods: [GET, POST]}},"
        f" forward: {{cluster: up, timeout: 5s, retry: {{attempts: 2, on: [reset]}}}}}}\n"
        for i in range(n)
    )
    return head + rows


def test_a_large_route_table_takes_the_fast_path() -> None:
    text = "---\n" + routes_yaml(2000)
    fast = fastyaml.load(text, ingest._implicit_tag)
    assert fast is not fastyaml.SLOW, "the fast path refused an ordinary route table"
    assert typed(fast) == typed(pyyaml(text))
    assert ingest.parse(ingest.source_of_text(text, "yaml")) == fast


def test_errors_are_pyyaml_s_and_nothing_reaches_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    broken = routes_yaml(3) + "      - {name: x, match: [\n"
    with pytest.raises(yaml.YAMLError) as pyyaml_said:
        pyyaml(broken)
    with pytest.raises(IngestError) as caught:
        ingest.parse(ingest.source_of_text(broken, "yaml", "cfg.yaml"))
    assert str(caught.value) == f"cfg.yaml: invalid YAML: {pyyaml_said.value}"
    duplicate = routes_yaml(2).replace("{name: r1,", "{name: r1, name: r9,")
    with pytest.raises(IngestError, match="duplicate key 'name'"):
        ingest.parse(ingest.source_of_text(duplicate, "yaml", "cfg.yaml"))
    out, err = capfd.readouterr()
    assert err == "" and out == ""


def test_only_the_process_s_one_thread_silences_stderr() -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert fastyaml.load(routes_yaml(3), ingest._implicit_tag) is fastyaml.SLOW
    finally:
        stop.set()
        other.join()
    assert fastyaml.load(routes_yaml(3), ingest._implicit_tag) is not fastyaml.SLOW


def test_json_and_yaml_of_one_config_decode_alike() -> None:
    text = routes_yaml(50)
    assert ingest.parse(ingest.source_of_text(text, "yaml")) == json.loads(json.dumps(pyyaml(text)))


@pytest.mark.parametrize("text", ["a: -.5\n", "- [1, -.0]\n", "a: +.5\n", "{a: .5}\n", "a: x-.5\n"])
def test_numbers_the_json_emitter_rewrites_agree(text: str) -> None:
    # rapidyaml writes ``-.5`` as ``-0.5``, which PyYAML reads as text: found by the mutation
    # property (20,000 examples).
    agrees(text)
