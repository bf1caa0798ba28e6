"""Opening upstream connections from a worker spawned by `pavis serve`.

An endpoint given as an address literal is connected without name resolution: gevent resolves
in a thread pool, so going through ``getaddrinfo`` for 127.0.0.1 started threads in every
worker and handed each new upstream connection to one of them and back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.e2e.helpers_proc import Serve, get, needs_workers
from tests.helpers import forward_config
from tests.upstream import Upstream

pytestmark = needs_workers


def test_new_upstream_connections_to_an_address_start_no_threads(
    tmp_path: Path, upstreams: Callable[..., Upstream]
) -> None:
    up = upstreams("lit")
    assert up.address.startswith("127.0.0.1:")
    sv = Serve(tmp_path, workers=1)
    try:
        config = tmp_path / "fwd.yaml"
        config.write_text(forward_config(sv.port, up.address))
        sv.start(config)
        (worker,) = [w["pid"] for w in sv.status()["workers"]]
        conns = set()
        for _ in range(6):  # /close: the upstream closes, so every request connects anew
            status, body = get(sv.port, "/close")
            assert status == 200, body
            conns.add(body.split(b'"conn":')[1].split(b",")[0])
        assert len(conns) == 6  # six upstream connections were opened
        assert os.listdir(f"/proc/{worker}/task") == [str(worker)]
    finally:
        sv.cleanup()


def test_an_endpoint_named_by_host_name_is_resolved(
    tmp_path: Path, upstreams: Callable[..., Upstream]
) -> None:
    up = upstreams("named")
    sv = Serve(tmp_path, workers=1)
    try:
        config = tmp_path / "fwd.yaml"
        config.write_text(forward_config(sv.port, "localhost:" + up.address.rsplit(":", 1)[1]))
        sv.start(config)
        status, body = get(sv.port, "/named")
        assert status == 200, body
        assert b'"name": "named"' in body or b'"name":"named"' in body
    finally:
        sv.cleanup()
