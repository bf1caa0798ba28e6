"""Raw parsed data → intent Structs, reporting every structural problem at once.

Owns: the conversion of the parsed document (dicts, lists, scalars) into ``intent.Config``
and the problems ``unknown_field``, ``missing_field`` and ``type_error`` with field paths.
Must not: judge values (ranges, references, syntax of durations): that is codec/validate.

msgspec stops at the first error, so on failure a walker over msgspec's own type
description of the intent Structs collects every structural problem of the file. The fast
path (a valid file) costs one ``msgspec.convert``.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
import msgspec.inspect as mi

from pavis.compiler.intent import Config
from pavis.errors import ConfigError, Problem


@functools.cache
def _root_info() -> mi.Type:
    """msgspec's description of ``Config``: built for the first invalid file only (a valid
    one never needs it, and building it costs more than converting a small file)."""
    return mi.type_info(Config)


def to_intent(raw: Any, source: str = "") -> Config:
    """Convert a parsed document to ``Config`` or raise ``ConfigError`` with all problems."""
    try:
        config: Config = msgspec.convert(raw, Config)
        return config
    except msgspec.ValidationError as exc:
        problems: list[Problem] = []
        _walk(raw, _root_info(), "$", problems)
        if not problems:  # the walker is stricter than msgspec everywhere; keep msgspec's word
            problems.append(_from_msgspec(str(exc)))
        raise ConfigError(problems, source) from None


def _from_msgspec(text: str) -> Problem:
    # msgspec: "Expected `int`, got `str` - at `$.clusters[0].pool.max_idle`"
    path = "$"
    if " - at `" in text:
        text, _, rest = text.partition(" - at `")
        path = rest.rstrip("`")
    constraint = "type_error"
    if text.startswith("Object contains unknown field"):
        constraint = "unknown_field"
    elif text.startswith("Object missing required field"):
        constraint = "missing_field"
    return Problem(path, constraint, text)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _accepts(t: mi.Type) -> set[str]:
    """The raw kinds a type accepts (used to pick a union member)."""
    if isinstance(t, mi.StrType):
        return {"str"}
    if isinstance(t, mi.IntType):
        return {"int"}
    if isinstance(t, mi.BoolType):
        return {"bool"}
    if isinstance(t, mi.FloatType):
        return {"int", "float"}
    if isinstance(t, mi.NoneType):
        return {"null"}
    if isinstance(t, mi.LiteralType):
        return {_kind(v) for v in t.values}
    if isinstance(t, mi.StructType | mi.DictType):
        return {"object"}
    if isinstance(t, mi.ListType | mi.VarTupleType):
        return {"array"}
    if isinstance(t, mi.UnionType):
        return set().union(*(_accepts(m) for m in t.types))
    return {"any"}


def _describe(t: mi.Type) -> str:
    if isinstance(t, mi.StrType):
        return "a string"
    if isinstance(t, mi.IntType):
        return "an integer"
    if isinstance(t, mi.BoolType):
        return "a boolean"
    if isinstance(t, mi.NoneType):
        return "null"
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(repr(v) for v in t.values)
    if isinstance(t, mi.StructType | mi.DictType):
        return "an object"
    if isinstance(t, mi.ListType | mi.VarTupleType):
        return "a list"
    if isinstance(t, mi.UnionType):
        return " or ".join(_describe(m) for m in t.types if not isinstance(m, mi.NoneType))
    return "a value"


def _walk(value: Any, t: mi.Type, path: str, out: list[Problem]) -> None:
    kind = _kind(value)
    if isinstance(t, mi.UnionType):
        for member in t.types:
            if kind in _accepts(member):
                _walk(value, member, path, out)
                return
        out.append(Problem(path, "type_error", f"expected {_describe(t)}, got {kind}"))
        return
    if isinstance(t, mi.AnyType):
        return
    if isinstance(t, mi.LiteralType):
        if value not in t.values or kind not in _accepts(t):
            out.append(Problem(path, "type_error", f"expected {_describe(t)}, got {value!r}"))
        return
    if kind not in _accepts(t):
        out.append(Problem(path, "type_error", f"expected {_describe(t)}, got {kind}"))
        return
    if isinstance(t, mi.StructType):
        fields = {f.encode_name: f for f in t.fields}
        for key in value:
            if not isinstance(key, str):
                out.append(Problem(path, "type_error", f"field name {key!r} is not a string"))
            elif key not in fields:
                known = ", ".join(sorted(fields))
                out.append(
                    Problem(f"{path}.{key}", "unknown_field", f"unknown field (known: {known})")
                )
        for name, f in fields.items():
            if name in value:
                _walk(value[name], f.type, f"{path}.{name}", out)
            elif f.required:
                out.append(Problem(f"{path}.{name}", "missing_field", "required field is missing"))
    elif isinstance(t, mi.ListType | mi.VarTupleType):
        for i, item in enumerate(value):
            _walk(item, t.item_type, f"{path}[{i}]", out)
    elif isinstance(t, mi.DictType):
        for key, item in value.items():
            if not isinstance(key, str):
                out.append(Problem(path, "type_error", f"key {key!r} is not a string"))
                continue
            _walk(item, t.value_type, f"{path}.{key}", out)
