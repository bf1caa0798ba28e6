"""One config gives one artifact in another interpreter too, whatever its hash seed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pavis.artifact import seal
from pavis.compiler import compile_path

FULL = Path(__file__).resolve().parents[2] / "examples" / "full.yaml"


def test_another_process_with_another_hash_seed_gives_identical_bytes() -> None:
    here = seal(compile_path(FULL))
    script = (
        "import sys\n"
        "from pavis.artifact import seal\n"
        "from pavis.compiler import compile_path\n"
        "sys.stdout.buffer.write(seal(compile_path(sys.argv[1])))\n"
    )
    for seed in ("1", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", script, str(FULL)], env=env, capture_output=True, check=True
        )
        assert out.stdout == here
