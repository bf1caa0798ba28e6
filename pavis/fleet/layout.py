"""The fleet's key layout in etcd and the encoding of every value stored there.

Owns: the key names under ``/pavis/<fleet>/`` and pure encode/decode functions for each value.
etcd contents are untrusted input: every decoder rejects a malformed value with a
``FleetError`` naming the key, and artifact bytes are verified elsewhere (``pavis.fleet.store``)
before anything uses them.
Must not: talk to etcd, or interpret artifact bytes (they are opaque here).

Layout (docs/FLEET.md), format ``FORMAT``::

    /pavis/<fleet>/artifacts/<checksum>/manifest   JSON Manifest
    /pavis/<fleet>/artifacts/<checksum>/<n>        chunk n (0-based) of the bytes, zlib-compressed
    /pavis/<fleet>/desired                         JSON Desired
    /pavis/<fleet>/desired/<host-id>               JSON Desired: a canary's own target (leased)
    /pavis/<fleet>/hosts/<host-id>                 JSON HostReport, bound to the host's lease
    /pavis/<fleet>/history/<generation:012d>       JSON HistoryEntry, the last HISTORY_LIMIT
"""

from __future__ import annotations

import re
import zlib
from typing import Literal, TypeVar

import msgspec
import xxhash

from pavis.errors import FleetError

ROOT = "/pavis/"
# One chunk stays well under etcd's default request limit (--max-request-bytes, 1.5 MiB).
CHUNK_SIZE = 1 << 20
# Bounds what a manifest read from etcd may claim (4 GiB of 1 MiB chunks): etcd's own
# backend quota (2 GiB by default) is reached long before.
MAX_CHUNKS = 4096
HISTORY_LIMIT = 50
# The artifact storage format. 1 (the first): raw chunks; 2: each chunk zlib-compressed on its
# own (a 10k-route artifact shrinks ~6x, and every host reads it through etcd's JSON gateway).
FORMAT = 2
ZLIB_LEVEL = 1  # nearly the ratio of level 6 at a fifth of the time
_GEN_DIGITS = 12

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_CHECKSUM = re.compile(r"^[0-9a-f]{32}$")


# --------------------------------------------------------------------------- keys


def check_name(kind: str, value: str) -> str:
    """A fleet name or host id: 1-63 of ``[A-Za-z0-9._-]``, starting alphanumeric."""
    if not _NAME.match(value):
        raise FleetError(
            "bad_name",
            f"{kind} {value!r} must be 1-63 characters of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit",
        )
    return value


def check_checksum(value: str) -> str:
    if not _CHECKSUM.match(value):
        raise FleetError("bad_checksum", f"{value!r} is not a checksum (32 lower-case hex digits)")
    return value


class Keys:
    """Every key of one fleet."""

    def __init__(self, fleet: str) -> None:
        self.fleet = check_name("fleet name", fleet)
        self.prefix = f"{ROOT}{fleet}/"
        self.desired = f"{self.prefix}desired"
        self.hosts = f"{self.prefix}hosts/"
        self.history = f"{self.prefix}history/"
        self.artifacts = f"{self.prefix}artifacts/"

    def artifact(self, checksum: str) -> str:
        """The prefix of every key of one artifact."""
        return f"{self.artifacts}{check_checksum(checksum)}/"

    def manifest(self, checksum: str) -> str:
        return f"{self.artifact(checksum)}manifest"

    def chunk(self, checksum: str, n: int) -> str:
        return f"{self.artifact(checksum)}{n}"

    def target(self, host_id: str) -> str:
        """One host's own target during a canary; it overrides desired for that host."""
        return f"{self.desired}/{check_name('host id', host_id)}"

    @property
    def follow_end(self) -> str:
        """End of the range a host watches: desired and every ``desired/<host-id>``."""
        return f"{self.desired}0"  # '0' follows '/': the range is desired, desired/...

    def host(self, host_id: str) -> str:
        return f"{self.hosts}{check_name('host id', host_id)}"

    def history_entry(self, generation: int) -> str:
        return f"{self.history}{generation:0{_GEN_DIGITS}d}"


# --------------------------------------------------------------------------- values


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """How an artifact is split: its identity, total size, chunk count and a digest per chunk.
    ``size`` and ``chunk_size`` count the artifact's bytes; each stored chunk is that slice
    compressed, and ``chunk_xxh3_64`` are digests of the chunks as stored."""

    checksum: str  # the artifact's own checksum (xxh3-128 of its payload, from its header)
    size: int
    chunk_size: int
    chunks: int
    xxh3_128: str  # of the whole artifact bytes, header included
    chunk_xxh3_64: list[str]
    format: int = 1  # absent in manifests written by the first format


class Desired(msgspec.Struct, frozen=True, kw_only=True):
    """The artifact every host of the fleet should serve."""

    checksum: str
    generation: int
    time: float
    source: str
    publisher: str


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    checksum: str
    generation: int
    time: float
    source: str
    publisher: str
    action: Literal["publish", "rollback"]


class WorkerState(msgspec.Struct, frozen=True, kw_only=True):
    pid: int
    generation: int
    checksum: str


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    checksum: str
    reason: str
    time: float


class HostReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one host serves, written by its supervisor under its own lease."""

    host_id: str
    pid: int
    generation: int
    checksum: str
    workers: list[WorkerState]
    applied_at: float
    rejection: Rejection | None
    binds: dict[str, str]
    # Every worker slot has a live worker on the current generation (the admin /ready).
    ready: bool = True
    # What the host follows: "desired", or "canary" while a per-host target overrides it.
    following: str = "desired"
    # The host's last problem with etcd's contents (a malformed desired...), "" if none.
    error: str = ""

    def serving(self) -> set[str]:
        """Every checksum this host serves: the supervisor's and each worker's."""
        return {self.checksum, *(w.checksum for w in self.workers)}

    def on(self, checksum: str) -> bool:
        return self.serving() == {checksum}


_Value = TypeVar("_Value", Manifest, Desired, HistoryEntry, HostReport)
_ENCODER = msgspec.json.Encoder()
_DECODERS: dict[type, msgspec.json.Decoder[object]] = {
    t: msgspec.json.Decoder(t) for t in (Manifest, Desired, HistoryEntry, HostReport)
}


def encode(value: Manifest | Desired | HistoryEntry | HostReport) -> bytes:
    return _ENCODER.encode(value)


def decode(kind: type[_Value], key: str, data: bytes) -> _Value:
    """Decode the value stored at ``key``; anything malformed names the key."""
    try:
        value = _DECODERS[kind].decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise FleetError(
            "malformed", f"etcd key {key}: not a valid {kind.__name__}: {exc}"
        ) from None
    assert isinstance(value, kind)
    if isinstance(value, Manifest) and value.format != FORMAT:
        raise FleetError(
            "layout_format",
            f"etcd key {key}: artifact stored in layout format {value.format}, this pavis reads "
            f"format {FORMAT} (format 1 is an older pavis's): publish the artifact again",
        )
    problem = _check(value)
    if problem:
        raise FleetError("malformed", f"etcd key {key}: {problem}")
    return value


def _check(value: Manifest | Desired | HistoryEntry | HostReport) -> str:
    checksums = [value.checksum]
    if isinstance(value, HostReport):
        checksums += [w.checksum for w in value.workers]
        if value.rejection is not None:
            checksums.append(value.rejection.checksum)
    for c in checksums:
        if not _CHECKSUM.match(c):
            return f"checksum {c!r} is not 32 lower-case hex digits"
    if isinstance(value, HostReport) and not _NAME.match(value.host_id):
        return f"host_id {value.host_id!r} is not a valid host id"
    if isinstance(value, Desired | HistoryEntry) and value.generation < 1:
        return f"generation {value.generation} is not positive"
    if isinstance(value, Manifest):
        return _check_manifest(value)
    return ""


def _check_manifest(m: Manifest) -> str:
    if not 0 < m.chunk_size <= 4 * CHUNK_SIZE:
        return f"chunk_size {m.chunk_size} is out of range"
    if not 0 < m.chunks <= MAX_CHUNKS:
        return f"chunks {m.chunks} is out of range (1..{MAX_CHUNKS})"
    if not (m.chunks - 1) * m.chunk_size < m.size <= m.chunks * m.chunk_size:
        return f"size {m.size} does not fit {m.chunks} chunks of {m.chunk_size} bytes"
    if len(m.chunk_xxh3_64) != m.chunks:
        return f"{len(m.chunk_xxh3_64)} chunk digests for {m.chunks} chunks"
    if not re.fullmatch(r"[0-9a-f]{32}", m.xxh3_128) or not all(
        re.fullmatch(r"[0-9a-f]{16}", d) for d in m.chunk_xxh3_64
    ):
        return "digests are not lower-case hex of the right length"
    return ""


# --------------------------------------------------------------------------- artifacts


def split(checksum: str, data: bytes, chunk_size: int = CHUNK_SIZE) -> tuple[Manifest, list[bytes]]:
    """Cut sealed bytes into chunks, compress each and describe them; the bytes are not
    interpreted. Returns the manifest and the chunks as stored."""
    raw = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]
    stored = [zlib.compress(c, ZLIB_LEVEL) for c in raw]
    manifest = Manifest(
        checksum=check_checksum(checksum),
        size=len(data),
        chunk_size=chunk_size,
        chunks=len(raw),
        xxh3_128=xxhash.xxh3_128_hexdigest(data),
        chunk_xxh3_64=[xxhash.xxh3_64_hexdigest(c) for c in stored],
        format=FORMAT,
    )
    return manifest, stored


def check_chunk(manifest: Manifest, key: str, n: int, stored: bytes) -> bytes:
    """One chunk as read from etcd: its digest must be the one the manifest lists, and it must
    expand to exactly the size the manifest implies (never more: the expansion is bounded).
    Returns the chunk's artifact bytes."""
    if xxhash.xxh3_64_hexdigest(stored) != manifest.chunk_xxh3_64[n]:
        raise FleetError(
            "chunk_checksum_mismatch", f"etcd key {key}: chunk does not match its xxh3-64 digest"
        )
    expected = (
        manifest.chunk_size if n < manifest.chunks - 1 else manifest.size - n * manifest.chunk_size
    )
    inflate = zlib.decompressobj()
    try:
        data = inflate.decompress(stored, expected + 1)
    except zlib.error as exc:
        raise FleetError(
            "chunk_corrupt", f"etcd key {key}: chunk does not inflate: {exc}"
        ) from None
    if len(data) != expected or not inflate.eof or inflate.unused_data:
        raise FleetError(
            "chunk_size_mismatch",
            f"etcd key {key}: chunk inflates to {len(data)}{'+' if not inflate.eof else ''} "
            f"bytes, manifest says {expected}",
        )
    return data


def join(manifest: Manifest, key: str, chunks: list[bytes]) -> bytes:
    """The artifact from its chunks' bytes (as ``check_chunk`` returned them)."""
    data = b"".join(chunks)
    if len(data) != manifest.size or xxhash.xxh3_128_hexdigest(data) != manifest.xxh3_128:
        raise FleetError(
            "artifact_mismatch", f"etcd key {key}: reassembled bytes do not match the manifest"
        )
    return data
