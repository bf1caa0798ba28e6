"""The readable object form of the runtime model, and its exact inverse.

Owns: ``to_view`` (Model → plain dicts/lists/str/int/bool, what ``pavctl inspect --json`` prints
and ``pavctl diff`` compares) and ``from_view`` (that object form → an equal Model).
Must not: add, drop or rename anything. The runtime Structs are ``array_like`` (compact on the
wire, unreadable as JSON), so the view names every field and writes each tagged variant with
its tag field (``{"type": "forward", ...}``); otherwise it is the model, default for default.

Bytes (``Direct.body``) are shown as text when they are valid UTF-8, else as
``{"base64": "..."}``; ``from_view`` reverses both.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import msgspec.inspect as mi

from pavis.errors import ArtifactError
from pavis.schema import Endpoint, Model

_MODEL_INFO = mi.type_info(Model)


def to_view(obj: Any) -> Any:
    """Any runtime Struct (or value inside one) → JSON-ready builtins with named fields."""
    if isinstance(obj, msgspec.Struct):
        out: dict[str, Any] = {}
        config = obj.__struct_config__
        if config.tag_field is not None:
            out[config.tag_field] = config.tag
        for name in obj.__struct_fields__:
            out[name] = to_view(getattr(obj, name))
        return out
    if isinstance(obj, tuple | list):
        return [to_view(item) for item in obj]
    if isinstance(obj, dict):
        return {key: to_view(value) for key, value in obj.items()}
    if isinstance(obj, bytes):
        try:
            return obj.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(obj).decode("ascii")}
    return obj


def address(ep: Endpoint) -> str:
    """An endpoint as operators write it: ``host:port``, IPv6 hosts in brackets."""
    host = f"[{ep.host}]" if ":" in ep.host else ep.host
    return f"{host}:{ep.port}"


def from_view(data: Any) -> Model:
    """The object form of ``to_view`` → Model, validated by msgspec like an artifact payload."""
    try:
        wire = _to_wire(data, _MODEL_INFO, "$")
        return msgspec.convert(wire, Model, strict=True)
    except msgspec.ValidationError as exc:
        raise ArtifactError("decode_failed", f"view does not convert to the model: {exc}") from None


def _to_wire(data: Any, info: mi.Type, path: str) -> Any:
    """Rebuild the array_like wire shape that ``msgspec.convert`` expects for ``info``."""
    if isinstance(info, mi.StructType):
        return _struct_to_wire(data, info, path)
    if isinstance(info, mi.UnionType):
        return _union_to_wire(data, info, path)
    if isinstance(info, mi.VarTupleType | mi.ListType):
        _expect(data, list, path)
        return [_to_wire(item, info.item_type, f"{path}[{i}]") for i, item in enumerate(data)]
    if isinstance(info, mi.TupleType):
        _expect(data, list, path)
        if len(data) != len(info.item_types):
            raise _bad(path, f"expected {len(info.item_types)} items")
        return [
            _to_wire(item, t, f"{path}[{i}]")
            for i, (item, t) in enumerate(zip(data, info.item_types, strict=True))
        ]
    if isinstance(info, mi.DictType):
        _expect(data, dict, path)
        return {k: _to_wire(v, info.value_type, f"{path}.{k}") for k, v in data.items()}
    if isinstance(info, mi.BytesType):
        if isinstance(data, str):
            return data.encode("utf-8")
        if isinstance(data, dict) and set(data) == {"base64"} and isinstance(data["base64"], str):
            try:
                return base64.b64decode(data["base64"], validate=True)
            except ValueError:
                raise _bad(path, "invalid base64") from None
        raise _bad(path, "expected text or {base64: ...}")
    return data  # scalars: msgspec.convert checks them


def _struct_to_wire(data: Any, info: mi.StructType, path: str) -> list[Any]:
    _expect(data, dict, path)
    names = {f.name for f in info.fields}
    extra = set(data) - names - ({info.tag_field} if info.tag_field else set())
    if extra:
        raise _bad(path, f"unknown field(s) {sorted(extra)}")
    out: list[Any] = [info.tag] if info.tag_field is not None else []
    for field in info.fields:
        if field.name not in data:
            raise _bad(path, f"missing field {field.name!r}")
        out.append(_to_wire(data[field.name], field.type, f"{path}.{field.name}"))
    return out


def _union_to_wire(data: Any, info: mi.UnionType, path: str) -> Any:
    variants = [t for t in info.types if isinstance(t, mi.StructType) and t.tag_field]
    if not variants:
        return data
    _expect(data, dict, path)
    tag_field = variants[0].tag_field
    tag = data.get(tag_field)
    for variant in variants:
        if variant.tag == tag:
            return _struct_to_wire(data, variant, path)
    known = ", ".join(repr(v.tag) for v in variants)
    raise _bad(path, f"{tag_field} {tag!r} is not one of {known}")


def _expect(data: Any, kind: type, path: str) -> None:
    if not isinstance(data, kind):
        raise _bad(path, f"expected {kind.__name__}, got {type(data).__name__}")


def _bad(path: str, message: str) -> ArtifactError:
    return ArtifactError("decode_failed", f"{path}: {message}")
