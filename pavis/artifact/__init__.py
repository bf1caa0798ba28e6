"""The sealed `.pvs` artifact: header layout, seal (Validated → bytes), read (bytes → Model),
read_head (bytes → what a supervisor keeps).

Owns: the 64-byte header, the checksum, and the verification order
(size, header, checksum, decode: the cheapest check first, nothing decoded unverified). Must not: compile, validate or interpret the model.
Any failure raises ``ArtifactError`` with a stable ``reason``; nothing else escapes.
"""

from pavis.artifact.format import (
    ALG_XXH3_128,
    HEADER_SIZE,
    MAGIC,
    Header,
    checksum_hex,
    decode_model,
    is_artifact,
    read,
    read_file,
    read_header,
    verify,
)
from pavis.artifact.head import Head, head_of, read_head
from pavis.artifact.lazy import LazyModel, LazyRoutes, read_lazy
from pavis.artifact.writer import seal

__all__ = [
    "ALG_XXH3_128",
    "HEADER_SIZE",
    "MAGIC",
    "Head",
    "Header",
    "LazyModel",
    "LazyRoutes",
    "checksum_hex",
    "decode_model",
    "head_of",
    "is_artifact",
    "read",
    "read_file",
    "read_head",
    "read_header",
    "read_lazy",
    "seal",
    "verify",
]
