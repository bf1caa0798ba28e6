"""What to serve: a config path (compiled and sealed in a child process) or an artifact path
(verified).

Owns: telling the two apart (``artifact.is_artifact``), reading the file once — a regular file
only, at most ``MAX_SOURCE`` bytes, never blocking on a FIFO or a device — the digest that
says whether a source is unchanged, and turning it into artifact bytes. Must not: publish or
store anything, or compile in the supervisor's own process (``compile_child`` does).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import xxhash

from pavis.artifact import is_artifact, verify
from pavis.errors import PavisError

MAX_SOURCE = 64 * 1024 * 1024  # a config or artifact larger than this is refused unread


def read_source(path: str) -> bytes:
    """The bytes of the regular file ``path`` (PavisError naming what is wrong otherwise).

    Opened non-blocking, so a FIFO or a device is refused instead of waited on: every later
    reload would queue behind a read that may never end.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise PavisError(f"cannot read {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PavisError(f"{path} is not a regular file ({_kind(st.st_mode)}): refused")
        if st.st_size > MAX_SOURCE:
            raise PavisError(f"{path} is {st.st_size} bytes, over the {MAX_SOURCE}-byte bound")
        chunks = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > MAX_SOURCE:
                raise PavisError(f"{path} grew past the {MAX_SOURCE}-byte bound while read")
            chunks.append(chunk)
    except OSError as exc:
        raise PavisError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"),
    ):  # fmt: skip
        if test(mode):
            return name
    return "not a plain file"


@dataclass(frozen=True)
class Source:
    """The bytes of a config or artifact file, read once, and their digest."""

    path: str
    data: bytes
    # xxh3-128 of the path and the bytes: the path too, since it picks the syntax (by its
    # extension) and the directory relative TLS files are read from.
    digest: str


def read(path: str) -> Source:
    data = read_source(path)
    return Source(path, data, xxhash.xxh3_128_hexdigest(path.encode() + b"\0" + data))


@dataclass(frozen=True)
class Built:
    """Artifact bytes made from a source."""

    data: bytes
    reads_files: bool  # they embed other files than the source (TLS PEM files)
    decoded: bool  # a compile child decoded them whole: only their head is left to read


def build(src: Source) -> Built:
    """An artifact is verified; a config is compiled, sealed and decoded back in a child
    process under a memory and a time limit (``compile_child``)."""
    if is_artifact(src.data):
        verify(src.data)
        return Built(src.data, reads_files=False, decoded=False)
    from pavis.supervisor.compile_child import compile_config

    data, reads_files = compile_config(src.data, src.path)
    return Built(data, reads_files, decoded=True)


def load(path: str) -> bytes:
    """A config (compiled and sealed) or an artifact (verified), as artifact bytes."""
    return build(read(path)).data
