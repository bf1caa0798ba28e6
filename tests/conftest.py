"""Fixtures every end-to-end test needs: free ports, unique shm names, test upstreams.

Owns: starting and stopping the test upstream (``tests/upstream.py``) by pid and naming shm
instances uniquely per test. Topic-specific helpers live in ``tests/helpers_*.py``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadtest.servers import kill_and_reap
from tests.helpers_proc import Serve
from tests.upstream import Upstream, launch


def unique_instance() -> str:
    """A shm instance name no other test run uses (segments are /pavis.<name>.<gen>)."""
    return f"t{os.getpid()}x{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def instance_name() -> str:
    return unique_instance()


@pytest.fixture
def upstreams() -> Iterator[Callable[..., Upstream]]:
    """Factory: ``upstreams("a")`` starts a test upstream named ``a``; all stop at teardown."""
    started: list[Upstream] = []

    def start(name: str = "up", workers: int = 1) -> Upstream:
        up = launch(name, workers=workers)
        started.append(up)
        return up

    yield start
    for up in started:
        up.stop()


@pytest.fixture
def upstream(upstreams: Callable[..., Upstream]) -> Upstream:
    """One test upstream named ``up``."""
    return upstreams("up")


@pytest.fixture(scope="module")
def ups() -> Iterator[tuple[Upstream, Upstream]]:
    """Two test upstreams, ``a`` and ``b``, shared by a module's tests."""
    a, b = launch("a"), launch("b")
    yield a, b
    a.stop()
    b.stop()


def _own_segments() -> set[str]:
    prefix = f"pavis.t{os.getpid()}x"
    try:
        return {n for n in os.listdir("/dev/shm") if n.startswith(prefix)}
    except FileNotFoundError:
        return set()


@pytest.fixture(autouse=True)
def no_leaked_segments() -> Iterator[None]:
    """Every shm segment a test creates under this run's prefix is gone when it ends."""
    before = _own_segments()
    yield
    leaked = _own_segments() - before
    for n in leaked:
        os.unlink(os.path.join("/dev/shm", n))
    assert not leaked, f"test left shared-memory objects behind: {sorted(leaked)}"


@pytest.fixture
def name() -> Iterator[str]:
    """A unique shm instance name; its leftovers (and its "<name>b" neighbour's, for the
    prefix test) are unlinked at teardown."""
    from tests.helpers_shm import remove_instance

    instance = unique_instance()
    yield instance
    remove_instance(instance, f"{instance}b")


@pytest.fixture
def procs() -> Iterator[list[int]]:
    """Pids to SIGKILL and reap at the end of the test (children, or orphans adopted)."""
    pids: list[int] = []
    yield pids
    kill_and_reap(pids)


@pytest.fixture
def sv(tmp_path: Path) -> Iterator[Serve]:
    """A supervisor of one worker that the test starts; stopped and cleaned up afterwards."""
    s = Serve(tmp_path, workers=1)
    yield s
    s.cleanup()
