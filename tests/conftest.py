"""What every test gets: its set (unit or e2e) from its folder, unique shm names, a leak check.

Owns: marking each test ``unit`` or ``e2e`` by the folder it is in (``pytest -m unit`` is the
in-process floor, ``pytest -m e2e`` the tests with real processes and sockets; either alone
skips importing the other folder), refusing a test outside both folders or marked against
its folder, naming shm instances uniquely per test (and a Publisher on that name), and
failing a test that leaves shm objects of this run behind.
Process fixtures live in ``tests/e2e/conftest.py``; the in-process guard of the unit set in
``tests/unit/conftest.py``; helpers shared with the benchmarks in ``tests/helpers.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shm import Publisher
from tests.helpers import SHM, remove_instance, unique_instance

HERE = Path(__file__).resolve().parent
SETS = ("unit", "e2e")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``-m unit`` (or ``-m e2e``) alone does not even import the other set's modules."""
    markexpr = config.getoption("markexpr", "")
    if markexpr in SETS and collection_path == HERE / SETS[1 - SETS.index(markexpr)]:
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    misplaced = []
    for item in items:
        try:
            folder = item.path.resolve().relative_to(HERE).parts[0]
        except ValueError:
            continue  # not a test of this tree (e.g. a path given on the command line)
        if folder not in SETS:
            misplaced.append(f"{item.nodeid}: tests live in tests/unit/ or tests/e2e/")
            continue
        other = SETS[1 - SETS.index(folder)]
        if item.get_closest_marker(other) is not None:
            misplaced.append(f"{item.nodeid}: marked {other} but in tests/{folder}/")
            continue
        item.add_marker(getattr(pytest.mark, folder))
    if misplaced:
        raise pytest.UsageError("misplaced tests:\n  " + "\n  ".join(misplaced))


def _own_segments() -> set[str]:
    prefix = f"pavis.t{os.getpid()}x"
    try:
        return {n for n in os.listdir(SHM) if n.startswith(prefix)}
    except FileNotFoundError:
        return set()


@pytest.fixture(autouse=True)
def no_leaked_segments() -> Iterator[None]:
    """Every shm segment a test creates under this run's prefix is gone when it ends."""
    before = _own_segments()
    yield
    leaked = _own_segments() - before
    for n in leaked:
        os.unlink(os.path.join(SHM, n))
    assert not leaked, f"test left shared-memory objects behind: {sorted(leaked)}"


@pytest.fixture
def instance_name() -> str:
    return unique_instance()


@pytest.fixture
def name() -> Iterator[str]:
    """A unique shm instance name; its leftovers (and its "<name>b" neighbour's, for the
    prefix test) are unlinked at teardown."""
    instance = unique_instance()
    yield instance
    remove_instance(instance, f"{instance}b")


@pytest.fixture
def pub(name: str) -> Iterator[Publisher]:
    """A shm Publisher of four slots on the test's unique instance name."""
    with Publisher(name, slots=4) as p:
        yield p
