"""framing/: PDUs from reassembled streams (sans-I/O framers) and Wireshark Lua dissector export.

A framer answers, for the bytes where a PDU should start: a PDU of n bytes,
need more, or not mine (``api``). The engine (``driver``) drives it over each
direction of each session, across segment boundaries, gaps and mid-stream
starts, and reports every PDU with its frames, timestamps, state and bytes.
Generic framers (``generic``) run as numba kernels; protocol framers
(``protocols``) are plain Python. ``lua`` writes a Wireshark dissector for a
generic framer.
"""

from __future__ import annotations

from tcpweave.framing.api import Answer, Framer, Need, PduState, Skip
from tcpweave.framing.driver import Pdu, Pdus, frame
from tcpweave.framing.generic import (
    Delimited,
    FixedSize,
    GenericFramer,
    LengthPrefixed,
    VarintLength,
)
from tcpweave.framing.protocols import Dns, Http, Modbus, Tls

__all__ = [
    "Answer",
    "Delimited",
    "Dns",
    "FixedSize",
    "Framer",
    "GenericFramer",
    "Http",
    "LengthPrefixed",
    "Modbus",
    "Need",
    "Pdu",
    "PduState",
    "Pdus",
    "Skip",
    "Tls",
    "VarintLength",
    "frame",
]
