"""``pavis serve --demo``: the bundled demo config plus a tiny demo upstream, one command.

Owns: the demo's working directory (a copy of ``pavis/demo/demo.yaml`` the user can edit and
reload), the demo upstream on 127.0.0.1:8081 (stdlib ``ThreadingHTTPServer`` in a forked
child — no gevent in the supervisor), and the instructions printed at start. Must not: be used
for anything but trying pavis out.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

UPSTREAM = ("127.0.0.1", 8081)


class _Upstream(BaseHTTPRequestHandler):
    server_version = "pavis-demo-upstream"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        body = (
            json.dumps(
                {
                    "upstream": f"{UPSTREAM[0]}:{UPSTREAM[1]}",
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers.items()),
                },
                indent=2,
            ).encode()
            + b"\n"
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def start_upstream(address: tuple[str, int] = UPSTREAM) -> int:
    """Fork the demo upstream; returns its pid once it listens."""
    server = ThreadingHTTPServer(address, _Upstream)
    server.daemon_threads = True
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops it
            signal.signal(signal.SIGTERM, lambda s, f: sys.exit(0))
            server.serve_forever()
        except SystemExit:
            pass
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    server.server_close()
    return pid


def run(workers: int, control: str | None, state_dir: str | None, name: str = "demo") -> int:
    from pavis.supervisor.arbiter import Arbiter, Options

    home = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"pavis-demo-{os.getuid()}"
    home.mkdir(mode=0o700, exist_ok=True)
    config = home / "pavis.yaml"
    if not config.exists():
        with resources.as_file(resources.files("pavis") / "demo" / "demo.yaml") as src:
            shutil.copyfile(src, config)
    control = os.path.abspath(control or str(home / "control.sock"))
    try:
        upstream = start_upstream()
    except OSError as exc:
        print(f"demo upstream: cannot listen on {UPSTREAM[0]}:{UPSTREAM[1]}: {exc.strerror}")
        return 1
    print(
        f"""pavis demo ({workers} workers); config {config}
  proxy      http://127.0.0.1:8080/          (forwards to the demo upstream on :8081)
             http://127.0.0.1:8080/healthz   (answered by pavis itself)
  admin      http://127.0.0.1:9901/status    /ready  /metrics

Try, in another terminal:
  export PAVIS_CONTROL={control}
  curl -i http://127.0.0.1:8080/hello
  pavctl status
  $EDITOR {config}   # e.g. change the x-served-by header
  pavctl reload      # every worker flips to the new config, or none does
  pavctl history
  pavctl rollback    # back to the previous generation, nothing recompiled
Stop with Ctrl-C.
""",
        flush=True,
    )
    opts = Options(
        source=str(config),
        workers=workers,
        control=control,
        state_dir=os.path.abspath(state_dir or str(home / "state")),
        name=name,
    )
    try:
        return Arbiter(opts).run()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(upstream, signal.SIGTERM)
        with contextlib.suppress(ChildProcessError):  # the arbiter may have reaped it
            os.waitpid(upstream, 0)
