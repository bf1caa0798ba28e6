"""The store's atomic write under a writer killed at any point: the old file or the new one, never a mix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pavis.store import Store, atomic_write


def test_atomic_write_leaves_old_or_new_only(tmp_path: Path) -> None:
    """A writer killed at random points never leaves a torn file or stray temp files behind
    once the store is reopened."""
    target = tmp_path / "last-known-good"
    atomic_write(target, b"old\n")
    script = (
        "import sys; from pathlib import Path; from pavis.store import atomic_write\n"
        "p = Path(sys.argv[1])\n"
        "while True: atomic_write(p, b'new' * 100000)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)])
    try:
        seen = set()
        for _ in range(200):
            seen.add(len(target.read_bytes()))
    finally:
        proc.kill()
        proc.wait()
    assert seen <= {4, 300000}
    Store(tmp_path)  # reopening clears temp leftovers of the killed writer
    assert not list(tmp_path.glob(".*.tmp"))
    assert os.path.getsize(target) in (4, 300000)
