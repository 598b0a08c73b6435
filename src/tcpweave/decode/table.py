"""The packet table: one row per TCP packet, columns exactly as in docs/design.md.

Addresses are 16-byte columns: IPv6 as is, IPv4 as IPv4-mapped IPv6
(``::ffff:a.b.c.d``, RFC 4291 §2.5.5.2), so that one fixed-width column serves
both families; ``ip_version`` says which. ``payload_offset`` is the absolute
offset of the TCP payload in the buffer of source ``file`` (see
``Capture.sources``), so writers gather payloads without copying them here.
"""

from __future__ import annotations

import ipaddress
from collections import namedtuple
from typing import Any

import numpy as np
import pyarrow as pa

from tcpweave.enums import Checksum, Encapsulation

#: (name, dtype, shape suffix). Order is the public column order.
PACKET_COLUMNS: tuple[tuple[str, Any, tuple[int, ...]], ...] = (
    ("frame", np.int64, ()),
    ("file", np.int32, ()),
    ("offset", np.int64, ()),
    ("ts_ns", np.int64, ()),
    ("caplen", np.int64, ()),
    ("wirelen", np.int64, ()),
    ("ip_version", np.uint8, ()),
    ("src", np.uint8, (16,)),
    ("dst", np.uint8, (16,)),
    ("sport", np.uint16, ()),
    ("dport", np.uint16, ()),
    ("ttl", np.uint8, ()),
    ("ip_id", np.uint32, ()),
    ("fragmented", np.bool_, ()),
    ("seq", np.uint32, ()),
    ("ack", np.uint32, ()),
    ("flags", np.uint16, ()),
    ("window", np.uint16, ()),
    ("urgent", np.uint16, ()),
    ("tcp_header_len", np.uint8, ()),
    ("payload_offset", np.int64, ()),
    ("payload_len", np.int64, ()),
    ("payload_caplen", np.int64, ()),
    ("ip_checksum", np.uint8, ()),
    ("tcp_checksum", np.uint8, ()),
    ("mss", np.uint16, ()),
    ("wscale", np.int8, ()),
    ("sack_permitted", np.bool_, ()),
    ("ts_present", np.bool_, ()),
    ("ts_val", np.uint32, ()),
    ("ts_ecr", np.uint32, ()),
    # the innermost IP tunnel the packet came through (docs/encapsulations.md): its kind
    # (tcpweave.Encapsulation, 0 none), its id (VNI, GRE key, TEID, ERSPAN session) and the
    # outer header's addresses
    ("tunnel", np.uint8, ()),
    ("tunnel_id", np.uint32, ()),
    ("tunnel_src", np.uint8, (16,)),
    ("tunnel_dst", np.uint8, (16,)),
)

PACKET_COLUMN_NAMES = tuple(name for name, _, _ in PACKET_COLUMNS)
#: Arrow types of the packet table where they are not the numpy column's own
TS_TYPE = pa.timestamp("ns", tz="UTC")
#: the checksum states by code (``tcpweave.Checksum``), the dictionary of those columns
CHECKSUM_NAMES = pa.array([str(c) for c in sorted(Checksum)])
PacketColumns = namedtuple("PacketColumns", PACKET_COLUMN_NAMES)  # type: ignore[misc]

# TCP flag bits as in the header's 12-bit flags field (RFC 9293 §3.1, RFC 3168 for ECE/CWR)
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, AE = (
    0x001,
    0x002,
    0x004,
    0x008,
    0x010,
    0x020,
    0x040,
    0x080,
    0x100,
)
#: one letter per TCP flag, bit 0 (FIN) upwards: FIN SYN RST PSH ACK URG ECE CWR AE
FLAG_LETTERS = "FSRPAUECN"


def flag_string(flags: int) -> str:
    """Flags as letters in bit order (e.g. ``SA`` for SYN+ACK), ``.`` when none is set."""
    return "".join(c for i, c in enumerate(FLAG_LETTERS) if flags >> i & 1) or "."


#: Encapsulation values whose id is the same both ways and so keys flows (the one list:
#: tcpweave.enums.Encapsulation.id_keys_flows says why)
_ID_KEYS_FLOWS = np.array([int(e) for e in Encapsulation if e.id_keys_flows], np.uint8)


def tunnel_key(cols: Any) -> np.ndarray | None:
    """Five 64-bit words per row naming the tunnel a packet came through, the same for both
    directions, or None when no row came through one (docs/encapsulations.md): kind and id
    (the id only where it is the same both ways), then the outer addresses as a sorted
    pair. Rows outside tunnels have all-zero words."""
    kind = cols.tunnel
    if not kind.any():
        return None
    ident = np.where(np.isin(kind, _ID_KEYS_FLOWS), cols.tunnel_id, 0).astype(np.uint64)
    a = np.ascontiguousarray(cols.tunnel_src).view(">u8")
    b = np.ascontiguousarray(cols.tunnel_dst).view(">u8")
    a_gt_b = (a[:, 0] > b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] > b[:, 1]))
    lo = np.where(a_gt_b[:, None], b, a)
    hi = np.where(a_gt_b[:, None], a, b)
    head = (kind.astype(np.uint64) << np.uint64(32)) | ident
    return np.stack([head, lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1]]).astype(np.uint64)


#: columns the decoder writes only for tunnelled rows (a table for it must hold zeros there)
TUNNEL_DETAIL_COLUMNS = ("tunnel_id", "tunnel_src", "tunnel_dst")


def empty_packets(n: int, zeroed: bool = True) -> Any:
    """Packet columns for ``n`` rows: zeroed, or left as allocated for a writer of every cell
    (the decoder), but for TUNNEL_DETAIL_COLUMNS, always zeroed."""
    return PacketColumns(
        *(
            (np.zeros if zeroed or name in TUNNEL_DETAIL_COLUMNS else np.empty)((n, *shape), dtype)
            for name, dtype, shape in PACKET_COLUMNS
        )
    )


def zero_tunnel_details(cols: Any, n: int) -> None:
    """Zero the tunnel details of rows [0, n) of a table the decoder will fill again (only
    tunnelled rows have any)."""
    if cols.tunnel[:n].any():
        for name in TUNNEL_DETAIL_COLUMNS:
            getattr(cols, name)[:n] = 0


def concat_packets(parts: list[Any]) -> Any:
    if not parts:
        return empty_packets(0)
    if len(parts) == 1:
        return parts[0]
    return PacketColumns(*(np.concatenate(cols) for cols in zip(*parts, strict=True)))


def take_packets(cols: Any, index: Any) -> Any:
    """Rows ``index`` (a slice, mask or integer array) of every column."""
    return PacketColumns(*(col[index] for col in cols))


def format_address(raw: np.ndarray, ip_version: int) -> str:
    """The usual printed form of a 16-byte address column entry."""
    if ip_version == 4:
        a, b, c, d = raw[12:16].tolist()
        return f"{a}.{b}.{c}.{d}"
    return str(ipaddress.IPv6Address(bytes(raw)))


_V4_MAPPED = bytes(10) + b"\xff\xff"


def format_tunnel_address(raw: bytes | np.ndarray) -> str:
    """A tunnel's outer address, printed: IPv4 when stored IPv4-mapped (the column has no
    version of its own; an outer IPv6 header holding a mapped address is not expected)."""
    data = bytes(raw)
    return format_address(np.frombuffer(data, np.uint8), 4 if data[:12] == _V4_MAPPED else 6)


class PacketTable:
    """Columnar packet table: numpy columns by attribute, an Arrow view by :meth:`to_arrow`."""

    def __init__(self, columns: Any) -> None:
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns.frame)

    def __getattr__(self, name: str) -> np.ndarray:
        cols = self.__dict__.get("columns")
        if cols is not None and name in PACKET_COLUMN_NAMES:
            return getattr(cols, name)  # type: ignore[no-any-return]
        raise AttributeError(name)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in PACKET_COLUMN_NAMES:
            raise KeyError(name)
        return getattr(self.columns, name)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"PacketTable({len(self)} packets)"

    def gather(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Column ``name`` at ``rows`` (columns read from disk on demand gather just those
        rows, without holding the whole column)."""
        take = getattr(self.columns, "gather", None)
        if take is not None:
            return take(name, rows)  # type: ignore[no-any-return]
        return np.asarray(self[name][rows])

    def address_strings(self, which: str) -> list[str]:
        """``src`` or ``dst`` as printed addresses."""
        col = self[which]
        versions = self.columns.ip_version
        return [format_address(col[i], int(versions[i])) for i in range(len(self))]

    def to_arrow(self) -> pa.Table:
        """Arrow view, zero-copy where the types allow (docs/records.md): addresses as
        fixed_size_binary(16), ``ts_ns`` as timestamp[ns, UTC], the checksum states as
        dictionary-encoded strings (``ok``, ``bad``, ``unknown``, ``none``)."""
        arrays = []
        for name, _, shape in PACKET_COLUMNS:
            col = getattr(self.columns, name)
            if shape:
                col = np.ascontiguousarray(col)
                arrays.append(
                    pa.FixedSizeBinaryArray.from_buffers(
                        pa.binary(shape[0]), len(col), [None, pa.py_buffer(col)]
                    )
                )
            elif name == "ts_ns":
                col = np.ascontiguousarray(col, np.int64)
                arrays.append(pa.Array.from_buffers(TS_TYPE, len(col), [None, pa.py_buffer(col)]))
            elif name in ("ip_checksum", "tcp_checksum"):
                indices = pa.array(np.asarray(col).view(np.int8))
                arrays.append(pa.DictionaryArray.from_arrays(indices, CHECKSUM_NAMES))
            else:
                arrays.append(pa.array(col))
        return pa.Table.from_arrays(arrays, names=list(PACKET_COLUMN_NAMES))

    def to_parquet(self, path: str) -> None:
        """Write the packet table as a Parquet file."""
        import pyarrow.parquet as pq

        pq.write_table(self.to_arrow(), path)
