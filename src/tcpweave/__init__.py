"""tcpweave: packet captures to the exact TCP byte streams the endpoints exchanged.

The whole public surface lives here: :func:`open`, :class:`Capture`, the enums,
the errors and the framer API (``Capture.pdus``).
"""

from __future__ import annotations

from tcpweave._capture_api import Capture, CaptureStats, extract, open
from tcpweave.audit import Audit, Reason, birthday_probability
from tcpweave.decode.table import PACKET_COLUMN_NAMES, PacketTable
from tcpweave.enums import Checksum, ChecksumMode, Fate, GapReason, LinkType, Policy
from tcpweave.errors import CaptureError, TcpweaveError, UsageError
from tcpweave.framing import (
    Delimited,
    Dns,
    FixedSize,
    Framer,
    Http,
    LengthPrefixed,
    Modbus,
    Need,
    Pdu,
    Pdus,
    PduState,
    Skip,
    Tls,
    VarintLength,
)

__all__ = [
    "PACKET_COLUMN_NAMES",
    "Audit",
    "Capture",
    "CaptureError",
    "CaptureStats",
    "Checksum",
    "ChecksumMode",
    "Delimited",
    "Dns",
    "Fate",
    "FixedSize",
    "Framer",
    "GapReason",
    "Http",
    "LengthPrefixed",
    "LinkType",
    "Modbus",
    "Need",
    "PacketTable",
    "Pdu",
    "PduState",
    "Pdus",
    "Policy",
    "Reason",
    "Skip",
    "TcpweaveError",
    "Tls",
    "UsageError",
    "VarintLength",
    "birthday_probability",
    "extract",
    "open",
]
__version__ = "0.1.0"
