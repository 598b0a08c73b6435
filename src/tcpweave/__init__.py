"""tcpweave: packet captures to the exact TCP byte streams the endpoints exchanged.

The whole public surface lives here: :func:`open`, :class:`Capture`, the enums
and the errors.
"""

from __future__ import annotations

from tcpweave._capture_api import Capture, CaptureStats, open
from tcpweave.decode.table import PACKET_COLUMN_NAMES, PacketTable
from tcpweave.enums import Checksum, ChecksumMode, Fate, GapReason, LinkType, Policy
from tcpweave.errors import CaptureError, TcpweaveError, UsageError

__all__ = [
    "PACKET_COLUMN_NAMES",
    "Capture",
    "CaptureError",
    "CaptureStats",
    "Checksum",
    "ChecksumMode",
    "Fate",
    "GapReason",
    "LinkType",
    "PacketTable",
    "Policy",
    "TcpweaveError",
    "UsageError",
    "open",
]
__version__ = "0.1.0"
