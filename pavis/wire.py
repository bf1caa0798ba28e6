"""JSON for the control protocol's one-line messages, through the stdlib's C accelerator.

Owns: ``dumps`` (compact, ASCII) and ``loads`` (one value, nothing but whitespace after it).
The ``json`` package's Python layer imports ``re`` and builds its encoder and decoder
objects: a fifth of the CPU of a live `pavctl` command, which sends one line and reads one.
``_json`` is what that layer runs underneath; where an interpreter lacks it, ``json`` is
used. Must not: import anything beyond the stdlib's C modules at import time.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _not_json(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not JSON")


class _Context:
    """What ``_json.make_scanner`` reads of a decoder: json.loads's defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ValueError(f"{name} is not JSON")  # NaN, Infinity: nothing pavis sends


_ENCODE: Any = None
_SCAN: Any = None
try:
    import _json

    _ENCODE = _json.make_encoder(
        {}, _not_json, _json.encode_basestring_ascii, None, ":", ",", False, False, False
    )
    _SCAN = _json.make_scanner(_Context())  # type: ignore[arg-type]  # it reads attributes
except (ImportError, AttributeError, TypeError):  # pragma: no cover - an interpreter without it
    pass

_WS = " \t\n\r"


def dumps(value: Any) -> str:
    if _ENCODE is None:  # pragma: no cover
        import json

        return json.dumps(value, separators=(",", ":"))
    return "".join(_ENCODE(value, 0))


def loads(text: str) -> Any:
    """One JSON value; ValueError for anything else (as json.loads)."""
    if _SCAN is None:  # pragma: no cover
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WS))
    try:
        value, end = _SCAN(text, start)
    except StopIteration as exc:
        raise ValueError(f"no JSON value at character {exc.value}") from None
    if text[end:].strip(_WS):
        raise ValueError(f"extra data after the JSON value at character {end}")
    return value
