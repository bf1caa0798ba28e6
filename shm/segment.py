"""One generation segment: create and fill it (supervisor), map and verify it (worker).

Layout (little-endian)::

    0  8s   magic b"PAVISSEG"
    8  I    layout version (1)
    12 I    reserved, zero
    16 Q    generation
    24 Q    data length
    32 16s  xxh3-128 digest of the data
    48 16s  reserved, zero
    64      data

Owns: that layout, exclusive creation with an explicit mode, the read-only mapping and its
verification. Must not: interpret the data (it is an opaque artifact to shm), or hand out a
mapping that failed verification.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct

import posix_ipc  # type: ignore[import-not-found]  # no stubs published
import xxhash

from shm import names
from shm.errors import ShmError

MAGIC = b"PAVISSEG"
VERSION = 1
HEADER = struct.Struct("<8sIIQQ16s16s")
HEADER_SIZE = HEADER.size
assert HEADER_SIZE == 64
_ZERO16 = bytes(16)


class Segment:
    """A verified, read-only mapping of one generation.

    ``data`` is a read-only memoryview of the published bytes (writing raises TypeError).
    Objects decoded lazily from ``data`` (e.g. ``msgspec.Raw``) pin the mapping; ``close()``
    then leaves the unmap to the last such reference instead of failing.
    """

    __slots__ = ("_map", "data", "digest", "generation", "name")

    def __init__(
        self, name: str, generation: int, mapping: mmap.mmap, length: int, digest: bytes
    ) -> None:
        self.name = name
        self.generation = generation
        self.digest = digest
        self._map = mapping
        self.data = memoryview(mapping)[HEADER_SIZE : HEADER_SIZE + length].toreadonly()

    def close(self) -> None:
        # Views into the mapping may still exist (e.g. msgspec.Raw): then the unmap happens
        # when the last of them goes, instead of failing here.
        with contextlib.suppress(BufferError):
            self.data.release()
        with contextlib.suppress(BufferError):
            self._map.close()

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Segment {self.name} generation={self.generation} bytes={len(self.data)}>"


def create(
    name: str, generation: int, data: bytes | memoryview, mode: int, gid: int | None
) -> bytes:
    """Create ``/pavis.<name>.<generation>`` exclusively, fill it, return the data digest.

    Raises posix_ipc.ExistentialError if the name exists (callers pick another generation).
    """
    digest = xxhash.xxh3_128_digest(data)
    mem = posix_ipc.SharedMemory(names.segment(name, generation), posix_ipc.O_CREX, mode=mode)
    try:
        _set_owner(mem.fd, mode, gid)
        # write(), not a mapping: a full /dev/shm is then ENOSPC (an OSError), not SIGBUS.
        _pwrite_all(mem.fd, data, HEADER_SIZE)
        # The header goes last: a half-filled segment never carries a valid magic.
        header = HEADER.pack(MAGIC, VERSION, 0, generation, len(data), digest, _ZERO16)
        _pwrite_all(mem.fd, header, 0)
    except BaseException:
        mem.close_fd()
        posix_ipc.unlink_shared_memory(mem.name)
        raise
    mem.close_fd()
    return digest


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    with memoryview(data) as view, view.cast("B") as rest:
        done = 0
        while done < len(rest):
            done += os.pwrite(fd, rest[done:], offset + done)


def open_verified(name: str, generation: int) -> Segment:
    """Map ``/pavis.<name>.<generation>`` read-only and verify it; ShmError(reason) if unusable."""
    path = names.segment(name, generation)
    try:
        mem = posix_ipc.SharedMemory(path, read_only=True)
    except posix_ipc.ExistentialError:
        raise ShmError("missing", f"{path} does not exist") from None
    except posix_ipc.PermissionsError:
        raise ShmError("permission", f"{path} is not readable by this user") from None
    try:
        size = mem.size
        if size < HEADER_SIZE:
            raise ShmError("truncated", f"{path} is {size} bytes, shorter than its header")
        mapping = mmap.mmap(mem.fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    finally:
        mem.close_fd()
    try:
        return _verify(path, generation, mapping, size)
    except BaseException:
        mapping.close()
        raise


def _verify(path: str, generation: int, mapping: mmap.mmap, size: int) -> Segment:
    magic, version, _res, gen, length, digest, _res2 = HEADER.unpack_from(mapping, 0)
    if magic != MAGIC:
        raise ShmError("bad_magic", f"{path} has no segment header (magic {magic!r})")
    if version != VERSION:
        raise ShmError("unsupported_version", f"{path} has layout version {version}")
    if gen != generation:
        raise ShmError("wrong_generation", f"{path} holds generation {gen}")
    if HEADER_SIZE + length != size:
        raise ShmError("truncated", f"{path} is {size} bytes; header says {HEADER_SIZE + length}")
    with memoryview(mapping) as whole, whole[HEADER_SIZE:size] as view:
        actual = xxhash.xxh3_128_digest(view)
    if actual != digest:
        raise ShmError("checksum_mismatch", f"{path} does not match its xxh3-128 checksum")
    return Segment(path, generation, mapping, length, bytes(digest))


def _set_owner(fd: int, mode: int, gid: int | None) -> None:
    # The umask applies at creation, so the mode is set again explicitly; group before mode so
    # the group never has access to an object it is not meant for.
    if gid is not None:
        os.fchown(fd, -1, gid)
    os.fchmod(fd, mode)
