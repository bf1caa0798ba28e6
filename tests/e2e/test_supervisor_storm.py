"""Reload storm under load: keep-alive clients run while 50 reloads alternate between two
configs that answer differently. Invariants: zero failed requests; every response belongs to
exactly one generation (its body and its header name the same config); at the end every
worker runs the final checksum.
"""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path

from pavis.control_client import request
from tests.e2e.helpers_proc import Serve, needs_workers

pytestmark = needs_workers

RELOADS = 50
CLIENTS = 6


class KeepAliveClients:
    def __init__(self, port: int, n: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.errors: list[str] = []
        self.seen: dict[bytes, int] = {}
        self.threads = [threading.Thread(target=self._run) for _ in range(n)]

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            while not self.stop.is_set():
                try:
                    conn.request("GET", "/storm")
                    resp = conn.getresponse()
                    body = resp.read()
                    tag = resp.getheader("x-gen", "")
                except (OSError, http.client.HTTPException) as exc:
                    with self.lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    continue
                with self.lock:
                    if resp.status != 200 or body not in (b"A", b"B") or tag.encode() != body:
                        self.errors.append(f"{resp.status} body={body!r} x-gen={tag!r}")
                    else:
                        self.ok += 1
                        self.seen[body] = self.seen.get(body, 0) + 1
        finally:
            conn.close()

    def __enter__(self) -> KeepAliveClients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def _config(sv: Serve, body: str) -> Path:
    header = f"        response_headers: {{set: {{x-gen: {body}}}}}\n"
    path = sv.config(body)
    path.write_text(path.read_text() + header)
    return path


def test_reload_storm_under_keepalive_load(tmp_path: Path) -> None:
    sv = Serve(tmp_path, workers=2)
    try:
        configs = {b: str(_config(sv, b)) for b in "AB"}
        sv.start(Path(configs["A"]))
        answers = []
        with KeepAliveClients(sv.port, CLIENTS) as load:
            time.sleep(0.5)
            for i in range(RELOADS):
                body = "B" if i % 2 == 0 else "A"
                answers.append(
                    request(sv.control, {"op": "reload", "path": configs[body], "timeout": 10})
                )
                time.sleep(0.05)
            time.sleep(0.5)
        assert load.errors == [], load.errors[:10]
        assert load.ok > 100 and set(load.seen) == {b"A", b"B"}
        assert all(a["outcome"] == "accepted" for a in answers)
        final = answers[-1]["checksum"]
        st = sv.status()
        assert st["checksum"] == final
        assert [w["checksum"] for w in st["workers"]] == [final] * 2
        assert sv.pavctl("status", "--expect", final).returncode == 0
        # Only the current and previous generations are kept in shared memory.
        assert len(st["retained"]) <= 2
        segments = list(Path("/dev/shm").glob(f"pavis.{sv.name}.[0-9]*"))
        assert len(segments) <= 3
    finally:
        sv.cleanup()
