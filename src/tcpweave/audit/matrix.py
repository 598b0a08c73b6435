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

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tcpweave._jit import buffer_list
from tcpweave.capture import Source
from tcpweave.decode.table import FIN, FLAG_LETTERS, RST, PacketTable, flag_string
from tcpweave.enums import Checksum, Fate
from tcpweave.flows import Flows
from tcpweave.reassembly import Plan

from . import _kernels as k

#: an occurrence count stops here (a payload seen this often is ambiguous anyway)
MAX_OCCURRENCES = 1000
#: per direction, only windows ending within the first 1 GiB of the stream are searched
MAX_SCAN_BYTES = 1 << 30
#: payloads counted between two calls of ``build_matrix``'s ``release`` (the capture pages
#: read for them, a few KiB each, are then dropped: a worker's resident pages stay bounded)
RELEASE_EVERY = 4096

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

    def to_arrow(self, global_index: np.ndarray | None = None) -> pa.Table:
        """The matrix as Arrow (:data:`MATRIX_SCHEMA`); ``global_index`` renumbers the streams
        (a partition's local sessions to the capture's stream indexes)."""
        c = self.columns
        stream = c["stream"] if global_index is None else global_index[c["stream"]]
        fate = c["fate"]
        cols: dict[str, Any] = {name: c[name] for name in MATRIX_COLUMNS}
        cols["stream"] = stream
        cols["occurrences"] = pa.array(c["occurrences"], mask=c["occurrences"] < 0)
        cols["stream_offset"] = pa.array(c["stream_offset"], mask=~self.placed)
        cols["direction"] = pc.take(_DIRECTIONS, pa.array(c["direction"].astype(np.int64)))
        cols["flags"] = pc.take(_FLAG_NAMES, pa.array(c["flags"].astype(np.int64) & 0x1FF))
        cols["fate"] = pc.take(_FATE_NAMES, pa.array(fate.astype(np.int64), mask=fate < 0))
        return pa.table(
            [v if isinstance(v, pa.Array) else pa.array(v) for v in cols.values()],
            schema=MATRIX_SCHEMA,
        )

    def write(self, path: str) -> None:
        """Parquet when ``path`` ends in .parquet, else CSV."""
        with MatrixWriter(path) as out:
            out.write(self.to_arrow())


class MatrixWriter:
    """Writes matrix tables one after the other into one file: Parquet (a row group per
    table) when ``path`` ends in .parquet, else CSV (one header)."""

    def __init__(self, path: str) -> None:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            self._out: Any = pq.ParquetWriter(path, MATRIX_SCHEMA)
        else:
            import pyarrow.csv as pcsv

            self._out = pcsv.CSVWriter(path, MATRIX_SCHEMA)
        self._empty = True

    def write(self, table: pa.Table) -> None:
        if len(table) or self._empty:
            self._out.write_table(table)
            self._empty = False

    def __enter__(self) -> MatrixWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._empty:  # a CSV header (and a Parquet file) even without any row
            self._out.write_table(MATRIX_SCHEMA.empty_table())
        self._out.close()


MATRIX_SCHEMA = pa.schema([
    ("stream", pa.int64()), ("direction", pa.string()), ("frame", pa.int64()),
    ("ts_ns", pa.int64()), ("missing_len", pa.int64()), ("payload_len", pa.int64()),
    ("occurrences", pa.int64()), ("stream_offset", pa.int64()), ("seq", pa.uint32()),
    ("seq_rel", pa.int64()), ("checksum_ok", pa.bool_()), ("flags", pa.string()),
    ("fate", pa.string()),
])  # fmt: skip
_DIRECTIONS = pa.array(["c2s", "s2c"])
_FLAG_NAMES = pa.array([flag_string(f) for f in range(1 << len(FLAG_LETTERS))])
_FATE_NAMES = pa.array([str(f) for f in sorted(Fate)])


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
    release: Callable[[], None] | None = None,
) -> Matrix:
    """The matrix of every packet. ``release`` (when given) is called after every
    :data:`RELEASE_EVERY` payloads counted, to drop the capture's pages read so far."""
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
                                       max_scan, release)  # fmt: skip
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
    release: Callable[[], None] | None = None,
) -> np.ndarray:
    """Occurrences per matrix row (-1: no payload or not counted); directions are counted a
    block at a time (about RELEASE_EVERY payloads), ``release`` called after each."""
    out = np.full(len(order), -1, np.int64)
    has = np.flatnonzero(packets.payload_caplen[order] > 0)
    rows = plan.rows
    kept = np.flatnonzero(Fate.kept_in(rows["fate"]))
    kept_keys = rows["stream"][kept] * 2 + rows["direction"][kept]
    slots = np.append(dir_keys, np.iinfo(np.int64).max)
    kept_bounds = np.searchsorted(kept_keys, slots).astype(np.int64)
    pkt_bounds = np.searchsorted(sorted_keys[has], slots).astype(np.int64)
    pkt_row = order[has]
    counts = np.empty(len(has), np.int64)
    cuts = [0, len(dir_keys)]
    if release is not None:  # direction boundaries about RELEASE_EVERY payloads apart
        at = np.searchsorted(pkt_bounds, np.arange(RELEASE_EVERY, len(has), RELEASE_EVERY))
        cuts = sorted({0, len(dir_keys), *np.minimum(at, len(dir_keys)).tolist()})
    bufs = buffer_list([s.buffer for s in sources])
    k_offset, k_start = rows["stream_offset"][kept], rows["payload_start"][kept]
    k_file, k_len = rows["file"][kept], rows["length"][kept]
    pkt_offset = offset[pkt_row]
    for lo, hi in itertools.pairwise(cuts):
        with np.errstate(over="ignore"):  # the prefix hash multiplies modulo 2^64 on purpose
            k.count_occurrences(
                bufs,
                kept_bounds[lo : hi + 1],
                k_offset,
                k_start,
                k_file,
                k_len,
                pkt_bounds[lo : hi + 1],
                pkt_row,
                pkt_offset,
                packets.payload_offset,
                packets.payload_caplen,
                packets.file,
                max_scan,
                MAX_OCCURRENCES,
                counts,
            )
        if release is not None:
            release()
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
