"""What to serve: a config path (compiled and sealed here) or an artifact path (verified).

Owns: telling the two apart by the artifact magic and turning either into artifact bytes.
Must not: publish or store anything. The compiler is imported only when a config is given.
"""

from __future__ import annotations

from pathlib import Path

from pavis.artifact import MAGIC, seal, verify
from pavis.errors import PavisError


def load(path: str) -> bytes:
    """A config (compiled and sealed here) or an artifact (verified), as artifact bytes."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(len(MAGIC))
    except OSError as exc:
        raise PavisError(f"cannot read {path}: {exc.strerror}") from None
    if head == MAGIC:
        data = p.read_bytes()
        verify(data)
        return data
    from pavis.compiler import compile_path  # only configs need the compiler

    return seal(compile_path(p))
