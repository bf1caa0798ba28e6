"""A worker out of descriptors pauses accepting every time it runs out, and says so once.

Run by ``test_worker_accept.py`` as ``python -m tests.e2e.programs.accept_pause``, in a fresh
interpreter (gevent never runs inside the pytest process); it prints ``ok`` and exits 0, or
fails with the assertion that broke.
"""

import os
import resource
import socket as stdsocket
import sys

import gevent

from tests.helpers import listener
from workers import accept

lst, port = listener()
clients = [stdsocket.create_connection(("127.0.0.1", port)) for _ in range(4)]
acc = accept.Acceptor(lst, lambda sock, addr: sock.close(), accept.Load())
# No descriptor left for an accepted connection: every accept fails with EMFILE.
spare = []
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
try:
    while True:
        spare.append(os.dup(0))
except OSError:
    pass
acc.start()
gevent.sleep(0.55)  # five or six pauses of PAUSE_S, one attempt each
for fd in spare:
    os.close(fd)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
gevent.sleep(0.3)  # the next attempt after a pause takes the waiting clients
for c in clients:
    assert c.recv(1) == b""  # accepted (and closed by the handler)
acc.close()
print("errors", accept.METRICS.accept_errors, file=sys.stderr)
print("ok")
