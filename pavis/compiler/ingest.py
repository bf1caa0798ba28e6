"""Configuration source → parsed document (dicts, lists, scalars).

Owns: reading a file or stdin, choosing the syntax (from the extension: ``.yaml``/``.yml``,
``.json``, ``.toml``), and parsing it with the strict settings below.
Must not: know the schema. Any failure here is an ``IngestError`` (unreadable, unknown
extension, syntax error, duplicate key).

YAML is read with YAML 1.2 booleans only (``true``/``false``): PyYAML's YAML 1.1 default
turns the key ``on`` (``retry.on``) into ``True`` and ``no``/``off`` into booleans. Duplicate
keys are rejected in every syntax: a silently ignored duplicate is a misconfiguration.

PyYAML's loader defines what a YAML document means here (every rule above, merge keys, the
alias-expansion bound and every error message). Building a 10k-route document with it takes
seconds, so plain documents go through a fast path first (``pavis.compiler.fastyaml``: the C++
parser rapidyaml, then the stdlib JSON decoder) that answers only when its result is provably
the one PyYAML would give, and hands everything else to PyYAML.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml  # type: ignore[import-untyped,unused-ignore]

from pavis.compiler import fastyaml
from pavis.errors import IngestError

Syntax = Literal["yaml", "json", "toml"]

_EXTENSIONS: dict[str, Syntax] = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".toml": "toml"}


@dataclass(frozen=True)
class Source:
    data: bytes
    syntax: Syntax
    origin: str  # shown in messages
    base_dir: Path  # relative file references (TLS PEM files) resolve against this


def syntax_of(path: str | Path) -> Syntax:
    ext = Path(path).suffix.lower()
    try:
        return _EXTENSIONS[ext]
    except KeyError:
        known = ", ".join(sorted(_EXTENSIONS))
        raise IngestError(
            f"{path}: unknown config extension {ext or '(none)'!r}; use one of {known}"
        ) from None


def read_path(path: str | Path) -> Source:
    """Read a config file; ``-`` reads stdin (JSON if it starts with ``{``, else YAML)."""
    if str(path) == "-":
        data = sys.stdin.buffer.read()
        syntax: Syntax = "json" if data.lstrip().startswith(b"{") else "yaml"
        return Source(data, syntax, "<stdin>", Path.cwd())
    p = Path(path)
    syntax = syntax_of(p)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise IngestError(f"{path}: cannot read: {exc.strerror}") from None
    return Source(data, syntax, str(path), p.resolve().parent)


def source_of_text(text: str | bytes, syntax: str, origin: str = "<text>") -> Source:
    if syntax not in ("yaml", "json", "toml"):
        raise IngestError(f"{origin}: unknown syntax {syntax!r}; use yaml, json or toml")
    data = text.encode() if isinstance(text, str) else bytes(text)
    base = Path(origin).resolve().parent if not origin.startswith("<") else Path.cwd()
    return Source(data, syntax, origin, base)  # type: ignore[arg-type]


def parse(source: Source) -> Any:
    """Parse the source bytes into plain Python data."""
    try:
        text = source.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{source.origin}: not UTF-8: {exc}") from None
    if source.syntax == "json":
        return _parse_json(text, source.origin)
    if source.syntax == "toml":
        import tomllib  # here: most configs are YAML

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise IngestError(f"{source.origin}: invalid TOML: {exc}") from None
    return _parse_yaml(text, source.origin)


def _parse_json(text: str, origin: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise IngestError(f"{origin}: duplicate key {key!r}")
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise IngestError(f"{origin}: invalid JSON: {exc}") from None


_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc]
    """Safe loader with YAML 1.2 booleans and duplicate-key detection."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        # Tag resolution of plain scalars is PyYAML's hottest Python code and big route
        # tables repeat the same words ("match", "forward", cluster names) endlessly.
        if kind is yaml.ScalarNode and implicit[0]:
            cache: dict[str, str] = self.__dict__.setdefault("_tags", {})
            tag = cache.get(value)
            if tag is None:
                tag = cache[value] = super().resolve(kind, value, implicit)
            return tag
        return super().resolve(kind, value, implicit)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
    # Merge keys (``<<: *base``) put the merged pairs first; explicit keys may override
    # them, but an explicit key given twice is an error.
    explicit = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)
    first_explicit = len(node.value) - explicit
    out: dict[Any, Any] = {}
    seen: set[Any] = set()
    for i, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable key {key!r}", key_node.start_mark
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        if i >= first_explicit:
            seen.add(key)
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_RESOLVER = _Loader("")


def _implicit_tag(value: str) -> str:
    """The tag ``_Loader`` gives ``value`` written as a plain scalar (``...:str`` for text)."""
    tag: str = _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))
    return tag


MAX_VALUES = 5_000_000  # far above 100k routes (~15 values each)


def _parse_yaml(text: str, origin: str) -> Any:
    doc = fastyaml.load(text, _implicit_tag)
    if doc is not fastyaml.SLOW:
        return doc
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        raise IngestError(f"{origin}: invalid YAML: {exc}") from None
    if "&" in text:  # anchors: aliases may expand exponentially ("billion laughs")
        _bound_size(doc, origin)
    return doc


def _bound_size(doc: Any, origin: str) -> None:
    budget = MAX_VALUES
    stack = [doc]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            raise IngestError(f"{origin}: document expands to over {MAX_VALUES} values (aliases?)")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
