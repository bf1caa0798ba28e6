"""The supervisor: sockets, worker processes, signals, the control socket, reload and rollback.

Owns: everything that runs in the `pavis serve` parent process. Must not: import gevent or
the worker runtime at module level (the worker entry is imported only in a forked child),
nor serve HTTP requests of the data plane.
"""
