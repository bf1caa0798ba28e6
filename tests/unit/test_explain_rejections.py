"""``pavctl explain``'s text names why a request head is rejected (in-process)."""

from __future__ import annotations

from tests.helpers import routing_config


def test_explain_text_names_the_rejection() -> None:
    from pavis.compiler import compile_text
    from pavis.explain import explain, format_text

    model = compile_text(routing_config(1, "127.0.0.1:9"), "yaml").model
    text = format_text(explain(model, "GET", "a", "/admin#x"))
    assert "400 (invalid_target)" in text
    assert "400 (invalid_host)" in format_text(explain(model, "GET", "a,b", "/x"))
