"""Worker entry: ``run(name, slot, notify_fd, listeners)`` in a freshly forked child.

Owns: patching gevent (here and nowhere earlier, so the supervisor never loads it), attaching
to shm, booting on the current generation, following flips (notification plus a slow poll),
acknowledging or rejecting each generation, heartbeats, signals and the graceful drain.
Must not: be imported for its side effects — importing this module loads no gevent; the
runtime modules are imported inside ``run``.

Exit codes (docs/INTERFACES.md): 0 clean stop, 70 boot failed (cannot attach, no generation),
71 the artifact is unusable.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from pavis.errors import EXIT_ARTIFACT_UNUSABLE, EXIT_BOOT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from shm import Subscriber
    from workers.runtime import Runtime
    from workers.state import Registry, State


POLL_S = 0.2  # backstop poll of the current generation when no notification arrives
HEARTBEAT_S = 1.0
BOOT_WAIT_S = 5.0  # how long a worker waits for a first generation to be published


class BootFailed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def run(
    name: str,
    slot: int,
    notify_fd: int,
    listeners: dict[str, socket.socket],
    wake_fds: Sequence[int] = (),
) -> NoReturn:
    """The worker process. ``wake_fds``: every slot's wake-up eventfd
    (``shm.Publisher.wake_fds``); without them a worker standing by for another only looks
    again on its timer."""
    code = EXIT_BOOT_FAILED
    try:
        code = _main(Worker(name, slot, notify_fd, listeners, wake_fds))
    except BootFailed as exc:
        print(f"pavis worker {slot}: {exc}", file=sys.stderr)
        code = exc.code
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _main(worker: Worker) -> int:
    import warnings

    # A worker must not die of a warning filter inherited from its parent (pytest -W error).
    warnings.simplefilter("ignore")
    from gevent import monkey

    monkey.patch_all(thread=False, subprocess=False, signal=False)
    return worker.main()


class Worker:
    def __init__(
        self,
        name: str,
        slot: int,
        notify_fd: int,
        listeners: dict[str, socket.socket],
        wake_fds: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.slot = slot
        self.notify_fd = notify_fd
        self.listeners = listeners
        self.wake_fds = wake_fds
        self.rejected = 0
        self.tls_servers: dict[str, tuple[Any, Any]] = {}  # name → (TlsHandshake, its TLS)
        self.sub: Subscriber
        self.runtime: Runtime
        self.registry: Registry

    def main(self) -> int:
        import gevent
        from gevent.event import Event

        from pavis.errors import ArtifactError
        from shm import ShmError, Subscriber
        from workers.accept import Load
        from workers.runtime import Runtime, reseed_request_ids
        from workers.state import Registry

        reseed_request_ids()

        try:
            sub = Subscriber(self.name, self.slot, self.notify_fd)
        except ShmError as exc:
            raise BootFailed(EXIT_BOOT_FAILED, f"cannot attach to shm: {exc}") from None
        self.sub = sub
        sub.heartbeat(0)
        gen = sub.current()
        waited = 0.0
        while gen == 0 and waited < BOOT_WAIT_S:
            gevent.sleep(0.05)
            waited += 0.05
            gen = sub.current()
        if gen == 0:
            raise BootFailed(EXIT_BOOT_FAILED, "no generation has been published")
        self.registry = Registry()
        try:
            state = self._build(gen, self.registry)
        except (ShmError, ArtifactError) as exc:
            sub.reject(gen, _reason(exc))
            raise BootFailed(EXIT_ARTIFACT_UNUSABLE, f"generation {gen}: {exc}") from None
        import signal

        self.stopped = Event()
        # Handlers before the first ack: a supervisor may signal as soon as it sees the ack.
        gevent.signal_handler(signal.SIGTERM, self._stop)
        gevent.signal_handler(signal.SIGINT, self._stop)
        gevent.signal_handler(signal.SIGQUIT, lambda: os._exit(EXIT_OK))
        # Reloads reach workers through shm, never through signals: a SIGHUP sent to the
        # whole process group must not kill them.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        gevent.signal_handler(signal.SIGUSR1, lambda: self.registry.reopen_logs())  # logrotate
        load = Load(sub.load_board())
        if len(self.wake_fds) == sub.nslots:  # one per slot, as the supervisor made them
            load.wake_fd = self.wake_fds[self.slot]
            load.after = list(self.wake_fds[self.slot + 1 :])
        self.runtime = Runtime(state, load)
        self.runtime.buckets = _attach_buckets(self.name)
        self.registry.keep_only(state)
        self.servers = self._serve(state)
        sub.ack(gen, state.digest)
        gevent.spawn(self._follow)
        gevent.spawn(self._heartbeat)
        self.stopped.wait()
        return self._drain()

    # ------------------------------------------------------------------ serving

    def _serve(self, state: State) -> list[Any]:
        from gevent import socket as gsocket
        from gevent.server import StreamServer

        from pavis.schema import ServerTls
        from workers.accept import Acceptor
        from workers.conn import serve_connection, serve_tls_connection
        from workers.handshake import TlsHandshake

        runtime = self.runtime
        servers: list[Any] = []
        for lname, sock in self.listeners.items():
            # Accepted sockets inherit TCP_NODELAY from the listener (Linux): one syscall
            # here instead of one per connection.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = next(
                (
                    lst.tls
                    for lst in state.listeners
                    if lst.name == lname and isinstance(lst.tls, ServerTls)
                ),
                None,
            )
            if tls is None:
                handler = functools.partial(serve_connection, runtime, b"http")
                acceptor = Acceptor(sock, handler, runtime.load)
                acceptor.start()
                servers.append(acceptor)
                continue
            gsock = gsocket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
            handshake = TlsHandshake(
                lname,
                _server_context(tls),
                lambda: runtime.state.limits.header_timeout_ms / 1000.0,
                functools.partial(serve_tls_connection, runtime, b"https", lname),
            )
            server = StreamServer(gsock, handshake)
            server.max_accept = 1  # as workers.accept does, for the same reason
            server.start()
            servers.append(server)
            self.tls_servers[lname] = (handshake, tls)
        return servers

    def _new_certificates(self, state: State) -> list[tuple[str, Any, Any, Any]]:
        """(name, handshake, context, tls) for each TLS listener whose material ``state`` changes;
        built before the flip so that a context that cannot be built rejects the
        generation."""
        changed = []
        for lst in state.listeners:
            handshake, tls = self.tls_servers.get(lst.name, (None, None))
            if handshake is not None and lst.tls != tls:
                changed.append((lst.name, handshake, _server_context(lst.tls), lst.tls))
        return changed

    def _build(self, gen: int, registry: Registry) -> State:
        from workers.state import State, load

        seg = self.sub.open(gen)
        try:
            data = bytes(seg.data)  # a private copy: nothing pins the mapping
        finally:
            seg.close()
        header, model = load(data)
        return State(gen, header, model, registry)

    # ------------------------------------------------------------------ generations

    def _follow(self) -> None:
        import gevent
        from gevent.socket import wait_read

        from shm import ShmError

        sub = self.sub
        fd = sub.fileno()
        while not self.stopped.is_set():
            notified = True
            try:
                wait_read(fd, timeout=POLL_S)
            except TimeoutError:
                notified = False
            sub.clear()
            try:
                gen = sub.current()
            except ShmError:  # a supervisor died mid-write: keep serving, look again later
                gevent.sleep(POLL_S)
                continue
            if gen and gen != self.runtime.state.generation and gen != self.rejected:
                self._flip(gen)
            elif notified:
                gevent.sleep(0.05)  # a closed notify pipe stays readable: do not spin

    def _flip(self, gen: int) -> None:
        from pavis.errors import ArtifactError
        from shm import ShmError

        runtime = self.runtime
        try:
            state = self._build(gen, self.registry)
            # Addresses and TLS on/off are fixed at boot; certificates are generation data.
            if _boot_key(state.listeners) != _boot_key(runtime.state.listeners):
                raise ArtifactError(
                    "listeners_changed", "listeners differ from the boot generation"
                )
            certificates = self._new_certificates(state)
        except (ShmError, ArtifactError) as exc:
            self._reject(gen, _reason(exc), str(exc))
            return
        except Exception as exc:  # a state that cannot be built is a rejected generation
            traceback.print_exc()
            self._reject(gen, "build_failed", str(exc))
            return
        if runtime.buckets is None:  # made before the first generation with a rate limit
            runtime.buckets = _attach_buckets(self.name)
        old = runtime.state
        runtime.state = state  # the one reference every new request reads
        for lname, handshake, context, tls in certificates:
            handshake.context = context  # new handshakes use the new certificate
            self.tls_servers[lname] = (handshake, tls)
        self.sub.ack(gen, state.digest)
        self.registry.keep_only(state)
        # ``old`` is freed when its last request ends; dropping it here, after the ack, keeps
        # the free off the flip's critical path.
        del old

    def _reject(self, gen: int, reason: str, detail: str) -> None:
        print(f"pavis worker {self.slot}: generation {gen} rejected: {detail}", file=sys.stderr)
        self.rejected = gen
        self.sub.reject(gen, reason)
        self.registry.keep_only(self.runtime.state)

    def _heartbeat(self) -> None:
        import gevent

        while not self.stopped.is_set():
            self.sub.heartbeat(self.runtime.requests)
            self._publish_stats()
            gevent.sleep(HEARTBEAT_S)

    def _publish_stats(self) -> None:
        from workers.metrics import METRICS

        runtime = self.runtime
        try:
            self.sub.publish_stats(METRICS.snapshot(runtime.requests, runtime.state.clusters))
        except Exception:  # never let metrics stop the heartbeat: the worker would be killed
            traceback.print_exc()

    # ------------------------------------------------------------------ stopping

    def _stop(self) -> None:
        self.stopped.set()

    def _drain(self) -> int:
        import time

        import gevent

        runtime = self.runtime
        runtime.draining = True
        runtime.load.retire()  # the other workers stop leaving connections to this one
        for server in self.servers:
            server.close()
        deadline = time.monotonic() + runtime.state.limits.drain_timeout_ms / 1000.0
        while True:
            for conn in list(runtime.conns):
                if not conn.busy:
                    with contextlib.suppress(OSError):
                        conn.reader.stream.shutdown()
            if runtime.inflight == 0 or time.monotonic() >= deadline:
                break
            gevent.sleep(0.02)
        # The control block may be gone; the worker exits anyway.
        with contextlib.suppress(OSError, ValueError):
            self.sub.heartbeat(runtime.requests)
            self._publish_stats()  # the drained requests count too
        from workers.otlp import EXPORTER

        EXPORTER.close(1.0)  # queued spans get one last export
        self.registry.close()
        return EXIT_OK


def _attach_buckets(name: str) -> Any:
    from workers.ratelimit import attach

    return attach(name)


def _server_context(tls: Any) -> Any:
    """A gevent TLS server context from the PEM text embedded in the artifact."""
    from workers.tls import server_context

    return server_context(tls)


def _boot_key(listeners: Any) -> list[tuple[str, str, int, bool]]:
    """What a listener cannot change after boot: name, address, TLS on or off."""
    from pavis.schema import ServerTls

    return [(lst.name, lst.host, lst.port, isinstance(lst.tls, ServerTls)) for lst in listeners]


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", "") or type(exc).__name__)


__all__ = ["EXIT_ARTIFACT_UNUSABLE", "EXIT_BOOT_FAILED", "EXIT_OK", "run"]
