"""The verification matrix: one row per packet, per direction, sorted by sequence number.

For each packet: timestamp, bytes the capture cut off (``len - caplen``),
payload length, how often its payload occurs in the reassembled stream, the
stream offset where the plan placed it, raw and relative sequence number,
checksum, flags and fate. Rows are sorted by (stream, direction, offset,
frame), and the no-hole relation ``s'_i = s'_{i-1} + lambda_{i-1}`` is checked
down each direction: every break is listed as a gap or an overlap.

Occurrences are counted by ``count_occurrences`` over the direction's kept
bytes (gaps are never bridged). Two documented caps keep the cost linear: a
count stops at :data:`MAX_OCCURRENCES`, and only the first
:data:`MAX_SCAN_BYTES` of a direction are searched (a packet placed beyond
that gets no count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from numba.typed import List as TypedList

from tcpweave.capture import Source
from tcpweave.decode.table import FIN, RST, PacketTable
from tcpweave.enums import Checksum, Fate
from tcpweave.flows import Flows
from tcpweave.reassembly import Plan

from . import _kernels as k

#: an occurrence count stops here (a payload seen this often is ambiguous anyway)
MAX_OCCURRENCES = 1000
#: per direction, only windows ending within the first 1 GiB of the stream are searched
MAX_SCAN_BYTES = 1 << 30
_FLAG_LETTERS = "FSRPAUECN"

MATRIX_COLUMNS = (
    "stream", "direction", "frame", "ts_ns", "missing_len", "payload_len", "occurrences",
    "stream_offset", "seq", "seq_rel", "checksum_ok", "flags", "fate",
)  # fmt: skip


@dataclass
class Matrix:
    """The matrix (numpy columns, in matrix order) and the continuity breaks.

    ``occurrences`` is -1 where not counted (no payload, or beyond the scan cap);
    ``stream_offset`` is the plan's placement, ``placed`` False where the plan
    has no row for the packet (no payload); ``fate`` is -1 there.
    ``breaks``: stream, direction, kind (0 gap, 1 overlap), offset, length, frame.
    """

    columns: dict[str, np.ndarray]
    placed: np.ndarray
    breaks: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.columns["frame"])

    def to_arrow(self) -> pa.Table:
        c = self.columns
        cols: dict[str, Any] = {name: c[name] for name in MATRIX_COLUMNS}
        cols["occurrences"] = pa.array(c["occurrences"], mask=c["occurrences"] < 0)
        cols["stream_offset"] = pa.array(c["stream_offset"], mask=~self.placed)
        cols["direction"] = np.where(c["direction"] == 0, "c2s", "s2c")
        cols["flags"] = np.array([_flag_string(int(f)) for f in c["flags"]], dtype=object)
        cols["fate"] = pa.array(
            [str(Fate(int(f))) if f >= 0 else None for f in c["fate"]], pa.string()
        )
        return pa.table({name: pa.array(v) if not isinstance(v, pa.Array) else v
                         for name, v in cols.items()})  # fmt: skip

    def write(self, path: str) -> None:
        """Parquet when ``path`` ends in .parquet, else CSV."""
        table = self.to_arrow()
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            pq.write_table(table, path)
        else:
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, path)


def _flag_string(flags: int) -> str:
    return "".join(c for i, c in enumerate(_FLAG_LETTERS) if flags >> i & 1) or "."


def _plan_per_packet(plan: Plan, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per packet: the plan's offset of its first byte (or NOT_PLACED) and that row's fate.

    Plan rows are sorted by direction then offset, so a packet's first row holds
    its lowest offset.
    """
    offset = np.full(n, k.NOT_PLACED, np.int64)
    fate = np.full(n, -1, np.int8)
    rows, first = np.unique(plan.rows["row"], return_index=True)
    offset[rows] = plan.rows["stream_offset"][first]
    fate[rows] = plan.rows["fate"][first]
    return offset, fate


def build_matrix(
    packets: PacketTable,
    flows: Flows,
    plan: Plan,
    sources: list[Source],
    max_scan: int = MAX_SCAN_BYTES,
) -> Matrix:
    n = len(packets)
    key = flows.stream * 2 + flows.direction
    by_dir = np.argsort(key, kind="stable")
    dir_keys, dir_start = np.unique(key[by_dir], return_index=True)
    dir_start = np.append(dir_start, n).astype(np.int64)
    plan_keys = plan.directions["stream"] * 2 + plan.directions["direction"]
    base = plan.directions["base_seq"][np.searchsorted(plan_keys, dir_keys)]
    plan_offset, fate = _plan_per_packet(plan, n)
    offset = np.empty(n, np.int64)
    k.place_packets(by_dir, dir_start, base, packets.seq, plan_offset, offset)
    order = np.lexsort((packets.frame, offset, key))
    cols = _columns(packets, flows, order, offset, plan_offset, fate)
    sorted_keys = key[order]
    cols["occurrences"] = _occurrences(packets, plan, sources, order, sorted_keys, offset, dir_keys,
                                       max_scan)  # fmt: skip
    breaks = _breaks(packets, cols, order, sorted_keys, fate)
    return Matrix(cols, plan_offset[order] != k.NOT_PLACED, breaks)


def _columns(
    packets: PacketTable,
    flows: Flows,
    order: np.ndarray,
    offset: np.ndarray,
    plan_offset: np.ndarray,
    fate: np.ndarray,
) -> dict[str, np.ndarray]:
    p = packets
    ok = (p.ip_checksum[order] != Checksum.BAD) & (p.tcp_checksum[order] != Checksum.BAD)
    return {
        "stream": flows.stream[order],
        "direction": flows.direction[order],
        "frame": p.frame[order],
        "ts_ns": p.ts_ns[order],
        "missing_len": p.wirelen[order] - p.caplen[order],
        "payload_len": p.payload_len[order],
        "stream_offset": np.where(plan_offset[order] != k.NOT_PLACED, offset[order], 0),
        "seq": p.seq[order],
        "seq_rel": offset[order] + 1,  # as Wireshark's relative numbers: the SYN is 0
        "checksum_ok": ok,
        "flags": p.flags[order],
        "fate": fate[order],
    }


def _occurrences(
    packets: PacketTable,
    plan: Plan,
    sources: list[Source],
    order: np.ndarray,
    sorted_keys: np.ndarray,
    offset: np.ndarray,
    dir_keys: np.ndarray,
    max_scan: int,
) -> np.ndarray:
    """Occurrences per matrix row (-1: no payload or not counted)."""
    out = np.full(len(order), -1, np.int64)
    has = np.flatnonzero(packets.payload_caplen[order] > 0)
    rows = plan.rows
    kept = np.flatnonzero((rows["fate"] == Fate.NEW) | (rows["fate"] == Fate.OVERLAP_CONFLICT_KEPT))
    kept_keys = rows["stream"][kept] * 2 + rows["direction"][kept]
    slots = np.append(dir_keys, np.iinfo(np.int64).max)
    kept_bounds = np.searchsorted(kept_keys, slots).astype(np.int64)
    pkt_bounds = np.searchsorted(sorted_keys[has], slots).astype(np.int64)
    pkt_row = order[has]
    counts = np.empty(len(has), np.int64)
    with np.errstate(over="ignore"):  # the prefix hash multiplies modulo 2^64 on purpose
        k.count_occurrences(
            TypedList([s.buffer for s in sources]),
            kept_bounds,
            rows["stream_offset"][kept],
            rows["payload_start"][kept],
            rows["file"][kept],
            rows["length"][kept],
            pkt_bounds,
            pkt_row,
            offset[pkt_row],
            packets.payload_offset,
            packets.payload_caplen,
            packets.file,
            max_scan,
            MAX_OCCURRENCES,
            counts,
        )
    out[has] = counts
    return out


def _breaks(
    packets: PacketTable,
    cols: dict[str, np.ndarray],
    order: np.ndarray,
    sorted_keys: np.ndarray,
    fate: np.ndarray,
) -> dict[str, np.ndarray]:
    """Continuity breaks over the segments that claim sequence space.

    Those are data segments (not keep-alive probes, not RST payloads) and FINs;
    each advances by its payload length as the header claims it (lambda).
    """
    flags = cols["flags"]
    f = fate[order]
    data = (cols["payload_len"] > 0) & (f != Fate.KEEPALIVE) & (f != Fate.RST_DATA)
    take = np.flatnonzero((data | ((flags & FIN) != 0)) & ((flags & RST) == 0))
    seg_keys = sorted_keys[take]
    starts = np.flatnonzero(np.r_[True, seg_keys[1:] != seg_keys[:-1]]) if len(take) else take
    bounds = np.append(starts, len(take)).astype(np.int64)
    seg_offset = cols["seq_rel"][take] - 1
    seg_len = np.ascontiguousarray(cols["payload_len"][take])
    capacity = 1024
    while True:
        out = np.empty((4, capacity), np.int64)
        n = int(k.check_continuity(bounds, seg_offset, seg_len, out))
        if n <= capacity:
            break
        capacity = n
    at = take[out[1, :n]]
    return {
        "stream": cols["stream"][at],
        "direction": cols["direction"][at],
        "kind": out[0, :n],
        "offset": out[2, :n],
        "length": out[3, :n],
        "frame": cols["frame"][at],
    }
