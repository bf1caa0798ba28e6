"""POSIX shared-memory publication of opaque, checksummed generations.

Owns: one segment per generation, the control block (current generation, worker slots),
notification, acknowledgements and reclaiming leftovers. Must not: know anything of HTTP,
configuration, artifacts or gevent — it moves bytes and generation numbers between processes.
"""
