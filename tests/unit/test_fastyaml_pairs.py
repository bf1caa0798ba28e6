"""The fast path's search for syntax pairs agrees with its definition, ``_SYNTAX_PAIRS``.

``fastyaml._has_syntax_pair`` looks for every pair at once (bit tables over the text as one
integer); a pair it missed would let a document PyYAML reads differently through the fast
path. Checked against one substring search per pair on every string of up to five classes
(each pair at every position, next to every neighbour and at both ends) and on a real table.
"""

from __future__ import annotations

import itertools

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
