"""workers.relay's framing states, in-process: how a relayed response's body is delimited."""

from __future__ import annotations

import pytest

from tests.unit.routes_inprocess import request
from workers.relay import (
    CHUNKED,
    LENGTH,
    NO_BODY,
    TUNNEL,
    UNTIL_CLOSE,
    chunk,
    first_piece,
    framing_field,
    framing_state,
)


@pytest.mark.parametrize(
    ("status", "head_only", "length", "http10", "state"),
    [
        (200, False, 5, False, LENGTH),
        (200, False, 0, True, LENGTH),
        (200, False, -1, False, CHUNKED),  # no length from the upstream: re-chunked
        (200, False, -1, True, UNTIL_CLOSE),  # HTTP/1.0 knows no chunks: until close
        (200, True, -1, False, NO_BODY),  # HEAD
        (204, False, -1, False, NO_BODY),
        (304, False, 7, False, NO_BODY),
        (103, False, -1, False, NO_BODY),
        (101, False, -1, False, TUNNEL),
        (101, True, 0, False, TUNNEL),  # a 101 is a tunnel whatever the method
    ],
)
def test_framing_state(status: int, head_only: bool, length: int, http10: bool, state: int):
    assert framing_state(status, head_only, length, http10) == state


def test_the_states_are_distinct():
    assert len({NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE, TUNNEL}) == 5


def test_framing_fields():
    assert framing_field(LENGTH, 12, b"") == b"Content-Length: 12\r\n"
    assert framing_field(CHUNKED, -1, b"") == b"Transfer-Encoding: chunked\r\n"
    assert (
        framing_field(TUNNEL, -1, b"websocket") == b"Connection: upgrade\r\nUpgrade: websocket\r\n"
    )
    assert framing_field(NO_BODY, 12, b"") == framing_field(UNTIL_CLOSE, -1, b"") == b""


def test_chunks_and_the_start_of_a_streamed_upload():
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    chunked = request(b"POST", b"/", (b"Host", b"h"))
    chunked.chunked = True
    assert first_piece(chunked, b"abc") == b"3\r\nabc\r\n"
    assert first_piece(chunked, b"") == b""  # never an empty chunk: it would end the body
    plain = request(b"POST", b"/", (b"Host", b"h"))
    assert first_piece(plain, b"abc") == b"abc"
