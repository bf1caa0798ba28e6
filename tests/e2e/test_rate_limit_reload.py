"""Rate-limit state across a reload, with a real supervisor, two workers and `pavctl reload`.

Invariants: the bucket segment outlives generations; a limit whose parameters (rate, burst,
key, and where it is) did not change keeps its clients' state across a reload — even when
the rest of the config, or how the limit answers (delay, dry_run), changed — so a reload
hands nobody a new burst; a limit with changed parameters starts fresh.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.helpers_proc import Serve, get, needs_workers
from tests.e2e.test_control_local_users import NOBODY, planted
from tests.e2e.test_control_shm_full import PRIVATE_SHM
from tests.helpers import direct_config

pytestmark = needs_workers


def write(sv: Serve, name: str, body: str, limit: str) -> Path:
    route = f"""      - name: limited
        match: {{prefix: /limited}}
        direct: {{status: 200, body: "limited"}}
        rate_limit: {limit}
"""
    path = sv.tmp / f"{name}.yaml"
    path.write_text(direct_config(sv.port, body, sv.admin_port, extra=route))
    return path


def statuses(sv: Serve, n: int) -> list[int]:
    return [get(sv.port, "/limited")[0] for _ in range(n)]


def reload(sv: Serve, path: Path) -> None:
    r = sv.pavctl("reload", str(path))
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_unchanged_limit_keeps_its_state_and_a_changed_one_starts_fresh(
    tmp_path: Path,
) -> None:
    sv = Serve(tmp_path, workers=2)
    try:
        sv.start(write(sv, "a", "A", "{rate: 1/m, burst: 3, key: route}"))
        assert statuses(sv, 4) == [200, 200, 200, 429]
        gen = sv.status()["generation"]

        # Another generation, the same limit: the burst stays spent.
        reload(sv, write(sv, "b", "B", "{rate: 1/m, burst: 3, key: route}"))
        assert sv.status()["generation"] > gen
        assert get(sv.port, "/")[1] == b"B"
        assert statuses(sv, 2) == [429, 429]

        # How it answers is not what it counts: delay (or dry_run) changed, state kept.
        reload(sv, write(sv, "c", "C", "{key: route, burst: 3, rate: 1/m, delay: true}"))
        assert get(sv.port, "/")[1] == b"C"
        assert statuses(sv, 1) == [429]

        # Another burst is another limit: it starts with its whole burst.
        reload(sv, write(sv, "d", "D", "{rate: 1/m, burst: 4, key: route}"))
        assert get(sv.port, "/")[1] == b"D"
        assert statuses(sv, 5) == [200, 200, 200, 200, 429]

        # So is another key.
        reload(sv, write(sv, "e", "E", "{rate: 1/m, burst: 4, key: client_ip}"))
        assert statuses(sv, 5) == [200, 200, 200, 200, 429]
        assert Path(f"/dev/shm/pavis.{sv.name}.rl").exists()
    finally:
        sv.cleanup()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare for a private /dev/shm",
)
def test_a_first_limit_that_does_not_fit_in_dev_shm_is_a_rejected_reload(tmp_path: Path) -> None:
    """In a 256 KiB /dev/shm the 1 MiB bucket segment cannot be made: the reload that
    brings the first limit is refused with no_space, and the generation before keeps
    serving, without a limit it could not enforce exactly."""
    sv = Serve(tmp_path, workers=2)
    try:
        sv.start(sv.config("A"), wrap=PRIVATE_SHM)
        r = sv.pavctl("reload", str(write(sv, "b", "B", "{rate: 1/m, burst: 1, key: route}")))
        assert r.returncode == 1, r.stdout + r.stderr
        assert "no_space" in r.stdout + r.stderr
        assert get(sv.port, "/")[1] == b"A"
        assert sv.history()[-1]["outcome"] == "rejected"
    finally:
        sv.cleanup()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_bucket_segment_another_user_planted_is_never_used(tmp_path: Path) -> None:
    """/dev/shm is world-writable: a `pavis.<name>.rl` that another uid made first would let
    it read and steer every client's limit. The reload that needs it is refused, naming the
    file; the planted file is left as it was."""
    sv = Serve(tmp_path, workers=2)
    try:
        with planted(f"/dev/shm/pavis.{sv.name}.rl") as seg:
            sv.start(sv.config("A"))
            r = sv.pavctl("reload", str(write(sv, "b", "B", "{rate: 1/m, burst: 1, key: route}")))
            assert r.returncode == 1, r.stdout + r.stderr
            assert "hostile" in r.stdout + r.stderr and seg.name in r.stdout + r.stderr
            assert get(sv.port, "/")[1] == b"A"
            assert sv.stop() == 0
            assert seg.read_bytes() == b"not yours\n" and seg.stat().st_uid == NOBODY
    finally:
        sv.cleanup()
