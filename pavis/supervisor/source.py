"""What to serve: a config path (compiled and sealed here) or an artifact path (verified).

Owns: telling the two apart by the artifact magic, reading the file once — a regular file
only, at most ``MAX_SOURCE`` bytes, never blocking on a FIFO or a device — and turning it
into artifact bytes. Must not: publish or store anything. The compiler is imported only
when a config is given.
"""

from __future__ import annotations

import os
import stat

from pavis.artifact import MAGIC, seal, verify
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


def load(path: str) -> bytes:
    """A config (compiled and sealed here) or an artifact (verified), as artifact bytes."""
    data = read_source(path)
    if data[: len(MAGIC)] == MAGIC:
        verify(data)
        return data
    from pavis.compiler import compile_text  # only configs need the compiler
    from pavis.compiler.ingest import syntax_of

    return seal(compile_text(data, syntax_of(path), origin=path))
