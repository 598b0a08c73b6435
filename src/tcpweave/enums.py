"""Named states used in tables and outputs: one IntEnum each, with its string."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Checksum", "LinkType"]


class Checksum(IntEnum):
    """Result of verifying a checksum (packet-table columns ``ip_checksum``, ``tcp_checksum``)."""

    UNKNOWN = 0  # not all covered bytes were captured, so it could not be verified
    OK = 1
    BAD = 2
    NONE = 3  # the header has no checksum (IPv6)

    def __str__(self) -> str:
        return self.name.lower()


class LinkType(IntEnum):
    """LINKTYPE_* values tcpweave decodes (https://www.tcpdump.org/linktypes.html)."""

    NULL = 0
    ETHERNET = 1
    RAW = 101
    LOOP = 108
    LINUX_SLL = 113
    IPV4 = 228
    IPV6 = 229
    LINUX_SLL2 = 276
    IPOIB = 242
    # DLT_RAW values that some platforms write in place of LINKTYPE_RAW
    DLT_RAW_12 = 12
    DLT_RAW_14 = 14
