"""fastproto: a user-space TCP/IP stack whose compiled core demultiplexes
batches of frames straight into per-socket queues.

The compiled core (``fastproto._core``) does the per-packet work on batches,
without the GIL; the names below are its public face.  See ``docs/``.
"""
from fastproto._core.buffers import Batch, BufferPool
from fastproto._core.demux import Demux
from fastproto._core.parse import PARSED_DTYPE, Flag, Status, parse, parse_frames, status_counts
from fastproto._core.pcbtable import PCBTable
from fastproto._core.pcq import PCQ
from fastproto._core.serializer import Serializer, serialized
from fastproto import checksum
from fastproto.stack import Stack

__version__ = "0.1.0"

__all__ = [
    "Batch", "BufferPool", "Demux", "PARSED_DTYPE", "Flag", "Status", "parse", "parse_frames",
    "status_counts", "PCBTable", "PCQ", "Serializer", "serialized", "checksum", "Stack", "__version__",
]
