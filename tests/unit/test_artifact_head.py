"""``artifact.read_head``: the head a supervisor keeps is the model's own first fields.

``Head`` is decoded by position from the model's payload, so its fields must be the leading
fields of ``schema.Model``, in order and of the same types; a field added in front of them
would otherwise be read as a listener.
"""

from __future__ import annotations

import msgspec
import pytest

from pavis.artifact import Head, head_of, read, read_head, seal
from pavis.compiler import compile_text
from pavis.errors import ArtifactError
from pavis.schema import Model

CONFIG = """
version: 1
listeners: [{name: web, address: "127.0.0.1:18080"}]
admin: {address: "127.0.0.1:19901"}
limits: {drain_timeout: 5s}
clusters: [{name: up, endpoints: ["127.0.0.1:9"]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{match: {prefix: /}, forward: {cluster: up}}]
"""


def test_head_fields_are_the_leading_fields_of_the_model() -> None:
    head = msgspec.structs.fields(Head)
    model = msgspec.structs.fields(Model)[: len(head)]
    assert [(f.name, f.type) for f in head] == [(f.name, f.type) for f in model]


def test_read_head_gives_what_a_full_read_gives_for_those_fields() -> None:
    data = seal(compile_text(CONFIG, "yaml"))
    _, model = read(data)
    for check in (True, False):
        header, head = read_head(data, check=check)
        assert head == head_of(model)
        assert header.checksum == read(data)[0].checksum
    assert head.limits.drain_timeout_ms == 5000 and head.listeners[0].name == "web"


def test_read_head_verifies_before_it_decodes() -> None:
    data = bytearray(seal(compile_text(CONFIG, "yaml")))
    data[-1] ^= 1
    with pytest.raises(ArtifactError, match="checksum"):
        read_head(bytes(data), check=False)
