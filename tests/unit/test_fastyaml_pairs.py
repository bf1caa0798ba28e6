"""The fast path's whole-text scans agree with their line-by-line definitions.

``fastyaml._has_syntax_pair`` looks for every pair at once (bit tables over the text as one
integer) and ``fastyaml._flow_balanced`` balances brackets on all lines at once (replaces);
a case either missed would let a document PyYAML reads differently through the fast path.
The pairs are checked against one substring search per pair on every string of up to five
classes (each pair at every position, next to every neighbour and at both ends); the
balance against counting each line's brackets, on every short text of brackets and breaks.
"""

from __future__ import annotations

import itertools
import random

from pavis.compiler import fastyaml

_CLASSES = b"SCMOEQDNPx"  # every class of ``_CLASS_OF``


def _defined(classes: bytes) -> bool:
    return any(pair in classes for pair in fastyaml._SYNTAX_PAIRS)


def test_every_short_class_string_agrees_with_the_pairs() -> None:
    for length in range(6):
        for chars in itertools.product(_CLASSES, repeat=length):
            classes = bytes(chars)
            assert fastyaml._has_syntax_pair(classes) == _defined(classes), classes


def test_a_pair_is_found_anywhere_in_a_long_text() -> None:
    filler = b"xSxNxDxP" * 10_000
    assert not fastyaml._has_syntax_pair(filler)
    for pair in fastyaml._SYNTAX_PAIRS:
        for at in (0, len(filler) // 2, len(filler)):
            classes = filler[:at] + pair + filler[at:]
            assert fastyaml._has_syntax_pair(classes), (pair, at)


def test_pairs_in_yaml_text_send_it_to_pyyaml() -> None:
    assert fastyaml.plain("a: [b, c]\n")
    assert not fastyaml.plain("a: b ,c\n")  # a "," that ends no item: PyYAML's to judge
    assert not fastyaml.plain("a: -.5\n")  # a signed number written without its 0


def _balanced_by_lines(raw: bytes) -> bool:
    lines = raw.decode().splitlines()
    return all(ln.count("[") + ln.count("{") == ln.count("]") + ln.count("}") for ln in lines)


def test_flow_balance_agrees_with_counting_each_line() -> None:
    for length in range(7):
        for chars in itertools.product(b"[{]}\n\rx", repeat=length):
            raw = bytes(chars)
            assert fastyaml._flow_balanced(raw) == _balanced_by_lines(raw), raw
    rng = random.Random(14)
    for _ in range(2000):
        raw = bytes(rng.choice(b"[]{}\nx ") for _ in range(rng.randint(0, 60)))
        assert fastyaml._flow_balanced(raw) == _balanced_by_lines(raw), raw


def test_flow_nested_beyond_the_bound_goes_to_pyyaml() -> None:
    deep = b"[" * 100 + b"]" * 100
    assert _balanced_by_lines(deep) and not fastyaml._flow_balanced(deep)
    assert fastyaml._flow_balanced(b"{a: [b, {c: d}], e: f}\n[g]\n")
