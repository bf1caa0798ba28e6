"""The fleet relay: one sealed artifact for many hosts, distributed through etcd.

Owns: the key layout in etcd (``layout``), reading and verifying what is stored there
(``store``), and moving the desired pointer (``publish``). The relay carries sealed ``.pvs``
bytes only: it verifies them with ``pavis.artifact`` and never reinterprets them.
Must not: import the supervisor, the workers or shared memory; hosts follow the fleet through
their own supervisor.
"""
