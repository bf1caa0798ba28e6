"""A fast path for plain YAML documents that answers only when it agrees with PyYAML.

Owns: deciding whether a YAML text is plain enough for rapidyaml (a C++ parser) to read, and
turning rapidyaml's tree into Python data through its JSON emitter and the stdlib JSON decoder
(both C), so a 10k-route document costs tens of milliseconds instead of seconds.
Must not: define what YAML means. ``pavis.compiler.ingest``'s PyYAML loader does (YAML 1.2
booleans, duplicate keys, merge keys, the alias bound, every error message); whenever this
module cannot prove its result is the one that loader gives, it returns ``SLOW`` and the
caller asks PyYAML. Errors are never reported from here.

What it proves, and how:
- The text uses nothing the two parsers might read differently: ASCII only, no tab, no
  backslash escape, no anchor, alias, tag, directive, reserved indicator, block scalar,
  complex key, merge key or second document (``_UNSAFE``). A false alarm costs speed only.
- rapidyaml keeps quoted scalars quoted in its JSON, and writes a plain scalar bare only when
  it reads as a JSON number, ``true``, ``false`` or ``null``. Each bare number is checked
  against the loader's own resolver (``1e3`` is text to it, for instance); every string, key
  or value, must be one the loader would also read as text if it had been plain — a quoted
  ``"8080"`` or ``"true"`` is indistinguishable here from a plain one, so it goes to PyYAML.
- A duplicate key, a JSON constant (``NaN``), or any error of either C parser: ``SLOW``.

rapidyaml writes its parse errors to file descriptor 2 before raising; the fast path silences
that descriptor while it parses, so it runs only when this is the process's one thread (the
CLI, the compile child) and PyYAML does the work anywhere else.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from itertools import repeat
from typing import Any

ryml: Any
try:
    import ryml  # type: ignore[import-untyped,no-redef,unused-ignore]
except ImportError:  # an optional accelerator: without it every document goes to PyYAML
    ryml = None

SLOW: Any = object()  # "ask PyYAML": returned instead of a document

_STR = "tag:yaml.org,2002:str"
# PyYAML resolves a lone ``!``, ``&`` or ``*`` to this tag; ``plain()`` rules them out as plain
# scalars, so such a string was quoted, and quoted scalars are text.
_TEXT = {_STR, "tag:yaml.org,2002:yaml"}
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"

# Where an indicator is syntax: ``]``/``}`` closing no item, ``,`` ending no item, ``:``
# opening a value or ``?`` a key at a token's start. Searched as runs of character classes:
# S space or line break, C ``:``, M ``,``, O ``[``/``{``, E ``]``/``}``, Q ``?``, D ``.``,
# N a digit, P ``-``/``+``, x the rest.
_CLASS_OF = bytearray(b"x" * 256)
for _char, _class in zip(" \n\r:,[{]}?.0123456789-+", "SSSCMOOEEQDNNNNNNNNNNPP", strict=True):
    _CLASS_OF[ord(_char)] = ord(_class)
_SYNTAX_PAIRS = (
    tuple(g + b"E" for g in (b"S", b"C", b"M"))
    + tuple(g + b"M" for g in (b"S", b"C", b"M", b"O"))
    + tuple(g + c for g in (b"S", b"C", b"M", b"O", b"E") for c in (b"C", b"Q"))
    # A number written ``.5``, ``-.5`` or ``+.5``: rapidyaml's JSON rewrites it (``-0.5``)
    # where PyYAML reads a signed one as text.
    + tuple(g + n for g in (b"S", b"C", b"M", b"O") for n in (b"DN", b"PDN"))
)


def _position_tables() -> tuple[bytes, tuple[bytes, ...]]:
    """``_SYNTAX_PAIRS`` as byte tables for ``_has_syntax_pair``: each distinct tail (what
    follows a pair's first class) gets a bit; the first table maps a class to the bits of
    the tails that make a pair after it, the k-th position table a class to the bits of the
    tails that allow it k places after that (every tail shorter than k allows anything)."""
    tails = sorted({pair[1:] for pair in _SYNTAX_PAIRS})
    bit = {tail: 1 << k for k, tail in enumerate(tails)}
    assert len(bit) <= 8  # one byte per position
    first = bytearray(256)
    for pair in _SYNTAX_PAIRS:
        first[pair[0]] |= bit[pair[1:]]
    positions = []
    for k in range(max(map(len, tails))):
        table = bytearray(256)
        for tail in tails:
            for c in range(256) if len(tail) <= k else (tail[k],):
                table[c] |= bit[tail]
        positions.append(bytes(table))
    return bytes(first), tuple(positions)


_FIRST_TABLE, _POSITION_TABLES = _position_tables()


def _has_syntax_pair(classes: bytes) -> bool:
    """Whether one of ``_SYNTAX_PAIRS`` occurs in ``classes``: one pass per table over the
    text as one big integer (a byte per class), instead of one substring search per pair.
    Bit t of byte i of ``tails`` says tail t is written from i on."""
    padded = classes + b"x" * len(_POSITION_TABLES)  # every tail may end at the last class

    def marks(table: bytes) -> int:
        return int.from_bytes(padded.translate(table), "little")

    tails = -1
    for k, table in enumerate(_POSITION_TABLES):
        tails &= marks(table) >> (8 * k)
    return marks(_FIRST_TABLE) & (tails >> 8) != 0


_RARE_CHARS = "&*!%@`|>"  # anchor, alias, tag, directive, reserved, block scalar
_RARE = re.compile(f"[{re.escape(_RARE_CHARS)}]")
# ``_flow_balanced``: openers become ``(``, closers ``)``, ``\r`` a line break, the rest goes.
_BRACKETS = bytes.maketrans(b"[{]}\r", b"(())\n")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[{]}\r\n")
_MAX_PASSES = 16
_BEFORE_RARE = frozenset(" \n\r[]{},:?")  # where such an indicator would be syntax
_MARKER = re.compile(r"^(?:---|\.\.\.)(?:\s|$)", re.MULTILINE)
_LEADING_MARKER = re.compile(r"\A(?:[ ]*(?:#[^\n]*)?\n)*---[ ]*\n")
_JSON_STRING = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"')
# The first characters of every plain scalar the loader might read as other than text (numbers,
# booleans, null, timestamps, ``<<``, ``=``, and the lone ``!``/``&``/``*``), or the empty one.
_MAYBE_TYPED = frozenset("-+0123456789.~nNtTfF<=!&*")


class _Unsure(Exception):
    """Raised inside the JSON decoder's hooks: the result might differ from PyYAML's."""


Resolver = Callable[[str], str]


def plain(text: str) -> bool:
    """``text`` uses nothing the two parsers might read differently (see the module doc).

    Every check is a C-level scan (substring search, ``str`` methods over all lines), so a
    1 MB document costs a few milliseconds; only rare characters are looked at one by one.
    """
    if not text.isascii() or "\\" in text or "<<" in text:
        return False
    if not text.replace("\n", "").replace("\r", "").isprintable():  # tabs, control characters
        return False
    raw = text.encode("ascii")
    classes = raw.translate(_CLASS_OF)
    starts = classes[:3]
    if starts[:1] in b"CQEM" or starts.startswith((b"DN", b"PDN")):
        return False
    if _has_syntax_pair(classes):
        return False
    if any(map(text.__contains__, _RARE_CHARS)):
        for m in _RARE.finditer(text):
            at = m.start()
            if at == 0 or text[at - 1] in _BEFORE_RARE:
                return False
    # A flow collection over several lines: PyYAML's rules.
    if not _flow_balanced(raw):
        return False
    # ``- `` opens an entry only where its line begins (after spaces and other entries).
    rest = "\n".join(map(str.lstrip, text.splitlines(), repeat(" -")))
    if "- " in rest or "-\n" in rest or rest.endswith("-"):
        return False
    if "#" in text:  # a comment after a flow item or a quote: PyYAML's rules
        for m in re.finditer("#", text):
            at = m.start()
            if at and text[at - 1] not in " \n\r":
                continue  # ``a#b`` is text, not a comment
            line = text[text.rfind("\n", 0, at) + 1 : at]
            if any(c in line for c in "[{,'\""):
                return False
    if "---" in text or "..." in text:
        return _MARKER.search(text) is None
    return True


def _flow_balanced(raw: bytes) -> bool:
    """Every line of ``raw`` opens as many flow collections (``[``, ``{``) as it closes.

    The brackets alone, a line break between lines: a line balances exactly when deleting
    adjacent opposite pairs empties it (counts are all that matter, so ``)(`` goes too).
    Each pass is a C-level replace; a line nested deeper than ``_MAX_PASSES`` is left to
    PyYAML, which keeps this linear in the text."""
    brackets = raw.translate(_BRACKETS, _NOT_BRACKETS)
    for _ in range(_MAX_PASSES):
        reduced = brackets.replace(b"()", b"").replace(b")(", b"")
        if reduced == brackets:
            return b"(" not in reduced and b")" not in reduced
        brackets = reduced
    return False


def load(text: str, resolve: Resolver) -> Any:
    """The document ``text`` means, or ``SLOW``. ``resolve(value)`` is the loader's tag for
    ``value`` as a plain scalar."""
    if ryml is None or threading.active_count() != 1:
        return SLOW
    lead = _LEADING_MARKER.match(text)
    body = text[lead.end() :] if lead else text
    if not plain(body):
        return SLOW
    emitted = _emit_json(body.encode())
    if emitted is None:
        return SLOW

    def number(kind: str, convert: Callable[[str], Any]) -> Callable[[str], Any]:
        def hook(token: str) -> Any:
            if resolve(token) != kind:
                raise _Unsure(token)
            return convert(token)

        return hook

    def constant(token: str) -> Any:
        raise _Unsure(token)

    try:
        doc = json.loads(
            emitted,
            parse_int=number(_INT, int),
            parse_float=number(_FLOAT, float),
            parse_constant=constant,
        )
    except (_Unsure, ValueError, RecursionError):
        return SLOW
    # A key given twice survives in the emitted text and not in the decoded dicts. Every key
    # is written ``"key": ``; a ``": `` inside a string is always ``\\": ``.
    if _keys(emitted) != _count_keys(doc):
        return SLOW
    # Without a backslash every ``"`` opens or closes a string: the strings are every other
    # piece between them (a C-level split instead of a regex over the whole text).
    strings = emitted.split('"')[1::2] if "\\" not in emitted else _JSON_STRING.findall(emitted)
    for value in set(strings):
        maybe_typed = not value or value[0] in _MAYBE_TYPED
        if maybe_typed and resolve(value.replace('\\"', '"')) not in _TEXT:
            return SLOW
    return doc


def _keys(json_text: str) -> int:
    return json_text.count('": ') - json_text.count('\\": ')


def _count_keys(doc: Any) -> int:
    """The keys of every object in ``doc`` (what ``_keys`` counts in its JSON text)."""
    n = 0
    stack = [doc]
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind is dict:
            n += len(node)
            stack.extend(node.values())
        elif kind is list:
            stack.extend(node)
    return n


def _emit_json(data: bytes) -> str | None:
    assert ryml is not None
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        try:
            tree = ryml.parse_in_arena(data)
        except Exception:  # noqa: BLE001 - any parse failure means "ask PyYAML"
            return None
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    node = tree.root_id()
    if tree.is_stream(node):
        if tree.num_children(node) != 1:
            return None
        node = tree.first_child(node)
    if not tree.is_container(node):
        return None  # an empty document or a lone scalar: rare, and PyYAML's to answer
    out: str = ryml.emit_json_malloc(tree, node)
    return out
