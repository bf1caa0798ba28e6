"""POSIX shared-memory publication of opaque, checksummed generations.

Owns: one segment per generation, the control block (current generation, worker slots),
notification, acknowledgements and reclaiming leftovers. Must not: know anything of HTTP,
configuration, artifacts or gevent — it moves bytes and generation numbers between processes.
"""

from shm.control import SlotInfo
from shm.errors import AckTimeout, InstanceBusy, ShmError, WorkerRejected
from shm.publisher import Publisher
from shm.segment import Segment
from shm.subscriber import Subscriber

__all__ = [
    "AckTimeout",
    "InstanceBusy",
    "Publisher",
    "Segment",
    "ShmError",
    "SlotInfo",
    "Subscriber",
    "WorkerRejected",
]
