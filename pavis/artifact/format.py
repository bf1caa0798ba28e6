"""Header layout and verification of `.pvs` artifacts: the reader (``writer`` seals).

Header (64 bytes, little-endian)::

    0  4s   magic "PAVS"
    4  H    format version (== schema.FORMAT_VERSION)
    6  H    flags (none defined: must be 0)
    8  B    checksum algorithm id (1 = xxh3-128)
    9  7s   reserved, zero
    16 Q    payload length
    24 16s  xxh3-128 digest of the payload (big-endian digest bytes, as xxhash gives them)
    40 24s  reserved, zero

The payload is the msgpack encoding of ``schema.Model``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import msgspec
import xxhash

from pavis.errors import ArtifactError
from pavis.schema import FORMAT_VERSION, MODEL_DECODER, Model

MAGIC = b"PAVS"
ALG_XXH3_128 = 1
HEADER_SIZE = 64
_HEADER = struct.Struct("<4sHHB7sQ16s24s")
assert _HEADER.size == HEADER_SIZE
_ZERO7 = bytes(7)
_ZERO24 = bytes(24)


def is_artifact(data: bytes | memoryview) -> bool:
    """Whether ``data`` is meant as an artifact (it starts with the magic) rather than a
    configuration: how every command and the supervisor tell the two apart. Says nothing of
    its integrity (``verify``)."""
    return bytes(data[: len(MAGIC)]) == MAGIC


@dataclass(frozen=True)
class Header:
    format_version: int
    flags: int
    algorithm: int
    payload_length: int
    digest: bytes

    @property
    def checksum(self) -> str:
        return checksum_hex(self.digest)


def checksum_hex(digest: bytes) -> str:
    """The artifact's identity as printed everywhere: 32 lower-case hex digits."""
    return digest.hex()


def read_header(data: bytes | memoryview) -> Header:
    """Check size and header fields (not the checksum)."""
    if len(data) < HEADER_SIZE:
        raise ArtifactError("truncated", f"{len(data)} bytes is shorter than the header")
    magic, version, flags, alg, res1, length, digest, res2 = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise ArtifactError("bad_magic", f"magic {bytes(magic)!r} is not {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            "unsupported_version",
            f"format version {version}; this build reads only version {FORMAT_VERSION}",
        )
    if flags != 0:
        raise ArtifactError("flags_unknown", f"unknown flags 0x{flags:04x}")
    if alg != ALG_XXH3_128:
        raise ArtifactError("bad_algorithm", f"unknown checksum algorithm id {alg}")
    if res1 != _ZERO7 or res2 != _ZERO24:
        raise ArtifactError("reserved_nonzero", "reserved header bytes are not zero")
    actual = len(data) - HEADER_SIZE
    if actual < length:
        raise ArtifactError("truncated", f"payload is {actual} bytes, header says {length}")
    if actual > length:
        raise ArtifactError(
            "length_mismatch", f"{actual - length} trailing bytes after the payload"
        )
    return Header(version, flags, alg, length, bytes(digest))


def verify(data: bytes | memoryview) -> Header:
    """Size, header and checksum; no decode. Returns the header."""
    header = read_header(data)
    payload = memoryview(data)[HEADER_SIZE:]
    if xxhash.xxh3_128_digest(payload) != header.digest:
        raise ArtifactError("checksum_mismatch", "payload does not match its xxh3-128 checksum")
    return header


def decode_model(payload: bytes | memoryview) -> Model:
    """Decode a payload already verified by checksum."""
    try:
        model = MODEL_DECODER.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ArtifactError(
            "decode_failed", f"payload does not decode to the model: {exc}"
        ) from None
    return model


def read(data: bytes | memoryview) -> tuple[Header, Model]:
    """Full verification in order, cheapest first: size, header, checksum, decode."""
    header = verify(data)
    return header, decode_model(memoryview(data)[HEADER_SIZE:])


def read_file(path: str | Path) -> tuple[Header, Model]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ArtifactError("unreadable", f"cannot read {path}: {exc.strerror}") from None
    return read(data)
