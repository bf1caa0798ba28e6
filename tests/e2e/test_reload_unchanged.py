"""An unchanged source is not recompiled: a reload whose source bytes (and path) are those the
current generation was compiled from answers "unchanged" from their digest, without a compile;
one changed byte makes a new generation. A config that embeds other files (TLS PEM files) is
compiled every time, since those files may change under an unchanged config.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers_proc import Serve, get, needs_workers
from tests.e2e.helpers_tls import peer_cn, self_signed, tls_config

pytestmark = needs_workers


@pytest.fixture
def sv(tmp_path: Path) -> Iterator[Serve]:
    s = Serve(tmp_path, workers=2)
    yield s
    s.cleanup()


def reload_json(sv: Serve, path: Path) -> dict[str, object]:
    r = sv.pavctl("reload", str(path), "--json")
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def test_the_same_file_twice_is_unchanged_and_one_byte_makes_a_new_generation(sv: Serve) -> None:
    sv.start(sv.config("A"))
    b = sv.config("B")
    first = reload_json(sv, b)
    assert first["outcome"] == "accepted" and first["generation"] == 2
    assert first["source_digest"]

    r = sv.pavctl("reload", str(b))
    assert r.returncode == 0, r.stderr
    assert "unchanged" in r.stdout and "not recompiled" in r.stdout
    second = reload_json(sv, b)
    assert second["outcome"] == "unchanged"
    assert second["generation"] == 2 and second["checksum"] == first["checksum"]
    assert second["source_digest"] == first["source_digest"]
    assert "not recompiled" in str(second["message"])
    assert sv.status()["generation"] == 2
    assert [e["outcome"] for e in sv.history()[-3:]] == ["accepted", "unchanged", "unchanged"]

    b.write_text(b.read_text().replace('body: "B"', 'body: "C"'))  # one byte
    third = reload_json(sv, b)
    assert third["outcome"] == "accepted" and third["generation"] == 3
    assert third["source_digest"] != first["source_digest"]
    assert get(sv.port) == (200, b"C")


def test_the_same_bytes_under_another_path_are_compiled(sv: Serve) -> None:
    sv.start(sv.config("A"))
    b = sv.config("B")
    assert reload_json(sv, b)["outcome"] == "accepted"
    copy = sv.tmp / "copy.yaml"
    shutil.copy(b, copy)
    answer = reload_json(sv, copy)
    # Compiled (the path picks the syntax and where relative files are read): same artifact.
    assert answer["outcome"] == "unchanged" and answer["generation"] == 2
    assert "not recompiled" not in str(answer.get("message"))


def test_a_config_with_tls_files_is_recompiled_when_only_the_files_change(sv: Serve) -> None:
    crt, key = sv.tmp / "site.crt", sv.tmp / "site.key"
    old = self_signed(sv.tmp, "old.test")
    new = self_signed(sv.tmp, "new.test")
    shutil.copy(old[0], crt)
    shutil.copy(old[1], key)
    config = tls_config(sv, crt, key, "A")
    sv.start(config)
    assert reload_json(sv, config)["outcome"] == "unchanged"
    assert peer_cn(sv.port) == "old.test"
    shutil.copy(new[0], crt)  # rotated in place, as certificate renewal tools do
    shutil.copy(new[1], key)
    answer = reload_json(sv, config)
    assert answer["outcome"] == "accepted" and answer["generation"] == 2
    for _ in range(4):
        assert peer_cn(sv.port) == "new.test"
