"""Close and keep-alive traffic through the real acceptor and connection handler, with the gc
disabled: a finished connection leaves no cycle for the gc to free.

Run by ``test_worker_gc.py`` as ``python -m tests.e2e.programs.conn_gc``, in a fresh
interpreter (gevent never runs inside the pytest process); it prints ``ok`` and exits 0, or
fails with the assertion that broke.
"""

# The standard library is patched before anything else is imported.
# ruff: noqa: E402
import gevent.monkey

gevent.monkey.patch_all()

import functools
import gc
import socket
from collections import Counter

import gevent
from gevent.server import StreamServer

from pavis import artifact
from pavis.compiler import compile_text
from workers.accept import Acceptor
from workers.conn import Runtime, serve_connection
from workers.state import Registry, State, load


def upstream(sock, addr):
    f = sock.makefile("rb")
    while True:
        line = f.readline()
        if not line:
            return
        while f.readline() not in (b"\r\n", b""):
            pass
        if b"/close" in line:  # the upstream ends this connection: the pool drops it
            sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
            return
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


ups = StreamServer(("127.0.0.1", 0), upstream)
ups.start()
lst = socket.socket()
lst.bind(("127.0.0.1", 0))
lst.listen(64)
port = lst.getsockname()[1]
config = f"""
version: 1
listeners: [{{name: public, address: "127.0.0.1:{port}"}}]
clusters: [{{name: c, endpoints: ["127.0.0.1:{ups.server_port}"]}}]
virtual_hosts:
  - name: main
    domains: ["*"]
    routes:
      - {{name: hi, match: {{exact: /hi}}, direct: {{status: 200, body: "ok"}}}}
      - {{name: all, match: {{prefix: /}}, forward: {{cluster: c}}}}
"""
header, model = load(artifact.seal(compile_text(config, "yaml")))
rt = Runtime(State(1, header, model, Registry()))
Acceptor(lst, functools.partial(serve_connection, rt, b"http"), rt.load).start()


def client(paths, close):
    c = socket.create_connection(("127.0.0.1", port))
    for path in paths:
        c.sendall(
            b"GET "
            + path
            + b" HTTP/1.1\r\nHost: h\r\n"
            + (b"Connection: close\r\n" if close else b"")
            + b"\r\n"
        )
        got = b""
        while not got.endswith(b"ok"):
            got += c.recv(4096)
    c.close()


def traffic():
    for _ in range(10):
        client([b"/x"], True)
        client([b"/hi"], True)
        client([b"/close"], True)
    for _ in range(5):
        client([b"/x", b"/hi", b"/close", b"/x"], False)
    gevent.sleep(0.05)  # the handlers finish after the client's last read


traffic()  # warm-up: first-use caches, the pool, parked handlers
gc.collect()
gc.disable()
gc.set_debug(gc.DEBUG_SAVEALL)
traffic()
gc.collect()
ours = Counter(
    type(o).__name__ for o in gc.garbage if type(o).__module__.startswith(("workers", "httptools"))
)
assert not ours, ours
print("ok")
