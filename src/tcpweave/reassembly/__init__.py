"""reassembly/: per direction, unwrap sequence numbers, place bytes, resolve overlaps -> plan.

``plan`` walks each direction (packets grouped by stream and direction, in
capture order) with the ``plan_directions`` kernel and returns the plan table
-- one row per maximal run of one segment's bytes with one fate -- plus
per-direction facts, gaps and conflicts. Payload bytes stay in the capture: a
plan row points at them (file, payload_start).

The rules (docs/reassembly-rules.md, with their sources):

* Window (RFC 9293 §3.10.7.4): a data segment is outside when it starts at or
  beyond max(highest ACK its receiver sent in the whole capture, end of the
  sender's bytes shown without a hole from offset 0) + the largest window the
  receiver advertised, scaled as RFC 7323 §2.2-2.3 say, + 1 MiB. Only when the
  receiver has no packet at all: more than 1 GiB past the furthest end placed.
* FIN (RFC 9293 §3.10.7.4, FIN check): bytes at or beyond the lowest acceptable
  FIN are ``after-fin``, whatever the arrival order; the direction ends there.
* Conflicts: every byte that differs from the copy held is in a record; a
  segment's first 8 records are exact, later ones gather its differing bytes per
  run of held bytes with one verdict, so that records and rows stay O(packets).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa

from tcpweave._jit import buffer_list
from tcpweave.capture import Source
from tcpweave.decode.table import ACK, RST, PacketTable
from tcpweave.enums import Checksum, ChecksumMode, Fate, GapReason, Policy
from tcpweave.flows import Flows
from tcpweave.reassembly import _kernels as k
from tcpweave.reassembly._policy import NEW_WINS
from tcpweave.reassembly.offload import checksum_evidence, offloaded_hosts, sender_offloaded

__all__ = ["SECTION_SEGMENTS", "Plan", "plan"]

#: segments placed at a time in a long direction (the placement arrays are ~300 bytes a
#: segment: a section holds them to ~20 MB, whatever the direction's length)
SECTION_SEGMENTS = 1 << 16


@dataclass
class Plan:
    """The reassembly plan and what it found, as numpy columns.

    ``rows``: frame, row (packet-table row), stream, direction, stream_offset,
    payload_start, file, length, fate -- sorted by stream, direction, offset. A row is a
    maximal run of one segment's bytes with one fate; each captured payload byte is in
    exactly one row.
    ``directions``: one row per (stream, direction) seen (``drops_bad_checksums``: whether
    its segments with a bad TCP checksum were dropped, by the checksum mode).
    ``gaps``: stream, direction, offset, length, reason.
    ``conflicts``: stream, direction, offset, length, kept_frame, dropped_frame (the frames
    at ``offset``; a segment's records past its eighth may span equal bytes and other
    frames, see docs/reassembly-rules.md).
    """

    rows: dict[str, np.ndarray]
    directions: dict[str, np.ndarray]
    gaps: dict[str, np.ndarray]
    conflicts: dict[str, np.ndarray]
    policy: Policy
    checksums: ChecksumMode

    @cached_property
    def _direction_keys(self) -> np.ndarray:
        return np.asarray(self.directions["stream"] * 2 + self.directions["direction"])

    def to_arrow(self, table: str = "rows") -> pa.Table:
        """One of the plan's tables (rows, directions, gaps, conflicts) as Arrow; fate and gap
        reason are given as their strings. The rows' ``dir`` (their place in the
        ``directions`` table, an index internal to this plan) is left out."""
        cols = dict(getattr(self, table))
        if table == "rows":
            cols.pop("dir", None)
        if "fate" in cols:
            cols["fate"] = np.array([str(Fate(int(v))) for v in cols["fate"]], dtype=object)
        if "reason" in cols:
            cols["reason"] = np.array(
                [str(GapReason(int(v))) for v in cols["reason"]], dtype=object
            )
        return pa.table({name: pa.array(col) for name, col in cols.items()})

    def to_parquet(self, path: str, table: str = "rows") -> None:
        """Write one of the plan's tables as a Parquet file."""
        import pyarrow.parquet as pq

        pq.write_table(self.to_arrow(table), path)

    def direction_index(self, stream: int, direction: int) -> int | None:
        """Row of (stream, direction) in ``directions``, or None when it carried no packet."""
        key = stream * 2 + direction
        keys = self._direction_keys
        i = int(np.searchsorted(keys, key))
        return i if i < len(keys) and keys[i] == key else None


def plan(
    packets: PacketTable,
    flows: Flows,
    sources: list[Source],
    policy: Policy = Policy.FIRST,
    checksums: ChecksumMode = ChecksumMode.AUTO,
    offloaded: np.ndarray | None = None,
    section: int = SECTION_SEGMENTS,
) -> Plan:
    """Build the plan for every direction of every stream (a long direction ``section``
    segments at a time; the plan does not depend on it). ``offloaded``: the sending hosts
    whose bad TCP checksums are kept under ``auto`` (decided over the whole capture, see
    ``offload``); by default decided from these packets alone."""
    key = flows.stream * 2 + flows.direction
    order = np.argsort(key, kind="stable")  # rows are in frame order already
    dir_keys, dir_start = np.unique(key[order], return_index=True)
    dir_start = np.append(dir_start, len(order)).astype(np.int64)
    n_dirs = len(dir_keys)
    dir_of_row = np.empty(len(key), np.int64)
    dir_of_row[order] = np.repeat(np.arange(n_dirs), np.diff(dir_start))
    drop_bad = _drop_bad(packets, flows, order, dir_start, dir_keys, dir_of_row, checksums,
                         offloaded)  # fmt: skip
    base = np.zeros(n_dirs, np.int64)
    high = np.zeros(n_dirs, np.int64)
    k.direction_extents(
        order,
        dir_start,
        packets.seq,
        packets.flags,
        packets.payload_len,
        base,
        high,
        np.empty(len(order), np.int64),
    )
    close_frame = _close_frames(packets, flows, dir_of_row, dir_keys, base, high)
    del key, dir_of_row  # per-row arrays not needed by the placement
    receivers = _receivers(packets, order, dir_start, dir_keys, base)
    raw, conflicts_raw, dirs = _run(
        packets,
        order,
        dir_start,
        drop_bad,
        close_frame,
        receivers,
        policy,
        sources,
        n_dirs,
        section,
    )
    del order
    rows = _rows_table(raw, dir_keys)
    directions = _directions_table(dirs, dir_keys, rows)
    directions["drops_bad_checksums"] = drop_bad  # the checksum mode's verdict, per direction
    gaps = _gaps(rows, directions)
    directions["gaps"] = np.bincount(gaps["dir"], minlength=n_dirs) if n_dirs else np.zeros(0)
    conflicts = _conflicts_table(conflicts_raw, dir_keys, packets)
    directions["conflicts"] = (
        np.bincount(conflicts.pop("dir"), minlength=n_dirs) if n_dirs else np.zeros(0)
    )
    gaps.pop("dir")
    return Plan(rows, directions, gaps, conflicts, policy, checksums)


def _run(
    packets: PacketTable,
    order: np.ndarray,
    dir_start: np.ndarray,
    drop_bad: np.ndarray,
    close_frame: np.ndarray,
    receivers: np.ndarray,
    policy: Policy,
    sources: list[Source],
    n_dirs: int,
    section: int = SECTION_SEGMENTS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Call the kernel (it grows its outputs and scratch arrays where they are too small).
    The placement arrays start at one section's size: a long direction is placed a section
    at a time (see ``plan_directions``)."""
    n = len(order)
    per_dir = int(np.diff(dir_start).max()) if n_dirs else 0
    work = min(per_dir, section)
    # the packet table's own columns, uncopied: the kernel widens as it reads
    seq, flags = packets.seq, packets.flags
    plen, pcap = packets.payload_len, packets.payload_caplen
    n_data = int(np.count_nonzero(plen))
    dirs = np.zeros((k.N_DIR_COLS, n_dirs), np.int64)
    counts = np.zeros(k.N_COUNTS, np.int64)
    plan_arr, conflicts = k.plan_directions(
        order,
        dir_start,
        seq,
        flags,
        plen,
        pcap,
        packets.payload_offset,
        packets.file,
        packets.frame,
        packets.ts_ns,
        packets.tcp_checksum,
        drop_bad,
        close_frame,
        receivers,
        int(policy),
        NEW_WINS,
        buffer_list([src.buffer for src in sources]),
        np.empty((k.N_PLAN_COLS, n_data + n_data // 8 + 16), np.int64),  # most: one row
        np.empty((k.N_CONFLICT_COLS, 16), np.int64),
        dirs,
        counts,
        np.empty((k.N_TILE_COLS, 2 * work + 2), np.int64),
        np.empty((k.N_PIECE_COLS, work + 16), np.int64),
        np.empty((k.N_SEG_COLS, work), np.int64),
        np.empty((k.N_RUN_COLS, work + 16), np.int64),
        np.empty(n, np.int64),
        section,
    )
    conflicts = conflicts[:, : counts[k.K_CONFLICTS]]
    # records come out a section at a time: put them back in arrival order (the arriving
    # segment is the later of the two rows; rows of a direction are in arrival order)
    arriving = np.maximum(conflicts[k.C_KEPT], conflicts[k.C_DROPPED])
    conflicts = conflicts[:, np.lexsort((arriving, conflicts[k.C_DIR]))]
    # the plan rows are a view: _rows_table gathers them once, then they are freed
    return plan_arr[:, : counts[k.K_PLAN]], conflicts, dirs


def _drop_bad(
    packets: PacketTable,
    flows: Flows,
    order: np.ndarray,
    dir_start: np.ndarray,
    dir_keys: np.ndarray,
    dir_of_row: np.ndarray,
    mode: ChecksumMode,
    offloaded: np.ndarray | None,
) -> np.ndarray:
    """Per direction: drop segments with a bad TCP checksum? ``auto`` keeps them when the
    direction's sender is checksum-offloaded (the host rule in ``offload``), or when every
    verified checksum of the direction's data segments is bad while the peer's
    acknowledgement numbers advance (the receiver took the data)."""
    n_dirs = len(dir_start) - 1
    if mode is ChecksumMode.STRICT:
        return np.ones(n_dirs, np.bool_)
    if mode is ChecksumMode.IGNORE or n_dirs == 0:
        return np.zeros(n_dirs, np.bool_)
    if offloaded is None:
        offloaded = offloaded_hosts([checksum_evidence(packets, flows)])
    host = sender_offloaded(packets, order[dir_start[:-1]], offloaded)
    ck = packets.tcp_checksum
    data = packets.payload_len > 0
    known = np.bincount(dir_of_row, weights=data & (ck != Checksum.UNKNOWN), minlength=n_dirs)
    bad = np.bincount(dir_of_row, weights=data & (ck == Checksum.BAD), minlength=n_dirs)
    all_bad = (known > 0) & (bad == known)
    acks = packets.ack.astype(np.int64)
    has_ack = (packets.flags & ACK) != 0
    lo = np.full(n_dirs, np.iinfo(np.int64).max)
    hi = np.full(n_dirs, -1)
    np.minimum.at(lo, dir_of_row[has_ack], acks[has_ack])
    np.maximum.at(hi, dir_of_row[has_ack], acks[has_ack])
    peer = _peer_index(dir_keys)
    peer_advancing = np.where(peer >= 0, (hi > lo)[np.maximum(peer, 0)], False)
    return np.asarray(~(host | (all_bad & peer_advancing)))


def _peer_index(dir_keys: np.ndarray) -> np.ndarray:
    """For each direction, the index of the opposite direction of its stream, or -1."""
    peer_keys = dir_keys ^ 1
    pos = np.searchsorted(dir_keys, peer_keys)
    pos = np.minimum(pos, len(dir_keys) - 1)
    return np.asarray(np.where(dir_keys[pos] == peer_keys, pos, -1))


def _close_frames(
    packets: PacketTable,
    flows: Flows,
    dir_of_row: np.ndarray,
    dir_keys: np.ndarray,
    base: np.ndarray,
    high: np.ndarray,
) -> np.ndarray:
    """Per direction: frame of the session's first acceptable reset (data after it is not placed).

    A reset counts when its checksum is not bad, its sequence number lies in
    its sender's stream (one byte before offset 0 up to 1 GiB past the highest
    byte), and, when it carries an ACK, the acknowledgement points into the
    peer's stream (RFC 9293 §3.10.7.3: in SYN-SENT a reset is acceptable only
    if it acknowledges the SYN; RFC 5961 §3 in the synchronised states). An
    injected reset that acknowledges nothing sent is ignored, as the endpoint
    ignored it.
    """
    n_dirs = len(dir_keys)
    rst = np.flatnonzero(((packets.flags & RST) != 0) & (packets.tcp_checksum != Checksum.BAD))
    first_rst = np.full(flows.n_streams, np.iinfo(np.int64).max)
    peer = _peer_index(dir_keys) if n_dirs else np.zeros(0, np.int64)
    for i in rst.tolist():
        d = int(dir_of_row[i])
        seq_rel = _signed((int(packets.seq[i]) - int(base[d])) % 2**32)
        ok = -1 <= seq_rel <= int(high[d]) + int(k.WINDOW)
        p = int(peer[d])
        if ok and packets.flags[i] & ACK and p >= 0:
            ack_rel = _signed((int(packets.ack[i]) - int(base[p])) % 2**32)
            ok = 0 <= ack_rel <= int(high[p]) + 1
        if ok:
            s = int(flows.stream[i])
            first_rst[s] = min(first_rst[s], int(packets.frame[i]))
    return np.asarray(first_rst[dir_keys // 2])


def _receivers(
    packets: PacketTable,
    order: np.ndarray,
    dir_start: np.ndarray,
    dir_keys: np.ndarray,
    base: np.ndarray,
) -> np.ndarray:
    """Per direction: the highest ACK and largest scaled window its receiver sent (see
    ``receiver_windows``); the window is -1 where the receiver has no packet."""
    out = np.zeros((k.N_RCV_COLS, len(dir_keys)), np.int64)
    if len(dir_keys):
        k.receiver_windows(
            order,
            dir_start,
            _peer_index(dir_keys),
            base,
            packets.ack,
            packets.flags,
            packets.window,
            packets.wscale,
            out,
        )
    return out


def _signed(v: int) -> int:
    return v - 2**32 if v >= 2**31 else v


def _rows_table(raw: np.ndarray, dir_keys: np.ndarray) -> dict[str, np.ndarray]:
    """Plan rows sorted by direction, offset, frame; one gather per column (no 2-D copies).
    Rows the kernel wrote in that order already (a direction whose segments came in order,
    placed a section at a time) are not gathered: its int64 columns serve as they are."""
    take: Any = slice(None)
    if not _sorted(raw[k.P_DIR], raw[k.P_OFFSET], raw[k.P_FRAME]):
        take = np.lexsort((raw[k.P_FRAME], raw[k.P_OFFSET], raw[k.P_DIR]))
    d = raw[k.P_DIR, take].astype(np.int32)
    return {
        "frame": raw[k.P_FRAME, take],
        "row": raw[k.P_ROW, take],
        "stream": dir_keys[d] // 2,
        "direction": (dir_keys[d] % 2).astype(np.uint8),
        "stream_offset": raw[k.P_OFFSET, take],
        "payload_start": raw[k.P_START, take],
        "file": raw[k.P_FILE, take].astype(np.int32),
        "length": raw[k.P_LEN, take],
        "fate": raw[k.P_FATE, take].astype(np.int8),
        "dir": d,
    }


def _sorted(a: np.ndarray, b: np.ndarray, c: np.ndarray, chunk: int = 1 << 18) -> bool:
    """Are the rows (a, b, c) in lexicographic order? (checked a chunk at a time: the
    differences are not held for the whole plan)"""
    for lo in range(0, len(a) - 1, chunk):
        hi = min(lo + chunk + 1, len(a))
        da, db, dc = np.diff(a[lo:hi]), np.diff(b[lo:hi]), np.diff(c[lo:hi])
        if not np.all((da > 0) | ((da == 0) & ((db > 0) | ((db == 0) & (dc >= 0))))):
            return False
    return True


def _masked(mask: np.ndarray, *cols: np.ndarray) -> tuple[np.ndarray, ...]:
    """``cols`` at ``mask``: the columns themselves when it takes every row (no copies of
    a long direction's rows when all of them are kept)."""
    if mask.all():
        return cols
    return tuple(col[mask] for col in cols)


def _kept_mask(fate: np.ndarray) -> np.ndarray:
    return Fate.kept_in(fate)


def _directions_table(
    dirs: np.ndarray, dir_keys: np.ndarray, rows: dict[str, Any]
) -> dict[str, np.ndarray]:
    n = len(dir_keys)
    kept = _kept_mask(rows["fate"])
    kept_end = np.zeros(n, np.int64)
    ends = rows["stream_offset"] + rows["length"]
    claimed = kept | (rows["fate"] == Fate.TRUNCATED)  # cut-off bytes still count as stream
    np.maximum.at(kept_end, *_masked(claimed, rows["dir"], ends))
    del ends
    kept_dir, kept_len = _masked(kept, rows["dir"], rows["length"])
    kept_bytes = np.bincount(kept_dir, weights=kept_len, minlength=n)
    del kept_dir, kept_len
    retrans = np.isin(rows["fate"], (Fate.RETRANSMISSION, Fate.OVERLAP_SAME))
    retrans_bytes = np.bincount(rows["dir"][retrans], weights=rows["length"][retrans], minlength=n)
    fin_end = dirs[k.D_FIN_END]
    length = np.maximum(np.maximum(kept_end, fin_end), 0)
    return {
        "stream": dir_keys // 2,
        "direction": (dir_keys % 2).astype(np.uint8),
        "base_seq": dirs[k.D_BASE],
        "syn": dirs[k.D_SYN].astype(np.bool_),
        "fin": fin_end >= 0,
        "rst": dirs[k.D_RST].astype(np.bool_),
        "packets": dirs[k.D_PACKETS],
        "out_of_order": dirs[k.D_OOO],
        "length": length,
        "bytes": kept_bytes.astype(np.int64),
        "retransmitted_bytes": retrans_bytes.astype(np.int64),
        "first_ts_ns": dirs[k.D_FIRST_TS],
        "last_ts_ns": dirs[k.D_LAST_TS],
    }


def _gaps(rows: dict[str, Any], directions: dict[str, Any]) -> dict[str, np.ndarray]:
    """Holes in each direction's kept bytes, up to its length, with their reason."""
    kept = _kept_mask(rows["fate"])
    trunc = rows["fate"] == Fate.TRUNCATED
    ends = rows["stream_offset"] + rows["length"]
    kept_dir, kept_offset, kept_end = _masked(kept, rows["dir"], rows["stream_offset"], ends)
    args = (
        kept_dir,
        kept_offset,
        kept_end,
        directions["length"],
        rows["dir"][trunc],
        rows["stream_offset"][trunc],
        ends[trunc],
    )  # rows are sorted by direction, then offset
    capacity = 1024
    while True:
        out = np.empty((4, capacity), np.int64)
        n = int(k.list_gaps(*args, out))
        if n <= capacity:
            break
        capacity = n
    d = out[0, :n]
    return {
        "stream": directions["stream"][d],
        "direction": directions["direction"][d],
        "offset": out[1, :n],
        "length": out[2, :n],
        "reason": out[3, :n],
        "dir": d,
    }


def _conflicts_table(
    raw: np.ndarray, dir_keys: np.ndarray, packets: PacketTable
) -> dict[str, np.ndarray]:
    d = raw[k.C_DIR]
    return {
        "stream": dir_keys[d] // 2,
        "direction": (dir_keys[d] % 2).astype(np.uint8),
        "offset": raw[k.C_OFFSET],
        "length": raw[k.C_LEN],
        "kept_frame": packets.frame[raw[k.C_KEPT]],
        "dropped_frame": packets.frame[raw[k.C_DROPPED]],
        "dir": d,
    }
