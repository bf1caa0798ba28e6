"""The gevent worker runtime: executes a sealed artifact as an HTTP/1.1 reverse proxy.

Owns: the per-generation state swap, request routing (through ``pavis.lookup``), proxying,
upstream pools, health checks and per-worker metrics. Must not: import the compiler, the
supervisor, the store or the CLI, nor apply any default — whatever it needs is in the
artifact. gevent is patched only at the worker entry point, after fork.
"""

from workers import _build

_build.choose()  # before any request-path module is imported: compiled or sources
