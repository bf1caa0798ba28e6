"""SIGUSR1 to the supervisor makes every worker reopen its access-log files: logrotate's
move-then-signal rotation, on a real `pavis serve` with two workers.

Invariants: after the move and the signal, each worker's descriptor points at a new file at
the configured path (read from /proc), later lines land there and none in the moved file,
no process is restarted; a path that cannot be reopened is reported and the old file stays
in use; every line has the documented fields.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from tests.e2e.helpers_proc import Serve, direct_config, get, needs_workers, wait_for

pytestmark = needs_workers

FIELDS = {"time", "client", "method", "host", "path", "status", "route", "cluster", "endpoint",
          "upstream_ms", "attempts", "total_ms", "bytes", "request_id", "generation",
          "checksum", "error", "client_cert", "protocol", "user_agent", "referer",
          "request_bytes", "upstream_status", "upstream_address", "tls_version", "sni",
          "rate_limit", "trace_id"}  # fmt: skip


def test_the_documented_fields_are_the_fields() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md").read_text()
    section = docs.split("Fields of a line", 1)[1].split("Rotation:", 1)[0]
    documented = {m.split("`")[1] for m in section.splitlines() if m.startswith("| `")}
    assert documented == FIELDS


def start(tmp_path: Path, log: Path) -> Serve:
    sv = Serve(tmp_path, workers=2)
    cfg = tmp_path / "a.yaml"
    cfg.write_text(direct_config(sv.port, "A") + f'access_log: {{path: "{log}"}}\n')
    sv.start(cfg)
    return sv


def log_targets(pids: list[int], directory: Path) -> dict[int, set[str]]:
    """Per worker: the files in ``directory`` it holds open."""
    out: dict[int, set[str]] = {}
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        held = set()
        for fd in fds.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(str(directory) + "/"):
                held.add(target)
        out[pid] = held
    return out


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def test_sigusr1_reopens_every_workers_access_log(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "access.log"
    sv = start(tmp_path, log)
    try:
        pids = [w["pid"] for w in sv.status()["workers"]]
        for _ in range(4):
            assert get(sv.port, "/before")[0] == 200
        wait_for(lambda: log.exists() and len(lines(log)) == 4, 5, "four lines")
        assert all(set(rec) == FIELDS for rec in lines(log))

        rotated = logs / "access.log.1"
        log.rename(rotated)  # logrotate's default: move, then signal
        assert sv.proc is not None
        sv.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: all(t == {str(log)} for t in log_targets(pids, logs).values()), 10,
                 "every worker to hold the new file")  # fmt: skip
        for _ in range(6):
            assert get(sv.port, "/after")[0] == 200
        wait_for(lambda: log.exists() and len(lines(log)) == 6, 5, "six lines in the new file")
        assert {rec["path"] for rec in lines(log)} == {"/after"}
        assert [rec["path"] for rec in lines(rotated)] == ["/before"] * 4
        assert [w["pid"] for w in sv.status()["workers"]] == pids  # nobody was restarted
        assert "SIGUSR1: 2 workers reopen their access logs" in sv.logs()
        assert oct(log.stat().st_mode & 0o777) == "0o640"

        # The directory gone: the reopen fails, says so, and the moved file stays in use.
        os.rename(logs, tmp_path / "logs.old")
        sv.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: sv.logs().count("cannot reopen") == 2, 10, "both workers to say so")
        assert f"pavis worker: access log {log}: cannot reopen (No such file or directory)" in (
            sv.logs()
        )
        for _ in range(3):
            assert get(sv.port, "/still")[0] == 200
        kept = tmp_path / "logs.old" / "access.log"
        wait_for(lambda: len(lines(kept)) == 9, 5, "the lines in the file still open")
        assert [w["pid"] for w in sv.status()["workers"]] == pids
    finally:
        sv.cleanup()
