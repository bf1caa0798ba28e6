"""Lazy reading of an artifact: the index eagerly, each route on first use.

Owns: ``LazyModel`` — ``schema.Model`` (both derive from ``schema.ModelOf``) except that the
routes stay encoded (``msgspec.Raw``) — and ``LazyRoutes``, the ``Sequence[Route]`` that
decodes one route when it is first asked for. Decoding the whole route table dominates flip latency on large tables
(docs/bench/flip.md); a worker only needs the index to switch, and most routes are never used.
Must not: skip verification — ``read_lazy`` checks size, header and checksum first, exactly
as ``read`` does.
"""

from __future__ import annotations

import msgspec

from pavis.artifact.format import HEADER_SIZE, Header, verify
from pavis.errors import ArtifactError
from pavis.schema import ModelOf, Route


class LazyModel(ModelOf[msgspec.Raw]):
    """``schema.Model`` with the routes left encoded (the same fields: both are a ``ModelOf``)."""


_LAZY = msgspec.msgpack.Decoder(LazyModel)
_ROUTE = msgspec.msgpack.Decoder(Route)


class LazyRoutes:
    """A ``Sequence[Route]`` for ``pavis.lookup``: each route decoded on first use, cached."""

    __slots__ = ("raw", "cache")

    def __init__(self, raw: tuple[msgspec.Raw, ...]) -> None:
        self.raw = raw
        self.cache: list[Route | None] = [None] * len(raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i: int) -> Route:
        r = self.cache[i]
        if r is None:
            try:
                r = self.cache[i] = _ROUTE.decode(self.raw[i])
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ArtifactError("decode_failed", f"route {i}: {exc}") from None
        return r


def read_lazy(data: bytes | memoryview) -> tuple[Header, LazyModel]:
    """Verify (size, header, checksum), then decode everything but the routes.

    ``msgspec.Raw`` routes are views into ``data``: pass ``bytes``, not a mapping that is
    about to be closed."""
    header = verify(data)
    try:
        model = _LAZY.decode(memoryview(data)[HEADER_SIZE:])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ArtifactError("decode_failed", f"payload does not decode: {exc}") from None
    return header, model
