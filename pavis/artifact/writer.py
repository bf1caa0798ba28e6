"""Sealing: a validated model into a complete `.pvs` artifact (header + payload).

Owns: ``seal``. Kept apart from the reader (``format``, ``lazy``) so that the runtime, which
only reads artifacts, cannot reach it (an import-linter contract in setup.cfg).
"""

from __future__ import annotations

import xxhash

# The header layout is the reader's (``format``); only sealing lives here.
from pavis.artifact.format import _HEADER, _ZERO7, _ZERO24, ALG_XXH3_128, MAGIC
from pavis.schema import FORMAT_VERSION, MODEL_ENCODER, Validated


def seal(validated: Validated) -> bytes:
    """Encode a validated model into a complete artifact (header + payload)."""
    if not isinstance(validated, Validated):
        raise TypeError("seal() accepts only a Validated model")
    payload = MODEL_ENCODER.encode(validated.model)
    digest = xxhash.xxh3_128_digest(payload)
    header = _HEADER.pack(
        MAGIC, FORMAT_VERSION, 0, ALG_XXH3_128, _ZERO7, len(payload), digest, _ZERO24
    )
    return header + payload
