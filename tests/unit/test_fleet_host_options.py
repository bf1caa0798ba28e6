"""The host-side options and keys of a fleet, in process: --bind, --soak, the watched range.

Invariants:
- ``--bind NAME=HOST:PORT`` changes only the socket address of that listener; bad values and
  unknown listener names are refused naming what is wrong;
- the range a host watches holds desired and every per-host target, nothing else of the fleet;
- a host report written before the ready/following/error fields existed still decodes.
"""

from __future__ import annotations

import pytest

from pavis.cli.fleet import _duration
from pavis.compiler import compile_text
from pavis.errors import PavisError, UsageError
from pavis.fleet import layout
from pavis.fleet.layout import HostReport, Keys
from pavis.supervisor.fleet_host import parse_binds, with_binds
from pavis.supervisor.sockets import listener_key

CONFIG = """version: 1
listeners:
  - {name: public, address: "0.0.0.0:80"}
  - {name: other, address: "127.0.0.1:81"}
virtual_hosts:
  - {name: main, domains: ["*"], routes: [{name: r, match: {prefix: /}, direct: {status: 200}}]}
"""


def test_bind_overrides_one_listener_address_only() -> None:
    model = compile_text(CONFIG, "yaml").model
    binds = parse_binds(["public=127.0.0.1:9080", "other=[::1]:9081"])
    assert binds == {"public": "127.0.0.1:9080", "other": "[::1]:9081"}
    bound = with_binds(model, binds)
    addresses = {lst.name: (lst.host, lst.port) for lst in bound.listeners}
    assert addresses == {"public": ("127.0.0.1", 9080), "other": ("::1", 9081)}
    # The model itself is untouched: reload checks compare the artifact's own listeners.
    assert listener_key(model) == listener_key(compile_text(CONFIG, "yaml").model)
    assert with_binds(model, {}) == model


@pytest.mark.parametrize(
    "value", ["public", "public=", "=1.2.3.4:80", "public=host", "public=h:0", "public=h:70000"]
)
def test_bad_bind_values_are_refused(value: str) -> None:
    with pytest.raises(UsageError, match="--bind"):
        parse_binds([value])


def test_bind_twice_and_unknown_listener_are_refused() -> None:
    with pytest.raises(UsageError, match="twice"):
        parse_binds(["public=h:1", "public=h:2"])
    with pytest.raises(PavisError, match="no such listener.*other, public"):
        with_binds(compile_text(CONFIG, "yaml").model, {"nope": "h:1"})


def test_soak_durations() -> None:
    assert _duration("30s", "--soak") == 30
    assert _duration("500ms", "--soak") == 0.5
    assert _duration("2m", "--soak") == 120
    assert _duration("1.5", "--soak") == 1.5
    for bad in ("", "x", "-1s", "3h"):
        with pytest.raises(UsageError, match="--soak"):
            _duration(bad, "--soak")


def test_the_watched_range_is_desired_and_the_per_host_targets() -> None:
    keys = Keys("edge")
    inside = [keys.desired, keys.target("h1"), keys.target("zz-9")]
    outside = [keys.host("h1"), keys.manifest("0" * 32), keys.history_entry(3), "/pavis/edge0"]
    for k in inside:
        assert keys.desired <= k < keys.follow_end, k
    for k in outside:
        assert not keys.desired <= k < keys.follow_end, k


def test_a_report_without_the_newer_fields_still_decodes() -> None:
    old = (
        b'{"host_id":"h1","pid":1,"generation":1,"checksum":"' + b"a" * 32 + b'","workers":[],'
        b'"applied_at":1.0,"rejection":null,"binds":{}}'
    )
    r = layout.decode(HostReport, "/pavis/edge/hosts/h1", old)
    assert (r.ready, r.following, r.error) == (True, "desired", "")
