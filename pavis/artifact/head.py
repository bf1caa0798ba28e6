"""The head of an artifact: what a supervisor keeps of a generation, without its route table.

Owns: ``Head`` — the leading fields of ``schema.Model`` (format version, listeners, admin,
limits) — and ``read_head``, which verifies an artifact and decodes only those. A supervisor
binds sockets, compares listeners and bounds its drain from these; the clusters, virtual
hosts, lookup tables and routes are the workers' (a 10k-route table decoded is ~12 MiB, and
a supervisor that kept one per generation in shm grew by that much per reload).
Must not: skip verification. With ``check`` (the default) every field of the payload is
decoded once, one route at a time and dropped at once, so bytes that would not decode are
refused here exactly as ``read`` refuses them, without the whole model ever being in memory.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from pavis.artifact.format import HEADER_SIZE, Header, verify
from pavis.artifact.lazy import LazyModel
from pavis.errors import ArtifactError
from pavis.schema import Admin, AdminOff, Limits, Listener, Model, Route


class Head(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """The first fields of ``schema.Model``, by position; the rest of the payload is skipped
    when decoding (``forbid_unknown_fields`` is off for this Struct only)."""

    format_version: int
    listeners: tuple[Listener, ...]
    admin: AdminOff | Admin
    limits: Limits


@functools.cache
def _decoders() -> tuple[Any, Any, Any]:
    """(head, lazy model, route) decoders, made on first use: every CLI command imports
    this module, and building a decoder for ``Route`` costs milliseconds."""
    dec = msgspec.msgpack.Decoder
    return dec(Head), dec(LazyModel), dec(Route)


def head_of(model: Model | Head) -> Head:
    """The head of a decoded model (``model`` itself if it is one)."""
    if isinstance(model, Head):
        return model
    return Head(model.format_version, model.listeners, model.admin, model.limits)


def read_head(data: bytes | memoryview, *, check: bool = True) -> tuple[Header, Head]:
    """Verify (size, header, checksum), then decode the head.

    ``check``: also decode the rest, piece by piece, and refuse the artifact as ``read``
    would if it does not decode; without it the caller vouches for the payload (bytes it just
    sealed, or that were decoded whole where they were sealed)."""
    header = verify(data)
    payload = memoryview(data)[HEADER_SIZE:]
    try:
        if check:
            _check(payload)
        head: Head = _decoders()[0].decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ArtifactError(
            "decode_failed", f"payload does not decode to the model: {exc}"
        ) from None
    return header, head


def _check(payload: memoryview) -> None:
    _, lazy_decoder, route_decoder = _decoders()
    lazy = lazy_decoder.decode(payload)
    for i, raw in enumerate(lazy.routes):
        try:
            route_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise msgspec.ValidationError(f"route {i}: {exc}") from None
