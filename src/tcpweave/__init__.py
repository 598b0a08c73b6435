"""tcpweave: packet captures to the exact TCP byte streams the endpoints exchanged.

The whole public surface lives here: :func:`open`, :func:`extract`,
:class:`Capture`, every type their results are made of, the enums, the errors, the
framer API (``Capture.pdus``) and the engine (:class:`Run`, :class:`Settings`).

Each name is imported on first use (``tcpweave._lazy``): ``import tcpweave`` alone loads
neither numpy, pyarrow nor numba, so that the command line starts quickly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tcpweave import _lazy

if TYPE_CHECKING:
    from tcpweave._capture_api import Capture, CaptureStats, extract, open
    from tcpweave.audit import Audit, Matrix, Reason, birthday_probability
    from tcpweave.decode.table import PACKET_COLUMN_NAMES, PacketTable
    from tcpweave.enums import (
        Checksum,
        ChecksumMode,
        Close,
        ConnState,
        Encapsulation,
        Fate,
        GapReason,
        LinkType,
        Policy,
    )
    from tcpweave.errors import CaptureError, Interrupted, SignalReceived, TcpweaveError, UsageError
    from tcpweave.flows import Flows
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
    from tcpweave.framing.objects import HttpObject, ObjectState
    from tcpweave.output.extract import ExtractSummary
    from tcpweave.output.store import Store, open_store
    from tcpweave.output.streams import (
        BlockColumns,
        Chunk,
        Conflict,
        Direction,
        Gap,
        Gathered,
        Stream,
        StreamViews,
    )
    from tcpweave.reassembly import Plan
    from tcpweave.run import Partition, Run, Settings
    from tcpweave.run.carving import CarveSummary, carve
    from tcpweave.run.objects import write_objects

__all__ = [
    "PACKET_COLUMN_NAMES",
    "Audit",
    "BlockColumns",
    "Capture",
    "CaptureError",
    "CaptureStats",
    "CarveSummary",
    "Checksum",
    "ChecksumMode",
    "Chunk",
    "Close",
    "Conflict",
    "ConnState",
    "Delimited",
    "Direction",
    "Dns",
    "Encapsulation",
    "ExtractSummary",
    "Fate",
    "FixedSize",
    "Flows",
    "Framer",
    "Gap",
    "GapReason",
    "Gathered",
    "Http",
    "HttpObject",
    "Interrupted",
    "LengthPrefixed",
    "LinkType",
    "Matrix",
    "Modbus",
    "Need",
    "ObjectState",
    "PacketTable",
    "Partition",
    "Pdu",
    "PduState",
    "Pdus",
    "Plan",
    "Policy",
    "Reason",
    "Run",
    "Settings",
    "SignalReceived",
    "Skip",
    "Store",
    "Stream",
    "StreamViews",
    "TcpweaveError",
    "Tls",
    "UsageError",
    "VarintLength",
    "birthday_probability",
    "carve",
    "extract",
    "open",
    "open_store",
    "write_objects",
]
__version__ = "0.1.0"

__getattr__, __dir__ = _lazy.attach(
    __name__,
    {
        "tcpweave._capture_api": ("Capture", "CaptureStats", "extract", "open"),
        "tcpweave.audit": ("Audit", "Matrix", "Reason", "birthday_probability"),
        "tcpweave.decode.table": ("PACKET_COLUMN_NAMES", "PacketTable"),
        "tcpweave.enums": (
            "Checksum",
            "ChecksumMode",
            "Close",
            "ConnState",
            "Encapsulation",
            "Fate",
            "GapReason",
            "LinkType",
            "Policy",
        ),
        "tcpweave.errors": (
            "CaptureError",
            "Interrupted",
            "SignalReceived",
            "TcpweaveError",
            "UsageError",
        ),
        "tcpweave.flows": ("Flows",),
        "tcpweave.framing": (
            "Delimited",
            "Dns",
            "FixedSize",
            "Framer",
            "Http",
            "LengthPrefixed",
            "Modbus",
            "Need",
            "Pdu",
            "Pdus",
            "PduState",
            "Skip",
            "Tls",
            "VarintLength",
        ),
        "tcpweave.framing.objects": ("HttpObject", "ObjectState"),
        "tcpweave.output.extract": ("ExtractSummary",),
        "tcpweave.output.store": ("Store", "open_store"),
        "tcpweave.run.objects": ("write_objects",),
        "tcpweave.output.streams": (
            "BlockColumns",
            "Chunk",
            "Conflict",
            "Direction",
            "Gap",
            "Gathered",
            "Stream",
            "StreamViews",
        ),
        "tcpweave.reassembly": ("Plan",),
        "tcpweave.run": ("Partition", "Run", "Settings"),
        "tcpweave.run.carving": ("CarveSummary", "carve"),
    },
)
