"""A client that goes away while a worker writes to it costs that client only: the write
fails with EPIPE/ECONNRESET inside the worker, never a SIGPIPE that kills it (and every
other connection it holds). Workers are forked by the supervisor, so this runs through
`pavis serve`."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.helpers_proc import Serve, get, needs_workers
from tests.helpers import forward_config
from tests.upstream import Upstream

pytestmark = needs_workers


def test_a_client_that_leaves_mid_download_does_not_kill_its_worker(
    tmp_path: Path, upstreams: Callable[..., Upstream]
) -> None:
    up = upstreams("big")
    sv = Serve(tmp_path, workers=1)
    try:
        config = tmp_path / "fwd.yaml"
        config.write_text(forward_config(sv.port, up.address))
        sv.start(config)
        (before,) = [w["pid"] for w in sv.status()["workers"]]
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", sv.port), timeout=5) as c:
                c.sendall(b"GET /size/8388608 HTTP/1.1\r\nHost: a\r\n\r\n")
                assert c.recv(1000).startswith(b"HTTP/1.1 200")
            # Closed (FIN) with 8 MiB still to come: the client's kernel answers the next
            # bytes with a reset, and the write after that fails with EPIPE.
        time.sleep(0.5)
        status, _ = get(sv.port, "/after")
        assert status == 200
        (after,) = [w["pid"] for w in sv.status()["workers"]]
        assert after == before, "the worker was replaced"
        assert "SIGPIPE" not in sv.log.read_text()
    finally:
        sv.cleanup()
