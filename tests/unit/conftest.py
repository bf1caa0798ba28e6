"""The unit set stays in-process: no child process, no network socket.

Owns: a guard around every unit test that fails it, naming what it did, when it starts a
process (``subprocess``, ``os.fork``, ``os.posix_spawn``) or binds or connects an IPv4/IPv6
socket; such a test belongs in ``tests/e2e/``. Unix-domain sockets (socketpairs, the
``sd_notify`` datagram) are in-process and allowed.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

MOVE = "unit tests stay in-process; a test that needs this belongs in tests/e2e/"


def _refuse(what: str) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{what}: {MOVE}")

    return refused


def _inet_only(method: str) -> Callable[..., Any]:
    original = getattr(socket.socket, method)

    def guarded(self: socket.socket, *args: Any, **kwargs: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"socket.{method} on {self.family.name}: {MOVE}")
        return original(self, *args, **kwargs)

    return guarded


@pytest.fixture(autouse=True)
def in_process_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess.Popen, "_execute_child", _refuse("a subprocess"))
    for call in ("fork", "forkpty", "posix_spawn", "posix_spawnp"):
        if hasattr(os, call):
            monkeypatch.setattr(os, call, _refuse(f"os.{call}"))
    for method in ("bind", "connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, method, _inet_only(method))
