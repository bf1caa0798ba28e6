"""The compiler: configuration source → validated runtime model.

Owns: the pipeline ingest (bytes → document) → shape (document → intent Structs) → codec
(intent → runtime model with every default, reference and lookup table materialised) →
validate (every problem collected; the only producer of ``schema.Validated``).
Must not: seal artifacts, touch shared memory or the network, or be imported by the runtime
(``workers/``, ``shm/``).

Errors: ``IngestError`` when the source cannot be read or parsed; ``ConfigError`` with every
``Problem`` (field path, constraint id, message) otherwise.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pavis.compiler import codec, ingest, intent, regex, shape, validate
from pavis.schema import Validated

__all__ = ["compile_path", "compile_source", "compile_text", "gc_paused", "json_schema"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block (back on after it, if it was on).

    A compile builds an acyclic graph of a few objects per config value (the document, the
    intent Structs, the model): each collection walks all of it again, for nothing, and with
    10k routes that was over half of the time ``shape`` took. Cycles made meanwhile (an
    exception's traceback) are collected once the block ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def compile_source(source: ingest.Source) -> Validated:
    with gc_paused():
        # Each stage's input is dropped once used: what is alive when the pause ends is
        # what the first collection after it walks.
        document = ingest.parse(source)
        config = shape.to_intent(document, source.origin)
        del document
        try:
            model, problems = codec.build(config, source.base_dir)
            del config
            return validate.validate(model, problems, source.origin)
        finally:
            regex.clear_cache()


def compile_path(path: str | Path) -> Validated:
    """Compile a config file (``.yaml``/``.yml``/``.json``/``.toml``; ``-`` = stdin)."""
    return compile_source(ingest.read_path(path))


def compile_text(text: str | bytes, syntax: str, origin: str = "<text>") -> Validated:
    """Compile config text of the given syntax (``yaml``, ``json`` or ``toml``).

    Relative file references (TLS PEM files) resolve against ``origin``'s directory when
    ``origin`` is a path, else against the working directory.
    """
    return compile_source(ingest.source_of_text(text, syntax, origin))


def json_schema() -> dict[str, object]:
    """JSON Schema of the configuration format."""
    return intent.json_schema()
