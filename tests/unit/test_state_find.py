"""workers.state.State.find is pavis.lookup's matching, memoised only when headers cannot
change the answer; shm.board's views land on the control block's per-slot words."""

from __future__ import annotations

import mmap

from pavis import lookup
from shm import board, control
from tests.unit.routes_inprocess import request, state_of

ROUTES = """\
      - name: canary
        match: {prefix: /v1/, headers: [{name: x-canary, exact: "1"}]}
        direct: {status: 200, body: "canary"}
      - name: v1
        match: {prefix: /v1/}
        direct: {status: 200, body: "v1"}
      - name: other
        match: {prefix: /}
        direct: {status: 200, body: "other"}
"""


def test_find_agrees_with_lookup_and_never_memoises_a_header_dependent_answer():
    state = state_of(ROUTES)
    vh = state.vhost(b"example.com")
    plain = request(b"GET", b"/v1/a", (b"Host", b"example.com"))
    canary = request(b"GET", b"/v1/a", (b"Host", b"example.com"), (b"X-Canary", b"1"))
    index = state.vhosts[vh].index
    for req in (plain, canary, plain, canary):
        want = lookup.find_route(state.routes, index, "GET", req.path.decode(), req)
        assert state.find(vh, b"GET", req.path, req, req.query) == want
    assert state.route(state.find(vh, b"GET", b"/v1/a", canary, b"")).name == "canary"
    assert (vh, b"GET", b"/v1/a") not in state.route_cache  # a header matcher was examined
    assert state.route(state.find(vh, b"GET", b"/z", plain, b"")).name == "other"
    assert state.route_cache[(vh, b"GET", b"/z")] >= 0  # no header matcher on the way


def test_match_route_says_whether_headers_took_part():
    state = state_of(ROUTES)
    index = state.vhosts[0].index
    found, by_headers = lookup.match_route(state.routes, index, "GET", "/v1/a", {})
    assert state.route(found).name == "v1" and by_headers
    found, by_headers = lookup.match_route(state.routes, index, "GET", "/x", {})
    assert state.route(found).name == "other" and not by_headers


def test_the_load_board_is_the_control_blocks_per_slot_words():
    slots = 3
    ctl = mmap.mmap(-1, control.size(slots))
    control.init(ctl, slots, 0, 0)
    b = board.attach(ctl, 1, slots)
    assert b.slot == 1 and b.others == [0, 2]
    assert [b.counts[i] for i in range(slots)] == [board.NO_WORKER, 0, board.NO_WORKER]
    b.counts[1] = 5
    b.accepted[1] = 8
    assert control.read_conns(ctl, 1) == 5 and control.read_accepted(ctl, 1) == 8
    assert control.read_conns(ctl, 0) == control.read_conns(ctl, 2) == board.NO_WORKER
    b.release()
    ctl.close()  # the board held the only views: the mapping closes
