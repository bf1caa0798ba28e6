"""pavis.wire (the control protocol's JSON through ``_json``) agrees with the json package."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pavis import wire

scalars = st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False, allow_infinity=False)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(values)
def test_both_directions_agree_with_json(value: object) -> None:
    assert json.loads(wire.dumps(value)) == value
    assert wire.loads(json.dumps(value)) == value
    assert wire.loads(" \n" + json.dumps(value, indent=2) + "\n ") == value


@pytest.mark.parametrize("text", ["", "   ", "{", "{} x", "[1,]", "NaN", "Infinity", "'a'", "{\"a\" 1}"])
def test_what_is_not_one_json_value_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        wire.loads(text)


def test_what_json_cannot_carry_is_refused() -> None:
    with pytest.raises(TypeError):
        wire.dumps({"a": object()})
    with pytest.raises(ValueError):
        wire.dumps(math.nan)
    assert wire.dumps({"é": "\n"}) == '{"\\u00e9":"\\n"}'  # ASCII on the wire
