"""Fixtures of the end-to-end tests: test upstreams, forked children, a supervisor.

Owns: starting and stopping the test upstream (``tests/upstream.py``) and ``pavis serve``
(``helpers_proc.Serve``), each stopped by pid at teardown, and reaping the children a test
forks. Topic-specific harnesses live in ``tests/e2e/helpers_*.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers_proc import Serve
from tests.helpers import kill_and_reap
from tests.upstream import Upstream, launch


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
