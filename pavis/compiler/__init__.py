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

from pathlib import Path

from pavis.compiler import codec, ingest, intent, regex, shape, validate
from pavis.schema import Validated

__all__ = ["compile_path", "compile_source", "compile_text", "json_schema"]


def compile_source(source: ingest.Source) -> Validated:
    document = ingest.parse(source)
    config = shape.to_intent(document, source.origin)
    try:
        model, problems = codec.build(config, source.base_dir)
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
