"""The control protocol: framing, refusals and exit codes, socket mode, stale sockets."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from pavis.control_client import exchange, request
from pavis.errors import ControlError, PavisError, UnreachableError, UsageError, WaitTimeout
from pavis.supervisor.control import ControlServer, Respond, refusal


def _handler(req: dict[str, Any], respond: Respond) -> None:
    op = req["op"]
    if op == "echo":
        respond({"ok": True, "echo": req.get("value")})
    elif op == "slow-timeout":
        respond(refusal("timeout", "workers did not acknowledge", 4))
    elif op == "raise":
        raise PavisError("refused on purpose")
    elif op == "bug":
        raise RuntimeError("boom")
    elif op == "silent":
        return
    else:
        respond(refusal("usage", f"unknown op {op!r}", 2))


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    srv = ControlServer(str(tmp_path / "run" / "control.sock"), _handler)
    srv.start()
    yield srv
    srv.close()


def test_roundtrip_and_mode(server: ControlServer) -> None:
    assert request(server.path, {"op": "echo", "value": [1, "x"]}) == {"ok": True, "echo": [1, "x"]}
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600


def test_refusals_map_to_exit_codes(server: ControlServer) -> None:
    with pytest.raises(WaitTimeout) as t:
        request(server.path, {"op": "slow-timeout"})
    assert t.value.exit_code == 4
    with pytest.raises(UsageError):
        request(server.path, {"op": "nope"})
    with pytest.raises(ControlError, match="refused on purpose"):
        request(server.path, {"op": "raise"})
    answer = exchange(server.path, {"op": "bug"}, 5)
    assert answer["ok"] is False and answer["error"] == "internal"
    assert exchange(server.path, {"op": "silent"}, 5)["ok"] is False


def test_malformed_request_is_a_usage_error(server: ControlServer) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(server.path)
        s.sendall(b"not json\n")
        assert b'"exit_code": 2' in s.recv(4096)


def test_unreachable(tmp_path: Path) -> None:
    with pytest.raises(UnreachableError) as exc:
        request(str(tmp_path / "none.sock"), {"op": "status"})
    assert exc.value.exit_code == 3
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()  # bound, never listened: connection refused
    with pytest.raises(UnreachableError):
        request(str(stale), {"op": "status"})


def test_stale_socket_is_replaced_but_live_one_is_not(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()
    srv = ControlServer(path, _handler)
    srv.start()
    try:
        with pytest.raises(PavisError, match="in use"):
            ControlServer(path, _handler)
        assert request(path, {"op": "echo", "value": 1})["echo"] == 1
    finally:
        srv.close()
    assert not os.path.exists(path)


def test_socket_in_a_new_directory_and_unusable_paths(tmp_path: Path) -> None:
    srv = ControlServer(str(tmp_path / "a" / "b" / "c.sock"), _handler)
    try:
        assert stat.S_IMODE(os.stat(tmp_path / "a" / "b").st_mode) & 0o700 == 0o700
    finally:
        srv.close()
    (tmp_path / "file").write_text("")
    with pytest.raises(PavisError, match="--control"):
        ControlServer(str(tmp_path / "file" / "c.sock"), _handler)
