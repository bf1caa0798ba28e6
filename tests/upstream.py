"""The test upstream every end-to-end test and benchmark talks to (its own process).

Run: ``python -m tests.upstream --port N [--name NAME] [--workers K]`` (or the file
directly); it prints ``READY <port>`` once listening. Import ``launch()`` to start one from a
test and ``Upstream.stop()`` to stop it by pid.

Endpoints (any method unless noted; every response carries ``X-Upstream: <name>``):
- ``/bytes3``             3 bytes ``abc``, keep-alive — cheap, for benchmarks
- ``/delay/<ms>``         echo after sleeping
- ``/status/<code>``      that status (``?h=Name:Value`` adds response headers everywhere)
- ``/stream/<bytes>``     chunked download of that many bytes
- ``/size/<bytes>``       Content-Length download, written in 64 KiB pieces
- ``/nolength/<bytes>``   body delimited by closing the connection
- ``/upload``             consumes a body of any size; answers its length and sha256
- ``/flaky/<key>/<n>``    503 for the first n requests with this key, then echo
- ``/close``              echo with ``Connection: close``, then closes
- ``/drop``               echo with keep-alive, then closes the idle connection 50 ms later
                          without a word (a stale pooled connection for the proxy)
- ``/reset``              closes the connection without answering (RST)
- ``/garbage``            answers bytes that are not HTTP
- ``/healthz``            200 ``ok`` (503 after ``/admin/unhealthy``, again 200 after ``/admin/healthy``)
- ``/ws``                 WebSocket echo (text and binary; ping → pong; close)
- anything else           JSON echo: method, path, version, headers (pairs), body, name,
                          conn (connection number), seq (request number on the connection)
Must not: depend on pavis — it is the independent party the proxy is judged against.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CHUNK = 65536


# ----------------------------------------------------------------------------- launching


@dataclass
class Upstream:
    proc: subprocess.Popen[bytes]
    port: int
    name: str
    host: str = "127.0.0.1"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def launch(name: str = "up", port: int = 0, workers: int = 1) -> Upstream:
    """Start a test upstream process and wait until it listens."""
    cmd = [sys.executable, os.path.abspath(__file__), "--port", str(port), "--name", name,
           "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().split()
    if len(line) != 2 or line[0] != "READY":
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise RuntimeError(f"test upstream did not start: {line!r}")
    return Upstream(proc, int(line[1]), name)


# ----------------------------------------------------------------------------- serving


class _State:
    name = "up"
    healthy = True
    conns = 0
    flaky: dict[str, int] = {}


class _Req:
    __slots__ = ("method", "url", "version", "headers", "body", "upload", "nbytes", "done")

    def __init__(self) -> None:
        self.method = ""
        self.url = b""
        self.version = "1.1"
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.upload: object = None
        self.nbytes = 0
        self.done = False


class _Conn:
    """One client connection of the upstream (httptools protocol object)."""

    def __init__(self, sock: socket.socket) -> None:
        import httptools

        self.sock = sock
        self.parser = httptools.HttpRequestParser(self)
        self.cur = _Req()
        self.ready: list[tuple[_Req, bool]] = []
        _State.conns += 1
        self.conn_id = _State.conns
        self.seq = 0

    def on_message_begin(self) -> None:
        self.cur = _Req()

    def on_url(self, url: bytes) -> None:
        self.cur.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.cur.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        req = self.cur
        req.method = self.parser.get_method().decode()
        req.version = self.parser.get_http_version()
        if req.url.split(b"?")[0] == b"/upload":
            req.upload = hashlib.sha256()
        for k, v in req.headers:
            if k.lower() == "expect" and v.lower() == "100-continue":
                self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        req = self.cur
        req.nbytes += len(body)
        if req.upload is not None:
            req.upload.update(body)  # type: ignore[attr-defined]
        else:
            req.body.append(body)

    def on_message_complete(self) -> None:
        self.ready.append((self.cur, self.parser.should_keep_alive()))

    def serve(self) -> None:
        import httptools

        sock = self.sock
        try:
            while True:
                data = sock.recv(_CHUNK)
                if not data:
                    return
                try:
                    self.parser.feed_data(data)
                except httptools.HttpParserUpgrade as exc:
                    tail = data[exc.args[0]:]
                    if self.cur.url.split(b"?")[0] == b"/ws":
                        _websocket(sock, self.cur, tail)
                    return
                except httptools.HttpParserError:
                    sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                    return
                while self.ready:
                    req, keep = self.ready.pop(0)
                    self.seq += 1
                    if not self.respond(req, keep):
                        return
        except OSError:
            return
        finally:
            sock.close()

    def send(self, status: int, body: bytes, keep: bool, ctype: str = "text/plain",
             extra: list[tuple[str, str]] | None = None, head: bool = False) -> bool:
        lines = [f"HTTP/1.1 {status} {_reason(status)}", f"X-Upstream: {_State.name}"]
        lines += [f"{k}: {v}" for k, v in (extra or [])]
        if status not in (204, 304) and status >= 200:
            lines.append(f"Content-Type: {ctype}")
            lines.append(f"Content-Length: {len(body)}")
        if not keep:
            lines.append("Connection: close")
        out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if not head and status not in (204, 304):
            out += body
        self.sock.sendall(out)
        return keep

    def respond(self, req: _Req, keep: bool) -> bool:
        if req.url == b"/bytes3" and req.method == "GET":  # the benchmark path: nothing else
            return self.send(200, b"abc", keep)
        import gevent

        target = req.url.decode("latin-1")
        path, _, query = target.partition("?")
        params = parse_qsl(query)
        extra = [tuple(unquote(v).split(":", 1)) for k, v in params if k == "h"]
        extra_h: list[tuple[str, str]] = [(k, v.strip()) for k, v in extra]  # type: ignore[misc]
        head = req.method == "HEAD"
        parts = path.split("/")
        kind = parts[1] if len(parts) > 1 else ""
        if path == "/bytes3":
            return self.send(200, b"abc", keep, head=head)
        if kind == "delay" and len(parts) > 2:
            gevent.sleep(int(parts[2]) / 1000.0)
        elif kind == "status" and len(parts) > 2:
            code = int(parts[2])
            return self.send(code, f"status {code}\n".encode(), keep, extra=extra_h, head=head)
        elif kind in ("stream", "size", "nolength") and len(parts) > 2:
            return self.download(kind, int(parts[2]), keep, head, extra_h)
        elif path == "/upload":
            body = json.dumps({
                "length": req.nbytes,
                "sha256": req.upload.hexdigest() if req.upload is not None else "",  # type: ignore[attr-defined]
                "name": _State.name,
            }).encode()
            return self.send(200, body, keep, "application/json", head=head)
        elif kind == "flaky" and len(parts) > 3:
            key, limit = parts[2], int(parts[3])
            seen = _State.flaky.get(key, 0)
            _State.flaky[key] = seen + 1
            if seen < limit:
                return self.send(503, b"flaky\n", keep, head=head)
        elif path == "/close":
            keep = False
        elif path == "/drop":
            gevent.spawn_later(0.05, _shutdown, self.sock)
        elif path == "/reset":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        elif path == "/garbage":
            self.sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
            return False
        elif path == "/healthz":
            ok = _State.healthy
            return self.send(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n", keep, head=head)
        elif path == "/admin/unhealthy":
            _State.healthy = False
        elif path == "/admin/healthy":
            _State.healthy = True
        body = b"".join(req.body)
        echo = {
            "method": req.method, "path": target, "version": req.version,
            "headers": req.headers, "body": body.decode("latin-1"), "body_len": req.nbytes,
            "name": _State.name, "conn": self.conn_id, "seq": self.seq, "pid": os.getpid(),
        }
        return self.send(200, json.dumps(echo).encode(), keep, "application/json",
                         extra=extra_h, head=head)

    def download(self, kind: str, n: int, keep: bool, head: bool,
                 extra: list[tuple[str, str]]) -> bool:
        lines = ["HTTP/1.1 200 OK", f"X-Upstream: {_State.name}",
                 "Content-Type: application/octet-stream"]
        lines += [f"{k}: {v}" for k, v in extra]
        if kind == "stream":
            lines.append("Transfer-Encoding: chunked")
        elif kind == "size":
            lines.append(f"Content-Length: {n}")
        else:
            keep = False
        if not keep:
            lines.append("Connection: close")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        if head:
            return keep
        piece = b"x" * _CHUNK
        left = n
        while left > 0:
            data = piece if left >= _CHUNK else piece[:left]
            left -= len(data)
            if kind == "stream":
                self.sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.sock.sendall(data)
        if kind == "stream":
            self.sock.sendall(b"0\r\n\r\n")
        return keep


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _websocket(sock: socket.socket, req: _Req, tail: bytes) -> None:
    key = next((v for k, v in req.headers if k.lower() == "sec-websocket-key"), "")
    accept = base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()
    sock.sendall(
        (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         f"Sec-WebSocket-Accept: {accept}\r\nX-Upstream: {_State.name}\r\n\r\n").encode()
    )
    buf = bytearray(tail)

    def need(n: int) -> bytes:
        while len(buf) < n:
            data = sock.recv(_CHUNK)
            if not data:
                raise EOFError
            buf.extend(data)
        out = bytes(buf[:n])
        del buf[:n]
        return out

    try:
        while True:
            b0, b1 = need(2)
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", need(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", need(8))
            mask = need(4) if b1 & 0x80 else b""
            payload = need(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 8:
                sock.sendall(_frame(8, payload[:2]))
                return
            if opcode == 9:
                sock.sendall(_frame(10, payload))
                continue
            sock.sendall(_frame(opcode, payload))
    except (EOFError, OSError):
        return


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--name", default="up")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    _State.name = args.name
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from gevent.server import StreamServer

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(1024)
    children = []
    for _ in range(max(0, args.workers - 1)):
        pid = os.fork()
        if pid == 0:
            children = []
            break
        children.append(pid)

    def handle(sock: socket.socket, _addr: object) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _Conn(sock).serve()

    server = StreamServer(listener, handle)
    server.start()

    def stop() -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        server.close()
        os._exit(0)

    gevent.signal_handler(signal.SIGTERM, stop)
    gevent.signal_handler(signal.SIGINT, stop)
    if children or args.workers == 1:
        print(f"READY {listener.getsockname()[1]}", flush=True)
    gevent.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
