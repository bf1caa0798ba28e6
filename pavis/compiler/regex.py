"""Regex checks and the literal prefix used to group regex routes.

Owns: deciding whether a pattern is acceptable (compiles; no backreferences; no nested
quantifiers or overlapping alternatives under a repeat that could backtrack exponentially;
at most ``MAX_PATTERN`` characters) and extracting the literal every full match starts with.
Must not: match requests (``pavis.lookup`` does, with ``re.fullmatch``).

Both work on the parse tree of CPython's own regex parser (``re._parser``), so what is
checked is exactly what ``re`` will compile: the parser already folds common prefixes of
alternatives (``/a|/b`` → ``/`` + ``[ab]``) and attaches quantifiers to the atom they repeat
(in ``/ab*`` only ``/a`` is literal).
"""

from __future__ import annotations

import functools
import re
from re import _compiler as sre_compile  # type: ignore[attr-defined]
from re import _constants as C  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

MAX_PATTERN = 1024

_REPEATS = (C.MAX_REPEAT, C.MIN_REPEAT)
# Characters tried when deciding whether two character sets can overlap: every character a
# pattern names explicitly, plus one representative of each category.
_PROBES = "0aA_ \n\t-./é~%"


@functools.cache
def _parse(pattern: str) -> Any:
    """Parse tree of ``pattern`` or the exception parsing raised. The index, the shadow check
    and the safety check all need it; ``clear_cache`` after each compile bounds the memory."""
    try:
        return sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        return exc


def clear_cache() -> None:
    _parse.cache_clear()
    problem.cache_clear()


def literal_prefix(pattern: str) -> str:
    """The literal every string that fully matches ``pattern`` starts with ("" if none)."""
    parsed = _parse(pattern)
    if isinstance(parsed, Exception):
        return ""
    if parsed.state.flags & re.IGNORECASE:
        return ""
    out: list[str] = []
    items = list(parsed)
    if items and items[0] == (C.AT, C.AT_BEGINNING):
        items = items[1:]
    for op, arg in items:
        if op is not C.LITERAL:
            break
        out.append(chr(arg))
    return "".join(out)


@functools.cache
def problem(pattern: str) -> tuple[str, str] | None:
    """``(constraint, message)`` if ``pattern`` is rejected, else None."""
    if len(pattern) > MAX_PATTERN:
        return "unsafe_regex", f"pattern is {len(pattern)} characters; the limit is {MAX_PATTERN}"
    parsed = _parse(pattern)
    try:
        if isinstance(parsed, Exception):
            raise parsed
        sre_compile.compile(parsed)  # what re.compile does after parsing (look-behind widths...)
    except re.error as exc:
        return "invalid_regex", f"invalid regex: {exc}"
    except (RecursionError, OverflowError):
        return "invalid_regex", "regex is nested too deeply"
    reason = _unsafe(list(parsed), False)
    if reason:
        return "unsafe_regex", f"regex may backtrack catastrophically: {reason}"
    return None


def _unsafe(seq: list[Any], in_repeat: bool) -> str:
    for op, arg in seq:
        if op in (C.GROUPREF, C.GROUPREF_EXISTS):
            return "backreferences are not allowed"
        if op in _REPEATS:
            lo, hi, body = arg
            body = list(body)
            if hi > 1:
                inner = _variable_repeats(body)
                if len(inner) > 1 or (inner and not _delimited(body, inner)):
                    return "nested quantifiers (like (a+)+)"
                if _overlapping_branch(body):
                    return "alternatives that can match the same text inside a repeat"
            reason = _unsafe(body, in_repeat or hi > 1)
            if reason:
                return reason
        elif op is C.SUBPATTERN:
            reason = _unsafe(list(arg[3]), in_repeat)
            if reason:
                return reason
        elif op is C.ATOMIC_GROUP or op is C.POSSESSIVE_REPEAT:
            continue  # no backtracking into these
        elif op is C.BRANCH:
            for alt in arg[1]:
                reason = _unsafe(list(alt), in_repeat)
                if reason:
                    return reason
        elif op in (C.ASSERT, C.ASSERT_NOT):
            reason = _unsafe(list(arg[1]), in_repeat)
            if reason:
                return reason
    return ""


def _variable_repeats(seq: list[Any]) -> list[list[Any]]:
    """Bodies of repeats with a variable count anywhere inside ``seq``."""
    out: list[list[Any]] = []
    for op, arg in seq:
        if op in _REPEATS:
            lo, hi, body = arg
            if lo != hi:
                out.append(list(body))
            out.extend(_variable_repeats(list(body)))
        elif op is C.SUBPATTERN:
            out.extend(_variable_repeats(list(arg[3])))
        elif op is C.BRANCH:
            for alt in arg[1]:
                out.extend(_variable_repeats(list(alt)))
    return out


def _delimited(body: list[Any], inner: list[list[Any]]) -> bool:
    """Each iteration of ``body`` contains a mandatory literal the (single) inner repeat
    cannot consume, so the split of the input into iterations is unique: ``(/[a-z]+)+`` is
    safe, ``(a+/a+)+`` is not (the caller rejects two variable repeats in one body)."""
    for op, arg in body:
        if op is C.LITERAL:
            c = chr(arg)
            if not any(_may_contain(rep, c) for rep in inner):
                return True
        elif op is C.SUBPATTERN and _delimited(list(arg[3]), inner):
            return True
    return False


def _may_contain(seq: list[Any], c: str) -> bool:
    return any(_item_may_contain(op, arg, c) for op, arg in seq)


def _item_may_contain(op: Any, arg: Any, c: str) -> bool:
    if op is C.LITERAL:
        return chr(arg) == c
    if op is C.NOT_LITERAL:
        return chr(arg) != c
    if op is C.ANY:
        return True
    if op is C.IN:
        return _in_set(arg, c)
    if op in _REPEATS or op is C.POSSESSIVE_REPEAT:
        return _may_contain(list(arg[2]), c)
    if op is C.SUBPATTERN:
        return _may_contain(list(arg[3]), c)
    if op is C.ATOMIC_GROUP:
        return _may_contain(list(arg), c)
    if op is C.BRANCH:
        return any(_may_contain(list(alt), c) for alt in arg[1])
    return op is not C.AT and op not in (C.ASSERT, C.ASSERT_NOT)


def _in_set(items: list[Any], c: str) -> bool:
    negate = False
    hit = False
    code = ord(c)
    for op, arg in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            hit = hit or arg == code
        elif op is C.RANGE:
            hit = hit or arg[0] <= code <= arg[1]
        elif op is C.CATEGORY:
            hit = hit or _in_category(arg, c)
        else:
            hit = True  # unknown set item: assume it may contain anything
    return hit != negate


def _in_category(cat: Any, c: str) -> bool:
    probes = {
        C.CATEGORY_DIGIT: c.isdigit(),
        C.CATEGORY_NOT_DIGIT: not c.isdigit(),
        C.CATEGORY_SPACE: c.isspace(),
        C.CATEGORY_NOT_SPACE: not c.isspace(),
        C.CATEGORY_WORD: c.isalnum() or c == "_",
        C.CATEGORY_NOT_WORD: not (c.isalnum() or c == "_"),
    }
    return probes.get(cat, True)


def _overlapping_branch(body: list[Any]) -> bool:
    for op, arg in body:
        if op is C.SUBPATTERN and _overlapping_branch(list(arg[3])):
            return True
        if op is C.BRANCH:
            alts = [list(a) for a in arg[1]]
            if sum(1 for a in alts if _nullable(a)) > 1:
                return True
            probes = set(_PROBES) | _named_chars(alts)
            for c in probes:
                if sum(1 for a in alts if _may_start(a, c)) > 1:
                    return True
    return False


def _named_chars(alts: list[list[Any]]) -> set[str]:
    out: set[str] = set()

    def visit(seq: list[Any]) -> None:
        for op, arg in seq:
            if op is C.LITERAL or op is C.NOT_LITERAL:
                out.add(chr(arg))
            elif op is C.IN:
                for iop, iarg in arg:
                    if iop is C.LITERAL:
                        out.add(chr(iarg))
                    elif iop is C.RANGE:
                        out.update((chr(iarg[0]), chr(iarg[1])))
            elif op in _REPEATS or op is C.POSSESSIVE_REPEAT:
                visit(list(arg[2]))
            elif op is C.SUBPATTERN:
                visit(list(arg[3]))
            elif op is C.BRANCH:
                for alt in arg[1]:
                    visit(list(alt))

    for alt in alts:
        visit(alt)
    return out


def _nullable(seq: list[Any]) -> bool:
    for op, arg in seq:
        if op in _REPEATS or op is C.POSSESSIVE_REPEAT:
            if arg[0] > 0 and not _nullable(list(arg[2])):
                return False
        elif op is C.SUBPATTERN:
            if not _nullable(list(arg[3])):
                return False
        elif op is C.BRANCH:
            if not any(_nullable(list(alt)) for alt in arg[1]):
                return False
        elif op in (C.AT, C.ASSERT, C.ASSERT_NOT):
            continue
        else:
            return False
    return True


def _may_start(seq: list[Any], c: str) -> bool:
    """A non-empty match of ``seq`` may start with ``c``."""
    for op, arg in seq:
        if op in _REPEATS or op is C.POSSESSIVE_REPEAT:
            body = list(arg[2])
            if _may_start(body, c):
                return True
            if arg[0] > 0 and not _nullable(body):
                return False
        elif op is C.SUBPATTERN:
            body = list(arg[3])
            if _may_start(body, c):
                return True
            if not _nullable(body):
                return False
        elif op is C.BRANCH:
            alts = [list(a) for a in arg[1]]
            if any(_may_start(a, c) for a in alts):
                return True
            if not any(_nullable(a) for a in alts):
                return False
        elif op in (C.AT, C.ASSERT, C.ASSERT_NOT):
            continue
        else:
            return _item_may_contain(op, arg, c)
    return False
