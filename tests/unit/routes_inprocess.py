"""A generation's routes built in-process, as a worker builds them, from YAML text."""

from __future__ import annotations

from pavis import artifact
from pavis.compiler import compile_text
from workers.request import Request, settle_head
from workers.state import Registry, RouteRT, State, load


def state_of(
    routes: str, clusters: str = 'clusters: [{name: c, endpoints: ["127.0.0.1:9"]}]\n'
) -> State:
    """``routes``: the YAML list of one catch-all virtual host's routes."""
    text = (
        'version: 1\nlisteners: [{name: public, address: "127.0.0.1:8080"}]\n'
        f"{clusters}virtual_hosts:\n  - name: main\n    domains: ['*']\n    routes:\n{routes}"
    )
    header, model = load(artifact.seal(compile_text(text, "yaml")))
    return State(1, header, model, Registry())  # endpoints are only made, never started


def route(state: State, name: str) -> RouteRT:
    for i in range(len(state.routes)):
        rt = state.route(i)
        if rt.name == name:
            return rt
    raise KeyError(name)


def request(method: bytes, target: bytes, *headers: tuple[bytes, bytes]) -> Request:
    """A request head as ``workers.http.ClientReader`` hands it on (HTTP/1.1)."""
    req = Request()
    req.method = method
    req.target = target
    for name, value in headers:
        req.headers.append((name, value))
        low = name.lower()
        if low == b"host":
            req.host = value
        elif low == b"connection":
            req.connection = value
        elif low == b"x-forwarded-for":
            req.xff = value
        elif low == b"via":
            req.via = value
        elif low == b"x-request-id":
            req.request_id = value
    settle_head(req, "1.1")
    req.keep_alive = True
    return req
